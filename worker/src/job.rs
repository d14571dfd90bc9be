//! Processing one delivery: decode, ask the vendor, record, settle.
//!
//! The delivery is acknowledged only after everything it caused is durable:
//! the ledger entry written, alerts and dead letters confirmed by the broker,
//! a retry copy confirmed in its delay queue. A crash anywhere before the ack
//! means a redelivery, and the ledger's per-job marker makes that harmless.

use std::sync::Arc;
use std::time::Duration;

use lapin::Channel;
use lapin::message::Delivery;
use rolecall_common::amqp;
use rolecall_common::config::SaasSettings;
use rolecall_common::ledger::{Finding, Ledger, Recorded};
use rolecall_common::messages::{ATTEMPT_HEADER, Action, JobV1};
use rolecall_common::names::Names;
use rolecall_common::telemetry::metrics::JobMetrics;
use rolecall_common::telemetry::{SPAN_TARGET, propagation};
use tower::ServiceExt;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::breaker::{Breaker, Gate};
use crate::connectors::{ConnectorError, Lookup, Reloadable, VendorRequest, VendorResponse};
use crate::error::ErrorClass;
use crate::fate::{Fate, InfraError};
use crate::metrics::VendorMetrics;
use crate::pipeline::VendorService;
use crate::vendor::VendorClient;

/// One SaaS app as a worker runs it.
pub struct App {
    /// Its configuration.
    pub settings: SaasSettings,
    /// Its connector inside the pipeline.
    pub service: VendorService,
    /// Its vendor client (for what it noticed while sending).
    pub client: VendorClient,
    /// Its connector, rebuilt with a re-read credential when probing.
    pub connector: Arc<Reloadable>,
    /// Its fleet-wide credential breaker.
    pub breaker: Breaker,
    /// Its vendor-call counters.
    pub metrics: Arc<VendorMetrics>,
}

/// How a delivery is to be settled with the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Done with (recorded, retried elsewhere, or dead-lettered).
    Ack,
    /// Could not be handled now (Redis or RabbitMQ trouble): give it back.
    Requeue,
}

/// What happened to a delivery, for logs and tests.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    /// Outcome recorded in the ledger, with what it was (`found`,
    /// `inactive`, `not_found`, `acted`, `failed`: the metrics' outcome).
    Recorded(Recorded, &'static str),
    /// Already recorded by an earlier delivery.
    Duplicate,
    /// Sent to a delay queue for a later attempt.
    Retrying {
        /// The attempt number it will come back with.
        attempt: u32,
        /// Its delay.
        delay: Duration,
    },
    /// Undecodable: sent to the dead-letter queue.
    DeadLettered(String),
    /// Parked while the SaaS app's credential is refused.
    Parked,
    /// Could not be handled now; requeued.
    Requeued(String),
}

/// What came of calling the vendor for a job.
enum Called {
    /// The vendor's answer, or why there is none.
    Answered(Result<VendorResponse, ConnectorError>),
    /// While the call waited for Redis, another delivery of the job (a
    /// re-driven copy) was recorded: nothing to call the vendor for.
    RecordedMeanwhile,
}

/// What every job handler shares.
pub struct JobContext {
    /// Queue and key names.
    pub names: Names,
    /// The run ledger.
    pub ledger: Ledger,
    /// A channel with publisher confirms, for retries, dead letters and alerts.
    pub publisher: Channel,
    /// Broker-side retry delays.
    pub retry_delays: Vec<Duration>,
    /// How long alerts about a SaaS app (not a user) stay quiet after one
    /// is sent, fleet-wide.
    pub alert_quiet: Duration,
    /// Delay queues for jobs waiting for quota or a credential.
    pub defer_delays: Vec<Duration>,
    /// How long a job may wait for quota in all before it fails.
    pub max_throttle_age: Duration,
    /// How long a job may stay parked behind a refused credential.
    pub max_auth_park: Duration,
    /// Cancels in-flight jobs (their session ended): every wait ends, and
    /// the delivery is left to the broker.
    pub stop: tokio_util::sync::CancellationToken,
    /// Job counts, durations and seats, for `/metrics` and OTLP.
    pub metrics: JobMetrics,
    /// Where deactivations are written back (`None`: nowhere, event only).
    pub write_back: Option<Arc<crate::writeback::WriteBack>>,
}

