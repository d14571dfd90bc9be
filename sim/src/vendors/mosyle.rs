//! Mosyle Business (`/v1`) and Mosyle Manager (`/v2`), VENDORS.md §1.
//!
//! Both products log in with an admin's email and password plus the
//! account's access token, and hand back a short-lived bearer (a JWT in the
//! real thing) in the `Authorization` *response* header; every later call
//! carries that bearer and the access token again (Business: `accessToken`
//! header; Manager: `accessToken` in the JSON body). The sim issues an opaque
//! JWT-shaped token and tracks its expiry itself (`SimConfig::session_ttl`), so
//! a test can make sessions expire in a second and see the client log in again.
//!
//! Application errors are HTTP 200 with a `status` other than `OK` in the body,
//! as the Manager docs show; clients that only look at the HTTP status miss
//! them, which is what the sim wants to catch. Only auth failures are 401.
//!
//! Neither product documents rate limiting; when the sim throttles it answers
//! 429 with `Retry-After` and a body in the shape Mosyle's front end uses for
//! its own HTTP errors (`{"status":405,"message":"INVALID_METHOD"}`, seen by a
//! third-party probe): `{"status":429,"message":"TOO_MANY_REQUESTS"}`
//! (inferred).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::{Map, Value, json};

use super::{Gate, Service, guard};
use crate::population::{Population, Profile, SimUser, capitalise, weighted};

/// Mosyle Business user types (Terraform provider: "one of
/// (ENDUSER|GROUP_ADMIN|ADMIN) default: ENDUSER").
pub const MOSYLE_BUSINESS_TYPES: [&str; 3] = ["ENDUSER", "GROUP_ADMIN", "ADMIN"];

/// Mosyle Manager user types, as `/listusers` returns them.
pub const MOSYLE_MANAGER_TYPES: [&str; 7] = [
    "STUDENT",
    "TEACHER",
    "STAFF",
    "LOCATION_LEADER",
    "ADMIN",
    "ACCOUNT_ADMIN",
    "DISTRICT_ADMIN",
];

/// Columns `specific_columns` may name (Manager docs).
const MANAGER_COLUMNS: [&str; 10] = [
    "id",
    "name",
    "email",
    "grades",
    "managedappleid",
    "serial_number",
    "type",
    "locations",
    "account",
    "assigned_devices",
];

/// Every n-th stored email has a capital first letter: real directories hold
/// whatever was typed, and Mosyle has no email filter, so clients match
/// emails themselves and must ignore case.
const CAPITALISE_EMAIL_EVERY: usize = 5;

const FIRST_IDUSER: usize = 1001;
const SCHOOLS: [&str; 3] = [
    "Cityview Day School",
    "Riverside Middle School",
    "Hillcrest High School",
];
const ACCOUNT: &str = "Sim School District";
/// The `UserID` the login answers with: the admin's own Mosyle user.
const ADMIN_USER_ID: &str = "sim-api-admin";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Product {
    Business,
    Manager,
}

pub(crate) fn business_profile(rng: &mut StdRng, index: usize, user: &SimUser) -> Profile {
    let kind = weighted(rng, &[("ENDUSER", 85), ("GROUP_ADMIN", 10), ("ADMIN", 5)]);
    let iduser = (FIRST_IDUSER + index).to_string();
    Profile {
        id: Some(iduser.clone()),
        access_role: kind.to_owned(),
        extra: json!({
            "iduser": iduser,
            "identifier": local_part(&user.email),
            "email": stored_email(index, &user.email),
            "type": kind,
            "is_removed": user.deactivated_at.is_some(),
        }),
    }
}

