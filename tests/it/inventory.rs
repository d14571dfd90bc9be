//! The Redis inventory: imports from every simulated vendor, the import
//! preferences, and the seats report.

use std::collections::{BTreeSet, HashMap};

use rolecall_common::config::{self, Preference, Settings};
use rolecall_common::credentials::Vault;
use rolecall_common::inventory::{InventoryStore, Upsert};
use rolecall_scheduler::import::{ImportOptions, ImportReport, import};
use rolecall_scheduler::inventory::Format;
use rolecall_scheduler::seats::{self, OutputFormat, SeatKind};
use rolecall_scheduler::sor;
use rolecall_sim::{SimConfig, SimHandle, Vendor};
use rolecall_tests::{TestEnv, temp_file, workspace_binary};

pub(crate) const KEY: &str = "inventory-key";

/// The run id of an import before any this test runs: run ids carry a
/// ULID and sort by start, which is how a missing walk tells an earlier
/// run's stamp from a later one's.
const EARLIER_IMPORT: &str = "import-00000000000000000000000000";

pub(crate) async fn sim(vendor: Vendor, users: usize) -> SimHandle {
    rolecall_sim::spawn(SimConfig {
        vendor,
        users,
        seed: 5,
        api_key: KEY.into(),
        page_size: 500,
        ..SimConfig::default()
    })
    .await
    .expect("the sim starts")
}

/// The `[saas.<name>]` table of a vendor's app.
pub(crate) fn app_table(name: &str, vendor: Vendor, sim: &SimHandle) -> String {
    let (connector, base, options) = match vendor {
        Vendor::Lever => ("lever", sim.base_url(), ""),
        Vendor::MiroScim => (
            "scim",
            format!("{}/api/v1/scim", sim.base_url()),
            r#"options = { preset = "miro" }"#,
        ),
        Vendor::Okta => ("okta", sim.base_url(), ""),
        Vendor::MosyleBusiness => (
            "mosyle",
            sim.base_url(),
            r#"options = { product = "business" }"#,
        ),
        Vendor::MosyleManager => (
            "mosyle",
            sim.base_url(),
            r#"options = { product = "manager" }"#,
        ),
        Vendor::Zoom => (
            "http",
            sim.base_url(),
            r#"options = { preset = "zoom-users" }"#,
        ),
        other => unreachable!("{other:?} is not in these tests"),
    };
    format!(
        r#"
[saas.{name}]
connector = "{connector}"
base_url = "{base}"
credential = "{name}"
deactivate_missing = true
rate = {{ per_second = 100, burst = 20 }}
default_role = {{ role = "unknown", seat_price = 10.0 }}
{options}
[saas.{name}.roles]
"super admin" = {{ role = "admin", seat_price = 45.0 }}
"admin" = {{ role = "admin", seat_price = 45.0 }}
"team member" = {{ role = "member", seat_price = 30.0 }}
"limited team member" = {{ role = "member", seat_price = 15.0 }}
"#
    )
}

pub(crate) fn vault(settings: &Settings) -> Vault {
    let lookup = Vault::with_env(settings.credentials.clone(), HashMap::new());
    let mut secrets = HashMap::new();
    for saas in settings.saas.values() {
        let secret = if saas.name.starts_with("mosyle") {
            serde_json::json!({"access_token": KEY, "email": "admin@example.com", "password": "sim-password"}).to_string()
        } else {
            KEY.to_string()
        };
        secrets.insert(lookup.env_var(&saas.credential), secret);
    }
    Vault::with_env(settings.credentials.clone(), secrets)
}

pub(crate) async fn run_import(
    settings: &Settings,
    vault: &Vault,
    saas: &str,
    preference: Preference,
) -> ImportReport {
    import(
        settings,
        vault,
        &ImportOptions {
            saas: saas.into(),
            sync_key: None,
            preference: Some(preference),
        },
    )
    .await
    .expect("the import succeeds")
}

