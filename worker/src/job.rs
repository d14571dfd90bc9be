//! Processing one delivery: decode, ask the vendor, record, settle.
//!
//! The delivery is acknowledged only after everything it caused is durable:
//! the ledger entry written, alerts and dead letters confirmed by the broker,
//! a retry copy confirmed in its delay queue. A crash anywhere before the ack
//! means a redelivery, and the ledger's per-job marker makes that harmless.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use rolecall_common::amqp::{self, AmqpError};
use rolecall_common::config::SaasSettings;
use rolecall_common::ledger::{Finding, Ledger, Recorded};
use rolecall_common::messages::{
    ATTEMPT_HEADER, Action, AlertKind, AlertV1, ERROR_HEADER, JobV1, THROTTLED_SINCE_HEADER,
};
use rolecall_common::names::Names;
use tower::ServiceExt;
use tracing::{debug, info, warn};

use crate::connectors::{ConnectorError, Lookup, VendorRequest, VendorResponse};
use crate::error::ErrorClass;
use crate::metrics::VendorMetrics;
use crate::pipeline::VendorService;
use crate::vendor::{Notice, VendorClient};

/// One SaaS app as a worker runs it.
pub struct App {
    /// Its configuration.
    pub settings: SaasSettings,
    /// Its connector inside the pipeline.
    pub service: VendorService,
    /// Its vendor client (for what it noticed while sending).
    pub client: VendorClient,
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
    /// Outcome recorded in the ledger.
    Recorded(Recorded),
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
    /// Could not be handled now; requeued.
    Requeued(String),
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
    /// When an alert of a deduplicated kind was last sent per SaaS app:
    /// one alert, not thousands.
    pub auth_alerted: Mutex<HashMap<(AlertKind, String), Instant>>,
    /// How long such alerts for one SaaS app are suppressed after one is sent.
    pub auth_alert_quiet: Duration,
    /// Delay queues for jobs waiting for quota.
    pub defer_delays: Vec<Duration>,
    /// How long a job may wait for quota in all before it fails.
    pub max_throttle_age: Duration,
}

#[derive(Debug, thiserror::Error)]
enum InfraError {
    #[error(transparent)]
    Amqp(#[from] AmqpError),
}

impl JobContext {
    /// Handles one delivery and settles it with the broker.
    pub async fn handle(&self, app: &App, delivery: Delivery) -> JobOutcome {
        let outcome = match self.process(app, &delivery).await {
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
        let done = loop {
            match self.ledger.is_done(&job.job_id).await {
                Ok(done) => break done,
                Err(e) => self.hold_for_redis(app, &e.to_string()).await,
            }
        };
        if done {
            debug!(job_id = %job.job_id, "Job already recorded; acknowledging the redelivery.");
            return Ok(JobOutcome::Duplicate);
        }
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
            self.call_vendor(app, request).await
        } else {
            Err(ConnectorError::NotEnabled(job.action.as_str()))
        };
        self.publish_notices(app, &job).await?;
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
        let recorded = loop {
            match self.ledger.record(&job, &finding).await {
                Ok(recorded) => break recorded,
                Err(e) => self.hold_for_redis(app, &e.to_string()).await,
            }
        };
        if recorded.run_finished {
            self.announce_run_finished(&job.run_id).await?;
        }
        Ok(JobOutcome::Recorded(recorded))
    }

    /// Calls the vendor through the pipeline. Never without the fleet's
    /// limit: while the limiter cannot answer, the delivery is held (the
    /// broker sends no more past the prefetch) until it can.
    async fn call_vendor(
        &self,
        app: &App,
        request: VendorRequest,
    ) -> Result<VendorResponse, ConnectorError> {
        loop {
            match app.service.clone().oneshot(request.clone()).await {
                Err(e) if e.class() == ErrorClass::Unavailable => {
                    self.hold_for_redis(app, &e.to_string()).await
                }
                other => return other,
            }
        }
    }

