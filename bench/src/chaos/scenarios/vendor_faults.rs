//! The vendor answers 20 % of requests with a 503 and lets 1 % hang, for
//! the whole run: retries (in process, then delay queues) absorb it.

use rolecall_sim::Chaos;

use crate::harness::{Ctx, Fleet, Infra, Report};

pub async fn run(ctx: &Ctx) -> anyhow::Result<Report> {
    let fleet = Fleet::start(ctx, "vendor-faults", Infra::shared()).await?;
    fleet.sim.set_chaos(Chaos {
        error_ratio: 0.20,
        hang_ratio: 0.01,
        // Far beyond the attempt timeout (2 s): the worker gives up, not the vendor.
        hang_s: 30,
        revoked: false,
    });
    fleet
        .finish(
            "vendor 20 % 503 + 1 % hangs",
            ctx.users,
            Vec::new(),
            "whole run; hangs last 30 s, attempt timeout 2 s".into(),
        )
        .await
}
