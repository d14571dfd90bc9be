//! Okta Users API (`/api/v1`), VENDORS.md §5.
//!
//! Auth is `Authorization: SSWS <token>`. Roles are not on the user: a
//! connector finds the user (`GET /users?search=profile.email eq "…"` or
//! `GET /users/{id|login}`), then reads `GET /users/{id}/roles`; most users
//! have no admin role and get `[]`, and about a third of admins hold one or
//! two lesser roles besides their main one (`SimUser::access_role` is the
//! most privileged).
//!
//! Okta counts per endpoint; configure named buckets (e.g.
//! `/api/v1/users` and `/api/v1/users/*/roles`) to have the sim do the same.
//! Every response, errors and 429s included, carries `X-Rate-Limit-Limit`,
//! `X-Rate-Limit-Remaining` and `X-Rate-Limit-Reset` (epoch seconds) of the
//! request's bucket: the limit is its capacity (a token bucket's burst, a
//! window's requests), remaining what is left after this request, and reset
//! the second by which it is back to full — the end of the window for fixed
//! windows. An unlimited bucket advertises Okta's nominal 600 per minute,
//! never used. Okta documents no `Retry-After` on its 429 (clients wait for
//! `X-Rate-Limit-Reset`), so by default the sim sends none.
//!
//! Search and filter expressions use the SCIM filter grammar (our parser);
//! string comparisons ignore case except on `id`. A search returns
//! deprovisioned users too, as Okta's does; a plain list leaves them out.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rand::rngs::StdRng;
use serde_json::{Value, json};

use super::scim::filter;
use super::{FailEmails, Gate, Quota, Service, auth_token, base_url, encode_query, guard, iso_ms};
use crate::population::{Population, Profile, SimUser, random_chars, weighted};

/// Admin role types the sim hands out, least privileged first.
pub const OKTA_ROLES: [&str; 4] = ["READ_ONLY_ADMIN", "USER_ADMIN", "ORG_ADMIN", "SUPER_ADMIN"];

/// Okta's own `limit` default and maximum for `/users`.
const MAX_LIMIT: usize = 200;
/// The Users endpoint's per-minute limit in a third-party table, advertised
/// when the sim is unlimited.
const NOMINAL_LIMIT: u32 = 600;
const ALPHANUMERIC: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
/// Top-level attributes a search may name.
const SEARCHABLE: [&str; 9] = [
    "id",
    "status",
    "created",
    "activated",
    "statuschanged",
    "lastupdated",
    "lastlogin",
    "passwordchanged",
    "profile",
];

fn label(role: &str) -> &'static str {
    match role {
        "SUPER_ADMIN" => "Super Administrator",
        "ORG_ADMIN" => "Organization Administrator",
        "USER_ADMIN" => "Group Administrator",
        "READ_ONLY_ADMIN" => "Read Only Administrator",
        "HELP_DESK_ADMIN" => "Help Desk Administrator",
        "APP_ADMIN" => "Application Administrator",
        "REPORT_ADMIN" => "Report Administrator",
        _ => "Administrator",
    }
}

pub(crate) fn profile(rng: &mut StdRng, user: &SimUser) -> Profile {
    let id = format!("00u{}", random_chars(rng, ALPHANUMERIC, 17));
    let role = weighted(
        rng,
        &[
            ("", 85),
            (OKTA_ROLES[0], 5),
            (OKTA_ROLES[1], 5),
            (OKTA_ROLES[2], 4),
            (OKTA_ROLES[3], 1),
        ],
    );
    let gone = weighted(rng, &[("DEPROVISIONED", 3), ("SUSPENDED", 1)]);
    let status = if user.deactivated_at.is_some() {
        gone
    } else {
        "ACTIVE"
    };
    let roles = if role.is_empty() {
        Vec::new()
    } else {
        with_lesser_roles(rng, role)
    };
    Profile {
        id: Some(id),
        access_role: role.to_owned(),
        extra: json!({"status": status, "roles": roles}),
    }
}

