//! What a connector's list endpoint yields: every user the vendor has, a
//! page at a time, for the inventory import (`rolecall-scheduler import`).

/// A user as the vendor's list endpoint reports them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListedUser {
    /// The user's id at the vendor.
    pub vendor_id: String,
    /// E-mail (or login, when the vendor keys users by e-mail), verbatim.
    pub email: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// The vendor's role value, verbatim (Okta's list carries none: its
    /// connector asks for each listed user's roles).
    pub raw_role: Option<String>,
    /// Whether the vendor reports the account as active.
    pub active: bool,
    /// Last login, as the vendor writes it, when the vendor reports it.
    pub last_login: Option<String>,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserPage {
    /// The page's users.
    pub users: Vec<ListedUser>,
    /// The cursor of the next page; `None` on the last page.
    pub next: Option<String>,
}

/// A JSON scalar as text (ids are numbers at some vendors).
pub(crate) fn text(value: Option<&serde_json::Value>) -> Option<String> {
    match value? {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}
