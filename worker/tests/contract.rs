//! One contract for every connector: the same cases against each vendor's
//! simulator, built the way the worker builds connectors.
//!
//! The table is an exhaustive `match` over [`ConnectorKind`] (a new connector
//! does not compile without its rows) plus one row per preset file shipped in
//! `presets/` (a new preset fails the test until it has a row). Every case
//! also checks that the HTTP requests the simulator received equal the fleet
//! slots the vendor client took: nothing reaches a vendor outside the limit.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use rolecall_common::config::{ConnectorKind, from_toml};
use rolecall_common::credentials::Vault;
use rolecall_common::messages::UserRef;
use rolecall_sim::{Fault, MALFORMED, SimConfig, SimHandle, SimUser, Vendor};
use rolecall_worker::connectors::{self, Connector, ConnectorError, Lookup, VendorClient};
use rolecall_worker::error::ErrorClass;

const KEY: &str = "contract-key-hunter2";
const WRONG: &str = "wrong-secret-swordfish";

/// The cases every connector is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Found,
    NotFound,
    Deactivated,
    BadCredential,
    Throttled,
    Upstream,
    Malformed,
    PageCapExhausted,
}

const CASES: [Case; 8] = [
    Case::Found,
    Case::NotFound,
    Case::Deactivated,
    Case::BadCredential,
    Case::Throttled,
    Case::Upstream,
    Case::Malformed,
    Case::PageCapExhausted,
];

/// How a row looks a user up.
#[derive(Clone, Copy)]
enum Key {
    Email,
    GithubLogin,
}

/// One connector configuration against one simulated vendor.
struct Row {
    name: String,
    vendor: Vendor,
    connector: &'static str,
    base_path: &'static str,
    options: String,
    key: Key,
    /// A multi-part credential (Mosyle), given the API key.
    secret: fn(&str) -> String,
    /// Why the vendor cannot show a deactivated user, if it cannot.
    no_deactivation: Option<&'static str>,
    /// Why a lookup never pages, if it does not (so no page cap exists).
    no_paging: Option<&'static str>,
}

fn plain(key: &str) -> String {
    key.to_owned()
}

fn mosyle_secret(key: &str) -> String {
    serde_json::json!({"access_token": key, "email": "admin@example.com", "password": "sim-password"})
        .to_string()
}

fn row(name: &str, vendor: Vendor, connector: &'static str, base_path: &'static str) -> Row {
    Row {
        name: name.to_owned(),
        vendor,
        connector,
        base_path,
        options: "{}".into(),
        key: Key::Email,
        secret: plain,
        no_deactivation: None,
        no_paging: None,
    }
}

/// The rows of one connector kind: the `match` must name every kind.
fn rows(kind: ConnectorKind) -> Vec<Row> {
    match kind {
        ConnectorKind::Lever => vec![row("lever", Vendor::Lever, "lever", "")],
        ConnectorKind::Mosyle => vec![
            Row {
                // One scan per job: the job path. The shared listing's
                // own behaviour has its tests below and in mosyle.rs.
                options: "{ product = \"business\", list_cache_s = 0 }".into(),
                secret: mosyle_secret,
                no_paging: Some("a Mosyle page cap is a guard of 20 000 pages"),
                ..row("mosyle-business", Vendor::MosyleBusiness, "mosyle", "")
            },
            Row {
                options: "{ product = \"manager\", list_cache_s = 0 }".into(),
                secret: mosyle_secret,
                no_deactivation: Some("Mosyle Manager has no deactivation flag (VENDORS.md §1.4)"),
                no_paging: Some("a Mosyle page cap is a guard of 20 000 pages"),
                ..row("mosyle-manager", Vendor::MosyleManager, "mosyle", "")
            },
        ],
        ConnectorKind::Scim => vec![
            Row {
                options: "{ preset = \"miro\" }".into(),
                no_paging: Some("a SCIM lookup is one filtered query"),
                ..row("scim-miro", Vendor::MiroScim, "scim", "/api/v1/scim")
            },
            Row {
                no_paging: Some("a SCIM lookup is one filtered query"),
                ..row("scim-generic", Vendor::Scim, "scim", "/scim/v2")
            },
        ],
        ConnectorKind::Okta => vec![Row {
            no_paging: Some("an Okta lookup is one search and one roles call"),
            ..row("okta", Vendor::Okta, "okta", "")
        }],
        ConnectorKind::Http => shipped_presets().iter().map(|p| preset_row(p)).collect(),
    }
}

/// The presets shipped in `presets/`.
fn shipped_presets() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../presets");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("the presets folder exists")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".toml").map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