/// Admin role types from most to least privileged, as Okta ranks its
/// standard roles: a user's most privileged role is the one a connector
/// reports, whatever else they hold.
const PRIVILEGE_ORDER: [&str; 7] = [
    "SUPER_ADMIN",
    "ORG_ADMIN",
    "APP_ADMIN",
    "USER_ADMIN",
    "HELP_DESK_ADMIN",
    "READ_ONLY_ADMIN",
    "REPORT_ADMIN",
];

/// `role` first, then for about a third of admins one or two roles of
/// lesser privilege (real admins accumulate assignments), so `/roles` lists
/// several and `access_role` stays the most privileged. Drawn after every
/// other attribute, so no other draw changes.
fn with_lesser_roles<'r>(rng: &mut StdRng, role: &'r str) -> Vec<&'r str> {
    let mut roles = vec![role];
    let lesser: Vec<&'static str> = PRIVILEGE_ORDER
        .iter()
        .skip_while(|r| **r != role)
        .skip(1)
        .copied()
        .collect();
    let extra = weighted(rng, &[(0usize, 65), (1, 25), (2, 10)]).min(lesser.len());
    for i in rand::seq::index::sample(rng, lesser.len(), extra) {
        roles.push(lesser[i]);
    }
    roles
}

pub(crate) struct Okta {
    token: String,
    users: Vec<Value>,
    /// Role types per user, in user order.
    roles: Vec<Vec<String>>,
    by_id: HashMap<String, usize>,
    by_login: HashMap<String, usize>,
    fail_emails: FailEmails,
    error_ids: AtomicU64,
    gate: Arc<Gate>,
}

