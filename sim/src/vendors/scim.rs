//! SCIM 2.0 Users in two flavours: Miro's (`/api/v1/scim`, VENDORS.md §3) and
//! a generic RFC 7643/7644 provider (`/scim/v2`, §4).
//!
//! The protocol is the same — Bearer token, `GET /Users?filter=…` answering a
//! `ListResponse` (no match is `totalResults: 0`, never 404), index paging,
//! `GET /Users/{id}`, `PATCH /Users/{id}` with a `PatchOp`, errors as SCIM
//! error bodies with `status` as a string — and the flavours differ in
//! attributes, limits and wording:
//!
//! - Miro: numeric-string ids, `userType` is the licence (Full, Free, Free
//!   Restricted, Occasional), `roles[]` carries the primary
//!   `organization_user_role` (and for some admins an `organization_admin_role`);
//!   `count` defaults to 100, at most 1000; a 429 has `scimType:
//!   tooManyRequests` (a Miro extension). Only `Full` may be written to
//!   `userType`, as Miro documents.
//! - Generic: UUIDs, `userType` Employee/Contractor, `roles`, `entitlements`,
//!   `groups`; `count` defaults to and is capped at `SimConfig::page_size`
//!   (advertised as `filter.maxResults` in `/ServiceProviderConfig`); a 429 has
//!   no `scimType`, since RFC 7644 defines none for it.
//!
//! Every response, errors included, is `application/scim+json`. A throttled
//! generic-SCIM request gets `Retry-After` from its bucket (RFC 9110's
//! signal); Miro shows no headers on its SCIM 429s, so by default neither does
//! its sim. Miro counts each SCIM route separately ("200 per 30 s" for
//! `GET /Users`): named buckets with sliding windows model that.

pub(crate) mod filter;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware;
use axum::response::Response;
use axum::routing::get;
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::{Map, Value, json};

use super::{FailEmails, Gate, Service, auth_token, base_url, guard, iso_ms, json_as};
use crate::population::{Population, Profile, SimUser, weighted};
use filter::Filter;

const SCIM_JSON: &str = "application/scim+json";
const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const ENTERPRISE_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// Miro's `organization_user_role` values.
pub const MIRO_ROLES: [&str; 2] = ["ORGANIZATION_INTERNAL_USER", "ORGANIZATION_INTERNAL_ADMIN"];
/// Licences Miro shows in `userType` on read.
pub const MIRO_USER_TYPES: [&str; 4] = ["Full", "Free", "Free Restricted", "Occasional"];
/// The generic provider's `roles[].value`s, least privileged first.
pub const SCIM_ROLES: [&str; 3] = ["viewer", "editor", "admin"];
/// The generic provider's `entitlements[].value`s.
pub const SCIM_ENTITLEMENTS: [&str; 3] = ["basic", "pro", "enterprise"];

const MIRO_DEFAULT_COUNT: usize = 100;
const MIRO_MAX_COUNT: usize = 1000;
const FIRST_MIRO_ID: u64 = 3_074_457_345_600_000_000;
const MIRO_TEAMS: [(&str, &str); 4] = [
    ("3074457365266112911", "Product"),
    ("3074457365266112912", "Engineering"),
    ("3074457365266112913", "Sales"),
    ("3074457365266112914", "Marketing"),
];
const MIRO_ADMIN_ROLES: [&str; 3] = ["User Admin", "Content Admin", "Security Admin"];

/// Group ids of the generic provider's role groups.
fn scim_group(role: &str) -> (&'static str, &'static str) {
    match role {
        "admin" => ("9a5b2f4e-3c1d-4e8f-9a0b-000000000003", "Admins"),
        "editor" => ("9a5b2f4e-3c1d-4e8f-9a0b-000000000002", "Editors"),
        _ => ("9a5b2f4e-3c1d-4e8f-9a0b-000000000001", "Viewers"),
    }
}

