//! From what the vendor saw to the result table: quota use, 429s and the
//! peak per bucket, and whether Rolecall met the scenario's target.

use std::fmt::Write as _;

use rolecall_sim::{BucketStats, Limit, RequestRecord};

use crate::fleet::Run;
use crate::scenarios::Kind;

/// Quota use is measured from this long after the limit was halved.
pub const SETTLE_MS: u64 = 10_000;

/// One row: one system, one scenario, one vendor bucket.
pub struct Row {
    pub system: String,
    pub scenario: String,
    pub limit: String,
    pub jobs: usize,
    pub done: u64,
    pub failed: u64,
    pub run_s: f64,
    pub requests: u64,
    pub throttled: u64,
    pub peak: String,
    pub quota: String,
    /// `None` for peers; for Rolecall, the misses (empty: target met).
    pub misses: Option<Vec<String>>,
}

/// The most requests the vendor admits in one of its windows (a token
/// bucket: a full burst plus one second of refill).
fn window_capacity(limit: &Limit) -> u64 {
    match limit {
        Limit::TokenBucket(rate) => u64::from(rate.burst) + rate.per_second.floor() as u64,
        Limit::SlidingWindow { requests, .. } | Limit::FixedWindow { requests, .. } => {
            u64::from(*requests)
        }
    }
}

/// Accepted requests ÷ (the limit's rate × the busy period, first to last
/// accepted request); n requests paced exactly at the limit span n − 1
/// intervals, so that pace scores 1.000.
fn quota_use(bucket: &BucketStats) -> Option<f64> {
    let per_second = bucket.limit_per_second?;
    let span_s = bucket
        .last_accepted_unix_ms?
        .saturating_sub(bucket.first_accepted_unix_ms?) as f64
        / 1000.0;
    (span_s > 0.0 && per_second > 0.0)
        .then(|| bucket.accepted.saturating_sub(1) as f64 / (per_second * span_s))
}

