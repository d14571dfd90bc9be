//! Vendor connectors: one file per vendor, one trait for all.
//!
//! A connector only translates between our types and its vendor's HTTP API.
//! Timeouts, rate limits, retries and metrics are the pipeline's business
//! (see `pipeline.rs`) and wrap every connector the same way.
//!
//! Adding a vendor: a variant in `rolecall_common::config::ConnectorKind`, a
//! file here, and one arm in [`build`] (the `match` is exhaustive, so a
//! variant without a connector does not compile).

mod http_preset;
mod lever;
mod mosyle;
mod okta;
mod scim;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use rolecall_common::config::{ConnectorKind, SaasSettings};
use rolecall_common::credentials::{CredentialError, Vault};
use rolecall_common::messages::{Action, UserRef};
use secrecy::SecretString;

pub use crate::error::ConnectorError;
pub use lever::Lever;

/// A user as the vendor reports them.
#[derive(Debug, Clone, PartialEq)]
pub struct VendorUser {
    /// The user's id at the vendor.
    pub vendor_id: String,
    /// The vendor's role string, verbatim.
    pub raw_role: String,
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
    /// A connector option is missing or invalid.
    #[error("saas.{saas}.options.{key}: {reason}")]
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
    /// The shared HTTP client.
    pub http: reqwest::Client,
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

    /// A string option, if set.
    pub fn option_str(&self, key: &str) -> Result<Option<String>, BuildError> {
        match self.saas.options.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.bad_option(key, "must be a string")),
        }
    }

    /// Fails on options this connector does not know (typos must not pass silently).
    pub fn only_options(&self, known: &[&str]) -> Result<(), BuildError> {
        match self
            .saas
            .options
            .keys()
            .find(|k| !known.contains(&k.as_str()))
        {
            Some(k) => {
                Err(self.bad_option(k, format!("unknown option (known: {})", known.join(", "))))
            }
            None => Ok(()),
        }
    }
}

/// Builds the connector a SaaS app's configuration asks for.
pub async fn build(
    saas: &SaasSettings,
    http: reqwest::Client,
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
        http,
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

/// Reads a JSON body, classifying a non-success status with the vendor's
/// error code when the body carries one at `code_pointer` (a JSON pointer
/// such as `/code`, or a plain field name).
pub(crate) async fn read_json(
    response: reqwest::Response,
    code_field: &str,
) -> Result<serde_json::Value, ConnectorError> {
    let status = response.status();
    let headers = response.headers().clone();
    crate::pipeline::observe_quota(&headers);
    let body = response.bytes().await?;
    if !status.is_success() {
        let code = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                let found = if code_field.starts_with('/') {
                    v.pointer(code_field).cloned()
                } else {
                    v.get(code_field).cloned()
                };
                found.map(|c| match c {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                })
            });
        return Err(ConnectorError::from_status(
            status,
            &headers,
            code.as_deref(),
        ));
    }
    if body.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_slice(&body).map_err(|e| ConnectorError::Decode(e.to_string()))
}
