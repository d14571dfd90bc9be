//! Bad input gets a clear error and loses nothing.

use std::time::Duration;

use chrono::Utc;
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use rolecall_common::amqp::header_str;
use rolecall_common::config::Settings;
use rolecall_common::ledger::{Finding, Seen};
use rolecall_common::messages::ERROR_HEADER;
use rolecall_scheduler::inventory::InventoryRow;
use rolecall_scheduler::publish::job_for;
use rolecall_scheduler::{RunOnceOptions, run_once};
use rolecall_sim::{SimConfig, SimHandle};
use rolecall_tests::{AppSpec, TestEnv, active_rows, publish, temp_file};

/// A simulated Lever of `users` users and settings for one app on it,
/// paced well above what the tests here send.
async fn lever(env: &TestEnv, users: usize) -> (SimHandle, Settings) {
    let sim = rolecall_sim::spawn(SimConfig {
        users,
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
    (sim, settings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_inventory_rows_are_reported_by_line_and_skipped() {
    let env = TestEnv::new().await;
    let (sim, settings) = lever(&env, 60).await;
    let users = &sim.population().users;
    let mut csv = String::from("saas,user_id,email,external_id,status\n");
    for (i, user) in users.iter().take(50).enumerate() {
        csv.push_str(&format!("lever,u{i},{},,active\n", user.email));
        // Three broken rows in the middle of good ones.
        match i {
            9 => csv.push_str("lever,u-bad1,not-an-email,,active\n"),
            19 => csv.push_str("lever,,someone@example.com,,active\n"),
            29 => csv.push_str("lever,u-bad3\n"),
            _ => {}
        }
    }
    let worker = env.spawn_worker(&settings).await;
    let report = publish(&settings, &csv).await;
    assert_eq!(report.published, 50);
    assert_eq!(report.rejected_count, 3);
    // Header is line 1; good rows 0..=9 are lines 2..=11, so the first bad one is line 12.
    let lines: Vec<u64> = report.rejected.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![12, 23, 34]);
    assert!(report.rejected[0].to_string().contains("inventory.csv:12"));
    assert!(report.rejected[0].reason.contains("not-an-email"));
    assert_eq!(report.rejected[1].reason, "missing user_id");
    assert!(report.rejected[2].reason.contains("expected 5 fields"));

    let counters = env
        .wait_for_run(&settings, &report.run_id, Duration::from_secs(30))
        .await;
    worker.stop().await;
    assert_eq!(counters.outcomes(), 50, "no good row was lost");
    assert_eq!(counters.rejected, 3);
    assert_eq!(env.results().await.len(), 50);
    env.cleanup(&settings).await;
}

#[tokio::test]
async fn rows_naming_a_saas_app_the_configuration_lacks_are_counted_by_name_and_said() {
    let env = TestEnv::new().await;
    let (_sim, settings) = lever(&env, 1).await;
    let csv = "saas,user_id,email,status\n\
        lever,u1,u1@example.com,active\n\
        levr,u2,u2@example.com,active\n\
        levr,u3,u3@example.com,active\n\
        lever-t,u4,u4@example.com,active\n";
    let report = publish(&settings, csv).await;
    assert_eq!(report.published, 1);
    assert_eq!(report.skipped, 3);
    assert_eq!(
        report.unconfigured.into_iter().collect::<Vec<_>>(),
        vec![("lever-t".to_string(), 1), ("levr".to_string(), 2)]
    );
    let (_dir, path) = temp_file("inventory.csv", csv);
    let report = run_once(&settings, RunOnceOptions::whole(path))
        .await
        .unwrap();
    assert!(
        report.line().ends_with(
            "skipped 3 rows (3 of them name SaaS apps the configuration does not have: lever-t (1), levr (2))"
        ),
        "{}",
        report.line()
    );
    env.cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_listed_twice_is_checked_once_and_the_run_still_finishes() {
    let env = TestEnv::new().await;
    let (sim, settings) = lever(&env, 40).await;
    // 30 users; u3 listed three times and u7 twice (an export that joins a
    // user to each of their departments), one repeat at the very end.
    let users = &sim.population().users;
    let mut csv = String::from("saas,user_id,email,status\n");
    let row = |i: usize| format!("lever,u{i},{},active\n", users[i].email);
    for i in 0..30 {
        csv.push_str(&row(i));
        if i == 3 || i == 7 || i == 12 {
            csv.push_str(&row(if i == 12 { 3 } else { i }));
        }
    }
    csv.push_str(&row(7));
    let worker = env.spawn_worker(&settings).await;
    let report = publish(&settings, &csv).await;
    assert_eq!(report.published, 34, "every line is published");
    let counters = env
        .wait_for_run(&settings, &report.run_id, Duration::from_secs(30))
        .await;
    worker.stop().await;
    assert_eq!(counters.outcomes(), 30, "one outcome per user");
    assert_eq!(counters.duplicates, 4, "{counters:?}");
    assert_eq!(env.results().await.len(), 30);
    env.cleanup(&settings).await;
}

#[tokio::test]
async fn the_ledger_counts_another_lines_copy_once_and_a_redelivery_never() {
    let env = TestEnv::new().await;
    let (_sim, settings) = lever(&env, 1).await;
    let ledger = env.ledger(&settings);
    let run = "r-repeats";
    ledger.start_run(run, Utc::now(), "test").await.unwrap();
    let job = |user: &str, line: u64| {
        let row = InventoryRow {
            line,
            saas: "lever".into(),
            user_id: user.into(),
            email: format!("{user}@example.com"),
            ..Default::default()
        };
        job_for(run, &row, false)
    };
    // u1 on lines 2 and 3, u2 on lines 4 and 5: four published, two users.
    assert!(!ledger.finish_publishing(run, 4, 0, 0).await.unwrap());
    let first = ledger
        .record(&job("u1", 2), &Finding::NotFound)
        .await
        .unwrap();
    assert!(!first.duplicate && !first.run_finished);
    assert_eq!(ledger.seen(&job("u1", 2)).await.unwrap(), Seen::Redelivered);
    assert_eq!(
        ledger.seen(&job("u1", 3)).await.unwrap(),
        Seen::Copy {
            run_finished: false
        }
    );
    assert_eq!(
        ledger.seen(&job("u1", 3)).await.unwrap(),
        Seen::Redelivered,
        "a copy's redelivery is not counted again"
    );
    assert!(
        !ledger
            .record(&job("u2", 4), &Finding::NotFound)
            .await
            .unwrap()
            .run_finished
    );
    // u2's copy passed `seen` while u2 was being checked: its record counts
    // it as the copy, and that finishes the run.
    let copy = ledger
        .record(&job("u2", 5), &Finding::NotFound)
        .await
        .unwrap();
    assert!(
        copy.duplicate && copy.run_finished && !copy.deactivated,
        "{copy:?}"
    );
    let again = ledger
        .record(&job("u2", 5), &Finding::NotFound)
        .await
        .unwrap();
    assert!(again.duplicate && !again.run_finished);
    let counters = ledger.run(run).await.unwrap();
    assert_eq!(
        (counters.outcomes(), counters.duplicates, counters.not_found),
        (2, 2, 2)
    );
    assert!(counters.finished_at.is_some());
    env.cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_inventories_work_the_same() {
    let env = TestEnv::new().await;
    let (sim, settings) = lever(&env, 20).await;
    let mut text = String::new();
    for (i, user) in sim.population().users.iter().take(10).enumerate() {
        text.push_str(&format!(
            "{{\"saas\":\"lever\",\"user_id\":\"u{i}\",\"email\":\"{}\",\"status\":\"active\",\"seats\":{i}}}\n",
            user.email
        ));
    }
    text.push_str("{\"saas\":\"lever\",\"user_id\":\"broken\"\n");
    let (_dir, inventory) = temp_file("inventory.jsonl", &text);
    let worker = env.spawn_worker(&settings).await;
    let report = run_once(&settings, RunOnceOptions::whole(inventory))
        .await
        .unwrap();
    assert_eq!(report.published, 10);
    assert_eq!(report.rejected_count, 1);
    assert_eq!(report.rejected[0].line, 11);
    let counters = env
        .wait_for_run(&settings, &report.run_id, Duration::from_secs(30))
        .await;
    worker.stop().await;
    assert_eq!(counters.outcomes(), 10);
    env.cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_go_to_the_dead_letter_queue_with_the_reason() {
    let env = TestEnv::new().await;
    let (sim, settings) = lever(&env, 40).await;
    let worker = env.spawn_worker(&settings).await;

    // Garbage first, so the worker meets it before the good jobs.
    let channel = env.amqp.create_channel().await.unwrap();
    // The worker declares the topology; wait for the queue to exist.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let probe = env.amqp.create_channel().await.unwrap();
        if probe
            .queue_declare(
                env.names.jobs_queue("lever").as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker never declared its queue"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bodies: [&[u8]; 3] = [
        b"this is not json",
        br#"{"v":2,"job_id":"x"}"#,
        br#"{"v":1,"job_id":"j","run_id":"r","saas":"lever","action":"lookup_role","user":{"id":"u","email":"nope"},"deactivate_missing":false,"enqueued_at":"2026-11-23T02:00:01Z"}"#,
    ];
    // Straight into the queue (the default exchange routes by its name): the
    // queue exists before the worker binds it to the jobs exchange, and a
    // message sent there in between would be routed nowhere.
    let queue = env.names.jobs_queue("lever");
    for body in bodies {
        channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    let csv = active_rows(&sim, "lever", 30);
    let report = publish(&settings, &csv).await;
    let counters = env
        .wait_for_run(&settings, &report.run_id, Duration::from_secs(30))
        .await;
    worker.stop().await;
    assert_eq!(
        counters.outcomes(),
        30,
        "the worker kept going after the bad messages"
    );

    let dead = env.drain(&env.names.dead_queue("lever")).await;
    assert_eq!(dead.len(), 3, "each bad message is dead-lettered once");
    // Jobs are handled concurrently: match each dead letter to its body.
    for (body, reason) in [
        (bodies[0], "not a v1 job"),
        (bodies[1], "unsupported job version 2"),
        (bodies[2], "user.email"),
    ] {
        let letter = dead
            .iter()
            .find(|m| m.delivery.data == body)
            .expect("the body is kept for inspection");
        let header =
            header_str(&letter.delivery.properties, ERROR_HEADER).expect("a reason header");
        assert!(header.contains(reason), "{header}");
    }
    env.cleanup(&settings).await;
}

#[tokio::test]
async fn run_once_of_an_inventory_without_one_usable_row_exits_non_zero_saying_so() {
    let env = TestEnv::new().await;
    let text = env.config_text(
        &[],
        "[saas.lever]\nconnector = \"lever\"\nbase_url = \"http://127.0.0.1:9\"\ncredential = \"lever\"\nrate = { per_second = 10 }\n",
    );
    let (_cdir, config_path) = temp_file("rolecall.toml", &text);
    let (_idir, inventory) = temp_file(
        "users.csv",
        "saas,user_id,email,status\nlever,u1,not-an-email,active\nlever,,u2@example.com,active\n",
    );
    let out = std::process::Command::new(
        rolecall_tests::workspace_binary("rolecall-scheduler").expect("built"),
    )
    .arg("--config")
    .arg(&config_path)
    .args(["run-once", "--inventory"])
    .arg(&inventory)
    .output()
    .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no job published: 2 rows were rejected and none was usable"),
        "{stderr}"
    );
    assert!(
        stderr.contains("users.csv:2"),
        "each row is named: {stderr}"
    );
    let settings = rolecall_common::config::from_toml(&text).expect("valid");
    env.cleanup(&settings).await;
}
