//! The SaaS user inventory: CSV or JSON Lines, read as a stream.
//!
//! Rows are yielded one at a time so memory does not grow with the inventory.
//! A malformed row is an `Err` carrying its line number and the reason; the
//! caller reports it and carries on with the next row, so one bad line never
//! costs the other users their check.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// The fields every row has; anything else is a free attribute.
pub const KNOWN_FIELDS: [&str; 6] = [
    "saas",
    "user_id",
    "email",
    "external_id",
    "status",
    "last_login",
];

/// One SaaS user of one SaaS app, as the inventory lists them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InventoryRow {
    /// 1-based line in the file (for messages).
    pub line: u64,
    /// SaaS app name.
    pub saas: String,
    /// The user's id in the system of record.
    pub user_id: String,
    /// E-mail address.
    pub email: String,
    /// The user's id at the vendor, if known.
    pub external_id: Option<String>,
    /// Status in the system of record (`active`, `deactivated`, …).
    pub status: String,
    /// Last login, as written.
    pub last_login: Option<String>,
    /// Free attributes (department, cost centre, …), usable in criteria.
    pub attributes: BTreeMap<String, String>,
    /// The Redis inventory record's key (files: none): a run's checkpoint
    /// keeps it, so a successor starts after this record whatever was
    /// added or deleted before it meanwhile.
    pub resume_key: Option<String>,
}

impl InventoryRow {
    /// A field by name, known or free, for criteria.
    pub fn field(&self, name: &str) -> Option<&str> {
        match name {
            "saas" => Some(&self.saas),
            "user_id" => Some(&self.user_id),
            "email" => Some(&self.email),
            "external_id" => self.external_id.as_deref(),
            "status" => Some(&self.status),
            "last_login" => self.last_login.as_deref(),
            other => self.attributes.get(other).map(String::as_str),
        }
    }
}

impl rolecall_common::config::Fields for InventoryRow {
    fn field(&self, name: &str) -> Option<&str> {
        InventoryRow::field(self, name)
    }
}

/// A row that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
pub struct RowError {
    /// The inventory file.
    pub file: String,
    /// 1-based line number.
    pub line: u64,
    /// What is wrong.
    pub reason: String,
}

/// The inventory could not be opened at all.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The file could not be opened or its header read.
    #[error("cannot read inventory {path}: {reason}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A CSV file lacks a required column.
    #[error("inventory {path} has no `{column}` column (header: {header})")]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column.
        column: &'static str,
        /// The header as read.
        header: String,
    },
}

/// Inventory file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line.
    JsonLines,
    /// Not a file: Rolecall's own inventory in Redis ([`REDIS_INVENTORY`]),
    /// read in key order by the publisher (`run_source`).
    Redis,
}

/// The inventory "path" naming the Redis inventory as a run's source
/// (`run-once --inventory redis:inventory`, a workflow's `inventory`).
pub const REDIS_INVENTORY: &str = "redis:inventory";

impl Format {
    /// Guesses the format from the file name (`.jsonl`/`.ndjson` → JSON
    /// Lines); [`REDIS_INVENTORY`] is the Redis inventory.
    pub fn from_path(path: &Path) -> Format {
        if path == Path::new(REDIS_INVENTORY) {
            return Format::Redis;
        }
        match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl" | "ndjson" | "json") => Format::JsonLines,
            _ => Format::Csv,
        }
    }
}

/// A stream of inventory rows.
pub type Rows = Box<dyn Iterator<Item = Result<InventoryRow, RowError>> + Send>;

/// Checks that a run's source can be read: a file opens (and has its
/// columns); the Redis inventory is read by the publisher itself.
pub fn check_source(path: &Path, format: Format) -> Result<(), InventoryError> {
    match format {
        Format::Redis => Ok(()),
        _ => open(path, format).map(drop),
    }
}

