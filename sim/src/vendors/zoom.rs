//! Zoom Users API (`/v2`), VENDORS.md §8.
//!
//! `GET /v2/users/{userId}` takes the user's id or email (any case) and
//! answers the full user; the role a connector wants is `role_name`
//! (Member, Admin, Owner) with the licence in `type` (1 Basic, 2 Licensed,
//! 4 Unassigned without Meetings Basic). Deactivated users are still found,
//! with `status: "inactive"`; a few active users are `pending` (invited, not
//! yet joined). Auth is a bearer token (Zoom's are S2S OAuth access tokens;
//! the sim accepts one fixed token). Errors are `{"code","message"}`; Zoom's
//! rate-limit headers, `Retry-After` included, are unverified, so by default
//! a 429 carries none (`SimConfig::retry_after` turns it on).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

use super::{FailEmails, Gate, Service, auth_token, guard, iso_secs};
use crate::population::{Population, Profile, SimUser, random_chars, weighted};

/// `role_name`s the sim hands out, with their `role_id`s.
pub const ZOOM_ROLES: [(&str, &str); 3] = [("Member", "2"), ("Admin", "1"), ("Owner", "0")];
/// Licence `type`s: 1 Basic, 2 Licensed, 4 Unassigned without Meetings Basic.
pub const ZOOM_TYPES: [u8; 3] = [1, 2, 4];

const DEFAULT_PAGE_SIZE: usize = 30;
const MAX_PAGE_SIZE: usize = 300;
const ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const ACCOUNT_ID: &str = "SimAcct0000000000000001";

pub(crate) fn profile(rng: &mut StdRng, user: &SimUser) -> Profile {
    let id = random_chars(rng, ID_ALPHABET, 22);
    let kind = weighted(rng, &[(1u8, 20), (2, 75), (4, 5)]);
    let (role, role_id) = weighted(
        rng,
        &[(ZOOM_ROLES[0], 90), (ZOOM_ROLES[1], 9), (ZOOM_ROLES[2], 1)],
    );
    let joined = weighted(rng, &[("active", 96), ("pending", 4)]);
    let pmi: u64 = rng.random_range(1_000_000_000..10_000_000_000);
    let status = if user.deactivated_at.is_some() {
        "inactive"
    } else {
        joined
    };
    Profile {
        id: Some(id),
        access_role: role.to_owned(),
        extra: json!({
            // An owner holds a licence.
            "type": if role == "Owner" { 2 } else { kind },
            "role_name": role,
            "role_id": role_id,
            "status": status,
            "pmi": pmi,
        }),
    }
}

pub(crate) struct Zoom {
    token: String,
    users: Vec<Value>,
    by_id: HashMap<String, usize>,
    by_email: HashMap<String, usize>,
    fail_emails: FailEmails,
    gate: Arc<Gate>,
}

impl Zoom {
    pub(crate) fn new(
        population: &Population,
        token: &str,
        fail_emails: &HashSet<String>,
        gate: Arc<Gate>,
    ) -> Self {
        let users = population.users.iter().map(user_object).collect();
        let by_id = population.index_by(|u| u.id.clone());
        let by_email = population.index_by(|u| u.email.to_lowercase());
        Self {
            token: token.to_owned(),
            users,
            by_id,
            by_email,
            fail_emails: FailEmails::new(fail_emails),
            gate,
        }
    }
}

fn user_object(user: &SimUser) -> Value {
    let (given, family) = user.given_and_family_name();
    let created = iso_secs(user.created_at);
    json!({
        "id": user.id,
        "first_name": given,
        "last_name": family,
        "display_name": user.name,
        "email": user.email,
        "type": user.extra["type"],
        "role_name": user.extra["role_name"],
        "role_id": user.extra["role_id"],
        "pmi": user.extra["pmi"],
        "use_pmi": false,
        "personal_meeting_url": format!("https://zoom.us/j/{}", user.extra["pmi"]),
        "timezone": "America/New_York",
        "verified": 1,
        "dept": "",
        "created_at": created,
        "user_created_at": created,
        "last_login_time": created,
        "last_client_version": "6.0.11.39959(mac)",
        "pic_url": "",
        "language": "en-US",
        "phone_number": "",
        "status": user.extra["status"],
        "account_id": ACCOUNT_ID,
        "account_number": 1_000_001,
        "cluster": "us06",
        "group_ids": [],
        "im_group_ids": [],
    })
}

