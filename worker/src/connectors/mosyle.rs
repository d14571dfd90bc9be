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
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use rolecall_common::credentials::CredentialParts;
use rolecall_common::messages::{Action, UserRef};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};
use tokio::time::Instant;
use tracing::{debug, info, warn};
use url::Url;

use serde::Deserialize;

use super::{
    ActionDone, BuildContext, BuildError, Connector, ConnectorError, ListedUser, Lookup, UserPage,
    VendorClient, VendorUser,
};

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

    /// A map that answers lookups: the current one if it is young enough
    /// (and, with `newer_than`, built after that instant), else a rebuilt one.
    async fn listing(&self, newer_than: Option<Instant>) -> Result<Arc<Listing>, ConnectorError> {
        let refresh = {
            let mut state = self
                .inner
                .cache
                .lock()
                .expect("the cache lock is never poisoned");
            if let Some(current) = &state.current
                && current.built.elapsed() < self.inner.list_cache_ttl
                && newer_than.is_none_or(|t| current.built > t)
            {
                return Ok(current.clone());
            }
            // A rebuild under way started after `newer_than` (rebuilds never
            // overlap), so its map answers the question too.
            match &state.refreshing {
                Some(refresh) => refresh.clone(),
                None => {
                    let inner = self.inner.clone();
                    let epoch = state.epoch;
                    let task = tokio::spawn(async move {
                        let result = inner.build_listing().await.map(Arc::new);
                        let mut state = inner
                            .cache
                            .lock()
                            .expect("the cache lock is never poisoned");
                        if state.epoch == epoch {
                            state.refreshing = None;
                            if let Ok(listing) = &result {
                                state.current = Some(listing.clone());
                            }
                        }
                        result
                    });
                    let refresh = async move {
                        task.await.unwrap_or_else(|e| {
                            Err(ConnectorError::Transport(format!(
                                "the user listing task failed: {e}"
                            )))
                        })
                    }
                    .boxed()
                    .shared();
                    state.refreshing = Some(refresh.clone());
                    refresh
                }
            }
        };
        refresh.await
    }

    /// Drops the map after a write so the next lookup sees the change.
    fn forget_listing(&self) {
        let mut state = self
            .inner
            .cache
            .lock()
            .expect("the cache lock is never poisoned");
        state.epoch += 1;
        state.current = None;
        state.refreshing = None;
    }

    /// Without a cache: scan until the user turns up. A removed account is
    /// kept while the scan looks on for a live one with the same e-mail.
    async fn scan_for(&self, email: &str) -> Result<Lookup, ConnectorError> {
        let inner = &self.inner;
        let mut found: Option<Value> = None;
        inner
            .scan(&inner.client, |raw| {
                if email_of(&raw).as_deref() != Some(email) {
                    return false;
                }
                let live = !inner.is_removed(&raw);
                if live || found.is_none() {
                    found = Some(raw);
                }
                live
            })
            .await?;
        match found {
            Some(raw) => inner.found(raw).map(Lookup::Found),
            None => Ok(Lookup::NotFound),
        }
    }
}

