//! An HTTP system of record: paged into the Redis inventory, and told once
//! per deactivated user, even when a worker is killed mid-run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, patch};
use rolecall_common::config::{self, Settings};
use rolecall_common::credentials::Vault;
use rolecall_common::inventory::InventoryStore;
use rolecall_scheduler::http_source::HttpSource;
use rolecall_scheduler::inventory::Format;
use rolecall_scheduler::{RunOnceOptions, run_once, sor};
use rolecall_sim::{SimConfig, SimHandle, Vendor};
use rolecall_tests::{TestEnv, WorkerProcess};
use serde_json::{Value, json};

use crate::inventory::app_table;

const TOKEN: &str = "hr-token";
const PAGE: usize = 20;

#[derive(Default)]
struct Hr {
    users: Vec<Value>,
    /// Page requests, and which ones fail once (to prove retries).
    requests: usize,
    /// (user id, idempotency key) of every write-back received.
    write_backs: Vec<(String, String)>,
    unauthorized: usize,
    /// Every page request fails (503) while set.
    down: bool,
    /// The most users a page holds, whatever the request asks for.
    cap: Option<usize>,
    /// The bearer token it takes (rotated by a test).
    token: String,
}

type Shared = Arc<Mutex<Hr>>;

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {token}"))
}

/// The system of record's API on a free port, serving `users`: its state
/// and base URL.
async fn serve_hr(users: Vec<Value>) -> (Shared, String) {
    let hr: Shared = Arc::new(Mutex::new(Hr {
        users,
        token: TOKEN.into(),
        ..Default::default()
    }));
    let router = axum::Router::new()
        .route("/users", get(list))
        .route("/users/{id}", patch(write_back))
        .with_state(hr.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (hr, base)
}

/// A lever app fed by the HTTP source `hr` at `base` (paged as `paging`
/// says; users' status missing = inactive), its store and load options.
async fn synced_source(
    env: &TestEnv,
    sim: &SimHandle,
    base: &str,
    paging: &str,
) -> (Settings, InventoryStore, HttpSource, sor::LoadOptions) {
    let source = format!(
        r#"
[inventory.sources.hr]
url = "{base}/users"
credential = "hr"
saas = ["lever"]
{paging}page_size_param = "limit"
items = "/data"
max_attempts = 2
missing = "inactive"
fields = {{ user_id = "/id", email = "/work_email", status = "/state" }}
"#
    );
    let app = app_table("lever", Vendor::Lever, sim);
    let settings = config::from_toml(&env.config_text(&[], &format!("{app}{source}")))
        .expect("valid configuration");
    let lookup = Vault::with_env(settings.credentials.clone(), Default::default());
    let vault = Vault::with_env(
        settings.credentials.clone(),
        [(lookup.env_var("hr"), TOKEN.to_string())]
            .into_iter()
            .collect(),
    );
    let store = InventoryStore::new(env.redis.clone(), &env.names);
    let http = HttpSource::open(&settings.inventory.sources, "hr", &vault)
        .await
        .unwrap();
    let options = sor::LoadOptions {
        missing: http.missing(settings.inventory.sor_missing),
        ..Default::default()
    };
    (settings, store, http, options)
}

/// `n` active people, `p<i>@example.com`, as the source lists them.
fn people(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"id": format!("hr-{i}"), "work_email": format!("p{i}@example.com"), "state": "active"}))
        .collect()
}

