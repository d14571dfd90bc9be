//! Mosyle sessions: one login shared by every job of the SaaS app, renewed
//! before Mosyle's 24 h expiry and once when a data call says the session
//! is no longer valid.

use reqwest::header::{ACCEPT, AUTHORIZATION};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio::time::Instant;
use tracing::{debug, info, warn};
use url::Url;

use super::wire::{clip, is_ok, status_of, vendor_status};
use super::{
    ConnectorError, Inner, LOGIN_REFUSAL_HOLD, Product, REQUEST_TIMEOUT, Session, VendorClient,
};

impl Inner {
    /// A valid session's JWT and generation, logging in when there is none.
    /// The lock is held across the login: jobs arriving meanwhile wait for
    /// its result instead of logging in themselves.
    pub(super) async fn session(&self) -> Result<(SecretString, u64), ConnectorError> {
        let mut slot = self.session.lock().await;
        if let Some(session) = &slot.current
            && session.obtained.elapsed() < self.session_ttl
        {
            return Ok((session.jwt.clone(), session.generation));
        }
        if let Some((at, refusal)) = &slot.refused
            && at.elapsed() < LOGIN_REFUSAL_HOLD
        {
            return Err(refusal.clone());
        }
        let renewing = slot.current.is_some();
        slot.current = None;
        match self.login().await {
            Ok(jwt) => {
                slot.generation += 1;
                slot.refused = None;
                slot.current = Some(Session {
                    jwt: jwt.clone(),
                    obtained: Instant::now(),
                    generation: slot.generation,
                });
                info!(saas = %self.saas, product = self.product.as_str(), renewing, "Logged in to Mosyle.");
                Ok((jwt, slot.generation))
            }
            Err(e) => {
                warn!(saas = %self.saas, product = self.product.as_str(), error = %e, "Mosyle login failed.");
                if matches!(e, ConnectorError::Unauthorized { .. }) {
                    slot.refused = Some((Instant::now(), e.clone()));
                }
                Err(e)
            }
        }
    }

    /// Drops the session `generation` if it is still the current one.
    pub(super) async fn invalidate(&self, generation: u64) {
        let mut slot = self.session.lock().await;
        if slot
            .current
            .as_ref()
            .is_some_and(|s| s.generation == generation)
        {
            slot.current = None;
        }
    }

    pub(super) async fn login(&self) -> Result<SecretString, ConnectorError> {
        let request = self
            .client
            .post(self.login_url.clone())
            .header(ACCEPT, "application/json")
            .timeout(REQUEST_TIMEOUT);
        let request = match self.product {
            Product::Business => request
                .header("accessToken", self.access_header.clone())
                .json(&json!({
                    "email": self.email.expose_secret(),
                    "password": self.password.expose_secret(),
                })),
            Product::Manager => request.json(&json!({
                "accessToken": self.access_token.expose_secret(),
                "email": self.email.expose_secret(),
                "password": self.password.expose_secret(),
            })),
        };
        // 401/403 become Unauthorized here, 429/5xx Throttled/Upstream.
        let reply = self.client.send(request).await?;
        let status = reply.status;
        let jwt = reply
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token);
        let body = reply.json()?;
        if status != reqwest::StatusCode::OK {
            return Err(ConnectorError::Decode(format!(
                "login answered HTTP {}",
                status.as_u16()
            )));
        }
        if body.get("UserID").is_none_or(Value::is_null) {
            // Mosyle reports refusals as HTTP 200 with an error status
            // (legacy clients look for WRONG_PASSWORD, §1.8).
            if let Some(code) = status_of(&body)
                && !is_ok(code)
            {
                return Err(ConnectorError::Unauthorized {
                    status: 200,
                    detail: format!(", {}", clip(code)),
                });
            }
            return Err(ConnectorError::Decode(
                "the login response has no UserID".into(),
            ));
        }
        jwt.ok_or_else(|| {
            ConnectorError::Decode(
                "the login response has no `Authorization: Bearer` header".into(),
            )
        })
    }

    /// POSTs `body` with the session, logging in again once if Mosyle says
    /// the session is no longer valid, and checks the top-level status.
    pub(super) async fn post(
        &self,
        client: &VendorClient,
        url: &Url,
        body: &Value,
    ) -> Result<Value, ConnectorError> {
        let mut relogged = false;
        loop {
            let (jwt, generation) = self.session().await?;
            let mut request = client
                .post(url.clone())
                .bearer_auth(jwt.expose_secret())
                .header(ACCEPT, "application/json")
                .timeout(REQUEST_TIMEOUT)
                .json(body);
            if self.product == Product::Business {
                request = request.header("accessToken", self.access_header.clone());
            }
            let result = match client.send(request).await {
                Ok(reply) => reply.json(),
                Err(e) => Err(e),
            };
            let session_refused = match &result {
                Err(ConnectorError::Unauthorized { status: 401, .. }) => true,
                Ok(reply) => session_refusal(reply).is_some(),
                Err(_) => false,
            };
            if session_refused {
                self.invalidate(generation).await;
                if !relogged {
                    relogged = true;
                    debug!(saas = %self.saas, "Mosyle refused the session; logging in again.");
                    continue;
                }
                return Err(match result {
                    Err(e) => e,
                    Ok(reply) => ConnectorError::Unauthorized {
                        status: 200,
                        detail: format!(", {}", session_refusal(&reply).unwrap_or_default()),
                    },
                });
            }
            let reply = result?;
            if let Some(code) = status_of(&reply)
                && !is_ok(code)
            {
                return Err(vendor_status(code, &reply));
            }
            return Ok(reply);
        }
    }
}

/// The JWT from an `Authorization: Bearer …` response header.
pub(super) fn bearer_token(value: &str) -> Option<SecretString> {
    let value = value.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty())
        .then(|| SecretString::from(token.to_owned()))
}

/// Statuses that say the session, not the request, is bad: log in again.
pub(super) fn is_session_status(code: &str) -> bool {
    let code = code.to_ascii_uppercase();
    ["TOKEN", "EXPIRED", "SESSION"]
        .iter()
        .any(|w| code.contains(w))
}

/// The code of an HTTP-200 answer refusing the session or the access token:
/// a session-like `status` (`TOKEN_EXPIRED`), or a generic `ERROR` whose
/// `info` is such a code (`{"status":"ERROR","info":"ACCESS_TOKEN_INVALID"}`).
/// Free-text `info` is not read: "Missing key: accessToken" is a bad request.
pub(super) fn session_refusal(reply: &Value) -> Option<String> {
    let code = status_of(reply)?;
    if is_ok(code) {
        return None;
    }
    if is_session_status(code) {
        return Some(clip(code));
    }
    let info = reply.get("info").and_then(Value::as_str)?;
    let is_code = !info.is_empty() && info.chars().all(|c| c.is_ascii_uppercase() || c == '_');
    (is_code && is_session_status(info)).then(|| format!("{}: {}", clip(code), clip(info)))
}