fn error(status: StatusCode, code: u32, message: &str) -> Response {
    (status, Json(json!({"code": code, "message": message}))).into_response()
}

pub(crate) fn router(zoom: Arc<Zoom>) -> Router {
    Router::new()
        .route("/users", get(list_users))
        .route("/users/{user_id}", get(get_user))
        .fallback(|| async { error(StatusCode::NOT_FOUND, 404, "Not Found") })
        .layer(middleware::from_fn_with_state(zoom.clone(), guard::<Zoom>))
        .with_state(zoom)
}

impl Service for Zoom {
    fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    fn injected(&self, status: StatusCode) -> Response {
        match status {
            StatusCode::TOO_MANY_REQUESTS => error(
                status,
                429,
                "You have reached the maximum per-second rate limit for this API. Try again later.",
            ),
            other => error(
                other,
                u32::from(other.as_u16()),
                other.canonical_reason().unwrap_or("Error"),
            ),
        }
    }

    fn refuse(&self, request: &Request) -> Option<Response> {
        (auth_token(request.headers(), &["Bearer"]) != Some(self.token.as_str()))
            .then(|| error(StatusCode::UNAUTHORIZED, 124, "Invalid access token."))
    }
}

/// By id, or by email ignoring case; 404 `{"code":1001,"message":"User does
/// not exist: <userId>."}`.
async fn get_user(
    State(zoom): State<Arc<Zoom>>,
    user_id: Result<Path<String>, PathRejection>,
) -> Response {
    let user_id = user_id.map(|Path(id)| id).unwrap_or_default();
    let found = zoom
        .by_id
        .get(&user_id)
        .or_else(|| zoom.by_email.get(&user_id.to_lowercase()));
    match found {
        Some(&i) => {
            let user = &zoom.users[i];
            if zoom
                .fail_emails
                .contains(user["email"].as_str().unwrap_or_default())
            {
                return zoom.injected(StatusCode::INTERNAL_SERVER_ERROR);
            }
            Json(user).into_response()
        }
        None => error(
            StatusCode::NOT_FOUND,
            1001,
            &format!("User does not exist: {user_id}."),
        ),
    }
}

/// `status` (active, inactive or pending; default active), `page_size`
/// (default 30, at most 300) and `next_page_token` (opaque; empty on the last
/// page).
async fn list_users(
    State(zoom): State<Arc<Zoom>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return error(StatusCode::BAD_REQUEST, 300, "Invalid query.");
    };
    let status = query.get("status").map_or("active", String::as_str);
    if !["active", "inactive", "pending"].contains(&status) {
        return error(StatusCode::BAD_REQUEST, 300, "Invalid field: status.");
    }
    let page_size = match query.get("page_size").map(|v| v.trim().parse::<usize>()) {
        None => DEFAULT_PAGE_SIZE,
        Some(Ok(n)) if n > 0 => n.min(MAX_PAGE_SIZE),
        Some(_) => return error(StatusCode::BAD_REQUEST, 300, "Invalid field: page_size."),
    };
    let start = match query.get("next_page_token").filter(|t| !t.is_empty()) {
        None => 0,
        Some(token) => match decode_token(token) {
            Some(start) => start,
            None => {
                return error(StatusCode::BAD_REQUEST, 300, "Invalid next_page_token.");
            }
        },
    };
    let matching: Vec<&Value> = zoom
        .users
        .iter()
        .filter(|u| u["status"] == status)
        .collect();
    let page: Vec<&Value> = matching
        .iter()
        .skip(start)
        .take(page_size)
        .copied()
        .collect();
    let next = start + page.len();
    let next_page_token = if next < matching.len() {
        URL_SAFE_NO_PAD.encode(format!("sim:{next}"))
    } else {
        String::new()
    };
    Json(json!({
        "page_count": matching.len().div_ceil(page_size),
        "page_number": start / page_size + 1,
        "page_size": page_size,
        "total_records": matching.len(),
        "next_page_token": next_page_token,
        "users": page,
    }))
    .into_response()
}

fn decode_token(token: &str) -> Option<usize> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    String::from_utf8(bytes)
        .ok()?
        .strip_prefix("sim:")?
        .parse()
        .ok()
}
