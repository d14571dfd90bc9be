//! Re-driving runs whose jobs vanished: `serve`'s leader publishes again
//! the users without an outcome once nothing of the run is in a queue, and
//! never a run whose jobs wait visibly; `redrive --run-id` does it by hand.

use std::time::Duration;

use lapin::options::BasicGetOptions;
use rolecall_common::config;
use rolecall_tests::{
    AppSpec, CuttableProxy, SchedulerProcess, TestEnv, active_rows, redis_url, temp_file,
};

use rolecall_scheduler::RunOnceOptions;

use super::{APP, inventory, lever_at, unlimited_sim};

/// Takes `n` jobs off `queue` for good, as a broker that lost them would.
async fn lose(env: &TestEnv, queue: &str, n: usize) {
    let channel = env.amqp.create_channel().await.expect("a channel");
    for _ in 0..n {
        let got = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get works");
        assert!(got.is_some(), "the queue holds {n} jobs");
    }
    let _ = channel.close(200, "lost".into()).await;
}

async fn run_once(settings: &config::Settings, path: &std::path::Path) -> String {
    rolecall_scheduler::run_once(settings, RunOnceOptions::whole(path))
        .await
        .expect("the run is published")
        .run_id
}

/// A run of ten users of an app no worker talks to, published, with a
/// leader that re-drives after one quiet second: (configuration text,
/// settings, the inventory's folder and path, the run).
async fn ten_jobs_published(
    env: &TestEnv,
) -> (
    String,
    config::Settings,
    tempfile::TempDir,
    std::path::PathBuf,
    String,
) {
    let text = env.config_text(
        &[],
        &format!("{APP}\n[scheduler]\nlease_ms = 2000\ntick_ms = 200\nredrive_after_s = 1\n"),
    );
    let settings = config::from_toml(&text).expect("valid");
    let (dir, path) = temp_file("users.csv", &inventory(10));
    let run_id = run_once(&settings, &path).await;
    (text, settings, dir, path, run_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_the_broker_lost_are_re_driven_by_the_leader_and_every_user_is_checked_once() {
    const USERS: usize = 60;
    const LOST: usize = 25;
    let env = TestEnv::new().await;
    let sim = unlimited_sim(USERS, 11).await;
    let text = env.config_text(
        &lever_at(&sim),
        "\n[scheduler]\nlease_ms = 2000\ntick_ms = 200\nredrive_after_s = 2\n",
    );
    let settings = config::from_toml(&text).expect("valid");
    let (_dir, path) = temp_file("users.csv", &active_rows(&sim, "lever", USERS));
    let run_id = run_once(&settings, &path).await;
    lose(&env, &env.names.jobs_queue("lever"), LOST).await;
    let worker = env.spawn_worker(&settings).await;
    let ledger = env.ledger(&settings);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while ledger.run(&run_id).await.expect("the run").outcomes() < (USERS - LOST) as u64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker never checked the rest"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let server = SchedulerProcess::spawn(&text, &["serve"]);
    let counters = env
        .wait_for_run(&settings, &run_id, Duration::from_secs(30))
        .await;
    worker.stop().await;
    assert_eq!(counters.published, USERS as u64);
    assert_eq!(counters.outcomes(), USERS as u64, "{counters:?}");
    assert_eq!(counters.duplicates, 0, "{counters:?}");
    // Only the lost users were published again, and each user reached the
    // vendor once.
    let run = env.run_hash(&run_id).await;
    assert_eq!(
        run.get("redrives").map(String::as_str),
        Some("1"),
        "{run:?}"
    );
    assert_eq!(
        run.get("redriven_jobs").map(String::as_str),
        Some(LOST.to_string().as_str()),
        "{run:?}"
    );
    assert_eq!(sim.stats().requests, USERS as u64);
    assert_eq!(env.results().await.len(), USERS);
    assert!(
        server.log().contains(&format!("Re-driving run {run_id}")),
        "{}",
        server.log()
    );
    let rows = rolecall_scheduler::ops::recent_runs(&ledger.connection(), &env.names, None, 5)
        .await
        .expect("runs");
    let row = rows.iter().find(|r| r.run_id == run_id).expect("listed");
    assert_eq!(row.redriven, Some((1, LOST as u64)));
    drop(server);
    env.cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_run_whose_jobs_wait_in_its_queue_is_not_re_driven_and_redrive_by_hand_refuses_unknown_runs()
 {
    // No worker: the run's jobs sit ready in the job queue, quiet but not lost.
    let env = TestEnv::new().await;
    let (text, settings, _dir, _path, run_id) = ten_jobs_published(&env).await;
    let server = SchedulerProcess::spawn(&text, &["serve"]);
    server
        .wait_for_log("Became the scheduler leader", Duration::from_secs(15))
        .await;
    // Several looks, each well past `redrive_after_s`.
    tokio::time::sleep(Duration::from_secs(4)).await;
    drop(server);
    let run = env.run_hash(&run_id).await;
    assert!(!run.contains_key("redrives"), "{run:?}");
    assert_eq!(env.drain(&env.names.jobs_queue("lever")).await.len(), 10);

    let mut by_hand = SchedulerProcess::spawn(&text, &["redrive", "--run-id", "no-such-run"]);
    let status = by_hand.wait(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(1), "{}", by_hand.log());
    assert!(
        by_hand
            .log()
            .contains("no run `no-such-run` is recorded (see `rolecall-scheduler runs`)"),
        "{}",
        by_hand.log()
    );
    env.cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_by_hand_publishes_the_lost_jobs_again_under_their_own_ids() {
    // Ten jobs published, all lost; a re-drive by hand publishes them again
    // (automatic re-drives are off: `redrive_after_s = 0`).
    let env = TestEnv::new().await;
    let text = env.config_text(&[], &format!("{APP}\n[scheduler]\nredrive_after_s = 0\n"));
    let settings = config::from_toml(&text).expect("valid");
    assert_eq!(settings.scheduler.redrive_after, None);
    let (_dir, path) = temp_file("users.csv", &inventory(10));
    let run_id = run_once(&settings, &path).await;
    let queue = env.names.jobs_queue("lever");
    lose(&env, &queue, 10).await;
    let mut by_hand = SchedulerProcess::spawn(&text, &["redrive", "--run-id", &run_id]);
    let status = by_hand.wait(Duration::from_secs(30)).await;
    assert!(status.success(), "{}", by_hand.log());
    let again = env.drain(&queue).await;
    assert_eq!(again.len(), 10);
    // The same jobs: same ids, so a late original counts once.
    let mut ids: Vec<String> = again
        .iter()
        .map(|m| {
            rolecall_common::messages::JobV1::decode(&m.delivery.data)
                .expect("a job")
                .job_id
        })
        .collect();
    ids.sort();
    let mut expected: Vec<String> = (0..10)
        .map(|i| rolecall_scheduler::publish::job_id(&run_id, "lever", &format!("u{i}")))
        .collect();
    expected.sort();
    assert_eq!(ids, expected);
    let run = env.run_hash(&run_id).await;
    assert_eq!(run.get("redriven_jobs").map(String::as_str), Some("10"));
    env.cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_cannot_be_re_driven_is_tried_three_times_and_no_more() {
    // Its jobs lost, and its inventory rewritten since: the rows it read
    // can no longer be read.
    let env = TestEnv::new().await;
    let (text, settings, _dir, path, run_id) = ten_jobs_published(&env).await;
    lose(&env, &env.names.jobs_queue("lever"), 10).await;
    std::fs::write(&path, inventory(12)).expect("rewritten");
    let server = SchedulerProcess::spawn(&text, &["serve"]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while env
        .run_hash(&run_id)
        .await
        .get("redrives")
        .map(String::as_str)
        != Some("3")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "three attempts: {}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Well past another `redrive_after_s`: no fourth attempt.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = server.log();
    drop(server);
    assert_eq!(
        log.matches("Could not re-drive the run.").count(),
        3,
        "{log}"
    );
    assert!(
        log.contains("is not the file the run started with"),
        "{log}"
    );
    let run = env.run_hash(&run_id).await;
    assert_eq!(run.get("redrives").map(String::as_str), Some("3"));
    assert!(!run.contains_key("redriven_jobs"), "{run:?}");
    env.cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_from_redis_does_not_call_the_vendor_for_users_re_driven_meanwhile() {
    // The first worker takes 5 (its prefetch), checks 2 and takes the
    // last 2: at the cut it holds 5 unacked and none is left ready, so
    // each re-driven copy is its user's only job in the queue.
    const USERS: usize = 7;
    const PREFETCH: u16 = 5;
    let env = TestEnv::new().await;
    let sim = unlimited_sim(USERS, 13).await;
    // Slow enough that the first worker holds most of the run in the
    // limiter when its Redis goes away.
    let apps = [AppSpec {
        name: "lever",
        sim: &sim,
        per_second: 1.0,
        burst: 1,
    }];
    let text = env.config_text(&apps, "\n[scheduler]\nredrive_after_s = 0\n");
    let settings = config::from_toml(&text).expect("valid");
    let (_dir, path) = temp_file("users.csv", &active_rows(&sim, "lever", USERS));
    let run_id = run_once(&settings, &path).await;

    // The first worker reaches Redis through a proxy; the rest of the
    // fleet, the scheduler and this test reach it directly.
    let (proxy, via_proxy) = CuttableProxy::in_front_of(&redis_url()).await;
    let mut cut_off = settings.clone();
    cut_off.redis.url = via_proxy.into();
    // A full prefetch window: the broker sends it nothing more, so the
    // re-driven copies go to the other worker.
    cut_off.amqp.prefetch = PREFETCH;
    let held = env.spawn_worker(&cut_off).await;
    // Cut once two users are recorded, well before the next slot (a
    // second apart): no request is on the wire at the cut, on a quiet
    // machine (the checks below allow for one).
    let ledger = env.ledger(&settings);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while ledger.run(&run_id).await.expect("the run").outcomes() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.cut();
    // Its jobs stay unacked, not ready: to the leader they are gone, and
    // the run is re-driven (here by hand) to a worker that reaches Redis.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut by_hand = SchedulerProcess::spawn(&text, &["redrive", "--run-id", &run_id]);
    assert!(
        by_hand.wait(Duration::from_secs(30)).await.success(),
        "{}",
        by_hand.log()
    );
    let other = env.spawn_worker(&settings).await;
    let counters = env
        .wait_for_run(&settings, &run_id, Duration::from_secs(30))
        .await;
    let other = other.stop().await.metrics()["lever"];
    assert_eq!(counters.outcomes(), USERS as u64, "{counters:?}");
    let redriven: u64 = env.run_hash(&run_id).await["redriven_jobs"]
        .parse()
        .expect("a count");
    assert_eq!(redriven, u64::from(PREFETCH), "the cut-off worker's jobs");
    assert_eq!(other.requests, redriven, "{other:?}");

    // Redis is back for the first worker: its held jobs are recorded
    // already, so it acknowledges them without calling the vendor. (It
    // retries Redis at most 5 s apart.)
    let before = sim.stats().requests;
    proxy.restore();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        assert_eq!(
            sim.stats().requests,
            before,
            "the cut-off worker called the vendor for a user checked meanwhile"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let held = held.stop().await.metrics()["lever"];
    assert!(held.held_for_redis > 0, "{held:?}");
    // Each user once, but for a request on the wire at the cut: its answer
    // could not be recorded, so its user was rightly checked again.
    assert_eq!(held.requests + other.requests, before);
    assert!(
        before <= USERS as u64 + 1,
        "{before} requests for {USERS} users"
    );
    // Acknowledged, not left for the broker to deliver again.
    assert!(env.drain(&env.names.jobs_queue("lever")).await.is_empty());
    let after = ledger.run(&run_id).await.expect("the run");
    assert_eq!(after.outcomes(), USERS as u64, "{after:?}");
    assert_eq!(after.duplicates, 0, "{after:?}");
    env.cleanup(&settings).await;
}