/// Most arrivals (refused ones included) in any window of `window_ms`
/// among `log` records at or after `from_ms`; millisecond timestamps, so
/// it may count one more than the sim would, never fewer.
fn peak_after(log: &[RequestRecord], from_ms: u64, window_ms: u64) -> u64 {
    let at: Vec<u64> = log
        .iter()
        .filter(|r| r.at_unix_ms >= from_ms)
        .map(|r| r.at_unix_ms)
        .collect();
    let (mut start, mut peak) = (0, 0);
    for end in 0..at.len() {
        while at[end] - at[start] >= window_ms {
            start += 1;
        }
        peak = peak.max(end + 1 - start);
    }
    peak as u64
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

pub fn rows(run: &Run) -> Vec<Row> {
    let scenario = &run.scenario;
    let rolecall = run.worker_logs.is_some();
    let base = |limit: String, bucket: &BucketStats| Row {
        system: run.system.clone(),
        scenario: format!("{} ({} jobs)", scenario.kind, scenario.jobs),
        limit,
        jobs: run.jobs,
        done: run.completed,
        failed: run.failed,
        run_s: run.duration_s,
        requests: bucket.requests,
        throttled: bucket.throttled,
        peak: String::new(),
        quota: String::new(),
        misses: None,
    };
    let incomplete = |misses: &mut Vec<String>| {
        if run.completed < run.jobs as u64 || run.failed > 0 {
            misses.push(format!(
                "{} of {} jobs done, {} failed",
                run.completed, run.jobs, run.failed
            ));
        }
    };

    if scenario.kind == Kind::Halved {
        let bucket = run
            .stats
            .buckets
            .get("default")
            .cloned()
            .unwrap_or_default();
        let mut row = base(scenario.limit_text("default"), &bucket);
        let limit = scenario.limit.expect("a limit").halved();
        let pct = 100.0 * share(run.stats.throttled, run.stats.requests);
        let mut misses = Vec::new();
        incomplete(&mut misses);
        match run.halved_at_ms {
            None => {
                row.quota = "n/a (never halved)".into();
                misses.push("the limit was never halved".into());
            }
            Some(at) => {
                let from = at + SETTLE_MS;
                let accepted: Vec<u64> = run
                    .log
                    .iter()
                    .filter(|r| r.at_unix_ms >= from && r.status != 429)
                    .map(|r| r.at_unix_ms)
                    .collect();
                let last = accepted.iter().copied().max().unwrap_or(from);
                let span_s = (last - from) as f64 / 1000.0;
                let quota =
                    (span_s > 0.0).then(|| accepted.len() as f64 / (limit.per_second() * span_s));
                let window_ms = limit.window.as_millis() as u64;
                let peak = peak_after(&run.log, from, window_ms);
                row.peak = format!("{peak} / {} (from +10 s)", limit.requests);
                let after_429 = run
                    .log
                    .iter()
                    .filter(|r| r.at_unix_ms >= at && r.status == 429)
                    .count();
                row.quota = match quota {
                    Some(q) => format!("{q:.3} of {limit} from +10 s to the end ({:.0} s)", span_s),
                    None => "n/a (no requests 10 s after halving)".into(),
                };
                if quota.is_none_or(|q| q < 0.90) {
                    misses.push(format!("quota use {} < 0.90", fmt_opt(quota)));
                }
                row.throttled = run.stats.throttled;
                row.requests = run.stats.requests;
                row.peak
                    .push_str(&format!("; 429s after halving: {after_429}"));
            }
        }
        row.limit = format!("{} (429s {pct:.2} % of requests)", row.limit);
        if pct >= 1.0 {
            misses.push(format!("429s are {pct:.2} % of requests (≥ 1 %)"));
        }
        row.misses = rolecall.then_some(misses);
        return vec![row];
    }

    let mut rows = Vec::new();
    for (name, bucket) in &run.stats.buckets {
        if bucket.requests == 0 && name == "default" && run.stats.buckets.len() > 1 {
            continue;
        }
        let mut row = base(scenario.limit_text(name), bucket);
        let capacity = bucket.limit.as_ref().map(window_capacity);
        let window = if bucket.fixed_windows {
            format!("fixed {} s", bucket.window_ms / 1000)
        } else {
            format!("{} ms", bucket.window_ms)
        };
        row.peak = match capacity {
            Some(c) => format!("{} / {c} ({window})", bucket.peak_in_window),
            None => format!("{} (unlimited)", bucket.peak_in_window),
        };
        let quota = quota_use(bucket);
        row.quota = fmt_opt(quota);
        if scenario.kind == Kind::Mosyle {
            row.quota.push_str(" (list scans only)");
        }
        let mut misses = Vec::new();
        incomplete(&mut misses);
        if let Some(c) = capacity
            && bucket.peak_in_window > c
        {
            misses.push(format!(
                "{name}: peak {} in one window > {c}",
                bucket.peak_in_window
            ));
        }
        if scenario.kind == Kind::Sliding {
            if quota.is_none_or(|q| q < 0.97) {
                misses.push(format!("quota use {} < 0.97", fmt_opt(quota)));
            }
            if bucket.throttled > 0 {
                misses.push(format!("{} 429s (target 0)", bucket.throttled));
            }
        }
        row.misses = rolecall.then_some(misses);
        rows.push(row);
    }
    rows
}

fn fmt_opt(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".into(), |v| format!("{v:.3}"))
}

pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str(
        "| system | scenario | vendor limit | done / jobs | failed | run s | requests | 429s | peak in a vendor window / limit | quota use | target |\n",
    );
    out.push_str("|---|---|---|---:|---:|---:|---:|---:|---|---|---|\n");
    for r in rows {
        let target = match &r.misses {
            None => "—".to_owned(),
            Some(m) if m.is_empty() => "met".to_owned(),
            Some(m) => format!("**missed**: {}", m.join("; ")),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} / {} | {} | {:.1} | {} | {} | {} | {} | {} |",
            r.system,
            r.scenario,
            r.limit,
            r.done,
            r.jobs,
            r.failed,
            r.run_s,
            r.requests,
            r.throttled,
            r.peak,
            r.quota,
            target
        );
    }
    out
}