pub(crate) fn miro_profile(rng: &mut StdRng, index: usize, user: &SimUser) -> Profile {
    let id = FIRST_MIRO_ID + (index as u64) * 1000 + rng.random_range(0..1000);
    let role = weighted(rng, &[(MIRO_ROLES[0], 92), (MIRO_ROLES[1], 8)]);
    let admin = role == MIRO_ROLES[1];
    let licence = weighted(
        rng,
        &[
            ("Full", 70),
            ("Free", 15),
            ("Free Restricted", 10),
            ("Occasional", 5),
        ],
    );
    let admin_role = MIRO_ADMIN_ROLES[rng.random_range(0..MIRO_ADMIN_ROLES.len())];
    let with_admin_role = rng.random_bool(0.5);
    let (team_id, team) = MIRO_TEAMS[rng.random_range(0..MIRO_TEAMS.len())];
    let mut roles = vec![json!({
        "type": "organization_user_role",
        "value": role,
        "display": if admin { "Admin" } else { "Member" },
        "primary": true,
    })];
    if admin && with_admin_role {
        roles.push(
            json!({"type": "organization_admin_role", "value": admin_role, "primary": false}),
        );
    }
    Profile {
        id: Some(id.to_string()),
        access_role: role.to_owned(),
        extra: json!({
            // Admins need a full licence.
            "userType": if admin { "Full" } else { licence },
            "roles": roles,
            "groups": [{"value": team_id, "display": team}],
            "active": user.deactivated_at.is_none(),
        }),
    }
}

pub(crate) fn generic_profile(rng: &mut StdRng, user: &SimUser) -> Profile {
    let role = weighted(
        rng,
        &[
            (SCIM_ROLES[0], 60),
            (SCIM_ROLES[1], 30),
            (SCIM_ROLES[2], 10),
        ],
    );
    let entitlement = weighted(
        rng,
        &[
            (SCIM_ENTITLEMENTS[0], 60),
            (SCIM_ENTITLEMENTS[1], 30),
            (SCIM_ENTITLEMENTS[2], 10),
        ],
    );
    let user_type = weighted(rng, &[("Employee", 85), ("Contractor", 15)]);
    let (group_id, group) = scim_group(role);
    Profile {
        id: None,
        access_role: role.to_owned(),
        extra: json!({
            "userType": user_type,
            "roles": [{
                "value": role,
                "display": crate::population::capitalise(role),
                "type": "application",
                "primary": true,
            }],
            "entitlements": [{"value": entitlement}],
            "groups": [{"value": group_id, "display": group, "type": "direct"}],
            "active": user.deactivated_at.is_none(),
        }),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flavor {
    Miro,
    Generic,
}

impl Flavor {
    /// Where the sim mounts the flavour.
    pub(crate) fn base_path(self) -> &'static str {
        match self {
            Self::Miro => "/api/v1/scim",
            Self::Generic => "/scim/v2",
        }
    }

    /// Top-level attributes (lower-cased) a filter may name.
    fn attributes(self) -> &'static [&'static str] {
        match self {
            Self::Miro => &[
                "id",
                "externalid",
                "username",
                "name",
                "displayname",
                "usertype",
                "active",
                "emails",
                "groups",
                "roles",
                "photos",
                "meta",
            ],
            Self::Generic => &[
                "id",
                "externalid",
                "username",
                "name",
                "displayname",
                "nickname",
                "title",
                "usertype",
                "active",
                "emails",
                "roles",
                "entitlements",
                "groups",
                "meta",
            ],
        }
    }
}

pub(crate) struct Scim {
    flavor: Flavor,
    token: String,
    default_count: usize,
    max_count: usize,
    fail_emails: FailEmails,
    /// Resources as stored (no `meta.location`, which depends on the host
    /// asked), in listing order; PATCH changes them.
    users: RwLock<Vec<Value>>,
    by_id: HashMap<String, usize>,
    gate: Arc<Gate>,
}

