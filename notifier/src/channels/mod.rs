//! Where notifications go: one file per channel type behind one enum.
//!
//! A channel only turns a [`Notification`] into a request; retries,
//! backoff and the "sent once" bookkeeping live in `flush`. Errors carry
//! whether they look like our configuration's fault (a webhook answering
//! 404, an SMTP server refusing our login), which is logged louder, but
//! every failure is retried: an alert is never dropped.

pub mod email;
pub mod webhook;

use std::collections::BTreeMap;
use std::time::Duration;

use rolecall_common::config::{ChannelSettings, NotifierSettings};
use rolecall_common::credentials::{CredentialError, Vault};

/// What a channel delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// One line: the e-mail subject.
    pub subject: String,
    /// The message (Slack `text`, e-mail body).
    pub text: String,
    /// Stable id of this notification on this channel (e-mail `Message-ID`),
    /// so a receiver can recognise a resend after a crash.
    pub id: String,
}

/// Why a delivery attempt failed. Never holds a secret (a webhook URL, a
/// password): errors are logged.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Worth retrying as is: the receiver is down or slow.
    #[error("{0}")]
    Transient(String),
    /// The receiver asked us to wait this long (429 with `Retry-After`).
    #[error("{0} (retry after {secs} s)", secs = .1.as_secs())]
    RetryAfter(String, Duration),
    /// The receiver refused the request in a way that points at our
    /// configuration (wrong URL, revoked webhook, bad login, bad
    /// recipient). Retried all the same, so fixing the configuration (or
    /// the receiver) delivers what waited.
    #[error("{0} (check the channel's configuration)")]
    Configuration(String),
}

impl DeliveryError {
    /// Whether the failure points at the channel's configuration.
    pub fn is_configuration(&self) -> bool {
        matches!(self, DeliveryError::Configuration(_))
    }

    /// The wait the receiver asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DeliveryError::RetryAfter(_, wait) => Some(*wait),
            _ => None,
        }
    }
}

/// Why a channel could not be built at start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A credential it names is missing or unreadable.
    #[error("notifier.channels.{channel}: {source}")]
    Credential {
        /// Channel name.
        channel: String,
        /// What the vault said (never the value).
        source: CredentialError,
    },
    /// The channel's settings are unusable (a CA file that is not PEM, a
    /// webhook credential that is not a URL, …).
    #[error("notifier.channels.{channel}: {reason}")]
    Invalid {
        /// Channel name.
        channel: String,
        /// What is wrong (never a secret).
        reason: String,
    },
}

/// A built channel.
pub enum Channel {
    /// Slack-compatible incoming webhook.
    Webhook(Box<webhook::Webhook>),
    /// E-mail over SMTP.
    Email(Box<email::Email>),
}

impl Channel {
    /// Sends one notification, bounded by `timeout`.
    pub async fn send(&self, n: &Notification, timeout: Duration) -> Result<(), DeliveryError> {
        let attempt = async {
            match self {
                Channel::Webhook(w) => w.send(n).await,
                Channel::Email(e) => e.send(n).await,
            }
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(DeliveryError::Transient(format!(
                    "no answer within {} s",
                    timeout.as_secs_f64()
                )))
            })
    }
}

/// Builds every configured channel, resolving its credentials; reports
/// every broken channel at once.
pub async fn build(
    settings: &NotifierSettings,
    vault: &Vault,
) -> Result<BTreeMap<String, Channel>, Vec<BuildError>> {
    let mut channels = BTreeMap::new();
    let mut problems = Vec::new();
    for (name, ch) in &settings.channels {
        let built = match ch {
            ChannelSettings::Webhook { url_credential } => {
                webhook::Webhook::build(name, url_credential, vault, settings.delivery_timeout)
                    .await
                    .map(|w| Channel::Webhook(Box::new(w)))
            }
            ChannelSettings::Email(e) => {
                email::Email::build(name, e, vault, settings.delivery_timeout)
                    .await
                    .map(|e| Channel::Email(Box::new(e)))
            }
        };
        match built {
            Ok(c) => {
                channels.insert(name.clone(), c);
            }
            Err(e) => problems.push(e),
        }
    }
    if problems.is_empty() {
        Ok(channels)
    } else {
        Err(problems)
    }
}
