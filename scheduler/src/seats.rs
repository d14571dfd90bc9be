//! Seats nobody owns (`rolecall-scheduler report`), and the per-user role
//! results export (`rolecall-scheduler results`).
//!
//! The seats report walks a SaaS app's Redis inventory in key order, a batch
//! at a time, and compares the vendor side of each record (as the last
//! complete import saw it) with the system-of-record side:
//!
//! - **shadow**: an active vendor account the system of record does not know;
//! - **gone**: a user active in the system of record whom the vendor had in
//!   an earlier import but no longer has;
//! - **stale**: an active vendor account whose last login (the newer of the
//!   vendor's and the system of record's) is older than the threshold.
//!
//! Each row carries the seat price of its role from `saas.<name>.roles`.
//! "Reclaimable" sums the seats that still exist at the vendor (shadow and
//! stale; a seat counted in both is counted once); a gone user holds no seat.
//! Only the rows are kept in memory, never the whole inventory.

use chrono::{DateTime, NaiveDate, Utc};
use rolecall_common::config::SaasSettings;
use rolecall_common::inventory::{InventoryStore, InventoryStoreError, Record};
use serde::Serialize;

/// Records read per batch.
const BATCH: usize = 500;

/// Why a seat is listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum SeatKind {
    /// At the vendor, unknown to the system of record.
    Shadow,
    /// Active in the system of record, no longer at the vendor.
    Gone,
    /// At the vendor, no login for longer than the threshold.
    Stale,
}

impl SeatKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Shadow => "shadow",
            Self::Gone => "gone",
            Self::Stale => "stale",
        }
    }
}

/// One listed seat.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeatRow {
    /// Why it is listed.
    pub kind: SeatKind,
    /// The inventory key (e-mail or external id).
    pub key: String,
    /// The user's e-mail, from either side.
    pub email: String,
    /// The vendor's raw role.
    pub role: String,
    /// The normalized role.
    pub normalized_role: String,
    /// Its seat price.
    pub seat_price: f64,
    /// Last login, if known.
    pub last_login: String,
}

/// The report of one SaaS app.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeatsReport {
    /// The SaaS app.
    pub saas: String,
    /// The import the vendor side comes from.
    pub import_run: Option<String>,
    /// Listed seats, by kind then key.
    pub rows: Vec<SeatRow>,
    /// Sum of shadow seats' prices.
    pub shadow_total: f64,
    /// Sum of gone users' prices (for information: no seat is left).
    pub gone_total: f64,
    /// Sum of stale seats' prices.
    pub stale_total: f64,
    /// What reclaiming shadow and stale seats saves (each seat once).
    pub reclaimable_total: f64,
}

/// A last login as the vendors and files write it: RFC 3339, a date, or
/// epoch milliseconds.
pub fn parse_login(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    }
    text.parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_millis)
}

/// Classifies one record; pure, so the rules are unit-tested.
pub fn classify(
    record: &Record,
    import_run: Option<&str>,
    stale_before: DateTime<Utc>,
) -> Vec<SeatKind> {
    let at_vendor_now = import_run.is_some() && record.get("vendor_run") == import_run;
    let vendor_active = at_vendor_now && record.get("vendor_status") == Some("active");
    let in_sor = record.get("sor") == Some("1");
    let sor_active = in_sor
        && record
            .get("status")
            .is_none_or(|s| s.eq_ignore_ascii_case("active"));
    let mut kinds = Vec::new();
    if vendor_active && !in_sor {
        kinds.push(SeatKind::Shadow);
    }
    if sor_active && import_run.is_some() && record.get("vendor_run").is_some() && !at_vendor_now {
        kinds.push(SeatKind::Gone);
    }
    if vendor_active {
        let last = [record.get("vendor_last_login"), record.get("last_login")]
            .into_iter()
            .flatten()
            .filter_map(parse_login)
            .max();
        if last.is_some_and(|t| t < stale_before) {
            kinds.push(SeatKind::Stale);
        }
    }
    kinds
}

/// Builds the report of `saas`, walking its inventory a batch at a time.
pub async fn report(
    store: &InventoryStore,
    saas: &SaasSettings,
    stale_after_days: u32,
    now: DateTime<Utc>,
) -> Result<SeatsReport, InventoryStoreError> {
    let import_run = store.last_import(&saas.name).await?;
    let stale_before = now - chrono::Duration::days(i64::from(stale_after_days));
    let mut report = SeatsReport {
        saas: saas.name.clone(),
        import_run: import_run.clone(),
        rows: Vec::new(),
        shadow_total: 0.0,
        gone_total: 0.0,
        stale_total: 0.0,
        reclaimable_total: 0.0,
    };
    let mut after: Option<String> = None;
    loop {
        let records = store.page(&saas.name, after.as_deref(), BATCH).await?;
        let Some(last) = records.last() else { break };
        after = Some(last.key.clone());
        for record in &records {
            let kinds = classify(record, import_run.as_deref(), stale_before);
            if kinds.is_empty() {
                continue;
            }
            let raw_role = record.get("vendor_role").unwrap_or_default().to_owned();
            let (mapping, _) = saas.map_role(&raw_role);
            let email = record
                .get("email")
                .or(record.get("vendor_email"))
                .unwrap_or_default()
                .to_owned();
            let last_login = record
                .get("vendor_last_login")
                .or(record.get("last_login"))
                .unwrap_or_default()
                .to_owned();
            let price = mapping.seat_price;
            if kinds.contains(&SeatKind::Shadow) || kinds.contains(&SeatKind::Stale) {
                report.reclaimable_total += price;
            }
            for kind in kinds {
                match kind {
                    SeatKind::Shadow => report.shadow_total += price,
                    SeatKind::Gone => report.gone_total += price,
                    SeatKind::Stale => report.stale_total += price,
                }
                report.rows.push(SeatRow {
                    kind,
                    key: record.key.clone(),
                    email: email.clone(),
                    role: raw_role.clone(),
                    normalized_role: mapping.role.clone(),
                    seat_price: price,
                    last_login: last_login.clone(),
                });
            }
        }
    }
    report
        .rows
        .sort_by(|a, b| (a.kind, &a.key).cmp(&(b.kind, &b.key)));
    Ok(report)
}