pub(crate) fn manager_profile(rng: &mut StdRng, index: usize, user: &SimUser) -> Profile {
    let kind = weighted(
        rng,
        &[
            ("STUDENT", 60),
            ("TEACHER", 20),
            ("STAFF", 10),
            ("LOCATION_LEADER", 4),
            ("ADMIN", 3),
            ("ACCOUNT_ADMIN", 2),
            ("DISTRICT_ADMIN", 1),
        ],
    );
    let grade = rng.random_range(9..=12).to_string();
    let school = SCHOOLS[rng.random_range(0..SCHOOLS.len())];
    let domain = user.email.split('@').nth(1).unwrap_or_default();
    Profile {
        id: None,
        access_role: kind.to_owned(),
        extra: json!({
            "id": user.id,
            "email": stored_email(index, &user.email),
            "type": kind,
            "managedappleid": format!("{}@appleid.{domain}", local_part(&user.email)),
            "grades": if kind == "STUDENT" { vec![grade] } else { Vec::new() },
            "locations": [{"name": school}],
            "account": ACCOUNT,
        }),
    }
}

fn local_part(email: &str) -> &str {
    email.split('@').next().unwrap_or_default()
}

fn stored_email(index: usize, email: &str) -> String {
    if (index + 1).is_multiple_of(CAPITALISE_EMAIL_EVERY) {
        capitalise(email)
    } else {
        email.to_owned()
    }
}

/// Credentials and paging, from `SimConfig`.
pub(crate) struct MosyleSettings {
    pub(crate) access_token: String,
    pub(crate) login_email: String,
    pub(crate) login_password: String,
    pub(crate) session_ttl: Duration,
    pub(crate) page_size: usize,
}

pub(crate) struct Mosyle {
    product: Product,
    settings: MosyleSettings,
    sessions: Sessions,
    /// Records as the vendor stores them, in listing order. Business users can
    /// be created and updated; Manager's are read-only here.
    users: RwLock<Vec<Map<String, Value>>>,
    gate: Arc<Gate>,
}

impl Mosyle {
    pub(crate) fn new(
        product: Product,
        population: &Population,
        settings: MosyleSettings,
        logins: Arc<AtomicU64>,
        gate: Arc<Gate>,
    ) -> Self {
        let users = population
            .users
            .iter()
            .filter(|user| product == Product::Business || user.deactivated_at.is_none())
            .map(|user| record(product, user))
            .collect();
        Self {
            product,
            sessions: Sessions::new(settings.session_ttl, logins),
            settings,
            users: RwLock::new(users),
            gate,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Map<String, Value>>> {
        // Records are replaced whole, so they stay valid if a writer panicked.
        self.users.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Map<String, Value>>> {
        self.users.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Email compared ignoring case, password exactly.
    fn login(&self, email: Option<&str>, password: Option<&str>) -> Response {
        let (Some(email), Some(password)) = (email, password) else {
            let missing = if email.is_none() { "email" } else { "password" };
            return ok(
                json!({"status": "MISSING_DATA", "info": format!("Missing key: {missing}")}),
            );
        };
        if !email.eq_ignore_ascii_case(&self.settings.login_email)
            || password != self.settings.login_password
        {
            self.gate.record_unauthorized();
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({"status": "WRONG_PASSWORD", "info": "Invalid email or password."})),
            )
                .into_response();
        }
        let token = self.sessions.issue(&self.settings.login_email);
        let mut response = ok(json!({"UserID": ADMIN_USER_ID, "email": self.settings.login_email}));
        if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
            response.headers_mut().insert(header::AUTHORIZATION, value);
        }
        response
    }

    /// Checks the bearer from `/login`: `Some` is the refusal, 401 whatever
    /// the product.
    fn session_refusal(&self, headers: &HeaderMap) -> Option<Response> {
        let token = super::auth_token(headers, &["Bearer"]);
        let message = match token.map(|t| self.sessions.check(t)) {
            Some(Ok(())) => return None,
            Some(Err(message)) => message,
            None => "Authorization Bearer token required",
        };
        self.gate.record_unauthorized();
        Some(
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({"status": "TOKEN_EXPIRED", "message": message})),
            )
                .into_response(),
        )
    }
}

