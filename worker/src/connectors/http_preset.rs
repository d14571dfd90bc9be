//! A vendor described by data instead of code (`connector = "http"`).
//!
//! Most vendors' role lookup is one HTTP request and three JSON fields; a
//! hand-written connector for each would repeat Lever's ninety lines with
//! different strings. This connector reads those strings from a *spec*: a
//! shipped preset file (`options.preset`, `presets/<name>.toml`) or a table
//! inline in the SaaS app's options (`options.spec`). `docs/presets.md` is the
//! reference for authors; this file is the interpreter.
//!
//! Everything that can be checked is checked when the worker starts (every
//! key, template, pointer, status; the URL and body rendered with sample
//! values), so a typo fails the deployment instead of every job. Every
//! problem names its key (`saas.<app>.options.spec.response.role`).
//!
//! Safety rules the spec cannot relax:
//! - secrets (`{{secret}}`, `{{secret.FIELD}}`) only reach headers and
//!   bodies, never URLs (which end up in proxies' and vendors' logs), and no
//!   error text is built from a secret or a response body;
//! - substituted values are percent-encoded in URLs and JSON-escaped in
//!   bodies, so an e-mail with `+` or a login with `/` cannot change the
//!   request's shape;
//! - every response goes through [`read_json`] (or, for statuses the spec
//!   declares as "not found", the same quota observation and classification),
//!   so the rate limiter and the retry policy see this connector like any
//!   other;
//! - a `Link` to the next page is only followed to the same origin, so a
//!   credential is never sent to a host the configuration did not name.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, LINK};
use rolecall_common::credentials::CredentialParts;
use rolecall_common::messages::UserRef;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use url::Url;

use super::{BuildContext, BuildError, Connector, ConnectorError, Lookup, VendorUser, read_json};

/// The presets shipped with this build, embedded so that a deployed binary
/// works without the `presets/` folder next to it.
const SHIPPED: &[(&str, &str)] = &[
    (
        "github-org-membership",
        include_str!("../../../presets/github-org-membership.toml"),
    ),
    (
        "zoom-users",
        include_str!("../../../presets/zoom-users.toml"),
    ),
];

/// Where to look for preset files when `options.presets_dir` is not set.
const PRESETS_ENV: &str = "ROLECALL_PRESETS_DIR";

/// The source tree's preset folder: lets a developer edit a preset and rerun
/// without rebuilding (absent on deployed hosts, where the embedded copy serves).
const COMPILED_PRESETS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../presets");

/// Pages followed before giving up: a paginated lookup that never ends is a
/// spec bug, and "not found" after a partial scan could deactivate a user.
const DEFAULT_MAX_PAGES: u64 = 20;

/// The options this connector reads.
const OPTIONS: &[&str] = &["preset", "spec", "vars", "presets_dir"];

/// What a lookup needs and lacks when the inventory has no external id; the
/// error is permanent because retrying cannot conjure the id.
const NEEDS_EXTERNAL_ID: &str =
    "look a user up without an external_id (this SaaS app needs external_id in the inventory)";

/// The declarative HTTP connector.
pub struct HttpPreset {
    http: reqwest::Client,
    spec: Spec,
    /// The SaaS app's base URL without a trailing slash.
    base_url: String,
    /// The spec's default variables overridden by `options.vars`.
    vars: BTreeMap<String, String>,
    secrets: Secrets,
    /// The session token of `kind = "session"` auth, fetched on first use.
    /// A mutex rather than a lock-free cell: concurrent lookups after an
    /// expiry must log in once, not once each.
    session: tokio::sync::Mutex<Option<SecretString>>,
}

impl HttpPreset {
    /// Builds the connector from a SaaS app's settings, validating the whole spec.
    pub fn from_context(ctx: &BuildContext<'_>) -> Result<Self, BuildError> {
        ctx.only_options(OPTIONS)?;
        let (value, origin) = load_spec_value(ctx)?;
        let root = match origin {
            Origin::Inline => "spec",
            Origin::Preset { .. } => "",
        };
        let problem = |p: Problem| origin.error(ctx, p);
        let spec = parse_spec(&value, root).map_err(problem)?;
        let vars = merge_vars(ctx, &spec, root).map_err(problem)?;
        let secrets = secrets_for(ctx, &spec)?;
        let base_url = ctx.saas.base_url.as_str().trim_end_matches('/').to_owned();
        let connector = Self {
            http: ctx.http.clone(),
            spec,
            base_url,
            vars,
            secrets,
            session: tokio::sync::Mutex::new(None),
        };
        connector.check_samples().map_err(problem)?;
        tracing::debug!(saas = %ctx.saas.name, spec = %connector.spec.name, "http preset connector built");
        Ok(connector)
    }

    fn values<'a>(&'a self, user: Option<&'a UserRef>) -> Values<'a> {
        Values {
            user,
            base_url: &self.base_url,
            vars: &self.vars,
            secret: SecretSource::Real(&self.secrets),
        }
    }

    /// Renders every template with sample values and checks the results
    /// parse: a URL that is not a URL, a body that is not JSON or a header
    /// that cannot be sent fail now rather than on every job.
    fn check_samples(&self) -> Checked<()> {
        let sample_user = UserRef {
            id: "u-1".into(),
            email: "Sample.User+tag@example.com".into(),
            external_id: Some("sample-login".into()),
        };
        let mut values = self.values(Some(&sample_user));
        values.secret = SecretSource::Sample;
        check_request(&self.spec.request, &values)?;
        match &self.spec.auth {
            Auth::Basic { .. } => {}
            Auth::Bearer { token } => {
                let t = render_for_check(token, &values, Escape::None)?;
                header_value_check(token, &format!("Bearer {t}"))?;
            }
            Auth::Header { value, .. } => {
                let v = render_for_check(value, &values, Escape::None)?;
                header_value_check(value, &v)?;
            }
            Auth::Session(session) => {
                values.user = None;
                check_request(&session.login, &values)?;
            }
        }
        Ok(())
    }

    /// Sends `request` (the lookup or the login) to `url`.
    async fn send(
        &self,
        request: &RequestSpec,
        url: Url,
        user: Option<&UserRef>,
        session: Option<&SecretString>,
    ) -> Result<reqwest::Response, ConnectorError> {
        let values = self.values(user);
        let mut headers = HeaderMap::new();
        for (name, template) in &request.headers {
            let value = render(template, &values, Escape::None)?;
            headers.insert(
                name.clone(),
                runtime_header(&value, template.uses_secret())?,
            );
        }
        let mut builder = self.http.request(request.method.clone(), url);
        if let Some(body) = &request.body {
            if !headers.contains_key(CONTENT_TYPE) {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
            builder = builder.body(render(body, &values, Escape::Json)?);
        }
        // Basic credentials: the login's own, or the lookup's [auth].
        let mut basic = match &request.basic {
            Some(b) => Some((
                render(&b.user, &values, Escape::None)?,
                render(&b.password, &values, Escape::None)?,
            )),
            None => None,
        };
        // The lookup carries the spec's auth; the login carries only its own.
        if user.is_some() {
            match &self.spec.auth {
                Auth::Basic { user, password } => {
                    basic = Some((
                        render(user, &values, Escape::None)?,
                        render(password, &values, Escape::None)?,
                    ));
                }
                Auth::Bearer { token } => {
                    let token = render(token, &values, Escape::None)?;
                    headers.insert(
                        AUTHORIZATION,
                        runtime_header(&format!("Bearer {token}"), true)?,
                    );
                }
                Auth::Header { name, value } => {
                    let value = render(value, &values, Escape::None)?;
                    headers.insert(name.clone(), runtime_header(&value, true)?);
                }
                Auth::Session(s) => {
                    if let Some(token) = session {
                        let value = format!("{}{}", s.prefix, token.expose_secret());
                        headers.insert(s.header.clone(), runtime_header(&value, true)?);
                    }
                }
            }
        }
        // `headers` replaces same-named headers already set, so Basic goes
        // last: auth wins over a spec header of the same name.
        builder = builder.headers(headers);
        if let Some((user, password)) = basic {
            builder = builder.basic_auth(user, Some(password));
        }
        Ok(builder.send().await?)
    }

    /// Reads a lookup response: the spec's throttle rule, then statuses the
    /// spec declares as "not found", then [`read_json`] for everything else.
    async fn read(
        &self,
        response: reqwest::Response,
        values: &Values<'_>,
    ) -> Result<Reply, ConnectorError> {
        let status = response.status();
        let code = status.as_u16();
        let spec = &self.spec.response;
        if !status.is_success() {
            if let Some(rule) = &spec.throttle
                && rule.matches(code, response.headers())
            {
                let headers = response.headers().clone();
                crate::pipeline::observe_quota(&headers);
                return Err(ConnectorError::Throttled {
                    status: code,
                    retry_after: rule.wait(&headers),
                });
            }
            if spec.not_found.iter().any(|r| r.status.contains(&code)) {
                // A status read_json would turn into an error: read the body
                // here, with the same quota observation, and classify it the
                // same way when the body does not confirm "not found".
                let headers = response.headers().clone();
                crate::pipeline::observe_quota(&headers);
                let bytes = response.bytes().await?;
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                for rule in &spec.not_found {
                    if rule.holds(code, &body, values)? {
                        return Ok(Reply::NotFound);
                    }
                }
                let vendor_code = error_code(&body, &spec.error_code);
                return Err(ConnectorError::from_status(
                    status,
                    &headers,
                    vendor_code.as_deref(),
                ));
            }
        }
        let headers = response.headers().clone();
        let body = read_json(response, &spec.error_code).await?;
        Ok(Reply::Body {
            status: code,
            headers,
            body,
        })
    }

    /// One page of the lookup, logging in first for session auth and once
    /// more if the vendor answers 401 (an expired session).
    async fn fetch(&self, url: &Url, user: &UserRef) -> Result<Reply, ConnectorError> {
        let values = self.values(Some(user));
        let token = self.session_token().await?;
        let response = self
            .send(&self.spec.request, url.clone(), Some(user), token.as_ref())
            .await?;
        match (self.read(response, &values).await, token) {
            (Err(ConnectorError::Unauthorized { status: 401, .. }), Some(stale)) => {
                self.forget_session(&stale).await;
                let fresh = self.session_token().await?;
                let response = self
                    .send(&self.spec.request, url.clone(), Some(user), fresh.as_ref())
                    .await?;
                self.read(response, &values).await
            }
            (reply, _) => reply,
        }
    }

    /// The session token, logging in when there is none.
    async fn session_token(&self) -> Result<Option<SecretString>, ConnectorError> {
        let Auth::Session(session) = &self.spec.auth else {
            return Ok(None);
        };
        let mut slot = self.session.lock().await;
        if let Some(token) = slot.as_ref() {
            return Ok(Some(token.clone()));
        }
        let url = render_url(&session.login.url, &self.values(None))?;
        let response = self.send(&session.login, url, None, None).await?;
        let headers = response.headers().clone();
        let body = read_json(response, &self.spec.response.error_code).await?;
        let token = match &session.token_from {
            TokenFrom::Header(name) => headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            TokenFrom::Json(pointer) => body
                .pointer(pointer)
                .and_then(Value::as_str)
                .map(str::to_owned),
        }
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| {
            ConnectorError::Decode(format!(
                "the login response has no session token at {}",
                session.token_from
            ))
        })?;
        let token = SecretString::from(token);
        *slot = Some(token.clone());
        Ok(Some(token))
    }

