//! GitHub organisation membership (REST, at the root: `/orgs/...`), VENDORS.md §7.
//!
//! GitHub looks people up by username, not email: a connector needs the
//! login, which the sim derives from the email (`SimUser::github_login`) and
//! `rolecall-sim inventory --vendor github` writes as `external_id`.
//! `GET /orgs/{org}/memberships/{username}` answers the member's `role` and
//! `state`; anybody who is not a member (deactivated users included, and any
//! other org) is 404.
//!
//! Every response carries `x-ratelimit-limit/-remaining/-used/-reset/-resource`
//! from the request's bucket (limit = capacity, reset = when it is full
//! again; when unlimited, GitHub's nominal 5000 per hour, unused).
//! GitHub answers a primary-limit breach with 403 or 429 and
//! `x-ratelimit-remaining: 0`, to be waited out until `x-ratelimit-reset`;
//! the sim picks **429**, without `retry-after` by default (GitHub sends one
//! for secondary limits only; `SimConfig::retry_after` turns it on).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

use super::{FailEmails, Gate, Quota, Service, auth_token, base_url, guard};
use crate::population::{Population, Profile, SimUser, weighted};

/// Membership roles GitHub reports.
pub const GITHUB_ROLES: [&str; 3] = ["member", "admin", "billing_manager"];

const FIRST_USER_ID: u64 = 1_000_000;
const NOMINAL_LIMIT: u32 = 5000;
const DEFAULT_PER_PAGE: usize = 30;
const MAX_PER_PAGE: usize = 100;
const DOCS_MEMBERSHIP: &str =
    "https://docs.github.com/rest/orgs/members#get-organization-membership-for-a-user";
const DOCS_MEMBERS: &str = "https://docs.github.com/rest/orgs/members#list-organization-members";
const DOCS_RATE_LIMITS: &str =
    "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api";
const DOCS_ROOT: &str = "https://docs.github.com/rest";

pub(crate) fn profile(rng: &mut StdRng, index: usize, user: &SimUser) -> Profile {
    let id = FIRST_USER_ID + (index as u64) * 10 + rng.random_range(0..10);
    let role = weighted(
        rng,
        &[
            (GITHUB_ROLES[0], 88),
            (GITHUB_ROLES[1], 8),
            (GITHUB_ROLES[2], 4),
        ],
    );
    let state = weighted(rng, &[("active", 95), ("pending", 5)]);
    Profile {
        id: Some(id.to_string()),
        access_role: role.to_owned(),
        extra: json!({
            "id": id,
            "login": user.github_login,
            "role": role,
            // Deactivated people have left the org.
            "state": if user.deactivated_at.is_some() { Value::Null } else { Value::from(state) },
        }),
    }
}

struct Member {
    id: u64,
    login: String,
    email: String,
    role: String,
    /// `None`: not a member.
    state: Option<String>,
}

pub(crate) struct Github {
    org: String,
    token: String,
    members: Vec<Member>,
    by_login: HashMap<String, usize>,
    fail_emails: FailEmails,
    gate: Arc<Gate>,
}

impl Github {
    pub(crate) fn new(
        population: &Population,
        org: &str,
        token: &str,
        fail_emails: &HashSet<String>,
        gate: Arc<Gate>,
    ) -> Self {
        let members: Vec<Member> = population
            .users
            .iter()
            .map(|u| Member {
                id: u.extra["id"].as_u64().unwrap_or_default(),
                login: u.github_login.clone(),
                email: u.email.clone(),
                role: u.access_role.clone(),
                state: u.extra["state"].as_str().map(str::to_owned),
            })
            .collect();
        let by_login = members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.login.to_lowercase(), i))
            .collect();
        Self {
            org: org.to_owned(),
            token: token.to_owned(),
            members,
            by_login,
            fail_emails: FailEmails::new(fail_emails),
            gate,
        }
    }

    fn org_matches(&self, org: &str) -> bool {
        org.eq_ignore_ascii_case(&self.org)
    }

    fn simple_user(&self, base: &str, member: &Member) -> Value {
        let node = BASE64.encode(format!("04:User{}", member.id));
        json!({
            "login": member.login,
            "id": member.id,
            "node_id": node,
            "avatar_url": format!("https://avatars.githubusercontent.com/u/{}?v=4", member.id),
            "url": format!("{base}/users/{}", member.login),
            "html_url": format!("https://github.com/{}", member.login),
            "type": "User",
            "site_admin": false,
        })
    }
}

/// `{"message","documentation_url","status"}`, `status` being the code as a
/// string, as GitHub's current error bodies carry.
fn error(status: StatusCode, message: &str, docs: &str) -> Response {
    (
        status,
        Json(json!({
            "message": message,
            "documentation_url": docs,
            "status": status.as_u16().to_string(),
        })),
    )
        .into_response()
}

pub(crate) fn router(github: Arc<Github>) -> Router {
    Router::new()
        .route("/orgs/{org}/memberships/{username}", get(get_membership))
        .route("/orgs/{org}/members", get(list_members))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "Not Found", DOCS_ROOT) })
        .layer(middleware::from_fn_with_state(
            github.clone(),
            guard::<Github>,
        ))
        .with_state(github)
}

