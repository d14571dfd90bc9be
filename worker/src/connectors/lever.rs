//! Lever API v1.
//!
//! Auth: HTTP Basic with the API key as user name and an empty password.
//! Lookup: `GET /v1/users?email=<lower-cased>&includeDeactivated=true`; an
//! empty `data` list means not found, `deactivatedAt` set means the user
//! exists but is deactivated, `accessRole` is the role, verbatim.
//! Lever pages with an opaque `next` cursor passed back as `offset`; the
//! lookup follows it when a match is not on the first page.
//! Action: `deactivate_user` → `POST /v1/users/{id}/deactivate`.
//! Lever rate-limits per API key (10 requests/s, bursts of 20).

use std::collections::BTreeMap;

use async_trait::async_trait;
use rolecall_common::messages::{Action, UserRef};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use super::listing::text;
use super::{
    ActionDone, Connector, ConnectorError, ListedUser, Lookup, UserPage, VendorClient, VendorUser,
};

/// The Lever connector.
pub struct Lever {
    client: VendorClient,
    users_url: Url,
    api_key: SecretString,
}

/// Lever takes no options.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsersPage {
    data: Vec<serde_json::Value>,
    #[serde(default)]
    has_next: bool,
    #[serde(default)]
    next: Option<String>,
}

/// Pages followed for one lookup; an e-mail query matches at most a few users.
const MAX_PAGES: usize = 20;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeverUser {
    id: String,
    email: String,
    access_role: String,
    deactivated_at: Option<i64>,
}

impl Lever {
    /// Builds the connector from a SaaS app's settings.
    pub fn from_context(ctx: &super::BuildContext<'_>) -> Result<Self, super::BuildError> {
        let Options {} = ctx.options()?;
        Ok(Self::new(
            ctx.client.clone(),
            ctx.saas.base_url.clone(),
            ctx.credential.clone(),
        ))
    }

    /// A connector for the Lever account at `base_url` (e.g. `https://api.lever.co`).
    pub fn new(client: VendorClient, base_url: Url, api_key: SecretString) -> Self {
        let mut base = base_url;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let users_url = base
            .join("v1/users")
            .expect("a constant relative path joins");
        Self {
            client: client.with_error_code("code"),
            users_url,
            api_key,
        }
    }
}

impl Lever {
    /// Finds the user with this e-mail, following Lever's `next` cursor
    /// (passed back unchanged as `offset`) when the match is not on the first page.
    async fn find(
        &self,
        email: &str,
    ) -> Result<Option<(LeverUser, serde_json::Value)>, ConnectorError> {
        let mut offset: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut request = self
                .client
                .get(self.users_url.clone())
                .query(&[
                    ("email", email),
                    ("includeDeactivated", "true"),
                    ("limit", "100"),
                ])
                .basic_auth(self.api_key.expose_secret(), Some(""));
            if let Some(token) = &offset {
                request = request.query(&[("offset", token.as_str())]);
            }
            let page: UsersPage = self.client.send(request).await?.parse()?;
            for raw in page.data {
                let found: LeverUser = serde_json::from_value(raw.clone())
                    .map_err(|e| ConnectorError::undecodable(&e))?;
                if found.email.eq_ignore_ascii_case(email) {
                    return Ok(Some((found, raw)));
                }
            }
            match (page.has_next, page.next) {
                (true, Some(next)) => offset = Some(next),
                (true, None) => {
                    return Err(ConnectorError::Inconclusive(
                        "Lever said more pages follow but gave no `next` cursor".into(),
                    ));
                }
                (false, _) => return Ok(None),
            }
        }
        Err(ConnectorError::Inconclusive(format!(
            "the user was not on the first {MAX_PAGES} pages of the e-mail query"
        )))
    }
}

#[async_trait]
impl Connector for Lever {
    /// `GET /v1/users?includeDeactivated=true&limit=100[&offset=<next>]`.
    async fn list_page(&self, cursor: Option<&str>) -> Result<UserPage, ConnectorError> {
        let mut request = self
            .client
            .get(self.users_url.clone())
            .query(&[("includeDeactivated", "true"), ("limit", "100")])
            .basic_auth(self.api_key.expose_secret(), Some(""));
        if let Some(token) = cursor {
            request = request.query(&[("offset", token)]);
        }
        let page: UsersPage = self.client.send(request).await?.parse()?;
        let mut users = Vec::with_capacity(page.data.len());
        for raw in page.data {
            let user: LeverUser =
                serde_json::from_value(raw.clone()).map_err(|e| ConnectorError::undecodable(&e))?;
            users.push(ListedUser {
                vendor_id: user.id,
                email: Some(user.email),
                name: text(raw.get("name")),
                raw_role: Some(user.access_role),
                active: user.deactivated_at.is_none(),
                last_login: None,
            });
        }
        let next = match (page.has_next, page.next) {
            (true, Some(next)) => Some(next),
            (true, None) => {
                return Err(ConnectorError::Inconclusive(
                    "Lever said more pages follow but gave no `next` cursor".into(),
                ));
            }
            (false, _) => None,
        };
        Ok(UserPage { users, next })
    }

    async fn lookup(&self, user: &UserRef) -> Result<Lookup, ConnectorError> {
        // Lever stores e-mails lower-cased; clients that send them as typed miss users.
        let email = user.email.trim().to_lowercase();
        Ok(match self.find(&email).await? {
            Some((found, raw)) => Lookup::Found(VendorUser::new(
                found.id,
                found.access_role,
                found.deactivated_at.is_none(),
                raw,
            )),
            None => Lookup::NotFound,
        })
    }

    /// `deactivate_user`: `POST /v1/users/{id}/deactivate`.
    async fn act(
        &self,
        action: Action,
        user: &UserRef,
        _attributes: &BTreeMap<String, String>,
    ) -> Result<ActionDone, ConnectorError> {
        if action != Action::DeactivateUser {
            return Err(ConnectorError::Unsupported(action.as_str()));
        }
        let email = user.email.trim().to_lowercase();
        let (found, _) = self
            .find(&email)
            .await?
            .ok_or_else(|| ConnectorError::no_such_user("deactivate"))?;
        if found.deactivated_at.is_some() {
            return Ok(ActionDone {
                vendor_id: Some(found.id),
                detail: "already deactivated".into(),
            });
        }
        let mut url = self.users_url.clone();
        url.path_segments_mut()
            .map_err(|_| ConnectorError::Decode("base URL cannot take a path".into()))?
            .push(&found.id)
            .push("deactivate");
        let request = self
            .client
            .post(url)
            .basic_auth(self.api_key.expose_secret(), Some(""));
        self.client.send(request).await?;
        Ok(ActionDone {
            vendor_id: Some(found.id),
            detail: "deactivated".into(),
        })
    }
}