async fn list(
    State(hr): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, StatusCode> {
    let mut hr = hr.lock().unwrap();
    if !authorized(&headers, &hr.token) {
        hr.unauthorized += 1;
        return Err(StatusCode::UNAUTHORIZED);
    }
    hr.requests += 1;
    // The second request fails once: the source retries it.
    if hr.requests == 2 || hr.down {
        return Err(StatusCode::SERVICE_UNAVAILABLE);
    }
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(PAGE)
        .min(hr.cap.unwrap_or(usize::MAX));
    let start: usize = query
        .get("cursor")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let data: Vec<Value> = hr.users.iter().skip(start).take(limit).cloned().collect();
    let end = start + data.len();
    let next = (end < hr.users.len()).then(|| end.to_string());
    Ok(Json(json!({"data": data, "next_cursor": next})))
}

async fn write_back(
    State(hr): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> StatusCode {
    let mut hr = hr.lock().unwrap();
    if !authorized(&headers, &hr.token) {
        hr.unauthorized += 1;
        return StatusCode::UNAUTHORIZED;
    }
    assert_eq!(body, json!({"active": false, "id": id}));
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    hr.write_backs.push((id, key));
    StatusCode::OK
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_http_source_pages_and_gets_one_write_back_per_deactivated_user_across_a_killed_worker()
 {
    let env = TestEnv::new().await;
    let sim = rolecall_sim::spawn(SimConfig {
        vendor: Vendor::Lever,
        users: 120,
        seed: 8,
        deactivated_ratio: 0.1,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    // 60 users the vendor has (some deactivated there) and 15 it does not.
    let population = &sim.population().users;
    let mut users = Vec::new();
    let mut expected = BTreeSet::new();
    for (i, user) in population.iter().take(60).enumerate() {
        users.push(json!({"id": format!("hr-{i}"), "work_email": user.email.to_uppercase(), "state": "active"}));
        if user.deactivated_at.is_some() {
            expected.insert(format!("hr-{i}"));
        }
    }
    for i in 60..75 {
        users.push(json!({"id": format!("hr-{i}"), "work_email": format!("ghost{i}@elsewhere.org"), "state": "active"}));
        expected.insert(format!("hr-{i}"));
    }
    let (hr, base) = serve_hr(users).await;

    let source = format!(
        r#"
[inventory.sources.hr]
url = "{base}/users"
credential = "hr"
saas = ["lever"]
paging = "cursor"
next = "/next_cursor"
cursor_param = "cursor"
page_size = {PAGE}
page_size_param = "limit"
items = "/data"
fields = {{ user_id = "/id", email = "/work_email", status = "/state" }}
write_back = {{ method = "PATCH", url = "{base}/users/{{user_id}}", body = '{{"active": false, "id": "{{user_id}}"}}' }}
"#
    );
    // Slow enough that the first worker is killed with jobs in flight.
    let app = app_table("lever", Vendor::Lever, &sim)
        .replace("per_second = 100, burst = 20", "per_second = 15, burst = 2");
    let text = env.config_text(&[], &format!("{app}{source}"));
    let settings = config::from_toml(&text).expect("valid configuration");
    let lookup = Vault::with_env(settings.credentials.clone(), Default::default());
    let hr_env = (lookup.env_var("hr"), TOKEN.to_string());
    let vault = Vault::with_env(
        settings.credentials.clone(),
        [hr_env.clone()].into_iter().collect(),
    );

    // Paging: 75 users in 4 pages, one page failing once.
    let store = InventoryStore::new(env.redis.clone(), &env.names);
    let http = HttpSource::open(&settings.inventory.sources, "hr", &vault)
        .await
        .unwrap();
    let loaded = http
        .sync(
            &store,
            &sor::LoadOptions {
                sync_key: settings.inventory.sync_key,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(loaded.counts.created, 75);
    assert_eq!(hr.lock().unwrap().requests, 5, "4 pages, one of them twice");
    assert_eq!(store.len("lever").await.unwrap(), 75);

    // The inventory as a run source, with a worker killed mid-run.
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("inventory.jsonl");
    let mut file = std::fs::File::create(&snapshot).unwrap();
    assert_eq!(
        sor::export(&store, &["lever".into()], &mut file)
            .await
            .unwrap(),
        75
    );
    let first =
        WorkerProcess::spawn_with_env(&text, &settings, &[(hr_env.0.as_str(), hr_env.1.as_str())]);
    let report = run_once(
        &settings,
        RunOnceOptions {
            inventory: snapshot,
            format: Some(Format::JsonLines),
            saas: vec!["lever".into()],
            run_id: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(report.published, 75);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    first.kill();
    let second =
        WorkerProcess::spawn_with_env(&text, &settings, &[(hr_env.0.as_str(), hr_env.1.as_str())]);
    let counters = env
        .wait_for_run(&settings, &report.run_id, Duration::from_secs(60))
        .await;
    second.stop();

    let (unauthorized, write_backs) = {
        let hr = hr.lock().unwrap();
        (hr.unauthorized, hr.write_backs.clone())
    };
    assert_eq!(unauthorized, 0);
    let keys: BTreeSet<&String> = write_backs.iter().map(|(_, k)| k).collect();
    let ids: BTreeSet<String> = write_backs.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(
        ids, expected,
        "every deactivated user, and only they, is written back"
    );
    assert_eq!(
        keys.len(),
        expected.len(),
        "one idempotency key per user and run"
    );
    // A worker killed between the request and its marker may send the same
    // request again (same key); the marker stops any further one.
    assert!(write_backs.len() <= expected.len() + 1, "{write_backs:?}");
    let mut conn = env.redis.clone();
    let written: Option<u64> = redis::cmd("HGET")
        .arg(env.names.run_key(&report.run_id))
        .arg("written_back")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(written, Some(expected.len() as u64));
    assert_eq!(counters.written_back, expected.len() as u64);
    assert!(counters.finished_at.is_some());
    env.cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_sync_marks_users_the_source_no_longer_lists_only_after_a_complete_sync() {
    let env = TestEnv::new().await;
    let sim = crate::inventory::sim(Vendor::Lever, 10).await;
    let (hr, base) = serve_hr(people(50)).await;
    let paging = format!("paging = \"cursor\"\nnext = \"/next_cursor\"\npage_size = {PAGE}\n");
    let (settings, store, http, options) = synced_source(&env, &sim, &base, &paging).await;
    let status = |i: usize| {
        let store = store.clone();
        async move {
            store
                .page("lever", None, 100)
                .await
                .unwrap()
                .into_iter()
                .find(|r| r.key == format!("p{i}@example.com"))
                .and_then(|r| r.get("status").map(str::to_owned))
        }
    };
    let first = http.sync(&store, &options).await.unwrap();
    assert_eq!((first.counts.created, first.missing), (50, 0));

    // Five leave the source; a sync that fails midway marks nobody.
    hr.lock().unwrap().users.truncate(45);
    hr.lock().unwrap().down = true;
    http.sync(&store, &options)
        .await
        .expect_err("the source is down");
    assert_eq!(status(47).await.as_deref(), Some("active"));

    // A complete sync marks exactly them, as configured for the source.
    hr.lock().unwrap().down = false;
    let second = http.sync(&store, &options).await.unwrap();
    assert!(second.complete && second.marked, "{second:?}");
    assert_eq!((second.missing, second.counts.unchanged), (5, 45));
    for i in 0..50 {
        let expected = if i < 45 { "active" } else { "inactive" };
        assert_eq!(status(i).await.as_deref(), Some(expected), "p{i}");
    }

    // A source answering an empty list marks nobody, and says why.
    hr.lock().unwrap().users.clear();
    let empty = http.sync(&store, &options).await.unwrap();
    assert_eq!((empty.listed, empty.missing), (0, 0), "{empty:?}");
    assert!(
        empty
            .render("synced")
            .contains("missing not checked (nobody listed)")
    );
    assert_eq!(status(3).await.as_deref(), Some("active"));
    env.cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_sync_with_offset_paging_reads_a_source_that_caps_its_pages_to_the_end() {
    let env = TestEnv::new().await;
    let sim = crate::inventory::sim(Vendor::Lever, 10).await;
    let (hr, base) = serve_hr(people(45)).await;
    // Asked for 20 a page, the source answers at most 7.
    hr.lock().unwrap().cap = Some(7);
    let paging = "paging = \"offset\"\noffset_param = \"cursor\"\npage_size = 20\n";
    let (settings, store, http, options) = synced_source(&env, &sim, &base, paging).await;
    let report = http.sync(&store, &options).await.unwrap();
    assert!(report.complete, "{report:?}");
    assert_eq!(
        (report.listed, report.counts.created),
        (45, 45),
        "{report:?}"
    );
    assert_eq!(store.len("lever").await.unwrap(), 45);
    // Seven pages of users, the empty page that ends the walk, and the
    // one retried 503.
    assert_eq!(hr.lock().unwrap().requests, 9);
    env.cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_back_token_rotated_in_its_secret_file_is_used_once_the_old_one_is_refused() {
    use rolecall_scheduler::inventory::InventoryRow;
    use rolecall_worker::writeback::{WriteBack, Written};
    let env = TestEnv::new().await;
    let (hr, base) = serve_hr(people(3)).await;
    // The token comes from a mounted Secret's file, rotated in place.
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("hr"), TOKEN).unwrap();
    let source = format!(
        r#"
[saas.lever]
connector = "lever"
base_url = "http://127.0.0.1:9"
credential = "lever"
rate = {{ per_second = 10 }}
[inventory.sources.hr]
url = "{base}/users"
credential = "hr"
saas = ["lever"]
page_size_param = "limit"
items = "/data"
fields = {{ user_id = "/id", email = "/work_email", status = "/state" }}
write_back = {{ method = "PATCH", url = "{base}/users/{{user_id}}", body = '{{"active": false, "id": "{{user_id}}"}}' }}
[credentials]
dir = "{dir}"
"#,
        dir = secrets.path().display()
    );
    let settings = config::from_toml(&env.config_text(&[], &source)).expect("valid");
    let vault = Vault::new(settings.credentials.clone());
    let store = InventoryStore::new(env.redis.clone(), &env.names);
    HttpSource::open(&settings.inventory.sources, "hr", &vault)
        .await
        .unwrap()
        .sync(&store, &sor::LoadOptions::default())
        .await
        .unwrap();
    let write_back = WriteBack::build(&settings, &vault).await.unwrap();
    let deactivate = |i: usize| {
        let row = InventoryRow {
            saas: "lever".into(),
            user_id: format!("hr-{i}"),
            email: format!("p{i}@example.com"),
            status: "active".into(),
            ..Default::default()
        };
        let job = rolecall_scheduler::publish::job_for("r-rotation", &row, true);
        let conn = env.redis.clone();
        let write_back = &write_back;
        async move { write_back.deactivated(&conn, &job).await }
    };
    assert_eq!(deactivate(0).await.unwrap(), Written::Http);

    // Rotated: the source takes only the new token, the file holds it.
    hr.lock().unwrap().token = "hr-token-2".into();
    std::fs::write(secrets.path().join("hr"), "hr-token-2").unwrap();
    assert_eq!(deactivate(1).await.unwrap(), Written::Http);
    assert_eq!(
        hr.lock().unwrap().unauthorized,
        1,
        "refused once, then sent"
    );

    // Rotated at the source only: refused, once, saying so.
    hr.lock().unwrap().token = "hr-token-3".into();
    let refused = deactivate(2).await.unwrap_err().to_string();
    assert!(refused.contains("401"), "{refused}");
    assert!(!refused.contains("hr-token"), "{refused}");
    {
        let hr = hr.lock().unwrap();
        assert_eq!(hr.unauthorized, 2);
        let ids: Vec<&str> = hr.write_backs.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["hr-0", "hr-1"]);
    }
    env.cleanup(&settings).await;
}
