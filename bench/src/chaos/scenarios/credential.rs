//! The vendor revokes the credential for 20 s, then restores it: one
//! incident, one alert, jobs parked (not failed), work resuming on the
//! first successful probe.

use std::time::{Duration, Instant};

use rolecall_sim::Chaos;

use crate::harness::{Ctx, Fleet, Infra, Report};

const REVOKED: Duration = Duration::from_secs(20);

pub async fn run(ctx: &Ctx) -> anyhow::Result<Report> {
    let fleet = Fleet::start(ctx, "credential-revoked", Infra::shared()).await?;
    fleet.wait_share(1.0 / 3.0, ctx.users).await?;
    fleet.sim.set_chaos(Chaos {
        revoked: true,
        ..Chaos::default()
    });
    tokio::time::sleep(REVOKED).await;
    fleet.sim.set_chaos(Chaos::default());
    let restored = Instant::now();
    let recovered = fleet.recovered_after(restored).await?;
    fleet
        .finish(
            "credential revoked 20 s, restored",
            ctx.users,
            vec![recovered],
            "recovery counted from the restore (target ≤ 10 s)".into(),
        )
        .await
}
