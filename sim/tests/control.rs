//! Observing and steering the sim: timings, the request log, resets and
//! injected faults, through the handle and over the admin API.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rolecall_sim::{
    Fault, Limit, RateLimit, RequestRecord, SimConfig, SimHandle, StatsSnapshot, spawn,
};
use serde_json::{Value, json};

const KEY: &str = "test-key";

async fn sim(config: SimConfig) -> SimHandle {
    let config = SimConfig {
        api_key: KEY.to_owned(),
        ..config
    };
    match spawn(config).await {
        Ok(sim) => sim,
        Err(error) => panic!("sim did not start: {error:#}"),
    }
}

type Answer = (u16, Option<String>, Value);

/// One lookup with `key`; returns the status, `Retry-After` and JSON body.
async fn lookup_with(sim: &SimHandle, key: &str) -> Answer {
    lookup_at(sim.base_url(), key).await
}

async fn lookup_at(base_url: String, key: &str) -> Answer {
    let response = reqwest::Client::new()
        .get(format!("{base_url}/v1/users"))
        .query(&[("email", "nobody@example.com")])
        .basic_auth(key, None::<&str>)
        .send()
        .await
        .expect("request failed");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, retry_after, response.json().await.expect("JSON"))
}

async fn lookup(sim: &SimHandle) -> Answer {
    lookup_with(sim, KEY).await
}

fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    u64::try_from(since.as_millis()).expect("ms fit")
}

async fn admin<T: serde::de::DeserializeOwned>(sim: &SimHandle, route: &str) -> T {
    reqwest::get(format!("{}/_sim/{route}", sim.base_url()))
        .await
        .expect("request failed")
        .json()
        .await
        .expect("JSON")
}

fn fault(status: u16, retry_after_s: Option<u64>, count: u32) -> Fault {
    Fault {
        status,
        retry_after: retry_after_s.map(Duration::from_secs),
        count,
    }
}

#[tokio::test]
async fn timings_follow_arrivals_on_the_wall_clock() {
    let sim = sim(SimConfig::default()).await;
    let stats = sim.stats();
    assert_eq!(
        (
            stats.first_request_unix_ms,
            stats.last_request_unix_ms,
            stats.first_accepted_unix_ms,
            stats.last_accepted_unix_ms
        ),
        (None, None, None, None)
    );

    let before = now_ms();
    assert_eq!(lookup(&sim).await.0, 200);
    let after = now_ms();
    let first = sim.stats();
    let at = first.first_request_unix_ms.expect("first request time");
    // The sim's clock is anchored on the system clock once, so allow a little.
    assert!(
        before.saturating_sub(20) <= at && at <= after + 20,
        "{before} <= {at} <= {after}"
    );
    assert_eq!(first.last_request_unix_ms, Some(at));
    assert_eq!(first.first_accepted_unix_ms, Some(at));
    assert_eq!(first.last_accepted_unix_ms, Some(at));

    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(lookup(&sim).await.0, 200);
    let second = sim.stats();
    let later = second.last_request_unix_ms.expect("last request time");
    assert!(later >= at + 30, "{later} vs {at}");
    assert_eq!(second.first_request_unix_ms, Some(at));
    assert_eq!(second.last_accepted_unix_ms, Some(later));

    // A throttled request moves only the request timings.
    sim.set_rate(Some(RateLimit {
        per_second: 1.0,
        burst: 0,
    }));
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(lookup(&sim).await.0, 429);
    let third: StatsSnapshot = admin(&sim, "stats").await;
    assert!(third.last_request_unix_ms.expect("set") >= later + 30);
    assert_eq!(third.first_request_unix_ms, Some(at));
    assert_eq!(third.first_accepted_unix_ms, Some(at));
    assert_eq!(third.last_accepted_unix_ms, Some(later));
    assert_eq!(third, sim.stats());
}

