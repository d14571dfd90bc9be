//! Injected failures, for testing how the fleet copes with a vendor that
//! misbehaves at a chosen moment rather than at a chosen email.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Answer the next `count` requests that the throttle lets through with
/// `status` instead of serving them.
///
/// On the wire (`POST /_sim/faults`, `GET /_sim/faults`):
/// `{"status": 503, "retry_after_s": 2, "count": 3}`. `retry_after_s` is whole
/// seconds and may be omitted or `null` for no `Retry-After` header; a
/// sub-second `retry_after` is rounded up, since a client that retries early
/// would only meet the fault again.
///
/// Faults queue up: injecting a 503 ×2 then a 429 ×1 answers the next three
/// admitted requests 503, 503, 429.
///
/// Status 200 ([`MALFORMED`]) is the one success: a 200 whose body is not
/// the vendor's shape (truncated JSON), for testing how clients classify a
/// response they cannot read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// Any status from 400 to 599.
    pub status: u16,
    #[serde(
        rename = "retry_after_s",
        default,
        serialize_with = "serialize_secs",
        deserialize_with = "deserialize_secs"
    )]
    pub retry_after: Option<Duration>,
    pub count: u32,
}

/// The fault status meaning "200 with a body that is not the vendor's shape".
pub const MALFORMED: u16 = 200;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FaultError {
    /// Other success or informational statuses would not be faults, and would
    /// not fit a vendor's error body.
    #[error("an injected status must be 200 (malformed body) or between 400 and 599, not {0}")]
    Status(u16),
}

impl Fault {
    pub fn validate(&self) -> Result<(), FaultError> {
        if self.status == MALFORMED || (400..=599).contains(&self.status) {
            Ok(())
        } else {
            Err(FaultError::Status(self.status))
        }
    }

    /// Unlike throttling's `Retry-After`, `0` is kept: a test may want to see
    /// what a client does when told to retry at once.
    pub(crate) fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after.map(ceil_secs)
    }
}

fn ceil_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

fn serialize_secs<S: Serializer>(
    value: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    value.map(ceil_secs).serialize(serializer)
}

fn deserialize_secs<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    Ok(Option::<u64>::deserialize(deserializer)?.map(Duration::from_secs))
}

#[derive(Default)]
pub(crate) struct FaultQueue {
    queue: Mutex<VecDeque<Fault>>,
}

impl FaultQueue {
    pub(crate) fn push(&self, fault: Fault) {
        if fault.count > 0 {
            self.lock().push_back(fault);
        }
    }

    /// One lock per request, so concurrent requests use up exactly `count`.
    pub(crate) fn take(&self) -> Option<Fault> {
        let mut queue = self.lock();
        let front = queue.front_mut()?;
        front.count -= 1;
        let taken = Fault {
            count: 1,
            ..front.clone()
        };
        if front.count == 0 {
            queue.pop_front();
        }
        Some(taken)
    }

    /// With their remaining counts.
    pub(crate) fn pending(&self) -> Vec<Fault> {
        self.lock().iter().cloned().collect()
    }

    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Fault>> {
        // A queue of plain values stays valid even if a holder panicked.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(status: u16, count: u32) -> Fault {
        Fault {
            status,
            retry_after: None,
            count,
        }
    }

    #[test]
    fn faults_are_used_up_in_order() {
        let queue = FaultQueue::default();
        queue.push(fault(503, 2));
        queue.push(fault(500, 0));
        queue.push(fault(429, 1));
        assert_eq!(queue.pending(), [fault(503, 2), fault(429, 1)]);
        let statuses: Vec<Option<u16>> = (0..5).map(|_| queue.take().map(|f| f.status)).collect();
        assert_eq!(statuses, [Some(503), Some(503), Some(429), None, None]);
        assert!(queue.pending().is_empty());

        queue.push(fault(502, 3));
        assert!(queue.take().is_some());
        assert_eq!(queue.pending(), [fault(502, 2)]);
        queue.clear();
        assert!(queue.take().is_none());
    }

    #[test]
    fn serde_shape_uses_whole_seconds() {
        let with_wait = Fault {
            status: 503,
            retry_after: Some(Duration::from_millis(1500)),
            count: 3,
        };
        assert_eq!(
            serde_json::to_value(&with_wait).ok(),
            Some(serde_json::json!({"status": 503, "retry_after_s": 2, "count": 3}))
        );
        assert_eq!(with_wait.retry_after_secs(), Some(2));

        let parsed: Result<Fault, _> =
            serde_json::from_str(r#"{"status": 429, "retry_after_s": 0, "count": 1}"#);
        assert_eq!(
            parsed.ok(),
            Some(Fault {
                status: 429,
                retry_after: Some(Duration::ZERO),
                count: 1
            })
        );
        for no_wait in [
            r#"{"status": 500, "count": 2}"#,
            r#"{"status": 500, "retry_after_s": null, "count": 2}"#,
        ] {
            let parsed: Result<Fault, _> = serde_json::from_str(no_wait);
            assert_eq!(parsed.ok(), Some(fault(500, 2)), "{no_wait}");
        }
        assert_eq!(
            serde_json::to_value(fault(500, 2)).ok(),
            Some(serde_json::json!({"status": 500, "retry_after_s": null, "count": 2}))
        );
    }

    #[test]
    fn only_error_statuses_and_malformed_bodies_are_faults() {
        assert!(fault(400, 1).validate().is_ok());
        assert!(fault(599, 1).validate().is_ok());
        assert!(fault(MALFORMED, 1).validate().is_ok());
        assert_eq!(fault(204, 1).validate(), Err(FaultError::Status(204)));
        assert_eq!(fault(600, 1).validate(), Err(FaultError::Status(600)));
    }
}
