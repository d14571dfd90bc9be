//! Lever API v1, users endpoints (VENDORS.md §2).
//!
//! Where the vendor's behaviour is only inferred (case-sensitive email match,
//! deactivated users hidden from email lookups by default) the sim picks the
//! stricter reading, so a client that works here does not rely on leniency.
//!
//! E-mail lookups of `endless_emails` never end: every page is empty, says
//! `hasNext: true` and hands out a fresh `next` cursor, so a client that
//! stops at its page cap must report a failure, not "no such user".

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Gate, Service, guard};
use crate::population::{Population, SimUser};

/// Lever's preconfigured access roles as the API spells them.
pub const LEVER_ROLES: [&str; 5] = [
    "super admin",
    "admin",
    "team member",
    "limited team member",
    "interviewer",
];

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 100;

/// Job titles are not part of [`SimUser`] (no check depends on them) but the
/// payload should carry a realistic mix of strings and nulls.
const JOB_TITLES: [&str; 6] = [
    "Recruiter",
    "Software Engineer",
    "Hiring Manager",
    "Sourcer",
    "Head of Talent",
    "Product Designer",
];

pub(crate) struct Lever {
    population: Arc<Population>,
    /// Population indices in listing order: ascending `(createdAt, id)`, the key
    /// the paging token carries.
    order: Vec<usize>,
    by_email: HashMap<String, usize>,
    by_id: HashMap<String, usize>,
    /// Decoded Basic credentials we accept: the key as user name, empty password.
    credentials: Vec<u8>,
    /// Lower-cased, so a test can name an email in any case and still make it fail.
    fail_emails: HashSet<String>,
    /// Lower-cased, as `fail_emails`: lookups that page forever.
    endless_emails: HashSet<String>,
    gate: Arc<Gate>,
    /// Users deactivated through `POST /users/{id}/deactivate`, with the
    /// time (epoch ms): an overlay on the generated population.
    deactivated: std::sync::Mutex<HashMap<usize, i64>>,
}

impl Lever {
    pub(crate) fn new(
        population: Arc<Population>,
        api_key: &str,
        scenarios: &LeverScenarios,
        gate: Arc<Gate>,
    ) -> Self {
        let users = &population.users;
        let mut order: Vec<usize> = (0..users.len()).collect();
        order.sort_by(|&a, &b| sort_key(&users[a]).cmp(&sort_key(&users[b])));
        let by_email = population.index_by(|u| u.email.clone());
        let by_id = population.index_by(|u| u.id.clone());
        Self {
            order,
            by_email,
            by_id,
            credentials: format!("{api_key}:").into_bytes(),
            fail_emails: lower_cased(scenarios.fail_emails),
            endless_emails: lower_cased(scenarios.endless_emails),
            gate,
            population,
            deactivated: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// When a user was deactivated, generated or through the API.
    fn deactivated_at(&self, index: usize) -> Option<i64> {
        self.population.users[index].deactivated_at.or_else(|| {
            self.deactivated
                .lock()
                .expect("never poisoned")
                .get(&index)
                .copied()
        })
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some((scheme, encoded)) = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
        else {
            return false;
        };
        scheme.eq_ignore_ascii_case("basic")
            && BASE64
                .decode(encoded.trim())
                .is_ok_and(|decoded| decoded == self.credentials)
    }

    fn page(&self, params: &ListParams) -> Page<'_> {
        let users = &self.population.users;
        let candidates: Box<dyn Iterator<Item = usize> + '_> = match (&params.email, &params.after)
        {
            (Some(email), _) => Box::new(self.by_email.get(email).copied().into_iter()),
            (None, Some(after)) => {
                let start = self
                    .order
                    .partition_point(|&i| sort_key(&users[i]) <= after.key());
                Box::new(self.order[start..].iter().copied())
            }
            (None, None) => Box::new(self.order.iter().copied()),
        };
        let mut matching = candidates
            .filter(|&i| {
                params
                    .after
                    .as_ref()
                    .is_none_or(|after| sort_key(&users[i]) > after.key())
            })
            .filter(|&i| params.include_deactivated || self.deactivated_at(i).is_none());

        let data: Vec<usize> = matching.by_ref().take(params.limit).collect();
        let has_next = matching.next().is_some();
        let next = data
            .last()
            .filter(|_| has_next)
            .map(|&i| Cursor::after(&users[i]).encode());
        Page {
            data: data.into_iter().map(|i| self.render(i)).collect(),
            has_next,
            next,
        }
    }

    fn render(&self, index: usize) -> LeverUser<'_> {
        let user = &self.population.users[index];
        LeverUser {
            id: &user.id,
            name: &user.name,
            username: user.email.split('@').next().unwrap_or_default(),
            email: &user.email,
            access_role: &user.access_role,
            photo: None,
            created_at: user.created_at,
            deactivated_at: self.deactivated_at(index),
            external_directory_id: None,
            linked_contact_ids: None,
            job_title: (!index.is_multiple_of(3)).then(|| JOB_TITLES[index % JOB_TITLES.len()]),
            manager_id: None,
        }
    }
}