impl Okta {
    pub(crate) fn new(
        population: &Population,
        token: &str,
        fail_emails: &HashSet<String>,
        gate: Arc<Gate>,
    ) -> Self {
        let users = population.users.iter().map(user_object).collect();
        let roles = population
            .users
            .iter()
            .map(|u| {
                u.extra["roles"]
                    .as_array()
                    .map(|r| {
                        r.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect();
        let by_id = population.index_by(|u| u.id.clone());
        let by_login = population.index_by(|u| u.email.to_lowercase());
        Self {
            token: token.to_owned(),
            users,
            roles,
            by_id,
            by_login,
            fail_emails: FailEmails::new(fail_emails),
            error_ids: AtomicU64::new(0),
            gate,
        }
    }

    /// `{"errorCode","errorSummary","errorLink","errorId","errorCauses":[]}`.
    fn error(&self, status: StatusCode, code: &str, summary: &str) -> Response {
        let n = self.error_ids.fetch_add(1, Ordering::Relaxed) + 1;
        let body = json!({
            "errorCode": code,
            "errorSummary": summary,
            "errorLink": code,
            "errorId": format!("oaesim{n:014}"),
            "errorCauses": [],
        });
        (status, Json(body)).into_response()
    }

    fn not_found(&self, id: &str) -> Response {
        self.error(
            StatusCode::NOT_FOUND,
            "E0000007",
            &format!("Not found: Resource not found: {id} (User)"),
        )
    }

    /// By id, or by login ignoring case.
    fn find(&self, key: &str) -> Option<usize> {
        self.by_id
            .get(key)
            .or_else(|| self.by_login.get(&key.to_lowercase()))
            .copied()
    }

    fn render(&self, headers: &HeaderMap, index: usize) -> Value {
        let mut user = self.users[index].clone();
        let href = format!(
            "{}/api/v1/users/{}",
            base_url(headers),
            user["id"].as_str().unwrap_or_default()
        );
        user["_links"] = json!({"self": {"href": href}});
        user
    }
}

fn user_object(user: &SimUser) -> Value {
    let (given, family) = user.given_and_family_name();
    let status = user.extra["status"].as_str().unwrap_or("ACTIVE");
    let created = iso_ms(user.created_at);
    let changed = iso_ms(user.deactivated_at.unwrap_or(user.created_at + 60_000));
    json!({
        "id": user.id,
        "status": status,
        "created": created,
        "activated": if status == "DEPROVISIONED" { Value::Null } else { Value::from(iso_ms(user.created_at + 60_000)) },
        "statusChanged": changed,
        "lastLogin": Value::Null,
        "lastUpdated": changed,
        "passwordChanged": iso_ms(user.created_at + 120_000),
        "type": {"id": "oty1simdefaultusertype"},
        "profile": {
            "firstName": given,
            "lastName": family,
            "mobilePhone": null,
            "secondEmail": null,
            "login": user.email,
            "email": user.email,
        },
        "credentials": {"provider": {"type": "OKTA", "name": "OKTA"}},
    })
}

pub(crate) fn router(okta: Arc<Okta>) -> Router {
    Router::new()
        .route("/users", get(list_users))
        .route("/users/{id}", get(get_user))
        .route("/users/{id}/roles", get(get_roles))
        .fallback(unknown_route)
        .layer(middleware::from_fn_with_state(okta.clone(), guard::<Okta>))
        .with_state(okta)
}

impl Service for Okta {
    fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    fn injected(&self, status: StatusCode) -> Response {
        let (code, summary) = match status {
            StatusCode::TOO_MANY_REQUESTS => (
                "E0000047",
                "API call exceeded rate limit due to too many requests.",
            ),
            StatusCode::UNAUTHORIZED => ("E0000011", "Invalid token provided"),
            StatusCode::FORBIDDEN => (
                "E0000006",
                "You do not have permission to perform the requested action",
            ),
            StatusCode::NOT_FOUND => ("E0000007", "Not found: Resource not found"),
            StatusCode::BAD_REQUEST => ("E0000001", "Api validation failed"),
            _ => ("E0000009", "Internal Server Error"),
        };
        self.error(status, code, summary)
    }

    fn refuse(&self, request: &Request) -> Option<Response> {
        (auth_token(request.headers(), &["SSWS"]) != Some(self.token.as_str())).then(|| {
            self.error(
                StatusCode::UNAUTHORIZED,
                "E0000011",
                "Invalid token provided",
            )
        })
    }

    fn decorate(&self, headers: &mut HeaderMap, quota: Option<Quota>) {
        let quota = quota.unwrap_or_else(|| Quota::nominal(NOMINAL_LIMIT, Duration::from_secs(60)));
        headers.insert("x-rate-limit-limit", HeaderValue::from(quota.limit));
        headers.insert("x-rate-limit-remaining", HeaderValue::from(quota.remaining));
        headers.insert("x-rate-limit-reset", HeaderValue::from(quota.reset_unix_s));
    }
}

/// `search` or `filter` (same grammar here), `q` (prefix of first name, last
/// name or email), `limit` (default and maximum 200) and `after` (the cursor
/// from the `Link: …; rel="next"` header).
async fn list_users(
    State(okta): State<Arc<Okta>>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return okta.error(
            StatusCode::BAD_REQUEST,
            "E0000001",
            "Api validation failed: query",
        );
    };
    let expression = query.get("search").or_else(|| query.get("filter"));
    let parsed = match expression.map(|text| parse_search(text)).transpose() {
        Ok(parsed) => parsed,
        Err(()) => {
            return okta.error(
                StatusCode::BAD_REQUEST,
                "E0000031",
                "Invalid search criteria.",
            );
        }
    };
    let limit = match query.get("limit").map(|l| l.trim().parse::<usize>()) {
        None => MAX_LIMIT,
        Some(Ok(limit)) if limit > 0 => limit.min(MAX_LIMIT),
        Some(_) => {
            return okta.error(
                StatusCode::BAD_REQUEST,
                "E0000001",
                "Api validation failed: limit",
            );
        }
    };
    let prefix = query.get("q").map(|q| q.to_lowercase());

    let matching: Vec<usize> = (0..okta.users.len())
        .filter(|&i| {
            let user = &okta.users[i];
            match (&parsed, &prefix) {
                (Some(filter), _) => filter.matches(user, &["id"]),
                (None, prefix) => {
                    user["status"] != "DEPROVISIONED"
                        && prefix.as_ref().is_none_or(|p| {
                            ["firstName", "lastName", "email"].iter().any(|k| {
                                user["profile"][k]
                                    .as_str()
                                    .is_some_and(|v| v.to_lowercase().starts_with(p.as_str()))
                            })
                        })
                }
            }
        })
        .collect();
    if parsed.is_some()
        && matching.iter().any(|&i| {
            okta.fail_emails.contains(
                okta.users[i]["profile"]["email"]
                    .as_str()
                    .unwrap_or_default(),
            )
        })
    {
        return okta.injected(StatusCode::INTERNAL_SERVER_ERROR);
    }
    let start = match query.get("after") {
        None => 0,
        Some(after) => matching
            .iter()
            .position(|&i| okta.users[i]["id"] == after.as_str())
            .map_or(matching.len(), |p| p + 1),
    };
    let page: Vec<Value> = matching[start.min(matching.len())..]
        .iter()
        .take(limit)
        .map(|&i| okta.render(&headers, i))
        .collect();
    let more = start + page.len() < matching.len();

    let mut link = format!("{}/api/v1/users?limit={limit}", base_url(&headers));
    for key in ["search", "filter", "q"] {
        if let Some(value) = query.get(key) {
            link.push_str(&format!("&{key}={}", encode_query(value)));
        }
    }
    let mut links = vec![format!("<{link}>; rel=\"self\"")];
    if more && let Some(last) = page.last() {
        let after = last["id"].as_str().unwrap_or_default();
        links.push(format!("<{link}&after={after}>; rel=\"next\""));
    }
    let mut response = Json(page).into_response();
    for value in links {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().append(header::LINK, value);
        }
    }
    response
}

fn parse_search(text: &str) -> Result<filter::Filter, ()> {
    let parsed = filter::parse(text).map_err(|_| ())?;
    let known = parsed
        .attributes()
        .iter()
        .all(|p| p.schema.is_none() && SEARCHABLE.contains(&p.attr.to_ascii_lowercase().as_str()));
    if known { Ok(parsed) } else { Err(()) }
}

async fn get_user(
    State(okta): State<Arc<Okta>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let id = id.map(|Path(id)| id).unwrap_or_default();
    match okta.find(&id) {
        Some(i)
            if okta.fail_emails.contains(
                okta.users[i]["profile"]["email"]
                    .as_str()
                    .unwrap_or_default(),
            ) =>
        {
            okta.injected(StatusCode::INTERNAL_SERVER_ERROR)
        }
        Some(i) => Json(okta.render(&headers, i)).into_response(),
        None => okta.not_found(&id),
    }
}

/// `[{"id","label","type","status":"ACTIVE","created","lastUpdated","assignmentType":"USER","_links"}]`.
async fn get_roles(
    State(okta): State<Arc<Okta>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let id = id.map(|Path(id)| id).unwrap_or_default();
    let Some(index) = okta.find(&id) else {
        return okta.not_found(&id);
    };
    let user = &okta.users[index];
    let user_id = user["id"].as_str().unwrap_or_default();
    let base = base_url(&headers);
    let roles: Vec<Value> = okta.roles[index]
        .iter()
        .enumerate()
        .map(|(i, role)| {
            // Unique per assignment; the first keeps the id it always had.
            let nth = if i == 0 {
                String::new()
            } else {
                format!("x{i}")
            };
            json!({
                "id": format!("ra{}{}{nth}", user_id.get(3..13).unwrap_or(user_id), role.len()),
                "label": label(role),
                "type": role,
                "status": "ACTIVE",
                "created": user["created"],
                "lastUpdated": user["created"],
                "assignmentType": "USER",
                "_links": {"assignee": {"href": format!("{base}/api/v1/users/{user_id}")}},
            })
        })
        .collect();
    Json(roles).into_response()
}

async fn unknown_route(State(okta): State<Arc<Okta>>) -> Response {
    okta.error(
        StatusCode::NOT_FOUND,
        "E0000007",
        "Not found: Resource not found",
    )
}
