//! Users a source no longer has: vendor imports mark them gone only after
//! a complete listing, and system-of-record loads mark their own records
//! missing as configured, each preference doing what it says.

use std::sync::Arc;

use async_trait::async_trait;
use rolecall_common::config::{self, Preference, SorMissing};
use rolecall_common::inventory::{InventoryStore, Record, Upsert};
use rolecall_scheduler::import::{ImportOptions, fleet_connector, import_with};
use rolecall_scheduler::inventory::Format;
use rolecall_scheduler::sor::{self, LoadOptions, LoadReport};
use rolecall_sim::{Fault, SimHandle, Vendor};
use rolecall_tests::{TestEnv, temp_file, workspace_binary};
use rolecall_worker::connectors::{Connector, ConnectorError, Lookup, UserPage};

use crate::inventory::{all_records, app_table, run_import, sim, vault};

/// The real connector, and after its first page a fault in the sim: the
/// vendor refuses the second page (401), as a revoked token would.
struct FailsAfterFirstPage {
    inner: Arc<dyn Connector>,
    sim: Arc<SimHandle>,
}

#[async_trait]
impl Connector for FailsAfterFirstPage {
    async fn lookup(
        &self,
        user: &rolecall_common::messages::UserRef,
    ) -> Result<Lookup, ConnectorError> {
        self.inner.lookup(user).await
    }

