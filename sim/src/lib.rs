//! Simulated SaaS vendors over real HTTP.
//!
//! End-to-end tests and the demo need a vendor that behaves like the real one on
//! the wire — payload shapes, auth, paging, rate limits — but whose users are
//! known in advance and whose load can be measured from the vendor's side.
//!
//! A sim serves one [`Vendor`] (`SimConfig::vendor`, Lever by default), at the
//! vendor's own paths:
//!
//! | vendor | routes | credentials |
//! |---|---|---|
//! | Lever | `GET /v1/users`, `GET /v1/users/{id}` | Basic, `api_key` as user name |
//! | Mosyle Business | `POST /v1/login`, `POST /v1/users` (`list_users`, `create_user`, `update_user`) | header `accessToken: <api_key>`; login with `login_email`/`login_password` → `Authorization: Bearer` session (`session_ttl`) |
//! | Mosyle Manager | `POST /v2/login`, `POST /v2/listusers` | `accessToken` in the JSON body; login as above |
//! | Miro SCIM | `GET /api/v1/scim/Users[?filter]`, `GET`/`PATCH /api/v1/scim/Users/{id}` | `Bearer <api_key>` |
//! | generic SCIM | as Miro under `/scim/v2`, plus `GET /scim/v2/ServiceProviderConfig` | `Bearer <api_key>` |
//! | Okta | `GET /api/v1/users[?search]`, `GET /api/v1/users/{id or login}`, `GET /api/v1/users/{id}/roles` | `SSWS <api_key>` |
//! | GitHub | `GET /orgs/{github_org}/memberships/{username}`, `GET /orgs/{github_org}/members` | `Bearer <api_key>` (or `token`) |
//! | Zoom | `GET /v2/users/{id or email}`, `GET /v2/users` | `Bearer <api_key>` |
//!
//! Every vendor route passes the same gate: the network's way in, the
//! limiter, injected faults, auth, the handler, the way back; refusals come
//! in the vendor's own error shape. [`SimUser`] documents how each vendor
//! shows a user's role and status.
//!
//! ## Rate limits, as vendors count them
//!
//! A [`Limit`] is one of three schemes: a token bucket ([`RateLimit`], what
//! Lever documents), a strict sliding window (at most N requests in *any*
//! window of W, counted on arrival; refused requests count only with
//! `count_rejected`) or fixed windows of W aligned to the Unix epoch. The
//! default bucket takes `SimConfig::limit` (or the older `rate`); named
//! [`BucketSpec`]s (`SimConfig::buckets`) give endpoint groups their own
//! limit, as Okta counts per endpoint: a request goes to the first bucket
//! whose pattern (`/api/v1/users/*/roles`, `*` = one path segment) matches
//! its path. Okta and GitHub report the request's bucket in their rate-limit
//! headers. Whether 429s carry `Retry-After` follows the vendor's
//! documentation unless `SimConfig::retry_after` says otherwise
//! ([`Vendor::sends_retry_after`]).
//!
//! `SimConfig::latency` is a round trip: half of it (plus up to half of
//! `jitter`, drawn uniformly) passes before the limiter counts a request,
//! the rest after the answer. Jitter thus bunches evenly sent requests into
//! one window, as a real network does; a request whose client gives up on
//! the way is still counted (logged as 499).
//!
//! ## Scenarios
//!
//! - `fail_emails`: lookups of these answer 500.
//! - `endless_emails` (Lever): lookups page forever, every page empty with
//!   `hasNext: true` and a fresh `next`, so a client must hit its page cap.
//! - Mosyle Business: deactivated users (`deactivated_ratio`, 5 % by
//!   default) are listed with `is_removed: true`.
//! - Okta: about 15 % of users are admins, and about a third of those hold
//!   one or two lesser roles besides, all listed by `/users/{id}/roles`.
//!
//! ## Control
//!
//! `/_sim/...` controls and observes the sim (no auth, never throttled, never
//! counted):
//!
//! - `GET /_sim/stats`: [`StatsSnapshot`], with per-bucket [`BucketStats`]
//!   (counts, peak requests in one window of the bucket's own length, the
//!   limit, first and last arrivals) and `received`, every HTTP request that
//!   reached a vendor route
//! - `GET /_sim/requests`: the request log, `[RequestRecord]`
//! - `POST /_sim/reset`: [`SimHandle::reset_stats`]; answers the cleared stats
//! - `GET|PUT /_sim/rate[?bucket=NAME]`: `Option<Limit>` (`null` is
//!   unlimited) of the default or the named bucket; `PUT` takes
//!   `{"per_second": 10, "burst": 20}` (a token bucket, as always),
//!   `{"scheme": "sliding_window", "requests": 50, "window_ms": 1000}` or
//!   `{"scheme": "fixed_window", "requests": 200, "window_ms": 30000}` and
//!   answers the limit now in force; an unknown bucket is 404
//! - `POST /_sim/faults`: queue a [`Fault`]; `GET` lists pending ones, `DELETE`
//!   drops them
//! - `GET|PUT /_sim/chaos`: [`Chaos`], faults by share rather than by count
//!   (`{"error_ratio": 0.2, "hang_ratio": 0.01, "hang_s": 30}`: 503s and
//!   hangs) and a revoked credential (`{"revoked": true}`: every vendor
//!   request 401 until it is put back to `false`)
//! - `GET /_sim/health`: `ok`

