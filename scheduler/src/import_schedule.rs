//! Scheduled imports (`[inventory.imports.<name>]`), run by `serve`.
//!
//! Every replica of `serve` watches the schedules; a slot is imported by
//! whichever replica first claims it in Redis (`SET NX` on
//! `{<ns>:rolecall:inv:<saas>}:meta:slot:<name>:<slot>`), so the imports need no leader and run
//! once per slot however many replicas serve. Only slots after the process
//! started fire: a missed slot is not caught up (the next one comes).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use redis::AsyncCommands;
use rolecall_common::credentials::Vault;
use rolecall_common::inventory::InventoryStore;
use rolecall_common::{Names, Settings};
use tracing::{info, warn};

use crate::import::{ImportOptions, import};

/// A claimed slot's marker lives this long (longer than any import).
const CLAIM_TTL_S: u64 = 7 * 24 * 3600;

/// Watches the schedules until the task is aborted.
pub async fn run(settings: Arc<Settings>) {
    if settings.inventory.imports.is_empty() {
        return;
    }
    let started = Utc::now();
    let mut last_done: std::collections::HashMap<String, chrono::DateTime<Utc>> =
        Default::default();
    let vault = Vault::new(settings.credentials.clone());
    let names = Names::new(&settings.namespace);
    let mut tick = tokio::time::interval(settings.scheduler.tick.max(Duration::from_secs(1)));
    loop {
        tick.tick().await;
        let now = Utc::now();
        for (name, schedule) in &settings.inventory.imports {
            let Some(slot) = schedule.schedule.latest_at_or_before(now) else {
                continue;
            };
            if slot <= started || last_done.get(name).is_some_and(|d| *d >= slot) {
                continue;
            }
            last_done.insert(name.clone(), slot);
            match claim(&settings, &names, &schedule.saas, name, slot.timestamp()).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    warn!(import = %name, error = %e, "Could not claim the import slot.");
                    continue;
                }
            }
            let options = ImportOptions {
                saas: schedule.saas.clone(),
                sync_key: None,
                preference: None,
            };
            match import(&settings, &vault, &options).await {
                Ok(report) => {
                    info!(import = %name, report = %report.render().trim(), "Scheduled import done.")
                }
                Err(e) => {
                    warn!(import = %name, error = format!("{e:#}"), "Scheduled import failed.")
                }
            }
        }
    }
}

async fn claim(
    settings: &Settings,
    names: &Names,
    saas: &str,
    name: &str,
    slot: i64,
) -> anyhow::Result<bool> {
    let mut conn = rolecall_common::ledger::connect(&settings.redis).await?;
    let store = InventoryStore::new(conn.clone(), names);
    let key = format!("{}:slot:{name}:{slot}", store.meta_key(saas));
    let claimed: bool = conn
        .set_options(
            key,
            1,
            redis::SetOptions::default()
                .conditional_set(redis::ExistenceCheck::NX)
                .with_expiration(redis::SetExpiry::EX(CLAIM_TTL_S)),
        )
        .await?;
    Ok(claimed)
}
