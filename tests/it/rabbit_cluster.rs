//! Quorum queues on a 3-node RabbitMQ cluster (`scripts/rabbit-cluster.sh`):
//! the node leading the jobs queue is killed mid-run, and the fleet fails
//! over to the others without losing or repeating a user. And the
//! failover itself: a broker of `amqp.urls` that refuses connections is
//! skipped.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::{Connection, ConnectionProperties};
use rolecall_common::messages::{AlertKind, AlertV1};
use rolecall_common::{amqp, config};
use rolecall_sim::{Fault, RateLimit, SimConfig};
use rolecall_tests::rabbit_cluster::RabbitCluster;
use rolecall_tests::{AppSpec, TestEnv, WorkerProcess, active_rows, amqp_url, free_port, publish};

const USERS: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_jobs_queue_leader_node_mid_run_loses_and_repeats_no_user() {
    let cluster = RabbitCluster::start();
    let env = TestEnv::new().await;
    let sim = rolecall_sim::spawn(SimConfig {
        users: USERS + 50,
        // Slow enough that the kill lands mid-run (about 10 s of work).
        rate: Some(RateLimit {
            per_second: 30.0,
            burst: 30,
        }),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let app = AppSpec {
        name: "lever",
        sim: &sim,
        per_second: 30.0,
        burst: 5,
    };
    let text = env.config_text_on_cluster(&[app], &cluster.urls);
    let settings = config::from_toml(&text).expect("the cluster configuration is valid");
    // Each worker lists the nodes starting with a different one, as a
    // deployment spreading its pods would: one connection per node.
    let workers: Vec<WorkerProcess> = (0..3)
        .map(|k| {
            let mut urls = cluster.urls.clone();
            urls.rotate_left(k);
            let text = env.config_text_on_cluster(
                &[AppSpec {
                    name: "lever",
                    sim: &sim,
                    per_second: 30.0,
                    burst: 5,
                }],
                &urls,
            );
            WorkerProcess::spawn(&text, &settings)
        })
        .collect();
    // The first requests fail: their jobs wait in the delay queues (quorum
    // queues on a cluster), where the kill may find them too.
    sim.inject(Fault {
        status: 503,
        retry_after: None,
        count: 40,
    });
    let csv = active_rows(&sim, "lever", USERS);
    let report = publish(&settings, &csv).await;
    assert_eq!(report.published, USERS as u64);

    let ledger = env.ledger(&settings);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let done = ledger.run(&report.run_id).await.unwrap().outcomes();
        if done >= USERS as u64 / 4 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run never got going"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let jobs_queue = env.names.jobs_queue("lever");
    let leader = cluster
        .leader(1, &jobs_queue)
        .expect("the jobs queue has a leader");
    cluster.kill(leader);
    let survivor = if leader == 1 { 2 } else { 1 };

    let counters = env
        .wait_for_run(&settings, &report.run_id, Duration::from_secs(90))
        .await;
    assert_eq!(counters.published, USERS as u64);
    assert_eq!(counters.outcomes(), USERS as u64, "{counters:?}");
    assert_eq!(counters.failed, 0, "{counters:?}");

    let results = env.results().await;
    assert_eq!(results.len(), USERS, "one result per user");
    let users: BTreeSet<String> = results.keys().map(|(_, u)| u.clone()).collect();
    let expected: BTreeSet<String> = (0..USERS).map(|i| format!("u{i}")).collect();
    assert_eq!(users, expected);
    assert!(
        results.values().all(|r| r["run_id"] == report.run_id),
        "every result belongs to this run"
    );
    // A job recorded twice would append its event twice.
    let events = env.events().await;
    let mut seen = HashSet::new();
    for e in &events {
        assert!(
            seen.insert((e["type"].clone(), e["user_id"].clone())),
            "duplicate event {e:?}"
        );
    }

    // Nothing waits or hangs unacknowledged on the surviving nodes.
    let prefix = format!("{}.", env.namespace);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let queues = cluster.queues(survivor, &prefix);
        let busy: Vec<_> = queues
            .iter()
            .filter(|q| q.ready > 0 || q.unacked > 0)
            .filter(|q| !q.name.ends_with(".alerts"))
            .collect();
        if busy.is_empty() {
            assert!(queues.iter().any(|q| q.name == jobs_queue));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "messages left behind: {busy:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let alerts = drain_alerts(&cluster.urls[survivor - 1], &env.names.alerts_queue()).await;
    let finished: HashSet<&str> = alerts
        .iter()
        .filter(|a| a.kind == AlertKind::RunFinished)
        .map(|a| a.id.as_str())
        .collect();
    assert_eq!(finished.len(), 1, "{alerts:?}");
    assert_eq!(
        alerts.len(),
        alerts
            .iter()
            .filter(|a| a.kind == AlertKind::RunFinished)
            .count(),
        "no other alert: {alerts:?}"
    );

    assert!(
        sim.pending_faults().is_empty(),
        "every injected 503 was served"
    );
    for w in workers {
        w.stop();
    }
    cluster.restart(leader);
    sim.shutdown().await;
    env.cleanup_keys().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_refusing_connections_is_skipped_for_the_next_one_in_amqp_urls() {
    let dead = format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port());
    let text = format!("[amqp]\nurls = [\"{dead}\", \"{}\"]\n", amqp_url());
    let settings = config::from_toml(&text).expect("valid");
    let (conn, used) = amqp::connect_from(&settings.amqp, "test", 0)
        .await
        .expect("the second broker takes the connection");
    assert_eq!(used, 1);
    let _ = conn.close(200, "done".into()).await;
    // A worker whose session was on the last broker starts over at the
    // first (dead) one and still lands on the live one.
    let (conn, used) = amqp::connect_from(&settings.amqp, "test", 2)
        .await
        .expect("wraps around");
    assert_eq!(used, 1);
    let _ = conn.close(200, "done".into()).await;
}

async fn drain_alerts(url: &str, queue: &str) -> Vec<AlertV1> {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("a surviving node answers");
    let channel = conn.create_channel().await.unwrap();
    let mut out = Vec::new();
    while let Some(msg) = channel
        .basic_get(queue.into(), BasicGetOptions::default())
        .await
        .unwrap()
    {
        msg.delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .unwrap();
        out.push(serde_json::from_slice(&msg.delivery.data).expect("alerts are JSON"));
    }
    out
}
