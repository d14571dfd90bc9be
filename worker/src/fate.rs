//! A failed job's fate, in one place: a later attempt (a delay queue), a
//! parked wait (quota, a refused credential), or a final failure (alerted,
//! dead-lettered, recorded) — and every alert a job raises.
//!
//! Horizons have one owner each: seconds belong to the pipeline's in-process
//! retries and the vendor client's quota waits; minutes to the broker's
//! delay queues; hours to the age caps here (`max_throttle_age`,
//! `max_auth_park`), after which a job fails with one alert per SaaS app.

use std::time::Duration;

use chrono::Utc;
use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable};
use rolecall_common::amqp::{self, AmqpError};
use rolecall_common::ledger::{Finding, Seen};
use rolecall_common::messages::{
    ATTEMPT_HEADER, AlertKind, AlertV1, ERROR_HEADER, JobV1, PARKED_SINCE_HEADER,
    THROTTLED_SINCE_HEADER,
};
use tracing::{debug, info, warn};

use crate::connectors::ConnectorError;
use crate::error::ErrorClass;
use crate::job::{App, JobContext, JobOutcome};
use crate::vendor::Notice;

/// Infrastructure trouble while settling a job: the delivery goes back.
#[derive(Debug, thiserror::Error)]
pub enum InfraError {
    /// RabbitMQ refused or lost a publish.
    #[error(transparent)]
    Amqp(#[from] AmqpError),
}

/// What a failed call becomes.
pub enum Fate {
    /// Waiting in a delay queue for another attempt.
    Later(JobOutcome),
    /// Failed for good; the finding is to be recorded.
    Failed(Finding),
}

impl JobContext {
    /// Decides what a failed call becomes: a later attempt (the job is
    /// already in a delay queue) or a final failure (alerted and
    /// dead-lettered, to be recorded by the caller).
    pub(crate) async fn on_failure(
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
        let now_ms = now_ms();
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
                self.metrics.deferred(saas, "quota");
            } else {
                self.metrics.retried(saas);
            }
            let next = if throttled { attempt } else { attempt + 1 };
            let mut headers = vec![(ATTEMPT_HEADER, AMQPValue::LongUInt(next))];
            if throttled {
                headers.push((
                    THROTTLED_SINCE_HEADER,
                    AMQPValue::LongLongInt(throttled_since as i64),
                ));
            }
            self.republish(saas, delivery, delay, headers).await?;
            debug!(saas = %saas, job_id = %job.job_id, attempt = next, delay_ms = delay.as_millis() as u64, error = %error, "Job deferred to a delay queue.");
            return Ok(Fate::Later(JobOutcome::Retrying {
                attempt: next,
                delay,
            }));
        }
        let (kind, final_class) = match class {
            _ if throttled_out => (AlertKind::ThrottledOut, "throttled_out"),
            ErrorClass::Auth => (AlertKind::AuthFailed, "auth"),
            ErrorClass::Permanent => (AlertKind::JobFailed, "permanent"),
            ErrorClass::Transient | ErrorClass::Throttled(_) | ErrorClass::Unavailable => {
                (AlertKind::VendorUnavailable, "exhausted")
            }
        };
        let text = format!("{final_class}: {error}");
        let alert = if kind == AlertKind::ThrottledOut {
            // One per SaaS app and quiet period, not one per job.
            self.claim_alert(&format!("throttled_out:{saas}"))
                .await
                .then(|| {
                    AlertV1::about_app(
                        kind,
                        saas,
                        &job.run_id,
                        &now_ms.to_string(),
                        format!(
                            "jobs of {saas} waited for quota longer than worker.max_throttle_age_s and failed: {error}"
                        ),
                    )
                })
        } else {
            Some(AlertV1::about_job(kind, job, text.clone(), attempt + 1))
        };
        Ok(Fate::Failed(
            self.fail(saas, job, delivery, final_class, error, alert)
                .await?,
        ))
    }

    /// Parks a job while its SaaS app's credential is refused. It waits in a
    /// delay queue no longer than the next probe, so it is back soon after
    /// the credential works again; after `max_auth_park` in all it fails,
    /// with one alert per incident.
    pub(crate) async fn park(
        &self,
        app: &App,
        job: &JobV1,
        delivery: &Delivery,
        incident: &str,
        next_probe_in: Duration,
    ) -> Result<Fate, InfraError> {
        let saas = &app.settings.name;
        let now_ms = now_ms();
        let since = amqp::header_u64(&delivery.properties, PARKED_SINCE_HEADER).unwrap_or(now_ms);
        if Duration::from_millis(now_ms.saturating_sub(since)) > self.max_auth_park {
            let error = ConnectorError::Unauthorized {
                status: 401,
                detail: format!(
                    ", the credential stayed refused for over {}",
                    humantime::format_duration(self.max_auth_park)
                ),
            };
            let alert = self
                .claim_alert(&format!("auth_expired:{saas}:{incident}"))
                .await
                .then(|| {
                    AlertV1::about_app(
                        AlertKind::AuthFailed,
                        saas,
                        &job.run_id,
                        &format!("{incident}:expired"),
                        format!(
                            "{saas}: parked jobs now fail: the vendor refused credential `{}` for longer than worker.max_auth_park_s ({}). Each failed job is in the dead-letter queue; once the credential is fixed, `rolecall-worker dlq replay --saas {saas} --reason auth` checks them again.",
                            app.settings.credential,
                            humantime::format_duration(self.max_auth_park)
                        ),
                    )
                });
            let finding = self
                .fail(saas, job, delivery, "auth", &error, alert)
                .await?;
            return Ok(Fate::Failed(finding));
        }
        let smallest = self
            .defer_delays
            .first()
            .copied()
            .unwrap_or(Duration::from_secs(1));
        let delay = self
            .defer_delays
            .iter()
            .copied()
            .filter(|d| *d <= next_probe_in.max(smallest))
            .max()
            .unwrap_or(smallest);
        let attempt = amqp::header_u32(&delivery.properties, ATTEMPT_HEADER).unwrap_or(0);
        self.republish(
            saas,
            delivery,
            delay,
            vec![
                (ATTEMPT_HEADER, AMQPValue::LongUInt(attempt)),
                (PARKED_SINCE_HEADER, AMQPValue::LongLongInt(since as i64)),
            ],
        )
        .await?;
        app.metrics.record_deferred();
        self.metrics.deferred(saas, "auth");
        debug!(saas = %saas, job_id = %job.job_id, delay_ms = delay.as_millis() as u64, "Job parked while the credential is refused.");
        Ok(Fate::Later(JobOutcome::Parked))
    }

    /// Tells admins, once for the fleet, that a credential incident began.
    pub(crate) async fn announce_incident(
        &self,
        app: &App,
        job: &JobV1,
        incident: &str,
        error: &ConnectorError,
    ) -> Result<(), InfraError> {
        let saas = &app.settings.name;
        warn!(saas = %saas, incident, error = %error, "The vendor refused the credential; parking this SaaS app's jobs and probing.");
        let alert = AlertV1::about_app(
            AlertKind::AuthFailed,
            saas,
            &job.run_id,
            incident,
            format!(
                "{saas}: {error}. Check credential `{}`: its jobs are parked and checked again as soon as it works (they fail after worker.max_auth_park_s, {}).",
                app.settings.credential,
                humantime::format_duration(self.max_auth_park)
            ),
        );
        amqp::publish_alert(&self.publisher, &self.names, &alert).await?;
        Ok(())
    }

    /// Tells admins, once for the fleet, that a credential incident ended.
    pub(crate) async fn announce_recovery(
        &self,
        app: &App,
        job: &JobV1,
        incident: &str,
    ) -> Result<(), InfraError> {
        let saas = &app.settings.name;
        info!(saas = %saas, incident, "The vendor accepts the credential again; resuming.");
        let alert = AlertV1::about_app(
            AlertKind::AuthRecovered,
            saas,
            &job.run_id,
            incident,
            format!("{saas}: the vendor accepts the credential again; parked jobs resume"),
        );
        amqp::publish_alert(&self.publisher, &self.names, &alert).await?;
        Ok(())
    }

    /// Tells admins what the vendor client noticed while this job was sent.
    pub(crate) async fn publish_notices(&self, app: &App, job: &JobV1) -> Result<(), InfraError> {
        for notice in app.client.take_notices() {
            let Notice::PauseCapped { asked, applied } = notice;
            let saas = &app.settings.name;
            warn!(saas = %saas, asked_s = asked.as_secs(), applied_s = applied.as_secs(), "The vendor asked for a pause longer than rate.max_pause.");
            if self.claim_alert(&format!("pause_capped:{saas}")).await {
                let alert = AlertV1::about_app(
                    AlertKind::PauseCapped,
                    saas,
                    &job.run_id,
                    &now_ms().to_string(),
                    format!(
                        "the vendor asked the fleet to pause for {} s; paused for the maximum, {} s (rate.max_pause)",
                        asked.as_secs(),
                        applied.as_secs()
                    ),
                );
                amqp::publish_alert(&self.publisher, &self.names, &alert).await?;
            }
        }
        Ok(())
    }

    /// Announces a finished run (from the job that finished it, or from a
    /// redelivery of one whose announcement was lost).
    pub(crate) async fn announce_run_finished(&self, run_id: &str) -> Result<(), InfraError> {
        // Counters are a courtesy in the alert: Redis trouble must not lose it.
        let c = self.ledger.run(run_id).await.unwrap_or_default();
        info!(
            run_id,
            checked = c.outcomes(),
            not_found = c.not_found,
            failed = c.failed,
            "Run finished."
        );
        let alert = AlertV1::run_finished(
            run_id,
            format!(
                "run finished: {} users checked, {} found, {} inactive, {} not found, {} deactivated, {} failed",
                c.outcomes(),
                c.succeeded,
                c.inactive,
                c.not_found,
                c.deactivated,
                c.failed
            ),
        );
        amqp::publish_alert(&self.publisher, &self.names, &alert).await?;
        // If this mark is lost, a redelivery announces again: the alert's
        // id lets the notifier see it is the same one.
        if let Err(e) = self.ledger.mark_announced(run_id).await {
            warn!(run_id, error = %e, "Could not note that the run was announced.");
        }
        Ok(())
    }

    /// Settles a delivery whose job the done marker already knows: true
    /// when there is nothing left to do (a redelivery, or another
    /// inventory line's copy, which `seen` has just counted), announcing
    /// the run when counting the copy finished it, or when a redelivered
    /// job's run finished and its announcement was lost.
    pub(crate) async fn recorded_before(
        &self,
        job: &JobV1,
        seen: Seen,
    ) -> Result<bool, InfraError> {
        match seen {
            Seen::New => Ok(false),
            Seen::Redelivered => {
                debug!(job_id = %job.job_id, "Job already recorded; acknowledging the redelivery.");
                self.announce_if_lost(&job.run_id).await?;
                Ok(true)
            }
            Seen::Copy { run_finished } => {
                info!(job_id = %job.job_id, line = job.line, "The run's inventory lists this user again; counted once, not checked twice.");
                if run_finished {
                    self.announce_run_finished(&job.run_id).await?;
                }
                Ok(true)
            }
        }
    }

    /// Announces a finished run whose announcement was lost (the worker
    /// that finished it died between the ledger write and the publish).
    pub(crate) async fn announce_if_lost(&self, run_id: &str) -> Result<(), InfraError> {
        match self.ledger.run(run_id).await {
            Ok(run) if run.finished_at.is_some() && !run.announced => {
                info!(
                    run_id,
                    "A finished run was never announced; announcing it now."
                );
                self.announce_run_finished(run_id).await
            }
            _ => Ok(()),
        }
    }

    /// Sends an undecodable message to the dead-letter queue, with the reason.
    pub(crate) async fn dead_letter(
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
        self.metrics.dead_lettered(saas, "undecodable");
        Ok(JobOutcome::DeadLettered(reason.to_string()))
    }

    /// A final failure: alert (when given), dead letter, and the finding to record.
    async fn fail(
        &self,
        saas: &str,
        job: &JobV1,
        delivery: &Delivery,
        class: &str,
        error: &ConnectorError,
        alert: Option<AlertV1>,
    ) -> Result<Finding, InfraError> {
        warn!(saas = %saas, job_id = %job.job_id, user_id = %job.user.id, class, error = %error, "Job failed.");
        if let Some(alert) = alert {
            amqp::publish_alert(&self.publisher, &self.names, &alert).await?;
        }
        self.publish_dead_letter(saas, delivery, &format!("{class}: {error}"))
            .await?;
        self.metrics.dead_lettered(saas, class);
        Ok(Finding::Failed {
            class: class.into(),
            error: error.to_string(),
        })
    }

    /// Whether this worker is the one to send the alert deduplicated by
    /// `key`: a Redis marker for the quiet period makes it one alert for
    /// the whole fleet. If Redis cannot say, the alert is sent (a duplicate
    /// is better than silence).
    async fn claim_alert(&self, key: &str) -> bool {
        self.ledger
            .claim(&self.names.alerted_key(key), self.alert_quiet)
            .await
            .unwrap_or(true)
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

    /// Puts a copy of the delivery in the delay queue of `delay`.
    async fn republish(
        &self,
        saas: &str,
        delivery: &Delivery,
        delay: Duration,
        headers: Vec<(&str, AMQPValue)>,
    ) -> Result<(), InfraError> {
        let queue = self.names.retry_queue(saas, delay);
        let props = with_headers(delivery.properties.clone(), headers);
        amqp::publish_confirmed(&self.publisher, "", &queue, &delivery.data, props).await?;
        Ok(())
    }

    async fn publish_dead_letter(
        &self,
        saas: &str,
        delivery: &Delivery,
        reason: &str,
    ) -> Result<(), InfraError> {
        let props = with_headers(
            delivery.properties.clone(),
            vec![
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
}

fn now_ms() -> u64 {
    Utc::now().timestamp_millis().max(0) as u64
}

fn with_headers(props: BasicProperties, extra: Vec<(&str, AMQPValue)>) -> BasicProperties {
    let mut headers: FieldTable = props.headers().clone().unwrap_or_default();
    for (k, v) in extra {
        headers.insert(k.into(), v);
    }
    props.with_headers(headers)
}