impl Service for Github {
    fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    fn injected(&self, status: StatusCode) -> Response {
        match status {
            StatusCode::TOO_MANY_REQUESTS => error(
                status,
                "API rate limit exceeded for user ID 1. If you reach out to GitHub Support for help, please include the request ID.",
                DOCS_RATE_LIMITS,
            ),
            StatusCode::INTERNAL_SERVER_ERROR => error(status, "Server Error", DOCS_ROOT),
            other => error(
                other,
                other.canonical_reason().unwrap_or("Error"),
                DOCS_ROOT,
            ),
        }
    }

    /// `Bearer` or the older `token` scheme, as GitHub accepts both.
    fn refuse(&self, request: &Request) -> Option<Response> {
        match auth_token(request.headers(), &["Bearer", "token"]) {
            Some(token) if token == self.token => None,
            Some(_) => Some(error(
                StatusCode::UNAUTHORIZED,
                "Bad credentials",
                DOCS_ROOT,
            )),
            None => Some(error(
                StatusCode::UNAUTHORIZED,
                "Requires authentication",
                DOCS_ROOT,
            )),
        }
    }

    fn decorate(&self, headers: &mut HeaderMap, quota: Option<Quota>) {
        let quota =
            quota.unwrap_or_else(|| Quota::nominal(NOMINAL_LIMIT, Duration::from_secs(3600)));
        headers.insert("x-ratelimit-limit", HeaderValue::from(quota.limit));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(quota.remaining));
        headers.insert(
            "x-ratelimit-used",
            HeaderValue::from(quota.limit.saturating_sub(quota.remaining)),
        );
        headers.insert("x-ratelimit-reset", HeaderValue::from(quota.reset_unix_s));
        headers.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
        headers.insert(
            "x-github-api-version-selected",
            HeaderValue::from_static("2022-11-28"),
        );
    }
}

/// `{"url","state","role","organization_url","organization":{…},"user":{…}}`.
async fn get_membership(
    State(github): State<Arc<Github>>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    let not_found = || error(StatusCode::NOT_FOUND, "Not Found", DOCS_MEMBERSHIP);
    let Ok(Path((org, username))) = path else {
        return not_found();
    };
    if !github.org_matches(&org) {
        return not_found();
    }
    let Some(member) = github
        .by_login
        .get(&username.to_lowercase())
        .map(|&i| &github.members[i])
    else {
        return not_found();
    };
    if github.fail_emails.contains(&member.email) {
        return github.injected(StatusCode::INTERNAL_SERVER_ERROR);
    }
    let Some(state) = &member.state else {
        return not_found();
    };
    let base = base_url(&headers);
    let org = &github.org;
    Json(json!({
        "url": format!("{base}/orgs/{org}/memberships/{}", member.login),
        "state": state,
        "role": member.role,
        "organization_url": format!("{base}/orgs/{org}"),
        "organization": {
            "login": org,
            "id": 1,
            "node_id": BASE64.encode("04:Organization1"),
            "url": format!("{base}/orgs/{org}"),
            "description": "",
        },
        "user": github.simple_user(&base, member),
    }))
    .into_response()
}

/// Active members (`role` = `all`, `admin` or `member`; billing managers and
/// pending invitees are not members), `per_page` (default 30, at most 100)
/// and `page` (1-based), with a `Link` header as GitHub sends.
async fn list_members(
    State(github): State<Arc<Github>>,
    headers: HeaderMap,
    org: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let (Ok(Path(org)), Ok(Query(query))) = (org, query) else {
        return error(StatusCode::NOT_FOUND, "Not Found", DOCS_MEMBERS);
    };
    if !github.org_matches(&org) {
        return error(StatusCode::NOT_FOUND, "Not Found", DOCS_MEMBERS);
    }
    let role = query.get("role").map_or("all", String::as_str);
    if !["all", "admin", "member"].contains(&role) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Validation Failed",
            DOCS_MEMBERS,
        );
    }
    let number = |key: &str, default: usize| {
        query
            .get(key)
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(default)
    };
    let per_page = number("per_page", DEFAULT_PER_PAGE).min(MAX_PER_PAGE);
    let page = number("page", 1);

    let members: Vec<&Member> = github
        .members
        .iter()
        .filter(|m| m.state.as_deref() == Some("active") && m.role != "billing_manager")
        .filter(|m| role == "all" || m.role == role)
        .collect();
    let base = base_url(&headers);
    let body: Vec<Value> = members
        .iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .map(|m| github.simple_user(&base, m))
        .collect();

    let last = members.len().div_ceil(per_page).max(1);
    let url = |p: usize| {
        format!(
            "<{base}/orgs/{}/members?role={role}&per_page={per_page}&page={p}>",
            github.org
        )
    };
    let mut links = Vec::new();
    if page < last {
        links.push(format!("{}; rel=\"next\"", url(page + 1)));
        links.push(format!("{}; rel=\"last\"", url(last)));
    }
    if page > 1 {
        links.push(format!("{}; rel=\"first\"", url(1)));
        links.push(format!("{}; rel=\"prev\"", url(page - 1)));
    }
    let mut response = Json(body).into_response();
    if !links.is_empty()
        && let Ok(value) = HeaderValue::from_str(&links.join(", "))
    {
        response.headers_mut().insert(header::LINK, value);
    }
    response
}