fn record(product: Product, user: &SimUser) -> Map<String, Value> {
    let extra = |key: &str| user.extra.get(key).cloned().unwrap_or(Value::Null);
    let value = match product {
        Product::Business => json!({
            "iduser": extra("iduser"),
            "identifier": extra("identifier"),
            "name": user.name,
            "email": extra("email"),
            "type": extra("type"),
            "is_removed": user.deactivated_at.is_some(),
        }),
        Product::Manager => json!({
            "id": extra("id"),
            "name": user.name,
            "email": extra("email"),
            "grades": extra("grades"),
            "managedappleid": extra("managedappleid"),
            "serial_number": null,
            "type": extra("type"),
            "locations": extra("locations"),
            "account": extra("account"),
            "assigned_devices": [],
        }),
    };
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Issued bearers and when they expire.
struct Sessions {
    ttl: Duration,
    live: Mutex<HashMap<String, Instant>>,
    logins: Arc<AtomicU64>,
    issued: AtomicU64,
}

impl Sessions {
    fn new(ttl: Duration, logins: Arc<AtomicU64>) -> Self {
        Self {
            ttl,
            live: Mutex::default(),
            logins,
            issued: AtomicU64::new(0),
        }
    }

    /// A JWT-shaped token (`header.payload.signature`, base64url) whose payload
    /// carries `exp`, so a client that decodes it sees the real expiry; the
    /// signature is random and never checked, the sim only looks the token up.
    fn issue(&self, email: &str) -> String {
        let now = Instant::now();
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let jti = self.issued.fetch_add(1, Ordering::Relaxed) + 1;
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(
            json!({
                "sub": email,
                "iat": since_epoch.as_secs(),
                "exp": (since_epoch + self.ttl).as_secs(),
                "jti": jti,
            })
            .to_string(),
        );
        let signature: [u8; 32] = rand::rng().random();
        let token = format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode(signature));

        let mut live = self.lock();
        live.retain(|_, expires| *expires > now);
        live.insert(token.clone(), now + self.ttl);
        self.logins.fetch_add(1, Ordering::Relaxed);
        token
    }

    fn check(&self, token: &str) -> Result<(), &'static str> {
        match self.lock().get(token) {
            Some(expires) if *expires > Instant::now() => Ok(()),
            Some(_) => Err("Token expired, please login again"),
            None => Err("Invalid token, please login again"),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        // Plain values, valid even if a holder panicked.
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub(crate) fn router(mosyle: Arc<Mosyle>) -> Router {
    let routes = match mosyle.product {
        Product::Business => Router::new()
            .route("/login", post(business_login).fallback(wrong_method))
            .route("/users", post(business_users).fallback(wrong_method)),
        Product::Manager => Router::new()
            .route("/login", post(manager_login).fallback(wrong_method))
            .route(
                "/listusers",
                post(manager_list_users).fallback(wrong_method),
            ),
    };
    routes
        .fallback(unknown_route)
        .layer(middleware::from_fn_with_state(
            mosyle.clone(),
            guard::<Mosyle>,
        ))
        .with_state(mosyle)
}

impl Service for Mosyle {
    fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    fn injected(&self, status: StatusCode) -> Response {
        let message = status
            .canonical_reason()
            .unwrap_or("ERROR")
            .to_ascii_uppercase()
            .replace([' ', '-'], "_");
        (
            status,
            Json(json!({"status": status.as_u16(), "message": message})),
        )
            .into_response()
    }

    /// Business wants the `accessToken` header on every call, login included
    /// (third-party probe: `401 {"error":"accessToken Required"}`). Manager's
    /// token is in the body, checked by the handlers.
    fn refuse(&self, request: &Request) -> Option<Response> {
        if self.product == Product::Manager {
            return None;
        }
        let given = request
            .headers()
            .get("accessToken")
            .and_then(|v| v.to_str().ok());
        (given != Some(self.settings.access_token.as_str())).then(|| {
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": "accessToken Required"})),
            )
                .into_response()
        })
    }
}

/// HTTP 200 with a JSON body: how Mosyle answers successes and application
/// errors alike.
fn ok(body: Value) -> Response {
    Json(body).into_response()
}

fn status(status: &str, info: impl Into<String>) -> Response {
    ok(json!({"status": status, "info": info.into()}))
}

/// An application error, answered as HTTP 200 `{"status": <code>, "info": …}`.
struct Failure {
    code: &'static str,
    info: String,
}

impl Failure {
    fn new(code: &'static str, info: impl Into<String>) -> Self {
        Self {
            code,
            info: info.into(),
        }
    }

    fn respond(self) -> Response {
        status(self.code, self.info)
    }
}

/// Body parsing shared by every route: anything but a JSON object is
/// `MISSING_DATA`, answered with HTTP 200 like every application error.
fn parse_body(body: &[u8]) -> Result<Map<String, Value>, Failure> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Failure::new(
            "MISSING_DATA",
            "The request body must be a JSON object",
        )),
        Err(_) => Err(Failure::new(
            "MISSING_DATA",
            "Invalid JSON in the request body",
        )),
    }
}

