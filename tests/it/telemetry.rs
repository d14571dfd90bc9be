//! Observability with real parts: a real Prometheus server scrapes a worker
//! process during a run; a real OTLP receiver (the protocol's gRPC service,
//! and OTLP/HTTP protobuf) gets one job's spans from the scheduler and
//! worker processes; `/readyz` follows a Redis outage.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use rolecall_sim::{SimConfig, SimHandle};
use rolecall_tests::{
    AppSpec, RedisProcess, SchedulerProcess, TestEnv, WorkerProcess, active_rows, free_port,
    publish, temp_file,
};

async fn sim(users: usize, seed: u64) -> SimHandle {
    rolecall_sim::spawn(SimConfig {
        users,
        seed,
        ..SimConfig::default()
    })
    .await
    .expect("the sim starts")
}

fn app(sim: &SimHandle) -> [AppSpec<'_>; 1] {
    [AppSpec {
        name: "lever",
        sim,
        per_second: 200.0,
        burst: 20,
    }]
}

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
    fn start(target: SocketAddr) -> Prometheus {
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: rolecall-worker\n    static_configs:\n      - targets: ['{target}']\n"
        );
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
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn http_get(url: &str) -> Option<(u16, String)> {
    let r = reqwest::get(url).await.ok()?;
    Some((r.status().as_u16(), r.text().await.ok()?))
}

/// Polls `url` until it answers `status`, or panics after `timeout`.
async fn wait_for_status(url: &str, status: u16, timeout: Duration) -> String {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let got = http_get(url).await;
        if let Some((s, body)) = &got
            && *s == status
        {
            return body.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} did not answer {status} in {timeout:?}: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scraping_a_worker_reports_the_runs_job_counts_per_outcome() {
    let _shared = rolecall_tests::TIMING.read().await;
    let env = TestEnv::new().await;
    let sim = sim(60, 7).await;
    let apps = app(&sim);
    let text = env.config_text(&apps, "");
    let settings = env.settings(&apps);
    let ops: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let listen = ops.to_string();
    let worker = WorkerProcess::spawn_with_env(
        &text,
        &settings,
        &[("ROLECALL__TELEMETRY__HTTP_LISTEN", listen.as_str())],
    );
    wait_for_status(
        &format!("http://{ops}/readyz"),
        200,
        Duration::from_secs(30),
    )
    .await;
    let prometheus = Prometheus::start(ops);

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
    // Seats and seat cost by role agree with the run's tally in the ledger.
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
            .query(r#"sum by (role) (rolecall_seats{saas="lever"})"#, "role")
            .await;
        let cost = prometheus
            .query(
                r#"sum by (role) (rolecall_seat_cost{saas="lever"})"#,
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
    env.cleanup(&settings).await;
}

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

/// Spans and metrics as an OTLP receiver got them, from either protocol.
#[derive(Clone, Default)]
struct Received {
    requests: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

#[tonic::async_trait]
impl MetricsService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.metrics.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.requests.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// One received span, flattened: its service, ids, kind and attributes.
#[derive(Debug, Clone)]
struct SpanSeen {
    service: String,
    name: String,
    kind: i32,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    attributes: HashMap<String, String>,
}

fn text(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(&kv.value)))
        .collect()
}

impl Received {
    /// `(service.name, metric name)` of every metric data point batch received.
    fn metric_names(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for request in self.metrics.lock().unwrap().iter() {
            for rm in &request.resource_metrics {
                let resource = rm
                    .resource
                    .as_ref()
                    .map(|r| attributes(&r.attributes))
                    .unwrap_or_default();
                let service = resource.get("service.name").cloned().unwrap_or_default();
                for m in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
                    out.push((service.clone(), m.name.clone()));
                }
            }
        }
        out
    }

    fn spans(&self) -> Vec<SpanSeen> {
        let mut out = Vec::new();
        for request in self.requests.lock().unwrap().iter() {
            for rs in &request.resource_spans {
                let resource = rs
                    .resource
                    .as_ref()
                    .map(|r| attributes(&r.attributes))
                    .unwrap_or_default();
                for ss in &rs.scope_spans {
                    for span in &ss.spans {
                        out.push(SpanSeen {
                            service: resource.get("service.name").cloned().unwrap_or_default(),
                            name: span.name.clone(),
                            kind: span.kind,
                            trace_id: span.trace_id.clone(),
                            span_id: span.span_id.clone(),
                            parent_span_id: span.parent_span_id.clone(),
                            attributes: attributes(&span.attributes),
                        });
                    }
                }
            }
        }
        out
    }

    /// Every attribute value anywhere: resources, spans, their events and links.
    fn every_value(&self) -> Vec<String> {
        let mut out = Vec::new();
        for request in self.requests.lock().unwrap().iter() {
            for rs in &request.resource_spans {
                let resource = rs.resource.iter().flat_map(|r| &r.attributes);
                out.extend(resource.map(|kv| text(&kv.value)));
                for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
                    out.push(span.name.clone());
                    out.extend(span.attributes.iter().map(|kv| text(&kv.value)));
                    for e in &span.events {
                        out.push(e.name.clone());
                        out.extend(e.attributes.iter().map(|kv| text(&kv.value)));
                    }
                    for l in &span.links {
                        out.extend(l.attributes.iter().map(|kv| text(&kv.value)));
                    }
                }
            }
        }
        out
    }
}

