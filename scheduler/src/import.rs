//! `rolecall-scheduler import`: lists every user a vendor has and upserts
//! them into the Redis inventory.
//!
//! Why here and not as a job on the workers: a listing is one long, ordered
//! walk of cursors (each page names the next), which does not split into
//! independent jobs; and it needs no queue to be fair to lookups, because
//! every page request goes through the worker library's [`VendorClient`]
//! with the fleet's limiters attached — the same Redis-backed slots the
//! workers take per request. So there is still one limited HTTP path.
//!
//! Pages stream straight into one upsert script call each: the importer
//! holds one page, whatever the number of users. Users the vendor had in an
//! earlier import but not in this one ("vanished") are found afterwards by
//! a batched walk of the index, never by loading the inventory.

use std::time::{Duration, Instant};

use anyhow::Context;
use rolecall_common::config::{Preference, SaasSettings, SyncKey};
use rolecall_common::credentials::Vault;
use rolecall_common::inventory::{InventoryStore, Upsert, UpsertCounts, Walk, email_key};
use rolecall_common::{Names, Settings};
use rolecall_worker::connectors::{self, Connector, ConnectorError, ListedUser, VendorClient};
use rolecall_worker::error::ErrorClass;
use tracing::{info, warn};

/// Attempts per page before the import gives up (throttles and transient
/// errors are retried with backoff; permanent ones end the import).
const PAGE_ATTEMPTS: u32 = 8;
/// How long one page request may wait for a fleet slot: an import is
/// background work, paced behind the lookups.
const IMPORT_HOLD: Duration = Duration::from_secs(600);
/// Refused keys kept in the report (all are counted).
const MAX_REFUSED_SHOWN: usize = 20;

/// What an import is asked to do.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The SaaS app.
    pub saas: String,
    /// Join key; the `[inventory]` setting by default.
    pub sync_key: Option<SyncKey>,
    /// What the import may do; the `[inventory]` setting by default.
    pub preference: Option<Preference>,
}

/// What an import did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ImportReport {
    /// The import run's id.
    pub run_id: String,
    /// The SaaS app.
    pub saas: String,
    /// Pages read.
    pub pages: u64,
    /// Users the vendor listed.
    pub listed: u64,
    /// Created, updated, unchanged, refused.
    pub counts: UpsertCounts,
    /// Users without a sync key (no e-mail, say).
    pub skipped: u64,
    /// Users an earlier import saw and this one did not.
    pub vanished: u64,
    /// Whether they were too many to mark gone (`inventory.max_marked_share`).
    pub held_back: bool,
    /// Some refused keys.
    pub refused: Vec<String>,
    /// Wall time.
    pub elapsed_ms: u64,
}

impl ImportReport {
    /// One line for the terminal.
    pub fn render(&self) -> String {
        let c = &self.counts;
        let mut text = format!(
            "import {} of {}: {} users on {} pages in {:.1} s: created {}, updated {}, unchanged {}, skipped {}, vanished {}, refused {} (new {}, changed {})\n",
            self.run_id,
            self.saas,
            self.listed,
            self.pages,
            self.elapsed_ms as f64 / 1000.0,
            c.created,
            c.updated,
            c.unchanged,
            self.skipped,
            self.vanished,
            c.refused_new + c.refused_changed,
            c.refused_new,
            c.refused_changed,
        );
        if self.held_back {
            text.push_str(&format!(
                "  {} vanished users not marked gone: more than inventory.max_marked_share of the records\n",
                self.vanished
            ));
        }
        for key in &self.refused {
            text.push_str(&format!("  refused {key}\n"));
        }
        text
    }
}

/// Why an import stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The connector has no list endpoint.
    #[error("saas.{0}: its connector cannot list users (no list endpoint)")]
    Unsupported(String),
    /// A page failed for good.
    #[error("saas.{saas}: listing page {page} failed: {source}")]
    Page {
        /// SaaS app.
        saas: String,
        /// 1-based page number.
        page: u64,
        /// Why.
        #[source]
        source: ConnectorError,
    },
}