fn preset_row(preset: &str) -> Row {
    match preset {
        "github-org-membership" => Row {
            options: format!("{{ preset = \"{preset}\", vars = {{ org = \"acme\" }} }}"),
            key: Key::GithubLogin,
            no_paging: Some("a membership lookup is one GET"),
            // A pending invitation is GitHub's "not yet holding a seat".
            ..row(preset, Vendor::Github, "http", "")
        },
        "zoom-users" => Row {
            options: format!("{{ preset = \"{preset}\" }}"),
            no_paging: Some("a Zoom lookup is one GET /users/{email}"),
            ..row(preset, Vendor::Zoom, "http", "")
        },
        other => panic!("the shipped preset `{other}` has no contract row: add one to preset_row"),
    }
}

fn all_rows() -> Vec<Row> {
    let rows: Vec<Row> = ConnectorKind::ALL.into_iter().flat_map(rows).collect();
    for kind in ConnectorKind::ALL {
        assert!(
            rows.iter().any(|r| r.connector == kind.as_str()),
            "no contract row for {kind}"
        );
    }
    rows
}

async fn build(row: &Row, sim: &SimHandle, secret: &str) -> (Arc<dyn Connector>, VendorClient) {
    let settings = from_toml(&format!(
        r#"
[saas.app]
connector = "{}"
base_url = "{}{}"
credential = "app"
rate = {{ per_second = 1000 }}
options = {}
"#,
        row.connector,
        sim.base_url(),
        row.base_path,
        row.options
    ))
    .expect("the row's settings are valid");
    let saas = &settings.saas["app"];
    let vault = Vault::with_env(
        settings.credentials.clone(),
        HashMap::from([("ROLECALL_SECRET_APP".to_string(), secret.to_string())]),
    );
    // A job that may not hold its delivery: throttles reach the test as
    // the vendor client classified them instead of being waited out.
    let client = VendorClient::standalone(saas).with_max_hold(Duration::ZERO);
    let connector = connectors::build(saas, &client, &vault)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", row.name));
    (connector, client)
}

fn lookup_key(row: &Row, user: &SimUser) -> UserRef {
    UserRef {
        id: "inv-1".into(),
        email: user.email.clone(),
        external_id: match row.key {
            Key::Email => None,
            Key::GithubLogin => Some(user.github_login.clone()),
        },
    }
}

fn nobody(row: &Row) -> UserRef {
    UserRef {
        id: "inv-2".into(),
        email: "nobody.at.all@example.com".into(),
        external_id: matches!(row.key, Key::GithubLogin).then(|| "nobody-at-all".into()),
    }
}

/// A user the vendor holds as active with a role, and one it shows deactivated.
fn pick(sim: &SimHandle, row: &Row, deactivated: bool) -> Option<SimUser> {
    sim.population()
        .users
        .iter()
        .find(|u| {
            let pending = u.extra.get("state").and_then(|s| s.as_str()) == Some("pending");
            match (row.vendor, deactivated) {
                // GitHub shows no deactivated member (they are gone: 404); a
                // pending invitation holds no seat yet.
                (Vendor::Github, true) => pending,
                (Vendor::Github, false) => u.deactivated_at.is_none() && !pending,
                (_, true) => u.deactivated_at.is_some(),
                (_, false) => u.deactivated_at.is_none() && !u.access_role.is_empty(),
            }
        })
        .cloned()
}

fn expect_class(row: &Row, case: Case, got: Result<Lookup, ConnectorError>, want: ErrorClass) {
    match got {
        Err(e) => assert_eq!(
            std::mem::discriminant(&e.class()),
            std::mem::discriminant(&want),
            "{} {case:?}: {e}",
            row.name
        ),
        Ok(other) => panic!("{} {case:?}: expected {want:?}, got {other:?}", row.name),
    }
}

