//! The Redis inventory's system-of-record side: loading it from an
//! inventory file (`rolecall-scheduler inventory load`), and reading it back
//! as a run source (`rolecall-scheduler inventory export`, `run-once
//! --source inventory`).
//!
//! Both stream: a load writes a page of rows per script call, an export
//! reads the index in key order a batch at a time and writes JSON Lines,
//! so memory stays that of one batch.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use rolecall_common::config::{DEFAULT_MAX_MARKED_SHARE, Preference, SorMissing, SyncKey};
use rolecall_common::inventory::{InventoryStore, Record, Upsert, UpsertCounts, Walk, email_key};
use tracing::warn;

use crate::inventory::{self, Format, InventoryRow};

/// Rows written per script call.
const PAGE: usize = 500;

/// How a load writes, and what it does to records it did not see.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadOptions {
    /// How rows are joined to records.
    pub sync_key: SyncKey,
    /// What the load may do.
    pub preference: Preference,
    /// What a complete load does to its source's records it did not see.
    pub missing: SorMissing,
    /// The largest share of an app's records the load may mark
    /// (`inventory.max_marked_share`).
    pub max_marked_share: f64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            sync_key: SyncKey::default(),
            preference: Preference::default(),
            missing: SorMissing::default(),
            max_marked_share: DEFAULT_MAX_MARKED_SHARE,
        }
    }
}

/// Whether marking `found` of an app's `total` records exceeds `share`.
pub fn too_many_to_mark(found: u64, total: u64, share: f64) -> bool {
    found as f64 > share * total as f64
}

/// What a load did, per run of the command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// The load's id (`sor_run` of every record it saw).
    pub run_id: String,
    /// Counts of the upserts.
    pub counts: UpsertCounts,
    /// Rows without a sync key, for an app that is not asked for, or malformed.
    pub skipped: u64,
    /// Malformed rows (a load with any is not complete).
    pub malformed: u64,
    /// Whether every row was read: only a complete load finds missing records.
    pub complete: bool,
    /// Records of the source the load did not see (counted whatever
    /// `missing` says; marked only when it and the preference allow).
    pub missing: u64,
    /// Whether the missing records were marked.
    pub marked: bool,
    /// Apps whose missing records were too many to mark
    /// (`inventory.max_marked_share`): counted, left as they were.
    pub held_back: Vec<String>,
    /// Rows the load read for the apps asked (a load that read none
    /// proves nobody missing: an empty answer is more likely a fault).
    pub listed: u64,
}

impl LoadReport {
    /// A new load's report, with its run id.
    pub fn start() -> Self {
        Self {
            run_id: format!("sor-{}", crate::ordered_ulid()),
            ..Default::default()
        }
    }

    /// One line for the terminal.
    pub fn render(&self, what: &str) -> String {
        let c = &self.counts;
        let missing = if !self.complete {
            "missing not checked (incomplete load)".to_owned()
        } else if self.listed == 0 {
            "missing not checked (nobody listed)".to_owned()
        } else if !self.held_back.is_empty() {
            format!(
                "missing {} (not marked in {}: more than inventory.max_marked_share of the records)",
                self.missing,
                self.held_back.join(", ")
            )
        } else if self.marked {
            format!("missing {} (marked)", self.missing)
        } else {
            format!("missing {} (kept)", self.missing)
        };
        format!(
            "{what}: created {}, updated {}, unchanged {}, skipped {}, refused {}, {missing}\n",
            c.created,
            c.updated,
            c.unchanged,
            self.skipped,
            c.refused_new + c.refused_changed,
        )
    }
}

