//! Processes a test starts and may kill: the workspace's binaries and a
//! private `redis-server`, on ports that no other process of a parallel
//! run takes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use rolecall_common::config::Settings;
use rolecall_common::credentials::Vault;

use crate::{SIM_KEY, temp_file};

/// The path of a workspace binary built next to the test binary.
pub fn workspace_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("the test binary lives in target/<profile>/deps")?;
    let path = dir.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} is missing: build the binaries first (cargo build --workspace --bins; scripts/test.sh does)",
        path.display()
    );
    Ok(path)
}

/// A `rolecall-worker` process, stopped with SIGTERM when dropped.
pub struct WorkerProcess {
    child: std::process::Child,
    _config: tempfile::TempDir,
}

impl WorkerProcess {
    /// Starts the worker binary with `config_text` and the sim key for every
    /// credential it names.
    pub fn spawn(config_text: &str, settings: &Settings) -> WorkerProcess {
        Self::spawn_with_env(config_text, settings, &[])
    }

    /// As [`WorkerProcess::spawn`], with more environment variables
    /// (`ROLECALL__…` overrides, `OTEL_…`).
    pub fn spawn_with_env(
        config_text: &str,
        settings: &Settings,
        env: &[(&str, &str)],
    ) -> WorkerProcess {
        let (dir, path) = temp_file("rolecall.toml", config_text);
        let vault = Vault::with_env(settings.credentials.clone(), HashMap::new());
        let mut cmd = std::process::Command::new(
            workspace_binary("rolecall-worker").expect("the worker binary is built"),
        );
        cmd.arg("--config").arg(&path).env("RUST_LOG", "error");
        for saas in settings.saas.values() {
            cmd.env(vault.env_var(&saas.credential), SIM_KEY);
        }
        cmd.envs(env.iter().copied());
        let child = cmd
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("the worker starts");
        WorkerProcess {
            child,
            _config: dir,
        }
    }

    /// Kills the worker (SIGKILL): no grace, in-flight deliveries are
    /// left to the broker.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks the worker to stop (SIGTERM) and waits for it.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.terminate()
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                return self.child.wait().expect("the worker is reaped");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// Ports `free_port` hands out: below Linux's ephemeral range (32768 and
/// up), above the services' own ports (RabbitMQ 5672 and 25672 are outside
/// it too).
const TEST_PORTS: std::ops::Range<u16> = 11_000..20_000;

/// A free TCP port on loopback for a process the test starts.
///
/// Not one the kernel picks for port 0: those come from the ephemeral
/// range, where any outgoing connection of a full parallel run (AMQP, Redis,
/// HTTP) may take it as its local port before the child binds, and the
/// child then fails to listen or, worse, the test talks to another test's
/// process. Ports come from [`TEST_PORTS`] instead, each handed out once
/// per test binary, starting at a place that differs per process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = u32::from(TEST_PORTS.end - TEST_PORTS.start);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % span,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::SeqCst) % span;
        let port = TEST_PORTS.start + offset as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {TEST_PORTS:?}")
}

/// A private `redis-server` (installed by scripts/services.sh) that a test
/// may kill and restart. It keeps an append-only file with fsync on every
/// write, so a restart loses nothing that was acknowledged.
pub struct RedisProcess {
    child: Option<std::process::Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl RedisProcess {
    /// Starts one and waits until it answers.
    pub async fn start() -> RedisProcess {
        Self::try_start()
            .await
            .expect("a private redis-server starts")
    }

    /// As [`RedisProcess::start`], for callers that report a failure
    /// instead of panicking (the chaos bench).
    pub async fn try_start() -> anyhow::Result<RedisProcess> {
        let mut r = RedisProcess {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir()?,
        };
        r.try_restart().await?;
        Ok(r)
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills it abruptly (SIGKILL), as a crash or a network cut would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes it (SIGSTOP): connections stay open and nothing answers, as
    /// a server stalled by a long command or a saturated host.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let sent = std::process::Command::new("kill")
                .arg(signal)
                .arg(child.id().to_string())
                .status();
            assert!(sent.is_ok_and(|s| s.success()), "kill {signal} failed");
        }
    }

    /// Starts it again on the same port with the same data.
    pub async fn restart(&mut self) {
        self.try_restart().await.expect("redis-server restarts");
    }

    /// As [`RedisProcess::restart`], returning the failure.
    pub async fn try_restart(&mut self) -> anyhow::Result<()> {
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("redis-server runs (scripts/services.sh installs it)")?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !self.answers().await {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    async fn answers(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
            return false;
        };
        let pong: Result<String, _> = redis::cmd("PING").query_async(&mut conn).await;
        pong.is_ok()
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
