//! The `[inventory]` table: how the Redis inventory is kept and imported.
//!
//! ```toml
//! [inventory]
//! sync_key = "email"              # or "external_id"
//! preference = "create_and_update" # or "create_only", "update_only"
//! stale_after_days = 90           # the seats report's "no login since"
//! sor_missing = "keep"            # or "inactive", "removed": what a complete
//!                                 # system-of-record load does to records it
//!                                 # did not see (per source: `missing`)
//! max_marked_share = 0.5          # the most of an app's records one import
//!                                 # or load may mark gone or missing
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use url::Url;

/// `inventory.max_marked_share` unless configured.
pub const DEFAULT_MAX_MARKED_SHARE: f64 = 0.5;

/// Which field joins a vendor's (or a system of record's) user to an
/// inventory record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncKey {
    /// The e-mail, lower-cased (case-insensitive).
    #[default]
    Email,
    /// The user's id at the vendor.
    ExternalId,
}

impl SyncKey {
    /// Parses `email` or `external_id`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "email" => Some(Self::Email),
            "external_id" => Some(Self::ExternalId),
            _ => None,
        }
    }

    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::ExternalId => "external_id",
        }
    }
}

/// What an import may do to the inventory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preference {
    /// Create new users and update changed ones.
    #[default]
    CreateAndUpdate,
    /// Create new users; changed ones are refused (left as they are).
    CreateOnly,
    /// Update known users; new ones are refused (not created).
    UpdateOnly,
}

impl Preference {
    /// Parses `create_and_update`, `create_only` or `update_only`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "create_and_update" => Some(Self::CreateAndUpdate),
            "create_only" => Some(Self::CreateOnly),
            "update_only" => Some(Self::UpdateOnly),
            _ => None,
        }
    }

    /// The configuration spelling (also what the upsert script reads).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreateAndUpdate => "create_and_update",
            Self::CreateOnly => "create_only",
            Self::UpdateOnly => "update_only",
        }
    }
}

/// What a complete system-of-record load (`inventory load`, `inventory
/// sync`) does to the records of its source that it did not see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SorMissing {
    /// Count them, change nothing (the source may list only a part).
    #[default]
    Keep,
    /// Set their `status` to `inactive`.
    Inactive,
    /// Set their `status` to `removed`.
    Removed,
}

impl SorMissing {
    /// Parses `keep`, `inactive` or `removed`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "keep" => Some(Self::Keep),
            "inactive" => Some(Self::Inactive),
            "removed" => Some(Self::Removed),
            _ => None,
        }
    }

    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Keep => "keep",
            Self::Inactive => "inactive",
            Self::Removed => "removed",
        }
    }

    /// The `status` a missing record gets; `None` for `keep`.
    pub fn status(self) -> Option<&'static str> {
        match self {
            Self::Keep => None,
            Self::Inactive => Some("inactive"),
            Self::Removed => Some("removed"),
        }
    }
}

/// The `[inventory]` table as written.
#[allow(missing_docs)]
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct RawInventory {
    pub sync_key: Option<String>,
    pub preference: Option<String>,
    pub stale_after_days: Option<u32>,
    pub sor_missing: Option<String>,
    pub max_marked_share: Option<f64>,
    pub sources: BTreeMap<String, RawHttpSource>,
    pub imports: BTreeMap<String, RawImportSchedule>,
}

/// An `[inventory.imports.<name>]` table as written.
#[allow(missing_docs)]
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(default)]
pub struct RawImportSchedule {
    pub saas: String,
    pub schedule: String,
    pub timezone: Option<String>,
}

/// A scheduled import (run by `serve`), validated.
#[derive(Debug, Clone)]
pub struct ImportSchedule {
    /// Its name.
    pub name: String,
    /// The SaaS app imported.
    pub saas: String,
    /// When.
    pub schedule: super::workflow::Schedule,
}

/// An `[inventory.sources.<name>]` table as written.
#[allow(missing_docs)]
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(default)]
pub struct RawHttpSource {
    pub url: String,
    pub credential: String,
    pub saas: Vec<String>,
    pub paging: Option<String>,
    pub items: Option<String>,
    pub next: Option<String>,
    pub cursor_param: Option<String>,
    pub offset_param: Option<String>,
    pub page_size_param: Option<String>,
    pub page_size: Option<u32>,
    pub max_attempts: Option<u32>,
    pub fields: BTreeMap<String, String>,
    pub write_back: Option<RawWriteBack>,
    pub missing: Option<String>,
}