/// Emails whose lookups misbehave on purpose.
pub(crate) struct LeverScenarios<'a> {
    /// Answer 500.
    pub(crate) fail_emails: &'a HashSet<String>,
    /// Page forever without a match.
    pub(crate) endless_emails: &'a HashSet<String>,
}

fn lower_cased(emails: &HashSet<String>) -> HashSet<String> {
    emails.iter().map(|e| e.to_lowercase()).collect()
}

/// An empty page that promises another: its cursor counts the pages
/// served, so every `next` differs and a client cannot detect a loop by a
/// repeated cursor.
fn endless_page(after: Option<&Cursor>) -> Page<'static> {
    let page = after.map_or(0, |c| c.created_at.saturating_add(1));
    let next = Cursor {
        created_at: page,
        id: "endless".to_owned(),
    };
    Page {
        data: Vec::new(),
        has_next: true,
        next: Some(next.encode()),
    }
}

pub(crate) fn router(lever: Arc<Lever>) -> Router {
    Router::new()
        .route("/users", get(list_users))
        .route("/users/{id}", get(get_user))
        .route(
            "/users/{id}/deactivate",
            axum::routing::post(deactivate_user),
        )
        .fallback(unknown_route)
        .layer(middleware::from_fn_with_state(
            lever.clone(),
            guard::<Lever>,
        ))
        .with_state(lever)
}

impl Service for Lever {
    fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    /// In the shape Lever answers it, so clients parse it exactly as they
    /// would the real thing.
    fn injected(&self, status: StatusCode) -> Response {
        let (code, message) = match status {
            StatusCode::TOO_MANY_REQUESTS => ("TooManyRequestsError", "Rate limit exceeded"),
            StatusCode::SERVICE_UNAVAILABLE => (
                "ServiceUnavailableError",
                "The service is temporarily unavailable",
            ),
            StatusCode::INTERNAL_SERVER_ERROR => {
                ("InternalServerError", "An unexpected error occurred")
            }
            other => (
                "Error",
                other.canonical_reason().unwrap_or("Injected fault"),
            ),
        };
        error_response(status, code, message)
    }

    fn refuse(&self, request: &Request) -> Option<Response> {
        (!self.authorized(request.headers())).then(|| LeverError::Unauthorized.into_response())
    }
}

#[derive(Deserialize)]
struct UsersQuery {
    email: Option<String>,
    #[serde(rename = "includeDeactivated")]
    include_deactivated: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
}

struct ListParams {
    email: Option<String>,
    include_deactivated: bool,
    limit: usize,
    after: Option<Cursor>,
}

impl ListParams {
    fn parse(query: UsersQuery) -> Result<Self, LeverError> {
        let include_deactivated = match query.include_deactivated.as_deref() {
            None => false,
            // Python clients send `True`.
            Some(flag) if flag.eq_ignore_ascii_case("true") => true,
            Some(flag) if flag.eq_ignore_ascii_case("false") => false,
            Some(_) => return Err(bad_request("includeDeactivated must be true or false")),
        };
        let limit = match query.limit.as_deref() {
            None => DEFAULT_LIMIT,
            Some(raw) => raw
                .parse()
                .ok()
                .filter(|limit| (1..=MAX_LIMIT).contains(limit))
                .ok_or_else(|| bad_request("limit must be an integer between 1 and 100"))?,
        };
        let after = query.offset.as_deref().map(Cursor::decode).transpose()?;
        Ok(Self {
            email: query.email,
            include_deactivated,
            limit,
            after,
        })
    }
}

async fn list_users(
    State(lever): State<Arc<Lever>>,
    query: Result<Query<UsersQuery>, QueryRejection>,
) -> Result<Response, LeverError> {
    let Query(query) = query.map_err(|rejection| bad_request(rejection.body_text()))?;
    let params = ListParams::parse(query)?;
    if let Some(email) = &params.email
        && lever.fail_emails.contains(&email.to_lowercase())
    {
        tracing::debug!(email, "failing lookup on purpose");
        return Err(LeverError::Internal);
    }
    if let Some(email) = &params.email
        && lever.endless_emails.contains(&email.to_lowercase())
    {
        return Ok(Json(endless_page(params.after.as_ref())).into_response());
    }
    Ok(Json(lever.page(&params)).into_response())
}

