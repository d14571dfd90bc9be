//! Mosyle Business (`/v1`) and Mosyle Manager (`/v2`).
//!
//! Facts this file relies on (`/work/shared/VENDORS.md` §1):
//! - Two products on two hosts: Business (`businessapi.mosyle.com/v1`) takes
//!   the API access token in an `accessToken` **header**; Manager
//!   (`managerapi.mosyle.com/v2`) takes it in the JSON **body** of every call
//!   (§1, table). Option `product` picks one; `business` is the default.
//! - Both need a session: `POST /login` with the admin e-mail and password
//!   answers a JWT in the `Authorization: Bearer …` *response header*, valid
//!   24 h, with no refresh endpoint (§1.2, §1.3). Like `tuxudo/mosyle`, the
//!   bearer is trusted only from a 200 whose JSON body carries `UserID`.
//!   Sessions are renewed after 23 h, before Mosyle expires them, and on a
//!   401 (or a session-like error status) from a data call.
//! - No e-mail filter exists on either user list (§1.4, §1.5): a lookup by
//!   e-mail has to page through every user and match client-side. Business
//!   answers `response` as an **array** (`[{users, rows, page_size, page}]`),
//!   Manager as an **object** (`{users, total, page_size}`) (§1.4–§1.6).
//! - Role is `type`, kept verbatim (Business `ENDUSER|GROUP_ADMIN|ADMIN`;
//!   Manager `STUDENT, TEACHER, …`). Business `is_removed: true` is the only
//!   deactivation signal (inferred, §1.5): such a user is found and
//!   inactive, as every other connector reports vendor-deactivated users;
//!   Manager has no active flag (§1.4), so every listed Manager user is active.
//! - Application errors come as HTTP 200 with a non-`OK` `status` at the top
//!   level or nested in `response`/`elements` (§1.8). They are permanent,
//!   except statuses naming the token or session, which mean "log in again".
//! - Rate limits are undocumented (§1.7): 429 and 5xx are classified
//!   generically, and every call — logins and list pages included — goes
//!   through the vendor client and so takes a fleet slot. A lookup answered
//!   from the listing below takes none.
//!
//! Why a listing cache: one full scan per job makes a reconciliation of n
//! users cost O(n²) calls against a vendor whose rate limit nobody knows.
//! The connector instead keeps one e-mail → user map per SaaS app, built by a
//! full scan and shared by all jobs (option `list_cache_s`, default 60 s, 0
//! turns it off). A user found in it is answered from it, so a role change
//! shows up at most `list_cache_s` late. A user missing from it is not found
//! only if the map is fresh (a few seconds old, or built for this very
//! question); otherwise the map is rebuilt first, so a user created a minute
//! ago is not reported missing. Rebuilds are single-flight and run in their
//! own task, so a job cancelled by its attempt timeout does not throw away a
//! half-done scan of a large tenant.
//!
//! Options: `product` (`business` | `manager`), `list_cache_s` (seconds, see
//! above), `session_ttl_s` (seconds a session is reused; a test and
//! operations knob, default 23 h, kept below Mosyle's 24 h).
//!
//! Credential: a JSON object `{"access_token", "email", "password"}`.
//!
//! Actions: `create_user` and `update_user` for both products. Business uses
//! `POST /v1/users` with `operation` `create_user`/`update_user` (the
//! operation names come from client code, §1.5). Manager uses `POST /v2/users`
//! with `elements[].operation` `save`/`update` as in the scraped Manager docs
//! ("Users Operations - Create Users" / "Update Users", the copy §1.1 cites):
//! `type` must be `S`, `T` or `STAFF` there, so `STUDENT`/`TEACHER` are
//! translated.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::{BoxFuture, Shared};
use reqwest::header::HeaderValue;
use rolecall_common::credentials::CredentialParts;
use rolecall_common::messages::{Action, UserRef};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::time::Instant;
use url::Url;

use serde::Deserialize;

use super::{
    ActionDone, BuildContext, BuildError, Connector, ConnectorError, ListedUser, Lookup, UserPage,
    VendorClient, VendorUser,
};
use wire::{api_root, check_nested, email_of, scalar, written_id};

mod listing;
mod session;
#[cfg(test)]
mod tests;
mod wire;

/// How long a session is reused: an hour of margin before Mosyle's 24 h
/// expiry, so a slow job never sends a token that dies in flight.
const SESSION_TTL: Duration = Duration::from_secs(23 * 3600);

/// How long the e-mail → user map answers lookups by default.
const LIST_CACHE_TTL: Duration = Duration::from_secs(60);

