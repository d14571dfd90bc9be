//! A 3-node RabbitMQ cluster loses the node leading the jobs queue
//! (`kill -9` of its Erlang VM): the quorum queue elects a new leader and
//! the workers on the dead node reconnect to the next URL of `amqp.urls`.

use std::time::Instant;

use crate::harness::{Ctx, Fleet, Report};
use crate::servers::RabbitNodes;

pub async fn run(ctx: &Ctx) -> anyhow::Result<Report> {
    let cluster = RabbitNodes::new(&ctx.root, "ck", 3, 5721);
    let infra = cluster.start()?;
    let fleet = Fleet::start(ctx, "rabbitmq-cluster", infra).await?;
    fleet.wait_share(1.0 / 3.0, ctx.users).await?;
    let leader = cluster.leader(&fleet.names.jobs_queue("lever"))?;
    cluster.kill(leader)?;
    let killed = Instant::now();
    let recovered = fleet.recovered_after(killed).await?;
    let report = fleet
        .finish(
            "RabbitMQ cluster: leader node `kill -9`",
            ctx.users,
            vec![recovered],
            format!("3 nodes; node {leader} (jobs queue leader) killed at 1/3"),
        )
        .await;
    cluster.stop()?;
    report
}
