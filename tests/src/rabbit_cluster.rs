//! The 3-node RabbitMQ cluster of `scripts/rabbit-cluster.sh`, for the
//! cluster test: started (idempotently) on first use, a node killed and
//! brought back by the test, queues inspected on a surviving node.

use std::process::{Command, Stdio};

/// The cluster the script manages (node names `rc1@localhost` …).
pub struct RabbitCluster {
    /// The nodes' AMQP URLs, node 1 first.
    pub urls: Vec<String>,
}

/// One queue as a node reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueCount {
    /// Queue name.
    pub name: String,
    /// Ready messages.
    pub ready: u64,
    /// Delivered, not yet acknowledged.
    pub unacked: u64,
}

fn script(args: &[&str]) -> std::process::Output {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/rabbit-cluster.sh");
    Command::new("bash")
        .arg(path)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("bash runs")
}

impl RabbitCluster {
    /// Starts the nodes that are not running and joins them; panics when
    /// the cluster does not come up.
    pub fn start() -> RabbitCluster {
        let started = script(&["start"]);
        assert!(
            started.status.success(),
            "scripts/rabbit-cluster.sh start failed"
        );
        let urls = script(&["urls"]);
        let urls = String::from_utf8(urls.stdout).expect("URLs are text");
        RabbitCluster {
            urls: urls.trim().split(',').map(String::from).collect(),
        }
    }

    /// Kills node `i` (1-based) with SIGKILL, as a crash would.
    pub fn kill(&self, i: usize) {
        let out = script(&["kill", &i.to_string()]);
        assert!(out.status.success(), "could not kill node {i}");
    }

    /// Starts node `i` again and waits until it has rejoined.
    pub fn restart(&self, i: usize) {
        let out = script(&["restart", &i.to_string()]);
        assert!(out.status.success(), "node {i} did not come back");
    }

    /// The node (1-based) leading quorum queue `name`, as node `i` sees it.
    pub fn leader(&self, i: usize, name: &str) -> Option<usize> {
        list_queues(i, &["name", "leader"])
            .lines()
            .find_map(|line| {
                let mut parts = line.split_whitespace();
                (parts.next()? == name).then_some(())?;
                let node = parts.next()?;
                node.strip_prefix("rc")?.split('@').next()?.parse().ok()
            })
    }

    /// Every queue whose name starts with `prefix`, as node `i` sees it.
    pub fn queues(&self, i: usize, prefix: &str) -> Vec<QueueCount> {
        list_queues(i, &["name", "messages_ready", "messages_unacknowledged"])
            .lines()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                let name = parts.next()?;
                let ready = parts.next()?.parse().ok()?;
                let unacked = parts.next()?.parse().ok()?;
                name.starts_with(prefix).then(|| QueueCount {
                    name: name.to_string(),
                    ready,
                    unacked,
                })
            })
            .collect()
    }
}

fn list_queues(node: usize, columns: &[&str]) -> String {
    let out = Command::new("rabbitmqctl")
        .args(["-n", &format!("rc{node}@localhost"), "-q", "list_queues"])
        .args(columns)
        .args(["--no-table-headers"])
        .env(
            "PATH",
            format!(
                "{}:/usr/sbin:/sbin",
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .expect("rabbitmqctl runs");
    assert!(out.status.success(), "rabbitmqctl list_queues failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