    /// Drops `stale` unless a concurrent lookup already replaced it.
    async fn forget_session(&self, stale: &SecretString) {
        let mut slot = self.session.lock().await;
        if slot
            .as_ref()
            .is_some_and(|t| t.expose_secret() == stale.expose_secret())
        {
            *slot = None;
        }
    }

    /// The vendor user in `item`, which passed the spec's `match`.
    fn user_from(&self, item: &Value, values: &Values<'_>) -> Result<VendorUser, ConnectorError> {
        let spec = &self.spec.response;
        let raw_role = match item.pointer(&spec.role).and_then(scalar_text) {
            Some(role) => role,
            None => spec.role_default.clone().ok_or_else(|| {
                ConnectorError::Decode(format!("the user has no role at {}", spec.role))
            })?,
        };
        let vendor_id = item
            .pointer(&spec.vendor_id)
            .and_then(scalar_text)
            .ok_or_else(|| {
                ConnectorError::Decode(format!("the user has no id at {}", spec.vendor_id))
            })?;
        let active = match &spec.active {
            Some(condition) => condition.holds(item, values)?,
            None => true,
        };
        Ok(VendorUser {
            vendor_id,
            raw_role,
            active,
            raw: item.clone(),
        })
    }
}

#[async_trait]
impl Connector for HttpPreset {
    async fn lookup(&self, user: &UserRef) -> Result<Lookup, ConnectorError> {
        let values = self.values(Some(user));
        let mut url = self
            .spec
            .pagination
            .first(render_url(&self.spec.request.url, &values)?);
        let mut pages = 0;
        loop {
            pages += 1;
            let (status, headers, body) = match self.fetch(&url, user).await? {
                Reply::NotFound => return Ok(Lookup::NotFound),
                Reply::Body {
                    status,
                    headers,
                    body,
                } => (status, headers, body),
            };
            for rule in &self.spec.response.not_found {
                if rule.holds(status, &body, &values)? {
                    return Ok(Lookup::NotFound);
                }
            }
            let items = items(&body, &self.spec.response.list)?;
            for item in &items {
                let wanted = match &self.spec.response.matcher {
                    Some(condition) => condition.holds(item, &values)?,
                    None => true,
                };
                if wanted {
                    return self.user_from(item, &values).map(Lookup::Found);
                }
            }
            match self
                .spec
                .pagination
                .next(&url, &headers, &body, items.len())?
            {
                None => return Ok(Lookup::NotFound),
                Some(_) if pages >= self.spec.pagination.max_pages => {
                    return Err(ConnectorError::Decode(format!(
                        "pagination did not end within {pages} pages (pagination.max_pages)"
                    )));
                }
                Some(next) => url = next,
            }
        }
    }
}

/// A lookup response, as far as the connector cares.
enum Reply {
    /// A status the spec declares as "not found" (with a confirming body).
    NotFound,
    /// A success.
    Body {
        status: u16,
        headers: HeaderMap,
        body: Value,
    },
}

// ---------------------------------------------------------------------------
// The spec, validated.
// ---------------------------------------------------------------------------

/// A validated spec: nothing here can fail to apply for a reason the build
/// could have seen.
#[derive(Debug)]
struct Spec {
    name: String,
    /// Default values of `{{vars.NAME}}`.
    vars: BTreeMap<String, String>,
    auth: Auth,
    request: RequestSpec,
    response: ResponseSpec,
    pagination: Pagination,
}

#[derive(Debug)]
enum Auth {
    Basic { user: Template, password: Template },
    Bearer { token: Template },
    Header { name: HeaderName, value: Template },
    Session(Box<Session>),
}

#[derive(Debug)]
struct Session {
    login: RequestSpec,
    token_from: TokenFrom,
    /// The header the token is sent in.
    header: HeaderName,
    /// Text before the token (`"Bearer "`).
    prefix: String,
}

#[derive(Debug)]
enum TokenFrom {
    Header(HeaderName),
    Json(String),
}

impl std::fmt::Display for TokenFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenFrom::Header(name) => write!(f, "header:{name}"),
            TokenFrom::Json(pointer) => write!(f, "json:{pointer}"),
        }
    }
}

#[derive(Debug)]
struct RequestSpec {
    method: Method,
    url: Template,
    headers: Vec<(HeaderName, Template)>,
    body: Option<Template>,
    /// HTTP Basic on the login request (an OAuth token endpoint's client id
    /// and secret); the lookup's auth lives in `[auth]`.
    basic: Option<Basic>,
}

#[derive(Debug)]
struct Basic {
    user: Template,
    password: Template,
}

#[derive(Debug)]
struct ResponseSpec {
    not_found: Vec<NotFoundRule>,
    /// Pointer to the array of candidates; empty: the body (see [`items`]).
    list: String,
    matcher: Option<Condition>,
    role: String,
    role_default: Option<String>,
    vendor_id: String,
    active: Option<Condition>,
    /// Where the vendor's error code is (pointer or field name).
    error_code: String,
    throttle: Option<ThrottleRule>,
}

/// "Not found" when every part given holds.
#[derive(Debug)]
struct NotFoundRule {
    /// Statuses it applies to; empty: any success.
    status: Vec<u16>,
    when: Option<Condition>,
    /// Pointer to an array/object/string that must exist and be empty.
    empty: Option<String>,
}

impl NotFoundRule {
    fn holds(&self, status: u16, body: &Value, values: &Values<'_>) -> Result<bool, RenderError> {
        let status_ok = if self.status.is_empty() {
            (200..300).contains(&status)
        } else {
            self.status.contains(&status)
        };
        if !status_ok {
            return Ok(false);
        }
        if let Some(pointer) = &self.empty
            && !is_empty_at(body, pointer)
        {
            return Ok(false);
        }
        match &self.when {
            Some(condition) => condition.holds(body, values),
            None => Ok(true),
        }
    }
}

/// A vendor-specific throttle signal beyond 429 (GitHub's 403 with
/// `x-ratelimit-remaining: 0`).
#[derive(Debug)]
struct ThrottleRule {
    status: Vec<u16>,
    header: Option<(HeaderName, String)>,
    /// Epoch seconds at which the quota is back.
    reset_header: Option<HeaderName>,
}

impl ThrottleRule {
    /// The status is listed and the header says so; a `Retry-After` on a
    /// listed status counts too (GitHub's secondary limits send only that).
    fn matches(&self, status: u16, headers: &HeaderMap) -> bool {
        if !self.status.contains(&status) {
            return false;
        }
        match &self.header {
            None => true,
            Some((name, want)) => {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.trim() == want)
                    || headers.contains_key(reqwest::header::RETRY_AFTER)
            }
        }
    }

    /// `Retry-After` first, then the reset header (RFC 9110 before vendor
    /// conventions, as in VENDORS.md §9.3).
    fn wait(&self, headers: &HeaderMap) -> Option<Duration> {
        crate::error::retry_after(headers).or_else(|| {
            let reset: i64 = headers
                .get(self.reset_header.as_ref()?)?
                .to_str()
                .ok()?
                .trim()
                .parse()
                .ok()?;
            let wait = reset.saturating_sub(chrono::Utc::now().timestamp());
            Some(Duration::from_secs(wait.max(0).unsigned_abs()))
        })
    }
}

/// A test on one value of a JSON document.
#[derive(Debug)]
struct Condition {
    pointer: String,
    test: Test,
    case_insensitive: bool,
}

#[derive(Debug)]
enum Test {
    Equals(Expected),
    OneOf(Vec<Expected>),
    /// `true`: null or absent; `false`: present and not null.
    IsNull(bool),
}

#[derive(Debug)]
enum Expected {
    Text(Template),
    Number(serde_json::Number),
    Bool(bool),
}

impl Condition {
    fn holds(&self, doc: &Value, values: &Values<'_>) -> Result<bool, RenderError> {
        let actual = doc.pointer(&self.pointer);
        match &self.test {
            Test::IsNull(want) => Ok(actual.is_none_or(Value::is_null) == *want),
            Test::Equals(expected) => self.equal(actual, expected, values),
            Test::OneOf(list) => {
                for expected in list {
                    if self.equal(actual, expected, values)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
        }
    }

    /// Numbers compare as numbers, everything else as text (so `equals = 0`
    /// matches `0` and `"0"`, and `"2"` matches Zoom's `2`).
    fn equal(
        &self,
        actual: Option<&Value>,
        expected: &Expected,
        values: &Values<'_>,
    ) -> Result<bool, RenderError> {
        let Some(actual) = actual else {
            return Ok(false);
        };
        let want = match (expected, actual) {
            (Expected::Number(n), Value::Number(a)) => return Ok(n.as_f64() == a.as_f64()),
            (Expected::Bool(b), Value::Bool(a)) => return Ok(a == b),
            (Expected::Number(n), _) => n.to_string(),
            (Expected::Bool(b), _) => b.to_string(),
            (Expected::Text(t), _) => render(t, values, Escape::None)?,
        };
        let Some(got) = scalar_text(actual) else {
            return Ok(false);
        };
        Ok(if self.case_insensitive {
            got.to_lowercase() == want.to_lowercase()
        } else {
            got == want
        })
    }
}

#[derive(Debug)]
struct Pagination {
    style: Style,
    max_pages: u64,
}

#[derive(Debug)]
enum Style {
    None,
    Offset {
        offset_param: String,
        limit_param: String,
        limit: u64,
        start: u64,
    },
    Page {
        page_param: String,
        size: Option<(String, u64)>,
        start: u64,
    },
    Cursor {
        next: String,
        param: String,
        has_more: Option<String>,
        size: Option<(String, u64)>,
    },
    Link {
        size: Option<(String, u64)>,
    },
}

impl Pagination {
    /// The first page's URL: the rendered URL plus the page parameters.
    fn first(&self, url: Url) -> Url {
        match &self.style {
            Style::None => url,
            Style::Offset {
                offset_param,
                limit_param,
                limit,
                start,
            } => {
                let url = with_param(&url, offset_param, &start.to_string());
                with_param(&url, limit_param, &limit.to_string())
            }
            Style::Page {
                page_param,
                size,
                start,
            } => {
                let url = with_param(&url, page_param, &start.to_string());
                with_size(url, size)
            }
            Style::Cursor { size, .. } | Style::Link { size } => with_size(url, size),
        }
    }

    /// The next page's URL, or `None` when `current` was the last page.
    fn next(
        &self,
        current: &Url,
        headers: &HeaderMap,
        body: &Value,
        count: usize,
    ) -> Result<Option<Url>, ConnectorError> {
        let count = count as u64;
        Ok(match &self.style {
            Style::None => None,
            Style::Offset {
                offset_param,
                limit,
                start,
                ..
            } => (count > 0 && count >= *limit).then(|| {
                let offset = param_u64(current, offset_param).unwrap_or(*start);
                with_param(current, offset_param, &(offset + count).to_string())
            }),
            Style::Page {
                page_param,
                size,
                start,
            } => {
                let full = size.as_ref().is_none_or(|(_, size)| count >= *size);
                (count > 0 && full).then(|| {
                    let page = param_u64(current, page_param).unwrap_or(*start);
                    with_param(current, page_param, &(page + 1).to_string())
                })
            }
            Style::Cursor {
                next,
                param,
                has_more,
                ..
            } => {
                let more = has_more
                    .as_ref()
                    .is_none_or(|p| body.pointer(p).is_some_and(|v| v == &Value::Bool(true)));
                match body.pointer(next).and_then(scalar_text) {
                    Some(cursor) if more && !cursor.is_empty() => {
                        Some(with_param(current, param, &cursor))
                    }
                    _ => None,
                }
            }
            Style::Link { .. } => match next_link(headers) {
                None => None,
                Some(link) => {
                    let next = current.join(&link).map_err(|_| {
                        ConnectorError::Decode("the Link header's next page is not a URL".into())
                    })?;
                    if next.origin() != current.origin() {
                        return Err(ConnectorError::Decode(
                            "the Link header's next page is on another host; not following it with the credential".into(),
                        ));
                    }
                    Some(next)
                }
            },
        })
    }
}

fn with_size(url: Url, size: &Option<(String, u64)>) -> Url {
    match size {
        Some((param, size)) => with_param(&url, param, &size.to_string()),
        None => url,
    }
}

/// `url` with `name` set to `value` (replacing any earlier value).
fn with_param(url: &Url, name: &str, value: &str) -> Url {
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut next = url.clone();
    next.query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair(name, value);
    next
}

fn param_u64(url: &Url, name: &str) -> Option<u64> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.parse().ok())
}

