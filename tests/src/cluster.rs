//! A private Redis Cluster that a test may break: three masters with one
//! replica each, as `redis-server` child processes on free ports.
//!
//! The shared cluster of `scripts/redis-cluster.sh` serves tests that only
//! use it; a test that kills a node gets its own, so a failover never
//! disturbs another test.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::free_port;

/// How long a master may be silent before its replica takes over: short,
/// so a failover test ends in seconds.
const NODE_TIMEOUT_MS: u32 = 1000;

/// One node of the cluster.
struct Node {
    port: u16,
    child: Option<Child>,
}

/// Six `redis-server --cluster-enabled` processes forming one cluster.
pub struct RedisCluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts six nodes, creates the cluster (three masters, a replica
    /// each) and waits until every node sees it whole.
    pub async fn start() -> RedisCluster {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let port = free_port();
            let data = dir.path().join(port.to_string());
            std::fs::create_dir_all(&data).expect("a node folder");
            let child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                // The bus port is chosen too: port + 10000 may be taken or
                // past 65535.
                .args(["--cluster-port", &free_port().to_string()])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                ])
                .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
                .args([
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "everysec",
                    "--save",
                    "",
                ])
                .args(["--maxmemory-policy", "noeviction"])
                // A replica is in sync at once (not after Redis' default 5 s
                // wait for more replicas), so the test may kill its master
                // soon after the start.
                .args(["--repl-diskless-sync-delay", "0"])
                .arg("--dir")
                .arg(&data)
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server runs (scripts/services.sh installs it)");
            nodes.push(Node {
                port,
                child: Some(child),
            });
        }
        let cluster = RedisCluster { nodes, _dir: dir };
        for node in &cluster.nodes {
            cluster
                .wait(|| cli(node.port, &["ping"]).is_some_and(|o| o.contains("PONG")))
                .await;
        }
        let addrs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli runs");
        assert!(status.success(), "redis-cli --cluster create failed");
        cluster.wait_healthy().await;
        // A replica that never synced cannot take over: wait for all three.
        cluster
            .wait(|| {
                let synced = cluster.nodes.iter().filter(|n| {
                    cli(n.port, &["info", "replication"])
                        .is_some_and(|o| o.contains("master_link_status:up"))
                });
                synced.count() == 3
            })
            .await;
        let first = format!("127.0.0.1:{}", cluster.nodes[0].port);
        cluster
            .wait(|| {
                Command::new("redis-cli")
                    .args(["--cluster", "check", &first])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
            .await;
        cluster
    }

    /// Seed URLs, comma-separated, as `redis.url` takes them.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills (SIGKILL) the node listening on `port`, as a crash would.
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until the cluster serves every slot again from running nodes,
    /// as every running node sees it.
    pub async fn wait_healthy(&self) {
        let alive: Vec<u16> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect();
        let dead: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_none())
            .map(|n| format!("{}\n", n.port))
            .collect();
        self.wait(|| {
            alive.iter().all(|port| {
                cli(*port, &["cluster", "info"]).is_some_and(|o| o.contains("cluster_state:ok"))
                    && cli(*port, &["cluster", "slots"])
                        .is_some_and(|o| !dead.iter().any(|d| o.contains(d.as_str())))
            })
        })
        .await;
    }

    async fn wait(&self, ready: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !ready() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the test Redis Cluster did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// `redis-cli` against one node; its output, or `None` when it failed.
fn cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