/// Rolecall's limiter, as its worker logs tell it, per scenario.
pub fn log_summary(runs: &[Run]) -> String {
    let mut out = String::from(
        "| scenario | \"Adaptive rate factor changed.\" | \"Vendor throttled a request.\" | quota-exhausted pauses | logs |\n|---|---:|---:|---:|---|\n",
    );
    for run in runs {
        if let Some(logs) = &run.worker_logs {
            let dir = logs
                .files
                .first()
                .and_then(|f| f.parent())
                .map(|d| d.display().to_string())
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {dir} |",
                run.scenario.slug(),
                logs.factor_changes,
                logs.throttled,
                logs.quota_pauses
            );
        }
    }
    out
}

/// What the vendor admitted over time: accepted requests per second and
/// 429s in each `slice_ms` slice from the first request, the moment the
/// limit was halved, and when the first 429s came.
pub fn timeline(run: &Run, slice_ms: u64) -> String {
    let Some(start) = run.log.first().map(|r| r.at_unix_ms) else {
        return "no requests".into();
    };
    let end = run.log.last().map_or(start, |r| r.at_unix_ms);
    let slices = ((end - start) / slice_ms + 1) as usize;
    let mut accepted = vec![0u64; slices];
    let mut refused = vec![0u64; slices];
    for r in &run.log {
        let i = ((r.at_unix_ms - start) / slice_ms) as usize;
        if r.status == 429 {
            refused[i] += 1;
        } else {
            accepted[i] += 1;
        }
    }
    let mut out = format!(
        "accepted/s (429s) per {} s slice from the first request:",
        slice_ms / 1000
    );
    for (i, (a, t)) in accepted.iter().zip(&refused).enumerate() {
        if i % 10 == 0 {
            let _ = write!(out, "\n  {:>4} s:", i as u64 * slice_ms / 1000);
        }
        let rate = *a as f64 * 1000.0 / slice_ms as f64;
        let _ = write!(out, " {rate:.1}");
        if *t > 0 {
            let _ = write!(out, " ({t})");
        }
    }
    if let Some(at) = run.halved_at_ms {
        let _ = write!(
            out,
            "\n  limit halved at +{:.1} s",
            at.saturating_sub(start) as f64 / 1000.0
        );
    }
    let first_429: Vec<String> = run
        .log
        .iter()
        .filter(|r| r.status == 429)
        .take(20)
        .map(|r| format!("{:.2}", (r.at_unix_ms - start) as f64 / 1000.0))
        .collect();
    if !first_429.is_empty() {
        let _ = write!(out, "\n  first 429s at +s: {}", first_429.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: &[u64]) -> Vec<RequestRecord> {
        ms.iter()
            .map(|&at_unix_ms| RequestRecord {
                at_unix_ms,
                status: 200,
            })
            .collect()
    }

    #[test]
    fn peaks_count_arrivals_in_any_window() {
        let log = at(&[0, 100, 999, 1000, 1500, 1999, 5000]);
        assert_eq!(peak_after(&log, 0, 1000), 3);
        assert_eq!(peak_after(&log, 1000, 1000), 3);
        assert_eq!(peak_after(&log, 4000, 1000), 1);
        assert_eq!(peak_after(&log, 6000, 1000), 0);
    }

    #[test]
    fn exact_pacing_uses_the_whole_quota() {
        let bucket = BucketStats {
            limit_per_second: Some(50.0),
            accepted: 501,
            first_accepted_unix_ms: Some(1_000),
            last_accepted_unix_ms: Some(11_000),
            ..BucketStats::default()
        };
        assert!((quota_use(&bucket).unwrap() - 1.0).abs() < 1e-9);
        let bucket = BucketStats {
            accepted: 0,
            ..BucketStats::default()
        };
        assert_eq!(quota_use(&bucket), None);
    }

    #[test]
    fn capacities_per_scheme() {
        use std::time::Duration;
        let tokens = Limit::TokenBucket(rolecall_sim::RateLimit {
            per_second: 10.0,
            burst: 20,
        });
        assert_eq!(window_capacity(&tokens), 30);
        assert_eq!(
            window_capacity(&Limit::sliding_window(50, Duration::from_secs(1))),
            50
        );
    }
}