/// A source's `write_back` table as written.
#[allow(missing_docs)]
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(default)]
pub struct RawWriteBack {
    pub method: Option<String>,
    pub url: String,
    pub body: Option<String>,
}

/// How an HTTP source pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Paging {
    /// The next page's URL is at `next` (a JSON pointer in the body), or in
    /// the `Link: <…>; rel="next"` header when `next` is not set.
    NextLink {
        /// JSON pointer to the next URL.
        pointer: Option<String>,
    },
    /// The body's `next` pointer holds a cursor sent back as `param`.
    Cursor {
        /// JSON pointer to the cursor.
        pointer: String,
        /// Query parameter.
        param: String,
    },
    /// `param` counts items from 0; a page shorter than `size` is the last.
    Offset {
        /// Query parameter.
        param: String,
    },
}

/// Where a deactivation is written back to an HTTP system of record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteBackSettings {
    /// `PATCH` or `POST`.
    pub method: String,
    /// URL template: `{user_id}`, `{email}`, `{external_id}` are replaced
    /// (percent-encoded).
    pub url: String,
    /// JSON body template (same placeholders, JSON-escaped).
    pub body: String,
}

/// An HTTP system-of-record source, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSourceSettings {
    /// Its name (the `sor_source` of the records it wrote).
    pub name: String,
    /// The first page's URL.
    pub url: Url,
    /// The bearer token's name in the credential store.
    pub credential: String,
    /// The SaaS apps whose inventory it feeds.
    pub saas: Vec<String>,
    /// Paging.
    pub paging: Paging,
    /// JSON pointer to the users array ("" = the body is the array).
    pub items: String,
    /// `page_size` query parameter and value, if any.
    pub page_size: Option<(String, u32)>,
    /// Attempts per page (5xx, 429, transport errors).
    pub max_attempts: u32,
    /// Inventory field → JSON pointer in a user object.
    pub fields: BTreeMap<String, String>,
    /// Where deactivations are written back; `None`: read-only.
    pub write_back: Option<WriteBackSettings>,
    /// What a complete sync does to this source's records it did not see;
    /// `None`: `inventory.sor_missing`.
    pub missing: Option<SorMissing>,
}

/// The inventory's settings, validated.
#[derive(Debug, Clone)]
pub struct InventorySettings {
    /// How users are joined to records.
    pub sync_key: SyncKey,
    /// What imports may do.
    pub preference: Preference,
    /// A last login older than this many days makes a seat stale.
    pub stale_after_days: u32,
    /// What a complete system-of-record load does to records it did not see.
    pub sor_missing: SorMissing,
    /// The largest share of an app's records one import or load may mark
    /// gone or missing; above it nothing is marked (the count is still
    /// reported), as a listing cut short is likelier than half the
    /// company leaving at once.
    pub max_marked_share: f64,
    /// HTTP systems of record, by name.
    pub sources: BTreeMap<String, HttpSourceSettings>,
    /// Scheduled imports, by name.
    pub imports: BTreeMap<String, ImportSchedule>,
}

impl Default for InventorySettings {
    fn default() -> Self {
        Self {
            sync_key: SyncKey::Email,
            preference: Preference::CreateAndUpdate,
            stale_after_days: 90,
            sor_missing: SorMissing::Keep,
            max_marked_share: DEFAULT_MAX_MARKED_SHARE,
            sources: BTreeMap::new(),
            imports: BTreeMap::new(),
        }
    }
}

