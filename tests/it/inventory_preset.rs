//! Importing a SaaS app whose connector is an HTTP preset: the preset's
//! `[list]` section (the shipped Zoom preset) against the Zoom sim.

use std::collections::{BTreeMap, BTreeSet};

use rolecall_common::config::{self, Preference};
use rolecall_common::inventory::InventoryStore;
use rolecall_sim::Vendor;
use rolecall_tests::TestEnv;

use crate::inventory::{all_records, app_table, run_import, sim, vault};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_import_of_a_preset_app_lists_every_status_and_equals_the_sims_population() {
    let env = TestEnv::new().await;
    let sim = sim(Vendor::Zoom, 5000).await;
    let settings = config::from_toml(&env.config_text(&[], &app_table("zoom", Vendor::Zoom, &sim)))
        .expect("valid configuration");
    let vault = vault(&settings);
    let store = InventoryStore::new(env.redis.clone(), &env.names);

    let first = run_import(&settings, &vault, "zoom", Preference::CreateAndUpdate).await;
    let population = &sim.population().users;
    assert_eq!(first.listed, population.len() as u64, "{first:?}");
    assert_eq!(first.counts.created, population.len() as u64, "{first:?}");
    assert_eq!(first.skipped, 0);
    // Zoom lists one status at a time: the sweep reads all three.
    let statuses: BTreeSet<&str> = population
        .iter()
        .map(|u| u.extra["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses.len(),
        3,
        "the sim has active, inactive and pending users"
    );

    // The inventory is the population, field by field.
    let expected: BTreeMap<String, (String, String, bool)> = population
        .iter()
        .map(|u| {
            (
                u.email.to_lowercase(),
                (
                    u.id.clone(),
                    u.extra["type"].to_string(),
                    u.extra["status"] == "active",
                ),
            )
        })
        .collect();
    let records = all_records(&store, "zoom").await;
    let got: BTreeMap<String, (String, String, bool)> = records
        .iter()
        .map(|r| {
            (
                r.key.clone(),
                (
                    r.get("vendor_id").unwrap_or_default().to_owned(),
                    r.get("vendor_role").unwrap_or_default().to_owned(),
                    r.get("vendor_status") == Some("active"),
                ),
            )
        })
        .collect();
    assert_eq!(got, expected);
    assert!(records.iter().all(|r| r.get("vendor_last_login").is_some()));

    let second = run_import(&settings, &vault, "zoom", Preference::CreateAndUpdate).await;
    assert_eq!(
        (
            second.counts.created,
            second.counts.updated,
            second.vanished
        ),
        (0, 0, 0),
        "{second:?}"
    );
    assert_eq!(second.counts.unchanged, population.len() as u64);
    env.cleanup(&settings).await;
}