/// What tells an inventory file's content apart cheaply: its length and
/// modification time. A run records it when it starts; a publisher that
/// resumes the run from an offset needs the very same file, or the offset
/// would skip or repeat arbitrary users. `None`: the Redis inventory (its
/// runs resume after a record key), or a file that cannot be read.
pub fn fingerprint(path: &Path, format: Format) -> Option<String> {
    if format == Format::Redis {
        return None;
    }
    let meta = std::fs::metadata(path).ok()?;
    let modified = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some(format!(
        "{}:{}.{:09}",
        meta.len(),
        modified.as_secs(),
        modified.subsec_nanos()
    ))
}

/// Opens an inventory file as a stream of rows. The Redis inventory is not
/// a file: asking for it here is an error (its reader is async, in
/// `run_source`), never an empty inventory.
pub fn open(path: &Path, format: Format) -> Result<Rows, InventoryError> {
    if format == Format::Redis {
        return Err(InventoryError::Open {
            path: path.into(),
            reason: "the Redis inventory is not a file (only runs read it)".into(),
        });
    }
    let file = File::open(path).map_err(|e| InventoryError::Open {
        path: path.into(),
        reason: e.to_string(),
    })?;
    let name = path.display().to_string();
    match format {
        Format::Csv => csv_rows(path, name, file),
        Format::JsonLines => Ok(Box::new(json_rows(name, BufReader::new(file)))),
        Format::Redis => unreachable!("refused above"),
    }
}

/// The columns of a CSV inventory (lower-case), for checking the fields
/// criteria name before a run starts; `None` for JSON Lines, whose rows
/// each carry their own fields.
pub fn columns(path: &Path, format: Format) -> Result<Option<Vec<String>>, InventoryError> {
    // Redis records, like JSON Lines rows, carry their own fields.
    if matches!(format, Format::JsonLines | Format::Redis) {
        return Ok(None);
    }
    let open_error = |reason: String| InventoryError::Open {
        path: path.into(),
        reason,
    };
    let file = File::open(path).map_err(|e| open_error(e.to_string()))?;
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(BufReader::new(file));
    let header = reader.headers().map_err(|e| open_error(e.to_string()))?;
    Ok(Some(
        header.iter().map(|h| h.to_ascii_lowercase()).collect(),
    ))
}

fn csv_rows(path: &Path, name: String, file: File) -> Result<Rows, InventoryError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(BufReader::new(file));
    let header = reader
        .headers()
        .map_err(|e| InventoryError::Open {
            path: path.into(),
            reason: e.to_string(),
        })?
        .clone();
    let columns: Vec<String> = header.iter().map(|h| h.to_ascii_lowercase()).collect();
    if columns.iter().all(String::is_empty) {
        return Err(InventoryError::Open {
            path: path.into(),
            reason: "the file is empty: a CSV inventory starts with a header naming saas, user_id, email and status".into(),
        });
    }
    for required in ["saas", "user_id", "email", "status"] {
        if !columns.iter().any(|c| c == required) {
            return Err(InventoryError::MissingColumn {
                path: path.into(),
                column: required,
                header: columns.join(","),
            });
        }
    }
    // One record reused for every row, and fields handed to `build_row`
    // borrowed: a row costs the allocations of its own strings and no more.
    let mut record = csv::StringRecord::new();
    let rows = std::iter::from_fn(move || {
        let row = match reader.read_record(&mut record) {
            Ok(false) => return None,
            Ok(true) => {
                let line = record.position().map(|p| p.line()).unwrap_or(0);
                if record.len() != columns.len() {
                    Err(RowError {
                        file: name.clone(),
                        line,
                        reason: format!(
                            "expected {} fields as in the header, found {}",
                            columns.len(),
                            record.len()
                        ),
                    })
                } else {
                    let fields = columns.iter().map(String::as_str).zip(record.iter());
                    build_row(line, fields).map_err(|reason| RowError {
                        file: name.clone(),
                        line,
                        reason,
                    })
                }
            }
            Err(e) => Err(RowError {
                file: name.clone(),
                line: e.position().map(|p| p.line()).unwrap_or(0),
                reason: format!("unreadable CSV record: {e}"),
            }),
        };
        Some(row)
    });
    Ok(Box::new(rows))
}

