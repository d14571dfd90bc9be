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
