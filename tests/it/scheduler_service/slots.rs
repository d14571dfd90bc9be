//! `serve`'s workflow slots: skip and queue policies, stalled runs, a
//! stop mid-publish, and a slot whose inventory is missing.

use std::collections::HashSet;
use std::time::Duration;

use rolecall_common::config;
use rolecall_tests::{SchedulerProcess, TestEnv, consume_all, temp_file};

use super::{APP, inventory};

/// A workflow firing every second over a small inventory, with no worker:
/// its first run stays in progress (jobs without outcomes).
fn every_second(env: &TestEnv, path: &std::path::Path, overlap: &str) -> String {
    env.config_text(
        &[],
        &format!(
            r#"{APP}
[scheduler]
lease_ms = 2000
tick_ms = 200
[workflow.often]
schedule = "* * * * * *"
apps = ["lever"]
inventory = "{}"
overlap = "{overlap}"
"#,
            path.display()
        ),
    )
}

/// `serve` with [`every_second`] over 20 users, once its first run started
/// and a later slot met it (`met`: the line that says what became of it),
/// and two seconds more.
async fn first_run_met_by_a_slot(
    env: &TestEnv,
    overlap: &str,
    met: &str,
) -> (SchedulerProcess, config::Settings, tempfile::TempDir) {
    let (dir, path) = temp_file("users.csv", &inventory(20));
    let text = every_second(env, &path, overlap);
    let settings = config::from_toml(&text).expect("valid");
    let server = SchedulerProcess::spawn(&text, &["serve"]);
    server
        .wait_for_log("Run started", Duration::from_secs(15))
        .await;
    server.wait_for_log(met, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    (server, settings, dir)
}

#[tokio::test]
async fn slots_due_while_a_run_is_in_progress_are_skipped_with_overlap_skip() {
    let env = TestEnv::new().await;
    let (server, settings, _dir) = first_run_met_by_a_slot(&env, "skip", "Skipped a slot").await;
    assert_eq!(env.run_ids().await.len(), 1, "{}", server.log());
    drop(server);
    env.cleanup(&settings).await;
}

#[tokio::test]
async fn a_run_with_no_outcome_for_stalled_run_after_no_longer_holds_back_the_slots() {
    // No worker: the first run publishes its 20 jobs and records nothing.
    let env = TestEnv::new().await;
    let (_dir, path) = temp_file("users.csv", &inventory(20));
    let text = every_second(&env, &path, "skip").replace(
        "tick_ms = 200\n",
        "tick_ms = 200\nstalled_run_after_s = 2\n",
    );
    let settings = config::from_toml(&text).expect("valid");
    assert_eq!(
        settings.scheduler.stalled_run_after,
        Some(Duration::from_secs(2))
    );
    let server = SchedulerProcess::spawn(&text, &["serve"]);
    server
        .wait_for_log("Skipped a slot", Duration::from_secs(15))
        .await;
    let first = env.run_ids().await;
    assert_eq!(first.len(), 1, "{}", server.log());
    let alerts = env
        .alerts_until(Duration::from_secs(15), |a| {
            a.iter().any(|a| a.kind.as_str() == "run_stalled")
        })
        .await;
    let stalled: Vec<_> = alerts
        .iter()
        .filter(|a| a.kind.as_str() == "run_stalled")
        .collect();
    assert_eq!(stalled.len(), 1, "one alert per run: {alerts:?}");
    assert_eq!(stalled[0].run_id, first[0]);
    assert!(
        stalled[0].error.starts_with("run stalled: 0 of ")
            && stalled[0].error.contains("none came for 2s"),
        "{}",
        stalled[0].error
    );
    // The next slot starts a run of its own.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while env.run_ids().await.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no run after the stalled one:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let run = env.run_hash(&first[0]).await;
    assert!(run.contains_key("stalled_at"), "{run:?}");
    assert!(
        !run.contains_key("finished_at"),
        "the run itself is left as it is"
    );
    drop(server);
    env.cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stopped_mid_publish_checkpoints_every_confirmed_job_before_letting_go() {
    const USERS: usize = 30_000;
    let env = TestEnv::new().await;
    let (_dir, path) = temp_file("users.csv", &inventory(USERS));
    let text = every_second(&env, &path, "skip");
    let settings = config::from_toml(&text).expect("valid");
    let mut server = SchedulerProcess::spawn(&text, &["serve"]);
    let (run_id, _) = server.wait_published(&env, None, 1_000).await;
    // SIGTERM, as Kubernetes stops a pod.
    let status = server.stop().expect("it stops within the grace");
    assert!(status.success(), "{status:?}\n{}", server.log());
    assert!(
        server.log().contains("stopped with the scheduler"),
        "{}",
        server.log()
    );
    let run = env.run_hash(&run_id).await;
    let published: u64 = run["published"].parse().unwrap();
    assert!(published < USERS as u64, "stopped mid-publish: {run:?}");
    // Every job the broker holds is in the checkpoint: the successor
    // resends none of them (a crash would leave up to a window unsaved).
    let queued = consume_all(&env, &env.names.jobs_queue("lever"), Duration::from_secs(2)).await;
    assert_eq!(queued.len() as u64, published, "{run:?}");
    env.cleanup(&settings).await;
}

#[tokio::test]
async fn a_queued_slot_starts_once_the_run_in_progress_finishes_with_overlap_queue() {
    let env = TestEnv::new().await;
    let (server, settings, _dir) = first_run_met_by_a_slot(&env, "queue", "Queued a slot").await;
    let first = env.run_ids().await;
    assert_eq!(
        first.len(),
        1,
        "several queued slots are one run: {first:?}"
    );
    // The first run ends (as when workers record its last outcome): the
    // queued slot starts at the next tick.
    let mut conn = env.redis.clone();
    let () = redis::cmd("HSET")
        .arg(env.names.run_key(&first[0]))
        .arg("finished_at")
        .arg(chrono::Utc::now().to_rfc3339())
        .query_async(&mut conn)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while env.run_ids().await.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the queued slot did not start:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        env.run_ids().await.len(),
        2,
        "one queued run, then queueing again behind it"
    );
    drop(server);
    env.cleanup(&settings).await;
}

#[tokio::test]
async fn a_slot_whose_inventory_is_missing_alerts_once_per_slot_and_the_next_run_clears_it() {
    let env = TestEnv::new().await;
    let (dir, _) = temp_file("other.csv", "");
    let path = dir.path().join("users.csv");
    let text = every_second(&env, &path, "skip");
    let settings = config::from_toml(&text).expect("valid");
    let server = SchedulerProcess::spawn(&text, &["serve"]);
    // Nothing else runs here: serve declares the alert queue itself. The
    // second failed slot is logged after the first slot's alert went out.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while server.log().matches("could not start its run").count() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "{}", server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let alerts = env
        .alerts_until(Duration::from_secs(15), |a| {
            a.iter()
                .filter(|a| a.kind.as_str() == "run_not_started")
                .count()
                >= 2
        })
        .await;
    let failed: Vec<_> = alerts
        .iter()
        .filter(|a| a.kind.as_str() == "run_not_started")
        .collect();
    assert!(failed.len() >= 2, "{alerts:?}\n{}", server.log());
    // One alert per slot: each names the run its slot would have started.
    let ids: HashSet<_> = failed.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids.len(), failed.len(), "{failed:?}");
    assert!(
        failed[0].error.contains("nobody was checked")
            && failed[0].error.contains(&path.display().to_string()),
        "{}",
        failed[0].error
    );
    let workflow = env.workflow_hash("often").await;
    assert!(workflow.contains_key("last_error"), "{workflow:?}");
    assert!(env.run_ids().await.is_empty(), "no run started");
    // The file appears: the next slot starts its run and the error is gone.
    std::fs::write(&path, inventory(5)).unwrap();
    server
        .wait_for_log("Run started", Duration::from_secs(10))
        .await;
    let workflow = env.workflow_hash("often").await;
    assert!(!workflow.contains_key("last_error"), "{workflow:?}");
    assert!(workflow.contains_key("last_started_at"), "{workflow:?}");
    drop(server);
    env.cleanup(&settings).await;
}
