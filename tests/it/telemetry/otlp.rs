//! A real OTLP receiver (the protocol's gRPC service, and OTLP/HTTP
//! protobuf) gets one job's spans from the scheduler and worker processes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

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

use super::*;

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
    /// `(service.name, metric name)` of every metric data point batch
    /// received, and `service.instance.id` of each (which tells replicas
    /// of one service apart).
    fn metric_names(&self) -> (Vec<(String, String)>, Vec<String>) {
        let (mut out, mut instances) = (Vec::new(), Vec::new());
        for request in self.metrics.lock().unwrap().iter() {
            for rm in &request.resource_metrics {
                let resource = rm
                    .resource
                    .as_ref()
                    .map(|r| attributes(&r.attributes))
                    .unwrap_or_default();
                let service = resource.get("service.name").cloned().unwrap_or_default();
                instances.push(
                    resource
                        .get("service.instance.id")
                        .cloned()
                        .unwrap_or_default(),
                );
                for m in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
                    out.push((service.clone(), m.name.clone()));
                }
            }
        }
        (out, instances)
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
    let (metric_names, instances) = received.metric_names();
    // Each process names its instance: replicas' series stay apart.
    assert!(
        !instances.is_empty() && instances.iter().all(|i| !i.is_empty()),
        "{instances:?}"
    );
    let distinct: std::collections::HashSet<_> = instances.iter().collect();
    assert!(
        distinct.len() >= 2,
        "scheduler and worker differ: {instances:?}"
    );
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
