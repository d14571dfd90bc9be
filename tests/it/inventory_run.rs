//! The Redis inventory as a run's source (`run-once --inventory
//! redis:inventory`): read in key order a page at a time, criteria applied,
//! and resumed after the checkpoint's record by a second run-once.

use std::collections::HashSet;
use std::time::Duration;

use rolecall_common::config::{self, Preference};
use rolecall_common::inventory::InventoryStore;
use rolecall_scheduler::inventory::{InventoryRow, REDIS_INVENTORY};
use rolecall_scheduler::publish::job_id;
use rolecall_scheduler::{RunOnceOptions, run_once, sor};
use rolecall_tests::{SchedulerProcess, TestEnv, consume_all};

/// The scheduler service tests' app, with a short lease, so a killed
/// publisher's run is taken over quickly.
fn app() -> String {
    format!(
        "{}[scheduler]\nlease_ms = 2000\ntick_ms = 200\n",
        crate::scheduler_service::APP
    )
}

/// Every fifth user is inactive in the system of record.
fn active(i: usize) -> bool {
    !i.is_multiple_of(5)
}

async fn fill(store: &InventoryStore, users: usize) {
    for start in (0..users).step_by(1000) {
        let page: Vec<_> = (start..(start + 1000).min(users))
            .map(|i| {
                let row = InventoryRow {
                    saas: "lever".into(),
                    user_id: format!("u{i}"),
                    email: format!("u{i}@example.com"),
                    status: if active(i) { "active" } else { "inactive" }.into(),
                    ..Default::default()
                };
                sor::upsert_of(&row, Default::default()).unwrap()
            })
            .collect();
        store
            .upsert("lever", &page, Preference::CreateAndUpdate, "test", &[])
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn inventory_run_from_redis_publishes_exactly_the_active_users_and_resumes_after_its_checkpoint_record()
 {
    const USERS: usize = 30_000;
    let env = TestEnv::new().await;
    let text = env.config_text(&[], &app());
    let settings = config::from_toml(&text).expect("valid");
    let store = InventoryStore::new(env.redis.clone(), &env.names);
    fill(&store, USERS).await;

    // A publisher killed mid-run.
    let mut first = SchedulerProcess::spawn(&text, &["run-once", "--inventory", REDIS_INVENTORY]);
    let (run_id, at_kill) = first.kill9_once_published(&env, None, 2_000).await;
    let expected: HashSet<String> = (0..USERS)
        .filter(|i| active(*i))
        .map(|i| job_id(&run_id, "lever", &format!("u{i}")))
        .collect();
    assert!(
        at_kill < expected.len() as u64,
        "the run finished before the kill"
    );
    let run = env.run_hash(&run_id).await;
    assert_eq!(run["format"], "redis");
    assert_eq!(run["resume_app"], "lever");
    let resume_key = run["resume_key"].clone();

    // While it is stopped, the first 200 records (all before the
    // checkpoint, so already published) leave the inventory: a resume by
    // rank would now skip 200 users after the checkpoint.
    let mut conn = env.redis.clone();
    let gone: Vec<String> = redis::cmd("ZRANGE")
        .arg(store.index_key("lever"))
        .arg(0)
        .arg(199)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(gone.iter().all(|key| *key < resume_key), "{resume_key}");
    for key in &gone {
        let () = redis::pipe()
            .cmd("ZREM")
            .arg(store.index_key("lever"))
            .arg(key)
            .ignore()
            .cmd("DEL")
            .arg(store.record_key("lever", key))
            .ignore()
            .query_async(&mut conn)
            .await
            .unwrap();
    }

    // The lease expires; the same command again resumes the run.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let report = run_once(&settings, RunOnceOptions::whole(REDIS_INVENTORY))
        .await
        .expect("the run resumes");
    assert_eq!(report.run_id, run_id, "resumed, not started again");
    assert_eq!(report.published, expected.len() as u64);
    assert_eq!(
        report.skipped,
        (USERS - expected.len()) as u64,
        "the inactive users"
    );

    let messages = consume_all(&env, &env.names.jobs_queue("lever"), Duration::from_secs(2)).await;
    let ids: HashSet<String> = messages
        .iter()
        .map(|m| m.properties.message_id().as_ref().unwrap().to_string())
        .collect();
    assert_eq!(ids, expected, "exactly the active users, none skipped");
    assert!(
        messages.len() - ids.len() <= 2_000,
        "{} repeats: the resume starts at the checkpoint, not at the first record",
        messages.len() - ids.len()
    );
    env.cleanup(&settings).await;
}