mod buckets;
mod chaos;
mod clock;
mod faults;
pub mod inventory;
mod limit;
mod population;
mod stats;
mod throttle;
mod vendors;
mod window;

use std::collections::HashSet;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use buckets::{BucketError, BucketSpec, DEFAULT_BUCKET};
pub use chaos::{Chaos, ChaosError};
pub use faults::{Fault, FaultError, MALFORMED};
pub use limit::{Limit, LimitError, parse_window};
pub use population::{Population, SimUser, generate_population, generate_vendor_population};
pub use stats::{BucketStats, REQUEST_LOG_CAPACITY, RequestRecord, StatsSnapshot};
pub use throttle::RateLimit;
pub use vendors::Vendor;
pub use vendors::github::GITHUB_ROLES;
pub use vendors::lever::LEVER_ROLES;
pub use vendors::mosyle::{MOSYLE_BUSINESS_TYPES, MOSYLE_MANAGER_TYPES};
pub use vendors::okta::OKTA_ROLES;
pub use vendors::scim::{MIRO_ROLES, MIRO_USER_TYPES, SCIM_ENTITLEMENTS, SCIM_ROLES};
pub use vendors::zoom::{ZOOM_ROLES, ZOOM_TYPES};

use vendors::github::Github;
use vendors::lever::{self, Lever, LeverScenarios};
use vendors::mosyle::{Mosyle, MosyleSettings, Product};
use vendors::okta::Okta;
use vendors::scim::{Flavor, Scim};
use vendors::zoom::Zoom;
use vendors::{Gate, GateSettings};

