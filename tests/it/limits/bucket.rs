//! A vendor's token bucket against the fleet's: what arrives, not what
//! leaves, is what the vendor counts.

use std::time::{Duration, Instant};

use rolecall_tests::TestEnv;

use super::{limiter, rate, take};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measures rates: runs alone, after the rest (scripts/test.sh)"]
async fn a_saturated_token_bucket_leaves_the_vendor_a_token_for_arrival_jitter() {
    // Lever's bucket (VENDORS.md §2.6): 10 per second, bursts of 20. The
    // fleet sends as fast as its limiter allows; on the way one request in
    // three is 30 ms late, the first among them, and the vendor's bucket
    // (full at the start, refilled continuously, a whole token a request)
    // counts arrivals.
    let env = TestEnv::new().await;
    let (per_second, burst) = (10.0, 20u32);
    let l = limiter(&env, rate(per_second, burst, None));
    let started = Instant::now();
    let run_for = Duration::from_secs(4);
    let mut sent = Vec::new();
    while started.elapsed() < run_for {
        take(l.as_ref()).await;
        sent.push(started.elapsed().as_secs_f64());
    }
    let mut arrivals: Vec<f64> = sent
        .iter()
        .enumerate()
        .map(|(i, t)| t + if i % 3 == 0 { 0.030 } else { 0.0 })
        .collect();
    arrivals.sort_by(f64::total_cmp);
    let (mut tokens, mut last) = (f64::from(burst), arrivals[0]);
    let mut refused = Vec::new();
    for (i, at) in arrivals.iter().enumerate() {
        tokens = (tokens + (at - last) * per_second).min(f64::from(burst));
        last = *at;
        if tokens >= 1.0 - 1e-9 {
            tokens -= 1.0;
        } else {
            refused.push(i);
        }
    }
    assert!(
        refused.is_empty(),
        "the vendor refused arrivals {refused:?}"
    );
    // The rate is used whole: one token of the burst is all that is left.
    let quota = per_second * run_for.as_secs_f64() + f64::from(burst);
    assert!(
        sent.len() as f64 >= quota - 2.0,
        "{} sent of {quota}",
        sent.len()
    );
    env.cleanup_keys().await;
}
