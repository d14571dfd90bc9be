//! Redis dies (`kill -9`) and comes back from its append-only file (fsync
//! on every write): workers hold their deliveries meanwhile, and nothing
//! acknowledged by Redis is lost.

use std::time::{Duration, Instant};

use crate::harness::{Ctx, Fleet, Infra, Report};
use rolecall_tests::RedisProcess;

/// How long Redis stays down.
const DOWN: Duration = Duration::from_secs(5);

pub async fn run(ctx: &Ctx) -> anyhow::Result<Report> {
    let mut redis = RedisProcess::try_start().await?;
    let infra = Infra {
        redis_url: redis.url(),
        ..Infra::shared()
    };
    let fleet = Fleet::start(ctx, "redis-kill", infra).await?;
    fleet.wait_share(1.0 / 3.0, ctx.users).await?;
    redis.kill();
    tokio::time::sleep(DOWN).await;
    redis.try_restart().await?;
    let back = Instant::now();
    let recovered = fleet.recovered_after(back).await?;
    fleet
        .finish(
            "Redis `kill -9` (AOF, fsync always)",
            ctx.users,
            vec![recovered],
            format!("down {} s at 1/3", DOWN.as_secs()),
        )
        .await
}