/// Every record of a SaaS app (tests only: a real caller streams).
pub(crate) async fn all_records(
    store: &InventoryStore,
    saas: &str,
) -> Vec<rolecall_common::inventory::Record> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.page(saas, after.as_deref(), 1000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        all.extend(page);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_import_of_5000_users_per_vendor_mirrors_the_population_and_a_second_import_changes_nothing()
 {
    let env = TestEnv::new().await;
    let vendors = [
        ("lever", Vendor::Lever),
        ("miro", Vendor::MiroScim),
        ("okta", Vendor::Okta),
        ("mosyle_business", Vendor::MosyleBusiness),
        ("mosyle_manager", Vendor::MosyleManager),
    ];
    let mut sims = Vec::new();
    let mut tables = String::new();
    for (name, vendor) in vendors {
        let sim = sim(vendor, 5000).await;
        tables.push_str(&app_table(name, vendor, &sim));
        sims.push(sim);
    }
    let settings = config::from_toml(&env.config_text(&[], &tables)).expect("valid configuration");
    let vault = vault(&settings);
    let store = InventoryStore::new(env.redis.clone(), &env.names);

    for ((name, vendor), sim) in vendors.iter().zip(&sims) {
        let first = run_import(&settings, &vault, name, Preference::CreateAndUpdate).await;
        // Mosyle Manager has no removed flag: it does not list deactivated users.
        let population: Vec<&rolecall_sim::SimUser> = sim
            .population()
            .users
            .iter()
            .filter(|u| *vendor != Vendor::MosyleManager || u.deactivated_at.is_none())
            .collect();
        let emails: BTreeSet<String> = population.iter().map(|u| u.email.to_lowercase()).collect();
        assert_eq!(
            first.listed,
            population.len() as u64,
            "{name}: every user listed"
        );
        assert_eq!(
            first.counts.created,
            emails.len() as u64,
            "{name}: {first:?}"
        );
        assert_eq!(first.skipped, 0, "{name}");

        let records = all_records(&store, name).await;
        let keys: BTreeSet<String> = records.iter().map(|r| r.key.clone()).collect();
        assert_eq!(
            keys, emails,
            "{name}: the inventory holds the vendor's users"
        );
        let by_email: HashMap<&str, &rolecall_sim::SimUser> =
            population.iter().map(|u| (u.email.as_str(), *u)).collect();
        for record in &records {
            let user = by_email[record.key.as_str()];
            assert_eq!(record.get("vendor_id"), Some(user.id.as_str()), "{name}");
            if *vendor == Vendor::Okta {
                assert_eq!(record.get("vendor_role"), Some(okta_role(user)), "{name}");
            }
            if matches!(vendor, Vendor::Lever | Vendor::MosyleBusiness) {
                assert_eq!(
                    record.get("vendor_status") == Some("active"),
                    user.deactivated_at.is_none(),
                    "{name}: {record:?}"
                );
            }
        }

        let second = run_import(&settings, &vault, name, Preference::CreateAndUpdate).await;
        assert_eq!(
            (
                second.counts.created,
                second.counts.updated,
                second.vanished
            ),
            (0, 0, 0),
            "{name}: {second:?}"
        );
        assert_eq!(second.counts.unchanged, emails.len() as u64, "{name}");
        assert_eq!(store.len(name).await.unwrap(), emails.len() as u64);
    }
    env.cleanup(&settings).await;
}

/// The role an Okta lookup keys the role map by: the sim's main admin role
/// (its most privileged), or `USER` for a user without one.
fn okta_role(user: &rolecall_sim::SimUser) -> &str {
    if user.access_role.is_empty() {
        "USER"
    } else {
        &user.access_role
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_import_of_okta_users_carries_each_users_admin_role_from_the_roles_call() {
    let env = TestEnv::new().await;
    let sim = sim(Vendor::Okta, 600).await;
    let settings = config::from_toml(&env.config_text(&[], &app_table("okta", Vendor::Okta, &sim)))
        .expect("valid configuration");
    let vault = vault(&settings);
    let store = InventoryStore::new(env.redis.clone(), &env.names);
    let report = run_import(&settings, &vault, "okta", Preference::CreateAndUpdate).await;
    assert_eq!(report.listed, 600);
    let by_email: HashMap<String, &rolecall_sim::SimUser> = sim
        .population()
        .users
        .iter()
        .map(|u| (u.email.to_lowercase(), u))
        .collect();
    let records = all_records(&store, "okta").await;
    assert_eq!(records.len(), 600);
    let mut admins = 0;
    for record in &records {
        let user = by_email[record.key.as_str()];
        assert_eq!(
            record.get("vendor_role"),
            Some(okta_role(user)),
            "{record:?}"
        );
        admins += usize::from(!user.access_role.is_empty());
    }
    assert!(admins > 0, "the sim's population holds admins");
    env.cleanup(&settings).await;
}

/// Imports the population, then makes 20 users "changed" (their stored role
/// differs from the vendor's), 30 "new" (deleted from the inventory) and 10
/// "vanished" (records an earlier import saw that the vendor does not have).
async fn prepared_mix(env: &TestEnv, sim: &SimHandle) -> (Settings, Vault, InventoryStore) {
    let settings =
        config::from_toml(&env.config_text(&[], &app_table("lever", Vendor::Lever, sim)))
            .expect("valid configuration");
    let vault = vault(&settings);
    let store = InventoryStore::new(env.redis.clone(), &env.names);
    run_import(&settings, &vault, "lever", Preference::CreateAndUpdate).await;
    let users = &sim.population().users;
    let mut conn = env.redis.clone();
    for user in &users[0..20] {
        let _: () = redis::cmd("HSET")
            .arg(store.record_key("lever", &user.email))
            .arg("vendor_role")
            .arg("changed role")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    for user in &users[20..50] {
        let _: () = redis::pipe()
            .del(store.record_key("lever", &user.email))
            .zrem(store.index_key("lever"), &user.email)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let vanished: Vec<Upsert> = (0..10)
        .map(|i| Upsert {
            key: format!("vanished{i}@example.com"),
            fields: vec![
                ("vendor_id".into(), format!("old{i}")),
                ("vendor_status".into(), "active".into()),
            ],
        })
        .collect();
    seen_by_an_earlier_import(&store, &vanished).await;
    (settings, vault, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_import_preferences_create_update_or_refuse_on_a_prepared_mix() {
    let sim = sim(Vendor::Lever, 300).await;
    for preference in [
        Preference::CreateAndUpdate,
        Preference::CreateOnly,
        Preference::UpdateOnly,
    ] {
        let env = TestEnv::new().await;
        let (settings, vault, store) = prepared_mix(&env, &sim).await;
        let report = run_import(&settings, &vault, "lever", preference).await;
        let c = report.counts;
        let name = preference.as_str();
        assert_eq!(report.listed, 300, "{name}");
        assert_eq!(c.unchanged, 250, "{name}: {report:?}");
        assert_eq!(
            report.vanished, 10,
            "{name}: vanished users are always reported"
        );
        let users = &sim.population().users;
        let role_of = |i: usize| {
            let store = store.clone();
            let key = users[i].email.clone();
            async move {
                store
                    .page("lever", None, 1000)
                    .await
                    .unwrap()
                    .into_iter()
                    .find(|r| r.key == key)
                    .and_then(|r| r.get("vendor_role").map(str::to_owned))
            }
        };
        let gone = all_records(&store, "lever")
            .await
            .iter()
            .filter(|r| r.get("vendor_status") == Some("gone"))
            .count();
        match preference {
            Preference::CreateAndUpdate => {
                assert_eq!((c.created, c.updated), (30, 20), "{report:?}");
                assert_eq!((c.refused_new, c.refused_changed), (0, 0));
                assert_eq!(store.len("lever").await.unwrap(), 310);
                assert_eq!(
                    role_of(0).await.as_deref(),
                    Some(users[0].access_role.as_str())
                );
                assert_eq!(gone, 10);
            }
            Preference::CreateOnly => {
                assert_eq!((c.created, c.updated), (30, 0), "{report:?}");
                assert_eq!((c.refused_new, c.refused_changed), (0, 20));
                assert_eq!(store.len("lever").await.unwrap(), 310);
                assert_eq!(role_of(0).await.as_deref(), Some("changed role"));
                assert_eq!(gone, 0, "create_only marks nobody gone");
            }
            Preference::UpdateOnly => {
                assert_eq!((c.created, c.updated), (0, 20), "{report:?}");
                assert_eq!((c.refused_new, c.refused_changed), (30, 0));
                assert_eq!(store.len("lever").await.unwrap(), 280);
                assert_eq!(
                    role_of(0).await.as_deref(),
                    Some(users[0].access_role.as_str())
                );
                assert_eq!(gone, 10);
            }
        }
        assert_eq!(
            report.refused.len(),
            (c.refused_new + c.refused_changed).min(20) as usize
        );
        env.cleanup(&settings).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_seats_report_names_exactly_the_shadow_gone_and_stale_accounts_and_totals() {
    let env = TestEnv::new().await;
    let sim = sim(Vendor::Lever, 200).await;
    let text = env.config_text(&[], &app_table("lever", Vendor::Lever, &sim));
    let settings = config::from_toml(&text).expect("valid configuration");
    let vault = vault(&settings);
    let store = InventoryStore::new(env.redis.clone(), &env.names);
    let users = &sim.population().users;

    // Five users an earlier import saw, active in the system of record,
    // that the vendor no longer has.
    let gone: Vec<Upsert> = (0..5)
        .map(|i| Upsert {
            key: format!("left{i}@example.com"),
            fields: vec![
                ("vendor_id".into(), format!("left{i}")),
                ("vendor_role".into(), "team member".into()),
                ("vendor_status".into(), "active".into()),
            ],
        })
        .collect();
    store
        .upsert(
            "lever",
            &gone,
            Preference::CreateAndUpdate,
            "vendor:lever",
            &[("vendor_run", EARLIER_IMPORT)],
        )
        .await
        .unwrap();
    run_import(&settings, &vault, "lever", Preference::CreateAndUpdate).await;

    // The system of record knows users 0..150 (0..10 without a login for
    // years) and the five gone ones; 150..200 are shadow accounts.
    let mut csv = String::from("saas,user_id,email,status,last_login\n");
    for (i, user) in users[..150].iter().enumerate() {
        let login = if i < 10 { "2020-01-01" } else { "2099-01-01" };
        csv.push_str(&format!(
            "lever,u{i},{},active,{login}\n",
            user.email.to_uppercase()
        ));
    }
    for i in 0..5 {
        csv.push_str(&format!(
            "lever,left{i},Left{i}@example.com,active,2099-01-01\n"
        ));
    }
    let (_dir, path) = temp_file("sor.csv", &csv);
    let loaded = sor::load(
        &store,
        &path,
        Format::Csv,
        &["lever".to_string()],
        &sor::LoadOptions {
            sync_key: settings.inventory.sync_key,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!((loaded.counts.created, loaded.counts.updated), (0, 155));

    let price = |role: &str| settings.saas["lever"].map_role(role).0.seat_price;
    let mut expected: Vec<(SeatKind, String, f64)> = Vec::new();
    for (i, user) in users.iter().enumerate() {
        if user.deactivated_at.is_some() {
            continue;
        }
        if i >= 150 {
            expected.push((
                SeatKind::Shadow,
                user.email.clone(),
                price(&user.access_role),
            ));
        } else if i < 10 {
            expected.push((
                SeatKind::Stale,
                user.email.clone(),
                price(&user.access_role),
            ));
        }
    }
    for i in 0..5 {
        expected.push((SeatKind::Gone, format!("left{i}@example.com"), 30.0));
    }
    expected.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));

    let report = seats::report(&store, &settings.saas["lever"], 90, chrono::Utc::now())
        .await
        .unwrap();
    let got: Vec<(SeatKind, String, f64)> = report
        .rows
        .iter()
        .map(|r| (r.kind, r.key.clone(), r.seat_price))
        .collect();
    assert_eq!(got, expected);
    let sum = |kind| {
        expected
            .iter()
            .filter(|e| e.0 == kind)
            .map(|e| e.2)
            .sum::<f64>()
    };
    assert_eq!(report.shadow_total, sum(SeatKind::Shadow));
    assert_eq!(report.stale_total, sum(SeatKind::Stale));
    assert_eq!(report.gone_total, 150.0);
    assert_eq!(
        report.reclaimable_total,
        sum(SeatKind::Shadow) + sum(SeatKind::Stale)
    );

    // The command prints the same rows as CSV.
    let (_cfg_dir, cfg) = temp_file("rolecall.toml", &text);
    let out = std::process::Command::new(workspace_binary("rolecall-scheduler").unwrap())
        .args(["report", "--saas", "lever", "--format", "csv", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(printed, seats::render(&report, OutputFormat::Csv).unwrap());
    assert_eq!(printed.lines().count(), expected.len() + 1);
    env.cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_scheduled_imports_run_once_per_slot_across_two_serving_replicas() {
    let env = TestEnv::new().await;
    let sim = sim(Vendor::Lever, 50).await;
    let extra = format!(
        "{}\n[inventory.imports.every_second]\nsaas = \"lever\"\nschedule = \"* * * * * *\"\n",
        app_table("lever", Vendor::Lever, &sim)
    );
    // The schedule task reads the credential from the store: a file here.
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("lever"), KEY).unwrap();
    let text = env.config_text(&[], &extra).replace(
        "[telemetry]",
        &format!(
            "[credentials]\ndir = \"{}\"\n[telemetry]",
            secrets.path().display()
        ),
    );
    let settings = std::sync::Arc::new(config::from_toml(&text).expect("valid configuration"));
    let a = tokio::spawn(rolecall_scheduler::import_schedule::run(settings.clone()));
    let b = tokio::spawn(rolecall_scheduler::import_schedule::run(settings.clone()));
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    a.abort();
    b.abort();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let store = InventoryStore::new(env.redis.clone(), &env.names);
    let imports = env
        .scan(&format!("{}*", store.import_key("lever", "")))
        .await;
    let claims = env
        .scan(&format!("{}:slot:*", store.meta_key("lever")))
        .await;
    assert!(claims.len() >= 2, "a slot a second: {claims:?}");
    assert!(
        imports.len() <= claims.len() && imports.len() + 1 >= claims.len(),
        "one import per claimed slot (the last may be cut off): {imports:?} {claims:?}"
    );
    assert_eq!(store.len("lever").await.unwrap(), 50);
    env.cleanup(&settings).await;
}

/// Writes `records` as vendor records an earlier import saw.
async fn seen_by_an_earlier_import(store: &InventoryStore, records: &[Upsert]) {
    store
        .upsert(
            "lever",
            records,
            Preference::CreateAndUpdate,
            "vendor:lever",
            &[("vendor_run", EARLIER_IMPORT)],
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_import_marks_nobody_gone_when_more_than_max_marked_share_of_the_records_vanished()
 {
    let sim = sim(Vendor::Lever, 100).await;
    let env = TestEnv::new().await;
    let app = app_table("lever", Vendor::Lever, &sim);
    let settings = config::from_toml(&env.config_text(&[], &app)).expect("valid configuration");
    assert_eq!(settings.inventory.max_marked_share, 0.5, "the default");
    let vault = vault(&settings);
    let store = InventoryStore::new(env.redis.clone(), &env.names);
    // 120 users an earlier import saw, against the 100 the vendor lists:
    // 120 of 220 records (55 %) vanished at once.
    let left: Vec<Upsert> = (0..120)
        .map(|i| Upsert {
            key: format!("left{i}@example.com"),
            fields: vec![("vendor_status".into(), "active".into())],
        })
        .collect();
    seen_by_an_earlier_import(&store, &left).await;
    let report = run_import(&settings, &vault, "lever", Preference::CreateAndUpdate).await;
    assert_eq!((report.listed, report.vanished), (100, 120));
    assert!(report.held_back, "{report:?}");
    assert!(
        report
            .render()
            .contains("120 vanished users not marked gone")
    );
    let gone = all_records(&store, "lever")
        .await
        .iter()
        .filter(|r| r.get("vendor_status") == Some("gone"))
        .count();
    assert_eq!(gone, 0, "nobody marked gone");

    // With the limit raised to 1 (no limit) the same import marks them.
    let settings = config::from_toml(&env.config_text(
        &[],
        &format!("{app}\n[inventory]\nmax_marked_share = 1.0\n"),
    ))
    .expect("valid configuration");
    let report = run_import(&settings, &vault, "lever", Preference::CreateAndUpdate).await;
    assert_eq!(report.vanished, 120);
    assert!(!report.held_back);
    let gone = all_records(&store, "lever")
        .await
        .iter()
        .filter(|r| r.get("vendor_status") == Some("gone"))
        .count();
    assert_eq!(gone, 120);
    env.cleanup_keys().await;
}