/// The target of the first `rel="next"` link in the `Link` headers (RFC 8288).
fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            parse_links(v)
                .into_iter()
                .find(|(_, rels)| rels.iter().any(|r| r.eq_ignore_ascii_case("next")))
                .map(|(target, _)| target)
        })
}

/// `<target>; rel="a b"; x=y, <target2>; rel=c` → targets with their rels.
/// Tolerant of spacing and of parameters it does not know.
fn parse_links(value: &str) -> Vec<(String, Vec<String>)> {
    let mut links = Vec::new();
    let mut rest = value;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>') else {
            break;
        };
        let target = rest[open + 1..open + close].trim().to_owned();
        rest = &rest[open + close + 1..];
        let mut rels = Vec::new();
        // Parameters run until the next comma outside quotes.
        let mut end = rest.len();
        let mut quoted = false;
        for (i, c) in rest.char_indices() {
            match c {
                '"' => quoted = !quoted,
                ',' if !quoted => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        for param in rest[..end].split(';') {
            if let Some((name, value)) = param.split_once('=')
                && name.trim().eq_ignore_ascii_case("rel")
            {
                rels.extend(
                    value
                        .trim()
                        .trim_matches('"')
                        .split_whitespace()
                        .map(str::to_owned),
                );
            }
        }
        links.push((target, rels));
        rest = &rest[end..];
    }
    links
}

/// The candidates in a response: the array at `list`; with `list = ""` the
/// body itself — its elements when it is an array (GitHub's member list),
/// else the body as the one candidate (a single-user endpoint).
fn items<'b>(body: &'b Value, list: &str) -> Result<Vec<&'b Value>, ConnectorError> {
    if list.is_empty() {
        return Ok(match body {
            Value::Array(items) => items.iter().collect(),
            single => vec![single],
        });
    }
    match body.pointer(list) {
        Some(Value::Array(items)) => Ok(items.iter().collect()),
        Some(Value::Null) => Ok(Vec::new()),
        Some(_) => Err(ConnectorError::Decode(format!("{list} is not a list"))),
        None => Err(ConnectorError::Decode(format!("no list at {list}"))),
    }
}

/// Strings as they are, numbers and booleans as text; `None` for the rest.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Present and empty; absent is *not* empty, so a changed response shape
/// fails loudly instead of reporting everyone as not found.
fn is_empty_at(body: &Value, pointer: &str) -> bool {
    match body.pointer(pointer) {
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        Some(Value::String(s)) => s.is_empty(),
        _ => false,
    }
}

/// The vendor's error code at `field` (a pointer or a top-level field name).
fn error_code(body: &Value, field: &str) -> Option<String> {
    let found = if field.starts_with('/') {
        body.pointer(field)
    } else {
        body.get(field)
    }?;
    scalar_text(found)
}

// ---------------------------------------------------------------------------
// Templates.
// ---------------------------------------------------------------------------

/// A `{{…}}` variable.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Var {
    Email,
    EmailRaw,
    UserId,
    ExternalId,
    BaseUrl,
    Named(String),
    Secret,
    SecretField(String),
}

const KNOWN_VARS: &str =
    "email, email_raw, user_id, external_id, base_url, vars.NAME, secret, secret.FIELD";

impl Var {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "email" => Var::Email,
            "email_raw" => Var::EmailRaw,
            "user_id" => Var::UserId,
            "external_id" => Var::ExternalId,
            "base_url" => Var::BaseUrl,
            "secret" => Var::Secret,
            _ => {
                if let Some(n) = name.strip_prefix("vars.") {
                    Var::Named(identifier(n)?.to_owned())
                } else if let Some(f) = name.strip_prefix("secret.") {
                    Var::SecretField(identifier(f)?.to_owned())
                } else {
                    return None;
                }
            }
        })
    }

    fn is_secret(&self) -> bool {
        matches!(self, Var::Secret | Var::SecretField(_))
    }

    fn is_user(&self) -> bool {
        matches!(
            self,
            Var::Email | Var::EmailRaw | Var::UserId | Var::ExternalId
        )
    }
}

fn identifier(name: &str) -> Option<&str> {
    (!name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
    .then_some(name)
}

#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    Var(Var),
}

/// A string with `{{…}}` variables, remembering its key for error messages.
#[derive(Debug, Clone)]
struct Template {
    path: String,
    pieces: Vec<Piece>,
}

/// Which variables a place may use.
#[derive(Clone, Copy)]
struct Allow {
    secret: bool,
    user: bool,
}

impl Allow {
    /// The lookup URL: never secrets (URLs are logged by proxies and vendors).
    const URL: Allow = Allow {
        secret: false,
        user: true,
    };
    /// The lookup's headers and body.
    const PAYLOAD: Allow = Allow {
        secret: true,
        user: true,
    };
    /// Auth and the login request's headers and body: the same for every user.
    const AUTH: Allow = Allow {
        secret: true,
        user: false,
    };
    /// The login URL.
    const LOGIN_URL: Allow = Allow {
        secret: false,
        user: false,
    };
    /// Values compared in responses.
    const CONDITION: Allow = Allow {
        secret: false,
        user: true,
    };
}

impl Template {
    fn parse(path: String, text: &str, allow: Allow) -> Checked<Self> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                pieces.push(Piece::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                return Err(Problem::new(path, "unclosed `{{`"));
            };
            let name = after[..end].trim();
            let Some(var) = Var::parse(name) else {
                return Err(Problem::new(
                    path,
                    format!("unknown variable `{{{{{name}}}}}` (known: {KNOWN_VARS})"),
                ));
            };
            if var.is_secret() && !allow.secret {
                return Err(Problem::new(
                    path,
                    "secrets may only be used in headers, bodies and [auth], never in URLs or comparisons",
                ));
            }
            if var.is_user() && !allow.user {
                return Err(Problem::new(
                    path,
                    format!(
                        "`{{{{{name}}}}}` is per user; authentication must not depend on the user"
                    ),
                ));
            }
            pieces.push(Piece::Var(var));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Self { path, pieces })
    }

    fn literal(path: String, text: &str) -> Self {
        Self {
            path,
            pieces: vec![Piece::Text(text.to_owned())],
        }
    }

    fn vars(&self) -> impl Iterator<Item = &Var> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Var(v) => Some(v),
            Piece::Text(_) => None,
        })
    }

    fn uses_secret(&self) -> bool {
        self.vars().any(Var::is_secret)
    }
}

/// How substituted values are escaped; template text is never escaped.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Escape {
    None,
    /// Percent-encoded except RFC 3986 unreserved characters: safe in a
    /// path segment and in a query value alike.
    Url,
    /// JSON string escapes, without the quotes (the template has them).
    Json,
}

/// What variables stand for during one rendering.
struct Values<'a> {
    user: Option<&'a UserRef>,
    base_url: &'a str,
    vars: &'a BTreeMap<String, String>,
    secret: SecretSource<'a>,
}

enum SecretSource<'a> {
    Real(&'a Secrets),
    /// Build-time checks render a stand-in, so a check's error can never
    /// carry the real secret.
    Sample,
}

/// The credential: whole, and as named parts when the spec uses `{{secret.FIELD}}`.
struct Secrets {
    whole: SecretString,
    parts: Option<CredentialParts>,
}

#[derive(Debug)]
enum RenderError {
    MissingExternalId,
    /// A value that cannot travel in a URL path (`.` and `..` would move up
    /// the path even percent-encoded, per the URL standard).
    DotSegment,
    /// A variable with no value here; validation makes this unreachable.
    Unavailable(&'static str),
}

impl From<RenderError> for ConnectorError {
    fn from(e: RenderError) -> Self {
        ConnectorError::Unsupported(match e {
            RenderError::MissingExternalId => NEEDS_EXTERNAL_ID,
            RenderError::DotSegment => "put `.` or `..` into a URL",
            RenderError::Unavailable(what) => what,
        })
    }
}

fn render(template: &Template, values: &Values<'_>, escape: Escape) -> Result<String, RenderError> {
    let mut out = String::new();
    for piece in &template.pieces {
        let var = match piece {
            Piece::Text(text) => {
                out.push_str(text);
                continue;
            }
            Piece::Var(var) => var,
        };
        let user = || {
            values
                .user
                .ok_or(RenderError::Unavailable("use a user variable here"))
        };
        let value: Cow<'_, str> = match var {
            // The base URL is a URL prefix, not a value: never encoded in URLs.
            Var::BaseUrl if escape == Escape::Url => {
                out.push_str(values.base_url);
                continue;
            }
            Var::BaseUrl => values.base_url.into(),
            Var::Email => user()?.email.trim().to_lowercase().into(),
            Var::EmailRaw => user()?.email.as_str().into(),
            Var::UserId => user()?.id.as_str().into(),
            Var::ExternalId => match user()?.external_id.as_deref().map(str::trim) {
                Some(id) if !id.is_empty() => id.into(),
                _ => return Err(RenderError::MissingExternalId),
            },
            Var::Named(name) => values
                .vars
                .get(name)
                .map(String::as_str)
                .ok_or(RenderError::Unavailable("use an undefined variable"))?
                .into(),
            Var::Secret => match &values.secret {
                SecretSource::Real(s) => s.whole.expose_secret().into(),
                SecretSource::Sample => "sample-secret".into(),
            },
            Var::SecretField(field) => match &values.secret {
                SecretSource::Real(s) => s
                    .parts
                    .as_ref()
                    .and_then(|p| p.get(field))
                    .ok_or(RenderError::Unavailable("use a missing credential field"))?
                    .expose_secret()
                    .into(),
                SecretSource::Sample => "sample-secret".into(),
            },
        };
        match escape {
            Escape::None => out.push_str(&value),
            Escape::Url => {
                if value == "." || value == ".." {
                    return Err(RenderError::DotSegment);
                }
                percent_encode_into(&mut out, &value);
            }
            Escape::Json => {
                let quoted = Value::String(value.into_owned()).to_string();
                out.push_str(&quoted[1..quoted.len() - 1]);
            }
        }
    }
    Ok(out)
}