fn str_field<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    map.get(key).and_then(Value::as_str)
}

async fn business_login(State(mosyle): State<Arc<Mosyle>>, body: Bytes) -> Response {
    match parse_body(&body) {
        Ok(body) => mosyle.login(str_field(&body, "email"), str_field(&body, "password")),
        Err(failure) => failure.respond(),
    }
}

async fn manager_login(State(mosyle): State<Arc<Mosyle>>, body: Bytes) -> Response {
    let body = match parse_body(&body) {
        Ok(body) => body,
        Err(failure) => return failure.respond(),
    };
    if str_field(&body, "accessToken") != Some(mosyle.settings.access_token.as_str()) {
        mosyle.gate.record_unauthorized();
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"status": "ERROR", "info": "ACCESS_TOKEN_INVALID"})),
        )
            .into_response();
    }
    mosyle.login(str_field(&body, "email"), str_field(&body, "password"))
}

async fn business_users(
    State(mosyle): State<Arc<Mosyle>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = mosyle.session_refusal(&headers) {
        return refused;
    }
    let body = match parse_body(&body) {
        Ok(body) => body,
        Err(failure) => return failure.respond(),
    };
    match str_field(&body, "operation") {
        None => status("MISSING_DATA", "Missing key: operation"),
        Some("list_users") => match ListOptions::parse(&body) {
            Ok(options) => business_list(&mosyle, &options),
            Err(failure) => failure.respond(),
        },
        Some("create_user") => element(create_user(&mosyle, &body)),
        Some("update_user") => element(update_user(&mosyle, &body)),
        Some(other) => status(
            "INVALID_OPERATION",
            format!("Operation {other} is not valid for this endpoint"),
        ),
    }
}

