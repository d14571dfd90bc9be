//! Vendor connectors: one file per vendor, one trait for all.
//!
//! A connector only translates between our types and its vendor's HTTP API.
//! Every request it sends goes through the SaaS app's [`VendorClient`]
//! (`crate::vendor`), which applies the fleet's limit per HTTP request,
//! reads the vendor's quota headers and classifies the response; retries
//! and metrics per job are the pipeline's business (`pipeline.rs`).
//!
//! A verdict needs proof: `NotFound` and an inactive user come only from an
//! affirmative vendor answer. A page cap reached, a partial list or an
//! unreadable page is an error ([`ConnectorError::Inconclusive`] and
//! friends), never "not found", so it can never trigger a deactivation.
//!
//! Adding a vendor: a variant in `rolecall_common::config::ConnectorKind`, a
//! file here, and one arm in [`build`] (the `match` is exhaustive, so a
//! variant without a connector does not compile).

mod http_preset;
mod lever;
mod listing;
mod mosyle;
mod okta;
mod reload;
mod scim;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use rolecall_common::config::{ConnectorKind, SaasSettings};
use rolecall_common::credentials::{CredentialError, Vault};
use rolecall_common::messages::{Action, UserRef};
use secrecy::SecretString;

pub use crate::error::ConnectorError;
pub use crate::vendor::{VendorClient, VendorReply};
pub use lever::Lever;
pub use listing::{ListedUser, UserPage};
pub use reload::Reloadable;

/// A user as the vendor reports them.
#[derive(Debug, Clone, PartialEq)]
pub struct VendorUser {
    /// The user's id at the vendor.
    pub vendor_id: String,
    /// The role the role map is keyed by (one value, e.g. Okta's highest
    /// admin role type).
    pub raw_role: String,
    /// The vendor's own role value(s), verbatim (Okta: every admin role
    /// type, sorted; empty when the user has none).
    pub vendor_roles: Vec<String>,
    /// Whether the vendor reports the user as active.
    pub active: bool,
    /// The vendor's record, kept for audit.
    pub raw: serde_json::Value,
}

/// What a lookup found. A user the vendor does not know is an outcome, not an error.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// The vendor knows the user.
    Found(VendorUser),
    /// The vendor does not know the user.
    NotFound,
}

/// What a change at the vendor did.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionDone {
    /// The user's id at the vendor, when known.
    pub vendor_id: Option<String>,
    /// A short description for the result and the event ("deactivated", …).
    pub detail: String,
}

/// One call to a vendor: a lookup or a change.
#[derive(Debug, Clone, PartialEq)]
pub struct VendorRequest {
    /// What to do.
    pub action: Action,
    /// For whom.
    pub user: UserRef,
    /// Fields for create/update (name, type, …).
    pub attributes: BTreeMap<String, String>,
}

impl VendorRequest {
    /// A role lookup.
    pub fn lookup(user: UserRef) -> Self {
        Self {
            action: Action::LookupRole,
            user,
            attributes: BTreeMap::new(),
        }
    }
}

/// A vendor's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum VendorResponse {
    /// The answer to a lookup.
    Lookup(Lookup),
    /// The answer to a change.
    Done(ActionDone),
}

/// A vendor API that can tell whether a user exists and with which role.
#[async_trait]
pub trait Connector: Send + Sync + 'static {
    /// Looks `user` up at the vendor.
    async fn lookup(&self, user: &UserRef) -> Result<Lookup, ConnectorError>;

    /// Changes something at the vendor. Connectors implement the actions
    /// their vendor supports; the rest are refused as permanent errors.
    async fn act(
        &self,
        action: Action,
        _user: &UserRef,
        _attributes: &BTreeMap<String, String>,
    ) -> Result<ActionDone, ConnectorError> {
        Err(ConnectorError::Unsupported(action.as_str()))
    }

    /// One page of every user the vendor has, from `cursor` (`None`: the
    /// first page). The cursor is opaque to callers: pass back the page's
    /// `next` until it is `None`. Connectors whose vendor documents a list
    /// endpoint implement it; every page request goes through the
    /// [`VendorClient`], so a listing spends the same fleet-wide quota as
    /// lookups.
    async fn list_page(&self, _cursor: Option<&str>) -> Result<UserPage, ConnectorError> {
        Err(ConnectorError::Unsupported("list_users"))
    }
}

