//! A vendor described by data instead of code (`connector = "http"`).
//!
//! Most vendors' role lookup is one HTTP request and three JSON fields; a
//! hand-written connector for each would repeat Lever's ninety lines with
//! different strings. This connector reads those strings from a *spec*: a
//! shipped preset (`options.preset`, `presets/<name>.toml`) or a table
//! inline in the SaaS app's options (`options.spec`). `docs/presets.md` is
//! the reference for authors; this folder is the interpreter:
//!
//! - `load` — options, presets, and errors that name their key;
//! - `spec` — the spec's shape, read by serde;
//! - `validate` — what serde cannot check, every problem at once;
//! - `template` — `{{…}}` variables and their escaping;
//! - `rules` — conditions, "not found" and throttle rules, candidates;
//! - `pagination` — the next page;
//! - `list` — listing every user (`[list]`), for inventory imports;
//! - this file — the lookup: requests, session login, reading replies.
//!
//! Everything that can be checked is checked when the worker starts (every
//! key, template, pointer, status; the URLs and body rendered with sample
//! values), so a typo fails the deployment instead of every job.
//!
//! Safety rules the spec cannot relax:
//! - credentials stay with their host: every URL the connector sends to (the
//!   lookup, the login, each next page) must have `base_url`'s origin
//!   (scheme, host, port); templates are checked at build, every URL again
//!   before it is sent, and a vendor's link elsewhere is an error, never a
//!   request;
//! - secrets (`{{secret}}`, `{{secret.FIELD}}`) only reach headers and
//!   bodies, never URLs (which end up in proxies' and vendors' logs), and no
//!   error text is built from a secret or a response body;
//! - substituted values are percent-encoded in URLs and JSON-escaped in
//!   bodies, so an e-mail with `+` or a login with `/` cannot change the
//!   request's shape;
//! - every request goes through the SaaS app's [`VendorClient`], so the
//!   fleet's limit, quota headers and error classes apply as to any other
//!   connector; the statuses a spec reads itself ("not found", throttle
//!   rules) are accepted from the client and classified the same way when
//!   the spec's rule does not hold;
//! - "not found" needs the vendor's word: a scan cut short by
//!   `pagination.max_pages` is [`ConnectorError::Inconclusive`].

mod list;
mod load;
mod pagination;
mod rules;
mod spec;
mod template;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use rolecall_common::credentials::CredentialParts;
use rolecall_common::messages::UserRef;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use url::{Origin, Url};

use super::{
    BuildContext, BuildError, Connector, ConnectorError, Lookup, UserPage, VendorClient, VendorUser,
};
use rules::{items, scalar_text};
use spec::{Auth, RequestSpec, Spec, TokenFrom};
use template::{
    Escape, SecretSource, Secrets, Template, Values, render, render_url, runtime_header,
};

/// The declarative HTTP connector.
pub struct HttpPreset {
    client: VendorClient,
    spec: Spec,
    /// The SaaS app's base URL without a trailing slash (`{{base_url}}`).
    base_url: String,
    /// Where requests may go: `base_url`'s scheme, host and port.
    origin: Origin,
    /// The spec's default variables overridden by `options.vars`.
    vars: BTreeMap<String, String>,
    secrets: Secrets,
    /// Non-success statuses the spec reads itself (its "not found" and
    /// throttle rules); the client classifies every other one.
    accept: Vec<u16>,
    /// The session token of `kind = "session"` auth, fetched on first use.
    /// A mutex rather than a lock-free cell: concurrent lookups after an
    /// expiry must log in once, not once each.
    session: tokio::sync::Mutex<Option<SecretString>>,
}

/// One page of a lookup, as far as the connector cares.
enum Page {
    /// A status the spec declares as "not found" (with a confirming body).
    NotFound,
    /// A success.
    Body {
        status: u16,
        headers: HeaderMap,
        body: Value,
    },
}