    /// Waits until Redis answers again. Holding the delivery (rather than
    /// requeueing it) neither loses the job nor spends its delivery limit,
    /// and the full prefetch window stops the broker sending more.
    async fn hold_for_redis(&self, app: &App, error: &str) {
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

    /// Decides what a failed call becomes: a later attempt (the job is
    /// already in a delay queue) or a final failure (alerted and
    /// dead-lettered, to be recorded by the caller).
    async fn on_failure(
        &self,
        app: &App,
        job: &JobV1,
        delivery: &Delivery,
        attempt: u32,
        error: &ConnectorError,
    ) -> Result<Fate, InfraError> {
        let saas = &app.settings.name;
        let class = error.class();
        let retryable = matches!(class, ErrorClass::Transient | ErrorClass::Throttled(_));
        let throttled = matches!(class, ErrorClass::Throttled(_));
        let now_ms = Utc::now().timestamp_millis().max(0) as u64;
        let throttled_since = amqp::header_u64(&delivery.properties, THROTTLED_SINCE_HEADER)
            .filter(|_| throttled)
            .unwrap_or(now_ms);
        let throttled_out = throttled
            && Duration::from_millis(now_ms.saturating_sub(throttled_since))
                > self.max_throttle_age;
        // A throttle is waiting for quota, not a failure: it never uses up
        // the job's retries, until it has waited too long in all.
        if retryable
            && !throttled_out
            && (throttled || (attempt as usize) < self.retry_delays.len())
        {
            let delay = self.retry_delay(attempt, class);
            if throttled {
                app.metrics.record_deferred();
            }
            let next = next_attempt(attempt, class);
            let queue = self.names.retry_queue(saas, delay);
            let mut props = with_headers(
                delivery.properties.clone(),
                [(ATTEMPT_HEADER, AMQPValue::LongUInt(next))],
            );
            if throttled {
                props = with_headers(
                    props,
                    [(
                        THROTTLED_SINCE_HEADER,
                        AMQPValue::LongLongInt(throttled_since as i64),
                    )],
                );
            }
            amqp::publish_confirmed(&self.publisher, "", &queue, &delivery.data, props).await?;
            debug!(saas = %saas, job_id = %job.job_id, attempt = next, delay_ms = delay.as_millis() as u64, error = %error, "Job deferred to a delay queue.");
            return Ok(Fate::Later(JobOutcome::Retrying {
                attempt: next,
                delay,
            }));
        }
        let (alert_kind, final_class) = match class {
            _ if throttled_out => (AlertKind::ThrottledOut, "throttled_out"),
            ErrorClass::Auth => (AlertKind::AuthFailed, "auth"),
            ErrorClass::Permanent => (AlertKind::JobFailed, "permanent"),
            ErrorClass::Transient | ErrorClass::Throttled(_) | ErrorClass::Unavailable => {
                (AlertKind::VendorUnavailable, "exhausted")
            }
        };
        let attempts = attempt + 1;
        let text = format!("{final_class}: {error}");
        warn!(saas = %saas, job_id = %job.job_id, user_id = %job.user.id, attempts, error = %error, "Job failed.");
        if self.should_alert(alert_kind, saas) {
            let alert = AlertV1 {
                v: 1,
                kind: alert_kind,
                saas: saas.clone(),
                run_id: job.run_id.clone(),
                user: Some(job.user.clone()),
                error: text.clone(),
                attempts,
                at: Utc::now(),
            };
            amqp::publish_alert(&self.publisher, &self.names, &alert).await?;
        }
        self.publish_dead_letter(saas, delivery, &text).await?;
        Ok(Fate::Failed(Finding::Failed {
            class: final_class.into(),
            error: error.to_string(),
        }))
    }

    fn retry_delay(&self, attempt: u32, class: ErrorClass) -> Duration {
        let fallback = Duration::from_secs(1);
        match class {
            // The shortest defer queue that covers the wait for quota.
            ErrorClass::Throttled(Some(wait)) => self
                .defer_delays
                .iter()
                .copied()
                .find(|d| *d >= wait)
                .or_else(|| self.defer_delays.iter().copied().max())
                .unwrap_or(fallback),
            ErrorClass::Throttled(None) => self.defer_delays.first().copied().unwrap_or(fallback),
            _ => self
                .retry_delays
                .get(attempt as usize)
                .or(self.retry_delays.last())
                .copied()
                .unwrap_or(fallback),
        }
    }

    /// Whether to send an alert of `kind`: kinds that describe the SaaS app
    /// rather than one user (a refused credential, quota waits) are sent
    /// once per app per quiet period, not once per job.
    fn should_alert(&self, kind: AlertKind, saas: &str) -> bool {
        if !matches!(
            kind,
            AlertKind::AuthFailed | AlertKind::ThrottledOut | AlertKind::PauseCapped
        ) {
            return true;
        }
        let mut last = self
            .auth_alerted
            .lock()
            .expect("the lock is never poisoned");
        let now = Instant::now();
        let key = (kind, saas.to_string());
        match last.get(&key) {
            Some(at) if now.duration_since(*at) < self.auth_alert_quiet => false,
            _ => {
                last.insert(key, now);
                true
            }
        }
    }

    /// Tells admins what the vendor client noticed while this job was sent.
    async fn publish_notices(&self, app: &App, job: &JobV1) -> Result<(), InfraError> {
        for notice in app.client.take_notices() {
            let Notice::PauseCapped { asked, applied } = notice;
            let saas = &app.settings.name;
            warn!(saas = %saas, asked_s = asked.as_secs(), applied_s = applied.as_secs(), "The vendor asked for a pause longer than rate.max_pause.");
            if self.should_alert(AlertKind::PauseCapped, saas) {
                let alert = AlertV1 {
                    v: 1,
                    kind: AlertKind::PauseCapped,
                    saas: saas.clone(),
                    run_id: job.run_id.clone(),
                    user: None,
                    error: format!(
                        "the vendor asked the fleet to pause for {} s; paused for the maximum, {} s (rate.max_pause)",
                        asked.as_secs(),
                        applied.as_secs()
                    ),
                    attempts: 0,
                    at: Utc::now(),
                };
                amqp::publish_alert(&self.publisher, &self.names, &alert).await?;
            }
        }
        Ok(())
    }

    async fn dead_letter(
        &self,
        saas: &str,
        delivery: &Delivery,
        reason: &str,
    ) -> Result<JobOutcome, InfraError> {
        warn!(
            saas,
            reason, "Undecodable message sent to the dead-letter queue."
        );
        self.publish_dead_letter(saas, delivery, reason).await?;
        Ok(JobOutcome::DeadLettered(reason.to_string()))
    }

    async fn publish_dead_letter(
        &self,
        saas: &str,
        delivery: &Delivery,
        reason: &str,
    ) -> Result<(), InfraError> {
        let props = with_headers(
            delivery.properties.clone(),
            [
                (ERROR_HEADER, AMQPValue::LongString(reason.into())),
                (
                    "x-rolecall-original-queue",
                    AMQPValue::LongString(self.names.jobs_queue(saas).into()),
                ),
            ],
        );
        amqp::publish_confirmed(
            &self.publisher,
            &self.names.dead_exchange(),
            saas,
            &delivery.data,
            props,
        )
        .await?;
        Ok(())
    }

    async fn announce_run_finished(&self, run_id: &str) -> Result<(), InfraError> {
        // Counters are a courtesy in the alert: Redis trouble must not lose it.
        let c = self.ledger.run(run_id).await.unwrap_or_default();
        info!(
            run_id,
            checked = c.outcomes(),
            not_found = c.not_found,
            failed = c.failed,
            "Run finished."
        );
        let alert = AlertV1 {
            v: 1,
            kind: AlertKind::RunFinished,
            saas: String::new(),
            run_id: run_id.to_string(),
            user: None,
            error: format!(
                "run finished: {} users checked, {} found, {} inactive, {} not found, {} deactivated, {} failed",
                c.outcomes(),
                c.succeeded,
                c.inactive,
                c.not_found,
                c.deactivated,
                c.failed
            ),
            attempts: 0,
            at: Utc::now(),
        };
        amqp::publish_alert(&self.publisher, &self.names, &alert).await?;
        Ok(())
    }
}

/// What a failed call becomes.
enum Fate {
    /// Waiting in a delay queue for another attempt.
    Later(JobOutcome),
    /// Failed for good; the finding is to be recorded.
    Failed(Finding),
}

fn next_attempt(attempt: u32, class: ErrorClass) -> u32 {
    if matches!(class, ErrorClass::Throttled(_)) {
        attempt
    } else {
        attempt + 1
    }
}

fn with_headers<const N: usize>(
    props: BasicProperties,
    extra: [(&str, AMQPValue); N],
) -> BasicProperties {
    let mut headers: FieldTable = props.headers().clone().unwrap_or_default();
    for (k, v) in extra {
        headers.insert(k.into(), v);
    }
    props.with_headers(headers)
}