/// Dispatches a request to the connector.
pub async fn call(
    connector: &dyn Connector,
    request: &VendorRequest,
) -> Result<VendorResponse, ConnectorError> {
    match request.action {
        Action::LookupRole => connector
            .lookup(&request.user)
            .await
            .map(VendorResponse::Lookup),
        action => connector
            .act(action, &request.user, &request.attributes)
            .await
            .map(VendorResponse::Done),
    }
}

impl VendorUser {
    /// A user whose single role value is both the map key and the vendor's answer.
    pub fn new(vendor_id: String, role: String, active: bool, raw: serde_json::Value) -> Self {
        Self {
            vendor_id,
            vendor_roles: vec![role.clone()],
            raw_role: role,
            active,
            raw,
        }
    }
}

/// Why a connector could not be built: names the key, never the secret.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The credential is missing or unreadable.
    #[error("saas.{saas}.credential: {source}")]
    Credential {
        /// SaaS app.
        saas: String,
        /// Why.
        #[source]
        source: CredentialError,
    },
    /// The credential was found but has the wrong shape.
    #[error("saas.{saas}.credential: the credential `{name}` {reason}")]
    MalformedCredential {
        /// SaaS app.
        saas: String,
        /// Credential name.
        name: String,
        /// What is wrong with it (never its value).
        reason: String,
    },
    /// A connector option is missing or invalid (`key` is empty for the
    /// options table itself).
    #[error("saas.{saas}.options{}{key}: {reason}", if key.is_empty() { "" } else { "." })]
    Option {
        /// SaaS app.
        saas: String,
        /// Option key.
        key: String,
        /// Why.
        reason: String,
    },
}

/// What a connector is built from.
pub struct BuildContext<'a> {
    /// The SaaS app's settings (base URL, options, …).
    pub saas: &'a SaasSettings,
    /// The SaaS app's way to its vendor: every request goes through it.
    pub client: VendorClient,
    /// The resolved credential.
    pub credential: SecretString,
}

impl BuildContext<'_> {
    /// A malformed-credential error for this app.
    pub fn malformed(&self, reason: impl Into<String>) -> BuildError {
        BuildError::MalformedCredential {
            saas: self.saas.name.clone(),
            name: self.saas.credential.clone(),
            reason: reason.into(),
        }
    }

    /// An option error for this app.
    pub fn bad_option(&self, key: &str, reason: impl Into<String>) -> BuildError {
        BuildError::Option {
            saas: self.saas.name.clone(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// The connector's options, parsed by serde into `T` (which should
    /// `deny_unknown_fields`, so a typo names the known options). The
    /// error names the option's path.
    pub fn options<T: serde::de::DeserializeOwned>(&self) -> Result<T, BuildError> {
        let value = serde_json::Value::Object(self.saas.options.clone());
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let key = if path == "." { String::new() } else { path };
            self.bad_option(&key, e.into_inner().to_string())
        })
    }
}

/// Builds the connector a SaaS app's configuration asks for.
pub async fn build(
    saas: &SaasSettings,
    client: &VendorClient,
    vault: &Vault,
) -> Result<Arc<dyn Connector>, BuildError> {
    let credential =
        vault
            .get(&saas.credential)
            .await
            .map_err(|source| BuildError::Credential {
                saas: saas.name.clone(),
                source,
            })?;
    let ctx = BuildContext {
        saas,
        client: client.clone(),
        credential,
    };
    Ok(match saas.connector {
        ConnectorKind::Lever => Arc::new(Lever::from_context(&ctx)?),
        ConnectorKind::Mosyle => Arc::new(mosyle::Mosyle::from_context(&ctx)?),
        ConnectorKind::Scim => Arc::new(scim::Scim::from_context(&ctx)?),
        ConnectorKind::Okta => Arc::new(okta::Okta::from_context(&ctx)?),
        ConnectorKind::Http => Arc::new(http_preset::HttpPreset::from_context(&ctx)?),
    })
}