fn json_rows(
    name: String,
    reader: impl BufRead + Send + 'static,
) -> impl Iterator<Item = Result<InventoryRow, RowError>> + Send {
    reader.lines().enumerate().filter_map(move |(i, line)| {
        let line_no = i as u64 + 1;
        let err = |reason: String| RowError {
            file: name.clone(),
            line: line_no,
            reason,
        };
        let text = match line {
            Ok(t) => t,
            Err(e) => return Some(Err(err(format!("unreadable line: {e}")))),
        };
        if text.trim().is_empty() {
            return None;
        }
        // Fields borrowed from the line where JSON allows (no escapes):
        // a `serde_json::Value` map per row cost most of a run's CPU.
        let object: JsonRow = match serde_json::from_str(&text) {
            Ok(o) => o,
            Err(e) => return Some(Err(err(format!("not a JSON object: {e}")))),
        };
        let fields = object.0.iter().map(|(k, v)| (k.as_ref(), v.as_ref()));
        Some(build_row(line_no, fields).map_err(err))
    })
}

/// One JSON Lines row: (lower-case name, value as text) pairs, nulls left
/// out, numbers and booleans as written, nested values as JSON text.
struct JsonRow<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

/// A JSON value as text, borrowed when the input allows.
struct JsonText<'a>(Option<Cow<'a, str>>);

impl<'de> Deserialize<'de> for JsonRow<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RowVisitor;
        impl<'de> Visitor<'de> for RowVisitor {
            type Value = JsonRow<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::with_capacity(8);
                while let Some(JsonText(key)) = map.next_key::<JsonText>()? {
                    let JsonText(value) = map.next_value::<JsonText>()?;
                    let (Some(mut key), Some(value)) = (key, value) else {
                        continue;
                    };
                    if key.bytes().any(|b| b.is_ascii_uppercase()) {
                        key = Cow::Owned(key.to_ascii_lowercase());
                    }
                    // Later duplicates win, as with a map.
                    fields.retain(|(k, _): &(Cow<str>, Cow<str>)| *k != key);
                    fields.push((key, value));
                }
                Ok(JsonRow(fields))
            }
        }
        d.deserialize_map(RowVisitor)
    }
}

