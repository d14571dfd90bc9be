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
    channel: String,
    url_credential: String,
    vault: Vault,
    /// The URL last read, used when reading it again fails.
    url: std::sync::Mutex<SecretString>,
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
        let url = read_url(channel, url_credential, vault).await?;
        let http = reqwest::Client::builder()
            // A webhook must not hand our message (or its URL's token) to
            // another host.
            .redirect(rolecall_common::http::same_origin_redirects())
            .connect_timeout(Duration::from_secs(5))
            .timeout(timeout)
            .build()
            .expect("a client with these settings always builds");
        Ok(Webhook {
            channel: channel.to_string(),
            url_credential: url_credential.to_string(),
            vault: vault.clone(),
            url: std::sync::Mutex::new(url),
            http,
        })
    }

    /// Posts the notification. The URL is read from the vault again for
    /// each delivery, so a rotated webhook (a Secret updated in place) is
    /// used without a restart; if it cannot be read now, the last URL is.
    pub async fn send(&self, n: &Notification) -> Result<(), DeliveryError> {
        let url = match read_url(&self.channel, &self.url_credential, &self.vault).await {
            Ok(url) => {
                *self.url.lock().expect("not poisoned") = url.clone();
                url
            }
            Err(e) => {
                tracing::warn!(channel = self.channel, error = %e, "Could not read the webhook URL again; using the last one read.");
                self.url.lock().expect("not poisoned").clone()
            }
        };
        let response = self
            .http
            .post(url.expose_secret())
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

/// Reads the webhook URL credential and checks that it is an http(s) URL.
async fn read_url(
    channel: &str,
    url_credential: &str,
    vault: &Vault,
) -> Result<SecretString, BuildError> {
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
    Ok(SecretString::from(url.expose_secret().trim().to_string()))
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

    fn note() -> Notification {
        Notification {
            subject: "s".into(),
            text: "t".into(),
            id: "i".into(),
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
        let n = note();
        let err = hook.send(&n).await.unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.to_lowercase().contains("refused"), "the cause: {err}");
    }

    /// An HTTP server answering 200 to `n` requests, then reporting it.
    async fn server(n: usize) -> (String, tokio::sync::oneshot::Receiver<()>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            for _ in 0..n {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            }
            let _ = tx.send(());
        });
        (url, rx)
    }

    #[tokio::test]
    async fn a_rotated_webhook_url_is_used_without_a_restart() {
        let dir = std::env::temp_dir().join(format!("rolecall-hook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let settings = rolecall_common::config::CredentialSettings {
            env_prefix: "T_UNSET_".into(),
            dir: Some(dir.clone()),
            vault: None,
        };
        let (old, old_hit) = server(1).await;
        std::fs::write(dir.join("hook"), &old).unwrap();
        let vault = Vault::new(settings);
        let hook = Webhook::build("ops", "hook", &vault, Duration::from_secs(2))
            .await
            .unwrap();
        let n = note();
        hook.send(&n).await.unwrap();
        old_hit.await.unwrap();
        // The Secret is rotated in place (a mounted file changes).
        let (new, new_hit) = server(2).await;
        std::fs::write(dir.join("hook"), &new).unwrap();
        hook.send(&n).await.unwrap();
        // Unreadable now: the last URL read still serves.
        std::fs::remove_file(dir.join("hook")).unwrap();
        hook.send(&n).await.unwrap();
        new_hit.await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