/// Output formats of `report` and `results`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON document.
    Json,
}

const SEAT_COLUMNS: [&str; 7] = [
    "kind",
    "key",
    "email",
    "role",
    "normalized_role",
    "seat_price",
    "last_login",
];

fn seat_cells(row: &SeatRow) -> [String; 7] {
    [
        row.kind.as_str().to_owned(),
        row.key.clone(),
        row.email.clone(),
        row.role.clone(),
        row.normalized_role.clone(),
        format!("{:.2}", row.seat_price),
        row.last_login.clone(),
    ]
}

/// Renders a report.
pub fn render(report: &SeatsReport, format: OutputFormat) -> anyhow::Result<String> {
    Ok(match format {
        OutputFormat::Json => serde_json::to_string_pretty(report)? + "\n",
        OutputFormat::Csv => csv_text(
            &SEAT_COLUMNS,
            report.rows.iter().map(|r| seat_cells(r).to_vec()),
        )?,
        OutputFormat::Table => {
            let mut text = format!(
                "{}: seats nobody owns (import {})\n",
                report.saas,
                report.import_run.as_deref().unwrap_or("none yet")
            );
            text.push_str(&table(
                &SEAT_COLUMNS,
                report.rows.iter().map(|r| seat_cells(r).to_vec()),
            ));
            text.push_str(&format!(
                "shadow {:.2}  gone {:.2}  stale {:.2}  reclaimable {:.2}\n",
                report.shadow_total,
                report.gone_total,
                report.stale_total,
                report.reclaimable_total
            ));
            text
        }
    })
}

/// CSV text of a header and rows.
pub fn csv_text(
    columns: &[&str],
    rows: impl Iterator<Item = Vec<String>>,
) -> anyhow::Result<String> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(columns)?;
    for row in rows {
        writer.write_record(&row)?;
    }
    Ok(String::from_utf8(writer.into_inner()?)?)
}

/// Aligned columns.
pub fn table(columns: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows.collect();
    let mut widths: Vec<usize> = columns.iter().map(|c| c.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut text = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        text.truncate(text.trim_end().len());
        text + "\n"
    };
    let header: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
    let mut text = line(&header);
    for row in &rows {
        text.push_str(&line(row));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fields: &[(&str, &str)]) -> Record {
        Record {
            key: "k".into(),
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn now() -> DateTime<Utc> {
        parse_login("2026-06-01T00:00:00Z").unwrap()
    }

    #[test]
    fn an_active_vendor_account_unknown_to_the_system_of_record_is_a_shadow_seat() {
        let r = record(&[("vendor_run", "i2"), ("vendor_status", "active")]);
        assert_eq!(classify(&r, Some("i2"), now()), [SeatKind::Shadow]);
        // Seen only by an older import: not at the vendor any more.
        assert!(classify(&r, Some("i3"), now()).is_empty());
    }

    #[test]
    fn an_active_user_the_vendor_no_longer_has_is_gone() {
        let r = record(&[
            ("sor", "1"),
            ("status", "active"),
            ("vendor_run", "i1"),
            ("vendor_status", "gone"),
        ]);
        assert_eq!(classify(&r, Some("i2"), now()), [SeatKind::Gone]);
        let inactive = record(&[("sor", "1"), ("status", "terminated"), ("vendor_run", "i1")]);
        assert!(classify(&inactive, Some("i2"), now()).is_empty());
    }

    #[test]
    fn the_newer_login_of_both_sides_decides_staleness() {
        let r = record(&[
            ("sor", "1"),
            ("vendor_run", "i2"),
            ("vendor_status", "active"),
            ("vendor_last_login", "2025-01-01T00:00:00Z"),
            ("last_login", "2026-05-30"),
        ]);
        assert!(classify(&r, Some("i2"), now() - chrono::Duration::days(90)).is_empty());
        let old = record(&[
            ("sor", "1"),
            ("vendor_run", "i2"),
            ("vendor_status", "active"),
            ("last_login", "2025-01-01"),
        ]);
        assert_eq!(
            classify(&old, Some("i2"), now() - chrono::Duration::days(90)),
            [SeatKind::Stale]
        );
    }

    #[test]
    fn logins_parse_as_rfc3339_dates_or_epoch_milliseconds() {
        assert!(parse_login("2026-01-02T03:04:05+01:00").is_some());
        assert!(parse_login("2026-01-02").is_some());
        assert!(parse_login("1733206956064").is_some());
        assert!(parse_login("yesterday").is_none());
    }
}