impl JobOutcome {
    /// The outcome label of `rolecall.jobs.processed`.
    pub fn label(&self) -> &'static str {
        match self {
            JobOutcome::Recorded(r, _) if r.duplicate => "duplicate",
            JobOutcome::Recorded(_, what) => what,
            JobOutcome::Duplicate => "duplicate",
            JobOutcome::Retrying { .. } => "retrying",
            JobOutcome::DeadLettered(_) => "dead_lettered",
            JobOutcome::Parked => "parked",
            JobOutcome::Requeued(_) => "requeued",
        }
    }
}

/// The process span of one delivery: a child of the publish span whose
/// context the message carries, with the messaging semantic conventions'
/// attributes. Ids only, never the user's e-mail.
fn process_span(names: &Names, saas: &str, delivery: &Delivery) -> tracing::Span {
    let span = info_span!(
        target: SPAN_TARGET,
        parent: None,
        "process",
        otel.name = tracing::field::Empty,
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        "messaging.system" = "rabbitmq",
        "messaging.destination.name" = %names.jobs_queue(saas),
        "messaging.operation.type" = "process",
        "messaging.operation.name" = "process",
        "messaging.message.id" = tracing::field::Empty,
        "messaging.rabbitmq.destination.routing_key" = %delivery.routing_key,
        "rolecall.saas" = saas,
        "rolecall.job_id" = tracing::field::Empty,
        "rolecall.run_id" = tracing::field::Empty,
        "rolecall.user_id" = tracing::field::Empty,
        "rolecall.delivery_attempt" = tracing::field::Empty,
        "rolecall.outcome" = tracing::field::Empty,
    );
    if span.is_disabled() {
        return span;
    }
    span.record("otel.name", format!("process {}", names.jobs_queue(saas)));
    if let Some(id) = delivery.properties.message_id() {
        span.record("messaging.message.id", id.as_str());
    }
    if let Some(attempt) = amqp::header_u32(&delivery.properties, ATTEMPT_HEADER) {
        span.record("rolecall.delivery_attempt", attempt);
    }
    propagation::set_parent(&span, &delivery.properties);
    span
}

impl JobContext {
    /// Handles one delivery and settles it with the broker.
    pub async fn handle(&self, app: &App, delivery: Delivery) -> JobOutcome {
        let saas = &app.settings.name;
        let span = process_span(&self.names, saas, &delivery);
        let _in_flight = self.metrics.start(saas);
        let started = std::time::Instant::now();
        let outcome = self
            .handle_settled(app, delivery)
            .instrument(span.clone())
            .await;
        let label = outcome.label();
        self.metrics.processed(saas, label, started.elapsed());
        span.record("rolecall.outcome", label);
        if matches!(
            outcome,
            JobOutcome::Recorded(_, "failed") | JobOutcome::DeadLettered(_)
        ) {
            span.record("otel.status_code", "ERROR");
        }
        outcome
    }

