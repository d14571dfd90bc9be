//! Declaring the topology over queues an older version declared.

use rolecall_common::amqp::{self, AmqpError};
use rolecall_common::config;
use rolecall_sim::SimConfig;
use rolecall_tests::{AppSpec, TestEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declaring_quorum_delay_queues_over_classic_ones_of_an_older_version_fails_naming_amqp_delay_queues()
 {
    let env = TestEnv::new().await;
    let sim = rolecall_sim::spawn(SimConfig::default()).await.unwrap();
    let apps = [AppSpec {
        name: "lever",
        sim: &sim,
        per_second: 5.0,
        burst: 5,
    }];
    let older = config::from_toml(
        &env.config_text(&apps, "")
            .replace("[amqp]\n", "[amqp]\ndelay_queues = \"classic\"\n"),
    )
    .expect("valid");
    let current = env.settings(&apps);
    declare(&env, &older)
        .await
        .expect("classic delay queues are declared as asked");
    // Declaring them again as classic is what an older deployment keeps doing.
    declare(&env, &older).await.expect("idempotent");
    match declare(&env, &current).await {
        Err(e @ AmqpError::DelayQueueMismatch(..)) => {
            let text = e.to_string();
            assert!(text.contains("amqp.delay_queues"), "{text}");
            assert!(text.contains(".rolecall.retry.lever."), "{text}");
        }
        other => panic!("expected a delay queue mismatch, got {other:?}"),
    }
    env.cleanup(&older).await;
    sim.shutdown().await;
}

async fn declare(env: &TestEnv, settings: &config::Settings) -> Result<(), AmqpError> {
    let conn = amqp::connect(&settings.amqp, "test").await?;
    let channel = amqp::confirmed_channel(&conn).await?;
    let declared = amqp::declare_topology(
        &channel,
        &env.names,
        &settings.amqp,
        &["lever".to_string()],
        &settings.worker.delay_queues(),
    )
    .await;
    let _ = conn.close(200, "done".into()).await;
    declared
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_declaring_the_same_new_topology_at_once_all_succeed() {
    // A scheduler, workers and a notifier start together: each declares
    // the same quorum queues, and a queue another one declared a moment
    // earlier answers NOT_FOUND until its leader is elected.
    let env = TestEnv::new().await;
    let sim = rolecall_sim::spawn(SimConfig::default()).await.unwrap();
    let apps = [AppSpec {
        name: "lever",
        sim: &sim,
        per_second: 5.0,
        burst: 5,
    }];
    let settings = env.settings(&apps);
    let saas = vec!["lever".to_string()];
    let mut declaring = Vec::new();
    // Connected first, then released together, so the declarations overlap.
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(8));
    for round in 0..8 {
        let (settings, names, saas) = (settings.clone(), env.names.clone(), saas.clone());
        let start = start.clone();
        declaring.push(tokio::spawn(async move {
            let conn = amqp::connect(&settings.amqp, "test").await?;
            start.wait().await;
            let declared = amqp::declare_topology_on(
                &conn,
                &names,
                &settings.amqp,
                &saas,
                &settings.worker.delay_queues(),
            )
            .await
            .map(|_| round);
            let _ = conn.close(200, "done".into()).await;
            declared
        }));
    }
    for task in declaring {
        task.await
            .unwrap()
            .expect("every process declares the topology");
    }
    env.cleanup(&settings).await;
    sim.shutdown().await;
}
