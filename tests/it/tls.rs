//! `amqps://` and `rediss://` work end to end: a RabbitMQ node and a Redis
//! server that accept only TLS, with certificates the test generates and
//! client certificates required, carry a whole run.

use std::time::Duration;

use rolecall_common::config;
use rolecall_common::ledger::{self, Ledger};
use rolecall_sim::{SimConfig, SimHandle};
use rolecall_tests::tls::{TlsRedisCluster, TlsServers};
use rolecall_tests::{AppSpec, TestEnv, active_rows, publish, wait_until_finished};

/// A simulated Lever of `users` users.
async fn lever_sim(users: usize) -> SimHandle {
    rolecall_sim::spawn(SimConfig {
        users,
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

fn lever(sim: &SimHandle) -> [AppSpec<'_>; 1] {
    [AppSpec {
        name: "lever",
        sim,
        per_second: 100.0,
        burst: 10,
    }]
}

/// Publishes `n` of the sim's users on `settings` (the TLS brokers), with a
/// worker on them too, and waits for every outcome in the ledger those
/// settings reach; returns that ledger.
async fn run_through(
    env: &TestEnv,
    settings: &config::Settings,
    sim: &SimHandle,
    n: usize,
) -> Ledger {
    let worker = env.spawn_worker(settings).await;
    let report = publish(settings, &active_rows(sim, "lever", n)).await;
    assert_eq!(report.published, n as u64);
    let conn = ledger::connect(&settings.redis)
        .await
        .expect("Redis over TLS");
    let ledger = Ledger::new(conn, env.names.clone(), &settings.redis);
    let run = wait_until_finished(&ledger, &report.run_id, Duration::from_secs(60)).await;
    worker.stop().await;
    assert_eq!(run.outcomes(), n as u64);
    assert_eq!(run.failed, 0);
    ledger
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_goes_through_rabbitmq_and_redis_over_tls_with_client_certificates() {
    let env = TestEnv::new().await;
    let tls = TlsServers::start().await;
    let sim = lever_sim(20).await;
    let apps = lever(&sim);
    let redis_url = format!("rediss://127.0.0.1:{}/0", tls.redis_port);
    let text = env.config_text_with_redis(&apps, "", &redis_url).replace(
        &rolecall_tests::amqp_url(),
        &format!("amqps://guest:guest@127.0.0.1:{}/%2f", tls.amqp_port),
    );
    let text = format!(
        "{text}\n{}\n{}",
        tls.tls_toml("amqp"),
        tls.tls_toml("redis")
    );
    let settings = config::from_toml(&text).expect("the TLS configuration is valid");

    run_through(&env, &settings, &sim, 12).await;
}

#[tokio::test]
async fn a_missing_tls_file_is_a_configuration_error_naming_its_key() {
    let err = config::from_toml(
        r#"
[amqp]
url = "amqps://guest:guest@localhost:5671/%2f"
[amqp.tls]
ca_file = "/nonexistent/ca.pem"
client_cert_file = "/nonexistent/client.pem"
"#,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("amqp.tls.ca_file"), "{err}");
    assert!(err.contains("amqp.tls.client_key_file"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_goes_through_a_redis_cluster_that_speaks_only_tls_with_client_certificates() {
    let env = TestEnv::new().await;
    let cluster = TlsRedisCluster::start().await;
    let sim = lever_sim(40).await;
    let apps = lever(&sim);
    let text = format!(
        "{}\n{}",
        env.config_text_with_redis_cluster(&apps, &cluster.urls()),
        cluster.tls_toml()
    );
    let settings = config::from_toml(&text).expect("the TLS cluster configuration is valid");
    assert!(settings.redis.cluster);

    // The worker's limiter, ledger scripts and the scheduler's run record
    // all go to masters the client found through CLUSTER SLOTS, over TLS.
    let ledger = run_through(&env, &settings, &sim, 30).await;
    // Every user's result is in the cluster, none in the shared Redis.
    let shared = env.ledger(&settings);
    for i in 0..30 {
        let user_id = format!("u{i}");
        let result = ledger.user_result("lever", &user_id).await.unwrap();
        assert!(!result.is_empty(), "no result for {user_id} in the cluster");
        let elsewhere = shared.user_result("lever", &user_id).await.unwrap();
        assert!(elsewhere.is_empty(), "{user_id} in the shared Redis");
    }
}
