//! One module per chaos scenario; `Kind` is the one registration point
//! (an exhaustive `match`), so a scenario without a runner cannot compile.

mod credential;
mod rabbit_cluster;
mod rabbit_restart;
mod redis_cluster;
mod redis_kill;
mod vendor_faults;
mod worker_kill;

use crate::harness::{Ctx, Report};

/// The scenarios, in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    WorkerKill,
    RabbitRestart,
    RedisKill,
    VendorFaults,
    Credential,
    RabbitCluster,
    RedisCluster,
}

/// What became of one scenario.
pub enum Outcome {
    Ran(Box<Report>),
    /// Not run, and why (printed in the table, never faked).
    NotRun(&'static str, String),
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::WorkerKill,
        Kind::RabbitRestart,
        Kind::RedisKill,
        Kind::VendorFaults,
        Kind::Credential,
        Kind::RabbitCluster,
        Kind::RedisCluster,
    ];

    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<Outcome> {
        let report = match self {
            Kind::WorkerKill => worker_kill::run(ctx).await?,
            Kind::RabbitRestart => rabbit_restart::run(ctx).await?,
            Kind::RedisKill => redis_kill::run(ctx).await?,
            Kind::VendorFaults => vendor_faults::run(ctx).await?,
            Kind::Credential => credential::run(ctx).await?,
            Kind::RabbitCluster => rabbit_cluster::run(ctx).await?,
            Kind::RedisCluster => redis_cluster::run(ctx).await?,
        };
        Ok(Outcome::Ran(Box::new(report)))
    }
}