fn percent_encode_into(out: &mut String, value: &str) {
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

fn render_url(template: &Template, values: &Values<'_>) -> Result<Url, ConnectorError> {
    let text = render(template, values, Escape::Url)?;
    // Validated with sample values at build time; a failure here comes from
    // a user value, whose text must not reach the error.
    Url::parse(&text).map_err(|_| ConnectorError::Unsupported("build a valid URL for this user"))
}

/// A header value for the wire; secret-bearing ones are marked sensitive so
/// that HTTP/2 never indexes them and `Debug` never prints them.
fn runtime_header(value: &str, secret: bool) -> Result<HeaderValue, ConnectorError> {
    let mut header = HeaderValue::from_str(value)
        .map_err(|_| ConnectorError::Unsupported("send a header value with control characters"))?;
    header.set_sensitive(secret);
    Ok(header)
}

// ---------------------------------------------------------------------------
// Loading and validation.
// ---------------------------------------------------------------------------

/// A spec problem: the key (relative to the spec's root) and why.
#[derive(Debug, PartialEq)]
struct Problem {
    path: String,
    reason: String,
    /// The key is an option of the SaaS app (`vars.org`), not a key of the
    /// spec, even when the spec came from a preset file.
    option: bool,
}

impl Problem {
    fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
            option: false,
        }
    }

    fn option(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            option: true,
            ..Self::new(path, reason)
        }
    }
}

type Checked<T> = Result<T, Problem>;

/// Where the spec came from, for error messages.
enum Origin {
    Inline,
    Preset { name: String, source: String },
}

impl Origin {
    /// Inline specs name the option key; presets name the file and the key in it.
    fn error(&self, ctx: &BuildContext<'_>, problem: Problem) -> BuildError {
        match self {
            Origin::Inline => ctx.bad_option(&problem.path, problem.reason),
            Origin::Preset { .. } if problem.option => {
                ctx.bad_option(&problem.path, problem.reason)
            }
            Origin::Preset { name, source } => ctx.bad_option(
                "preset",
                format!(
                    "preset `{name}` ({source}): {}: {}",
                    problem.path, problem.reason
                ),
            ),
        }
    }
}

fn load_spec_value(ctx: &BuildContext<'_>) -> Result<(Value, Origin), BuildError> {
    let preset = ctx.option_str("preset")?;
    let inline = ctx.saas.options.get("spec").filter(|v| !v.is_null());
    match (preset, inline) {
        (Some(_), Some(_)) => {
            Err(ctx.bad_option("spec", "set either `preset` or `spec`, not both"))
        }
        (None, None) => Err(ctx.bad_option(
            "preset",
            format!(
                "set `preset` (shipped: {}) or describe the vendor in `spec` (see docs/presets.md)",
                shipped_names()
            ),
        )),
        (None, Some(spec)) => {
            if ctx.option_str("presets_dir")?.is_some() {
                return Err(ctx.bad_option("presets_dir", "only used with `preset`"));
            }
            Ok((spec.clone(), Origin::Inline))
        }
        (Some(name), None) => {
            let (source, text) = find_preset(ctx, &name)?;
            let value = parse_toml(&text).map_err(|e| {
                ctx.bad_option("preset", format!("preset `{name}` ({source}): {e}"))
            })?;
            Ok((value, Origin::Preset { name, source }))
        }
    }
}

fn shipped_names() -> String {
    SHIPPED
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The preset's text and where it came from. Order: `options.presets_dir`,
/// else `$ROLECALL_PRESETS_DIR`, else `./presets` then the source tree's
/// `presets/`; then the copy embedded in the binary. A file on disk wins over
/// the embedded copy so that a site can fix a preset without a release.
fn find_preset(ctx: &BuildContext<'_>, name: &str) -> Result<(String, String), BuildError> {
    if identifier(name).is_none() {
        return Err(ctx.bad_option(
            "preset",
            "a preset name is letters, digits, '-' and '_' (the file presets/<name>.toml)",
        ));
    }
    let dirs: Vec<PathBuf> = match ctx
        .option_str("presets_dir")?
        .or_else(|| std::env::var(PRESETS_ENV).ok().filter(|d| !d.is_empty()))
    {
        Some(dir) => vec![PathBuf::from(dir)],
        None => vec![
            PathBuf::from("presets"),
            PathBuf::from(COMPILED_PRESETS_DIR),
        ],
    };
    for dir in &dirs {
        let path = dir.join(format!("{name}.toml"));
        match std::fs::read_to_string(&path) {
            Ok(text) => return Ok((path.display().to_string(), text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(
                    ctx.bad_option("preset", format!("cannot read {}: {e}", path.display()))
                );
            }
        }
    }
    match SHIPPED.iter().find(|(shipped, _)| *shipped == name) {
        Some((_, text)) => Ok(("built in".to_owned(), (*text).to_owned())),
        None => Err(ctx.bad_option(
            "preset",
            format!(
                "no preset `{name}` (looked in {}; shipped: {})",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                shipped_names()
            ),
        )),
    }
}

/// TOML through the `config` crate the workspace already uses, so preset
/// files and inline specs (which arrive through the same crate) are read alike.
fn parse_toml(text: &str) -> Result<Value, String> {
    config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize::<Value>())
        .map_err(|e| e.to_string())
}

/// The spec's defaults overridden by `options.vars`; every variable the
/// templates use must have a non-empty value, and every value given must be used.
fn merge_vars(
    ctx: &BuildContext<'_>,
    spec: &Spec,
    root: &str,
) -> Checked<BTreeMap<String, String>> {
    let mut used: BTreeMap<String, String> = BTreeMap::new();
    for template in spec.templates() {
        for var in template.vars() {
            if let Var::Named(name) = var {
                used.entry(name.clone())
                    .or_insert_with(|| template.path.clone());
            }
        }
    }
    for name in spec.vars.keys() {
        if !used.contains_key(name) {
            return Err(Problem::new(
                join(&join(root, "vars"), name),
                "not used by any template",
            ));
        }
    }
    let mut vars = spec.vars.clone();
    if let Some(given) = ctx.saas.options.get("vars").filter(|v| !v.is_null()) {
        let table = Table::new(given, "vars".into()).map_err(as_option)?;
        for (name, value) in string_map(&table).map_err(as_option)? {
            if !used.contains_key(&name) {
                let known: Vec<&str> = used.keys().map(String::as_str).collect();
                return Err(Problem::option(
                    format!("vars.{name}"),
                    format!(
                        "the spec uses no such variable (it uses: {})",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
            vars.insert(name, value);
        }
    }
    for (name, place) in &used {
        match vars.get(name) {
            Some(value) if !value.trim().is_empty() => {}
            Some(_) => return Err(Problem::option(format!("vars.{name}"), "must not be empty")),
            None => {
                return Err(Problem::option(
                    format!("vars.{name}"),
                    format!(
                        "the spec needs this variable (used in {place}); set it in options.vars"
                    ),
                ));
            }
        }
    }
    Ok(vars)
}

fn as_option(problem: Problem) -> Problem {
    Problem {
        option: true,
        ..problem
    }
}

/// The credential, split into parts when the spec uses `{{secret.FIELD}}`.
fn secrets_for(ctx: &BuildContext<'_>, spec: &Spec) -> Result<Secrets, BuildError> {
    let fields: BTreeSet<&str> = spec
        .templates()
        .flat_map(Template::vars)
        .filter_map(|v| match v {
            Var::SecretField(f) => Some(f.as_str()),
            _ => None,
        })
        .collect();
    let parts = if fields.is_empty() {
        None
    } else {
        let fields: Vec<&str> = fields.into_iter().collect();
        Some(
            CredentialParts::parse(&ctx.credential, &fields)
                .map_err(|reason| ctx.malformed(reason))?,
        )
    };
    Ok(Secrets {
        whole: ctx.credential.clone(),
        parts,
    })
}

fn render_for_check(template: &Template, values: &Values<'_>, escape: Escape) -> Checked<String> {
    render(template, values, escape)
        .map_err(|e| Problem::new(template.path.clone(), format!("cannot be rendered ({e:?})")))
}

fn header_value_check(template: &Template, value: &str) -> Checked<()> {
    HeaderValue::from_str(value)
        .map(drop)
        .map_err(|_| Problem::new(template.path.clone(), "is not a valid HTTP header value"))
}

fn check_request(request: &RequestSpec, values: &Values<'_>) -> Checked<()> {
    let url = render_for_check(&request.url, values, Escape::Url)?;
    match Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {}
        Ok(_) => {
            return Err(Problem::new(
                request.url.path.clone(),
                "must be an http(s) URL",
            ));
        }
        Err(e) => {
            return Err(Problem::new(
                request.url.path.clone(),
                format!("does not render to a URL ({e}); start it with {{{{base_url}}}}"),
            ));
        }
    }
    for (_, template) in &request.headers {
        header_value_check(template, &render_for_check(template, values, Escape::None)?)?;
    }
    if let Some(body) = &request.body {
        let text = render_for_check(body, values, Escape::Json)?;
        if let Err(e) = serde_json::from_str::<Value>(&text) {
            return Err(Problem::new(
                body.path.clone(),
                format!("does not render to JSON ({e}); put string variables inside quotes"),
            ));
        }
    }
    Ok(())
}

impl Spec {
    /// Every template, for checks that span the spec (variables, secret fields).
    fn templates(&self) -> impl Iterator<Item = &Template> {
        let mut all: Vec<&Template> = Vec::new();
        push_request(&mut all, &self.request);
        match &self.auth {
            Auth::Basic { user, password } => all.extend([user, password]),
            Auth::Bearer { token } => all.push(token),
            Auth::Header { value, .. } => all.push(value),
            Auth::Session(s) => push_request(&mut all, &s.login),
        }
        let response = &self.response;
        let conditions = response
            .not_found
            .iter()
            .filter_map(|r| r.when.as_ref())
            .chain(response.matcher.as_ref())
            .chain(response.active.as_ref());
        for condition in conditions {
            let expected: Vec<&Expected> = match &condition.test {
                Test::Equals(e) => vec![e],
                Test::OneOf(list) => list.iter().collect(),
                Test::IsNull(_) => Vec::new(),
            };
            for e in expected {
                if let Expected::Text(t) = e {
                    all.push(t);
                }
            }
        }
        all.into_iter()
    }
}

fn push_request<'s>(all: &mut Vec<&'s Template>, request: &'s RequestSpec) {
    all.push(&request.url);
    all.extend(request.headers.iter().map(|(_, t)| t));
    all.extend(request.body.as_ref());
    if let Some(basic) = &request.basic {
        all.extend([&basic.user, &basic.password]);
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// A JSON object being validated: knows its key path, so every problem names
/// the exact key.
struct Table<'v> {
    path: String,
    map: &'v Map<String, Value>,
}

impl<'v> Table<'v> {
    fn new(value: &'v Value, path: String) -> Checked<Self> {
        match value {
            Value::Object(map) => Ok(Self { path, map }),
            _ => Err(Problem::new(path, "must be a table")),
        }
    }

    /// Typos must not pass silently.
    fn only(&self, known: &[&str]) -> Checked<()> {
        match self.map.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(Problem::new(
                self.key(k),
                format!("unknown key (known: {})", known.join(", ")),
            )),
            None => Ok(()),
        }
    }

    fn key(&self, key: &str) -> String {
        join(&self.path, key)
    }

    fn get(&self, key: &str) -> Option<&'v Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    fn str(&self, key: &str) -> Checked<Option<&'v str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(Problem::new(self.key(key), "must be a string")),
        }
    }

    fn required_str(&self, key: &str) -> Checked<&'v str> {
        self.str(key)?
            .ok_or_else(|| Problem::new(self.key(key), "is required"))
    }

    fn bool(&self, key: &str) -> Checked<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(Problem::new(self.key(key), "must be true or false")),
        }
    }

    fn positive(&self, key: &str) -> Checked<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 => Ok(Some(n)),
                _ => Err(Problem::new(self.key(key), "must be a positive integer")),
            },
        }
    }

    fn unsigned(&self, key: &str) -> Checked<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| Problem::new(self.key(key), "must be a non-negative integer")),
        }
    }

    fn table(&self, key: &str) -> Checked<Option<Table<'v>>> {
        self.get(key)
            .map(|v| Table::new(v, self.key(key)))
            .transpose()
    }

    fn required_table(&self, key: &str) -> Checked<Table<'v>> {
        self.table(key)?
            .ok_or_else(|| Problem::new(self.key(key), "is required"))
    }

    fn template(&self, key: &str, allow: Allow) -> Checked<Option<Template>> {
        self.str(key)?
            .map(|text| Template::parse(self.key(key), text, allow))
            .transpose()
    }

    fn required_template(&self, key: &str, allow: Allow) -> Checked<Template> {
        self.template(key, allow)?
            .ok_or_else(|| Problem::new(self.key(key), "is required"))
    }

    /// A JSON pointer: `""` (the whole document) or `/a/b`.
    fn pointer(&self, key: &str) -> Checked<Option<String>> {
        match self.str(key)? {
            None => Ok(None),
            Some(p) if p.is_empty() || p.starts_with('/') => Ok(Some(p.to_owned())),
            Some(_) => Err(Problem::new(
                self.key(key),
                "must be a JSON pointer: \"\" or starting with / (e.g. \"/user/id\")",
            )),
        }
    }

    /// A pointer to a value inside the document (not the document itself).
    fn inner_pointer(&self, key: &str) -> Checked<Option<String>> {
        match self.pointer(key)? {
            Some(p) if p.is_empty() => Err(Problem::new(
                self.key(key),
                "must point into the document (e.g. \"/role\")",
            )),
            other => Ok(other),
        }
    }

    fn header_name(&self, key: &str) -> Checked<Option<HeaderName>> {
        self.str(key)?
            .map(|name| {
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| Problem::new(self.key(key), "is not a valid HTTP header name"))
            })
            .transpose()
    }

    /// One status or a list of them.
    fn statuses(&self, key: &str, allowed: fn(u16) -> bool, why: &str) -> Checked<Vec<u16>> {
        let values: Vec<&Value> = match self.get(key) {
            None => return Ok(Vec::new()),
            Some(Value::Array(list)) => list.iter().collect(),
            Some(one) => vec![one],
        };
        values
            .into_iter()
            .map(|v| match v.as_u64().and_then(|n| u16::try_from(n).ok()) {
                Some(code) if allowed(code) => Ok(code),
                Some(_) => Err(Problem::new(self.key(key), why.to_owned())),
                None => Err(Problem::new(
                    self.key(key),
                    "must be an HTTP status or a list of them",
                )),
            })
            .collect()
    }
}

