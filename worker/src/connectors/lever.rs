//! Lever API v1.
//!
//! Auth: HTTP Basic with the API key as user name and an empty password.
//! Lookup: `GET /v1/users?email=<lower-cased>&includeDeactivated=true`; an
//! empty `data` list means not found, `deactivatedAt` set means the user
//! exists but is deactivated, `accessRole` is the role, verbatim.
//! Lever rate-limits per API key (10 requests/s, bursts of 20).

use async_trait::async_trait;
use rolecall_common::messages::UserRef;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use super::{Connector, ConnectorError, Lookup, VendorUser, read_json};

/// The Lever connector.
pub struct Lever {
    http: reqwest::Client,
    users_url: Url,
    api_key: SecretString,
}

#[derive(Deserialize)]
struct UsersPage {
    data: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeverUser {
    id: String,
    email: String,
    access_role: String,
    deactivated_at: Option<i64>,
}

impl Lever {
    /// A connector for the Lever account at `base_url` (e.g. `https://api.lever.co`).
    pub fn new(http: reqwest::Client, base_url: Url, api_key: SecretString) -> Self {
        let mut base = base_url;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let users_url = base
            .join("v1/users")
            .expect("a constant relative path joins");
        Self {
            http,
            users_url,
            api_key,
        }
    }
}

#[async_trait]
impl Connector for Lever {
    async fn lookup(&self, user: &UserRef) -> Result<Lookup, ConnectorError> {
        // Lever stores e-mails lower-cased; clients that send them as typed miss users.
        let email = user.email.trim().to_lowercase();
        let response = self
            .http
            .get(self.users_url.clone())
            .query(&[("email", email.as_str()), ("includeDeactivated", "true")])
            .basic_auth(self.api_key.expose_secret(), Some(""))
            .send()
            .await?;
        let body = read_json(response, "code").await?;
        let page: UsersPage =
            serde_json::from_value(body).map_err(|e| ConnectorError::Decode(e.to_string()))?;
        for raw in page.data {
            let found: LeverUser = serde_json::from_value(raw.clone())
                .map_err(|e| ConnectorError::Decode(format!("user object: {e}")))?;
            if found.email.eq_ignore_ascii_case(&email) {
                return Ok(Lookup::Found(VendorUser {
                    vendor_id: found.id,
                    raw_role: found.access_role,
                    active: found.deactivated_at.is_none(),
                    raw,
                }));
            }
        }
        Ok(Lookup::NotFound)
    }
}
