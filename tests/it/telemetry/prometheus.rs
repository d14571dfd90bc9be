//! A real Prometheus server scrapes a worker process during a run.

use super::*;

/// The Prometheus binary scripts/prometheus.sh installed (`ROLECALL_PROMETHEUS`).
fn prometheus_binary() -> String {
    std::env::var("ROLECALL_PROMETHEUS").unwrap_or_else(|_| "prometheus".into())
}

/// A `prometheus` server on loopback scraping `target` every second, with
/// its data in a temporary folder; killed when dropped.
struct Prometheus {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `target` every second and, with `rules`, evaluates that rules
    /// file every second.
    fn start(target: SocketAddr, rules: Option<&std::path::Path>) -> Prometheus {
        let mut config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: rolecall-worker\n    static_configs:\n      - targets: ['{target}']\n"
        );
        if let Some(rules) = rules {
            config.push_str(&format!("rule_files:\n  - '{}'\n", rules.display()));
        }
        let (dir, path) = temp_file("prometheus.yml", &config);
        let port = free_port();
        let child = std::process::Command::new(prometheus_binary())
            .arg(format!("--config.file={}", path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus runs (scripts/prometheus.sh installs it; scripts/test.sh sets ROLECALL_PROMETHEUS)");
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }

    /// An instant query's result as `label value → sample`.
    async fn query(&self, query: &str, by: &str) -> BTreeMap<String, f64> {
        let url = format!("http://127.0.0.1:{}/api/v1/query", self.port);
        let Ok(reply) = reqwest::Client::new()
            .get(url)
            .query(&[("query", query)])
            .send()
            .await
        else {
            return BTreeMap::new();
        };
        let body: serde_json::Value = reply.json().await.unwrap_or_default();
        let mut out = BTreeMap::new();
        for r in body["data"]["result"].as_array().into_iter().flatten() {
            let key = r["metric"][by].as_str().unwrap_or_default().to_string();
            let value = r["value"][1].as_str().and_then(|v| v.parse().ok());
            out.insert(key, value.unwrap_or(f64::NAN));
        }
        out
    }

    /// A GET of the HTTP API's `path`: its `data` (null when it does not answer).
    async fn api(&self, path: &str) -> serde_json::Value {
        let url = format!("http://127.0.0.1:{}/api/v1/{path}", self.port);
        match reqwest::get(url).await {
            Ok(reply) => reply.json::<serde_json::Value>().await.unwrap_or_default()["data"].take(),
            Err(_) => serde_json::Value::Null,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A worker process serving `/metrics` on a free port, once ready: it and
/// that address.
async fn ready_worker(
    text: &str,
    settings: &rolecall_common::config::Settings,
) -> (WorkerProcess, SocketAddr) {
    let ops: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let listen = ops.to_string();
    let worker = WorkerProcess::spawn_with_env(
        text,
        settings,
        &[("ROLECALL__TELEMETRY__HTTP_LISTEN", listen.as_str())],
    );
    wait_for_status(
        &format!("http://{ops}/readyz"),
        200,
        Duration::from_secs(30),
    )
    .await;
    (worker, ops)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scraping_a_worker_reports_the_runs_job_counts_and_the_ledgers_seats() {
    let _shared = rolecall_tests::TIMING.read().await;
    let env = TestEnv::new().await;
    let sim = sim(60, 7).await;
    let apps = app(&sim);
    let text = env.config_text(&apps, "");
    let settings = env.settings(&apps);
    let (worker, ops) = ready_worker(&text, &settings).await;
    let prometheus = Prometheus::start(ops, None);

    // 50 users the vendor knows (some deactivated there) and 10 it does not.
    let mut csv = active_rows(&sim, "lever", 50);
    for i in 0..10 {
        csv.push_str(&format!("lever,gone{i},gone.{i}@example.com,active\n"));
    }
    let report = publish(&settings, &csv).await;
    assert_eq!(report.published, 60);
    let counters = env
        .wait_for_run(&settings, &report.run_id, Duration::from_secs(60))
        .await;
    let mut expected = BTreeMap::new();
    for (outcome, n) in [
        ("found", counters.succeeded),
        ("inactive", counters.inactive),
        ("not_found", counters.not_found),
    ] {
        if n > 0 {
            expected.insert(outcome.to_string(), n as f64);
        }
    }
    assert_eq!(expected.values().sum::<f64>(), 60.0, "{counters:?}");

    // Prometheus' own query API says what the worker counted.
    let query = r#"sum by (outcome) (rolecall_jobs_processed_total{saas="lever"})"#;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut seen = BTreeMap::new();
    while seen != expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Prometheus reports {seen:?}, the run recorded {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        seen = prometheus.query(query, "outcome").await;
    }
    // Seats and seat cost by role agree with the run's tally in the ledger
    // (read from it: every worker reports the whole figure).
    let tallies = env
        .ledger(&settings)
        .role_tallies(&report.run_id)
        .await
        .expect("Redis answers");
    let mut want_seats = BTreeMap::new();
    let mut want_cost = BTreeMap::new();
    for t in tallies.iter().filter(|t| t.saas == "lever") {
        want_seats.insert(t.role.clone(), t.users as f64);
        want_cost.insert(t.role.clone(), t.cost);
    }
    assert!(!want_seats.is_empty(), "{tallies:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let seats = prometheus
            .query(r#"max by (role) (rolecall_seats{saas="lever"})"#, "role")
            .await;
        let cost = prometheus
            .query(
                r#"max by (role) (rolecall_seat_cost{saas="lever"})"#,
                "role",
            )
            .await;
        let cost_matches = cost.len() == want_cost.len()
            && want_cost
                .iter()
                .all(|(role, c)| cost.get(role).is_some_and(|got| (got - c).abs() < 1e-6));
        if seats == want_seats && cost_matches {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "seats {seats:?} / cost {cost:?}, the ledger says {want_seats:?} / {want_cost:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The scrape target is up, and other series of the run are there.
    let up = prometheus
        .query(r#"up{job="rolecall-worker"}"#, "job")
        .await;
    assert_eq!(up.get("rolecall-worker"), Some(&1.0), "{up:?}");
    let requests = prometheus
        .query(
            r#"sum(rolecall_vendor_requests_total{saas="lever"})"#,
            "saas",
        )
        .await;
    assert!(
        requests.values().all(|n| *n >= 60.0) && !requests.is_empty(),
        "{requests:?}"
    );
    let body = http_get(&format!("http://{ops}/metrics")).await.unwrap().1;
    for series in [
        "rolecall_job_duration_seconds_bucket",
        "rolecall_vendor_request_duration_seconds_bucket",
        "rolecall_limiter_wait_seconds_bucket",
        "rolecall_seats{",
        "rolecall_seat_cost{",
        "rolecall_queue_depth{",
        "rolecall_jobs_in_flight{",
        "rolecall_limiter_adaptive_factor{",
        "rolecall_jobs_processed_total{",
        "service_name=\"rolecall-worker\"",
    ] {
        assert!(body.contains(series), "/metrics lacks {series}:\n{body}");
    }
    assert!(
        !body.contains("@example.com"),
        "a user in /metrics:\n{body}"
    );

    // Every query of the shipped Grafana dashboard is valid PromQL on
    // these metrics, and the job-rate panel has data.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/grafana/rolecall.json"
        ))
        .expect("deploy/grafana/rolecall.json"),
    )
    .expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    for target in panels.iter().flat_map(|p| p["targets"].as_array().unwrap()) {
        let expr = target["expr"]
            .as_str()
            .unwrap()
            .replace("$__rate_interval", "1m")
            .replace("$saas", ".*");
        let url = format!("http://127.0.0.1:{}/api/v1/query", prometheus.port);
        let reply: serde_json::Value = reqwest::Client::new()
            .get(url)
            .query(&[("query", expr.as_str())])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(reply["status"], "success", "{expr}: {reply}");
    }
    // A rate needs two samples of a series: give the scrapes a few seconds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rate = prometheus
            .query(
                r#"sum by (outcome) (rate(rolecall_jobs_processed_total{saas=~".*"}[1m]))"#,
                "outcome",
            )
            .await;
        if !rate.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no job rate in Prometheus"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(prometheus);
    worker.stop();

    // A worker started after the run, which recorded none of it (as one
    // restarted would), reports the same seats: they come from the ledger.
    let listen = format!("127.0.0.1:{}", free_port());
    let fresh = WorkerProcess::spawn_with_env(
        &text,
        &settings,
        &[("ROLECALL__TELEMETRY__HTTP_LISTEN", listen.as_str())],
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let body = http_get(&format!("http://{listen}/metrics"))
            .await
            .map(|(_, body)| body)
            .unwrap_or_default();
        let seats: BTreeMap<String, f64> = body
            .lines()
            .filter(|l| l.starts_with("rolecall_seats{") && l.contains("saas=\"lever\""))
            .filter_map(|l| {
                let role = l.split("role=\"").nth(1)?.split('"').next()?;
                Some((role.to_string(), l.rsplit(' ').next()?.parse().ok()?))
            })
            .collect();
        if seats == want_seats {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a fresh worker reports seats {seats:?}, the ledger says {want_seats:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    fresh.stop();
    env.cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_alert_rules_run_in_a_real_prometheus_and_a_dead_letter_raises_its_alert() {
    use lapin::BasicProperties;
    use lapin::options::BasicPublishOptions;
    let env = TestEnv::new().await;
    let sim = sim(5, 9).await;
    let apps = app(&sim);
    let text = env.config_text(&apps, "");
    let settings = env.settings(&apps);
    let (worker, ops) = ready_worker(&text, &settings).await;
    // A message no worker can read: the worker dead-letters it, and the
    // dead-letter queue's depth is what the alert watches.
    let channel = env.amqp.create_channel().await.unwrap();
    channel
        .basic_publish(
            "".into(),
            env.names.jobs_queue("lever").as_str().into(),
            BasicPublishOptions::default(),
            b"this is not json",
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    // Prometheus starts once the worker's gauges show it dead-lettered (so
    // no scrape sees it waiting in the jobs queue, which is another alert).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let body = http_get(&format!("http://{ops}/metrics")).await.unwrap().1;
        let depth = |queue: &str| {
            body.lines().any(|l| {
                l.starts_with("rolecall_queue_depth{")
                    && l.contains(&format!("queue=\"{queue}\""))
                    && l.contains("saas=\"lever\"")
                    && l.ends_with(if queue == "dead" { " 1" } else { " 0" })
            })
        };
        if depth("dead") && depth("jobs") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no dead letter in:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../helm/rolecall/files/prometheus-rules.yaml");
    let prometheus = Prometheus::start(ops, Some(&rules));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let alert = loop {
        let alerts = prometheus.api("alerts").await;
        let found = alerts["alerts"].as_array().into_iter().flatten().find(|a| {
            a["labels"]["alertname"] == "RolecallDeadLetters" && a["labels"]["saas"] == "lever"
        });
        if let Some(a) = found {
            break a.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no RolecallDeadLetters alert: {alerts}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // Pending: its `for` is 5 minutes.
    assert_eq!(alert["state"], "pending", "{alert}");
    assert_eq!(alert["labels"]["severity"], "warning", "{alert}");
    assert_eq!(
        alert["annotations"]["summary"],
        "The dead-letter queue of lever holds 1 failed job(s): see rolecall-worker dlq list, then dlq replay.",
        "{alert}"
    );
    // Every shipped rule evaluates against the worker's real series without
    // an error, and nothing else is alerting (the jobs queue is empty).
    let groups = prometheus.api("rules").await;
    let rules: Vec<&serde_json::Value> = groups["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect();
    assert_eq!(rules.len(), 7, "{groups}");
    for rule in &rules {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
    let firing: Vec<&serde_json::Value> = rules
        .iter()
        .filter(|r| r["state"] != "inactive")
        .map(|r| &r["name"])
        .collect();
    assert_eq!(firing, [&serde_json::json!("RolecallDeadLetters")]);
    drop(prometheus);
    worker.stop();
    env.cleanup(&settings).await;
}
