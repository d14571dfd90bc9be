//! W3C trace context through AMQP headers, and the attribute names of
//! OpenTelemetry's messaging semantic conventions.
//!
//! The scheduler's publish span is injected into the job message's headers
//! (`traceparent`, `tracestate`); the worker extracts it and makes it the
//! parent of its process span, so one job is one trace across processes.
//! Copies of the message (retries, deferrals) keep the headers, so their
//! attempts join the same trace.

use std::sync::OnceLock;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracer;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::messages::JobV1;

/// The tracer of producer spans, set by `telemetry::init` when traces are
/// exported; unset, the publisher does no tracing work at all.
static PRODUCER: OnceLock<SdkTracer> = OnceLock::new();

pub(crate) fn set_producer_tracer(tracer: SdkTracer) {
    let _ = PRODUCER.set(tracer);
}

/// `messaging.system`.
pub const MESSAGING_SYSTEM: &str = "messaging.system";
/// `messaging.destination.name`: the exchange published to, or the queue consumed.
pub const MESSAGING_DESTINATION: &str = "messaging.destination.name";
/// `messaging.operation.type`: `send` or `process`.
pub const MESSAGING_OPERATION_TYPE: &str = "messaging.operation.type";
/// `messaging.operation.name`: `publish` or `process`.
pub const MESSAGING_OPERATION_NAME: &str = "messaging.operation.name";
/// `messaging.message.id`: the job id (the AMQP `message_id`).
pub const MESSAGING_MESSAGE_ID: &str = "messaging.message.id";
/// `messaging.rabbitmq.destination.routing_key`: the SaaS app.
pub const MESSAGING_ROUTING_KEY: &str = "messaging.rabbitmq.destination.routing_key";

/// The producer span of one published job; ends when dropped (the
/// publisher drops it at the broker's confirm).
pub struct PublishSpan(opentelemetry_sdk::trace::Span);

impl PublishSpan {
    /// Marks the publish failed (a nack, a return, a broken channel).
    pub fn failed(&mut self) {
        self.0
            .set_status(Status::error("not confirmed by the broker"));
    }
}

/// Starts the producer span of `job`, published to `exchange`, and puts
/// its context in the message's headers; `None` (and `props` untouched,
/// at the cost of one atomic load) when traces are not exported.
///
/// The span is made with the OpenTelemetry API, not through `tracing`: a
/// run publishes tens of thousands of jobs a second, and this way a
/// sampler (`OTEL_TRACES_SAMPLER=parentbased_traceidratio`) makes an
/// unsampled job cost little more than its ids. Workers follow the
/// sampling decision the `traceparent` carries.
pub fn start_publish(
    exchange: &str,
    job: &JobV1,
    props: BasicProperties,
) -> (BasicProperties, Option<PublishSpan>) {
    let Some(tracer) = PRODUCER.get() else {
        return (props, None);
    };
    // Name and attributes only for a span the sampler keeps: an unsampled
    // job then costs its ids and its header, no allocation for attributes.
    let mut span = tracer
        .span_builder("publish")
        .with_kind(SpanKind::Producer)
        .start(tracer);
    if span.is_recording() {
        span.update_name(format!("publish {exchange}"));
        span.set_attributes([
            KeyValue::new(MESSAGING_SYSTEM, "rabbitmq"),
            KeyValue::new(MESSAGING_DESTINATION, exchange.to_string()),
            KeyValue::new(MESSAGING_OPERATION_TYPE, "send"),
            KeyValue::new(MESSAGING_OPERATION_NAME, "publish"),
            KeyValue::new(MESSAGING_MESSAGE_ID, job.job_id.clone()),
            KeyValue::new(MESSAGING_ROUTING_KEY, job.saas.clone()),
            KeyValue::new("rolecall.saas", job.saas.clone()),
            KeyValue::new("rolecall.job_id", job.job_id.clone()),
            KeyValue::new("rolecall.run_id", job.run_id.clone()),
            KeyValue::new("rolecall.user_id", job.user.id.clone()),
        ]);
    }
    let cx = Context::new().with_remote_span_context(span.span_context().clone());
    let mut headers = props.headers().clone().unwrap_or_default();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut HeaderInjector(&mut headers));
    });
    (props.with_headers(headers), Some(PublishSpan(span)))
}

/// Puts `span`'s context in `headers`; nothing when the span is disabled
/// (no OTLP export: the publish loop then pays nothing per job).
pub fn inject(span: &tracing::Span, headers: &mut FieldTable) {
    if span.is_disabled() {
        return;
    }
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut HeaderInjector(headers));
    });
}

/// The context a message's headers carry (empty when they carry none).
pub fn extract(props: &BasicProperties) -> Context {
    match props.headers() {
        Some(headers) => {
            opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
        }
        None => Context::new(),
    }
}

/// Makes the context in `props` the parent of `span` (when both exist).
pub fn set_parent(span: &tracing::Span, props: &BasicProperties) {
    if span.is_disabled() {
        return;
    }
    // An error means the span was already started with another parent,
    // which a fresh span never is.
    let _ = span.set_parent(extract(props));
}

struct HeaderInjector<'a>(&'a mut FieldTable);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0
            .insert(key.into(), AMQPValue::LongString(value.into()));
    }
}

struct HeaderExtractor<'a>(&'a FieldTable);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0.inner().get(key)? {
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
            AMQPValue::ShortString(s) => Some(s.as_str()),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.inner().keys().map(|k| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry_sdk::propagation::TraceContextPropagator;

    #[test]
    fn a_context_survives_the_trip_through_amqp_headers() {
        let sc = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let cx = Context::new().with_remote_span_context(sc.clone());
        let p = TraceContextPropagator::new();
        let mut headers = FieldTable::default();
        p.inject_context(&cx, &mut HeaderInjector(&mut headers));
        let AMQPValue::LongString(tp) = &headers.inner()["traceparent"] else {
            panic!("traceparent is a long string");
        };
        assert_eq!(
            tp.to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let back = p.extract(&HeaderExtractor(&headers));
        assert_eq!(back.span().span_context().trace_id(), sc.trace_id());
        assert_eq!(back.span().span_context().span_id(), sc.span_id());
    }

    #[test]
    fn a_disabled_span_adds_no_header() {
        let mut headers = FieldTable::default();
        inject(&tracing::Span::none(), &mut headers);
        assert!(headers.inner().is_empty());
    }
}
