//! Wire schemas: the job a scheduler publishes and the alert a worker raises.
//!
//! Both are versioned JSON (`"v": 1`). Consumers do not deny unknown fields,
//! so a producer can add a field before every consumer knows it. No credential
//! ever travels in a message: a worker resolves the SaaS app's credential
//! from its own vault by name.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The schema version this build writes and reads.
pub const JOB_VERSION: u8 = 1;

/// AMQP header carrying how many broker-side attempts a job has had.
pub const ATTEMPT_HEADER: &str = "x-rolecall-attempt";
/// AMQP header carrying why a message was dead-lettered by a worker.
pub const ERROR_HEADER: &str = "x-rolecall-error";

/// What a job asks the worker to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Find the user at the vendor and record their role.
    LookupRole,
    /// Deactivate the user at the vendor (Lever, SCIM `active=false`).
    DeactivateUser,
    /// Create the user at the vendor (Mosyle), from the job's attributes.
    CreateUser,
    /// Update the user at the vendor (Mosyle), from the job's attributes.
    UpdateUser,
}

impl Action {
    /// Actions that change something at the vendor; each SaaS app must enable them.
    pub const CHANGES: [Action; 3] = [
        Action::DeactivateUser,
        Action::CreateUser,
        Action::UpdateUser,
    ];

    /// The name used in jobs and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::LookupRole => "lookup_role",
            Action::DeactivateUser => "deactivate_user",
            Action::CreateUser => "create_user",
            Action::UpdateUser => "update_user",
        }
    }

    /// Parses a name (`deactivate_user` or `deactivate-user`).
    pub fn parse(name: &str) -> Option<Action> {
        let name = name.replace('-', "_");
        [Action::LookupRole]
            .into_iter()
            .chain(Action::CHANGES)
            .find(|a| a.as_str() == name)
    }
}

/// The SaaS user a job is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRef {
    /// The user's id in the inventory (the system of record).
    pub id: String,
    /// E-mail address, the key most vendors look users up by.
    pub email: String,
    /// The user's id at the vendor, when the inventory knows it.
    #[serde(default)]
    pub external_id: Option<String>,
}

/// One job: one SaaS user of one SaaS app. Body of a persistent AMQP message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobV1 {
    /// Schema version, always [`JOB_VERSION`].
    pub v: u8,
    /// Unique id, also the AMQP `message_id`; keys the idempotency marker.
    pub job_id: String,
    /// The scheduler run that published this job.
    pub run_id: String,
    /// The SaaS app (routing key and queue suffix).
    pub saas: String,
    /// What to do.
    pub action: Action,
    /// Whom to do it for.
    pub user: UserRef,
    /// Whether a user the vendor does not know is to be deactivated.
    pub deactivate_missing: bool,
    /// Fields for create/update actions (name, type, …); empty for lookups.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub attributes: std::collections::BTreeMap<String, String>,
    /// When the scheduler published it.
    pub enqueued_at: DateTime<Utc>,
    /// The inventory line it was published for (0: a source without
    /// lines, such as the Redis inventory, which holds one record per
    /// user). Two lines for one user in a run give two jobs with one job
    /// id; the line tells the second copy from a redelivery of the first,
    /// so the run counts it once and still finishes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub line: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Why a message body is not a job this build can run.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or not the job's shape.
    #[error("body is not a v1 job: {0}")]
    Json(#[from] serde_json::Error),
    /// A newer (or older) schema than this build reads.
    #[error("unsupported job version {0} (this worker reads version {JOB_VERSION})")]
    Version(u8),
    /// Fields parsed but make no sense together.
    #[error("invalid job: {0}")]
    Invalid(String),
}