impl Scim {
    pub(crate) fn new(
        flavor: Flavor,
        population: &Population,
        token: &str,
        page_size: usize,
        fail_emails: &HashSet<String>,
        gate: Arc<Gate>,
    ) -> Self {
        let (default_count, max_count) = match flavor {
            Flavor::Miro => (MIRO_DEFAULT_COUNT, MIRO_MAX_COUNT),
            Flavor::Generic => (page_size.max(1), page_size.max(1)),
        };
        let users: Vec<Value> = population
            .users
            .iter()
            .enumerate()
            .map(|(i, user)| resource(flavor, i, user))
            .collect();
        let by_id = population
            .users
            .iter()
            .enumerate()
            .map(|(i, user)| (user.id.clone(), i))
            .collect();
        Self {
            flavor,
            token: token.to_owned(),
            default_count,
            max_count,
            fail_emails: FailEmails::new(fail_emails),
            users: RwLock::new(users),
            by_id,
            gate,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Value>> {
        // Resources are replaced whole, so they stay valid if a writer panicked.
        self.users.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The stored resource with `meta.location` for the host the client used.
    fn render(&self, headers: &HeaderMap, stored: &Value) -> Value {
        let mut out = stored.clone();
        let id = stored["id"].as_str().unwrap_or_default();
        let location = format!(
            "{}{}/Users/{id}",
            base_url(headers),
            self.flavor.base_path()
        );
        if let Some(meta) = out.get_mut("meta").and_then(Value::as_object_mut) {
            meta.insert("location".to_owned(), Value::from(location));
        }
        out
    }

    fn error(&self, error: ScimError) -> Response {
        error.into_response()
    }
}

fn resource(flavor: Flavor, index: usize, user: &SimUser) -> Value {
    let (given, family) = user.given_and_family_name();
    let extra = |key: &str| user.extra.get(key).cloned().unwrap_or(Value::Null);
    let created = iso_ms(user.created_at);
    let modified = iso_ms(user.deactivated_at.unwrap_or(user.created_at));
    match flavor {
        Flavor::Miro => json!({
            "schemas": [USER_SCHEMA],
            "id": user.id,
            "userName": user.email,
            "displayName": user.name,
            "name": {"givenName": given, "familyName": family},
            "userType": extra("userType"),
            "active": user.deactivated_at.is_none(),
            "emails": [{"value": user.email, "type": "work", "primary": true}],
            "groups": extra("groups"),
            "roles": extra("roles"),
            "meta": {"resourceType": "User", "created": created, "lastModified": modified},
        }),
        Flavor::Generic => json!({
            "schemas": [USER_SCHEMA, ENTERPRISE_SCHEMA],
            "id": user.id,
            "userName": user.email,
            "name": {"givenName": given, "familyName": family, "formatted": user.name},
            "displayName": user.name,
            "userType": extra("userType"),
            "active": user.deactivated_at.is_none(),
            "emails": [{"value": user.email, "type": "work", "primary": true}],
            "roles": extra("roles"),
            "entitlements": extra("entitlements"),
            "groups": extra("groups"),
            ENTERPRISE_SCHEMA: {"employeeNumber": format!("E{:05}", index + 1)},
            "meta": {
                "resourceType": "User",
                "created": created,
                "lastModified": modified,
                "version": "W/\"1\"",
            },
        }),
    }
}

pub(crate) fn router(scim: Arc<Scim>) -> Router {
    let mut routes = Router::new()
        .route("/Users", get(list_users))
        .route("/Users/{id}", get(get_user).patch(patch_user));
    if scim.flavor == Flavor::Generic {
        routes = routes.route("/ServiceProviderConfig", get(service_provider_config));
    }
    routes
        .fallback(unknown_route)
        .layer(middleware::from_fn_with_state(scim.clone(), guard::<Scim>))
        .with_state(scim)
}

/// A SCIM error body (RFC 7644 §3.12): `status` is the HTTP code as a string.
pub(crate) struct ScimError {
    status: StatusCode,
    scim_type: Option<&'static str>,
    detail: String,
}

impl ScimError {
    fn new(status: StatusCode, scim_type: Option<&'static str>, detail: impl Into<String>) -> Self {
        Self {
            status,
            scim_type,
            detail: detail.into(),
        }
    }

    fn bad(scim_type: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some(scim_type), detail)
    }

    fn not_found(flavor: Flavor, id: &str) -> Self {
        let detail = match flavor {
            Flavor::Miro => "The requested resource wasn't found by looking up its ID.".to_owned(),
            Flavor::Generic => format!("Resource {id} not found."),
        };
        Self::new(StatusCode::NOT_FOUND, None, detail)
    }

    fn internal(flavor: Flavor) -> Self {
        let detail = match flavor {
            Flavor::Miro => "An unexpected error of application. Please, contact Miro support",
            Flavor::Generic => "Internal server error",
        };
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, None, detail)
    }

    fn too_many(flavor: Flavor) -> Self {
        match flavor {
            Flavor::Miro => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                Some("tooManyRequests"),
                "The user has sent too many requests in a given amount of time",
            ),
            Flavor::Generic => Self::new(StatusCode::TOO_MANY_REQUESTS, None, "Too many requests"),
        }
    }