impl<'de> Deserialize<'de> for JsonText<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = JsonText<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(JsonText(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(JsonText(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(JsonText(Some(Cow::Owned(v))))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(JsonText(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(JsonText(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(JsonText(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(JsonText(Some(Cow::Owned(
                    serde_json::Value::from(v).to_string(),
                ))))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(JsonText(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(JsonText(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                let v = serde_json::Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                Ok(JsonText(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let v = serde_json::Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(JsonText(Some(Cow::Owned(v.to_string()))))
            }
        }
        d.deserialize_any(TextVisitor)
    }
}

/// Builds a row from (lower-case name, value) pairs.
fn build_row<'a>(
    line: u64,
    fields: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<InventoryRow, String> {
    let mut row = InventoryRow {
        line,
        ..Default::default()
    };
    let some = |v: &str| (!v.is_empty()).then(|| v.to_string());
    for (key, value) in fields {
        let value = value.trim();
        match key {
            "saas" => row.saas = value.to_string(),
            "user_id" => row.user_id = value.to_string(),
            "email" => row.email = value.to_string(),
            "external_id" => row.external_id = some(value),
            "status" => row.status = value.to_ascii_lowercase(),
            "last_login" => row.last_login = some(value),
            _ => {
                debug_assert!(!KNOWN_FIELDS.contains(&key));
                row.attributes.insert(key.to_string(), value.to_string());
            }
        }
    }
    if row.saas.is_empty() {
        return Err("missing saas".into());
    }
    if row.user_id.is_empty() {
        return Err("missing user_id".into());
    }
    if !is_email(&row.email) {
        return Err(if row.email.is_empty() {
            "missing email".into()
        } else {
            format!("`{}` is not an e-mail address", row.email)
        });
    }
    if row.status.is_empty() {
        return Err("missing status".into());
    }
    Ok(row)
}

/// A deliberately loose check: one `@`, something on both sides, a dot in
/// the domain, no spaces. Vendors are the judge of the rest.
fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !s.chars().any(char::is_whitespace)
}

/// Parses rows from JSON Lines text (tests).
#[cfg(test)]
fn parse_jsonl(text: &str) -> Vec<Result<InventoryRow, RowError>> {
    json_rows("inv.jsonl".into(), std::io::Cursor::new(text.to_string())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        (dir, path)
    }

    #[test]
    fn csv_rows_stream_with_free_attributes_and_line_numbers() {
        let (_d, path) = write(
            "inv.csv",
            "saas,user_id,email,external_id,status,last_login,department\n\
             lever,u-1,ana@example.com,,active,2026-11-01,eng\n\
             lever,u-2,not-an-email,,active,,eng\n\
             lever,u-3,bo@example.com,ext-3,Deactivated,,sales\n\
             lever,u-4,cy@example.com\n",
        );
        let rows: Vec<_> = open(&path, Format::from_path(&path)).unwrap().collect();
        assert_eq!(rows.len(), 4);
        let first = rows[0].as_ref().unwrap();
        assert_eq!(first.line, 2);
        assert_eq!(first.field("department"), Some("eng"));
        assert_eq!(first.external_id, None);
        let bad = rows[1].as_ref().unwrap_err();
        assert_eq!(bad.line, 3);
        assert!(bad.to_string().contains("inv.csv:3"), "{bad}");
        assert!(bad.reason.contains("not-an-email"));
        let third = rows[2].as_ref().unwrap();
        assert_eq!(third.status, "deactivated");
        assert_eq!(third.external_id.as_deref(), Some("ext-3"));
        assert_eq!(rows[3].as_ref().unwrap_err().line, 5);
    }

    #[test]
    fn a_csv_without_a_required_column_fails_to_open() {
        let (_d, path) = write("inv.csv", "saas,user_id,status\nlever,u-1,active\n");
        let err = open(&path, Format::Csv).err().unwrap().to_string();
        assert!(err.contains("`email`"), "{err}");
    }

    #[test]
    fn an_empty_csv_file_is_said_to_be_empty_not_to_lack_a_column() {
        let (_d, path) = write("inv.csv", "");
        let err = open(&path, Format::Csv).err().unwrap().to_string();
        assert!(err.contains("the file is empty"), "{err}");
    }

    #[test]
    fn json_lines_rows_with_errors_and_blank_lines() {
        let rows = parse_jsonl(
            "{\"saas\":\"lever\",\"user_id\":\"u-1\",\"email\":\"a@x.io\",\"status\":\"active\",\"seats\":3}\n\
             \n\
             {\"saas\":\"lever\",\"user_id\":\"u-2\"\n\
             {\"saas\":\"lever\",\"email\":\"b@x.io\",\"status\":\"active\"}\n",
        );
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].as_ref().unwrap().field("seats"), Some("3"));
        assert_eq!(rows[1].as_ref().unwrap_err().line, 3);
        let missing = rows[2].as_ref().unwrap_err();
        assert_eq!(missing.line, 4);
        assert_eq!(missing.reason, "missing user_id");
    }

    #[test]
    fn emails_are_checked_loosely() {
        assert!(is_email("a.b+c@example.co.uk"));
        assert!(!is_email("a@b"));
        assert!(!is_email("a b@example.com"));
        assert!(!is_email("@example.com"));
    }

    proptest::proptest! {
        /// Bad input never stops the scheduler: any JSON Lines text yields
        /// rows or errors naming their line, never a panic.
        #[test]
        fn any_json_lines_text_yields_rows_or_line_errors(text in "\\PC{0,400}") {
            for row in parse_jsonl(&text) {
                if let Err(e) = row {
                    proptest::prop_assert!(e.line >= 1);
                }
            }
        }

        /// Any CSV body under a valid header yields rows or errors naming
        /// their line.
        #[test]
        fn any_csv_body_yields_rows_or_line_errors(body in "[a-z0-9@.,\"\n ]{0,300}") {
            let (_dir, path) = write("inv.csv", &format!("saas,user_id,email,status\n{body}"));
            for row in open(&path, Format::Csv).unwrap() {
                if let Err(e) = row {
                    proptest::prop_assert!(e.line >= 1, "{e:?}");
                }
            }
        }
    }
}