/// How long [`SimHandle::shutdown`] lets in-flight requests finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct SimConfig {
    /// Which vendor to serve.
    pub vendor: Vendor,
    /// Population size.
    pub users: usize,
    pub seed: u64,
    pub email_domain: String,
    /// The vendor's main secret: Lever API key, Mosyle access token, Miro or
    /// SCIM bearer token, Okta SSWS token, GitHub token, Zoom bearer token.
    pub api_key: String,
    /// Mosyle: the admin whose email and password `/login` accepts.
    pub login_email: String,
    pub login_password: String,
    /// Mosyle: how long a login's bearer stays valid (24 h, as Mosyle
    /// documents; tests shorten it to see clients log in again).
    pub session_ttl: Duration,
    /// Mosyle's list page size; the generic SCIM provider's default and
    /// maximum `count`. Miro keeps its documented 100 / 1000.
    pub page_size: usize,
    /// GitHub: the organisation whose memberships the sim answers.
    pub github_org: String,
    /// The default bucket's token bucket; `None` means unlimited. Kept for
    /// callers that only know token buckets: `limit` overrides it.
    pub rate: Option<RateLimit>,
    /// The default bucket's limit in any scheme (sliding or fixed windows,
    /// token bucket); when `Some`, used instead of `rate`.
    pub limit: Option<Limit>,
    /// Endpoint groups the vendor counts apart, each with its own limit
    /// (Okta's per-endpoint limits); a request goes to the first whose
    /// pattern matches its path, else to the default bucket.
    pub buckets: Vec<BucketSpec>,
    /// The network's round trip, on every vendor response, throttled ones
    /// included: half of it passes before the vendor counts the request,
    /// half after it answers.
    pub latency: Duration,
    /// Added to `latency`: each way draws uniformly up to half of it,
    /// independently, so requests sent evenly arrive unevenly.
    pub jitter: Duration,
    /// Whether throttled (429) answers carry `Retry-After`; `None` does as
    /// the vendor documents ([`Vendor::sends_retry_after`]: Lever, Miro,
    /// Okta, GitHub and Zoom send none). Injected faults carry theirs anyway.
    pub retry_after: Option<bool>,
    /// Share of vendor users deactivated (how that shows is per vendor, see
    /// [`SimUser`]).
    pub deactivated_ratio: f64,
    /// Lookups of these emails (any case) always answer 500 (Lever email
    /// lookups, SCIM and Okta searches, Okta/Zoom/GitHub single-user reads).
    pub fail_emails: HashSet<String>,
    /// Lever: lookups of these emails (any case) page forever, every page
    /// empty with `hasNext: true` and a new `next` cursor.
    pub endless_emails: HashSet<String>,
}

impl SimConfig {
    /// The default bucket's limit: `limit`, else `rate`.
    pub fn default_limit(&self) -> Option<Limit> {
        self.limit.or(self.rate.map(Limit::TokenBucket))
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            vendor: Vendor::Lever,
            users: 100,
            seed: 1,
            email_domain: "example.com".to_owned(),
            api_key: "sim-lever-key".to_owned(),
            login_email: "admin@example.com".to_owned(),
            login_password: "sim-password".to_owned(),
            session_ttl: Duration::from_secs(24 * 60 * 60),
            page_size: 50,
            github_org: "acme".to_owned(),
            rate: None,
            limit: None,
            buckets: Vec::new(),
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            retry_after: None,
            deactivated_ratio: 0.05,
            fail_emails: HashSet::new(),
            endless_emails: HashSet::new(),
        }
    }
}

/// Hand-written so that logging a config never prints a secret.
impl fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("vendor", &self.vendor)
            .field("users", &self.users)
            .field("seed", &self.seed)
            .field("email_domain", &self.email_domain)
            .field("api_key", &"<redacted>")
            .field("login_email", &self.login_email)
            .field("login_password", &"<redacted>")
            .field("session_ttl", &self.session_ttl)
            .field("page_size", &self.page_size)
            .field("github_org", &self.github_org)
            .field("rate", &self.rate)
            .field("limit", &self.limit)
            .field("buckets", &self.buckets)
            .field("latency", &self.latency)
            .field("jitter", &self.jitter)
            .field("retry_after", &self.retry_after)
            .field("deactivated_ratio", &self.deactivated_ratio)
            .field("fail_emails", &self.fail_emails)
            .field("endless_emails", &self.endless_emails)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the address the sim listens on")]
    LocalAddr(#[source] std::io::Error),
    #[error("invalid rate-limit buckets")]
    Buckets(#[from] BucketError),
}

/// Starts a sim on an ephemeral loopback port, so parallel tests never collide.
pub async fn spawn(config: SimConfig) -> anyhow::Result<SimHandle> {
    spawn_on(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
}

/// As [`spawn`], on a chosen address (the binary's `--bind`).
pub async fn spawn_on(config: SimConfig, bind: SocketAddr) -> anyhow::Result<SimHandle> {
    let gate = Arc::new(build_gate(&config)?);
    let listener = TcpListener::bind(bind)
        .await
        .map_err(|source| SimError::Bind { addr: bind, source })?;
    let addr = listener.local_addr().map_err(SimError::LocalAddr)?;

    let population = Arc::new(generate_vendor_population(
        config.vendor,
        config.users,
        config.seed,
        &config.email_domain,
        config.deactivated_ratio,
    ));
    let logins = Arc::new(AtomicU64::new(0));
    let chaos = Arc::new(chaos::ChaosState::default());
    let app = vendor_router(&config, &population, &gate, &logins)
        .layer(axum::middleware::from_fn_with_state(
            chaos.clone(),
            chaos::apply,
        ))
        .nest(
            "/_sim",
            admin_router(gate.clone()).merge(chaos::router(chaos.clone())),
        );

    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        // A dropped sender also stops the server: a forgotten handle cleans up.
        let signal = async {
            let _ = stopped.await;
        };
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(signal)
            .await
        {
            tracing::error!(%error, "sim server failed");
        }
    });
    tracing::debug!(%addr, vendor = %config.vendor, users = config.users, seed = config.seed, "sim started");

    Ok(SimHandle {
        addr,
        population,
        gate,
        logins,
        chaos,
        stop: Some(stop),
        task: Some(task),
    })
}