/// Serves OTLP/gRPC and OTLP/HTTP (protobuf) on two loopback ports,
/// both into `received`.
async fn otlp_receiver(received: Received) -> (SocketAddr, SocketAddr) {
    let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let service = TraceServiceServer::new(received.clone());
    let metrics = MetricsServiceServer::new(received.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .add_service(metrics)
            .serve(grpc)
            .await
            .expect("the OTLP/gRPC receiver serves");
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    let traces = received.clone();
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let received = traces.clone();
                async move {
                    let request = ExportTraceServiceRequest::decode(body)
                        .expect("an OTLP/HTTP protobuf body");
                    received.requests.lock().unwrap().push(request);
                    ExportTraceServiceResponse::default().encode_to_vec()
                }
            }),
        )
        .route(
            "/v1/metrics",
            axum::routing::post(move |body: axum::body::Bytes| {
                let received = received.clone();
                async move {
                    let request = ExportMetricsServiceRequest::decode(body)
                        .expect("an OTLP/HTTP protobuf body");
                    received.metrics.lock().unwrap().push(request);
                    ExportMetricsServiceResponse::default().encode_to_vec()
                }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (grpc, http)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_jobs_publish_span_is_the_parent_of_its_process_span_across_processes_with_no_email() {
    let env = TestEnv::new().await;
    let sim = sim(3, 5).await;
    let apps = app(&sim);
    let text = env.config_text(&apps, "");
    let settings = env.settings(&apps);
    let received = Received::default();
    let (grpc, http) = otlp_receiver(received.clone()).await;
    // Spans leave within 100 ms instead of the SDK's 5 s.
    let fast = ("OTEL_BSP_SCHEDULE_DELAY", "100");

    // The worker exports over OTLP/HTTP, the scheduler over gRPC.
    let http_endpoint = format!("http://{http}");
    let worker = WorkerProcess::spawn_with_env(
        &text,
        &settings,
        &[
            ("ROLECALL__TELEMETRY__OTLP_ENDPOINT", http_endpoint.as_str()),
            ("ROLECALL__TELEMETRY__OTLP_PROTOCOL", "http"),
            fast,
        ],
    );
    let user = &sim.population().users[0];
    let email = user.email.clone();
    let (_dir, inventory) = temp_file(
        "inventory.csv",
        &format!("saas,user_id,email,status\nlever,u-traced,{email},active\n"),
    );
    let grpc_endpoint = format!("http://{grpc}");
    let inventory = inventory.display().to_string();
    let mut scheduler = SchedulerProcess::spawn_with_env(
        &text,
        &["run-once", "--inventory", &inventory],
        &[
            ("ROLECALL__TELEMETRY__OTLP_ENDPOINT", grpc_endpoint.as_str()),
            fast,
        ],
    );
    assert!(
        scheduler.wait(Duration::from_secs(60)).await.success(),
        "{}",
        scheduler.log()
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (publish, process) = loop {
        let spans = received.spans();
        let publish = spans
            .iter()
            .find(|s| s.service == "rolecall-scheduler" && s.name.starts_with("publish "))
            .cloned();
        let process = spans
            .iter()
            .find(|s| s.service == "rolecall-worker" && s.name.starts_with("process "))
            .cloned();
        if let (Some(p), Some(c)) = (&publish, &process)
            && spans
                .iter()
                .any(|s| s.parent_span_id == c.span_id && s.name == "GET")
        {
            break (p.clone(), c.clone());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the receiver did not get both spans: {spans:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    worker.stop();
    // The job is the run's job for this user (its id is a hash of run,
    // SaaS app and user id).
    let run_id = &publish.attributes["rolecall.run_id"];
    let job_id = rolecall_scheduler::publish::job_id(run_id, "lever", "u-traced");
    assert_eq!(
        env.ledger(&settings).run(run_id).await.unwrap().published,
        1
    );

    // One trace across both processes: the worker's span is the child.
    assert_eq!(process.trace_id, publish.trace_id);
    assert_eq!(process.parent_span_id, publish.span_id);
    assert_eq!(publish.kind, SpanKind::Producer as i32);
    assert_eq!(process.kind, SpanKind::Consumer as i32);
    let exchange = env.names.jobs_exchange();
    assert_eq!(publish.name, format!("publish {exchange}"));
    for (span, operation_type, operation) in [
        (&publish, "send", "publish"),
        (&process, "process", "process"),
    ] {
        let a = &span.attributes;
        assert_eq!(a["messaging.system"], "rabbitmq", "{a:?}");
        assert_eq!(a["messaging.operation.type"], operation_type, "{a:?}");
        assert_eq!(a["messaging.operation.name"], operation, "{a:?}");
        assert_eq!(a["messaging.message.id"], job_id, "{a:?}");
        assert_eq!(a["messaging.rabbitmq.destination.routing_key"], "lever");
        assert_eq!(a["rolecall.user_id"], "u-traced");
    }
    assert_eq!(publish.attributes["messaging.destination.name"], exchange);
    assert_eq!(
        process.attributes["messaging.destination.name"],
        env.names.jobs_queue("lever")
    );
    assert_eq!(process.attributes["rolecall.outcome"], "found");

    // The limiter wait and the vendor call are children of the process span.
    let spans = received.spans();
    let children: Vec<&SpanSeen> = spans
        .iter()
        .filter(|s| s.parent_span_id == process.span_id)
        .collect();
    assert!(
        children
            .iter()
            .any(|s| s.name == "limiter wait" && s.attributes["rolecall.bucket"] == "default"),
        "{children:#?}"
    );
    let call = children.iter().find(|s| s.name == "GET").unwrap();
    assert_eq!(call.kind, SpanKind::Client as i32);
    assert_eq!(call.attributes["http.response.status_code"], "200");
    assert_eq!(call.attributes["rolecall.attempt"], "1");
    assert_eq!(call.attributes["server.address"], "127.0.0.1");

    // Metrics went out over OTLP too: the scheduler's at its exit, the
    // worker's when it stopped (both flush on the way out).
    let metric_names = received.metric_names();
    for (service, name) in [
        ("rolecall-scheduler", "rolecall.jobs.published"),
        ("rolecall-worker", "rolecall.jobs.processed"),
        ("rolecall-worker", "rolecall.vendor.request.duration"),
    ] {
        assert!(
            metric_names.contains(&(service.to_string(), name.to_string())),
            "{service} did not export {name}: {metric_names:?}"
        );
    }

    // No e-mail (the user's, or any) and no secret anywhere in what left.
    for value in received.every_value() {
        assert!(
            !value.to_lowercase().contains(&email.to_lowercase()) && !value.contains('@'),
            "an e-mail in an exported attribute: {value}"
        );
        assert!(
            !value.contains(rolecall_tests::SIM_KEY),
            "a secret in an exported attribute: {value}"
        );
    }
    env.cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_serve_is_ready_once_connected_and_reports_queue_depths_on_metrics() {
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
        if depth {
            assert!(
                body.contains(r#"service_name="rolecall-scheduler""#),
                "{body}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no queue depth on /metrics:\n{body}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(server);
    env.cleanup(&settings).await;
}

/// A TCP proxy in front of RabbitMQ that a test can cut: the worker behind
/// it loses its AMQP connection as in a network failure, while the shared
/// broker (and every other test) goes on undisturbed.
struct CuttableProxy {
    addr: SocketAddr,
    open: Arc<std::sync::atomic::AtomicBool>,
    links: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl CuttableProxy {
    async fn start(upstream: String) -> CuttableProxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let accept = {
            let (open, links) = (open.clone(), links.clone());
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !open.load(Ordering::SeqCst) {
                        continue; // dropped: connection refused, in effect
                    }
                    let upstream = upstream.clone();
                    links.lock().unwrap().push(tokio::spawn(async move {
                        if let Ok(mut out) = tokio::net::TcpStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                        }
                    }));
                }
            })
        };
        CuttableProxy {
            addr,
            open,
            links,
            accept,
        }
    }

    /// Closes every proxied connection and refuses new ones.
    fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    /// Accepts connections again.
    fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_goes_unready_when_the_rabbitmq_connection_is_lost_and_ready_after_reconnecting() {
    let env = TestEnv::new().await;
    let sim = sim(5, 4).await;
    let apps = app(&sim);
    let text = env.config_text(&apps, "");
    let settings = env.settings(&apps);
    let broker = reqwest::Url::parse(&rolecall_tests::amqp_url()).unwrap();
    let upstream = format!(
        "{}:{}",
        broker.host_str().unwrap(),
        broker.port().unwrap_or(5672)
    );
    let proxy = CuttableProxy::start(upstream).await;
    let mut via_proxy = broker.clone();
    via_proxy.set_port(Some(proxy.addr.port())).unwrap();
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
