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

use rolecall_common::config::{Preference, SyncKey};
use rolecall_common::inventory::{InventoryStore, Record, Upsert, UpsertCounts, email_key};
use tracing::warn;

use crate::inventory::{self, Format, InventoryRow};

/// Rows written per script call.
const PAGE: usize = 500;

/// What a load did, per run of the command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Counts of the upserts.
    pub counts: UpsertCounts,
    /// Rows without a sync key, for an app that is not asked for, or malformed.
    pub skipped: u64,
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
    ];
    fields.extend(
        row.attributes
            .iter()
            .map(|(k, v)| (format!("attr.{k}"), v.clone())),
    );
    Some(Upsert { key, fields })
}

/// Loads an inventory file's rows of `apps` into the Redis inventory.
pub async fn load(
    store: &InventoryStore,
    path: &Path,
    format: Format,
    apps: &[String],
    sync_key: SyncKey,
    preference: Preference,
) -> anyhow::Result<LoadReport> {
    let mut report = LoadReport::default();
    let mut pages: BTreeMap<String, Vec<Upsert>> = BTreeMap::new();
    let source = format!("file:{}", path.display());
    for row in inventory::open(path, format)? {
        let row = match row {
            Ok(row) => row,
            Err(e) => {
                warn!(file = %e.file, line = e.line, reason = %e.reason, "Skipping malformed inventory row.");
                report.skipped += 1;
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
        let page = pages.entry(row.saas.clone()).or_default();
        page.push(upsert);
        if page.len() >= PAGE {
            let batch = std::mem::take(page);
            let outcome = store
                .upsert(&row.saas, &batch, preference, &source, &[])
                .await?;
            report.counts.add(&outcome.counts);
        }
    }
    for (saas, batch) in pages {
        let outcome = store
            .upsert(&saas, &batch, preference, &source, &[])
            .await?;
        report.counts.add(&outcome.counts);
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
