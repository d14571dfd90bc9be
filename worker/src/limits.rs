//! Reading and changing the fleet's limits while it runs.
//!
//! An operator override lives in Redis (`{rolecall:<saas>}:limits`) and the
//! limiter script reads it on every request, so a change reaches every
//! worker at once, without a restart or a deploy. The effective limit (after
//! the adaptive factor) and any vendor pause are read from the same keys the
//! limiter writes.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use rolecall_common::RedisConnection;
use rolecall_common::Settings;
use rolecall_common::config::RateSettings;
use rolecall_common::names::Names;

/// One SaaS app's limits as the fleet sees them now.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitStatus {
    /// SaaS app.
    pub saas: String,
    /// The configured limit.
    pub configured: RateSettings,
    /// Operator override of per_second, if any.
    pub override_per_second: Option<f64>,
    /// Operator override of burst, if any.
    pub override_burst: Option<u32>,
    /// Operator override of max_in_flight, if any.
    pub override_max_in_flight: Option<u32>,
    /// Adaptive factor (1.0 = the full limit).
    pub factor: f64,
    /// Requests per second the fleet may send now.
    pub effective_per_second: f64,
    /// How long the vendor's pause still lasts.
    pub paused_for: Option<Duration>,
    /// Requests in flight across the fleet (when capped).
    pub in_flight: u64,
}

/// An override to apply; `None` fields are left as they are.
#[derive(Debug, Clone, Default)]
pub struct LimitOverride {
    /// Requests per second.
    pub per_second: Option<f64>,
    /// Burst.
    pub burst: Option<u32>,
    /// In-flight cap.
    pub max_in_flight: Option<u32>,
}

/// Reads every configured SaaS app's limits.
pub async fn status(
    settings: &Settings,
    conn: &mut RedisConnection,
) -> redis::RedisResult<Vec<LimitStatus>> {
    let names = Names::new(&settings.namespace);
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut out = Vec::new();
    for (saas, app) in &settings.saas {
        let ov: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(names.limits_override_key(saas))
            .query_async(conn)
            .await?;
        let state: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(names.limiter_key(saas))
            .query_async(conn)
            .await?;
        let pause: Option<i64> = redis::cmd("GET")
            .arg(names.pause_key(saas))
            .query_async(conn)
            .await?;
        let in_flight: u64 = redis::cmd("ZCOUNT")
            .arg(names.leases_key(saas))
            .arg(now_ms)
            .arg("+inf")
            .query_async(conn)
            .await?;
        let parse =
            |m: &HashMap<String, String>, k: &str| m.get(k).and_then(|v| v.parse::<f64>().ok());
        let override_per_second = parse(&ov, "per_second");
        let base = override_per_second.unwrap_or(app.rate.per_second);
        let limit = app.rate.limit();
        let counted = limit.counted().map(|n| (n, limit.window));
        let factor = crate::limiter::factor_at(&state, now_ms, counted);
        out.push(LimitStatus {
            saas: saas.clone(),
            configured: app.rate.clone(),
            override_per_second,
            override_burst: parse(&ov, "burst").map(|v| v as u32),
            override_max_in_flight: parse(&ov, "max_in_flight").map(|v| v as u32),
            factor,
            effective_per_second: base * factor,
            paused_for: pause
                .filter(|until| *until > now_ms)
                .map(|until| Duration::from_millis((until - now_ms) as u64)),
            in_flight,
        });
    }
    Ok(out)
}

/// Sets an override for one SaaS app.
pub async fn set_override(
    settings: &Settings,
    conn: &mut RedisConnection,
    saas: &str,
    change: &LimitOverride,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        settings.saas.contains_key(saas),
        "SaaS app `{saas}` is not configured"
    );
    let key = Names::new(&settings.namespace).limits_override_key(saas);
    let mut fields: Vec<(&str, String)> = Vec::new();
    if let Some(v) = change.per_second {
        anyhow::ensure!(v.is_finite() && v > 0.0, "--per-second must be positive");
        fields.push(("per_second", v.to_string()));
    }
    if let Some(v) = change.burst {
        anyhow::ensure!(v > 0, "--burst must be at least 1");
        fields.push(("burst", v.to_string()));
    }
    if let Some(v) = change.max_in_flight {
        anyhow::ensure!(v > 0, "--max-in-flight must be at least 1");
        fields.push(("max_in_flight", v.to_string()));
    }
    anyhow::ensure!(!fields.is_empty(), "nothing to set");
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg(fields)
        .query_async(conn)
        .await?;
    Ok(())
}

/// Removes one SaaS app's override: the configured limits apply again.
pub async fn clear_override(
    settings: &Settings,
    conn: &mut RedisConnection,
    saas: &str,
) -> anyhow::Result<()> {
    let key = Names::new(&settings.namespace).limits_override_key(saas);
    let _: () = redis::cmd("DEL").arg(&key).query_async(conn).await?;
    Ok(())
}

/// Renders limit statuses as a table.
pub fn render(statuses: &[LimitStatus]) -> String {
    let mut out = String::from(
        "| saas | configured | override | factor | effective/s | paused | in flight |\n|---|---|---|---|---|---|---|\n",
    );
    for s in statuses {
        let limit = if s.configured.window == Duration::from_secs(1) {
            format!(
                "{}/s, burst {}",
                s.configured.per_second, s.configured.burst
            )
        } else {
            let l = s.configured.limit();
            format!("{:.0} per {:?}", l.requests(), l.window)
        };
        let configured = format!(
            "{limit}{}{}",
            if s.configured.buckets.is_empty() {
                String::new()
            } else {
                format!(", {} buckets", s.configured.buckets.len())
            },
            s.configured
                .max_in_flight
                .map(|c| format!(", {c} in flight"))
                .unwrap_or_default()
        );
        let overrides: Vec<String> = [
            s.override_per_second.map(|v| format!("{v}/s")),
            s.override_burst.map(|v| format!("burst {v}")),
            s.override_max_in_flight.map(|v| format!("{v} in flight")),
        ]
        .into_iter()
        .flatten()
        .collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.2} | {:.2} | {} | {} |",
            s.saas,
            configured,
            if overrides.is_empty() {
                "-".to_string()
            } else {
                overrides.join(", ")
            },
            s.factor,
            s.effective_per_second,
            s.paused_for
                .map(|d| format!("{:.1} s", d.as_secs_f64()))
                .unwrap_or_else(|| "-".into()),
            s.in_flight
        );
    }
    out
}
