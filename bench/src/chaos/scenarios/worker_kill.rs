//! A worker process dies mid-run (`kill -9`): its unacknowledged deliveries
//! go back to the queue and the other workers take them.

use std::time::Instant;

use crate::harness::{Ctx, Fleet, Infra, Report};

pub async fn run(ctx: &Ctx) -> anyhow::Result<Report> {
    let mut fleet = Fleet::start(ctx, "worker-kill", Infra::shared()).await?;
    fleet.wait_share(1.0 / 3.0, ctx.users).await?;
    fleet.kill_worker(0)?;
    let killed = Instant::now();
    let recovered = fleet.recovered_after(killed).await?;
    fleet
        .finish(
            "worker `kill -9`",
            ctx.users,
            vec![recovered],
            format!("1 of {} workers killed at 1/3", ctx.workers),
        )
        .await
}