fn string_map(table: &Table<'_>) -> Checked<BTreeMap<String, String>> {
    table
        .map
        .iter()
        .map(|(name, value)| {
            if identifier(name).is_none() {
                return Err(Problem::new(
                    table.key(name),
                    "a variable name is letters, digits, '-' and '_'",
                ));
            }
            match value {
                Value::String(s) => Ok((name.clone(), s.clone())),
                _ => Err(Problem::new(table.key(name), "must be a string")),
            }
        })
        .collect()
}

fn parse_spec(value: &Value, root: &str) -> Checked<Spec> {
    let top = Table::new(value, root.to_owned())?;
    top.only(&[
        "name",
        "description",
        "vars",
        "auth",
        "request",
        "response",
        "pagination",
    ])?;
    let name = top.str("name")?.unwrap_or("inline spec").to_owned();
    top.str("description")?;
    let vars = match top.table("vars")? {
        Some(t) => string_map(&t)?,
        None => BTreeMap::new(),
    };
    let request = parse_request(
        &top.required_table("request")?,
        Allow::URL,
        Allow::PAYLOAD,
        false,
    )?;
    let auth = parse_auth(&top.required_table("auth")?)?;
    let response_table = top.required_table("response")?;
    let response = parse_response(&response_table)?;
    let pagination = match top.table("pagination")? {
        Some(t) => parse_pagination(&t)?,
        None => Pagination {
            style: Style::None,
            max_pages: DEFAULT_MAX_PAGES,
        },
    };
    if !matches!(pagination.style, Style::None) && response.matcher.is_none() {
        return Err(Problem::new(
            response_table.key("match"),
            "pagination needs `match` to pick the user out of each page",
        ));
    }
    Ok(Spec {
        name,
        vars,
        auth,
        request,
        response,
        pagination,
    })
}

fn parse_request(
    t: &Table<'_>,
    url_allow: Allow,
    allow: Allow,
    login: bool,
) -> Checked<RequestSpec> {
    if login {
        t.only(&["method", "url", "headers", "body", "basic"])?;
    } else {
        t.only(&["method", "url", "headers", "body"])?;
    }
    let method = match t
        .str("method")?
        .unwrap_or("GET")
        .to_ascii_uppercase()
        .as_str()
    {
        "GET" => Method::GET,
        "POST" => Method::POST,
        _ => {
            return Err(Problem::new(
                t.key("method"),
                "must be GET or POST (a lookup reads, it never changes anything)",
            ));
        }
    };
    let url = t.required_template("url", url_allow)?;
    let base_at = url
        .pieces
        .iter()
        .position(|p| matches!(p, Piece::Var(Var::BaseUrl)));
    if base_at.is_some_and(|i| i != 0) {
        return Err(Problem::new(
            url.path.clone(),
            "{{base_url}} may only start the URL",
        ));
    }
    let mut headers = Vec::new();
    if let Some(h) = t.table("headers")? {
        for (name, value) in h.map {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| Problem::new(h.key(name), "is not a valid HTTP header name"))?;
            let Value::String(text) = value else {
                return Err(Problem::new(h.key(name), "must be a string"));
            };
            headers.push((header, Template::parse(h.key(name), text, allow)?));
        }
    }
    let body = t.template("body", allow)?;
    if body.is_some() && method == Method::GET {
        return Err(Problem::new(
            t.key("body"),
            "a body needs method = \"POST\"",
        ));
    }
    let basic = match t.table("basic")? {
        Some(b) => {
            b.only(&["user", "password"])?;
            Some(Basic {
                user: b.required_template("user", allow)?,
                password: b
                    .template("password", allow)?
                    .unwrap_or_else(|| Template::literal(b.key("password"), "")),
            })
        }
        None => None,
    };
    Ok(RequestSpec {
        method,
        url,
        headers,
        body,
        basic,
    })
}

fn parse_auth(t: &Table<'_>) -> Checked<Auth> {
    let kind = t.required_str("kind")?;
    Ok(match kind {
        "basic" => {
            t.only(&["kind", "user", "password"])?;
            Auth::Basic {
                user: t.required_template("user", Allow::AUTH)?,
                password: t
                    .template("password", Allow::AUTH)?
                    .unwrap_or_else(|| Template::literal(t.key("password"), "")),
            }
        }
        "bearer" => {
            t.only(&["kind", "token"])?;
            Auth::Bearer {
                token: t.required_template("token", Allow::AUTH)?,
            }
        }
        "header" => {
            t.only(&["kind", "name", "value"])?;
            Auth::Header {
                name: t
                    .header_name("name")?
                    .ok_or_else(|| Problem::new(t.key("name"), "is required"))?,
                value: t.required_template("value", Allow::AUTH)?,
            }
        }
        "session" => {
            t.only(&["kind", "login", "token_from", "header", "prefix"])?;
            let login = parse_request(
                &t.required_table("login")?,
                Allow::LOGIN_URL,
                Allow::AUTH,
                true,
            )?;
            let from = t.required_str("token_from")?;
            let token_from = if let Some(name) = from.strip_prefix("header:") {
                TokenFrom::Header(HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
                    Problem::new(
                        t.key("token_from"),
                        "`header:` needs a valid HTTP header name",
                    )
                })?)
            } else if let Some(pointer) = from.strip_prefix("json:") {
                if !pointer.starts_with('/') {
                    return Err(Problem::new(
                        t.key("token_from"),
                        "`json:` needs a JSON pointer such as json:/access_token",
                    ));
                }
                TokenFrom::Json(pointer.to_owned())
            } else {
                return Err(Problem::new(
                    t.key("token_from"),
                    "must be \"header:<Name>\" or \"json:<pointer>\"",
                ));
            };
            let prefix = t.str("prefix")?.unwrap_or("").to_owned();
            if HeaderValue::from_str(&prefix).is_err() {
                return Err(Problem::new(
                    t.key("prefix"),
                    "is not valid in an HTTP header",
                ));
            }
            Auth::Session(Box::new(Session {
                login,
                token_from,
                header: t.header_name("header")?.unwrap_or(AUTHORIZATION),
                prefix,
            }))
        }
        _ => {
            return Err(Problem::new(
                t.key("kind"),
                "must be basic, bearer, header or session",
            ));
        }
    })
}

/// Statuses that may mean "not found": successes and client errors other
/// than those every connector must treat alike (auth, timeout, throttle).
fn not_found_status(code: u16) -> bool {
    (200..300).contains(&code)
        || ((400..500).contains(&code) && !matches!(code, 401 | 403 | 408 | 429))
}