    async fn list_page(&self, cursor: Option<&str>) -> Result<UserPage, ConnectorError> {
        let page = self.inner.list_page(cursor).await;
        self.sim.inject(Fault {
            status: 401,
            retry_after: None,
            count: 100,
        });
        page
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_import_that_fails_midway_marks_nobody_gone_and_is_not_the_last_complete_import()
{
    let env = TestEnv::new().await;
    let sim = Arc::new(sim(Vendor::Lever, 300).await);
    let settings =
        config::from_toml(&env.config_text(&[], &app_table("lever", Vendor::Lever, &sim)))
            .expect("valid configuration");
    let vault = vault(&settings);
    let store = InventoryStore::new(env.redis.clone(), &env.names);
    let complete = run_import(&settings, &vault, "lever", Preference::CreateAndUpdate).await;

    // Pages after the first fail for good: the import stops with an error.
    let connector = FailsAfterFirstPage {
        inner: fleet_connector(&settings, &settings.saas["lever"], &vault)
            .await
            .unwrap(),
        sim: sim.clone(),
    };
    let options = ImportOptions {
        saas: "lever".into(),
        sync_key: None,
        preference: Some(Preference::CreateAndUpdate),
    };
    let err = import_with(&settings, &options, &connector, &store)
        .await
        .expect_err("the import fails on its second page");
    assert!(err.to_string().contains("page 2"), "{err:#}");

    let records = all_records(&store, "lever").await;
    assert_eq!(records.len(), 300);
    assert!(
        records
            .iter()
            .all(|r| r.get("vendor_status") != Some("gone")),
        "a partial listing proves nobody gone"
    );
    assert_eq!(
        store.last_import("lever").await.unwrap().as_deref(),
        Some(complete.run_id.as_str()),
        "the failed import never becomes the last complete one"
    );
    env.cleanup(&settings).await;
}

fn row(i: usize, status: &str) -> String {
    format!("lever,u{i},User{i}@Example.com,{status},2026-01-01\n")
}

/// u0..u9 active.
fn first_file() -> String {
    let mut csv = String::from("saas,user_id,email,status,last_login\n");
    for i in 0..10 {
        csv.push_str(&row(i, "active"));
    }
    csv
}

/// The mix: u0..u6 unchanged, u7 changed (suspended), u8 and u9 gone, u10 new.
fn second_file() -> String {
    let mut csv = String::from("saas,user_id,email,status,last_login\n");
    for i in 0..7 {
        csv.push_str(&row(i, "active"));
    }
    csv.push_str(&row(7, "suspended"));
    csv.push_str(&row(10, "active"));
    csv
}

async fn load(store: &InventoryStore, csv: &str, options: LoadOptions) -> LoadReport {
    let (_dir, path) = temp_file("sor.csv", csv);
    sor::load(store, &path, Format::Csv, &["lever".to_string()], &options)
        .await
        .expect("the load succeeds")
}

async fn status_of(store: &InventoryStore, i: usize) -> Option<String> {
    let key = format!("user{i}@example.com");
    let found: Option<Record> = store
        .page("lever", None, 100)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.key == key);
    found.and_then(|r| r.get("status").map(str::to_owned))
}

/// A fresh inventory holding the first file, a record of an HTTP source
/// and a record only the vendor knows, none of them in the second file.
async fn prepared(env: &TestEnv) -> InventoryStore {
    let store = InventoryStore::new(env.redis.clone(), &env.names);
    let first = load(&store, &first_file(), LoadOptions::default()).await;
    assert_eq!(first.counts.created, 10);
    let others = [
        Upsert {
            key: "hr-only@example.com".into(),
            fields: vec![
                ("sor".into(), "1".into()),
                ("status".into(), "active".into()),
                ("sor_source".into(), "hr".into()),
            ],
        },
        Upsert {
            key: "vendor-only@example.com".into(),
            fields: vec![("vendor_status".into(), "active".into())],
        },
    ];
    store
        .upsert("lever", &others, Preference::CreateAndUpdate, "test", &[])
        .await
        .unwrap();
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_load_preferences_create_update_and_mark_missing_records_on_a_prepared_mix() {
    for preference in [
        Preference::CreateAndUpdate,
        Preference::CreateOnly,
        Preference::UpdateOnly,
    ] {
        let env = TestEnv::new().await;
        let store = prepared(&env).await;
        let options = LoadOptions {
            preference,
            missing: SorMissing::Removed,
            ..Default::default()
        };
        let report = load(&store, &second_file(), options).await;
        let c = report.counts;
        let name = preference.as_str();
        assert!(report.complete, "{name}");
        assert_eq!(c.unchanged, 7, "{name}: {report:?}");
        // Only the file's own records count: not the HTTP source's, not
        // the vendor's.
        assert_eq!(report.missing, 2, "{name}: {report:?}");
        assert_eq!(
            store.len("lever").await.unwrap() as usize,
            12 + c.created as usize
        );
        match preference {
            Preference::CreateAndUpdate => {
                assert_eq!(
                    (c.created, c.updated, c.refused_new, c.refused_changed),
                    (1, 1, 0, 0)
                );
                assert!(report.marked);
                assert_eq!(status_of(&store, 7).await.as_deref(), Some("suspended"));
                assert_eq!(status_of(&store, 8).await.as_deref(), Some("removed"));
                assert_eq!(status_of(&store, 9).await.as_deref(), Some("removed"));
            }
            Preference::CreateOnly => {
                assert_eq!(
                    (c.created, c.updated, c.refused_new, c.refused_changed),
                    (1, 0, 0, 1)
                );
                assert!(!report.marked, "create_only touches no existing record");
                assert_eq!(status_of(&store, 7).await.as_deref(), Some("active"));
                assert_eq!(status_of(&store, 8).await.as_deref(), Some("active"));
            }
            Preference::UpdateOnly => {
                assert_eq!(
                    (c.created, c.updated, c.refused_new, c.refused_changed),
                    (0, 1, 1, 0)
                );
                assert!(report.marked);
                assert_eq!(status_of(&store, 10).await, None, "not created");
                assert_eq!(status_of(&store, 8).await.as_deref(), Some("removed"));
            }
        }
        assert_eq!(
            status_of_key(&store, "hr-only@example.com")
                .await
                .as_deref(),
            Some("active"),
            "{name}: another source's record is not this file's to mark"
        );
        // Marked records are not counted again by the next load.
        let again = load(&store, &second_file(), options).await;
        let expected_again = if report.marked { 0 } else { 2 };
        assert_eq!(again.missing, expected_again, "{name}: {again:?}");
        env.cleanup_keys().await;
    }
}

async fn status_of_key(store: &InventoryStore, key: &str) -> Option<String> {
    store
        .page("lever", None, 100)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.key == key)
        .and_then(|r| r.get("status").map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_load_keeps_missing_records_by_default_and_an_incomplete_file_marks_nobody() {
    let env = TestEnv::new().await;
    let store = prepared(&env).await;
    // `keep` (the default): counted, untouched.
    let kept = load(&store, &second_file(), LoadOptions::default()).await;
    assert_eq!((kept.missing, kept.marked), (2, false));
    assert_eq!(status_of(&store, 8).await.as_deref(), Some("active"));

    // A malformed row may be one of the missing users: nobody is marked.
    let broken = format!("{}lever,u99,not-an-email,active,\n", second_file());
    let options = LoadOptions {
        missing: SorMissing::Inactive,
        ..Default::default()
    };
    let partial = load(&store, &broken, options).await;
    assert!(!partial.complete);
    assert_eq!((partial.malformed, partial.missing), (1, 0));
    assert_eq!(status_of(&store, 8).await.as_deref(), Some("active"));

    // Complete: marked inactive; seen again, active again.
    let marked = load(&store, &second_file(), options).await;
    assert_eq!((marked.missing, marked.marked), (2, true));
    assert_eq!(status_of(&store, 8).await.as_deref(), Some("inactive"));
    let back = load(&store, &first_file(), options).await;
    assert_eq!(status_of(&store, 8).await.as_deref(), Some("active"));
    assert_eq!(back.missing, 1, "u10 is now the missing one");
    env.cleanup_keys().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_load_of_a_file_marks_missing_only_in_the_apps_it_has_rows_for() {
    let env = TestEnv::new().await;
    let store = InventoryStore::new(env.redis.clone(), &env.names);
    // Okta's system-of-record users, loaded from their own file.
    let okta_file = "saas,user_id,email,status\nokta,o1,o1@example.com,active\n";
    let (_odir, okta_path) = temp_file("okta.csv", okta_file);
    let apps = ["lever".to_string(), "okta".to_string()];
    sor::load(
        &store,
        &okta_path,
        Format::Csv,
        &apps,
        &LoadOptions::default(),
    )
    .await
    .unwrap();
    // A lever-only file for both apps, with records to mark: only lever's
    // missing records are this file's to mark.
    let options = LoadOptions {
        missing: SorMissing::Removed,
        ..Default::default()
    };
    let (_ldir, first) = temp_file("lever.csv", &first_file());
    sor::load(&store, &first, Format::Csv, &apps, &options)
        .await
        .unwrap();
    let (_sdir, second) = temp_file("lever.csv", &second_file());
    let report = sor::load(&store, &second, Format::Csv, &apps, &options)
        .await
        .unwrap();
    assert_eq!((report.missing, report.marked), (2, true), "{report:?}");
    assert_eq!(status_of(&store, 8).await.as_deref(), Some("removed"));
    let okta = store.page("okta", None, 10).await.unwrap();
    assert_eq!(okta.len(), 1);
    assert_eq!(okta[0].get("status"), Some("active"), "okta is untouched");
    env.cleanup_keys().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_missing_walks_leave_records_a_later_concurrent_run_has_seen() {
    let env = TestEnv::new().await;
    let store = InventoryStore::new(env.redis.clone(), &env.names);
    // Two runs of the same source at once: the later one (B) has already
    // stamped the record when the earlier one (A) walks the index.
    let (a, b, c) = ("sor-01A", "sor-01B", "sor-01C");
    let record = Upsert {
        key: "ada@example.com".into(),
        fields: vec![
            ("sor".into(), "1".into()),
            ("status".into(), "active".into()),
        ],
    };
    store
        .upsert(
            "lever",
            &[record],
            Preference::CreateAndUpdate,
            "test",
            &[("sor_run", b)],
        )
        .await
        .unwrap();
    let keys = vec!["ada@example.com".to_string()];
    let by_a = store
        .sor_missing("lever", &keys, a, "", Some("removed"), true)
        .await
        .unwrap();
    assert!(by_a.is_empty(), "a later run saw it: {by_a:?}");
    assert_eq!(
        status_of_key(&store, "ada@example.com").await.as_deref(),
        Some("active")
    );
    // A still later run that did not see it finds it missing.
    let by_c = store
        .sor_missing("lever", &keys, c, "", Some("removed"), true)
        .await
        .unwrap();
    assert_eq!(by_c, keys);
    // Imports likewise: vendor_run stamped by B is not gone for A, is for C.
    let vendor = Upsert {
        key: "bob@example.com".into(),
        fields: vec![("vendor_status".into(), "active".into())],
    };
    store
        .upsert(
            "lever",
            &[vendor],
            Preference::CreateAndUpdate,
            "test",
            &[("vendor_run", "import-01B")],
        )
        .await
        .unwrap();
    let keys = vec!["bob@example.com".to_string()];
    assert!(
        store
            .vanished("lever", &keys, "import-01A", true)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .vanished("lever", &keys, "import-01C", true)
            .await
            .unwrap(),
        keys
    );
    env.cleanup_keys().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_load_command_applies_missing_and_preference_and_refuses_bad_values_naming_the_flag()
 {
    let env = TestEnv::new().await;
    let store = InventoryStore::new(env.redis.clone(), &env.names);
    let text = env.config_text(&[], crate::scheduler_service::APP);
    let (_cdir, config) = temp_file("rolecall.toml", &text);
    let (_fdir, first) = temp_file("sor.csv", &first_file());
    let (_sdir, second) = temp_file("sor.csv", &second_file());
    let load = |file: &std::path::Path, extra: &[&str]| {
        std::process::Command::new(workspace_binary("rolecall-scheduler").unwrap())
            .arg("--config")
            .arg(&config)
            .args(["inventory", "load", "--saas", "lever", "--file"])
            .arg(file)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = load(&first, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Bad values: refused before anything is written, naming the flag.
    for (extra, message) in [
        (
            ["--missing", "sometimes"],
            "--missing: `sometimes` is not keep, inactive or removed",
        ),
        (
            ["--preference", "upsert"],
            "--preference: `upsert` is not create_and_update, create_only or update_only",
        ),
    ] {
        let out = load(&second, &extra);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(message),
            "{stderr}"
        );
        assert_eq!(store.len("lever").await.unwrap(), 10, "nothing written");
    }

    // update_only with --missing removed: u10 refused, u8 and u9 removed.
    let out = load(
        &second,
        &["--preference", "update_only", "--missing", "removed"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("refused 1, missing 2 (marked)"), "{stdout}");
    assert_eq!(store.len("lever").await.unwrap(), 10);
    assert_eq!(status_of(&store, 8).await.as_deref(), Some("removed"));
    env.cleanup_keys().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_load_marks_nobody_when_more_than_max_marked_share_of_the_records_are_missing() {
    let env = TestEnv::new().await;
    let store = InventoryStore::new(env.redis.clone(), &env.names);
    load(&store, &first_file(), LoadOptions::default()).await;
    // A file cut short: 3 of the 10 users, so 7 of 10 records (70 %) missing.
    let mut short = String::from("saas,user_id,email,status,last_login\n");
    for i in 0..3 {
        short.push_str(&row(i, "active"));
    }
    let options = LoadOptions {
        missing: SorMissing::Removed,
        ..Default::default()
    };
    let held = load(&store, &short, options).await;
    assert_eq!(
        (held.missing, held.held_back.clone()),
        (7, vec!["lever".to_string()])
    );
    assert!(
        held.render("loaded")
            .contains("missing 7 (not marked in lever: more than inventory.max_marked_share"),
        "{}",
        held.render("loaded")
    );
    assert_eq!(status_of(&store, 8).await.as_deref(), Some("active"));
    // Allowed everything, the same load marks them.
    let all = LoadOptions {
        max_marked_share: 1.0,
        ..options
    };
    let marked = load(&store, &short, all).await;
    assert_eq!((marked.missing, marked.marked), (7, true));
    assert!(marked.held_back.is_empty());
    assert_eq!(status_of(&store, 8).await.as_deref(), Some("removed"));
    env.cleanup_keys().await;
}