impl HttpPreset {
    /// Builds the connector from a SaaS app's settings, validating the whole spec.
    pub fn from_context(ctx: &BuildContext<'_>) -> Result<Self, BuildError> {
        let (options, spec, source) = load::load(ctx)?;
        let base = &ctx.saas.base_url;
        let vars = validate::validate(&spec, &options.vars, base)
            .map_err(|problems| source.error(ctx, problems))?;
        let secrets = secrets_for(ctx, &spec)?;
        let mut accept: BTreeSet<u16> = spec
            .response
            .not_found
            .rules
            .iter()
            .flat_map(|r| r.status.iter().copied())
            .collect();
        accept.extend(
            spec.response
                .throttle
                .iter()
                .flat_map(|t| t.status.0.iter().copied()),
        );
        accept.retain(|s| !(200..300).contains(s));
        tracing::debug!(saas = %ctx.saas.name, spec = %spec.name, "Built the http preset connector.");
        Ok(Self {
            client: ctx.client.with_error_code(&spec.response.error_code),
            base_url: base.as_str().trim_end_matches('/').to_owned(),
            origin: base.origin(),
            vars,
            secrets,
            accept: accept.into_iter().collect(),
            session: tokio::sync::Mutex::new(None),
            spec,
        })
    }

    fn values<'a>(&'a self, user: Option<&'a UserRef>) -> Values<'a> {
        Values {
            user,
            base_url: &self.base_url,
            vars: &self.vars,
            secret: SecretSource::Real(&self.secrets),
        }
    }

    /// `url` if it is on `base_url`'s origin, else `refused`. Templates were
    /// checked at build; this catches what only exists at run time (a
    /// vendor's link), before any request, so a credential never reaches
    /// another host.
    fn pin(&self, url: Url, refused: fn() -> ConnectorError) -> Result<Url, ConnectorError> {
        if url.origin() == self.origin {
            Ok(url)
        } else {
            Err(refused())
        }
    }