pub(crate) fn validate(
    raw: RawInventory,
    apps: &[&String],
    bad: &mut impl FnMut(String, String),
) -> InventorySettings {
    let mut settings = InventorySettings::default();
    if let Some(text) = raw.sync_key {
        match SyncKey::parse(&text) {
            Some(k) => settings.sync_key = k,
            None => bad(
                "inventory.sync_key".into(),
                format!("`{text}` is not `email` or `external_id`"),
            ),
        }
    }
    if let Some(text) = raw.preference {
        match Preference::parse(&text) {
            Some(p) => settings.preference = p,
            None => bad(
                "inventory.preference".into(),
                format!("`{text}` is not `create_and_update`, `create_only` or `update_only`"),
            ),
        }
    }
    if let Some(days) = raw.stale_after_days {
        if days == 0 {
            bad(
                "inventory.stale_after_days".into(),
                "must be at least 1".into(),
            );
        } else {
            settings.stale_after_days = days;
        }
    }
    if let Some(text) = raw.sor_missing {
        match SorMissing::parse(&text) {
            Some(m) => settings.sor_missing = m,
            None => bad(
                "inventory.sor_missing".into(),
                format!("`{text}` is not `keep`, `inactive` or `removed`"),
            ),
        }
    }
    if let Some(share) = raw.max_marked_share {
        if share > 0.0 && share <= 1.0 {
            settings.max_marked_share = share;
        } else {
            bad(
                "inventory.max_marked_share".into(),
                format!("{share} is not above 0 and at most 1 (1: no limit)"),
            );
        }
    }
    for (name, import) in raw.imports {
        if !apps.iter().any(|a| **a == import.saas) {
            bad(
                format!("inventory.imports.{name}.saas"),
                format!("`{}` is not a configured SaaS app", import.saas),
            );
            continue;
        }
        let timezone = import.timezone.as_deref().unwrap_or("UTC");
        match super::workflow::Schedule::parse(&import.schedule, timezone) {
            Ok(schedule) => {
                settings.imports.insert(
                    name.clone(),
                    ImportSchedule {
                        name,
                        saas: import.saas,
                        schedule,
                    },
                );
            }
            Err(reason) => bad(format!("inventory.imports.{name}.schedule"), reason),
        }
    }
    for (name, source) in raw.sources {
        if let Some(s) = validate_source(&name, source, apps, bad) {
            settings.sources.insert(name, s);
        }
    }
    settings
}

