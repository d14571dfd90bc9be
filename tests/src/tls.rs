//! RabbitMQ and Redis with TLS listeners, for the TLS tests: certificates
//! from `scripts/tls-fixtures.sh` (a throwaway CA, a server certificate for
//! 127.0.0.1, a client certificate), a private `redis-server --tls-port`
//! requiring client certificates, and a private RabbitMQ node with only a
//! TLS listener. Both stop when the value is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::free_port;

/// A TLS-only RabbitMQ node and Redis server.
pub struct TlsServers {
    dir: tempfile::TempDir,
    redis: Option<Child>,
    node: String,
    /// The Redis port (TLS).
    pub redis_port: u16,
    /// The AMQP port (TLS).
    pub amqp_port: u16,
}

fn sbin_path() -> String {
    format!(
        "{}:/usr/sbin:/sbin",
        std::env::var("PATH").unwrap_or_default()
    )
}

impl TlsServers {
    /// Generates certificates and starts both servers; panics with what
    /// went wrong when one does not come up.
    pub async fn start() -> TlsServers {
        let dir = tempfile::tempdir().expect("a temp dir");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/tls-fixtures.sh");
        let status = Command::new("bash")
            .arg(script)
            .arg(dir.path())
            .status()
            .expect("bash runs");
        assert!(status.success(), "scripts/tls-fixtures.sh failed");
        let redis_port = free_port();
        let amqp_port = free_port();
        let node = format!("rolecall-tls-{amqp_port}@localhost");
        let mut servers = TlsServers {
            dir,
            redis: None,
            node,
            redis_port,
            amqp_port,
        };
        servers.start_redis();
        servers.start_rabbitmq().await;
        servers
    }

    /// A file of the fixtures (`ca.pem`, `client.pem`, `client.key`).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `[amqp.tls]` / `[redis.tls]` settings with the CA and the client certificate.
    pub fn tls_toml(&self, table: &str) -> String {
        format!(
            "[{table}.tls]\nca_file = \"{}\"\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
            self.file("ca.pem").display(),
            self.file("client.pem").display(),
            self.file("client.key").display()
        )
    }

    fn start_redis(&mut self) {
        let f = |n: &str| self.file(n).display().to_string();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", "0"])
            .args(["--tls-port", &self.redis_port.to_string()])
            .args(["--tls-cert-file", &f("server.pem")])
            .args(["--tls-key-file", &f("server.key")])
            .args(["--tls-ca-cert-file", &f("ca.pem")])
            .args(["--tls-auth-clients", "yes"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/services.sh installs it)");
        self.redis = Some(child);
    }

    async fn start_rabbitmq(&mut self) {
        let base = self.dir.path().join("rabbitmq");
        std::fs::create_dir_all(base.join("mnesia")).unwrap();
        std::fs::create_dir_all(base.join("log")).unwrap();
        let f = |n: &str| self.file(n).display().to_string();
        std::fs::write(
            base.join("rabbitmq.conf"),
            format!(
                "listeners.tcp = none\nlisteners.ssl.default = 127.0.0.1:{}\n\
                 ssl_options.cacertfile = {}\nssl_options.certfile = {}\nssl_options.keyfile = {}\n\
                 ssl_options.verify = verify_peer\nssl_options.fail_if_no_peer_cert = true\n\
                 loopback_users = none\n",
                self.amqp_port,
                f("ca.pem"),
                f("server.pem"),
                f("server.key")
            ),
        )
        .unwrap();
        // rabbitmq-server drops to the rabbitmq user when started as root.
        let _ = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(self.dir.path())
            .status();
        let env = rabbit_env(&self.node, &base, free_port());
        let started = Command::new("rabbitmq-server")
            .arg("-detached")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("PATH", sbin_path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        assert!(
            started.is_ok_and(|s| s.success()),
            "rabbitmq-server -detached failed"
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            let up = Command::new("rabbitmqctl")
                .args(["-n", &self.node, "-q", "await_startup", "--timeout", "5"])
                .env("PATH", sbin_path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if up && std::net::TcpStream::connect(("127.0.0.1", self.amqp_port)).is_ok() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the TLS RabbitMQ node did not start; see {}",
                base.join("log").display()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn rabbit_env(node: &str, base: &Path, dist_port: u16) -> Vec<(String, String)> {
    let p = |s: &str| base.join(s).display().to_string();
    vec![
        ("RABBITMQ_NODENAME".into(), node.into()),
        ("RABBITMQ_DIST_PORT".into(), dist_port.to_string()),
        ("RABBITMQ_MNESIA_BASE".into(), p("mnesia")),
        ("RABBITMQ_LOG_BASE".into(), p("log")),
        ("RABBITMQ_CONFIG_FILE".into(), p("rabbitmq")),
        ("RABBITMQ_ENABLED_PLUGINS_FILE".into(), p("enabled_plugins")),
        ("ERL_EPMD_ADDRESS".into(), "127.0.0.1".into()),
    ]
}

impl Drop for TlsServers {
    fn drop(&mut self) {
        if let Some(mut child) = self.redis.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("rabbitmqctl")
            .args(["-n", &self.node, "stop"])
            .env("PATH", sbin_path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
