//! A private Redis Cluster that a test may break: three masters with one
//! replica each, as `redis-server` child processes on free ports.
//!
//! The shared cluster of `scripts/redis-cluster.sh` serves tests that only
//! use it; a test that kills a node gets its own, so a failover never
//! disturbs another test. The chaos report (`rolecall-chaos`) starts one
//! the same way.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

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
    pub async fn start() -> anyhow::Result<RedisCluster> {
        let dir = tempfile::tempdir()?;
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let port = free_port();
            let data = dir.path().join(port.to_string());
            std::fs::create_dir_all(&data)?;
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
                .context("redis-server runs (scripts/services.sh installs it)")?;
            nodes.push(Node {
                port,
                child: Some(child),
            });
        }
        // From here on, a failure drops the cluster and so kills its nodes.
        let cluster = RedisCluster { nodes, _dir: dir };
        for node in &cluster.nodes {
            cluster
                .wait(|| cli(node.port, &["ping"]).is_some_and(|o| o.contains("PONG")))
                .await?;
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
            .context("redis-cli runs")?;
        if !status.success() {
            bail!("redis-cli --cluster create failed");
        }
        cluster.wait_healthy().await?;
        // A replica that never synced cannot take over: wait for all three.
        cluster
            .wait(|| {
                let synced = cluster.nodes.iter().filter(|n| {
                    cli(n.port, &["info", "replication"])
                        .is_some_and(|o| o.contains("master_link_status:up"))
                });
                synced.count() == 3
            })
            .await?;
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
            .await?;
        Ok(cluster)
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

    /// The port of the master that serves `key`'s slot now, as the first
    /// running node sees the cluster (`CLUSTER KEYSLOT`, `CLUSTER NODES`).
    pub fn master_of(&self, key: &str) -> anyhow::Result<u16> {
        let port = self
            .nodes
            .iter()
            .find(|n| n.child.is_some())
            .context("no node is running")?
            .port;
        let slot: u16 = cli(port, &["cluster", "keyslot", key])
            .context("CLUSTER KEYSLOT answers")?
            .trim()
            .parse()?;
        let nodes = cli(port, &["cluster", "nodes"]).context("CLUSTER NODES answers")?;
        master_of_slot(&nodes, slot).with_context(|| format!("no master serves slot {slot}"))
    }

    /// Waits until the cluster serves every slot again from running nodes,
    /// as every running node sees it.
    pub async fn wait_healthy(&self) -> anyhow::Result<()> {
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
        .await
    }

    async fn wait(&self, ready: impl Fn() -> bool) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !ready() {
            if tokio::time::Instant::now() > deadline {
                bail!("the private Redis Cluster did not become ready within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
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

/// The port of the connected master serving `slot`, from `CLUSTER NODES`
/// (`<id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slots>…`).
fn master_of_slot(nodes: &str, slot: u16) -> Option<u16> {
    nodes.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let serving = fields.get(2)?.split(',').any(|f| f == "master")
            && fields.get(7) == Some(&"connected")
            && fields.iter().skip(8).any(|range| {
                let mut ends = range.splitn(2, '-').map(str::parse::<u16>);
                match (ends.next(), ends.next()) {
                    (Some(Ok(a)), Some(Ok(b))) => (a..=b).contains(&slot),
                    (Some(Ok(a)), None) => a == slot,
                    _ => false, // a slot being migrated: `[slot->-id]`
                }
            });
        if !serving {
            return None;
        }
        let addr = fields[1].split('@').next()?;
        addr.rsplit(':').next()?.parse().ok()
    })
}

/// `redis-cli` against one node; its output, or `None` when it failed.
fn cli(port: u16, args: &[&str]) -> Option<String> {
    cli_on(Command::new("redis-cli"), port, args)
}

/// `redis_cli` (a `redis-cli` command with its connection flags) against
/// the node on `port`: its output, or `None` when it failed.
pub(crate) fn cli_on(mut redis_cli: Command, port: u16, args: &[&str]) -> Option<String> {
    let out = redis_cli
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::master_of_slot;

    #[test]
    fn the_master_of_a_slot_is_read_from_cluster_nodes() {
        let nodes = "\
a1 127.0.0.1:7101@17101 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7102@17102 master,fail - 0 0 2 disconnected 5461-10922
c3 127.0.0.1:7103@17103 master - 0 0 3 connected 10923-16383
d4 127.0.0.1:7104@17104 slave a1 0 0 1 connected
e5 127.0.0.1:7105@17105 master - 0 0 7 connected 5461-10922
";
        assert_eq!(master_of_slot(nodes, 0), Some(7101));
        assert_eq!(
            master_of_slot(nodes, 6000),
            Some(7105),
            "not the failed one"
        );
        assert_eq!(master_of_slot(nodes, 16383), Some(7103));
    }
}
