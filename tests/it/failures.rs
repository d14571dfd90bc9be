//! Vendor failures end as alerts (after retries), never as silent losses.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rolecall_common::amqp::header_str;
use rolecall_common::credentials::Vault;
use rolecall_common::messages::{AlertKind, ERROR_HEADER};
use rolecall_sim::SimConfig;
use rolecall_tests::{AppSpec, TestEnv, active_rows, publish};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendor_failing_after_every_retry_raises_an_alert_and_loses_nothing_else() {
    let env = TestEnv::new().await;
    let sim = rolecall_sim::spawn(SimConfig {
        users: 30,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let users = sim.population().users.clone();
    let failing: HashSet<String> = users.iter().take(2).map(|u| u.email.clone()).collect();
    sim.shutdown().await;
    // Same population, but two users' lookups always fail with a 500.
    let sim = rolecall_sim::spawn(SimConfig {
        users: 30,
        fail_emails: failing.clone(),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let settings = env.settings(&[AppSpec {
        name: "lever",
        sim: &sim,
        per_second: 100.0,
        burst: 10,
    }]);

    let mut csv = String::from("saas,user_id,email,status\n");
    for (i, user) in users.iter().take(20).enumerate() {
        csv.push_str(&format!("lever,u{i},{},active\n", user.email));
    }
    let worker = env.spawn_worker(&settings).await;
    let report = publish(&settings, &csv).await;
    // Two in-process attempts, then delay queues of 1 s and 2 s.
    let counters = env
        .wait_for_run(&settings, &report.run_id, Duration::from_secs(60))
        .await;
    let worker = worker.stop().await;
    assert_eq!(counters.failed, 2);
    assert_eq!(counters.outcomes(), 20);

    let alerts = env
        .alerts_until(Duration::from_secs(5), |a| a.len() >= 3)
        .await;
    let failed: Vec<_> = alerts
        .iter()
        .filter(|a| a.kind == AlertKind::VendorUnavailable)
        .collect();
    assert_eq!(failed.len(), 2, "{alerts:?}");
    for alert in &failed {
        let user = alert.user.as_ref().expect("the alert names the user");
        assert!(failing.contains(&user.email));
        assert_eq!(
            alert.attempts, 3,
            "initial delivery plus two delayed retries"
        );
        assert!(alert.error.contains("HTTP 500"), "{}", alert.error);
    }
    // 18 good users once each; 2 failing users × 3 deliveries × 2 attempts.
    let calls: u64 = worker.metrics()["lever"].attempts;
    assert_eq!(calls, 18 + 2 * 3 * 2);

    let results = env.results().await;
    let failed_results: Vec<_> = results
        .values()
        .filter(|r| r["status"] == "failed")
        .collect();
    assert_eq!(failed_results.len(), 2);
    assert!(
        failed_results
            .iter()
            .all(|r| r["error_class"] == "exhausted")
    );

    let dead = env.drain(&env.names.dead_queue("lever")).await;
    assert_eq!(dead.len(), 2);
    assert!(
        header_str(&dead[0].delivery.properties, ERROR_HEADER)
            .unwrap()
            .starts_with("exhausted")
    );
    env.cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_credential_parks_jobs_alerts_once_and_resumes_when_it_is_fixed() {
    let env = TestEnv::new().await;
    let sim = rolecall_sim::spawn(SimConfig {
        users: 30,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    // The credential comes from a mounted file, as a Kubernetes Secret
    // would: wrong at first, then rotated while the fleet runs.
    let dir = tempfile::tempdir().unwrap();
    let mut settings = env.settings(&[AppSpec {
        name: "lever",
        sim: &sim,
        per_second: 100.0,
        burst: 10,
    }]);
    settings.credentials.dir = Some(dir.path().to_path_buf());
    settings.worker.defer_delays = vec![Duration::from_secs(1), Duration::from_secs(2)];
    let file = dir.path().join("lever");
    std::fs::write(&file, "revoked-key-hunter2").unwrap();
    let vault = Vault::with_env(settings.credentials.clone(), HashMap::new());
    let worker = env.spawn_worker_with(&settings, &vault).await;
    let report = publish(&settings, &active_rows(&sim, "lever", 15)).await;

    // The first refusal opens the incident: one alert for the fleet, and
    // jobs wait instead of failing.
    let alerts = env
        .alerts_until(Duration::from_secs(10), |a| {
            a.iter().any(|a| a.kind == AlertKind::AuthFailed)
        })
        .await;
    // Jobs already on their way when it opened meet the refusal too; from
    // then on only probes (one at a time, at growing intervals) reach the
    // vendor.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = sim.stats().unauthorized;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let probes = sim.stats().unauthorized - before;
    assert!(
        probes <= 4,
        "{probes} calls in 4 s while the breaker was open"
    );
    let run = env.ledger(&settings).run(&report.run_id).await.unwrap();
    assert_eq!(
        run.failed, 0,
        "nobody fails for a refused credential: {run:?}"
    );

    // Fixed: the next probe reads the file again and everything resumes.
    std::fs::write(&file, rolecall_tests::SIM_KEY).unwrap();
    let restored = std::time::Instant::now();
    let counters = env
        .wait_for_run(&settings, &report.run_id, Duration::from_secs(30))
        .await;
    let resumed_in = restored.elapsed();
    worker.stop().await;
    assert_eq!(counters.failed, 0, "{counters:?}");
    assert_eq!(counters.outcomes(), 15);
    assert!(resumed_in < Duration::from_secs(15), "{resumed_in:?}");
    let alerts: Vec<_> = alerts
        .into_iter()
        .chain(
            env.alerts_until(Duration::from_secs(3), |a| {
                a.iter().any(|a| a.kind == AlertKind::RunFinished)
            })
            .await,
        )
        .collect();
    let auth: Vec<_> = alerts
        .iter()
        .filter(|a| a.kind == AlertKind::AuthFailed)
        .collect();
    assert_eq!(auth.len(), 1, "{alerts:?}");
    assert!(!auth[0].id.is_empty());
    assert!(!auth[0].error.contains("hunter2"), "no secret in alerts");
    // It names the credential to fix (by its name, not its value), says
    // what happens to the jobs and says the refusal once.
    assert!(
        auth[0]
            .error
            .starts_with("lever: vendor refused the credential (HTTP 401")
            && auth[0].error.contains("Check credential `lever`")
            && auth[0].error.matches("refused the credential").count() == 1,
        "{}",
        auth[0].error
    );
    let recovered = alerts
        .iter()
        .filter(|a| a.kind == AlertKind::AuthRecovered)
        .count();
    assert_eq!(recovered, 1, "{alerts:?}");
    env.cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_throttled_past_their_age_fail_as_throttled_out_with_one_alert() {
    let env = TestEnv::new().await;
    // A vendor that refuses every request with a bare 429 (no Retry-After).
    let sim = rolecall_sim::spawn(SimConfig {
        users: 10,
        rate: Some(rolecall_sim::RateLimit {
            per_second: 0.0,
            burst: 0,
        }),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut settings = env.settings(&[AppSpec {
        name: "lever",
        sim: &sim,
        per_second: 100.0,
        burst: 10,
    }]);
    settings.worker.max_hold = Duration::from_millis(200);
    settings.worker.defer_delays = vec![Duration::from_secs(2)];
    settings.worker.max_throttle_age = Duration::from_secs(1);
    let worker = env.spawn_worker(&settings).await;
    let report = publish(&settings, &active_rows(&sim, "lever", 4)).await;
    let counters = env
        .wait_for_run(&settings, &report.run_id, Duration::from_secs(60))
        .await;
    worker.stop().await;
    assert_eq!(counters.failed, 4, "{counters:?}");
    let results = env.results().await;
    for r in results.values() {
        assert_eq!(r["error_class"], "throttled_out", "{r:?}");
    }
    let alerts = env
        .alerts_until(Duration::from_secs(5), |a| {
            a.iter().any(|a| a.kind == AlertKind::RunFinished)
        })
        .await;
    let throttled: Vec<_> = alerts
        .iter()
        .filter(|a| a.kind == AlertKind::ThrottledOut)
        .collect();
    assert_eq!(throttled.len(), 1, "one alert per SaaS app: {alerts:?}");
    // Dead letters keep every job for a replay.
    let dead = env.drain(&env.names.dead_queue("lever")).await;
    assert_eq!(dead.len(), 4);
    env.cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_the_broker_dead_letters_at_its_delivery_limit_still_ends_its_run() {
    use lapin::options::{BasicGetOptions, BasicNackOptions};
    let env = TestEnv::new().await;
    let sim = rolecall_sim::spawn(SimConfig {
        users: 5,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut settings = env.settings(&[AppSpec {
        name: "lever",
        sim: &sim,
        per_second: 100.0,
        burst: 10,
    }]);
    settings.amqp.delivery_limit = 1;
    let report = publish(&settings, &active_rows(&sim, "lever", 1)).await;
    // A job that "crashes" every worker taking it: returned until the
    // broker dead-letters it.
    let channel = env.amqp.create_channel().await.unwrap();
    let queue = env.names.jobs_queue("lever");
    for _ in 0..5 {
        let Some(msg) = channel
            .basic_get(queue.as_str().into(), BasicGetOptions::default())
            .await
            .unwrap()
        else {
            break;
        };
        msg.delivery
            .acker
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let worker = env.spawn_worker(&settings).await;
    let counters = env
        .wait_for_run(&settings, &report.run_id, Duration::from_secs(30))
        .await;
    worker.stop().await;
    assert_eq!(counters.failed, 1, "{counters:?}");
    assert_eq!(sim.stats().requests, 0, "the job never reached the vendor");
    let results = env.results().await;
    assert_eq!(
        results.values().next().unwrap()["error_class"],
        "delivery_limit"
    );
    // The dead letter stays in the dead-letter queue for a replay.
    assert_eq!(env.drain(&env.names.dead_queue("lever")).await.len(), 1);
    let alerts = env
        .alerts_until(Duration::from_secs(5), |a| {
            a.iter().any(|a| a.kind == AlertKind::RunFinished)
        })
        .await;
    assert!(
        alerts.iter().any(|a| a.kind == AlertKind::JobFailed),
        "{alerts:?}"
    );
    env.cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_replayed_into_their_run() {
    let env = TestEnv::new().await;
    let sim = rolecall_sim::spawn(SimConfig {
        users: 10,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let settings = env.settings(&[AppSpec {
        name: "lever",
        sim: &sim,
        per_second: 100.0,
        burst: 10,
    }]);
    // Three lookups meet a vendor bug (a permanent 400).
    sim.inject(rolecall_sim::Fault {
        status: 400,
        retry_after: None,
        count: 3,
    });
    let worker = env.spawn_worker(&settings).await;
    let report = publish(&settings, &active_rows(&sim, "lever", 10)).await;
    let first = env
        .wait_for_run(&settings, &report.run_id, Duration::from_secs(30))
        .await;
    assert_eq!(first.failed, 3);

    let letters = rolecall_worker::dlq::list(&settings, "lever")
        .await
        .unwrap();
    assert_eq!(letters.len(), 3, "{letters:?}");
    assert!(letters.iter().all(|l| l.reason.starts_with("permanent")
        && l.run_id == report.run_id
        && l.attempts == 1));
    // Listing leaves them where they are.
    assert_eq!(
        rolecall_worker::dlq::list(&settings, "lever")
            .await
            .unwrap()
            .len(),
        3
    );

    // Fixed at the vendor: replay into the same run.
    let mut redis = env.redis.clone();
    let filter = rolecall_worker::dlq::ReplayFilter {
        reason: Some("permanent".into()),
        run_id: Some(report.run_id.clone()),
    };
    let replayed = rolecall_worker::dlq::replay(&settings, &mut redis, "lever", &filter)
        .await
        .unwrap();
    assert_eq!(replayed, 3);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let run = loop {
        let run = env.ledger(&settings).run(&report.run_id).await.unwrap();
        if run.finished_at.is_some() && run.failed == 0 {
            break run;
        }
        assert!(std::time::Instant::now() < deadline, "{run:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    worker.stop().await;
    assert_eq!(run.outcomes(), 10, "{run:?}");
    assert!(
        rolecall_worker::dlq::list(&settings, "lever")
            .await
            .unwrap()
            .is_empty()
    );
    env.cleanup(&settings).await;
}