#[tokio::test]
async fn request_log_records_what_was_answered() {
    let sim = sim(SimConfig {
        rate: Some(RateLimit {
            per_second: 0.1,
            burst: 3,
        }),
        ..SimConfig::default()
    })
    .await;

    assert_eq!(lookup(&sim).await.0, 200);
    assert_eq!(lookup_with(&sim, "wrong-key").await.0, 401);

    sim.inject(fault(503, Some(7), 1));
    let (status, retry_after, body) = lookup(&sim).await;
    assert_eq!(status, 503);
    assert_eq!(retry_after.as_deref(), Some("7"));
    assert_eq!(body["code"], "ServiceUnavailableError");
    assert!(body["message"].is_string());

    // The bucket is empty: the throttle answers, without Retry-After (Lever
    // documents none; injected faults still carry theirs).
    let (status, retry_after, body) = lookup(&sim).await;
    assert_eq!(status, 429);
    assert_eq!(retry_after, None);
    assert_eq!(body["code"], "TooManyRequestsError");

    let log = sim.requests();
    let statuses: Vec<u16> = log.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 401, 503, 429]);
    assert!(log.windows(2).all(|w| w[0].at_unix_ms <= w[1].at_unix_ms));
    let stats = sim.stats();
    assert_eq!(stats.first_request_unix_ms, Some(log[0].at_unix_ms));
    assert_eq!(stats.last_request_unix_ms, Some(log[3].at_unix_ms));
    assert_eq!(stats.last_accepted_unix_ms, Some(log[2].at_unix_ms));
    // The injected 503 was not a refusal, and never reached the auth check.
    assert_eq!(
        (
            stats.requests,
            stats.accepted,
            stats.throttled,
            stats.unauthorized
        ),
        (4, 3, 1, 1)
    );

    let over_http: Vec<RequestRecord> = admin(&sim, "requests").await;
    assert_eq!(over_http, log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn injected_faults_are_used_up_exactly() {
    let sim = sim(SimConfig::default()).await;
    sim.inject(fault(429, None, 5));
    sim.inject(fault(500, Some(0), 3));
    sim.inject(fault(502, Some(1), 0));
    assert_eq!(
        sim.pending_faults(),
        [fault(429, None, 5), fault(500, Some(0), 3)]
    );

    // All in flight at once, so concurrent requests race for the faults.
    let mut lookups = tokio::task::JoinSet::new();
    for _ in 0..20 {
        lookups.spawn(lookup_at(sim.base_url(), KEY));
    }
    let answers: Vec<Answer> = lookups.join_all().await;
    let count = |status| answers.iter().filter(|a| a.0 == status).count();
    assert_eq!((count(429), count(500), count(200)), (5, 3, 12));
    for (status, retry_after, body) in &answers {
        match status {
            429 => {
                assert_eq!(retry_after, &None);
                assert_eq!(
                    body,
                    &json!({"code": "TooManyRequestsError", "message": "Rate limit exceeded"})
                );
            }
            500 => {
                assert_eq!(retry_after.as_deref(), Some("0"));
                assert_eq!(body["code"], "InternalServerError");
            }
            _ => assert_eq!(retry_after, &None),
        }
    }
    assert!(sim.pending_faults().is_empty());

    // Injected 429s are refusals, like real throttling.
    let stats = sim.stats();
    assert_eq!(
        (stats.requests, stats.accepted, stats.throttled),
        (20, 15, 5)
    );
    assert!(stats.peak_accepted_1s <= 15);
    let logged = |status| sim.requests().iter().filter(|r| r.status == status).count();
    assert_eq!((logged(429), logged(500), logged(200)), (5, 3, 12));

    // Any other error status gets Lever's generic error shape.
    sim.inject(fault(502, None, 1));
    let (status, _, body) = lookup(&sim).await;
    assert_eq!(status, 502);
    assert_eq!(body, json!({"code": "Error", "message": "Bad Gateway"}));
    assert_eq!(lookup(&sim).await.0, 200);
}

#[tokio::test]
async fn reset_starts_a_new_measurement() {
    let rate = Some(RateLimit {
        per_second: 0.1,
        burst: 2,
    });
    let sim = sim(SimConfig {
        rate,
        ..SimConfig::default()
    })
    .await;
    for _ in 0..3 {
        lookup(&sim).await;
    }
    assert_eq!(sim.stats().requests, 3);
    sim.inject(fault(503, None, 2));

    sim.reset_stats();
    let stats = sim.stats();
    assert_eq!(stats, common::cleared(&stats));
    assert_eq!(stats.buckets["default"].limit, rate.map(Limit::TokenBucket));
    assert!(sim.requests().is_empty());
    // The scenario stays: rate, drained bucket and pending faults.
    assert_eq!(sim.pending_faults(), [fault(503, None, 2)]);
    assert_eq!(lookup(&sim).await.0, 429);
    let stats = sim.stats();
    assert_eq!((stats.requests, stats.throttled, stats.peak_1s), (1, 1, 1));

    // Over HTTP, answering the cleared stats.
    let response = reqwest::Client::new()
        .post(format!("{}/_sim/reset", sim.base_url()))
        .send()
        .await
        .expect("request failed");
    assert_eq!(response.status().as_u16(), 200);
    let cleared: StatsSnapshot = response.json().await.expect("JSON");
    assert_eq!(cleared, common::cleared(&stats));
    assert!(
        admin::<Vec<RequestRecord>>(&sim, "requests")
            .await
            .is_empty()
    );
    assert_eq!(admin::<Option<RateLimit>>(&sim, "rate").await, rate);
}

#[tokio::test]
async fn faults_over_the_admin_api() {
    let sim = sim(SimConfig::default()).await;
    let client = reqwest::Client::new();
    let url = format!("{}/_sim/faults", sim.base_url());

    let response = client
        .post(&url)
        .json(&json!({"status": 503, "retry_after_s": 2, "count": 2}))
        .send()
        .await
        .expect("request failed");
    assert_eq!(response.status().as_u16(), 200);
    let pending: Vec<Fault> = response.json().await.expect("JSON");
    assert_eq!(pending, [fault(503, Some(2), 2)]);

    let (status, retry_after, _) = lookup(&sim).await;
    assert_eq!((status, retry_after.as_deref()), (503, Some("2")));
    let pending: Vec<Fault> = admin(&sim, "faults").await;
    assert_eq!(pending, [fault(503, Some(2), 1)]);

    let response = client.delete(&url).send().await.expect("request failed");
    assert_eq!(response.status().as_u16(), 204);
    assert!(sim.pending_faults().is_empty());
    assert_eq!(lookup(&sim).await.0, 200);

    for bad in [
        json!({"status": 204, "count": 1}),
        json!({"status": 503}),
        json!({"status": "503", "count": 1}),
    ] {
        let response = client
            .post(&url)
            .json(&bad)
            .send()
            .await
            .expect("request failed");
        assert!(response.status().is_client_error(), "{bad}");
    }
    assert!(sim.pending_faults().is_empty());
}

#[tokio::test]
#[should_panic(expected = "between 400 and 599")]
async fn injecting_a_success_is_a_bug() {
    let sim = sim(SimConfig::default()).await;
    sim.inject(fault(204, None, 1));
}

#[tokio::test]
async fn requests_given_up_on_are_logged_as_499() {
    let sim = sim(SimConfig {
        latency: Duration::from_millis(300),
        ..SimConfig::default()
    })
    .await;
    let gave_up = reqwest::Client::new()
        .get(format!("{}/v1/users", sim.base_url()))
        .basic_auth(KEY, None::<&str>)
        .timeout(Duration::from_millis(50))
        .send()
        .await;
    assert!(gave_up.is_err());

    let mut log = Vec::new();
    for _ in 0..50 {
        log = sim.requests();
        if !log.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(log.iter().map(|r| r.status).collect::<Vec<_>>(), [499]);
    assert_eq!(sim.stats().requests, 1);
}