impl JobV1 {
    /// Decodes and checks a message body.
    pub fn decode(body: &[u8]) -> Result<JobV1, DecodeError> {
        // Peek at the version first so a v2 job gets a version error, not a
        // confusing "missing field" one.
        #[derive(Deserialize)]
        struct Version {
            v: u8,
        }
        let Version { v } = serde_json::from_slice(body)?;
        if v != JOB_VERSION {
            return Err(DecodeError::Version(v));
        }
        let job: JobV1 = serde_json::from_slice(body)?;
        if job.job_id.is_empty() {
            return Err(DecodeError::Invalid("empty job_id".into()));
        }
        if job.user.id.is_empty() {
            return Err(DecodeError::Invalid("empty user.id".into()));
        }
        if !job.user.email.contains('@') {
            return Err(DecodeError::Invalid(
                "user.email is not an e-mail address".into(),
            ));
        }
        Ok(job)
    }

    /// Encodes the job as its message body.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a job always serializes")
    }
}

/// Header of a parked job: when it was first parked behind a refused credential (epoch ms).
pub const PARKED_SINCE_HEADER: &str = "x-rolecall-parked-since";

/// Header of a deferred job: when it first had to wait for quota (epoch ms).
pub const THROTTLED_SINCE_HEADER: &str = "x-rolecall-throttled-since";

/// What went wrong, for whoever reads the alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A job failed for good (permanent error or retries exhausted).
    JobFailed,
    /// The vendor refused the SaaS app's credential.
    AuthFailed,
    /// The vendor kept failing or could not be reached.
    VendorUnavailable,
    /// Every job of a run has an outcome.
    RunFinished,
    /// Jobs waited for quota longer than `worker.max_throttle_age` and failed.
    ThrottledOut,
    /// The vendor asked the fleet to pause longer than `rate.max_pause`.
    PauseCapped,
    /// The vendor accepts the SaaS app's credential again after an incident.
    AuthRecovered,
    /// A run's publisher stopped and the run could not be resumed (its
    /// inventory is gone): it ends with the jobs it had published.
    RunAbandoned,
    /// A workflow's run published every job but recorded no outcome for
    /// `scheduler.stalled_run_after_s`: it no longer holds back the slots.
    RunStalled,
    /// A workflow's slot came and its run could not start (its inventory is
    /// missing or unreadable): nobody was checked for that slot.
    RunNotStarted,
}

impl AlertKind {
    /// The kind's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::JobFailed => "job_failed",
            AlertKind::AuthFailed => "auth_failed",
            AlertKind::VendorUnavailable => "vendor_unavailable",
            AlertKind::RunFinished => "run_finished",
            AlertKind::ThrottledOut => "throttled_out",
            AlertKind::PauseCapped => "pause_capped",
            AlertKind::AuthRecovered => "auth_recovered",
            AlertKind::RunAbandoned => "run_abandoned",
            AlertKind::RunStalled => "run_stalled",
            AlertKind::RunNotStarted => "run_not_started",
        }
    }
}

/// An alert on the alert queue, for the notifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertV1 {
    /// Schema version, always 1.
    pub v: u8,
    /// Stable identity: the same incident or job failure always has the
    /// same id, so a redelivered alert is recognised and sent once.
    #[serde(default)]
    pub id: String,
    /// What happened.
    pub kind: AlertKind,
    /// The SaaS app concerned ("" for run-wide alerts).
    pub saas: String,
    /// The run concerned.
    pub run_id: String,
    /// The user concerned, when about one job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserRef>,
    /// Human-readable error or summary. Never holds a secret.
    pub error: String,
    /// Attempts made before giving up.
    pub attempts: u32,
    /// When it happened.
    pub at: DateTime<Utc>,
}

impl AlertV1 {
    /// An alert about one job (its id follows the job: a redelivery of the
    /// job that raised it raises the same alert).
    pub fn about_job(kind: AlertKind, job: &JobV1, error: String, attempts: u32) -> Self {
        Self {
            v: 1,
            id: format!("{}:{}", kind.as_str(), job.job_id),
            kind,
            saas: job.saas.clone(),
            run_id: job.run_id.clone(),
            user: Some(job.user.clone()),
            error,
            attempts,
            at: Utc::now(),
        }
    }

    /// An alert about a SaaS app rather than a user (an incident).
    pub fn about_app(
        kind: AlertKind,
        saas: &str,
        run_id: &str,
        incident: &str,
        error: String,
    ) -> Self {
        Self {
            v: 1,
            id: format!("{}:{saas}:{incident}", kind.as_str()),
            kind,
            saas: saas.to_owned(),
            run_id: run_id.to_owned(),
            user: None,
            error,
            attempts: 0,
            at: Utc::now(),
        }
    }