fn parse_response(t: &Table<'_>) -> Checked<ResponseSpec> {
    t.only(&[
        "not_found",
        "list",
        "match",
        "role",
        "role_default",
        "vendor_id",
        "active",
        "error_code",
        "throttle",
    ])?;
    let not_found = match t.get("not_found") {
        None => Vec::new(),
        Some(Value::Array(rules)) => rules
            .iter()
            .enumerate()
            .map(|(i, rule)| parse_not_found(&Table::new(rule, t.key(&format!("not_found.{i}")))?))
            .collect::<Checked<_>>()?,
        Some(rule) => vec![parse_not_found(&Table::new(rule, t.key("not_found"))?)?],
    };
    let condition = |key: &str| -> Checked<Option<Condition>> {
        match t.table(key)? {
            None => Ok(None),
            Some(c) => {
                c.only(&["pointer", "equals", "one_of", "is_null", "case_insensitive"])?;
                let condition = parse_condition(&c)?;
                if condition.is_none() {
                    return Err(Problem::new(c.key("pointer"), "is required"));
                }
                Ok(condition)
            }
        }
    };
    let throttle = match t.table("throttle")? {
        None => None,
        Some(r) => {
            r.only(&["status", "header", "equals", "reset_header"])?;
            let status = r.statuses(
                "status",
                |code| (400..600).contains(&code),
                "must be 4xx or 5xx statuses",
            )?;
            if status.is_empty() {
                return Err(Problem::new(r.key("status"), "is required"));
            }
            let header = match (r.header_name("header")?, r.get("equals")) {
                (None, None) => None,
                (Some(name), Some(v)) => Some((
                    name,
                    scalar_text(v).ok_or_else(|| {
                        Problem::new(r.key("equals"), "must be a string or number")
                    })?,
                )),
                (Some(_), None) => {
                    return Err(Problem::new(r.key("equals"), "is required with `header`"));
                }
                (None, Some(_)) => {
                    return Err(Problem::new(r.key("header"), "is required with `equals`"));
                }
            };
            Some(ThrottleRule {
                status,
                header,
                reset_header: r.header_name("reset_header")?,
            })
        }
    };
    Ok(ResponseSpec {
        not_found,
        list: t.pointer("list")?.unwrap_or_default(),
        matcher: condition("match")?,
        role: t
            .inner_pointer("role")?
            .ok_or_else(|| Problem::new(t.key("role"), "is required"))?,
        role_default: t.str("role_default")?.map(str::to_owned),
        vendor_id: t
            .inner_pointer("vendor_id")?
            .ok_or_else(|| Problem::new(t.key("vendor_id"), "is required"))?,
        active: condition("active")?,
        error_code: t.str("error_code")?.unwrap_or("/code").to_owned(),
        throttle,
    })
}

fn parse_not_found(t: &Table<'_>) -> Checked<NotFoundRule> {
    t.only(&[
        "status",
        "empty",
        "pointer",
        "equals",
        "one_of",
        "is_null",
        "case_insensitive",
    ])?;
    let rule = NotFoundRule {
        status: t.statuses(
            "status",
            not_found_status,
            "may only hold 2xx and 4xx statuses other than 401, 403, 408 and 429 (those are errors for every connector)",
        )?,
        when: parse_condition(t)?,
        empty: t.pointer("empty")?,
    };
    if rule.status.is_empty() && rule.when.is_none() && rule.empty.is_none() {
        return Err(Problem::new(
            t.path.clone(),
            "needs `status`, `empty` or `pointer` with a test",
        ));
    }
    Ok(rule)
}

/// `pointer` with exactly one of `equals`, `one_of`, `is_null`; `None` when
/// the table has none of these keys.
fn parse_condition(t: &Table<'_>) -> Checked<Option<Condition>> {
    let pointer = t.pointer("pointer")?;
    let tests = ["equals", "one_of", "is_null"]
        .into_iter()
        .filter(|k| t.has(k))
        .count();
    let pointer = match (pointer, tests) {
        (None, 0) => {
            if t.has("case_insensitive") {
                return Err(Problem::new(t.key("pointer"), "is required"));
            }
            return Ok(None);
        }
        (None, _) => return Err(Problem::new(t.key("pointer"), "is required")),
        (Some(_), 0) => {
            return Err(Problem::new(
                t.key("pointer"),
                "needs a test: `equals`, `one_of` or `is_null`",
            ));
        }
        (Some(_), 2..) => {
            return Err(Problem::new(
                t.path.clone(),
                "use only one of `equals`, `one_of`, `is_null`",
            ));
        }
        (Some(p), _) => p,
    };
    let expected = |value: &Value, path: String| -> Checked<Expected> {
        match value {
            Value::String(s) => Ok(Expected::Text(Template::parse(path, s, Allow::CONDITION)?)),
            Value::Number(n) => Ok(Expected::Number(n.clone())),
            Value::Bool(b) => Ok(Expected::Bool(*b)),
            _ => Err(Problem::new(path, "must be a string, number or boolean")),
        }
    };
    let test = if let Some(v) = t.get("equals") {
        Test::Equals(expected(v, t.key("equals"))?)
    } else if let Some(v) = t.get("one_of") {
        let Value::Array(list) = v else {
            return Err(Problem::new(t.key("one_of"), "must be a list"));
        };
        Test::OneOf(
            list.iter()
                .enumerate()
                .map(|(i, v)| expected(v, t.key(&format!("one_of.{i}"))))
                .collect::<Checked<_>>()?,
        )
    } else {
        Test::IsNull(t.bool("is_null")?.unwrap_or(true))
    };
    Ok(Some(Condition {
        pointer,
        test,
        case_insensitive: t.bool("case_insensitive")?.unwrap_or(false),
    }))
}

