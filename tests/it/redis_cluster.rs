//! Rolecall on a real Redis Cluster (three masters, `scripts/redis-cluster.sh`):
//! every script's keys share a hash slot, different SaaS apps' limiters live
//! on different masters, and a whole run is recorded exactly once.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use rolecall_sim::{RateLimit, SimConfig, SimHandle};
use rolecall_tests::cluster::RedisCluster;
use rolecall_tests::{AppSpec, TestEnv, active_rows, publish};

/// The fleet's configured limit per app, below the sim's own (so any 429
/// would mean the fleet limiter let too much through).
const PER_SECOND: f64 = 40.0;
const BURST: u32 = 5;
const USERS: usize = 120;

async fn lever_sim(seed: u64) -> SimHandle {
    rolecall_sim::spawn(SimConfig {
        users: USERS + 20,
        seed,
        rate: Some(RateLimit {
            per_second: 60.0,
            burst: 10,
        }),
        ..SimConfig::default()
    })
    .await
    .expect("the sim starts")
}

/// The master (`host:port`) that serves `key`'s slot now.
async fn master_of(env: &TestEnv, key: &str) -> String {
    let mut conn = env.redis.clone();
    let slot: i64 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut conn)
        .await
        .expect("CLUSTER KEYSLOT works");
    let ranges: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut conn)
        .await
        .expect("CLUSTER SLOTS works");
    for range in ranges {
        let start: i64 = redis::from_redis_value(range[0].clone()).unwrap();
        let end: i64 = redis::from_redis_value(range[1].clone()).unwrap();
        if (start..=end).contains(&slot) {
            let node: Vec<redis::Value> = redis::from_redis_value(range[2].clone()).unwrap();
            let host: String = redis::from_redis_value(node[0].clone()).unwrap();
            let port: i64 = redis::from_redis_value(node[1].clone()).unwrap();
            return format!("{host}:{port}");
        }
    }
    panic!("no master serves slot {slot}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measures rates: runs alone, after the rest (scripts/test.sh)"]
