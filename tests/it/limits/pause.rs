//! What the fleet sends when a vendor's pause ends: what the vendor's bucket
//! refilled meanwhile, not a fresh burst after any pause.

use std::time::Duration;

use rolecall_tests::TestEnv;
use rolecall_worker::limiter::{Admission, Limiter, Throttle, WaitReason};

use super::{limiter, rate};

/// Waits out the fleet's pause, then asks for slots back to back until the
/// limiter books one ahead: how many requests the pause's end lets go at once.
async fn sent_at_once_after_the_pause(l: &dyn Limiter) -> usize {
    match l.acquire(Duration::ZERO).await.unwrap() {
        Admission::Wait {
            wait,
            reason: WaitReason::Paused,
        } => tokio::time::sleep(wait + Duration::from_millis(20)).await,
        other => panic!("the fleet must be paused, got {other:?}"),
    }
    let mut at_once = 0;
    loop {
        match l.acquire(Duration::ZERO).await.unwrap() {
            Admission::Granted { after, .. } if after.is_zero() => at_once += 1,
            _ => return at_once,
        }
    }
}

fn throttle(retry_after: Duration) -> Throttle {
    Throttle {
        retry_after: Some(retry_after),
        round_trip: Duration::from_millis(20),
        sent: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_pause_ends_with_what_the_vendors_bucket_refilled_not_a_whole_burst() {
    let env = TestEnv::new().await;
    // A token bucket of 10/s with bursts of 20 refuses: it is empty. One
    // second later it holds 10 tokens, not 20.
    let mut fleet = rate(10.0, 20, None);
    fleet.adaptive = false;
    let l = limiter(&env, fleet);
    l.throttled(throttle(Duration::from_secs(1))).await;
    let at_once = sent_at_once_after_the_pause(l.as_ref()).await;
    // The refill less the one token left to the vendor; before, the whole
    // burst (19) went, and nine of them were refused.
    assert!((8..=10).contains(&at_once), "{at_once} sent at once");
    env.cleanup_keys().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_long_enough_to_refill_the_vendors_bucket_ends_with_its_whole_burst() {
    let env = TestEnv::new().await;
    // 10/s with bursts of 5: one second refills the bucket, so the quota
    // is there to use at once.
    let mut fleet = rate(10.0, 5, None);
    fleet.adaptive = false;
    let l = limiter(&env, fleet);
    l.throttled(throttle(Duration::from_secs(1))).await;
    let at_once = sent_at_once_after_the_pause(l.as_ref()).await;
    assert_eq!(at_once, 4, "the burst less the vendor's last token");
    env.cleanup_keys().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_cut_short_by_max_pause_lets_one_request_go_first() {
    let env = TestEnv::new().await;
    let mut fleet = rate(10.0, 20, None);
    fleet.adaptive = false;
    fleet.max_pause = Duration::from_secs(1);
    let l = limiter(&env, fleet);
    // The vendor wants a minute; the fleet comes back after one second,
    // before the vendor said it would take requests again.
    let outcome = l.throttled(throttle(Duration::from_secs(60))).await;
    assert!(outcome.capped);
    let at_once = sent_at_once_after_the_pause(l.as_ref()).await;
    assert_eq!(at_once, 1, "one request first, the rest at the pace");
    // The next one is booked one interval (100 ms at 10/s) later at most.
    match l.acquire(Duration::ZERO).await.unwrap() {
        Admission::Granted { after, .. } => {
            assert!(after <= Duration::from_millis(200), "{after:?}")
        }
        other => panic!("paced, not paused: {other:?}"),
    }
    env.cleanup_keys().await;
}
