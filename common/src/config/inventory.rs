//! The `[inventory]` table: how the Redis inventory is kept and imported.
//!
//! ```toml
//! [inventory]
//! sync_key = "email"              # or "external_id"
//! preference = "create_and_update" # or "create_only", "update_only"
//! stale_after_days = 90           # the seats report's "no login since"
//! ```

use serde::Deserialize;

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

/// The `[inventory]` table as written.
#[allow(missing_docs)]
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct RawInventory {
    pub sync_key: Option<String>,
    pub preference: Option<String>,
    pub stale_after_days: Option<u32>,
}

/// The inventory's settings, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventorySettings {
    /// How users are joined to records.
    pub sync_key: SyncKey,
    /// What imports may do.
    pub preference: Preference,
    /// A last login older than this many days makes a seat stale.
    pub stale_after_days: u32,
}

impl Default for InventorySettings {
    fn default() -> Self {
        Self {
            sync_key: SyncKey::Email,
            preference: Preference::CreateAndUpdate,
            stale_after_days: 90,
        }
    }
}

pub(crate) fn validate(
    raw: RawInventory,
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
    settings
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
        };
        validate(raw, &mut |k, _| problems.push(k));
        assert_eq!(
            problems,
            [
                "inventory.sync_key",
                "inventory.preference",
                "inventory.stale_after_days"
            ]
        );
    }

    #[test]
    fn defaults_are_email_create_and_update_and_90_days() {
        let s = validate(RawInventory::default(), &mut |k, r| panic!("{k}: {r}"));
        assert_eq!(s, InventorySettings::default());
    }
}
