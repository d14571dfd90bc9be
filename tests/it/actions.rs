//! User actions beyond role lookup go through the same queues and limits,
//! and only where the SaaS app's configuration enables them.

use std::time::Duration;

use lapin::BasicProperties;
use rolecall_common::config;
use rolecall_common::messages::{Action, AlertKind, JobV1, UserRef};
use rolecall_scheduler::{ActionRequest, enqueue_action};
use rolecall_sim::SimConfig;
use rolecall_tests::{AppSpec, TestEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enabled_deactivation_reaches_the_vendor_through_the_queue() {
    let env = TestEnv::new().await;
    let sim = rolecall_sim::spawn(SimConfig {
        users: 20,
        deactivated_ratio: 0.0,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let text = env
        .config_text(
            &[AppSpec {
                name: "lever",
                sim: &sim,
                per_second: 50.0,
                burst: 5,
            }],
            "",
        )
        .replace(
            "deactivate_missing = true",
            "deactivate_missing = true\nactions = [\"deactivate_user\"]",
        );
    let settings = config::from_toml(&text).unwrap();
    let worker = env.spawn_worker(&settings).await;
    let target = sim.population().users[3].clone();
    let run_id = enqueue_action(
        &settings,
        ActionRequest {
            saas: "lever".into(),
            action: Action::DeactivateUser,
            user: UserRef {
                id: "u3".into(),
                email: target.email.clone(),
                external_id: None,
            },
            attributes: Default::default(),
        },
    )
    .await
    .unwrap();
    let counters = env
        .wait_for_run(&settings, &run_id, Duration::from_secs(30))
        .await;
    worker.stop().await;
    assert_eq!(counters.acted, 1, "{counters:?}");
    assert_eq!(counters.failed, 0);
    let result = env
        .ledger(&settings)
        .user_result("lever", "u3")
        .await
        .unwrap();
    assert_eq!(result["last_action"], "deactivate_user");
    assert_eq!(result["last_action_detail"], "deactivated");
    assert_eq!(result["vendor_user_id"], target.id);
    let events = env.events().await;
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "action_done" && e["user_id"] == "u3")
    );

    // The vendor now reports the user deactivated.
    let lever = rolecall_worker::connectors::Lever::new(
        rolecall_worker::vendor::VendorClient::unlimited("lever"),
        sim.base_url().parse().unwrap(),
        secrecy::SecretString::from(rolecall_tests::SIM_KEY.to_string()),
    );
    use rolecall_worker::connectors::{Connector, Lookup};
    match lever
        .lookup(&UserRef {
            id: "u3".into(),
            email: target.email.clone(),
            external_id: None,
        })
        .await
        .unwrap()
    {
        Lookup::Found(u) => assert!(!u.active),
        other => panic!("{other:?}"),
    }
    env.cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_are_off_unless_the_app_enables_them() {
    let env = TestEnv::new().await;
    let sim = rolecall_sim::spawn(SimConfig {
        users: 10,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let settings = env.settings(&[AppSpec {
        name: "lever",
        sim: &sim,
        per_second: 50.0,
        burst: 5,
    }]);
    let user = UserRef {
        id: "u1".into(),
        email: sim.population().users[1].email.clone(),
        external_id: None,
    };
    // The scheduler refuses to queue it…
    let err = enqueue_action(
        &settings,
        ActionRequest {
            saas: "lever".into(),
            action: Action::DeactivateUser,
            user: user.clone(),
            attributes: Default::default(),
        },
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("saas.lever.actions"), "{err}");

    // …and a worker refuses one that arrives anyway: failed, alerted, dead-lettered, vendor untouched.
    let worker = env.spawn_worker(&settings).await;
    let ledger = env.ledger(&settings);
    ledger
        .start_run("forged", chrono::Utc::now(), "test")
        .await
        .unwrap();
    let job = JobV1 {
        v: 1,
        job_id: ulid::Ulid::new().to_string(),
        run_id: "forged".into(),
        saas: "lever".into(),
        action: Action::DeactivateUser,
        user,
        deactivate_missing: false,
        attributes: Default::default(),
        enqueued_at: chrono::Utc::now(),
        line: 0,
    };
    let channel = rolecall_common::amqp::confirmed_channel(&env.amqp)
        .await
        .unwrap();
    rolecall_common::amqp::declare_topology(
        &channel,
        &env.names,
        &settings.amqp,
        &["lever".to_string()],
        &settings.worker.delay_queues(),
    )
    .await
    .unwrap();
    rolecall_common::amqp::publish_confirmed(
        &channel,
        &env.names.jobs_exchange(),
        "lever",
        &job.encode(),
        BasicProperties::default().with_delivery_mode(2),
    )
    .await
    .unwrap();
    ledger.finish_publishing("forged", 1, 0, 0).await.unwrap();
    let counters = env
        .wait_for_run(&settings, "forged", Duration::from_secs(20))
        .await;
    worker.stop().await;
    assert_eq!(counters.failed, 1);
    let alerts = env
        .alerts_until(Duration::from_secs(5), |a| {
            a.iter().any(|a| a.kind == AlertKind::JobFailed)
        })
        .await;
    let failed = alerts
        .iter()
        .find(|a| a.kind == AlertKind::JobFailed)
        .expect("a job_failed alert");
    assert!(failed.error.contains("not enabled"), "{}", failed.error);
    assert_eq!(env.drain(&env.names.dead_queue("lever")).await.len(), 1);
    assert_eq!(sim.stats().requests, 0, "the vendor was never called");
    env.cleanup(&settings).await;
}