/// Builds the SaaS app's connector on a vendor client paced by the fleet's
/// limiters (the workers' Redis slots), as the workers do.
pub async fn fleet_connector(
    settings: &Settings,
    saas: &SaasSettings,
    vault: &Vault,
) -> anyhow::Result<std::sync::Arc<dyn Connector>> {
    let redis = rolecall_common::ledger::connect(&settings.redis)
        .await
        .context("connecting to Redis")?;
    let names = Names::new(&settings.namespace);
    let client = VendorClient::standalone(saas).with_max_hold(IMPORT_HOLD);
    client.attach(rolecall_worker::fleet_limiters(
        saas,
        &redis,
        &names,
        settings.worker.attempt_timeout,
    ));
    Ok(connectors::build(saas, &client, vault).await?)
}

/// Imports every user of `options.saas` from its vendor, the credential
/// coming from `vault`.
pub async fn import(
    settings: &Settings,
    vault: &Vault,
    options: &ImportOptions,
) -> anyhow::Result<ImportReport> {
    let saas = crate::saas_app(settings, &options.saas)?;
    let connector = fleet_connector(settings, saas, vault).await?;
    let redis = rolecall_common::ledger::connect(&settings.redis)
        .await
        .context("connecting to Redis")?;
    let store = InventoryStore::new(redis, &Names::new(&settings.namespace));
    import_with(settings, options, connector.as_ref(), &store).await
}

/// [`import`] with the connector and store given (tests, the bench).
pub async fn import_with(
    settings: &Settings,
    options: &ImportOptions,
    connector: &dyn Connector,
    store: &InventoryStore,
) -> anyhow::Result<ImportReport> {
    let started = Instant::now();
    let sync_key = options.sync_key.unwrap_or(settings.inventory.sync_key);
    let preference = options.preference.unwrap_or(settings.inventory.preference);
    let run_id = format!("import-{}", crate::ordered_ulid());
    let saas = options.saas.as_str();
    let source = format!("vendor:{saas}");
    let mut report = ImportReport {
        run_id: run_id.clone(),
        saas: saas.to_owned(),
        ..Default::default()
    };
    info!(
        run_id,
        saas,
        sync_key = sync_key.as_str(),
        preference = preference.as_str(),
        "Import started."
    );
    // The next page is asked for while this one is written: the vendor's
    // round trip and the Redis script overlap, and at most two pages are
    // held.
    let touch = [("vendor_run", run_id.as_str())];
    let mut page = list_with_retries(connector, saas, None, 1).await?;
    loop {
        report.pages += 1;
        report.listed += page.users.len() as u64;
        let mut batch = Vec::with_capacity(page.users.len());
        for user in &page.users {
            match upsert_of(user, sync_key) {
                Some(u) => batch.push(u),
                None => report.skipped += 1,
            }
        }
        let write = store.upsert(saas, &batch, preference, &source, &touch);
        let next = async {
            match page.next.as_deref() {
                Some(cursor) => list_with_retries(connector, saas, Some(cursor), report.pages + 1)
                    .await
                    .map(Some),
                None => Ok(None),
            }
        };
        let (outcome, next) = tokio::join!(write, next);
        let outcome = outcome?;
        report.counts.add(&outcome.counts);
        for key in outcome.refused {
            if report.refused.len() < MAX_REFUSED_SHOWN {
                report.refused.push(key);
            }
        }
        match next? {
            Some(next) => page = next,
            None => break,
        }
    }
    // The listing is complete: whoever an earlier import saw and this one
    // did not is gone at the vendor. Marking them is an update, which
    // `create_only` does not allow; they are counted either way. A listing
    // of nobody (every vendor account has at least its admin) is more
    // likely a fault or a wrong filter than an empty account: it counts,
    // and marks nobody.
    let mark = preference != Preference::CreateOnly && report.listed > 0;
    if report.listed == 0 {
        warn!(
            saas,
            run_id, "The vendor listed nobody; no user is marked gone."
        );
    }
    // Counted first, marked in a second walk only when few enough
    // (`inventory.max_marked_share`): a listing cut short by the vendor is
    // likelier than most of an account leaving at once.
    report.vanished = store
        .walk(
            saas,
            Walk::Vanished {
                run: &run_id,
                mark: false,
            },
        )
        .await?;
    let mut mark = mark && report.vanished > 0;
    if mark {
        let total = store.len(saas).await?;
        let share = settings.inventory.max_marked_share;
        if crate::sor::too_many_to_mark(report.vanished, total, share) {
            warn!(
                saas,
                run_id,
                vanished = report.vanished,
                records = total,
                max_share = share,
                "More users vanished than inventory.max_marked_share allows; none is marked gone."
            );
            report.held_back = true;
            mark = false;
        }
    }
    if mark {
        report.vanished = store
            .walk(
                saas,
                Walk::Vanished {
                    run: &run_id,
                    mark: true,
                },
            )
            .await?;
    }
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    let c = &report.counts;
    store
        .record_import(
            saas,
            &run_id,
            &[
                ("pages", report.pages.to_string()),
                ("listed", report.listed.to_string()),
                ("created", c.created.to_string()),
                ("updated", c.updated.to_string()),
                ("unchanged", c.unchanged.to_string()),
                ("skipped", report.skipped.to_string()),
                ("vanished", report.vanished.to_string()),
                ("refused_new", c.refused_new.to_string()),
                ("refused_changed", c.refused_changed.to_string()),
                ("elapsed_ms", report.elapsed_ms.to_string()),
                ("preference", preference.as_str().to_owned()),
                ("sync_key", sync_key.as_str().to_owned()),
            ],
            true,
        )
        .await?;
    info!(
        run_id,
        saas,
        listed = report.listed,
        pages = report.pages,
        "Import finished."
    );
    Ok(report)
}

