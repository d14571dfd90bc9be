//! Vendor connectors: one file per vendor, one trait for all.
//!
//! A connector only translates between our types and its vendor's HTTP API.
//! Timeouts, rate limits, retries and metrics are the pipeline's business
//! (see `pipeline.rs`) and wrap every connector the same way.
//!
//! Adding a vendor: a variant in `rolecall_common::config::ConnectorKind`, a
//! file here, and one arm in [`build`] (the `match` is exhaustive, so a
//! variant without a connector does not compile).

mod lever;

use std::sync::Arc;

use async_trait::async_trait;
use rolecall_common::config::{ConnectorKind, SaasSettings};
use rolecall_common::credentials::{CredentialError, Vault};
use rolecall_common::messages::UserRef;

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

/// A vendor API that can tell whether a user exists and with which role.
#[async_trait]
pub trait Connector: Send + Sync + 'static {
    /// Looks `user` up at the vendor.
    async fn lookup(&self, user: &UserRef) -> Result<Lookup, ConnectorError>;
}

/// Why a connector could not be built. Names the SaaS app, never the secret.
#[derive(Debug, thiserror::Error)]
#[error("saas.{saas}.credential: {source}")]
pub struct BuildError {
    saas: String,
    #[source]
    source: CredentialError,
}

/// Builds the connector a SaaS app's configuration asks for.
pub fn build(
    saas: &SaasSettings,
    http: reqwest::Client,
    vault: &Vault,
) -> Result<Arc<dyn Connector>, BuildError> {
    let credential = vault.get(&saas.credential).map_err(|source| BuildError {
        saas: saas.name.clone(),
        source,
    })?;
    Ok(match saas.connector {
        ConnectorKind::Lever => Arc::new(Lever::new(http, saas.base_url.clone(), credential)),
    })
}

/// Reads a JSON body, classifying a non-success status with the vendor's
/// error code when the body carries one under `code_field`.
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
                v.get(code_field)
                    .and_then(|c| c.as_str())
                    .map(str::to_owned)
            });
        return Err(ConnectorError::from_status(
            status,
            &headers,
            code.as_deref(),
        ));
    }
    serde_json::from_slice(&body).map_err(|e| ConnectorError::Decode(e.to_string()))
}