/// Checked before binding, so a bad limit never leaves a port open.
fn build_gate(config: &SimConfig) -> Result<Gate, SimError> {
    let limit = config.default_limit();
    if let Some(limit) = &limit {
        limit.validate().map_err(|source| BucketError::Limit {
            name: DEFAULT_BUCKET.to_owned(),
            source,
        })?;
    }
    Ok(Gate::new(GateSettings {
        limit,
        buckets: config.buckets.clone(),
        latency: config.latency,
        jitter: config.jitter,
        retry_after: config
            .retry_after
            .unwrap_or_else(|| config.vendor.sends_retry_after()),
    })?)
}

fn vendor_router(
    config: &SimConfig,
    population: &Arc<Population>,
    gate: &Arc<Gate>,
    logins: &Arc<AtomicU64>,
) -> Router {
    let gate = gate.clone();
    let mosyle = |product| {
        let settings = MosyleSettings {
            access_token: config.api_key.clone(),
            login_email: config.login_email.clone(),
            login_password: config.login_password.clone(),
            session_ttl: config.session_ttl,
            page_size: config.page_size,
        };
        vendors::mosyle::router(Arc::new(Mosyle::new(
            product,
            population,
            settings,
            logins.clone(),
            gate.clone(),
        )))
    };
    let scim = |flavor: Flavor| {
        let scim = Scim::new(
            flavor,
            population,
            &config.api_key,
            config.page_size,
            &config.fail_emails,
            gate.clone(),
        );
        Router::new().nest(flavor.base_path(), vendors::scim::router(Arc::new(scim)))
    };
    let router = match config.vendor {
        Vendor::Lever => {
            let scenarios = LeverScenarios {
                fail_emails: &config.fail_emails,
                endless_emails: &config.endless_emails,
            };
            let lever = Lever::new(
                population.clone(),
                &config.api_key,
                &scenarios,
                gate.clone(),
            );
            Router::new().nest("/v1", lever::router(Arc::new(lever)))
        }
        Vendor::MosyleBusiness => Router::new().nest("/v1", mosyle(Product::Business)),
        Vendor::MosyleManager => Router::new().nest("/v2", mosyle(Product::Manager)),
        Vendor::MiroScim => scim(Flavor::Miro),
        Vendor::Scim => scim(Flavor::Generic),
        Vendor::Okta => {
            let okta = Okta::new(
                population,
                &config.api_key,
                &config.fail_emails,
                gate.clone(),
            );
            Router::new().nest("/api/v1", vendors::okta::router(Arc::new(okta)))
        }
        Vendor::Github => {
            let github = Github::new(
                population,
                &config.github_org,
                &config.api_key,
                &config.fail_emails,
                gate.clone(),
            );
            vendors::github::router(Arc::new(github))
        }
        Vendor::Zoom => {
            let zoom = Zoom::new(
                population,
                &config.api_key,
                &config.fail_emails,
                gate.clone(),
            );
            Router::new().nest("/v2", vendors::zoom::router(Arc::new(zoom)))
        }
    };
    router.layer(axum::middleware::from_fn(vendors::remember_path))
}