/// Runs one case; returns false when it does not apply to the row.
async fn run(row: &Row, case: Case) -> bool {
    let mut config = SimConfig {
        vendor: row.vendor,
        api_key: KEY.into(),
        users: 40,
        page_size: 10,
        deactivated_ratio: 0.2,
        ..SimConfig::default()
    };
    let endless = "endless.pages@example.com";
    if case == Case::PageCapExhausted {
        if row.no_paging.is_some() {
            return false;
        }
        config.endless_emails = HashSet::from([endless.to_string()]);
    }
    if case == Case::Deactivated && row.no_deactivation.is_some() {
        return false;
    }
    let sim = rolecall_sim::spawn(config).await.expect("the sim starts");
    let secret = if case == Case::BadCredential {
        (row.secret)(WRONG)
    } else {
        (row.secret)(KEY)
    };
    let (connector, client) = build(row, &sim, &secret).await;
    let active = pick(&sim, row, false).expect("the population has an active user");
    match case {
        Case::Found => match connector.lookup(&lookup_key(row, &active)).await {
            Ok(Lookup::Found(user)) => {
                assert!(user.active, "{}: {user:?}", row.name);
                assert!(!user.vendor_id.is_empty(), "{}: {user:?}", row.name);
                assert!(
                    user.vendor_roles.contains(&user.raw_role),
                    "{}: the vendor's role values keep the role: {user:?}",
                    row.name
                );
            }
            other => panic!("{} Found: {other:?}", row.name),
        },
        Case::NotFound => {
            let got = connector.lookup(&nobody(row)).await;
            assert!(matches!(got, Ok(Lookup::NotFound)), "{}: {got:?}", row.name);
        }
        Case::Deactivated => {
            let gone = pick(&sim, row, true).expect("the population has a deactivated user");
            match connector.lookup(&lookup_key(row, &gone)).await {
                Ok(Lookup::Found(user)) => assert!(!user.active, "{}: {user:?}", row.name),
                other => panic!("{} Deactivated: expected inactive, got {other:?}", row.name),
            }
        }
        Case::BadCredential => {
            let got = connector.lookup(&lookup_key(row, &active)).await;
            if let Err(e) = &got {
                assert!(
                    !e.to_string().contains(WRONG) && !format!("{e:?}").contains(WRONG),
                    "{}: the error echoes the secret: {e:?}",
                    row.name
                );
            }
            expect_class(row, case, got, ErrorClass::Auth);
        }
        Case::Throttled => {
            sim.inject(Fault {
                status: 429,
                retry_after: None,
                count: 1,
            });
            let got = connector.lookup(&lookup_key(row, &active)).await;
            expect_class(row, case, got, ErrorClass::Throttled(None));
        }
        Case::Upstream => {
            sim.inject(Fault {
                status: 503,
                retry_after: None,
                count: 1,
            });
            let got = connector.lookup(&lookup_key(row, &active)).await;
            expect_class(row, case, got, ErrorClass::Transient);
        }
        Case::Malformed => {
            sim.inject(Fault {
                status: MALFORMED,
                retry_after: None,
                count: 1,
            });
            let got = connector.lookup(&lookup_key(row, &active)).await;
            expect_class(row, case, got, ErrorClass::Permanent);
        }
        Case::PageCapExhausted => {
            let user = UserRef {
                id: "inv-3".into(),
                email: endless.into(),
                external_id: None,
            };
            let got = connector.lookup(&user).await;
            assert!(
                matches!(got, Err(ConnectorError::Inconclusive(_))),
                "{}: a page cap reached is no verdict, got {got:?}",
                row.name
            );
        }
    }
    let received = sim.stats().received;
    let slots = client.metrics().snapshot().requests;
    assert_eq!(
        received, slots,
        "{} {case:?}: the vendor received {received} requests for {slots} slots",
        row.name
    );
    sim.shutdown().await;
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connector_and_shipped_preset_keeps_the_contract() {
    let mut ran = 0;
    let mut skipped = Vec::new();
    for row in all_rows() {
        for case in CASES {
            if run(&row, case).await {
                ran += 1;
            } else {
                let why = match case {
                    Case::PageCapExhausted => row.no_paging,
                    _ => row.no_deactivation,
                };
                skipped.push(format!("{} {case:?}: {}", row.name, why.unwrap_or("")));
            }
        }
    }
    // Every row ran every case that applies to it; what did not apply says why.
    assert!(ran >= 8 * 6, "only {ran} cases ran; skipped: {skipped:#?}");
    assert!(skipped.iter().all(|s| !s.ends_with(": ")), "{skipped:#?}");
}

#[tokio::test]
async fn a_mosyle_lookup_answered_from_the_listing_takes_no_slot() {
    let sim = rolecall_sim::spawn(SimConfig {
        vendor: Vendor::MosyleBusiness,
        api_key: KEY.into(),
        users: 30,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let row = Row {
        options: "{ product = \"business\", list_cache_s = 60 }".into(),
        secret: mosyle_secret,
        ..row("mosyle-cached", Vendor::MosyleBusiness, "mosyle", "")
    };
    let (connector, client) = build(&row, &sim, &mosyle_secret(KEY)).await;
    let users: Vec<SimUser> = sim.population().users.iter().take(10).cloned().collect();
    connector
        .lookup(&lookup_key(&row, &users[0]))
        .await
        .unwrap();
    let after_first = client.metrics().snapshot().requests;
    assert!(after_first >= 2, "a login and the list: {after_first}");
    for user in &users[1..] {
        connector.lookup(&lookup_key(&row, user)).await.unwrap();
    }
    assert_eq!(
        client.metrics().snapshot().requests,
        after_first,
        "cache hits took slots"
    );
    assert_eq!(sim.stats().received, after_first);
}
