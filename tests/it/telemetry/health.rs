//! `/readyz` and `/metrics` of the processes' ops servers: ready once
//! connected, unready while Redis or the RabbitMQ connection is lost.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_goes_unready_while_redis_is_down_and_ready_again_after() {
    let env = TestEnv::new().await;
    let sim = sim(5, 3).await;
    let apps = app(&sim);
    let mut redis = RedisProcess::start().await;
    let text = env.config_text_with_redis(&apps, "", &redis.url());
    let settings = rolecall_common::config::from_toml(&text).expect("valid");
    let ops = format!("127.0.0.1:{}", free_port());
    let worker = WorkerProcess::spawn_with_env(
        &text,
        &settings,
        &[("ROLECALL__TELEMETRY__HTTP_LISTEN", ops.as_str())],
    );
    let readyz = format!("http://{ops}/readyz");
    wait_for_status(
        &format!("http://{ops}/healthz"),
        200,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        wait_for_status(&readyz, 200, Duration::from_secs(30)).await,
        "ready\n"
    );
    redis.kill();
    let body = wait_for_status(&readyz, 503, Duration::from_secs(15)).await;
    assert!(body.contains("redis"), "{body}");
    assert!(!body.contains("amqp"), "RabbitMQ is still up: {body}");
    // Alive all the while: a restart would not bring Redis back.
    assert_eq!(
        http_get(&format!("http://{ops}/healthz"))
            .await
            .map(|r| r.0),
        Some(200)
    );
    redis.restart().await;
    wait_for_status(&readyz, 200, Duration::from_secs(30)).await;
    worker.stop();
    env.cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_serve_is_ready_once_connected_and_reports_queue_depths_and_leadership_on_metrics()
 {
    let env = TestEnv::new().await;
    let text = env.config_text(&[], crate::scheduler_service::APP);
    let settings = rolecall_common::config::from_toml(&text).expect("valid");
    let ops = format!("127.0.0.1:{}", free_port());
    let server = SchedulerProcess::spawn_with_env(
        &text,
        &["serve"],
        &[("ROLECALL__TELEMETRY__HTTP_LISTEN", ops.as_str())],
    );
    wait_for_status(
        &format!("http://{ops}/healthz"),
        200,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        wait_for_status(
            &format!("http://{ops}/readyz"),
            200,
            Duration::from_secs(30)
        )
        .await,
        "ready\n",
        "{}",
        server.log()
    );
    // Depths are read every few seconds, for every configured SaaS app.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let body = http_get(&format!("http://{ops}/metrics"))
            .await
            .map(|r| r.1)
            .unwrap_or_default();
        let depth = body.lines().any(|l| {
            l.starts_with("rolecall_queue_depth{")
                && l.contains(r#"queue="jobs""#)
                && l.contains(r#"saas="lever""#)
        });
        // The only replica leads, and says so (alert on `max` being 0).
        let leads = body
            .lines()
            .any(|l| l.starts_with("rolecall_scheduler_leader") && l.ends_with(" 1"));
        if depth && leads {
            assert!(
                body.contains(r#"service_name="rolecall-scheduler""#),
                "{body}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no queue depth or leader on /metrics:\n{body}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(server);
    env.cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_goes_unready_when_the_rabbitmq_connection_is_lost_and_ready_after_reconnecting() {
    let env = TestEnv::new().await;
    let sim = sim(5, 4).await;
    let apps = app(&sim);
    let text = env.config_text(&apps, "");
    let settings = env.settings(&apps);
    let (proxy, via_proxy) = CuttableProxy::in_front_of(&rolecall_tests::amqp_url()).await;
    let ops = format!("127.0.0.1:{}", free_port());
    let worker = WorkerProcess::spawn_with_env(
        &text,
        &settings,
        &[
            ("ROLECALL__TELEMETRY__HTTP_LISTEN", ops.as_str()),
            ("ROLECALL__AMQP__URL", via_proxy.as_str()),
        ],
    );
    let readyz = format!("http://{ops}/readyz");
    wait_for_status(&readyz, 200, Duration::from_secs(30)).await;
    proxy.cut();
    let body = wait_for_status(&readyz, 503, Duration::from_secs(15)).await;
    assert!(body.contains("amqp"), "{body}");
    // Short: the worker's reconnect backoff stays at a second or two.
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.restore();
    wait_for_status(&readyz, 200, Duration::from_secs(30)).await;
    worker.stop();
    env.cleanup(&settings).await;
}
