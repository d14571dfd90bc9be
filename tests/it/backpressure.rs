//! Backpressure: a run does not fill a SaaS app's queue beyond
//! `scheduler.max_queue_depth`; it pauses, and resumes as workers drain it.

use std::time::Duration;

use rolecall_common::config;
use rolecall_sim::SimConfig;
use rolecall_tests::{AppSpec, TestEnv, active_rows, temp_file, workspace_binary};

const USERS: usize = 3_000;
const MAX_DEPTH: u32 = 500;
const WINDOW: u32 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_pauses_at_the_max_queue_depth_and_completes_once_a_worker_drains_it() {
    let env = TestEnv::new().await;
    let sim = rolecall_sim::spawn(SimConfig {
        users: USERS,
        seed: 9,
        ..SimConfig::default()
    })
    .await
    .expect("the sim starts");
    let apps = [AppSpec {
        name: "lever",
        sim: &sim,
        per_second: 5_000.0,
        burst: 500,
    }];
    let text = env.config_text(
        &apps,
        &format!("[scheduler]\nmax_queue_depth = {MAX_DEPTH}\npublish_window = {WINDOW}\n"),
    );
    let settings = config::from_toml(&text).expect("valid");
    assert_eq!(
        settings.scheduler.resume_queue_depth, 450,
        "90 % by default"
    );
    let (_dir, inventory) = temp_file("users.csv", &active_rows(&sim, "lever", USERS));

    let publishing = tokio::spawn({
        let settings = settings.clone();
        async move {
            rolecall_scheduler::run_once(
                &settings,
                rolecall_scheduler::RunOnceOptions {
                    inventory,
                    format: None,
                    saas: vec![],
                    run_id: Some("bp-run".into()),
                },
            )
            .await
        }
    });

    // No consumer: the run must pause, say so in its ledger entry, and the
    // queue must stay near the limit.
    let mut channel = env.amqp.create_channel().await.unwrap();
    let queue = env.names.jobs_queue("lever");
    let run_key = env.names.run_key("bp-run");
    let mut conn = env.redis.clone();
    let mut deepest = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let paused = loop {
        match rolecall_common::amqp::queue_depth(&channel, &queue).await {
            Ok(d) => deepest = deepest.max(d.messages),
            // Not declared yet: the 404 closed the channel.
            Err(_) => channel = env.amqp.create_channel().await.unwrap(),
        }
        let paused: Option<String> = redis::cmd("HGET")
            .arg(&run_key)
            .arg("paused")
            .query_async(&mut conn)
            .await
            .unwrap();
        if let Some(p) = paused {
            break p;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run never paused"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        paused.starts_with("lever queue at ") && paused.ends_with("≥ 500; resuming below 450"),
        "{paused}"
    );
    // `runs` says so.
    let (_cdir, config_path) = temp_file("rolecall.toml", &text);
    let out = std::process::Command::new(workspace_binary("rolecall-scheduler").expect("built"))
        .arg("--config")
        .arg(&config_path)
        .arg("runs")
        .output()
        .expect("runs");
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.contains("| publishing, paused: lever queue at "),
        "{out}"
    );
    // Held there: nothing more is published while paused.
    for _ in 0..20 {
        let d = rolecall_common::amqp::queue_depth(&channel, &queue)
            .await
            .unwrap();
        deepest = deepest.max(d.messages);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(!publishing.is_finished(), "the run did not wait");
    eprintln!("paused: {paused}; deepest queue seen: {deepest}");
    assert!(
        deepest <= MAX_DEPTH + 2 * WINDOW,
        "the queue reached {deepest} (limit {MAX_DEPTH} + a check interval and a window)"
    );

    // A worker drains it: the run resumes and completes, every user once.
    let worker = env.spawn_worker(&settings).await;
    let report = tokio::time::timeout(Duration::from_secs(30), publishing)
        .await
        .expect("publishing ends once the queue drains")
        .unwrap()
        .expect("the run publishes");
    assert_eq!(report.published, USERS as u64);
    let counters = env
        .wait_for_run(&settings, "bp-run", Duration::from_secs(30))
        .await;
    assert_eq!(counters.published, USERS as u64);
    assert_eq!(counters.outcomes(), USERS as u64, "{counters:?}");
    assert_eq!(env.results().await.len(), USERS, "one result per user");
    let paused: Option<String> = redis::cmd("HGET")
        .arg(&run_key)
        .arg("paused")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(paused, None, "the pause note is gone once resumed");
    worker.stop().await;
    env.cleanup(&settings).await;
}

#[test]
fn a_zero_max_queue_depth_is_refused_naming_the_key() {
    let err = config::from_toml("[scheduler]\nmax_queue_depth = 0\n").expect_err("invalid");
    assert!(
        err.problems()
            .iter()
            .any(|p| p.key == "scheduler.max_queue_depth"),
        "{err}"
    );
    let err = config::from_toml("[scheduler]\nmax_queue_depth = 10\nresume_queue_depth = 11\n")
        .expect_err("invalid");
    assert!(
        err.problems()
            .iter()
            .any(|p| p.key == "scheduler.resume_queue_depth"),
        "{err}"
    );
}
