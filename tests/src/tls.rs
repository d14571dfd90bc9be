//! RabbitMQ and Redis with TLS listeners, for the TLS tests: certificates
//! from `scripts/tls-fixtures.sh` (a throwaway CA, a server certificate for
//! 127.0.0.1, a client certificate), a private `redis-server --tls-port`
//! requiring client certificates, and a private RabbitMQ node with only a
//! TLS listener. Both stop when the value is dropped. Also a private
//! Redis Cluster whose clients and cluster bus speak only TLS.

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
        let dir = fixtures();
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
        tls_toml(self.dir.path(), table)
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

/// Certificates from `scripts/tls-fixtures.sh` in a new temporary folder.
fn fixtures() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temp dir");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/tls-fixtures.sh");
    let status = Command::new("bash")
        .arg(script)
        .arg(dir.path())
        .status()
        .expect("bash runs");
    assert!(status.success(), "scripts/tls-fixtures.sh failed");
    dir
}

fn tls_toml(dir: &Path, table: &str) -> String {
    let f = |n: &str| dir.join(n).display().to_string();
    format!(
        "[{table}.tls]\nca_file = \"{}\"\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
        f("ca.pem"),
        f("client.pem"),
        f("client.key")
    )
}

/// Three Redis Cluster masters listening only with TLS (clients must show
/// a certificate), their cluster bus on TLS too, as a managed Redis in
/// cluster mode with in-transit encryption runs.
pub struct TlsRedisCluster {
    /// The certificates.
    dir: tempfile::TempDir,
    /// The nodes' data.
    _data: tempfile::TempDir,
    nodes: Vec<Child>,
    /// The nodes' TLS ports.
    pub ports: Vec<u16>,
}

impl TlsRedisCluster {
    /// Starts three masters, creates the cluster and waits until it serves
    /// every slot; panics with what went wrong otherwise.
    pub async fn start() -> TlsRedisCluster {
        let dir = fixtures();
        let certs = dir.path().to_path_buf();
        let f = |n: &str| certs.join(n).display().to_string();
        let mut cluster = TlsRedisCluster {
            _data: tempfile::tempdir().expect("a temp dir"),
            nodes: Vec::new(),
            ports: Vec::new(),
            dir,
        };
        for _ in 0..3 {
            let port = free_port();
            let data = cluster._data.path().join(port.to_string());
            std::fs::create_dir_all(&data).unwrap();
            let child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", "0"])
                .args(["--tls-port", &port.to_string()])
                .args(["--cluster-port", &free_port().to_string()])
                .args(["--cluster-enabled", "yes", "--tls-cluster", "yes"])
                .args(["--tls-cert-file", &f("server.pem")])
                .args(["--tls-key-file", &f("server.key")])
                // Nodes dial each other's bus as clients: with the client
                // certificate, which the peers ask for.
                .args(["--tls-client-cert-file", &f("client.pem")])
                .args(["--tls-client-key-file", &f("client.key")])
                .args(["--tls-ca-cert-file", &f("ca.pem")])
                .args(["--tls-auth-clients", "yes"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&data)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server runs (scripts/services.sh installs it)");
            cluster.nodes.push(child);
            cluster.ports.push(port);
        }
        for port in cluster.ports.clone() {
            cluster
                .wait("a TLS cluster node did not answer", |c| {
                    c.cli(port, &["ping"]).is_some_and(|o| o.contains("PONG"))
                })
                .await;
        }
        let addrs: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let mut create = cluster.redis_cli();
        create.args(["--cluster", "create"]).args(&addrs).args([
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ]);
        let created = create.stdout(Stdio::null()).stderr(Stdio::null()).status();
        assert!(
            created.is_ok_and(|s| s.success()),
            "redis-cli --tls --cluster create failed"
        );
        for port in cluster.ports.clone() {
            cluster
                .wait("the TLS cluster never served every slot", |c| {
                    c.cli(port, &["cluster", "info"])
                        .is_some_and(|o| o.contains("cluster_state:ok"))
                })
                .await;
        }
        cluster
    }

    /// Seed URLs (`rediss://`), comma-separated, as `redis.url` takes them.
    pub fn urls(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("rediss://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `[redis.tls]` with the CA and the client certificate.
    pub fn tls_toml(&self) -> String {
        tls_toml(self.dir.path(), "redis")
    }

    async fn wait(&self, what: &str, ready: impl Fn(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !ready(self) {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn redis_cli(&self) -> Command {
        let f = |n: &str| self.dir.path().join(n).display().to_string();
        let mut cli = Command::new("redis-cli");
        cli.args(["--tls", "--cacert", &f("ca.pem")]).args([
            "--cert",
            &f("client.pem"),
            "--key",
            &f("client.key"),
        ]);
        cli
    }

    fn cli(&self, port: u16, args: &[&str]) -> Option<String> {
        crate::cluster::cli_on(self.redis_cli(), port, args)
    }
}

impl Drop for TlsRedisCluster {
    fn drop(&mut self) {
        for child in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
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
