//! No secret anywhere: a full run with every connector — including a
//! refused credential, vendor errors and retries, so alerts and dead letters
//! exist — and then every log line, Redis value, queued message, alert and
//! dead-letter header is searched for every configured secret.

use std::collections::HashMap;
use std::time::Duration;

use rolecall_common::config;
use rolecall_common::credentials::Vault;
use rolecall_sim::{Fault, SimConfig, SimHandle, Vendor};
use rolecall_tests::{TestEnv, publish, temp_file, workspace_binary};

async fn sim(vendor: Vendor, key: &str) -> SimHandle {
    rolecall_sim::spawn(SimConfig {
        vendor,
        users: 12,
        api_key: key.into(),
        login_password: "mosyle-pass-S4v8".into(),
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

/// Every value stored under the namespace, as text.
async fn redis_dump(env: &TestEnv) -> String {
    let mut conn = env.redis.clone();
    let mut out = String::new();
    for key in env.scan(&format!("{}*", env.names.key_prefix())).await {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let value: redis::Value = match kind.as_str() {
            "string" => redis::cmd("GET").arg(&key).query_async(&mut conn).await,
            "hash" => redis::cmd("HGETALL").arg(&key).query_async(&mut conn).await,
            "list" => {
                redis::cmd("LRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut conn)
                    .await
            }
            "set" => {
                redis::cmd("SMEMBERS")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
            }
            "zset" => {
                redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query_async(&mut conn)
                    .await
            }
            "stream" => {
                redis::cmd("XRANGE")
                    .arg(&key)
                    .arg("-")
                    .arg("+")
                    .query_async(&mut conn)
                    .await
            }
            _ => Ok(redis::Value::Nil),
        }
        .unwrap();
        out.push_str(&format!("{key} = {value:?}\n"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_configured_secret_appears_in_logs_redis_messages_alerts_or_dead_letters() {
    let env = TestEnv::new().await;
    let secrets = HashMap::from([
        ("lever", "lever-secret-Q9x7".to_string()),
        ("miro", "miro-secret-Z3k1".to_string()),
        ("zoom", "zoom-secret-P5m2".to_string()),
        ("github", "github-secret-T8w4".to_string()),
        // Configured wrong: the vendor refuses it (an incident).
        ("okta", "okta-wrong-secret-H2j6".to_string()),
        (
            "mosyle",
            serde_json::json!({"access_token": "mosyle-token-R1c9", "email": "admin@example.com", "password": "mosyle-pass-S4v8"}).to_string(),
        ),
    ]);
    let lever = sim(Vendor::Lever, &secrets["lever"]).await;
    let miro = sim(Vendor::MiroScim, &secrets["miro"]).await;
    let zoom = sim(Vendor::Zoom, &secrets["zoom"]).await;
    let github = sim(Vendor::Github, &secrets["github"]).await;
    let okta = sim(Vendor::Okta, "okta-right-secret-L7p3").await;
    let mosyle = sim(Vendor::MosyleBusiness, "mosyle-token-R1c9").await;
    // Vendor trouble: retries, a permanent failure, a throttle.
    lever.inject(Fault {
        status: 500,
        retry_after: None,
        count: 4,
    });
    miro.inject(Fault {
        status: 400,
        retry_after: None,
        count: 1,
    });
    zoom.inject(Fault {
        status: 429,
        retry_after: Some(Duration::from_secs(1)),
        count: 1,
    });
    let app = |name: &str, connector: &str, base: String, options: &str| {
        format!(
            "\n[saas.{name}]\nconnector = \"{connector}\"\nbase_url = \"{base}\"\ncredential = \"{name}\"\ndeactivate_missing = true\nrate = {{ per_second = 100, burst = 5 }}\noptions = {options}\n"
        )
    };
    let apps = [
        app("lever", "lever", lever.base_url(), "{}"),
        app(
            "miro",
            "scim",
            format!("{}/api/v1/scim", miro.base_url()),
            "{ preset = \"miro\" }",
        ),
        app(
            "zoom",
            "http",
            zoom.base_url(),
            "{ preset = \"zoom-users\" }",
        ),
        app(
            "github",
            "http",
            github.base_url(),
            "{ preset = \"github-org-membership\", vars = { org = \"acme\" } }",
        ),
        app("okta", "okta", okta.base_url(), "{}"),
        app(
            "mosyle",
            "mosyle",
            mosyle.base_url(),
            "{ product = \"business\" }",
        ),
    ]
    .concat();
    let text = env.config_text(&[], &apps);
    let settings = config::from_toml(&text).expect("valid configuration");

    // The worker as a process, logging everything it logs, as JSON.
    let (_dir, path) = temp_file("rolecall.toml", &text);
    let log_dir = tempfile::tempdir().unwrap();
    let log_path = log_dir.path().join("worker.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let vault = Vault::with_env(settings.credentials.clone(), HashMap::new());
    let mut cmd = std::process::Command::new(workspace_binary("rolecall-worker").unwrap());
    cmd.arg("--config")
        .arg(&path)
        .env("RUST_LOG", "debug")
        .env("ROLECALL__TELEMETRY__LOG_FORMAT", "json")
        .env("ROLECALL__WORKER__MAX_AUTH_PARK_S", "2")
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    for (name, secret) in &secrets {
        cmd.env(vault.env_var(name), secret);
    }
    let _fleet = rolecall_tests::TIMING.read().await;
    let mut worker = cmd.spawn().expect("the worker starts");

    let mut csv = String::from("saas,user_id,email,external_id,status\n");
    for (name, sim) in [
        ("lever", &lever),
        ("miro", &miro),
        ("zoom", &zoom),
        ("github", &github),
        ("okta", &okta),
        ("mosyle", &mosyle),
    ] {
        for (i, user) in sim.population().users.iter().take(6).enumerate() {
            csv.push_str(&format!(
                "{name},{name}-{i},{},{},active\n",
                user.email, user.github_login
            ));
        }
        csv.push_str(&format!(
            "{name},{name}-gone,gone@example.com,gone-login,active\n"
        ));
    }
    let report = publish(&settings, &csv).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    if let Ok(Some(status)) = worker.try_wait() {
        panic!(
            "the worker exited ({status}): {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }
    let counters = env
        .wait_for_run(&settings, &report.run_id, Duration::from_secs(90))
        .await;
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(worker.id().to_string())
        .status();
    let _ = worker.wait();
    assert_eq!(counters.outcomes(), 42, "{counters:?}");
    assert!(
        counters.failed >= 7,
        "the refused Okta credential failed its jobs: {counters:?}"
    );

    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(logs.lines().count() > 10, "the worker logged: {logs}");
    let redis = redis_dump(&env).await;
    let mut messages = String::new();
    let mut queues = vec![env.names.alerts_queue()];
    for name in ["lever", "miro", "zoom", "github", "okta", "mosyle"] {
        queues.push(env.names.dead_queue(name));
        queues.push(env.names.dead_watch_queue(name));
        queues.push(env.names.jobs_queue(name));
    }
    let mut alerts = 0;
    let mut dead = 0;
    for queue in &queues {
        for msg in env.drain(queue).await {
            if queue == &env.names.alerts_queue() {
                alerts += 1;
            } else if queue.contains(".dead.") {
                dead += 1;
            }
            messages.push_str(&String::from_utf8_lossy(&msg.delivery.data));
            messages.push_str(&format!("{:?}\n", msg.delivery.properties));
        }
    }
    assert!(
        alerts > 0 && dead > 0,
        "alerts {alerts}, dead letters {dead}"
    );

    let mut all: Vec<&str> = secrets
        .values()
        .filter(|s| !s.starts_with('{'))
        .map(String::as_str)
        .collect();
    all.extend([
        "mosyle-token-R1c9",
        "mosyle-pass-S4v8",
        "okta-right-secret-L7p3",
    ]);
    for secret in all {
        for (place, text) in [("logs", &logs), ("Redis", &redis), ("messages", &messages)] {
            assert!(
                !text.contains(secret),
                "{secret} appears in the {place}:\n{}",
                text.lines()
                    .filter(|l| l.contains(secret))
                    .take(3)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
    env.cleanup(&settings).await;
}
