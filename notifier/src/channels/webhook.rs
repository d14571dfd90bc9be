//! Slack-compatible incoming webhooks: `POST <url>` with `{"text": …}`.
//!
//! The URL is a credential (whoever has a Slack webhook URL can post to
//! the channel), so it comes from the vault, is held as a secret, and never
//! appears in a log line or an error: reqwest's errors carry the URL, so
//! they are stripped of it before they leave this file.

use std::time::Duration;

use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};

use super::{BuildError, DeliveryError, Notification};
use rolecall_common::credentials::Vault;

/// A webhook channel.
pub struct Webhook {
    url: SecretString,
    http: reqwest::Client,
}

impl Webhook {
    /// Resolves the URL credential and checks that it is an http(s) URL.
    pub async fn build(
        channel: &str,
        url_credential: &str,
        vault: &Vault,
        timeout: Duration,
    ) -> Result<Webhook, BuildError> {
        let url = vault
            .get(url_credential)
            .await
            .map_err(|source| BuildError::Credential {
                channel: channel.to_string(),
                source,
            })?;
        let ok = reqwest::Url::parse(url.expose_secret().trim())
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
        if !ok {
            // The reason never repeats the value: it is a secret.
            return Err(BuildError::Invalid {
                channel: channel.to_string(),
                reason: format!("credential `{url_credential}` is not an http(s) URL"),
            });
        }
        let http = reqwest::Client::builder()
            // A webhook must not hand our message (or its URL's token) to
            // another host.
            .redirect(rolecall_common::http::same_origin_redirects())
            .connect_timeout(Duration::from_secs(5))
            .timeout(timeout)
            .build()
            .expect("a client with these settings always builds");
        Ok(Webhook {
            url: SecretString::from(url.expose_secret().trim().to_string()),
            http,
        })
    }

    /// Posts the notification.
    pub async fn send(&self, n: &Notification) -> Result<(), DeliveryError> {
        let response = self
            .http
            .post(self.url.expose_secret())
            .json(&serde_json::json!({ "text": n.text }))
            .send()
            .await
            .map_err(|e| DeliveryError::Transient(rolecall_common::http::describe(e)))?;
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        classify(response.status(), retry_after)
    }
}

/// What an answer means for the delivery (`retry_after`: the answer's
/// `Retry-After` in seconds, when it had one).
fn classify(status: StatusCode, retry_after: Option<Duration>) -> Result<(), DeliveryError> {
    if status.is_success() {
        Ok(())
    } else if let (StatusCode::TOO_MANY_REQUESTS, Some(wait)) = (status, retry_after) {
        // Slack rate-limits a webhook to about one message a second and
        // says how long to wait.
        Err(DeliveryError::RetryAfter(
            format!("webhook answered {status}"),
            wait,
        ))
    } else if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        Err(DeliveryError::Transient(format!(
            "webhook answered {status}"
        )))
    } else {
        // 404 (webhook deleted), 403 (revoked), 400 (payload refused): not
        // going to change by itself.
        Err(DeliveryError::Configuration(format!(
            "webhook answered {status}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_by_whose_problem_they_are() {
        assert!(classify(StatusCode::OK, None).is_ok());
        assert!(classify(StatusCode::NO_CONTENT, None).is_ok());
        let wait = Some(Duration::from_secs(30));
        let throttled = classify(StatusCode::TOO_MANY_REQUESTS, wait).unwrap_err();
        assert_eq!(throttled.retry_after(), wait);
        for s in [
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::BAD_GATEWAY,
        ] {
            assert!(!classify(s, None).unwrap_err().is_configuration(), "{s}");
        }
        for s in [
            StatusCode::NOT_FOUND,
            StatusCode::FORBIDDEN,
            StatusCode::BAD_REQUEST,
        ] {
            assert!(classify(s, None).unwrap_err().is_configuration(), "{s}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_webhook_error_says_why_and_never_shows_its_url() {
        let settings = rolecall_common::config::CredentialSettings {
            env_prefix: "T_".into(),
            dir: None,
            vault: None,
        };
        let secret = "http://127.0.0.1:9/services/T000/B000/hunter2";
        let vault = Vault::with_env(
            settings,
            [("T_HOOK".to_string(), secret.to_string())].into(),
        );
        let hook = Webhook::build("ops", "hook", &vault, Duration::from_secs(2))
            .await
            .unwrap();
        let n = Notification {
            subject: "s".into(),
            text: "t".into(),
            id: "i".into(),
        };
        let err = hook.send(&n).await.unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.to_lowercase().contains("refused"), "the cause: {err}");
    }
}