/// After a complete load: finds the records of `source` (`""`: files) in
/// `saas` that the load did not see and, when `options` allow, marks them.
/// A batched walk of the index, never the whole inventory in memory.
/// `create_only` may not change existing records, so it only counts.
pub async fn find_missing(
    store: &InventoryStore,
    saas: &str,
    source: &str,
    options: &LoadOptions,
    report: &mut LoadReport,
) -> anyhow::Result<()> {
    let mark = match options.preference {
        Preference::CreateOnly => None,
        _ => options.missing.status(),
    };
    report.marked = mark.is_some();
    // Counted first, marked in a second walk only when few enough: a
    // source answering part of its users must not mark the rest.
    let walk = |write| Walk::SorMissing {
        run: &report.run_id,
        source,
        mark,
        write,
    };
    let found = store.walk(saas, walk(false)).await?;
    if mark.is_none() || found == 0 {
        report.missing += found;
        return Ok(());
    }
    let total = store.len(saas).await?;
    if too_many_to_mark(found, total, options.max_marked_share) {
        warn!(
            saas,
            source,
            missing = found,
            records = total,
            max_share = options.max_marked_share,
            "More records missing than inventory.max_marked_share allows; none is marked."
        );
        report.missing += found;
        report.held_back.push(saas.to_owned());
        return Ok(());
    }
    report.missing += store.walk(saas, walk(true)).await?;
    Ok(())
}

/// The system-of-record fields of a row, keyed by the sync key.
pub fn upsert_of(row: &InventoryRow, sync_key: SyncKey) -> Option<Upsert> {
    let key = match sync_key {
        SyncKey::Email => email_key(&row.email)?,
        SyncKey::ExternalId => row
            .external_id
            .as_deref()
            .map(str::trim)
            .filter(|id| !id.is_empty())?
            .to_owned(),
    };
    let mut fields = vec![
        ("sor".to_owned(), "1".to_owned()),
        ("user_id".to_owned(), row.user_id.clone()),
        ("email".to_owned(), row.email.clone()),
        (
            "external_id".to_owned(),
            row.external_id.clone().unwrap_or_default(),
        ),
        ("status".to_owned(), row.status.clone()),
        (
            "last_login".to_owned(),
            row.last_login.clone().unwrap_or_default(),
        ),
        // Seen again: no longer missing (absent compares as empty, so this
        // changes nothing for a record that never went missing).
        ("sor_missing_at".to_owned(), String::new()),
    ];
    fields.extend(
        row.attributes
            .iter()
            .map(|(k, v)| (format!("attr.{k}"), v.clone())),
    );
    Some(Upsert { key, fields })
}

/// Loads an inventory file's rows of `apps` into the Redis inventory. A
/// file read to its end without a malformed row is complete: for each app
/// of `apps` it has rows for, the file records it did not have are then
/// missing (`options.missing`).
pub async fn load(
    store: &InventoryStore,
    path: &Path,
    format: Format,
    apps: &[String],
    options: &LoadOptions,
) -> anyhow::Result<LoadReport> {
    let mut report = LoadReport::start();
    // Every app the file has a row for keeps its (possibly empty) page
    // here, so this is also the set of apps the file speaks for.
    let mut pages: BTreeMap<String, Vec<Upsert>> = BTreeMap::new();
    let source = format!("file:{}", path.display());
    let touch = [("sor_run", report.run_id.clone())];
    let touch: Vec<(&str, &str)> = touch.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (sync_key, preference) = (options.sync_key, options.preference);
    for row in inventory::open(path, format)? {
        let row = match row {
            Ok(row) => row,
            Err(e) => {
                warn!(file = %e.file, line = e.line, reason = %e.reason, "Skipping malformed inventory row.");
                report.skipped += 1;
                report.malformed += 1;
                continue;
            }
        };
        if !apps.contains(&row.saas) {
            report.skipped += 1;
            continue;
        }
        let Some(upsert) = upsert_of(&row, sync_key) else {
            report.skipped += 1;
            continue;
        };
        report.listed += 1;
        let page = pages.entry(row.saas.clone()).or_default();
        page.push(upsert);
        if page.len() >= PAGE {
            let batch = std::mem::take(page);
            let outcome = store
                .upsert(&row.saas, &batch, preference, &source, &touch)
                .await?;
            report.counts.add(&outcome.counts);
        }
    }
    for (saas, batch) in &pages {
        let outcome = store
            .upsert(saas, batch, preference, &source, &touch)
            .await?;
        report.counts.add(&outcome.counts);
    }
    // A malformed row may be a user the file still has: with one, the
    // file proves nobody missing. Nor does a file speak for an app it has
    // no row for: a file of one app's users, loaded without `--saas`, must
    // not mark every other app's records missing.
    report.complete = report.malformed == 0;
    if report.complete {
        for saas in apps.iter().filter(|saas| pages.contains_key(*saas)) {
            find_missing(store, saas, "", options, &mut report).await?;
        }
    }
    Ok(report)
}