fn validate_source(
    name: &str,
    raw: RawHttpSource,
    apps: &[&String],
    bad: &mut impl FnMut(String, String),
) -> Option<HttpSourceSettings> {
    let key = |k: &str| format!("inventory.sources.{name}.{k}");
    let mut ok = true;
    let url = match Url::parse(&raw.url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
        _ => {
            bad(key("url"), "must be an http(s) URL".into());
            None
        }
    };
    if raw.credential.trim().is_empty() {
        bad(
            key("credential"),
            "must name the bearer token in the credential store".into(),
        );
        ok = false;
    }
    if raw.saas.is_empty() {
        bad(
            key("saas"),
            "must list the SaaS apps this source feeds".into(),
        );
        ok = false;
    }
    for app in &raw.saas {
        if !apps.contains(&app) {
            bad(key("saas"), format!("`{app}` is not a configured SaaS app"));
            ok = false;
        }
    }
    let pointer_ok = |p: &str| p.is_empty() || p.starts_with('/');
    let paging = match raw.paging.as_deref().unwrap_or("next_link") {
        "next_link" => Some(Paging::NextLink {
            pointer: raw.next.clone(),
        }),
        "cursor" => match raw.next.clone() {
            Some(pointer) => Some(Paging::Cursor {
                pointer,
                param: raw.cursor_param.clone().unwrap_or_else(|| "cursor".into()),
            }),
            None => {
                bad(
                    key("next"),
                    "cursor paging needs the cursor's JSON pointer".into(),
                );
                None
            }
        },
        "offset" => {
            if raw.page_size.is_none() {
                bad(key("page_size"), "offset paging needs a page size".into());
                ok = false;
            }
            Some(Paging::Offset {
                param: raw.offset_param.clone().unwrap_or_else(|| "offset".into()),
            })
        }
        other => {
            bad(
                key("paging"),
                format!("`{other}` is not `next_link`, `cursor` or `offset`"),
            );
            None
        }
    };
    if raw.next.as_deref().is_some_and(|p| !pointer_ok(p)) {
        bad(key("next"), "must be a JSON pointer (`/links/next`)".into());
        ok = false;
    }
    let items = raw.items.unwrap_or_default();
    if !pointer_ok(&items) {
        bad(
            key("items"),
            "must be a JSON pointer (`/data`) or empty".into(),
        );
        ok = false;
    }
    if !raw.fields.contains_key("email") && !raw.fields.contains_key("external_id") {
        bad(key("fields"), "must map `email` or `external_id`".into());
        ok = false;
    }
    for (field, pointer) in &raw.fields {
        if !pointer_ok(pointer) || pointer.is_empty() {
            bad(
                key(&format!("fields.{field}")),
                "must be a JSON pointer".into(),
            );
            ok = false;
        }
    }
    let write_back = match raw.write_back {
        None => None,
        Some(w) => {
            let method = w.method.unwrap_or_else(|| "PATCH".into()).to_uppercase();
            if !matches!(method.as_str(), "PATCH" | "POST") {
                bad(key("write_back.method"), "must be PATCH or POST".into());
                ok = false;
            }
            let probe = w
                .url
                .replace("{user_id}", "x")
                .replace("{email}", "x")
                .replace("{external_id}", "x");
            if !matches!(Url::parse(&probe), Ok(u) if matches!(u.scheme(), "http" | "https")) {
                bad(
                    key("write_back.url"),
                    "must be an http(s) URL template".into(),
                );
                ok = false;
            }
            Some(WriteBackSettings {
                method,
                url: w.url,
                body: w
                    .body
                    .unwrap_or_else(|| r#"{"status":"deactivated"}"#.into()),
            })
        }
    };
    let missing = match raw.missing.as_deref().map(SorMissing::parse) {
        None => None,
        Some(Some(m)) => Some(m),
        Some(None) => {
            bad(
                key("missing"),
                format!(
                    "`{}` is not `keep`, `inactive` or `removed`",
                    raw.missing.as_deref().unwrap_or_default()
                ),
            );
            ok = false;
            None
        }
    };
    let (url, paging) = (url?, paging?);
    ok.then(|| HttpSourceSettings {
        name: name.to_owned(),
        url,
        credential: raw.credential,
        saas: raw.saas,
        paging,
        items,
        page_size: raw
            .page_size
            .map(|n| (raw.page_size_param.unwrap_or_else(|| "limit".into()), n)),
        max_attempts: raw.max_attempts.unwrap_or(5).max(1),
        fields: raw.fields,
        write_back,
        missing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_preferences_are_named_with_their_path() {
        let mut problems = Vec::new();
        let raw = RawInventory {
            sync_key: Some("phone".into()),
            preference: Some("upsert".into()),
            stale_after_days: Some(0),
            max_marked_share: Some(1.5),
            ..Default::default()
        };
        validate(raw, &[], &mut |k, _| problems.push(k));
        assert_eq!(
            problems,
            [
                "inventory.sync_key",
                "inventory.preference",
                "inventory.stale_after_days",
                "inventory.max_marked_share"
            ]
        );
    }

    #[test]
    fn an_http_source_without_a_key_field_or_known_app_is_refused() {
        let mut problems = Vec::new();
        let mut raw = RawInventory::default();
        raw.sources.insert(
            "hr".into(),
            RawHttpSource {
                url: "https://hr.example.com/users".into(),
                credential: "hr".into(),
                saas: vec!["nope".into()],
                paging: Some("cursor".into()),
                ..Default::default()
            },
        );
        let lever = "lever".to_string();
        let s = validate(raw, &[&lever], &mut |k, _| problems.push(k));
        assert!(s.sources.is_empty());
        assert_eq!(
            problems,
            [
                "inventory.sources.hr.saas",
                "inventory.sources.hr.next",
                "inventory.sources.hr.fields"
            ]
        );
    }

    #[test]
    fn scheduled_imports_name_a_known_app_and_a_valid_schedule() {
        let mut problems = Vec::new();
        let mut raw = RawInventory::default();
        for (name, saas, schedule) in [
            ("ok", "lever", "daily"),
            ("bad_app", "nope", "daily"),
            ("bad_cron", "lever", "every now and then"),
        ] {
            raw.imports.insert(
                name.into(),
                RawImportSchedule {
                    saas: saas.into(),
                    schedule: schedule.into(),
                    timezone: None,
                },
            );
        }
        let lever = "lever".to_string();
        let s = validate(raw, &[&lever], &mut |k, _| problems.push(k));
        assert_eq!(s.imports.keys().collect::<Vec<_>>(), ["ok"]);
        assert_eq!(
            problems,
            [
                "inventory.imports.bad_app.saas",
                "inventory.imports.bad_cron.schedule"
            ]
        );
    }

    #[test]
    fn defaults_are_email_create_and_update_and_90_days() {
        let s = validate(RawInventory::default(), &[], &mut |k, r| panic!("{k}: {r}"));
        let d = InventorySettings::default();
        assert_eq!(
            (s.sync_key, s.preference, s.stale_after_days),
            (d.sync_key, d.preference, d.stale_after_days)
        );
    }
}