    /// An alert about a whole run, once per run (and kind): its id is
    /// `<kind>:<run id>`.
    fn about_run(kind: AlertKind, run_id: &str, text: String) -> Self {
        Self {
            v: 1,
            id: format!("{}:{run_id}", kind.as_str()),
            kind,
            saas: String::new(),
            run_id: run_id.to_owned(),
            user: None,
            error: text,
            attempts: 0,
            at: Utc::now(),
        }
    }

    /// The digest of a finished run.
    pub fn run_finished(run_id: &str, summary: String) -> Self {
        Self::about_run(AlertKind::RunFinished, run_id, summary)
    }

    /// A run that could not be resumed after its publisher stopped.
    pub fn run_abandoned(run_id: &str, why: String) -> Self {
        Self::about_run(AlertKind::RunAbandoned, run_id, why)
    }

    /// A workflow's slot whose run could not start; `run_id` is the id the
    /// slot's run would have had, so the alert is sent once per slot.
    pub fn run_not_started(run_id: &str, why: String) -> Self {
        Self::about_run(AlertKind::RunNotStarted, run_id, why)
    }

    /// A workflow's run that stopped recording outcomes.
    pub fn run_stalled(run_id: &str, why: String) -> Self {
        Self::about_run(AlertKind::RunStalled, run_id, why)
    }

    /// Encodes the alert as its message body.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an alert always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> JobV1 {
        JobV1 {
            v: 1,
            job_id: "01JD0000000000000000000000".into(),
            run_id: "r1".into(),
            saas: "lever_prod".into(),
            action: Action::LookupRole,
            user: UserRef {
                id: "u-1".into(),
                email: "ana@example.com".into(),
                external_id: None,
            },
            deactivate_missing: true,
            attributes: Default::default(),
            enqueued_at: "2026-11-23T02:00:01Z".parse().unwrap(),
            line: 0,
        }
    }

    #[test]
    fn a_job_round_trips_and_matches_the_documented_shape() {
        let j = job();
        let text = String::from_utf8(j.encode()).unwrap();
        assert!(text.contains(r#""action":"lookup_role""#), "{text}");
        assert!(text.contains(r#""v":1"#));
        assert_eq!(JobV1::decode(text.as_bytes()).unwrap(), j);
    }

    #[test]
    fn unknown_fields_are_tolerated() {
        let mut v: serde_json::Value = serde_json::from_slice(&job().encode()).unwrap();
        v["added_later"] = serde_json::json!(5);
        assert!(JobV1::decode(v.to_string().as_bytes()).is_ok());
    }

    #[test]
    fn bad_bodies_get_a_reason() {
        assert!(matches!(
            JobV1::decode(b"not json"),
            Err(DecodeError::Json(_))
        ));
        let mut v: serde_json::Value = serde_json::from_slice(&job().encode()).unwrap();
        v["v"] = serde_json::json!(2);
        assert!(matches!(
            JobV1::decode(v.to_string().as_bytes()),
            Err(DecodeError::Version(2))
        ));
        v["v"] = serde_json::json!(1);
        v["user"]["email"] = serde_json::json!("nobody");
        let err = JobV1::decode(v.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("user.email"));
    }

    proptest::proptest! {
        /// Bad input never stops a worker: any bytes decode to a job or a
        /// clear error, never a panic.
        #[test]
        fn any_bytes_decode_to_a_job_or_an_error(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = JobV1::decode(&bytes);
        }

        /// Near-misses of a valid job (every field replaced by arbitrary text) too.
        #[test]
        fn mangled_jobs_decode_or_error(field in "[a-z_]{1,12}", value in "\\PC{0,40}") {
            let mut doc = serde_json::to_value(job()).unwrap();
            doc[field.as_str()] = serde_json::Value::String(value);
            let _ = JobV1::decode(doc.to_string().as_bytes());
        }
    }
}