async fn a_run_on_a_three_master_cluster_records_every_user_once_within_the_fleet_limit() {
    let env = TestEnv::on_cluster().await;
    // Slots follow the random namespace: pick the second app among a few
    // names so that its limiter lives on another master than the first's,
    // which the hash tags allow (a tag shared by all apps would not).
    let first = "alpha";
    let first_master = master_of(&env, &env.names.limiter_key(first)).await;
    let mut second = None;
    for candidate in ["beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"] {
        if master_of(&env, &env.names.limiter_key(candidate)).await != first_master {
            second = Some(candidate);
            break;
        }
    }
    let second = second.expect("one of seven apps hashes to another master");

    // Scripts are not cached anywhere: the run must load them (EVALSHA
    // answered NOSCRIPT, then SCRIPT LOAD on every node).
    let mut conn = env.redis.clone();
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .expect("SCRIPT FLUSH works");

    let sim_a = lever_sim(31).await;
    let sim_b = lever_sim(32).await;
    let apps = [
        AppSpec {
            name: first,
            sim: &sim_a,
            per_second: PER_SECOND,
            burst: BURST,
        },
        AppSpec {
            name: second,
            sim: &sim_b,
            per_second: PER_SECOND,
            burst: BURST,
        },
    ];
    let settings = env.settings(&apps);
    assert!(settings.redis.cluster);
    let mut csv = active_rows(&sim_a, first, USERS);
    csv.push_str(
        active_rows(&sim_b, second, USERS)
            .split_once('\n')
            .expect("a header")
            .1,
    );

    // Two workers: the limit is the fleet's, kept in the cluster.
    let workers = [
        env.spawn_worker(&settings).await,
        env.spawn_worker(&settings).await,
    ];
    let report = publish(&settings, &csv).await;
    assert_eq!(report.published, 2 * USERS as u64);
    let counters = env
        .wait_for_run(&settings, &report.run_id, Duration::from_secs(40))
        .await;
    for worker in workers {
        worker.stop().await;
    }

    assert_eq!(counters.published, 2 * USERS as u64);
    assert_eq!(counters.outcomes(), 2 * USERS as u64, "{counters:?}");
    assert_eq!(counters.failed, 0, "{counters:?}");
    let results = env.results().await;
    assert_eq!(results.len(), 2 * USERS, "one result per user");
    let mut jobs = BTreeSet::new();
    for ((saas, user_id), r) in &results {
        assert_eq!(r["run_id"], report.run_id, "{saas}/{user_id}");
        assert!(jobs.insert(r["job_id"].clone()), "one job per user");
    }
    let per_app: HashMap<&str, usize> = [first, second]
        .iter()
        .map(|app| (*app, results.keys().filter(|(s, _)| s == app).count()))
        .collect();
    assert_eq!(per_app[first], USERS);
    assert_eq!(per_app[second], USERS);

    // The keys really are spread: each app's limiter state exists on its
    // own master, and the ledger's slot is another slot.
    let mut masters = BTreeSet::new();
    for app in [first, second] {
        let key = env.names.limiter_key(app);
        assert_eq!(
            env.scan(&key).await,
            std::slice::from_ref(&key),
            "the limiter wrote its state"
        );
        masters.insert(master_of(&env, &key).await);
    }
    assert_eq!(masters.len(), 2, "two apps' limiters on two masters");
    let keyslot = |key: String| {
        let mut conn = env.redis.clone();
        async move {
            redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(key)
                .query_async::<i64>(&mut conn)
                .await
                .unwrap()
        }
    };
    let ledger_slot = keyslot(env.names.run_key(&report.run_id)).await;
    assert_eq!(ledger_slot, keyslot(env.names.events_stream()).await);
    assert_ne!(ledger_slot, keyslot(env.names.limiter_key(first)).await);

    // The fleet kept to the configured limit at each vendor. The sim counts
    // arrivals, which the network's jitter spreads: one request sent just
    // outside a second may land inside it.
    for sim in [&sim_a, &sim_b] {
        let stats = sim.stats();
        assert_eq!(stats.throttled, 0, "{stats:?}");
        assert!(
            stats.peak_1s <= PER_SECOND as u64 + u64::from(BURST) + 1,
            "{stats:?}"
        );
    }
    env.cleanup(&settings).await;
    assert!(
        env.scan(&format!("{}*", env.names.key_prefix()))
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_mid_run_fails_over_and_every_user_still_gets_exactly_one_result() {
    // A private cluster: killing a node of the shared one would disturb
    // other tests.
    let mut cluster = RedisCluster::start()
        .await
        .expect("the private Redis Cluster starts");
    let env = TestEnv::on_cluster_at(&cluster.urls()).await;
    let sim = lever_sim(41).await;
    let apps = [AppSpec {
        name: "lever",
        sim: &sim,
        per_second: PER_SECOND,
        burst: BURST,
    }];
    let settings = env.settings(&apps);
    let worker = env.spawn_worker(&settings).await;
    let report = publish(&settings, &active_rows(&sim, "lever", USERS)).await;
    assert_eq!(report.published, USERS as u64);

    // A quarter of the run in, the master holding the ledger dies.
    let ledger = env.ledger(&settings);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let counters = ledger.run(&report.run_id).await.unwrap();
        if counters.outcomes() >= USERS as u64 / 4 {
            assert!(counters.finished_at.is_none(), "the kill comes mid-run");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let victim = master_of(&env, &env.names.run_key(&report.run_id)).await;
    let port: u16 = victim.rsplit(':').next().unwrap().parse().unwrap();
    cluster.kill(port);
    // Its replica takes over the slots.
    cluster
        .wait_healthy()
        .await
        .expect("the replica takes over");
    assert_ne!(
        master_of(&env, &env.names.run_key(&report.run_id)).await,
        victim,
        "the replica was promoted"
    );

    let counters = env
        .wait_for_run(&settings, &report.run_id, Duration::from_secs(40))
        .await;
    worker.stop().await;
    assert_eq!(counters.outcomes(), USERS as u64, "{counters:?}");
    assert_eq!(counters.failed, 0, "{counters:?}");
    let results = env.results().await;
    assert_eq!(results.len(), USERS, "one result per user, none lost");
    let jobs: BTreeSet<&String> = results.values().map(|r| &r["job_id"]).collect();
    assert_eq!(jobs.len(), USERS, "one job per user");
    assert!(results.values().all(|r| r["run_id"] == report.run_id));
    env.cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventories_spread_over_masters_by_app_and_imports_and_the_results_export_work_on_a_cluster()
 {
    use rolecall_common::config::{self, Preference};
    use rolecall_common::inventory::InventoryStore;
    use rolecall_scheduler::results;
    use rolecall_scheduler::seats::OutputFormat;
    use rolecall_sim::Vendor;

    use crate::inventory::{app_table, run_import, sim, vault};

    let env = TestEnv::on_cluster().await;
    let store = InventoryStore::new(env.redis.clone(), &env.names);
    // Each app's inventory has a hash tag of its own: among a few names,
    // one lands on another master than the first's.
    let first = "alpha";
    let first_master = master_of(&env, &store.index_key(first)).await;
    let mut second = None;
    for candidate in ["beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"] {
        if master_of(&env, &store.index_key(candidate)).await != first_master {
            second = Some(candidate);
            break;
        }
    }
    let second = second.expect("one of seven apps' inventories hashes to another master");

    // Imports run their scripts on the cluster (one slot per script).
    let (sim_a, sim_b) = (sim(Vendor::Lever, 300).await, sim(Vendor::Lever, 300).await);
    let tables = format!(
        "{}{}",
        app_table(first, Vendor::Lever, &sim_a),
        app_table(second, Vendor::Lever, &sim_b)
    );
    let settings = config::from_toml(&env.config_text(&[], &tables)).expect("valid configuration");
    assert!(settings.redis.cluster);
    let vault = vault(&settings);
    for app in [first, second] {
        let report = run_import(&settings, &vault, app, Preference::CreateAndUpdate).await;
        assert_eq!(report.counts.created, 300, "{app}: {report:?}");
        assert_eq!(store.len(app).await.unwrap(), 300);
        assert_eq!(store.last_import(app).await.unwrap(), Some(report.run_id));
    }

    // Results share the ledger's slot: the export's SCAN goes to its
    // master every time, never to a node at random.
    let mut conn = env.redis.clone();
    for i in 0..200 {
        let () = redis::cmd("HSET")
            .arg(env.names.role_key(first, &format!("u{i}")))
            .arg("user_id")
            .arg(format!("u{i}"))
            .arg("role")
            .arg("admin")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    for _ in 0..5 {
        let mut out = Vec::new();
        let rows = results::export(&env.redis, &env.names, first, OutputFormat::Csv, &mut out)
            .await
            .expect("the export reads the cluster");
        assert_eq!(rows, 200);
    }
    env.cleanup(&settings).await;
}
