//! The servers a scenario breaks: RabbitMQ nodes from
//! `scripts/rabbit-cluster.sh` (a private node or cluster, never the shared
//! `rabbit@localhost`), and a private `redis-server` with an append-only file.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::bail;

use crate::harness::{Infra, sbin_path};

/// Nodes managed by `scripts/rabbit-cluster.sh` under their own prefix and ports.
pub struct RabbitNodes {
    pub script: PathBuf,
    pub prefix: &'static str,
    pub nodes: usize,
    pub amqp_base: u16,
    pub dist_base: u16,
}

impl RabbitNodes {
    pub fn new(root: &Path, prefix: &'static str, nodes: usize, amqp_base: u16) -> RabbitNodes {
        RabbitNodes {
            script: root.join("scripts/rabbit-cluster.sh"),
            prefix,
            nodes,
            amqp_base,
            dist_base: amqp_base + 20000,
        }
    }

    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("bash")
            .arg(&self.script)
            .args(args)
            .env("RC_PREFIX", self.prefix)
            .env("RC_NODES", self.nodes.to_string())
            .env("RC_AMQP_BASE", self.amqp_base.to_string())
            .env("RC_DIST_BASE", self.dist_base.to_string())
            .stderr(Stdio::inherit())
            .output()?;
        if !out.status.success() {
            bail!("rabbit-cluster.sh {} failed", args.join(" "));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    pub fn start(&self) -> anyhow::Result<Infra> {
        self.run(&["start"])?;
        let urls = self.run(&["urls"])?;
        Ok(Infra {
            amqp_urls: urls.split(',').map(String::from).collect(),
            nodes: (1..=self.nodes).map(|i| self.node(i)).collect(),
            ..Infra::shared()
        })
    }

    pub fn node(&self, i: usize) -> String {
        format!("{}{i}@localhost", self.prefix)
    }

    pub fn kill(&self, i: usize) -> anyhow::Result<()> {
        self.run(&["kill", &i.to_string()]).map(drop)
    }

    pub fn stop_node(&self, i: usize) -> anyhow::Result<()> {
        self.run(&["stop-node", &i.to_string()]).map(drop)
    }

    pub fn restart(&self, i: usize) -> anyhow::Result<()> {
        self.run(&["restart", &i.to_string()]).map(drop)
    }

    pub fn stop(&self) -> anyhow::Result<()> {
        self.run(&["stop"]).map(drop)
    }

    /// The node (1-based) leading quorum queue `queue`.
    pub fn leader(&self, queue: &str) -> anyhow::Result<usize> {
        let out = Command::new("rabbitmqctl")
            .args([
                "-n",
                &self.node(1),
                "-q",
                "list_queues",
                "--no-table-headers",
            ])
            .args(["name", "leader"])
            .env("PATH", sbin_path())
            .output()?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let mut parts = line.split_whitespace();
            if parts.next() == Some(queue)
                && let Some(node) = parts.next()
                && let Some(i) = node
                    .strip_prefix(self.prefix)
                    .and_then(|r| r.split('@').next())
                    .and_then(|n| n.parse().ok())
            {
                return Ok(i);
            }
        }
        bail!("no leader found for {queue}")
    }
}