    fn into_response(self) -> Response {
        let mut body = json!({
            "schemas": [ERROR_SCHEMA],
            "status": self.status.as_u16().to_string(),
            "detail": self.detail,
        });
        if let (Some(scim_type), Some(map)) = (self.scim_type, body.as_object_mut()) {
            map.insert("scimType".to_owned(), Value::from(scim_type));
        }
        json_as(self.status, SCIM_JSON, &body)
    }
}

impl Service for Scim {
    fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    fn injected(&self, status: StatusCode) -> Response {
        let error = match status {
            StatusCode::TOO_MANY_REQUESTS => ScimError::too_many(self.flavor),
            StatusCode::INTERNAL_SERVER_ERROR => ScimError::internal(self.flavor),
            StatusCode::FORBIDDEN if self.flavor == Flavor::Miro => {
                ScimError::new(status, None, "SCIM integration is disabled.")
            }
            other => ScimError::new(other, None, other.canonical_reason().unwrap_or("Error")),
        };
        self.error(error)
    }

    fn refuse(&self, request: &Request) -> Option<Response> {
        if auth_token(request.headers(), &["Bearer"]) == Some(self.token.as_str()) {
            return None;
        }
        let detail = match self.flavor {
            Flavor::Miro => "Miro cannot authorize the organization with the authorization token.",
            Flavor::Generic => "Authentication failed: the bearer token is missing or invalid.",
        };
        Some(self.error(ScimError::new(StatusCode::UNAUTHORIZED, None, detail)))
    }
}

/// Query parameter names compared ignoring case (`startIndex`, `startindex`).
fn param<'q>(query: &'q HashMap<String, String>, name: &str) -> Option<&'q str> {
    query
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn integer(query: &HashMap<String, String>, name: &str) -> Result<Option<i64>, ScimError> {
    param(query, name)
        .map(|raw| {
            raw.trim()
                .parse::<i64>()
                .map_err(|_| ScimError::bad("invalidValue", format!("{name} must be an integer")))
        })
        .transpose()
}

/// `filter`, `startIndex` (1-based; below 1 means 1, RFC 7644 §3.4.2.4) and
/// `count` (negative means 0; above the maximum is capped). `attributes`,
/// `sortBy` and `sortOrder` are accepted and ignored: resources come whole, in
/// creation order.
async fn list_users(
    State(scim): State<Arc<Scim>>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    match list(&scim, &headers, query) {
        Ok(response) => response,
        Err(error) => scim.error(error),
    }
}