/// The record fields a vendor user sets, keyed by the sync key; `None`
/// when the user has no value for it.
pub fn upsert_of(user: &ListedUser, sync_key: SyncKey) -> Option<Upsert> {
    let key = match sync_key {
        SyncKey::Email => email_key(user.email.as_deref()?)?,
        SyncKey::ExternalId => Some(user.vendor_id.trim())
            .filter(|id| !id.is_empty())?
            .to_owned(),
    };
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    Some(Upsert {
        key,
        fields: vec![
            ("vendor_id".into(), user.vendor_id.clone()),
            ("vendor_email".into(), text(&user.email)),
            ("vendor_name".into(), text(&user.name)),
            ("vendor_role".into(), text(&user.raw_role)),
            (
                "vendor_status".into(),
                if user.active { "active" } else { "inactive" }.into(),
            ),
            ("vendor_last_login".into(), text(&user.last_login)),
        ],
    })
}

async fn list_with_retries(
    connector: &dyn Connector,
    saas: &str,
    cursor: Option<&str>,
    page: u64,
) -> Result<connectors::UserPage, ImportError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match connector.list_page(cursor).await {
            Ok(page) => return Ok(page),
            Err(ConnectorError::Unsupported(_)) => {
                return Err(ImportError::Unsupported(saas.to_owned()));
            }
            Err(e) => {
                let wait = match e.class() {
                    ErrorClass::Throttled(after) => after.unwrap_or(Duration::from_secs(1)),
                    ErrorClass::Transient | ErrorClass::Unavailable => {
                        Duration::from_millis(250 << attempt.min(6))
                    }
                    ErrorClass::Auth | ErrorClass::Permanent => {
                        return Err(ImportError::Page {
                            saas: saas.to_owned(),
                            page,
                            source: e,
                        });
                    }
                };
                if attempt >= PAGE_ATTEMPTS {
                    return Err(ImportError::Page {
                        saas: saas.to_owned(),
                        page,
                        source: e,
                    });
                }
                warn!(saas, page, attempt, error = %e, "Listing page failed; retrying.");
                tokio::time::sleep(wait.min(Duration::from_secs(30))).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(email: Option<&str>, id: &str) -> ListedUser {
        ListedUser {
            vendor_id: id.into(),
            email: email.map(str::to_owned),
            active: true,
            ..Default::default()
        }
    }

    #[test]
    fn the_email_sync_key_is_case_insensitive_and_users_without_one_are_skipped() {
        let u = upsert_of(&user(Some(" Ann@X.COM"), "7"), SyncKey::Email).unwrap();
        assert_eq!(u.key, "ann@x.com");
        assert!(upsert_of(&user(None, "7"), SyncKey::Email).is_none());
        let u = upsert_of(&user(None, "7"), SyncKey::ExternalId).unwrap();
        assert_eq!(u.key, "7");
    }
}