fn parse_pagination(t: &Table<'_>) -> Checked<Pagination> {
    let style = t.str("style")?.unwrap_or("none");
    let size = |default_param: Option<&str>| -> Checked<Option<(String, u64)>> {
        let param = t.str("size_param")?.or(default_param);
        match (param, t.positive("size")?) {
            (Some(p), Some(n)) => Ok(Some((p.to_owned(), n))),
            (None, None) => Ok(None),
            (Some(_), None) => Err(Problem::new(t.key("size"), "is required with `size_param`")),
            (None, Some(_)) => Err(Problem::new(t.key("size_param"), "is required with `size`")),
        }
    };
    let style = match style {
        "none" => {
            t.only(&["style"])?;
            Style::None
        }
        "offset" => {
            t.only(&[
                "style",
                "max_pages",
                "offset_param",
                "limit_param",
                "limit",
                "start",
            ])?;
            Style::Offset {
                offset_param: t.str("offset_param")?.unwrap_or("offset").to_owned(),
                limit_param: t.str("limit_param")?.unwrap_or("limit").to_owned(),
                limit: t.positive("limit")?.unwrap_or(100),
                start: t.unsigned("start")?.unwrap_or(0),
            }
        }
        "page" => {
            t.only(&[
                "style",
                "max_pages",
                "page_param",
                "size_param",
                "size",
                "start",
            ])?;
            Style::Page {
                page_param: t.str("page_param")?.unwrap_or("page").to_owned(),
                size: size(None)?,
                start: t.unsigned("start")?.unwrap_or(1),
            }
        }
        "cursor" => {
            t.only(&[
                "style",
                "max_pages",
                "next",
                "param",
                "has_more",
                "size_param",
                "size",
            ])?;
            Style::Cursor {
                next: t.inner_pointer("next")?.ok_or_else(|| {
                    Problem::new(
                        t.key("next"),
                        "is required (the pointer to the next cursor)",
                    )
                })?,
                param: t.required_str("param")?.to_owned(),
                has_more: t.inner_pointer("has_more")?,
                size: size(None)?,
            }
        }
        "link" => {
            t.only(&["style", "max_pages", "size_param", "size"])?;
            Style::Link { size: size(None)? }
        }
        _ => {
            return Err(Problem::new(
                t.key("style"),
                "must be none, offset, page, cursor or link",
            ));
        }
    };
    Ok(Pagination {
        style,
        max_pages: t.positive("max_pages")?.unwrap_or(DEFAULT_MAX_PAGES),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rolecall_common::config::SaasSettings;

    /// A SaaS app `app` with the given options (TOML lines under `[saas.app.options]`).
    fn saas(options: &str) -> SaasSettings {
        let text = format!(
            r#"
            [saas.app]
            connector = "http"
            base_url = "https://vendor.example/api/"
            credential = "app"
            rate = {{ per_second = 10 }}
            [saas.app.options]
            {options}
            "#
        );
        rolecall_common::config::from_toml(&text)
            .expect("valid settings")
            .saas["app"]
            .clone()
    }

    fn build_with(options: &str, secret: &str) -> Result<HttpPreset, BuildError> {
        let saas = saas(options);
        let ctx = BuildContext {
            saas: &saas,
            http: reqwest::Client::new(),
            credential: SecretString::from(secret.to_owned()),
        };
        HttpPreset::from_context(&ctx)
    }

    fn build(options: &str) -> Result<HttpPreset, BuildError> {
        build_with(options, "hunter2")
    }

    fn error(options: &str) -> String {
        match build(options) {
            Ok(_) => panic!("expected a build error for {options}"),
            Err(e) => e.to_string(),
        }
    }

    /// A minimal valid inline spec, with `extra` appended (later tables win
    /// nothing: TOML forbids redefinition, so tests pass whole sections).
    const AUTH: &str = r#"
        [saas.app.options.spec.auth]
        kind = "bearer"
        token = "{{secret}}"
    "#;
    const REQUEST: &str = r#"
        [saas.app.options.spec.request]
        url = "{{base_url}}/users?email={{email}}"
    "#;
    const RESPONSE: &str = r#"
        [saas.app.options.spec.response]
        list = "/data"
        match = { pointer = "/email", equals = "{{email}}", case_insensitive = true }
        role = "/role"
        vendor_id = "/id"
    "#;

    fn inline(auth: &str, request: &str, response: &str, rest: &str) -> String {
        format!("{auth}\n{request}\n{response}\n{rest}")
    }

    fn user(email: &str, external_id: Option<&str>) -> UserRef {
        UserRef {
            id: "u-7".into(),
            email: email.into(),
            external_id: external_id.map(str::to_owned),
        }
    }

    fn values<'a>(user: Option<&'a UserRef>, vars: &'a BTreeMap<String, String>) -> Values<'a> {
        Values {
            user,
            base_url: "https://vendor.example/api",
            vars,
            secret: SecretSource::Sample,
        }
    }

    fn template(text: &str) -> Template {
        Template::parse("t".into(), text, Allow::PAYLOAD).unwrap()
    }

    #[test]
    fn the_shipped_presets_validate() {
        let github = build(
            r#"preset = "github-org-membership"
            vars = { org = "acme" }"#,
        )
        .unwrap();
        assert_eq!(github.spec.name, "GitHub organisation membership");
        assert_eq!(github.spec.response.role, "/role");
        assert_eq!(github.vars["org"], "acme");
        let zoom = build(r#"preset = "zoom-users""#).unwrap();
        assert_eq!(zoom.spec.response.role, "/type");
        assert_eq!(zoom.base_url, "https://vendor.example/api");
        // Every embedded preset parses on its own, not only via the disk copy.
        for (name, text) in SHIPPED {
            let value = parse_toml(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            parse_spec(&value, "").unwrap_or_else(|p| panic!("{name}: {p:?}"));
        }
    }

    #[test]
    fn url_values_are_percent_encoded_and_emails_lower_cased() {
        let vars = BTreeMap::from([("org".to_owned(), "a b/c".to_owned())]);
        let u = user(" Jane.Doe+Tag@Example.com", Some("jd/../x"));
        let v = values(Some(&u), &vars);
        let url = template(
            "{{base_url}}/orgs/{{vars.org}}/m/{{external_id}}?e={{email}}&r={{email_raw}}",
        );
        assert_eq!(
            render(&url, &v, Escape::Url).unwrap(),
            "https://vendor.example/api/orgs/a%20b%2Fc/m/jd%2F..%2Fx?e=jane.doe%2Btag%40example.com&r=%20Jane.Doe%2BTag%40Example.com"
        );
        // The + survives a parse and comes back decoded as +, not a space.
        let parsed = render_url(&url, &v).unwrap();
        let e = parsed.query_pairs().find(|(k, _)| k == "e").unwrap().1;
        assert_eq!(e, "jane.doe+tag@example.com");
        let dots = user("a@b.c", Some(".."));
        assert!(matches!(
            render(
                &template("/{{external_id}}"),
                &values(Some(&dots), &vars),
                Escape::Url
            ),
            Err(RenderError::DotSegment)
        ));
    }

    #[test]
    fn body_values_are_json_escaped() {
        let vars = BTreeMap::new();
        let u = user(r#"x"y\z@example.com"#, None);
        let body = template(r#"{"email": "{{email}}", "id": "{{user_id}}"}"#);
        let text = render(&body, &values(Some(&u), &vars), Escape::Json).unwrap();
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["email"], r#"x"y\z@example.com"#);
        assert_eq!(parsed["id"], "u-7");
    }

    #[test]
    fn a_missing_external_id_is_a_permanent_error_naming_the_fix() {
        let vars = BTreeMap::new();
        for id in [None, Some(""), Some("  ")] {
            let u = user("a@example.com", id);
            let err = render(
                &template("{{external_id}}"),
                &values(Some(&u), &vars),
                Escape::Url,
            )
            .unwrap_err();
            let err = ConnectorError::from(err);
            assert_eq!(err.class(), crate::error::ErrorClass::Permanent);
            assert!(
                err.to_string()
                    .contains("needs external_id in the inventory"),
                "{err}"
            );
        }
    }

    #[test]
    fn template_syntax_errors_are_named() {
        let err = Template::parse("k".into(), "{{emial}}", Allow::PAYLOAD).unwrap_err();
        assert_eq!(err.path, "k");
        assert!(
            err.reason.contains("unknown variable `{{emial}}`"),
            "{}",
            err.reason
        );
        let err = Template::parse("k".into(), "x {{email", Allow::PAYLOAD).unwrap_err();
        assert!(err.reason.contains("unclosed"));
        let err = Template::parse("k".into(), "{{vars.}}", Allow::PAYLOAD).unwrap_err();
        assert!(err.reason.contains("unknown variable"));
        let err = Template::parse("k".into(), "{{secret}}", Allow::URL).unwrap_err();
        assert!(err.reason.contains("never in URLs"));
        let err = Template::parse("k".into(), "{{email}}", Allow::AUTH).unwrap_err();
        assert!(err.reason.contains("must not depend on the user"));
        // Spaces inside braces are tolerated.
        assert_eq!(template("{{ email }}").pieces.len(), 1);
    }

    #[test]
    fn spec_problems_name_their_key() {
        let cases: Vec<(String, &str, &str)> = vec![
            (
                inline(AUTH, REQUEST, &RESPONSE.replace("role =", "rol ="), ""),
                "saas.app.options.spec.response.rol:",
                "unknown key",
            ),
            (
                inline(AUTH, REQUEST, &RESPONSE.replace("role = \"/role\"", ""), ""),
                "saas.app.options.spec.response.role:",
                "is required",
            ),
            (
                inline(
                    AUTH,
                    REQUEST,
                    &RESPONSE.replace("\"/role\"", "\"role\""),
                    "",
                ),
                "saas.app.options.spec.response.role:",
                "JSON pointer",
            ),
            (
                inline(
                    AUTH,
                    &REQUEST.replace("{{email}}", "{{secret}}"),
                    RESPONSE,
                    "",
                ),
                "saas.app.options.spec.request.url:",
                "never in URLs",
            ),
            (
                inline(
                    AUTH,
                    REQUEST,
                    &format!("{RESPONSE}\nnot_found = {{ status = [401] }}"),
                    "",
                ),
                "saas.app.options.spec.response.not_found.status:",
                "401",
            ),
            (
                inline(
                    AUTH,
                    REQUEST,
                    &format!(
                        "{RESPONSE}\nnot_found = [{{ status = 404 }}, {{ pointer = \"/x\" }}]"
                    ),
                    "",
                ),
                "saas.app.options.spec.response.not_found.1.pointer:",
                "needs a test",
            ),
            (
                inline(
                    AUTH,
                    REQUEST,
                    &RESPONSE.replace("match = ", "#"),
                    "[saas.app.options.spec.pagination]\nstyle = \"link\"",
                ),
                "saas.app.options.spec.response.match:",
                "pagination needs `match`",
            ),
            (
                inline(
                    AUTH,
                    REQUEST,
                    RESPONSE,
                    "[saas.app.options.spec.pagination]\nstyle = \"cursor\"\nparam = \"c\"",
                ),
                "saas.app.options.spec.pagination.next:",
                "is required",
            ),
            (
                inline(
                    AUTH,
                    REQUEST,
                    RESPONSE,
                    "[saas.app.options.spec.pagination]\nstyle = \"offset\"\nnext = \"/n\"",
                ),
                "saas.app.options.spec.pagination.next:",
                "unknown key",
            ),
            (
                inline(AUTH, &format!("{REQUEST}\nbody = '{{}}'"), RESPONSE, ""),
                "saas.app.options.spec.request.body:",
                "POST",
            ),
            (
                inline(
                    AUTH,
                    &format!("{REQUEST}\nmethod = \"POST\"\nbody = '{{\"e\": {{{{email}}}}}}'"),
                    RESPONSE,
                    "",
                ),
                "saas.app.options.spec.request.body:",
                "does not render to JSON",
            ),
            (
                inline(
                    AUTH,
                    &format!("{REQUEST}\nmethod = \"DELETE\""),
                    RESPONSE,
                    "",
                ),
                "saas.app.options.spec.request.method:",
                "GET or POST",
            ),
            (
                inline(&AUTH.replace("bearer", "oauth"), REQUEST, RESPONSE, ""),
                "saas.app.options.spec.auth.kind:",
                "must be basic",
            ),
            (
                inline(
                    AUTH,
                    &REQUEST.replace("{{base_url}}", "/relative"),
                    RESPONSE,
                    "",
                ),
                "saas.app.options.spec.request.url:",
                "does not render to a URL",
            ),
            (
                inline(
                    AUTH,
                    &REQUEST.replace("{{base_url}}/users", "https://x/{{base_url}}"),
                    RESPONSE,
                    "",
                ),
                "saas.app.options.spec.request.url:",
                "may only start",
            ),
            (
                inline(
                    AUTH,
                    &format!("{REQUEST}\nheaders = {{ \"Bad Header\" = \"x\" }}"),
                    RESPONSE,
                    "",
                ),
                "saas.app.options.spec.request.headers.Bad Header:",
                "header name",
            ),
            (
                inline(
                    AUTH,
                    &REQUEST.replace("{{email}}", "{{vars.org}}"),
                    RESPONSE,
                    "",
                ),
                "saas.app.options.vars.org:",
                "needs this variable",
            ),
            (
                inline(
                    AUTH,
                    REQUEST,
                    RESPONSE,
                    "[saas.app.options.vars]\norgg = \"x\"",
                ),
                "saas.app.options.vars.orgg:",
                "no such variable",
            ),
            (
                inline(
                    AUTH,
                    REQUEST,
                    RESPONSE,
                    "[saas.app.options.spec.vars]\nunused = \"x\"",
                ),
                "saas.app.options.spec.vars.unused:",
                "not used",
            ),
            (
                format!(
                    "preset = \"zoom-users\"\n{}",
                    inline(AUTH, REQUEST, RESPONSE, "")
                ),
                "saas.app.options.spec:",
                "not both",
            ),
            (
                "".to_owned(),
                "saas.app.options.preset:",
                "github-org-membership, zoom-users",
            ),
            (
                "preset = \"../etc/passwd\"".to_owned(),
                "saas.app.options.preset:",
                "letters",
            ),
            (
                "preset = \"nope\"".to_owned(),
                "saas.app.options.preset:",
                "no preset `nope`",
            ),
            (
                "preset = \"github-org-membership\"".to_owned(),
                "saas.app.options.vars.org:",
                "needs this variable",
            ),
            (
                "preset = \"zoom-users\"\ntypo = 1".to_owned(),
                "saas.app.options.typo:",
                "unknown option",
            ),
        ];
        for (options, key, reason) in cases {
            let err = error(&options);
            assert!(err.starts_with(key), "expected {key}, got {err}\n{options}");
            assert!(err.contains(reason), "expected {reason:?} in {err}");
        }
    }

    #[test]
    fn a_broken_preset_file_names_the_file_and_the_key() {
        let dir = std::env::temp_dir().join(format!("rolecall-presets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = SHIPPED[1].1.replace("role = \"/type\"", "role = \"type\"");
        std::fs::write(dir.join("broken.toml"), text).unwrap();
        std::fs::write(dir.join("garbled.toml"), "[auth\nkind=").unwrap();
        let options = |name: &str| {
            format!(
                "preset = \"{name}\"\npresets_dir = {:?}",
                dir.display().to_string()
            )
        };
        let err = error(&options("broken"));
        assert!(
            err.starts_with("saas.app.options.preset: preset `broken` ("),
            "{err}"
        );
        assert!(
            err.contains("broken.toml): response.role: must be a JSON pointer"),
            "{err}"
        );
        let unused = format!("{}\n[vars]\nunused = \"x\"\n", SHIPPED[1].1);
        std::fs::write(dir.join("unused.toml"), unused).unwrap();
        let err = error(&options("unused"));
        assert!(
            err.starts_with("saas.app.options.preset: preset `unused`"),
            "{err}"
        );
        assert!(err.contains("vars.unused: not used"), "{err}");
        let err = error(&options("garbled"));
        assert!(
            err.starts_with("saas.app.options.preset: preset `garbled`"),
            "{err}"
        );
        // A shipped preset missing from the folder falls back to the embedded copy.
        build(&format!(
            "{}\nvars = {{ org = \"acme\" }}",
            options("github-org-membership")
        ))
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn credential_fields_are_checked_without_echoing_the_credential() {
        let auth = r#"
            [saas.app.options.spec.auth]
            kind = "basic"
            user = "{{secret.user}}"
            password = "{{secret.password}}"
        "#;
        let options = inline(auth, REQUEST, RESPONSE, "");
        let err = build_with(&options, "hunter2").err().unwrap().to_string();
        assert!(err.starts_with("saas.app.credential:"), "{err}");
        assert!(!err.contains("hunter2"));
        let err = build_with(&options, r#"{"user":"hunter2"}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("password") && !err.contains("hunter2"),
            "{err}"
        );
        build_with(&options, r#"{"user":"u","password":"p"}"#).unwrap();
    }

    #[test]
    fn session_auth_is_validated() {
        let session = r#"
            [saas.app.options.spec.auth]
            kind = "session"
            token_from = "json:/access_token"
            prefix = "Bearer "
            [saas.app.options.spec.auth.login]
            method = "POST"
            url = "https://zoom.example/oauth/token?grant_type=account_credentials&account_id={{vars.account}}"
            basic = { user = "{{secret.client_id}}", password = "{{secret.client_secret}}" }
            [saas.app.options.vars]
            account = "abc"
        "#;
        let secret = r#"{"client_id":"i","client_secret":"s"}"#;
        let built = build_with(&inline(session, REQUEST, RESPONSE, ""), secret).unwrap();
        assert!(matches!(built.spec.auth, Auth::Session(_)));
        let per_user = session.replace("{{vars.account}}", "{{email}}");
        let err = build_with(&inline(&per_user, REQUEST, RESPONSE, ""), secret)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with("saas.app.options.spec.auth.login.url:"),
            "{err}"
        );
        let bad_from = session.replace("json:/access_token", "body:/token");
        let err = build_with(&inline(&bad_from, REQUEST, RESPONSE, ""), secret)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with("saas.app.options.spec.auth.token_from:"),
            "{err}"
        );
    }

    fn response_spec(toml_response: &str) -> ResponseSpec {
        let value = parse_toml(toml_response).unwrap();
        parse_response(&Table::new(&value, "response".into()).unwrap()).unwrap()
    }

    fn test_preset() -> HttpPreset {
        build(&inline(AUTH, REQUEST, RESPONSE, "")).unwrap()
    }

    #[test]
    fn users_are_read_through_pointers_with_numbers_as_text() {
        let mut preset = test_preset();
        preset.spec.response = response_spec(
            r#"
            role = "/type"
            vendor_id = "/id"
            active = { pointer = "/status", one_of = ["active", "pending"] }
            "#,
        );
        let vars = BTreeMap::new();
        let u = user("a@example.com", None);
        let v = values(Some(&u), &vars);
        let found = preset
            .user_from(
                &serde_json::json!({"id": 42, "type": 2, "status": "pending"}),
                &v,
            )
            .unwrap();
        assert_eq!(
            (
                found.vendor_id.as_str(),
                found.raw_role.as_str(),
                found.active
            ),
            ("42", "2", true)
        );
        let gone = preset
            .user_from(
                &serde_json::json!({"id": "x", "type": 1, "status": "inactive"}),
                &v,
            )
            .unwrap();
        assert!(!gone.active);
        let err = preset
            .user_from(&serde_json::json!({"id": "x"}), &v)
            .unwrap_err();
        assert!(
            matches!(err, ConnectorError::Decode(ref m) if m.contains("/type")),
            "{err}"
        );
        preset.spec.response.role_default = Some("none".into());
        let defaulted = preset
            .user_from(&serde_json::json!({"id": "x"}), &v)
            .unwrap();
        assert_eq!(defaulted.raw_role, "none");
    }

    #[test]
    fn conditions_compare_numbers_text_and_null() {
        let vars = BTreeMap::new();
        let u = user("Jane@Example.com", Some("JaneD"));
        let v = values(Some(&u), &vars);
        let doc = serde_json::json!({
            "login": "janed", "email": "jane@example.com", "n": 0, "s": "0",
            "deactivatedAt": null, "gone": 1700000000000_i64, "ok": true
        });
        let cond = |toml: &str| {
            let value = parse_toml(toml).unwrap();
            parse_condition(&Table::new(&value, "c".into()).unwrap())
                .unwrap()
                .unwrap()
        };
        let holds = |toml: &str| cond(toml).holds(&doc, &v).unwrap();
        assert!(holds(
            r#"pointer = "/login"
            equals = "{{external_id}}"
            case_insensitive = true"#
        ));
        assert!(!holds(
            r#"pointer = "/login"
            equals = "{{external_id}}""#
        ));
        assert!(holds(
            r#"pointer = "/email"
            equals = "{{email}}""#
        ));
        assert!(holds("pointer = \"/n\"\nequals = 0"));
        assert!(holds("pointer = \"/s\"\nequals = 0"));
        assert!(holds("pointer = \"/ok\"\nequals = true"));
        assert!(holds("pointer = \"/deactivatedAt\"\nis_null = true"));
        assert!(holds("pointer = \"/absent\"\nis_null = true"));
        assert!(!holds("pointer = \"/gone\"\nis_null = true"));
        assert!(holds("pointer = \"/gone\"\nis_null = false"));
        assert!(!holds("pointer = \"/absent\"\nequals = \"x\""));
    }

    #[test]
    fn not_found_rules_need_every_part_to_hold() {
        let vars = BTreeMap::new();
        let u = user("a@example.com", None);
        let v = values(Some(&u), &vars);
        let spec = response_spec(
            r#"
            role = "/r"
            vendor_id = "/id"
            not_found = [
                { status = [404], pointer = "/code", equals = 1001 },
                { pointer = "/totalResults", equals = 0 },
                { empty = "/data" },
            ]
            "#,
        );
        let any = |status: u16, body: Value| {
            spec.not_found
                .iter()
                .any(|r| r.holds(status, &body, &v).unwrap())
        };
        assert!(any(
            404,
            serde_json::json!({"code": 1001, "message": "User does not exist"})
        ));
        assert!(!any(404, serde_json::json!({"code": 124})));
        assert!(!any(404, Value::Null));
        assert!(any(
            200,
            serde_json::json!({"totalResults": 0, "Resources": []})
        ));
        assert!(!any(200, serde_json::json!({"totalResults": 1})));
        assert!(any(200, serde_json::json!({"data": []})));
        // Absent is not empty: a changed shape must not read as "nobody here".
        assert!(!any(200, serde_json::json!({"users": []})));
        assert!(!any(200, serde_json::json!({"data": [{}]})));
    }

    #[test]
    fn lists_are_found_by_pointer_or_are_the_body() {
        let single = serde_json::json!({"id": 1});
        assert_eq!(items(&single, "").unwrap(), vec![&single]);
        let bare = serde_json::json!([{"id": 1}, {"id": 2}]);
        assert_eq!(items(&bare, "").unwrap().len(), 2);
        let wrapped = serde_json::json!({"data": [{"id": 1}], "none": null, "one": {}});
        assert_eq!(items(&wrapped, "/data").unwrap().len(), 1);
        assert!(items(&wrapped, "/none").unwrap().is_empty());
        assert!(matches!(
            items(&wrapped, "/one"),
            Err(ConnectorError::Decode(_))
        ));
        assert!(matches!(
            items(&wrapped, "/users"),
            Err(ConnectorError::Decode(_))
        ));
    }

    #[test]
    fn links_are_parsed_per_rfc_8288() {
        let github = r#"<https://api.github.com/orgs/a/members?page=2>; rel="next", <https://api.github.com/orgs/a/members?page=5>; rel="last""#;
        assert_eq!(
            parse_links(github),
            vec![
                (
                    "https://api.github.com/orgs/a/members?page=2".to_owned(),
                    vec!["next".to_owned()]
                ),
                (
                    "https://api.github.com/orgs/a/members?page=5".to_owned(),
                    vec!["last".to_owned()]
                ),
            ]
        );
        let mut headers = HeaderMap::new();
        headers.append(
            LINK,
            HeaderValue::from_static(r#"</p?c=1>; title="a, b"; rel="prev""#),
        );
        headers.append(
            LINK,
            HeaderValue::from_static(r#"</p?c=3>;rel="last NEXT""#),
        );
        assert_eq!(next_link(&headers).as_deref(), Some("/p?c=3"));
        assert_eq!(next_link(&HeaderMap::new()), None);
        assert_eq!(parse_links("garbage"), vec![]);
    }

    #[test]
    fn each_pagination_style_finds_the_next_page() {
        let url = Url::parse("https://vendor.example/api/users?email=a%2Bb%40x.com").unwrap();
        let page = |toml: &str| {
            let value = parse_toml(toml).unwrap();
            parse_pagination(&Table::new(&value, "pagination".into()).unwrap()).unwrap()
        };
        let none = HeaderMap::new();
        let body = serde_json::json!({"next": "abc", "hasNext": true});

        let offset = page("style = \"offset\"\nlimit = 2");
        let first = offset.first(url.clone());
        assert_eq!(first.query(), Some("email=a%2Bb%40x.com&offset=0&limit=2"));
        let second = offset.next(&first, &none, &body, 2).unwrap().unwrap();
        assert_eq!(param_u64(&second, "offset"), Some(2));
        assert!(offset.next(&second, &none, &body, 1).unwrap().is_none());

        let paged = page("style = \"page\"\nsize_param = \"per_page\"\nsize = 100");
        let first = paged.first(url.clone());
        assert_eq!(param_u64(&first, "page"), Some(1));
        assert_eq!(param_u64(&first, "per_page"), Some(100));
        let second = paged.next(&first, &none, &body, 100).unwrap().unwrap();
        assert_eq!(param_u64(&second, "page"), Some(2));
        assert!(paged.next(&second, &none, &body, 3).unwrap().is_none());

        let cursor = page(
            "style = \"cursor\"\nnext = \"/next\"\nparam = \"offset\"\nhas_more = \"/hasNext\"",
        );
        let next = cursor.next(&url, &none, &body, 50).unwrap().unwrap();
        assert_eq!(
            next.query_pairs().find(|(k, _)| k == "offset").unwrap().1,
            "abc"
        );
        assert_eq!(
            next.query_pairs().find(|(k, _)| k == "email").unwrap().1,
            "a+b@x.com"
        );
        let done = serde_json::json!({"next": "abc", "hasNext": false});
        assert!(cursor.next(&url, &none, &done, 50).unwrap().is_none());

        let link = page("style = \"link\"");
        let mut headers = HeaderMap::new();
        headers.insert(
            LINK,
            HeaderValue::from_static(r#"</api/users?page=2>; rel="next""#),
        );
        let next = link.next(&url, &headers, &body, 1).unwrap().unwrap();
        assert_eq!(next.as_str(), "https://vendor.example/api/users?page=2");
        headers.insert(
            LINK,
            HeaderValue::from_static(r#"<https://evil.example/x>; rel="next""#),
        );
        let err = link.next(&url, &headers, &body, 1).unwrap_err();
        assert!(err.to_string().contains("another host"), "{err}");
    }

    #[test]
    fn throttle_rules_read_the_reset_header() {
        let spec = response_spec(
            r#"
            role = "/r"
            vendor_id = "/id"
            throttle = { status = [403], header = "x-ratelimit-remaining", equals = "0", reset_header = "x-ratelimit-reset" }
            "#,
        );
        let rule = spec.throttle.unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        let reset = (chrono::Utc::now().timestamp() + 30).to_string();
        headers.insert("x-ratelimit-reset", HeaderValue::from_str(&reset).unwrap());
        assert!(rule.matches(403, &headers));
        assert!(!rule.matches(401, &headers));
        let wait = rule.wait(&headers).unwrap();
        assert!((28..=30).contains(&wait.as_secs()), "{wait:?}");
        let mut plain = HeaderMap::new();
        plain.insert("x-ratelimit-remaining", HeaderValue::from_static("17"));
        assert!(
            !rule.matches(403, &plain),
            "a plain 403 is a permission problem"
        );
        plain.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("60"));
        assert!(rule.matches(403, &plain));
        assert_eq!(rule.wait(&plain), Some(Duration::from_secs(60)));
    }
}