/// The running sim; dropping it stops the server.
pub struct SimHandle {
    addr: SocketAddr,
    population: Arc<Population>,
    gate: Arc<Gate>,
    logins: Arc<AtomicU64>,
    chaos: Arc<chaos::ChaosState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// No trailing slash: callers append the vendor path (`/v1/...`, `/orgs/...`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.gate.stats()
    }

    /// The users as generated. Writes made over the vendor API (Mosyle
    /// `create_user`/`update_user`, SCIM `PATCH`) are not reflected here:
    /// read them back over HTTP.
    pub fn population(&self) -> &Population {
        &self.population
    }

    /// Successful Mosyle logins so far (0 for other vendors): lets a test
    /// prove a client reuses its session, and renews it when it expires.
    pub fn login_count(&self) -> u64 {
        self.logins.load(Ordering::Relaxed)
    }

    /// The default bucket becomes a token bucket at `rate` (`None`:
    /// unlimited), full, from the next request on.
    pub fn set_rate(&self, rate: Option<RateLimit>) {
        self.set_limit(rate.map(Limit::TokenBucket))
            .unwrap_or_else(|error| panic!("cannot set {rate:?}: {error}"));
    }

    /// The default bucket's limit, in any scheme, from the next request on.
    /// A token bucket starts full; a window keeps counting the requests
    /// already in it, so halving a limit mid-run bites at once, as at a
    /// vendor. Fails for an invalid limit (a window under 1 ms).
    pub fn set_limit(&self, limit: Option<Limit>) -> Result<(), BucketError> {
        self.gate.set_limit(DEFAULT_BUCKET, limit)
    }

    /// As [`SimHandle::set_limit`], for the bucket named `name`
    /// ([`DEFAULT_BUCKET`] is the default one).
    pub fn set_bucket_limit(&self, name: &str, limit: Option<Limit>) -> Result<(), BucketError> {
        self.gate.set_limit(name, limit)
    }

    /// The default bucket's limit now.
    pub fn limit(&self) -> Option<Limit> {
        self.gate.limit(DEFAULT_BUCKET).unwrap_or_default()
    }

    pub fn bucket_limit(&self, name: &str) -> Result<Option<Limit>, BucketError> {
        self.gate.limit(name)
    }

    /// The last [`REQUEST_LOG_CAPACITY`] vendor requests, oldest arrival first,
    /// for checks a counter cannot express (rate over any window, what
    /// followed a 429). A request whose client disconnected before the answer
    /// is logged with status 499.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.gate.requests()
    }

    /// Starts a new measurement on the same sim, e.g. between benchmark
    /// phases: counters, peaks, timings and the request log go back to empty;
    /// the population, the limits (and what their buckets and windows have
    /// counted) and pending faults stay. Requests in flight are counted in the
    /// old measurement only.
    pub fn reset_stats(&self) {
        self.gate.reset_stats();
    }

    /// Queues `fault` behind any already pending.
    ///
    /// # Panics
    ///
    /// If the status is not an error status (see [`Fault::validate`]): that
    /// is a bug in the test, better reported where it was made than as a
    /// strange response later.
    pub fn inject(&self, fault: Fault) {
        if let Err(error) = fault.validate() {
            panic!("cannot inject {fault:?}: {error}");
        }
        self.gate.inject(fault);
    }

    /// Faults not yet used up, with their remaining counts.
    pub fn pending_faults(&self) -> Vec<Fault> {
        self.gate.pending_faults()
    }

    pub fn clear_faults(&self) {
        self.gate.clear_faults();
    }

    /// From the next request on: a share of 503s and hangs, or a revoked
    /// credential (see [`Chaos`]).
    ///
    /// # Panics
    ///
    /// If a ratio is outside 0..=1 (a bug in the caller).
    pub fn set_chaos(&self, chaos: Chaos) {
        if let Err(error) = chaos.validate() {
            panic!("cannot set {chaos:?}: {error}");
        }
        self.chaos.set(chaos);
    }

    /// The chaos in force.
    pub fn chaos(&self) -> Chaos {
        self.chaos.get()
    }

    /// Lets in-flight requests finish (for a few seconds at most), then stops.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            tracing::warn!("sim did not stop in time; aborting");
            task.abort();
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn admin_router(gate: Arc<Gate>) -> Router {
    Router::new()
        .route("/stats", get(get_stats))
        .route("/requests", get(get_requests))
        .route("/reset", post(post_reset))
        .route("/rate", get(get_rate).put(put_rate))
        .route(
            "/faults",
            get(get_faults).post(post_fault).delete(delete_faults),
        )
        .route("/health", get(|| async { "ok" }))
        .with_state(gate)
}