/// A record as an inventory row: the system of record's fields, else the
/// vendor's (a user only the vendor knows is checked by e-mail too).
pub fn row_of(saas: &str, record: &Record) -> InventoryRow {
    let attributes = record
        .fields
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("attr.")?.to_owned(), v.clone())))
        .collect();
    let status = match (record.get("sor"), record.get("status")) {
        (Some("1"), Some(s)) => s.to_owned(),
        _ => match record.get("vendor_status") {
            Some("inactive" | "gone") => "deactivated".to_owned(),
            _ => "active".to_owned(),
        },
    };
    InventoryRow {
        line: 0,
        saas: saas.to_owned(),
        user_id: record
            .get("user_id")
            .unwrap_or(record.key.as_str())
            .to_owned(),
        email: record
            .get("email")
            .or(record.get("vendor_email"))
            .unwrap_or_default()
            .to_owned(),
        external_id: record
            .get("external_id")
            .or(record.get("vendor_id"))
            .map(str::to_owned),
        status,
        last_login: record
            .get("last_login")
            .or(record.get("vendor_last_login"))
            .map(str::to_owned),
        attributes,
        resume_key: Some(record.key.clone()),
    }
}

/// The row as one JSON Lines object (the format `inventory::open` reads).
pub fn json_line(row: &InventoryRow) -> serde_json::Value {
    let mut object = serde_json::Map::new();
    for (k, v) in &row.attributes {
        object.insert(k.clone(), v.clone().into());
    }
    object.insert("saas".into(), row.saas.clone().into());
    object.insert("user_id".into(), row.user_id.clone().into());
    object.insert("email".into(), row.email.clone().into());
    if let Some(id) = &row.external_id {
        object.insert("external_id".into(), id.clone().into());
    }
    object.insert("status".into(), row.status.clone().into());
    if let Some(login) = &row.last_login {
        object.insert("last_login".into(), login.clone().into());
    }
    serde_json::Value::Object(object)
}

/// Writes the inventory of `apps` as JSON Lines, in key order, a batch at
/// a time. Returns the number of rows.
pub async fn export(
    store: &InventoryStore,
    apps: &[String],
    out: &mut impl Write,
) -> anyhow::Result<u64> {
    let mut written = 0;
    for saas in apps {
        let mut after: Option<String> = None;
        loop {
            let records = store.page(saas, after.as_deref(), PAGE).await?;
            let Some(last) = records.last() else { break };
            after = Some(last.key.clone());
            for record in &records {
                serde_json::to_writer(&mut *out, &json_line(&row_of(saas, record)))?;
                out.write_all(b"\n")?;
                written += 1;
            }
        }
    }
    out.flush()?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vendor_only_record_becomes_a_row_keyed_by_its_email() {
        let record = Record {
            key: "ann@x.com".into(),
            fields: [
                ("vendor_email", "Ann@x.com"),
                ("vendor_id", "v1"),
                ("vendor_status", "inactive"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        };
        let row = row_of("lever", &record);
        assert_eq!(row.user_id, "ann@x.com");
        assert_eq!(row.email, "Ann@x.com");
        assert_eq!(row.external_id.as_deref(), Some("v1"));
        assert_eq!(row.status, "deactivated");
    }

    #[test]
    fn system_of_record_rows_keep_their_attributes() {
        let row = InventoryRow {
            saas: "lever".into(),
            user_id: "u1".into(),
            email: "A@X.com".into(),
            status: "active".into(),
            attributes: [("dept".to_string(), "ops".to_string())].into(),
            ..Default::default()
        };
        let u = upsert_of(&row, SyncKey::Email).unwrap();
        assert_eq!(u.key, "a@x.com");
        assert!(u.fields.contains(&("attr.dept".into(), "ops".into())));
        assert!(upsert_of(&row, SyncKey::ExternalId).is_none());
    }
}