/// A map younger than this is trusted for "not found" without a rebuild:
/// long enough that a burst of lookups for absent users costs one scan, short
/// enough that a just-created user is seen on the next attempt.
const FRESH: Duration = Duration::from_secs(5);

/// After Mosyle refuses the login, jobs reuse that answer for this long
/// instead of trying the password again: repeated failed logins may lock the
/// admin account, and admins have to fix the credential anyway.
const LOGIN_REFUSAL_HOLD: Duration = Duration::from_secs(30);

/// Stops a scan whose vendor keeps answering pages (a guard, not a limit
/// any real tenant reaches: 20 000 pages of 50 users is a million users).
const MAX_PAGES: u64 = 20_000;

/// How long a listing refreshed in the background may wait for quota: it
/// is paced with every job of the SaaS app, and no delivery waits on it.
const LISTING_HOLD: Duration = Duration::from_secs(600);

/// Bounds each call: the pipeline's attempt timeout does not reach the
/// listing task (it outlives the job that started it), and a hung page must
/// not hold every lookup of the SaaS app behind it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Manager returns every column unless asked; these are all a lookup needs.
const MANAGER_COLUMNS: [&str; 4] = ["id", "name", "email", "type"];

/// Vendor texts copied into errors are cut here: they end up in results and logs.
const MAX_INFO: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
enum Product {
    #[default]
    Business,
    Manager,
}

/// The connector's options (`saas.<name>.options`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    #[serde(default)]
    product: Product,
    #[serde(default)]
    session_ttl_s: Option<u64>,
    #[serde(default)]
    list_cache_s: Option<u64>,
}

impl Product {
    fn as_str(self) -> &'static str {
        match self {
            Product::Business => "business",
            Product::Manager => "manager",
        }
    }
}

/// The Mosyle connector (Business or Manager).
pub struct Mosyle {
    inner: Arc<Inner>,
}

/// Shared with the listing task, which outlives the job that started it.
struct Inner {
    saas: String,
    client: VendorClient,
    /// The same client, for listings no job waits on.
    background: VendorClient,
    product: Product,
    login_url: Url,
    list_url: Url,
    write_url: Url,
    access_token: SecretString,
    /// The access token as a header value marked sensitive (Business).
    access_header: HeaderValue,
    email: SecretString,
    password: SecretString,
    session_ttl: Duration,
    list_cache_ttl: Duration,
    /// Held across the login so that concurrent jobs cause one login.
    session: tokio::sync::Mutex<SessionSlot>,
    cache: std::sync::Mutex<CacheState>,
}

#[derive(Default)]
struct SessionSlot {
    current: Option<Session>,
    /// Counts logins; a job that saw a session refused only drops the
    /// session it used, never one another job has just obtained.
    generation: u64,
    refused: Option<(Instant, ConnectorError)>,
}

struct Session {
    jwt: SecretString,
    obtained: Instant,
    generation: u64,
}

type Refresh = Shared<BoxFuture<'static, Result<Arc<Listing>, ConnectorError>>>;

#[derive(Default)]
struct CacheState {
    current: Option<Arc<Listing>>,
    refreshing: Option<Refresh>,
    /// Bumped by writes: a scan that started before a write must not be
    /// stored as the current map.
    epoch: u64,
}

/// Every user (removed ones too, as inactive), by lower-cased e-mail.
struct Listing {
    users: HashMap<String, Value>,
    built: Instant,
}

/// One page of the user list.
struct Page {
    users: Vec<Value>,
    total: Option<u64>,
    page_size: Option<u64>,
}