async fn get_stats(State(gate): State<Arc<Gate>>) -> Json<StatsSnapshot> {
    Json(gate.stats())
}

async fn get_requests(State(gate): State<Arc<Gate>>) -> Json<Vec<RequestRecord>> {
    Json(gate.requests())
}

/// Answers the cleared stats, so a script sees the reset took.
async fn post_reset(State(gate): State<Arc<Gate>>) -> Json<StatsSnapshot> {
    gate.reset_stats();
    Json(gate.stats())
}

/// `?bucket=NAME` picks a named bucket; without it, the default one.
#[derive(Deserialize)]
struct BucketQuery {
    bucket: Option<String>,
}

impl BucketQuery {
    fn name(&self) -> &str {
        self.bucket.as_deref().unwrap_or(DEFAULT_BUCKET)
    }
}

fn bucket_error(error: &BucketError) -> Response {
    let status = match error {
        BucketError::Unknown(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    };
    (status, error.to_string()).into_response()
}

async fn get_rate(State(gate): State<Arc<Gate>>, Query(query): Query<BucketQuery>) -> Response {
    match gate.limit(query.name()) {
        Ok(limit) => Json(limit).into_response(),
        Err(error) => bucket_error(&error),
    }
}

/// Answers the limit now in force; a bad body is a 4xx with the reason as
/// plain text.
async fn put_rate(
    State(gate): State<Arc<Gate>>,
    Query(query): Query<BucketQuery>,
    limit: Result<Json<Option<Limit>>, JsonRejection>,
) -> Response {
    let limit = match limit {
        Ok(Json(limit)) => limit,
        Err(rejection) => return (rejection.status(), rejection.body_text()).into_response(),
    };
    match gate.set_limit(query.name(), limit) {
        Ok(()) => Json(gate.limit(query.name()).unwrap_or_default()).into_response(),
        Err(error) => bucket_error(&error),
    }
}

async fn get_faults(State(gate): State<Arc<Gate>>) -> Json<Vec<Fault>> {
    Json(gate.pending_faults())
}

/// Answers the pending faults, this one included; a bad fault is a 400 with
/// the reason as plain text.
async fn post_fault(
    State(gate): State<Arc<Gate>>,
    fault: Result<Json<Fault>, JsonRejection>,
) -> Response {
    let fault = match fault {
        Ok(Json(fault)) => fault,
        Err(rejection) => return (rejection.status(), rejection.body_text()).into_response(),
    };
    if let Err(error) = fault.validate() {
        return (StatusCode::BAD_REQUEST, error.to_string()).into_response();
    }
    gate.inject(fault);
    Json(gate.pending_faults()).into_response()
}

async fn delete_faults(State(gate): State<Arc<Gate>>) -> StatusCode {
    gate.clear_faults();
    StatusCode::NO_CONTENT
}