async fn get_user(
    State(lever): State<Arc<Lever>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, LeverError> {
    let Ok(Path(id)) = id else {
        return Err(LeverError::UserNotFound);
    };
    let index = *lever.by_id.get(&id).ok_or(LeverError::UserNotFound)?;
    Ok(Json(json!({ "data": lever.render(index) })).into_response())
}

/// `POST /users/{id}/deactivate`: answers the user, now deactivated.
async fn deactivate_user(
    State(lever): State<Arc<Lever>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, LeverError> {
    let Ok(Path(id)) = id else {
        return Err(LeverError::UserNotFound);
    };
    let index = *lever.by_id.get(&id).ok_or(LeverError::UserNotFound)?;
    if lever.deactivated_at(index).is_none() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        lever
            .deactivated
            .lock()
            .expect("never poisoned")
            .insert(index, now);
    }
    Ok(Json(json!({ "data": lever.render(index) })).into_response())
}

async fn unknown_route() -> LeverError {
    LeverError::RouteNotFound
}

fn sort_key(user: &SimUser) -> (i64, &str) {
    (user.created_at, &user.id)
}

/// Where the previous page ended. On the wire it is the URL-encoded JSON array
/// `[createdAt,"id"]`, as in Lever's own responses; clients must treat it as opaque.
struct Cursor {
    created_at: i64,
    id: String,
}

impl Cursor {
    fn after(user: &SimUser) -> Self {
        Self {
            created_at: user.created_at,
            id: user.id.clone(),
        }
    }

    fn key(&self) -> (i64, &str) {
        (self.created_at, &self.id)
    }

    fn encode(&self) -> String {
        let json = json!([self.created_at, self.id]).to_string();
        url::form_urlencoded::byte_serialize(json.as_bytes()).collect()
    }

    /// Accepts the token decoded once (a client pasted it into the URL verbatim,
    /// so the query decoding already undid it) or still encoded (a client let its
    /// HTTP library encode the already-encoded token again).
    fn decode(raw: &str) -> Result<Self, LeverError> {
        let invalid = || bad_request("Invalid offset token");
        let json = if raw.starts_with('[') {
            Cow::Borrowed(raw)
        } else {
            Cow::Owned(percent_decode(raw).ok_or_else(invalid)?)
        };
        let (created_at, id): (i64, String) = serde_json::from_str(&json).map_err(|_| invalid())?;
        Ok(Self { created_at, id })
    }
}

fn percent_decode(text: &str) -> Option<String> {
    let mut bytes = text.bytes();
    let mut out = Vec::with_capacity(text.len());
    while let Some(byte) = bytes.next() {
        if byte == b'%' {
            let high = char::from(bytes.next()?).to_digit(16)?;
            let low = char::from(bytes.next()?).to_digit(16)?;
            out.push(u8::try_from(high * 16 + low).ok()?);
        } else {
            out.push(byte);
        }
    }
    String::from_utf8(out).ok()
}

#[derive(Serialize)]
struct Page<'a> {
    data: Vec<LeverUser<'a>>,
    #[serde(rename = "hasNext")]
    has_next: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LeverUser<'a> {
    id: &'a str,
    name: &'a str,
    username: &'a str,
    email: &'a str,
    access_role: &'a str,
    photo: Option<&'a str>,
    created_at: i64,
    deactivated_at: Option<i64>,
    external_directory_id: Option<&'a str>,
    linked_contact_ids: Option<Vec<&'a str>>,
    job_title: Option<&'a str>,
    manager_id: Option<&'a str>,
}

/// Lever's error body: `{"code": "<Name>Error", "message": "<text>"}`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LeverError {
    #[error("{0}")]
    BadRequest(String),
    #[error("Invalid API key")]
    Unauthorized,
    #[error("That user doesn't exist on your account")]
    UserNotFound,
    #[error("That route doesn't exist")]
    RouteNotFound,
    #[error("An unexpected error occurred")]
    Internal,
}

fn bad_request(message: impl Into<String>) -> LeverError {
    LeverError::BadRequest(message.into())
}

impl LeverError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequestError"),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "UnauthorizedError"),
            Self::UserNotFound | Self::RouteNotFound => (StatusCode::NOT_FOUND, "NotFoundError"),
            Self::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError"),
        }
    }
}

impl IntoResponse for LeverError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let mut response = error_response(status, code, &self.to_string());
        if let Self::Unauthorized = self {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Lever\""),
            );
        }
        response
    }
}

fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({ "code": code, "message": message }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_matches_the_fixture_encoding() {
        let cursor = Cursor {
            created_at: 1_733_206_956_064,
            id: "c21d911f-8292-49b7-b135-f7cc233b43fd".into(),
        };
        let token = cursor.encode();
        assert_eq!(
            token,
            "%5B1733206956064%2C%22c21d911f-8292-49b7-b135-f7cc233b43fd%22%5D"
        );
        for form in [token.clone(), percent_decode(&token).unwrap_or_default()] {
            let decoded = Cursor::decode(&form).map(|c| c.key().1.to_owned());
            assert_eq!(decoded.ok().as_deref(), Some(cursor.id.as_str()));
        }
    }

    #[test]
    fn bad_cursors_are_rejected() {
        for raw in ["", "abc", "%5B1%2C", "%ZZ", "[1,2]", "[\"x\",\"y\"]", "%"] {
            assert!(Cursor::decode(raw).is_err(), "{raw}");
        }
    }
}