    /// Builds `request` for `url`: the lookup (for `user`), the list or the
    /// login. `auth` adds the spec's `[auth]`, which the login never carries.
    fn build(
        &self,
        request: &RequestSpec,
        url: Url,
        user: Option<&UserRef>,
        auth: bool,
        session: Option<&SecretString>,
    ) -> Result<reqwest::RequestBuilder, ConnectorError> {
        let values = self.values(user);
        let mut headers = HeaderMap::new();
        for (key, template) in &request.headers.0 {
            let value = render(template, &values, Escape::None)?;
            headers.insert(
                key.name.clone(),
                runtime_header(&value, template.uses_secret())?,
            );
        }
        let mut builder = self.client.request(request.method.http(), url);
        if let Some(body) = &request.body {
            if !headers.contains_key(CONTENT_TYPE) {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
            builder = builder.body(render(body, &values, Escape::Json)?);
        }
        let pair = |user: &Template, password: &Template| -> Result<_, ConnectorError> {
            Ok((
                render(user, &values, Escape::None)?,
                render(password, &values, Escape::None)?,
            ))
        };
        // Basic credentials: the login's own, or the lookup's [auth].
        let mut basic = match &request.basic {
            Some(b) => Some(pair(&b.user, &b.password)?),
            None => None,
        };
        // The lookup and the list carry the spec's auth; the login carries
        // only its own.
        if auth {
            match &self.spec.auth {
                Auth::Basic { user, password } => basic = Some(pair(user, password)?),
                Auth::Bearer { token } => {
                    let token = render(token, &values, Escape::None)?;
                    headers.insert(
                        AUTHORIZATION,
                        runtime_header(&format!("Bearer {token}"), true)?,
                    );
                }
                Auth::Header { name, value } => {
                    let value = render(value, &values, Escape::None)?;
                    headers.insert(name.name.clone(), runtime_header(&value, true)?);
                }
                Auth::Session(s) => {
                    if let Some(token) = session {
                        let value = format!("{}{}", s.prefix, token.expose_secret());
                        headers.insert(s.header.name.clone(), runtime_header(&value, true)?);
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
        Ok(builder)
    }

    /// Sends one lookup request and reads the reply: the spec's throttle
    /// rule, then its "not found" statuses; every other status was
    /// classified by the client.
    async fn exchange(
        &self,
        url: &Url,
        user: &UserRef,
        session: Option<&SecretString>,
    ) -> Result<Page, ConnectorError> {
        let request = self.build(&self.spec.request, url.clone(), Some(user), true, session)?;
        let reply = self.client.send_accepting(request, &self.accept).await?;
        let status = reply.status;
        let code = status.as_u16();
        let response = &self.spec.response;
        if status.is_success() {
            return Ok(Page::Body {
                status: code,
                body: reply.json()?,
                headers: reply.headers,
            });
        }
        if let Some(rule) = &response.throttle
            && rule.matches(code, &reply.headers)
        {
            return Err(ConnectorError::Throttled {
                status: code,
                retry_after: rule.wait(&reply.headers),
            });
        }
        // An accepted status: "not found" only when a rule's body test holds
        // too; otherwise the error the client would have made of it.
        let body = reply.json().unwrap_or(Value::Null);
        let values = self.values(Some(user));
        for rule in &response.not_found.rules {
            if rule.holds(code, &body, &values)? {
                return Ok(Page::NotFound);
            }
        }
        Err(self.client.error_for(&reply))
    }

    /// One page of the lookup.
    async fn fetch(&self, url: &Url, user: &UserRef) -> Result<Page, ConnectorError> {
        self.with_session(|session| async move { self.exchange(url, user, session.as_ref()).await })
            .await
    }

    /// Runs `send` with the session token, logging in first for session
    /// auth and once more if the vendor answers 401 (an expired session).
    async fn with_session<T, F, Fut>(&self, send: F) -> Result<T, ConnectorError>
    where
        F: Fn(Option<SecretString>) -> Fut,
        Fut: Future<Output = Result<T, ConnectorError>>,
    {
        let token = self.session_token().await?;
        match (send(token.clone()).await, token) {
            (Err(ConnectorError::Unauthorized { status: 401, .. }), Some(stale)) => {
                self.forget_session(&stale).await;
                let fresh = self.session_token().await?;
                send(fresh).await
            }
            (page, _) => page,
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
        let url = self.pin(url, || {
            ConnectorError::Unsupported("log in at another origin than base_url")
        })?;
        let login = self.build(&session.login, url, None, false, None)?;
        let reply = self.client.send(login).await?;
        let token = match &session.token_from {
            TokenFrom::Header(name) => reply
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            TokenFrom::Json(pointer) => reply
                .json()?
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
                ConnectorError::Decode(format!("the user has no role at {}", &*spec.role))
            })?,
        };
        let vendor_id = item
            .pointer(&spec.vendor_id)
            .and_then(scalar_text)
            .ok_or_else(|| {
                ConnectorError::Decode(format!("the user has no id at {}", &*spec.vendor_id))
            })?;
        let active = match &spec.active {
            Some(condition) => condition.holds(item, values)?,
            None => true,
        };
        Ok(VendorUser::new(vendor_id, raw_role, active, item.clone()))
    }
}

#[async_trait]
impl Connector for HttpPreset {
    /// The spec's `[list]` (`list.rs`); a spec without one cannot list.
    async fn list_page(&self, cursor: Option<&str>) -> Result<UserPage, ConnectorError> {
        self.list(cursor).await
    }

    async fn lookup(&self, user: &UserRef) -> Result<Lookup, ConnectorError> {
        let values = self.values(Some(user));
        let pagination = &self.spec.pagination;
        let url = render_url(&self.spec.request.url, &values)?;
        let mut url = self.pin(pagination.first(url), || {
            ConnectorError::Unsupported("send a lookup to another origin than base_url")
        })?;
        let max_pages = pagination.max_pages();
        for _ in 0..max_pages {
            let (status, headers, body) = match self.fetch(&url, user).await? {
                Page::NotFound => return Ok(Lookup::NotFound),
                Page::Body {
                    status,
                    headers,
                    body,
                } => (status, headers, body),
            };
            for rule in &self.spec.response.not_found.rules {
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
            match pagination.next(&url, &headers, &body, items.len())? {
                // The vendor says this was the last page: nobody there.
                None => return Ok(Lookup::NotFound),
                Some(next) => url = self.pin(next, || {
                    ConnectorError::Decode(
                        "the next page is on another origin than base_url; not following it with the credential".into(),
                    )
                })?,
            }
        }
        // More pages follow but the cap is reached: the user may be on one
        // of them, so this is no verdict, and never a deactivation.
        Err(ConnectorError::Inconclusive(format!(
            "the user is not on the first {max_pages} pages and more follow (pagination.max_pages)"
        )))
    }
}

/// The credential, split into parts when the spec uses `{{secret.FIELD}}`.
fn secrets_for(ctx: &BuildContext<'_>, spec: &Spec) -> Result<Secrets, BuildError> {
    let fields: BTreeSet<&str> = validate::templates(spec)
        .flat_map(Template::vars)
        .filter_map(|v| match v {
            template::Var::SecretField(f) => Some(f.as_str()),
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
