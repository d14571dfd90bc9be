//! A Redis Cluster (three masters with a replica each, AOF fsynced every
//! second, no eviction) loses the master holding the run's ledger slot
//! (`kill -9`): its replica takes over the slots, the workers' Redis calls
//! fail meanwhile (no vendor call without the limiter, no ack without the
//! record) and resume on the promoted replica.

use std::time::Instant;

use anyhow::ensure;
use rolecall_tests::cluster::RedisCluster;

use crate::harness::{Ctx, Fleet, Infra, Report};

pub async fn run(ctx: &Ctx) -> anyhow::Result<Report> {
    // Private nodes on free ports: the shared test cluster (7101-7106) is
    // never touched.
    let mut cluster = RedisCluster::start().await?;
    let infra = Infra {
        redis_url: cluster.urls(),
        redis_cluster: true,
        ..Infra::shared()
    };
    let fleet = Fleet::start(ctx, "redis-cluster", infra).await?;
    fleet.wait_share(1.0 / 3.0, ctx.users).await?;
    // Every ledger key carries the `{<ns>:rolecall}` tag: the run hash's
    // slot is the slot of every result, marker and event.
    let ledger_key = fleet.names.run_key(&fleet.run_id);
    let victim = cluster.master_of(&ledger_key)?;
    cluster.kill(victim);
    let killed = Instant::now();
    // Every running node agrees the replica serves the slots (polled every
    // 200 ms with redis-cli: an upper bound of the promotion's time).
    cluster.wait_healthy().await?;
    let promoted_s = killed.elapsed().as_secs_f64();
    let successor = cluster.master_of(&ledger_key)?;
    ensure!(
        successor != victim,
        "the ledger slot still names the dead master"
    );
    let recovered = fleet.recovered_after(killed).await?;
    fleet
        .finish(
            "Redis Cluster: master `kill -9`",
            ctx.users,
            vec![recovered],
            format!(
                "3 masters + 3 replicas, AOF everysec; the ledger slot's master killed at 1/3, \
                 its replica promoted within {promoted_s:.1} s"
            ),
        )
        .await
}
