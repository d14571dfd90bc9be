//! Helpers shared by the per-vendor tests.

#![allow(dead_code)]

use reqwest::header::HeaderMap;
use rolecall_sim::{BucketStats, RateLimit, SimConfig, SimHandle, StatsSnapshot, spawn};
use serde_json::Value;

pub const KEY: &str = "test-key";

pub async fn start(config: SimConfig) -> SimHandle {
    let config = SimConfig {
        api_key: KEY.to_owned(),
        ..config
    };
    match spawn(config).await {
        Ok(sim) => sim,
        Err(error) => panic!("sim did not start: {error:#}"),
    }
}

/// Status, headers and JSON body (`Null` when the body is not JSON).
pub async fn answer(request: reqwest::RequestBuilder) -> (u16, HeaderMap, Value) {
    let response = request.send().await.expect("request failed");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

pub fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Two requests, then one token every two seconds: the third request in a
/// row is throttled with `Retry-After: 2`.
pub fn tight_rate() -> Option<RateLimit> {
    Some(RateLimit {
        per_second: 0.5,
        burst: 2,
    })
}

/// What `stats` would be right after a reset: no counts, every bucket still
/// listed with its pattern and limit.
pub fn cleared(stats: &StatsSnapshot) -> StatsSnapshot {
    let buckets = stats
        .buckets
        .iter()
        .map(|(name, b)| {
            let config = BucketStats {
                pattern: b.pattern.clone(),
                limit: b.limit,
                limit_per_second: b.limit_per_second,
                window_ms: b.window_ms,
                fixed_windows: b.fixed_windows,
                ..BucketStats::default()
            };
            (name.clone(), config)
        })
        .collect();
    StatsSnapshot {
        buckets,
        ..StatsSnapshot::default()
    }
}