impl Mosyle {
    /// Builds the connector from a SaaS app's settings.
    pub fn from_context(ctx: &BuildContext<'_>) -> Result<Self, BuildError> {
        let options: Options = ctx.options()?;
        let product = options.product;
        let session_ttl = match options.session_ttl_s {
            None => SESSION_TTL,
            Some(0) => return Err(ctx.bad_option("session_ttl_s", "must be at least 1")),
            Some(s) => Duration::from_secs(s),
        };
        let list_cache_ttl = options
            .list_cache_s
            .map(Duration::from_secs)
            .unwrap_or(LIST_CACHE_TTL);

        let parts = CredentialParts::parse(&ctx.credential, &["access_token", "email", "password"])
            .map_err(|reason| ctx.malformed(reason))?;
        let part = |key: &str| {
            parts
                .get(key)
                .cloned()
                .ok_or_else(|| ctx.malformed(format!("lacks the field {key}")))
        };
        let access_token = part("access_token")?;
        let mut access_header =
            HeaderValue::from_str(access_token.expose_secret()).map_err(|_| {
                ctx.malformed("has an access_token that is not a valid HTTP header value")
            })?;
        access_header.set_sensitive(true);

        let root = api_root(&ctx.saas.base_url);
        let join = |path: &str| root.join(path).expect("a constant relative path joins");
        let (login_url, list_url, write_url) = match product {
            Product::Business => (join("v1/login"), join("v1/users"), join("v1/users")),
            Product::Manager => (join("v2/login"), join("v2/listusers"), join("v2/users")),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                saas: ctx.saas.name.clone(),
                client: ctx.client.with_error_code("error,status,message"),
                background: ctx
                    .client
                    .with_error_code("error,status,message")
                    .with_max_hold(LISTING_HOLD),
                product,
                login_url,
                list_url,
                write_url,
                access_token,
                access_header,
                email: part("email")?,
                password: part("password")?,
                session_ttl,
                list_cache_ttl,
                session: tokio::sync::Mutex::new(SessionSlot::default()),
                cache: std::sync::Mutex::new(CacheState::default()),
            }),
        })
    }
}

#[async_trait]
impl Connector for Mosyle {
    /// One page of `list_users` (Business) or `/listusers` (Manager), the
    /// cursor being the 1-based page number. The end is the rule the
    /// lookup's scan uses: an empty page, `page * page_size >= total`, or a
    /// short page when no total is given. Paced as a background listing.
    async fn list_page(&self, cursor: Option<&str>) -> Result<UserPage, ConnectorError> {
        let inner = &self.inner;
        let page: u64 = match cursor {
            None => 1,
            Some(c) => c
                .parse()
                .map_err(|_| ConnectorError::Decode(format!("bad Mosyle list cursor `{c}`")))?,
        };
        let Page {
            users,
            total,
            page_size,
        } = inner.list_page(&inner.background, page).await?;
        let count = users.len() as u64;
        let mut listed = Vec::with_capacity(users.len());
        for raw in users {
            let found = inner.found(raw)?;
            listed.push(ListedUser {
                email: email_of(&found.raw),
                name: found.raw.get("name").and_then(scalar),
                vendor_id: found.vendor_id,
                raw_role: Some(found.raw_role),
                active: found.active,
                last_login: None,
            });
        }
        let last = match (total, page_size) {
            _ if count == 0 => true,
            (Some(total), Some(size)) if size > 0 => page * size >= total,
            (None, Some(size)) => count < size,
            _ => false,
        };
        if !last && page >= MAX_PAGES {
            return Err(ConnectorError::Inconclusive(format!(
                "the user list has more than {MAX_PAGES} pages"
            )));
        }
        let next = (!last).then(|| (page + 1).to_string());
        Ok(UserPage {
            users: listed,
            next,
        })
    }

    async fn lookup(&self, user: &UserRef) -> Result<Lookup, ConnectorError> {
        let email = user.email.trim().to_lowercase();
        let inner = &self.inner;
        if inner.list_cache_ttl.is_zero() {
            return self.scan_for(&email).await;
        }
        let listing = self.listing(None).await?;
        if let Some(raw) = listing.users.get(&email) {
            return inner.found(raw.clone()).map(Lookup::Found);
        }
        if listing.built.elapsed() < FRESH.min(inner.list_cache_ttl) {
            return Ok(Lookup::NotFound);
        }
        let listing = self.listing(Some(listing.built)).await?;
        match listing.users.get(&email) {
            Some(raw) => inner.found(raw.clone()).map(Lookup::Found),
            None => Ok(Lookup::NotFound),
        }
    }

    async fn act(
        &self,
        action: Action,
        user: &UserRef,
        attributes: &BTreeMap<String, String>,
    ) -> Result<ActionDone, ConnectorError> {
        if !matches!(action, Action::CreateUser | Action::UpdateUser) {
            return Err(ConnectorError::Unsupported(action.as_str()));
        }
        let inner = &self.inner;
        let body = inner.write_body(action, user, attributes);
        let reply = inner.post(&inner.client, &inner.write_url, &body).await;
        // Even a failed write may have changed something.
        self.forget_listing();
        let reply = reply?;
        check_nested(&reply)?;
        let detail = if action == Action::CreateUser {
            "created"
        } else {
            "updated"
        };
        Ok(ActionDone {
            vendor_id: written_id(inner.product, &reply),
            detail: detail.into(),
        })
    }
}
