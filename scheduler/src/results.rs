//! `rolecall-scheduler results`: the per-user role results of a SaaS app
//! (user, status, role, normalized role, seat price, checked at) as a table, CSV or
//! JSON, for downstream automation.
//!
//! Streams: results are read with SCAN a batch at a time and written as
//! they come (JSON as one array written element by element). SCAN may
//! return a key twice while Redis rehashes; consumers that need exact
//! counts deduplicate on `user_id`. Results share the ledger's hash tag,
//! so on a Redis Cluster they all live on the master serving that slot:
//! the SCAN is sent there (`query_on_node_of`), not to a node at random.

use std::io::Write;

use rolecall_common::{Names, RedisConnection};

use crate::seats::OutputFormat;

const COLUMNS: [&str; 7] = [
    "user_id",
    "email",
    // found, not_found, inactive or failed: a blank role alone does not
    // tell a user the vendor no longer has from a failed lookup.
    "status",
    "role",
    "normalized_role",
    "seat_price",
    "checked_at",
];

/// Writes every recorded result of `saas`. Returns the number of rows.
pub async fn export(
    conn: &RedisConnection,
    names: &Names,
    saas: &str,
    format: OutputFormat,
    out: &mut impl Write,
) -> anyhow::Result<u64> {
    let pattern = format!("{}*", names.role_key(saas, ""));
    let mut conn = conn.clone();
    let mut cursor: u64 = 0;
    let mut written = 0u64;
    match format {
        OutputFormat::Csv => writeln!(out, "{}", COLUMNS.join(","))?,
        OutputFormat::Json => write!(out, "[")?,
        OutputFormat::Table => writeln!(
            out,
            "{:<24} {:<32} {:<10} {:<20} {:<16} {:>10}  {}",
            COLUMNS[0], COLUMNS[1], COLUMNS[2], COLUMNS[3], COLUMNS[4], COLUMNS[5], COLUMNS[6]
        )?,
    }
    loop {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(500);
        let (next, keys): (u64, Vec<String>) = conn.query_on_node_of(&pattern, scan).await?;
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.cmd("HMGET").arg(key).arg(&COLUMNS[..]);
        }
        let rows: Vec<Vec<Option<String>>> = if keys.is_empty() {
            Vec::new()
        } else {
            pipe.query_async(&mut conn).await?
        };
        for row in rows {
            let cells: Vec<String> = row.into_iter().map(Option::unwrap_or_default).collect();
            match format {
                OutputFormat::Csv => {
                    let mut line = csv::WriterBuilder::new()
                        .has_headers(false)
                        .from_writer(Vec::new());
                    line.write_record(&cells)?;
                    out.write_all(&line.into_inner()?)?;
                }
                OutputFormat::Json => {
                    let object: serde_json::Map<String, serde_json::Value> = COLUMNS
                        .iter()
                        .zip(&cells)
                        .map(|(k, v)| {
                            let value = match *k {
                                "seat_price" => v
                                    .parse::<f64>()
                                    .ok()
                                    .and_then(serde_json::Number::from_f64)
                                    .map_or(serde_json::Value::Null, Into::into),
                                _ => v.clone().into(),
                            };
                            (k.to_string(), value)
                        })
                        .collect();
                    if written > 0 {
                        write!(out, ",")?;
                    }
                    write!(out, "\n  {}", serde_json::Value::Object(object))?;
                }
                OutputFormat::Table => writeln!(
                    out,
                    "{:<24} {:<32} {:<10} {:<20} {:<16} {:>10}  {}",
                    cells[0], cells[1], cells[2], cells[3], cells[4], cells[5], cells[6]
                )?,
            }
            written += 1;
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    if format == OutputFormat::Json {
        writeln!(out, "\n]")?;
    }
    out.flush()?;
    Ok(written)
}
