//! Taking alerts off `rolecall.alerts`: decode, count into a pending group
//! in Redis, then ack.
//!
//! The ack comes only after Redis recorded the alert, so a notifier that
//! dies in between gets the alert again, and the alert's id makes the
//! second recording a no-op. A body that is not an alert is not dropped
//! either: it becomes an "unreadable" alert, delivered like any other.

use anyhow::Context;
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicCancelOptions};
use rolecall_common::messages::{AlertKind, AlertV1};
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::metrics::Metrics;
use crate::render::{APP, UNREADABLE, USERS};
use crate::store::{NewAlert, Placement, Store};

/// What a delivery carried.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// An alert.
    Alert(AlertV1),
    /// A body that is not a v1 alert: its id (the message id, else a hash
    /// of the body) and a readable excerpt.
    Unreadable {
        /// Stable id.
        id: String,
        /// Why, and the start of the body.
        text: String,
    },
}

/// Decodes a delivery. An alert without an id (an old producer) gets the
/// message id, else a hash of its body: redeliveries still match.
pub fn decode(body: &[u8], message_id: Option<&str>) -> Incoming {
    let fallback_id = || match message_id.filter(|m| !m.is_empty()) {
        Some(m) => m.to_string(),
        None => format!("sha256:{:x}", Sha256::digest(body)),
    };
    match serde_json::from_slice::<AlertV1>(body) {
        Ok(mut alert) if alert.v == 1 => {
            if alert.id.is_empty() {
                alert.id = fallback_id();
            }
            Incoming::Alert(alert)
        }
        Ok(alert) => Incoming::Unreadable {
            id: fallback_id(),
            text: format!("unsupported alert version {}", alert.v),
        },
        Err(e) => {
            let excerpt: String = String::from_utf8_lossy(body).chars().take(200).collect();
            Incoming::Unreadable {
                id: fallback_id(),
                text: format!("{e}: {excerpt}"),
            }
        }
    }
}

/// Longest error text kept per alert: a vendor's error page must not
/// bloat a group in Redis or a message past a chat's size limit.
const MAX_ERROR_CHARS: usize = 500;

fn clip(text: &str) -> String {
    match text.char_indices().nth(MAX_ERROR_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// Counts one incoming alert into its group; false for a duplicate.
pub async fn record(
    store: &Store,
    incoming: &Incoming,
    window: std::time::Duration,
) -> Result<bool, crate::store::StoreError> {
    let grouped = Placement::Grouped { window };
    match incoming {
        Incoming::Alert(a) => {
            let example = a
                .user
                .as_ref()
                .map(|u| format!("{} ({})", u.email, u.id))
                .unwrap_or_default();
            let placement = if a.kind == AlertKind::RunFinished {
                // One digest per run, whatever id its announcement carried.
                Placement::Fixed(format!("run:{}", a.run_id))
            } else {
                grouped
            };
            let error = clip(&a.error);
            let new = NewAlert {
                id: &a.id,
                saas: &a.saas,
                kind: a.kind.as_str(),
                scope: if a.user.is_some() { USERS } else { APP },
                run_id: &a.run_id,
                error: &error,
                example,
            };
            store.add(&new, &placement).await
        }
        Incoming::Unreadable { id, text } => {
            let text = clip(text);
            let new = NewAlert {
                id,
                saas: "",
                kind: UNREADABLE,
                scope: APP,
                run_id: "",
                error: &text,
                example: String::new(),
            };
            store.add(&new, &grouped).await
        }
    }
}

/// Consumes until `stop` is cancelled (Ok) or the channel or Redis fails
/// (Err: the caller reconnects; unacked alerts are redelivered).
pub async fn consume(
    channel: lapin::Channel,
    mut consumer: lapin::Consumer,
    store: Store,
    window: std::time::Duration,
    metrics: &Metrics,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let delivery = tokio::select! {
            _ = stop.cancelled() => {
                let _ = channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()).await;
                return Ok(());
            }
            next = consumer.next() => match next {
                Some(Ok(d)) => d,
                Some(Err(e)) => return Err(e).context("consuming alerts"),
                None => anyhow::bail!("the broker cancelled the alert consumer"),
            },
        };
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.to_string());
        let incoming = decode(&delivery.data, message_id.as_deref());
        if let Incoming::Unreadable { id, text } = &incoming {
            warn!(id, reason = %text, "An alert could not be decoded; it is delivered as unreadable.");
        }
        let counted = record(&store, &incoming, window)
            .await
            .context("recording an alert in Redis")?;
        if counted {
            metrics.counted();
        } else {
            metrics.duplicate();
            debug!("A redelivered alert was recognised and counted once.");
        }
        delivery
            .ack(BasicAckOptions::default())
            .await
            .context("acking an alert")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_without_an_id_takes_the_message_id_or_a_hash_of_its_body() {
        let body = br#"{"v":1,"kind":"job_failed","saas":"a","run_id":"r","error":"x","attempts":1,"at":"2026-11-23T02:00:01Z"}"#;
        match decode(body, Some("m-1")) {
            Incoming::Alert(a) => assert_eq!(a.id, "m-1"),
            other => panic!("{other:?}"),
        }
        let (Incoming::Alert(a), Incoming::Alert(b)) = (decode(body, None), decode(body, None))
        else {
            panic!("alerts")
        };
        assert!(a.id.starts_with("sha256:"));
        assert_eq!(a.id, b.id, "a redelivery gets the same id");
    }

    #[test]
    fn long_errors_are_clipped_on_a_character_boundary() {
        let long = "é".repeat(MAX_ERROR_CHARS + 10);
        let clipped = clip(&long);
        assert_eq!(clipped.chars().count(), MAX_ERROR_CHARS + 1);
        assert!(clipped.ends_with('…'));
        assert_eq!(clip("short"), "short");
    }

    #[test]
    fn a_body_that_is_not_an_alert_is_kept_as_unreadable() {
        match decode(b"not json", None) {
            Incoming::Unreadable { id, text } => {
                assert!(id.starts_with("sha256:"));
                assert!(text.contains("not json"), "{text}");
            }
            other => panic!("{other:?}"),
        }
        let v2 = br#"{"v":2,"kind":"job_failed","saas":"a","run_id":"r","error":"x","attempts":1,"at":"2026-11-23T02:00:01Z"}"#;
        assert!(matches!(decode(v2, None), Incoming::Unreadable { .. }));
    }
}