fn list(
    scim: &Scim,
    headers: &HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ScimError> {
    let Query(query) = query.map_err(|r| ScimError::bad("invalidSyntax", r.body_text()))?;
    let filter = param(&query, "filter")
        .map(|text| parse_filter(scim.flavor, text))
        .transpose()?;
    let start = integer(&query, "startIndex")?.unwrap_or(1).max(1) as usize;
    let count = integer(&query, "count")?
        .map_or(scim.default_count, |c| c.max(0) as usize)
        .min(scim.max_count);

    let users = scim.read();
    let matching: Vec<&Value> = users
        .iter()
        .filter(|u| {
            filter
                .as_ref()
                .is_none_or(|f| f.matches(u, &["id", "externalId"]))
        })
        .collect();
    if filter.is_some()
        && matching.iter().any(|u| {
            scim.fail_emails
                .contains(u["userName"].as_str().unwrap_or_default())
        })
    {
        tracing::debug!("failing lookup on purpose");
        return Err(ScimError::internal(scim.flavor));
    }
    let page: Vec<Value> = matching
        .iter()
        .skip(start - 1)
        .take(count)
        .map(|u| scim.render(headers, u))
        .collect();
    let body = json!({
        "schemas": [LIST_SCHEMA],
        "totalResults": matching.len(),
        "itemsPerPage": page.len(),
        "startIndex": start,
        "Resources": page,
    });
    Ok(json_as(StatusCode::OK, SCIM_JSON, &body))
}

/// Malformed filters and attributes the resource does not have are both
/// `400 invalidFilter`.
fn parse_filter(flavor: Flavor, text: &str) -> Result<Filter, ScimError> {
    let filter = filter::parse(text).map_err(|e| ScimError::bad("invalidFilter", e.0))?;
    for path in filter.attributes() {
        let known = match &path.schema {
            Some(schema) => {
                flavor == Flavor::Generic && schema.eq_ignore_ascii_case(ENTERPRISE_SCHEMA)
            }
            None => flavor
                .attributes()
                .contains(&path.attr.to_ascii_lowercase().as_str()),
        };
        if !known {
            return Err(ScimError::bad(
                "invalidFilter",
                format!("Invalid filter: unsupported attribute '{}'", path.attr),
            ));
        }
    }
    Ok(filter)
}

async fn get_user(
    State(scim): State<Arc<Scim>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let id = id.map(|Path(id)| id).unwrap_or_default();
    let users = scim.read();
    match scim.by_id.get(&id).and_then(|&i| users.get(i)) {
        Some(user) => json_as(StatusCode::OK, SCIM_JSON, &scim.render(&headers, user)),
        None => scim.error(ScimError::not_found(scim.flavor, &id)),
    }
}

/// RFC 7644 §3.5.2: `{"schemas":[PatchOp],"Operations":[{"op","path"?,"value"}]}`.
/// `add` and `replace` (any case, as Azure AD sends `Replace`) on `active`,
/// `userType`, `displayName`, `userName`, `name`, `name.givenName`,
/// `name.familyName`; with no `path`, `value` is an object of those. `active`
/// also takes the strings "true"/"false", which some IdPs send. All
/// operations apply or none does.
async fn patch_user(
    State(scim): State<Arc<Scim>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Response {
    let id = id.map(|Path(id)| id).unwrap_or_default();
    let Some(&index) = scim.by_id.get(&id) else {
        return scim.error(ScimError::not_found(scim.flavor, &id));
    };
    let patched = {
        let mut users = scim.users.write().unwrap_or_else(PoisonError::into_inner);
        let Some(stored) = users.get_mut(index) else {
            return scim.error(ScimError::not_found(scim.flavor, &id));
        };
        let mut draft = stored.clone();
        if let Err(error) = apply_patch(scim.flavor, &mut draft, &body) {
            return scim.error(error);
        }
        if let Some(meta) = draft.get_mut("meta").and_then(Value::as_object_mut) {
            meta.insert("lastModified".to_owned(), Value::from(now_iso()));
        }
        *stored = draft.clone();
        draft
    };
    json_as(StatusCode::OK, SCIM_JSON, &scim.render(&headers, &patched))
}

fn now_iso() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default();
    iso_ms(ms)
}

fn apply_patch(flavor: Flavor, user: &mut Value, body: &[u8]) -> Result<(), ScimError> {
    let body: Value = serde_json::from_slice(body)
        .map_err(|e| ScimError::bad("invalidSyntax", format!("Invalid JSON: {e}")))?;
    let is_patch = body["schemas"].as_array().is_some_and(|s| {
        s.iter().any(|s| {
            s.as_str()
                .is_some_and(|s| s.eq_ignore_ascii_case(PATCH_SCHEMA))
        })
    });
    if !is_patch {
        return Err(ScimError::bad(
            "invalidSyntax",
            format!("schemas must contain {PATCH_SCHEMA}"),
        ));
    }
    let operations = body
        .get("Operations")
        .and_then(Value::as_array)
        .filter(|ops| !ops.is_empty())
        .ok_or_else(|| ScimError::bad("invalidSyntax", "Operations must be a non-empty array"))?;
    for operation in operations {
        let op = operation["op"]
            .as_str()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if op != "add" && op != "replace" {
            return Err(ScimError::bad(
                "invalidValue",
                format!("Unsupported op '{}': use add or replace", operation["op"]),
            ));
        }
        let value = operation
            .get("value")
            .ok_or_else(|| ScimError::bad("invalidSyntax", "An operation needs a value"))?;
        match operation.get("path").and_then(Value::as_str) {
            Some(path) => set(flavor, user, path, value)?,
            None => {
                let fields = value.as_object().ok_or_else(|| {
                    ScimError::bad("invalidValue", "Without a path, value must be an object")
                })?;
                for (key, value) in fields {
                    set(flavor, user, key, value)?;
                }
            }
        }
    }
    Ok(())
}

fn set(flavor: Flavor, user: &mut Value, path: &str, value: &Value) -> Result<(), ScimError> {
    let text = |value: &Value| {
        value
            .as_str()
            .filter(|s| !s.trim().is_empty())
            .map(|s| Value::from(s.to_owned()))
            .ok_or_else(|| {
                ScimError::bad("invalidValue", format!("{path} must be a non-empty string"))
            })
    };
    let lower = path.to_ascii_lowercase();
    let lower = lower
        .strip_prefix(&format!("{}:", USER_SCHEMA.to_ascii_lowercase()))
        .unwrap_or(&lower);
    let Some(object) = user.as_object_mut() else {
        return Err(ScimError::internal(flavor));
    };
    match lower {
        "active" => {
            let active = match value {
                Value::Bool(b) => *b,
                Value::String(s) if s.eq_ignore_ascii_case("true") => true,
                Value::String(s) if s.eq_ignore_ascii_case("false") => false,
                _ => return Err(ScimError::bad("invalidValue", "active must be a boolean")),
            };
            object.insert("active".to_owned(), Value::Bool(active));
        }
        "usertype" => {
            let user_type = text(value)?;
            if flavor == Flavor::Miro && user_type != "Full" {
                return Err(ScimError::bad(
                    "invalidValue",
                    "Supported value for userType: Full",
                ));
            }
            object.insert("userType".to_owned(), user_type);
        }
        "displayname" => {
            object.insert("displayName".to_owned(), text(value)?);
        }
        "username" => {
            let user_name = text(value)?;
            object.insert("userName".to_owned(), user_name.clone());
            if let Some(primary) = object
                .get_mut("emails")
                .and_then(Value::as_array_mut)
                .and_then(|emails| emails.first_mut())
                .and_then(Value::as_object_mut)
            {
                primary.insert("value".to_owned(), user_name);
            }
        }
        "name" => {
            let parts = value
                .as_object()
                .ok_or_else(|| ScimError::bad("invalidValue", "name must be an object"))?;
            for (key, part) in parts {
                set(flavor, user, &format!("name.{key}"), part)?;
            }
        }
        "name.givenname" | "name.familyname" => {
            let key = if lower == "name.givenname" {
                "givenName"
            } else {
                "familyName"
            };
            let part = text(value)?;
            let name = object
                .entry("name")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(name) = name.as_object_mut() {
                name.insert(key.to_owned(), part);
            }
        }
        "id" | "meta" | "schemas" | "groups" => {
            return Err(ScimError::bad(
                "mutability",
                format!("Attribute '{path}' is readOnly"),
            ));
        }
        _ => {
            return Err(ScimError::bad(
                "invalidPath",
                format!("Attribute '{path}' cannot be modified here"),
            ));
        }
    }
    Ok(())
}

/// RFC 7643 §5, so a client can discover paging and filter support.
async fn service_provider_config(State(scim): State<Arc<Scim>>, headers: HeaderMap) -> Response {
    let body = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": scim.max_count},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": false},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "Authentication scheme using the OAuth Bearer Token Standard",
            "primary": true,
        }],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": format!("{}{}/ServiceProviderConfig", base_url(&headers), scim.flavor.base_path()),
        },
    });
    json_as(StatusCode::OK, SCIM_JSON, &body)
}

async fn unknown_route(State(scim): State<Arc<Scim>>) -> Response {
    scim.error(ScimError::new(
        StatusCode::NOT_FOUND,
        None,
        "The requested endpoint does not exist.",
    ))
}