    async fn handle_settled(&self, app: &App, delivery: Delivery) -> JobOutcome {
        let processed = tokio::select! {
            processed = self.process(app, &delivery) => processed,
            _ = self.stop.cancelled() => {
                // Left unacked: the broker redelivers it to a live worker.
                debug!(saas = %app.settings.name, "Job abandoned: its session ended.");
                return JobOutcome::Requeued("the worker's session ended".into());
            }
        };
        let outcome = match processed {
            Ok(outcome) => outcome,
            Err(e) => {
                warn!(saas = %app.settings.name, error = %e, "Job could not be handled; requeueing it.");
                // Do not spin on a broken dependency: the message comes straight back.
                tokio::time::sleep(Duration::from_secs(1)).await;
                JobOutcome::Requeued(e.to_string())
            }
        };
        let settle = match outcome {
            JobOutcome::Requeued(_) => Settle::Requeue,
            _ => Settle::Ack,
        };
        let result = match settle {
            Settle::Ack => delivery.acker.ack(Default::default()).await,
            Settle::Requeue => {
                delivery
                    .acker
                    .nack(lapin::options::BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await
            }
        };
        if let Err(e) = result {
            // The channel is gone; the broker requeues the delivery itself.
            warn!(error = %e, "Could not settle a delivery; the broker will redeliver it.");
        }
        outcome
    }

    async fn process(&self, app: &App, delivery: &Delivery) -> Result<JobOutcome, InfraError> {
        let saas = &app.settings.name;
        let job = match JobV1::decode(&delivery.data) {
            Ok(job) if job.saas == *saas => job,
            Ok(job) => {
                let reason = format!(
                    "job for SaaS app `{}` arrived on the queue of `{saas}`",
                    job.saas
                );
                return self.dead_letter(saas, delivery, &reason).await;
            }
            Err(e) => return self.dead_letter(saas, delivery, &e.to_string()).await,
        };
        let span = tracing::Span::current();
        span.record("rolecall.job_id", job.job_id.as_str());
        span.record("rolecall.run_id", job.run_id.as_str());
        span.record("rolecall.user_id", job.user.id.as_str());
        if self.already_recorded(app, &job).await? {
            return Ok(JobOutcome::Duplicate);
        }
        // A refused credential is an incident for the whole SaaS app: while
        // it lasts, jobs wait for the probe instead of calling the vendor.
        let Some(gate) = self.gate(app, &job).await? else {
            return Ok(JobOutcome::Duplicate);
        };
        let probing = match gate {
            Gate::Closed => None,
            Gate::Probe { incident } => {
                if let Err(e) = app.connector.reload().await {
                    warn!(saas = %saas, error = %e, "Could not read the credential again; probing with the one in use.");
                }
                Some(incident)
            }
            Gate::Open {
                incident,
                next_probe_in,
                ..
            } => {
                return Ok(
                    match self
                        .park(app, &job, delivery, &incident, next_probe_in)
                        .await?
                    {
                        Fate::Later(outcome) => outcome,
                        Fate::Failed(finding) => self.record(app, &job, finding).await?,
                    },
                );
            }
        };
        let attempt = amqp::header_u32(&delivery.properties, ATTEMPT_HEADER).unwrap_or(0);
        let request = VendorRequest {
            action: job.action,
            user: job.user.clone(),
            attributes: job.attributes.clone(),
        };
        // Changes at a vendor happen only where the configuration allows them.
        let enabled =
            job.action == Action::LookupRole || app.settings.actions.contains(&job.action);
        let result = if enabled {
            match self.call_vendor(app, &job, request).await? {
                Called::Answered(result) => result,
                Called::RecordedMeanwhile => {
                    // A probe with no verdict: another job may probe at once.
                    if probing.is_some() {
                        let _ = app.breaker.release_probe().await;
                    }
                    return Ok(JobOutcome::Duplicate);
                }
            }
        } else {
            Err(ConnectorError::NotEnabled(job.action.as_str()))
        };
        self.publish_notices(app, &job).await?;
        if let Some(parked) = self
            .settle_breaker(app, &job, delivery, probing, &result)
            .await?
        {
            return Ok(parked);
        }
        let finding = match result {
            Ok(VendorResponse::Done(done)) => Finding::Acted {
                action: job.action.as_str().to_string(),
                detail: done.detail,
                vendor_user_id: done.vendor_id,
            },
            Ok(VendorResponse::Lookup(Lookup::Found(user))) => {
                let (mapping, known) = app.settings.map_role(&user.raw_role);
                if !known {
                    debug!(saas = %saas, role = %user.raw_role, "Vendor role is not in the role map; using the default.");
                }
                let copy = crate::audit::audit_copy(&user.raw);
                while let Err(e) = self.ledger.save_audit(saas, &job.user.id, &copy).await {
                    self.hold_for_redis(app, &e.to_string()).await;
                }
                Finding::Found {
                    raw_role: user.raw_role.clone(),
                    vendor_roles: user.vendor_roles.clone(),
                    role: mapping.role.clone(),
                    seat_price: mapping.seat_price,
                    role_known: known,
                    vendor_user_id: user.vendor_id,
                    active: user.active,
                }
            }
            Ok(VendorResponse::Lookup(Lookup::NotFound)) => Finding::NotFound,
            Err(e) => match self.on_failure(app, &job, delivery, attempt, &e).await? {
                Fate::Failed(finding) => finding,
                Fate::Later(retrying) => return Ok(retrying),
            },
        };
        // The write-back comes before the record: a failed one retries the
        // job through the delay queues, which a recorded job would skip.
        let deactivates = matches!(
            finding,
            Finding::NotFound | Finding::Found { active: false, .. }
        );
        if job.deactivate_missing
            && deactivates
            && let Some(write_back) = &self.write_back
            && let Err(e) = write_back
                .deactivated(&self.ledger.connection(), &job)
                .await
        {
            warn!(saas = %saas, user_id = %job.user.id, error = %e, "Writing the deactivation back failed.");
            return match self.on_failure(app, &job, delivery, attempt, &e).await? {
                Fate::Failed(finding) => self.record(app, &job, finding).await,
                Fate::Later(retrying) => Ok(retrying),
            };
        }
        self.record(app, &job, finding).await
    }

    /// Records the finding (holding the job while Redis is away) and
    /// announces the run when this job finished it.
    async fn record(
        &self,
        app: &App,
        job: &JobV1,
        finding: Finding,
    ) -> Result<JobOutcome, InfraError> {
        let recorded = loop {
            match self.ledger.record(job, &finding).await {
                Ok(recorded) => break recorded,
                Err(e) => self.hold_for_redis(app, &e.to_string()).await,
            }
        };
        let what = match &finding {
            Finding::Found { active: true, .. } => "found",
            Finding::Found { .. } => "inactive",
            Finding::NotFound => "not_found",
            Finding::Acted { .. } => "acted",
            Finding::Failed { .. } => "failed",
        };
        if recorded.run_finished {
            self.announce_run_finished(&job.run_id).await?;
        } else if recorded.duplicate {
            // Recorded already: maybe by this very call, retried after a
            // lost reply, whose first answer said it finished the run (the
            // notifier keeps one digest per run, so a second is harmless).
            self.announce_if_lost(&job.run_id).await?;
        }
        Ok(JobOutcome::Recorded(recorded, what))
    }

    /// The breaker's word for this job, holding it while Redis is away.
    /// `None` when the job was recorded during a hold: like a call held for
    /// the limiter (`call_vendor`), a job held here may have been re-driven
    /// to a worker that reached Redis and checked its user meanwhile.
    async fn gate(&self, app: &App, job: &JobV1) -> Result<Option<Gate>, InfraError> {
        loop {
            match app.breaker.gate().await {
                Ok(gate) => return Ok(Some(gate)),
                Err(e) => {
                    self.hold_for_redis(app, &e.to_string()).await;
                    if self.already_recorded(app, job).await? {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Moves the breaker on what the vendor said: a refused credential
    /// opens it (one alert per incident) and parks the job; a probe that
    /// got an answer closes it (one recovery alert). Returns the outcome
    /// when the job was parked.
    async fn settle_breaker(
        &self,
        app: &App,
        job: &JobV1,
        delivery: &Delivery,
        probing: Option<String>,
        result: &Result<VendorResponse, ConnectorError>,
    ) -> Result<Option<JobOutcome>, InfraError> {
        match result {
            Err(e) if e.class() == ErrorClass::Auth => {
                let (newly, incident) = loop {
                    match app.breaker.trip().await {
                        Ok(tripped) => break tripped,
                        Err(err) => self.hold_for_redis(app, &err.to_string()).await,
                    }
                };
                if newly {
                    self.announce_incident(app, job, &incident, e).await?;
                }
                let next = self
                    .defer_delays
                    .first()
                    .copied()
                    .unwrap_or(Duration::from_secs(1));
                Ok(Some(
                    match self.park(app, job, delivery, &incident, next).await? {
                        Fate::Later(outcome) => outcome,
                        Fate::Failed(finding) => self.record(app, job, finding).await?,
                    },
                ))
            }
            // The vendor answered with the credential: the incident is over.
            _ if probing.is_some() && vendor_answered(result) => {
                if let Ok(Some(incident)) = app.breaker.close().await {
                    self.announce_recovery(app, job, &incident).await?;
                }
                Ok(None)
            }
            _ => {
                if probing.is_some() {
                    // No word on the credential (a timeout, a 5xx): let the
                    // next job probe.
                    let _ = app.breaker.release_probe().await;
                }
                Ok(None)
            }
        }
    }

    /// Calls the vendor through the pipeline. Never without the fleet's
    /// limit: while the limiter cannot answer, the delivery is held (the
    /// broker sends no more past the prefetch) until it can.
    ///
    /// A held delivery is unacked, not ready, so while it waits the leader
    /// may see the run's jobs as gone and re-drive them, and another worker
    /// may record this user: the ledger is asked again after every hold,
    /// so the vendor is not called twice for one user.
    async fn call_vendor(
        &self,
        app: &App,
        job: &JobV1,
        request: VendorRequest,
    ) -> Result<Called, InfraError> {
        loop {
            match app.service.clone().oneshot(request.clone()).await {
                Err(e) if e.class() == ErrorClass::Unavailable => {
                    self.hold_for_redis(app, &e.to_string()).await;
                    if self.already_recorded(app, job).await? {
                        return Ok(Called::RecordedMeanwhile);
                    }
                }
                other => return Ok(Called::Answered(other)),
            }
        }
    }

    /// Whether the job's outcome is recorded already (a redelivery, or the
    /// copy of another inventory line, counted now); asks until Redis answers.
    async fn already_recorded(&self, app: &App, job: &JobV1) -> Result<bool, InfraError> {
        let seen = loop {
            match self.ledger.seen(job).await {
                Ok(seen) => break seen,
                Err(e) => self.hold_for_redis(app, &e.to_string()).await,
            }
        };
        self.recorded_before(job, seen).await
    }

    /// Waits until Redis answers again. Holding the delivery (rather than
    /// requeueing it) neither loses the job nor spends its delivery limit,
    /// and the full prefetch window stops the broker sending more.
    pub(crate) async fn hold_for_redis(&self, app: &App, error: &str) {
        app.metrics.record_held();
        warn!(saas = %app.settings.name, error, "Redis does not answer; holding this job until it does.");
        let mut wait = Duration::from_millis(200);
        loop {
            tokio::time::sleep(wait).await;
            if self.ledger.ping().await.is_ok() {
                info!(saas = %app.settings.name, "Redis answers again; resuming.");
                return;
            }
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }
}

/// Whether the vendor gave an answer that proves the credential works: a
/// result, or an error other than a refusal, a timeout or a 5xx.
fn vendor_answered(result: &Result<VendorResponse, ConnectorError>) -> bool {
    match result {
        Ok(_) => true,
        Err(e) => matches!(e.class(), ErrorClass::Permanent),
    }
}
