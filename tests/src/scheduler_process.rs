//! `rolecall-scheduler` as a real process, for tests that kill it.

use std::path::PathBuf;
use std::time::Duration;

use crate::{TestEnv, temp_file, workspace_binary};

/// A `rolecall-scheduler` process whose log (stderr) goes to a file the
/// test reads; stopped with SIGTERM when dropped.
pub struct SchedulerProcess {
    child: std::process::Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl SchedulerProcess {
    /// Starts the scheduler binary with `config_text` and `args` (e.g. `["serve"]`).
    pub fn spawn(config_text: &str, args: &[&str]) -> SchedulerProcess {
        Self::spawn_with_env(config_text, args, &[])
    }

    /// As [`SchedulerProcess::spawn`], with more environment variables.
    pub fn spawn_with_env(
        config_text: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> SchedulerProcess {
        let (dir, config) = temp_file("rolecall.toml", config_text);
        let log = dir.path().join("scheduler.log");
        let log_file = std::fs::File::create(&log).expect("a log file");
        let child = std::process::Command::new(
            workspace_binary("rolecall-scheduler").expect("the scheduler binary is built"),
        )
        .arg("--config")
        .arg(&config)
        .args(args)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("the scheduler starts");
        SchedulerProcess {
            child,
            log,
            _dir: dir,
        }
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until its log contains `needle`, or panics with the log.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.log().contains(needle) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the scheduler did not log `{needle}` in {timeout:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills it without warning (SIGKILL): no lease is released.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills it (SIGKILL) as soon as the first run recorded (or `run_id`)
    /// has confirmed at least `at_least` jobs; returns the run's id and its
    /// `published` count at that moment. Panics with the log when that does
    /// not happen within 20 s.
    pub async fn kill9_once_published(
        &mut self,
        env: &TestEnv,
        run_id: Option<&str>,
        at_least: u64,
    ) -> (String, u64) {
        let seen = self.wait_published(env, run_id, at_least).await;
        self.kill9();
        seen
    }

    /// Waits until the first run recorded (or `run_id`) has checkpointed at
    /// least `at_least` confirmed jobs; returns the run's id and its
    /// `published` count then. Panics with the log after 20 s.
    pub async fn wait_published(
        &self,
        env: &TestEnv,
        run_id: Option<&str>,
        at_least: u64,
    ) -> (String, u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let run = match run_id {
                Some(id) => Some(id.to_string()),
                None => env.run_ids().await.into_iter().next(),
            };
            if let Some(run) = run {
                let published: u64 = env
                    .run_hash(&run)
                    .await
                    .get("published")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if published >= at_least {
                    return (run, published);
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "publishing did not start:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Waits for it to exit by itself (`run-once`), or panics after `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the scheduler did not exit in {timeout:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks it to stop (SIGTERM) and waits.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                self.kill9();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SchedulerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}
