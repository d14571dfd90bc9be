//! The broker restarts, twice (a private single node, never the shared
//! `rabbit@localhost` the tests use): every worker loses its connection,
//! reconnects, and the quorum queue still holds every job.

use std::time::Instant;

use crate::harness::{Ctx, Fleet, Report};
use crate::servers::RabbitNodes;

pub async fn run(ctx: &Ctx) -> anyhow::Result<Report> {
    let node = RabbitNodes::new(&ctx.root, "cr", 1, 5731);
    let infra = node.start()?;
    let fleet = Fleet::start(ctx, "rabbitmq-restart", infra).await?;
    let mut recovered = Vec::new();
    for share in [0.25, 0.6] {
        fleet.wait_share(share, ctx.users).await?;
        node.stop_node(1)?;
        node.restart(1)?;
        let back = Instant::now();
        recovered.push(fleet.recovered_after(back).await?);
    }
    let report = fleet
        .finish(
            "RabbitMQ restart (twice)",
            ctx.users,
            recovered,
            "node stopped and started at 1/4 and 3/5".into(),
        )
        .await;
    node.stop()?;
    report
}