/// A write's outcome, reported per element inside an `OK` envelope as the
/// Manager docs show (`{"status":"OK","response":[{"status":"INVALID_DATA",…}]}`):
/// a client must look at both levels.
fn element(outcome: Result<Value, (&'static str, String)>) -> Response {
    let inner = match outcome {
        Ok(iduser) => json!({"status": "OK", "iduser": iduser}),
        Err((code, info)) => json!({"status": code, "info": info}),
    };
    ok(json!({"status": "OK", "response": [inner]}))
}

type WriteResult = Result<Value, (&'static str, String)>;

fn invalid(info: impl Into<String>) -> (&'static str, String) {
    ("INVALID_DATA", info.into())
}

fn check_type(kind: &str) -> Result<(), (&'static str, String)> {
    if MOSYLE_BUSINESS_TYPES.contains(&kind) {
        Ok(())
    } else {
        Err(invalid(format!(
            "type must be one of {}",
            MOSYLE_BUSINESS_TYPES.join(", ")
        )))
    }
}

fn check_email(email: &str) -> Result<(), (&'static str, String)> {
    let valid = email
        .split_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
    if valid {
        Ok(())
    } else {
        Err(invalid(format!("Invalid email: {email}")))
    }
}

/// `{"operation":"create_user","user_id","name","email"?,"type"?}`; `type`
/// defaults to ENDUSER.
fn create_user(mosyle: &Mosyle, body: &Map<String, Value>) -> WriteResult {
    let user_id =
        str_field(body, "user_id").ok_or(("MISSING_DATA", "Missing key: user_id".into()))?;
    let name = str_field(body, "name").ok_or(("MISSING_DATA", "Missing key: name".into()))?;
    let kind = str_field(body, "type").unwrap_or("ENDUSER");
    check_type(kind)?;
    let email = str_field(body, "email").unwrap_or_default();
    if !email.is_empty() {
        check_email(email)?;
    }
    if user_id.trim().is_empty() || name.trim().is_empty() {
        return Err(invalid("user_id and name must not be empty"));
    }
    let mut users = mosyle.write();
    if users
        .iter()
        .any(|u| str_field(u, "identifier") == Some(user_id))
    {
        return Err(invalid(format!("user_id {user_id} already exists")));
    }
    let next = users
        .iter()
        .filter_map(|u| str_field(u, "iduser")?.parse::<u64>().ok())
        .max()
        .unwrap_or(FIRST_IDUSER as u64 - 1)
        + 1;
    let iduser = Value::from(next.to_string());
    let created = json!({
        "iduser": iduser,
        "identifier": user_id,
        "name": name,
        "email": email,
        "type": kind,
        "is_removed": false,
    });
    if let Value::Object(map) = created {
        users.push(map);
    }
    Ok(iduser)
}

/// `{"operation":"update_user","user_id" | "iduser", "name"?, "email"?, "type"?}`.
fn update_user(mosyle: &Mosyle, body: &Map<String, Value>) -> WriteResult {
    let iduser = body.get("iduser").map(|v| match v {
        Value::Number(n) => n.to_string(),
        other => other.as_str().unwrap_or_default().to_owned(),
    });
    let user_id = str_field(body, "user_id");
    if iduser.is_none() && user_id.is_none() {
        return Err(("MISSING_DATA", "Missing key: user_id".into()));
    }
    if let Some(kind) = str_field(body, "type") {
        check_type(kind)?;
    }
    if let Some(email) = str_field(body, "email") {
        check_email(email)?;
    }
    let mut users = mosyle.write();
    let user = users
        .iter_mut()
        .find(|u| match (&iduser, user_id) {
            (Some(id), _) => str_field(u, "iduser") == Some(id.as_str()),
            (None, Some(user_id)) => str_field(u, "identifier") == Some(user_id),
            (None, None) => false,
        })
        .ok_or_else(|| invalid("User not found"))?;
    for key in ["name", "email", "type"] {
        if let Some(value) = body.get(key) {
            if !value.is_string() {
                return Err(invalid(format!("{key} must be a string")));
            }
            user.insert(key.to_owned(), value.clone());
        }
    }
    Ok(user.get("iduser").cloned().unwrap_or(Value::Null))
}

/// `options` of a list call: `page` (1-based, default 1), `types`,
/// `identifiers` (Business: `identifier`; Manager: `id`), Business's
/// `name_like` and Manager's `specific_columns`.
struct ListOptions {
    page: usize,
    types: Option<Vec<String>>,
    identifiers: Option<Vec<String>>,
    name_like: Option<String>,
    columns: Option<Vec<String>>,
}

impl ListOptions {
    fn parse(body: &Map<String, Value>) -> Result<Self, Failure> {
        let empty = Map::new();
        let options = match body.get("options") {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(options)) => options,
            Some(_) => return Err(Failure::new("INVALID_DATA", "options must be an object")),
        };
        let bad_page = || Failure::new("INVALID_DATA", "page must be a number");
        let page = match options.get("page") {
            None | Some(Value::Null) => 1,
            Some(Value::Number(n)) => n.as_u64().map_or(1, |n| n.max(1) as usize),
            Some(Value::String(s)) => s.trim().parse::<usize>().map_err(|_| bad_page())?.max(1),
            Some(_) => return Err(bad_page()),
        };
        Ok(Self {
            page,
            types: string_list(options, "types")?,
            identifiers: string_list(options, "identifiers")?,
            name_like: str_field(options, "name_like").map(str::to_lowercase),
            columns: string_list(options, "specific_columns")?,
        })
    }

    fn matches(&self, product: Product, user: &Map<String, Value>) -> bool {
        let field = |key| str_field(user, key).unwrap_or_default();
        let identifier = match product {
            Product::Business => field("identifier"),
            Product::Manager => field("id"),
        };
        self.types
            .as_ref()
            .is_none_or(|types| types.iter().any(|t| t.eq_ignore_ascii_case(field("type"))))
            && self
                .identifiers
                .as_ref()
                .is_none_or(|ids| ids.iter().any(|id| id == identifier))
            && self
                .name_like
                .as_ref()
                .is_none_or(|like| field("name").to_lowercase().contains(like))
    }
}

/// A list of strings (numbers are taken as their text, since the docs call
/// identifiers "integers" while they are strings).
fn string_list(options: &Map<String, Value>, key: &str) -> Result<Option<Vec<String>>, Failure> {
    let Some(value) = options.get(key) else {
        return Ok(None);
    };
    let bad = || Failure::new("INVALID_DATA", format!("{key} must be an array of strings"));
    let items = value.as_array().ok_or_else(bad)?;
    items
        .iter()
        .map(|item| match item {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()
        .map(Some)
        .ok_or_else(bad)
}

/// One page of matching users and the total.
fn page_of(mosyle: &Mosyle, options: &ListOptions) -> (Vec<Map<String, Value>>, usize) {
    let users = mosyle.read();
    let matching: Vec<&Map<String, Value>> = users
        .iter()
        .filter(|u| options.matches(mosyle.product, u))
        .collect();
    let size = mosyle.settings.page_size.max(1);
    let page = matching
        .iter()
        .skip((options.page - 1).saturating_mul(size))
        .take(size)
        .map(|u| (*u).clone())
        .collect();
    (page, matching.len())
}

/// `{"status":"OK","response":[{"users":[…],"rows":N,"page_size":n,"page":p}]}`:
/// Business's `response` is an array (Go struct `ListResponse`).
fn business_list(mosyle: &Mosyle, options: &ListOptions) -> Response {
    let (users, total) = page_of(mosyle, options);
    ok(json!({
        "status": "OK",
        "response": [{
            "users": users,
            "rows": total,
            "page_size": mosyle.settings.page_size.max(1),
            "page": options.page,
        }],
    }))
}

/// `{"accessToken", "options":{"page","specific_columns","types","identifiers"}}`
/// → `{"status":"OK","response":{"users":[…],"total":N,"page_size":n}}`;
/// Manager's `response` is an object. A wrong access token is an HTTP 200
/// error, like Manager's other application errors.
async fn manager_list_users(
    State(mosyle): State<Arc<Mosyle>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = mosyle.session_refusal(&headers) {
        return refused;
    }
    let body = match parse_body(&body) {
        Ok(body) => body,
        Err(failure) => return failure.respond(),
    };
    if str_field(&body, "accessToken") != Some(mosyle.settings.access_token.as_str()) {
        mosyle.gate.record_unauthorized();
        return ok(json!({"status": "ERROR", "info": "ACCESS_TOKEN_INVALID"}));
    }
    let options = match ListOptions::parse(&body) {
        Ok(options) => options,
        Err(failure) => return failure.respond(),
    };
    let (users, total) = page_of(&mosyle, &options);
    let users: Vec<Map<String, Value>> = match &options.columns {
        None => users,
        Some(columns) => users
            .into_iter()
            .map(|mut user| {
                user.retain(|key, _| {
                    MANAGER_COLUMNS.contains(&key.as_str()) && columns.iter().any(|c| c == key)
                });
                user
            })
            .collect(),
    };
    ok(json!({
        "status": "OK",
        "response": {
            "users": users,
            "total": total,
            "page_size": mosyle.settings.page_size.max(1),
        },
    }))
}

/// Third-party probe: `405 {"status":405,"message":"INVALID_METHOD"}`.
async fn wrong_method() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({"status": 405, "message": "INVALID_METHOD"})),
    )
        .into_response()
}

/// Third-party probe: unknown routes answer 404 with this plain text.
async fn unknown_route() -> Response {
    (StatusCode::NOT_FOUND, "Ops, something happened!").into_response()
}