impl Inner {
    /// A valid session's JWT and generation, logging in when there is none.
    /// The lock is held across the login: jobs arriving meanwhile wait for
    /// its result instead of logging in themselves.
    async fn session(&self) -> Result<(SecretString, u64), ConnectorError> {
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
    async fn invalidate(&self, generation: u64) {
        let mut slot = self.session.lock().await;
        if slot
            .current
            .as_ref()
            .is_some_and(|s| s.generation == generation)
        {
            slot.current = None;
        }
    }

    async fn login(&self) -> Result<SecretString, ConnectorError> {
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
    async fn post(
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

    async fn list_page(&self, client: &VendorClient, page: u64) -> Result<Page, ConnectorError> {
        let body = match self.product {
            Product::Business => json!({"operation": "list_users", "options": {"page": page}}),
            Product::Manager => json!({
                "accessToken": self.access_token.expose_secret(),
                "options": {"page": page, "specific_columns": MANAGER_COLUMNS},
            }),
        };
        parse_page(self.post(client, &self.list_url, &body).await?)
    }

    /// Pages through every user, handing each to `visit` until it returns
    /// true. A scan that cannot reach the end of the list is an error: a
    /// partial list proves nobody missing.
    async fn scan(
        &self,
        client: &VendorClient,
        mut visit: impl FnMut(Value) -> bool + Send,
    ) -> Result<(), ConnectorError> {
        let mut previous_first: Option<Value> = None;
        for page in 1..=MAX_PAGES {
            let Page {
                users,
                total,
                page_size,
            } = self.list_page(client, page).await?;
            if users.is_empty() {
                return Ok(());
            }
            // A vendor that ignores `page` would otherwise be scanned 20 000 times.
            let first = users.first().cloned();
            if page > 1 && first == previous_first {
                return Err(ConnectorError::Inconclusive(format!(
                    "page {page} of the user list repeats page {}",
                    page - 1
                )));
            }
            previous_first = first;
            let count = users.len() as u64;
            for user in users {
                if visit(user) {
                    return Ok(());
                }
            }
            match (total, page_size) {
                (Some(total), Some(size)) if size > 0 && page * size >= total => return Ok(()),
                (None, Some(size)) if count < size => return Ok(()),
                _ => {}
            }
        }
        Err(ConnectorError::Inconclusive(format!(
            "the user list has more than {MAX_PAGES} pages"
        )))
    }

    async fn build_listing(&self) -> Result<Listing, ConnectorError> {
        let started = Instant::now();
        let mut users: HashMap<String, Value> = HashMap::new();
        let mut seen = 0usize;
        self.scan(&self.background, |raw| {
            seen += 1;
            if let Some(email) = email_of(&raw) {
                // A live account wins over a removed one with the same e-mail.
                let replace = users
                    .get(&email)
                    .is_none_or(|kept| self.is_removed(kept) && !self.is_removed(&raw));
                if replace {
                    users.insert(email, raw);
                }
            }
            false
        })
        .await?;
        debug!(
            saas = %self.saas,
            users = seen,
            emails = users.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Listed Mosyle users."
        );
        // Freshness counts from the end of the scan: a scan of a large tenant
        // may outlast FRESH, and a map must be trusted at least once.
        Ok(Listing {
            users,
            built: Instant::now(),
        })
    }

    fn is_removed(&self, raw: &Value) -> bool {
        self.product == Product::Business && raw.get("is_removed").is_some_and(truthy)
    }

    fn found(&self, raw: Value) -> Result<VendorUser, ConnectorError> {
        let id_key = match self.product {
            Product::Business => "iduser",
            Product::Manager => "id",
        };
        let vendor_id = raw
            .get(id_key)
            .and_then(scalar)
            .ok_or_else(|| ConnectorError::Decode(format!("a user has no `{id_key}`")))?;
        let raw_role = raw
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| ConnectorError::Decode("a user has no `type`".into()))?
            .to_owned();
        let active = !self.is_removed(&raw);
        Ok(VendorUser::new(vendor_id, raw_role, active, raw))
    }

    /// The request body of a create or update.
    fn write_body(
        &self,
        action: Action,
        user: &UserRef,
        attributes: &BTreeMap<String, String>,
    ) -> Value {
        let create = action == Action::CreateUser;
        let user_id = attributes
            .get("user_id")
            .cloned()
            .unwrap_or_else(|| user.id.clone());
        match self.product {
            Product::Business => {
                let mut body: Map<String, Value> = attributes
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect();
                let operation = if create { "create_user" } else { "update_user" };
                body.insert("operation".into(), operation.into());
                body.insert("user_id".into(), user_id.into());
                if create {
                    body.insert("email".into(), user.email.clone().into());
                    body.entry("type").or_insert_with(|| "ENDUSER".into());
                }
                Value::Object(body)
            }
            Product::Manager => {
                let mut element = Map::new();
                for (key, value) in attributes {
                    match key.as_str() {
                        "user_id" | "location" | "grade_level" => {}
                        "type" => {
                            element.insert(key.clone(), manager_type(value).into());
                        }
                        "welcome_email" | "idaccount" => {
                            element.insert(key.clone(), number_or_string(value));
                        }
                        "locations" => {
                            let parsed = serde_json::from_str::<Value>(value)
                                .ok()
                                .filter(Value::is_array)
                                .unwrap_or_else(|| json!([{"name": value}]));
                            element.insert(key.clone(), parsed);
                        }
                        _ => {
                            element.insert(key.clone(), value.clone().into());
                        }
                    }
                }
                if let Some(location) = attributes.get("location") {
                    let mut entry = json!({"name": location});
                    if let Some(grade) = attributes.get("grade_level") {
                        entry["grade_level"] = grade.clone().into();
                    }
                    element.insert("locations".into(), json!([entry]));
                }
                let operation = if create { "save" } else { "update" };
                element.insert("operation".into(), operation.into());
                element.insert("id".into(), user_id.into());
                if create {
                    element.insert("email".into(), user.email.clone().into());
                    // Mosyle e-mails the user when asked; a sync must not by default.
                    element.entry("welcome_email").or_insert(0.into());
                }
                json!({
                    "accessToken": self.access_token.expose_secret(),
                    "elements": [Value::Object(element)],
                })
            }
        }
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

/// The API root with one trailing slash: accepts `https://host`,
/// `https://host/`, `https://host/v1` and a path prefix before them.
fn api_root(base: &Url) -> Url {
    let mut root = base.clone();
    root.set_query(None);
    root.set_fragment(None);
    let path = root.path().trim_end_matches('/');
    let path = path
        .strip_suffix("/v1")
        .or_else(|| path.strip_suffix("/v2"))
        .unwrap_or(path)
        .to_owned();
    root.set_path(&format!("{path}/"));
    root
}

/// The JWT from an `Authorization: Bearer …` response header.
fn bearer_token(value: &str) -> Option<SecretString> {
    let value = value.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty())
        .then(|| SecretString::from(token.to_owned()))
}

fn parse_page(mut reply: Value) -> Result<Page, ConnectorError> {
    let inner = match reply.get_mut("response") {
        // Business: an array holding one page object.
        Some(Value::Array(items)) => match items.first_mut() {
            Some(first) => first.take(),
            None => return Ok(Page::empty()),
        },
        // Manager: the page object itself.
        Some(object @ Value::Object(_)) => object.take(),
        _ => {
            return Err(ConnectorError::Decode(
                "the user list has no `response`".into(),
            ));
        }
    };
    let total = inner
        .get("rows")
        .or_else(|| inner.get("total"))
        .and_then(count);
    let page_size = inner.get("page_size").and_then(count);
    match inner.get("users") {
        Some(Value::Array(users)) => Ok(Page {
            users: users.clone(),
            total,
            page_size,
        }),
        Some(Value::Null) | None => match status_of(&inner) {
            // Device lookups answer DEVICES_NOTFOUND for "nothing" (§1.8);
            // read a user-list equivalent the same way.
            Some(code) if is_ok(code) || code.to_ascii_uppercase().contains("NOTFOUND") => {
                Ok(Page::empty())
            }
            Some(code) => Err(vendor_status(code, &inner)),
            None => Err(ConnectorError::Decode(
                "a user list page has no `users`".into(),
            )),
        },
        Some(_) => Err(ConnectorError::Decode("`users` is not a list".into())),
    }
}

impl Page {
    fn empty() -> Self {
        Self {
            users: Vec::new(),
            total: None,
            page_size: None,
        }
    }
}

/// Write answers carry a status per element (`response[]`, `response`,
/// `elements[]`), which may fail while the envelope says OK (§1.8).
fn check_nested(reply: &Value) -> Result<(), ConnectorError> {
    let nested = ["response", "elements"]
        .iter()
        .filter_map(|k| reply.get(*k))
        .flat_map(|v| match v {
            Value::Array(items) => items.iter().collect::<Vec<_>>(),
            other => vec![other],
        });
    for item in nested {
        if let Some(code) = status_of(item)
            && !is_ok(code)
        {
            return Err(vendor_status(code, item));
        }
    }
    Ok(())
}

/// The written user's id as Mosyle reports it: Business `iduser` (the id
/// lookups report), Manager `elements[0].id`. None when the answer has none.
fn written_id(product: Product, reply: &Value) -> Option<String> {
    let candidates: &[&str] = match product {
        Product::Business => &["/response/0/iduser", "/response/iduser", "/iduser"],
        Product::Manager => &["/elements/0/id", "/response/0/id"],
    };
    candidates
        .iter()
        .find_map(|p| reply.pointer(p).and_then(scalar))
}

fn manager_type(value: &str) -> String {
    match value.to_ascii_uppercase().as_str() {
        "STUDENT" => "S".into(),
        "TEACHER" => "T".into(),
        _ => value.to_owned(),
    }
}

fn number_or_string(value: &str) -> Value {
    value
        .trim()
        .parse::<i64>()
        .map(Value::from)
        .unwrap_or_else(|_| value.into())
}

fn status_of(value: &Value) -> Option<&str> {
    value.get("status").and_then(Value::as_str)
}

fn is_ok(code: &str) -> bool {
    code.eq_ignore_ascii_case("OK")
}

/// Statuses that say the session, not the request, is bad: log in again.
fn is_session_status(code: &str) -> bool {
    let code = code.to_ascii_uppercase();
    ["TOKEN", "EXPIRED", "SESSION"]
        .iter()
        .any(|w| code.contains(w))
}

/// The code of an HTTP-200 answer refusing the session or the access token:
/// a session-like `status` (`TOKEN_EXPIRED`), or a generic `ERROR` whose
/// `info` is such a code (`{"status":"ERROR","info":"ACCESS_TOKEN_INVALID"}`).
/// Free-text `info` is not read: "Missing key: accessToken" is a bad request.
fn session_refusal(reply: &Value) -> Option<String> {
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

fn vendor_status(code: &str, holder: &Value) -> ConnectorError {
    let info = ["info", "message", "error"]
        .iter()
        .find_map(|k| holder.get(*k).and_then(Value::as_str));
    ConnectorError::VendorStatus(match info {
        Some(info) => format!("{}: {}", clip(code), clip(info)),
        None => clip(code),
    })
}

fn clip(text: &str) -> String {
    crate::error::clip(text, MAX_INFO)
}

fn email_of(raw: &Value) -> Option<String> {
    raw.get("email")
        .and_then(Value::as_str)
        .map(|e| e.trim().to_lowercase())
        .filter(|e| !e.is_empty())
}

/// Ids arrive as strings or numbers depending on the route.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Counts arrive as numbers or numeric strings (`"rows": "1328"`, §1.4).
fn count(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `is_removed` as a boolean, `1`/`0` or `"true"`/`"1"`.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_u64().is_some_and(|n| n != 0),
        Value::String(s) => matches!(s.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_root_ignores_trailing_slashes_and_versions() {
        for base in [
            "https://businessapi.mosyle.com",
            "https://businessapi.mosyle.com/",
            "https://businessapi.mosyle.com/v1",
            "https://businessapi.mosyle.com/v1/",
        ] {
            let root = api_root(&base.parse().unwrap());
            assert_eq!(root.as_str(), "https://businessapi.mosyle.com/", "{base}");
        }
        let root = api_root(&"http://proxy/mosyle/v2".parse().unwrap());
        assert_eq!(
            root.join("v2/listusers").unwrap().as_str(),
            "http://proxy/mosyle/v2/listusers"
        );
    }

    #[test]
    fn bearer_tokens_come_only_from_a_bearer_header() {
        assert_eq!(bearer_token("Bearer abc").unwrap().expose_secret(), "abc");
        assert_eq!(bearer_token("bearer  abc ").unwrap().expose_secret(), "abc");
        assert!(bearer_token("Basic abc").is_none());
        assert!(bearer_token("Bearer ").is_none());
        assert!(bearer_token("abc").is_none());
    }

    #[test]
    fn both_page_shapes_are_read() {
        let business = json!({"status": "OK", "response": [{"users": [{"iduser": "1"}], "rows": "3", "page_size": 1, "page": 1}]});
        let page = parse_page(business).unwrap();
        assert_eq!(
            (page.users.len(), page.total, page.page_size),
            (1, Some(3), Some(1))
        );
        let manager =
            json!({"status": "OK", "response": {"users": [], "total": 0, "page_size": 50}});
        let page = parse_page(manager).unwrap();
        assert_eq!((page.users.len(), page.total), (0, Some(0)));
        let missing = json!({"status": "OK", "response": [{"status": "USERS_NOTFOUND"}]});
        assert!(parse_page(missing).unwrap().users.is_empty());
        let refused =
            json!({"status": "OK", "response": [{"status": "NOT_ALLOWED", "info": "no"}]});
        assert!(
            matches!(parse_page(refused), Err(ConnectorError::VendorStatus(s)) if s == "NOT_ALLOWED: no")
        );
    }

    #[test]
    fn nested_write_statuses_fail_the_write() {
        assert!(
            check_nested(&json!({"status": "OK", "elements": [{"id": "a", "status": "OK"}]}))
                .is_ok()
        );
        let err = check_nested(&json!({"status": "OK", "response": [{"status": "MISSING_DATA", "info": "Missing key: name"}]}))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "vendor reported an error: MISSING_DATA: Missing key: name"
        );
    }

    #[test]
    fn session_statuses_are_recognised() {
        assert!(is_session_status("TOKEN_EXPIRED"));
        assert!(is_session_status("ACCESS_TOKEN_INVALID"));
        assert!(is_session_status("session_expired"));
        assert!(!is_session_status("MISSING_DATA"));
        let invalid = json!({"status": "ERROR", "info": "ACCESS_TOKEN_INVALID"});
        assert_eq!(
            session_refusal(&invalid).unwrap(),
            "ERROR: ACCESS_TOKEN_INVALID"
        );
        let bad_request = json!({"status": "MISSING_DATA", "info": "Missing key: accessToken"});
        assert!(session_refusal(&bad_request).is_none());
        assert!(session_refusal(&json!({"status": "OK"})).is_none());
    }

    fn connector(product: &str) -> Mosyle {
        let settings = rolecall_common::config::from_toml(&format!(
            r#"
            [saas.m]
            connector = "mosyle"
            base_url = "https://mosyle.invalid"
            credential = "m"
            rate = {{ per_second = 1 }}
            options = {{ product = "{product}" }}
            "#
        ))
        .unwrap();
        let ctx = BuildContext {
            saas: &settings.saas["m"],
            client: VendorClient::standalone(&settings.saas["m"]),
            credential: SecretString::from(
                r#"{"access_token":"tok","email":"a@b.c","password":"pw"}"#.to_string(),
            ),
        };
        Mosyle::from_context(&ctx).unwrap()
    }

    fn user() -> UserRef {
        UserRef {
            id: "inv-7".into(),
            email: "Jane@School.org".into(),
            external_id: None,
        }
    }

    #[test]
    fn business_writes_follow_the_client_code() {
        let m = connector("business");
        let attrs = BTreeMap::from([("name".to_string(), "Jane".to_string())]);
        let body = m.inner.write_body(Action::CreateUser, &user(), &attrs);
        assert_eq!(
            body,
            json!({"operation": "create_user", "user_id": "inv-7", "name": "Jane",
                   "email": "Jane@School.org", "type": "ENDUSER"})
        );
        let attrs = BTreeMap::from([
            ("user_id".to_string(), "jane".to_string()),
            ("type".to_string(), "ADMIN".to_string()),
        ]);
        let body = m.inner.write_body(Action::UpdateUser, &user(), &attrs);
        assert_eq!(
            body,
            json!({"operation": "update_user", "user_id": "jane", "type": "ADMIN"})
        );
    }

    #[test]
    fn manager_writes_follow_the_manager_docs() {
        let m = connector("manager");
        let attrs = BTreeMap::from([
            ("name".to_string(), "Jane".to_string()),
            ("type".to_string(), "STUDENT".to_string()),
            ("location".to_string(), "Cityview Day School".to_string()),
            ("grade_level".to_string(), "Kindergarten".to_string()),
            ("idaccount".to_string(), "12".to_string()),
        ]);
        let body = m.inner.write_body(Action::CreateUser, &user(), &attrs);
        assert_eq!(
            body,
            json!({"accessToken": "tok", "elements": [{
                "operation": "save", "id": "inv-7", "name": "Jane", "type": "S",
                "email": "Jane@School.org", "welcome_email": 0, "idaccount": 12,
                "locations": [{"name": "Cityview Day School", "grade_level": "Kindergarten"}],
            }]})
        );
        let attrs = BTreeMap::from([("type".to_string(), "TEACHER".to_string())]);
        let body = m.inner.write_body(Action::UpdateUser, &user(), &attrs);
        assert_eq!(
            body,
            json!({"accessToken": "tok", "elements": [{"operation": "update", "id": "inv-7", "type": "T"}]})
        );
        let reply = json!({"status": "OK", "elements": [{"id": "inv-7", "status": "OK"}]});
        assert_eq!(
            written_id(Product::Manager, &reply).as_deref(),
            Some("inv-7")
        );
    }

    fn json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[A-Za-z_]{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("response".to_string()),
                        Just("users".to_string()),
                        Just("status".to_string()),
                        Just("rows".to_string()),
                        Just("page_size".to_string()),
                        "[a-z]{1,6}"
                    ],
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Any answer to a list call is a page or a classified error,
        /// never a panic.
        #[test]
        fn any_list_answer_is_a_page_or_an_error(reply in json()) {
            let _ = parse_page(reply.clone());
            let _ = check_nested(&reply);
        }
    }
}
