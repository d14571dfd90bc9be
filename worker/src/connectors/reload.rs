//! A connector that can be rebuilt with its credential read again.
//!
//! Credentials change under a running fleet: a rotated Kubernetes Secret
//! (a mounted file) or a new Vault value. When the vendor refuses the
//! credential, the breaker's probe rebuilds the connector from the source,
//! so a fixed credential is picked up without a restart.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use rolecall_common::config::SaasSettings;
use rolecall_common::credentials::Vault;
use rolecall_common::messages::{Action, UserRef};

use super::{ActionDone, BuildError, Connector, ConnectorError, Lookup, VendorClient};

/// A connector and what it was built from.
pub struct Reloadable {
    current: RwLock<Arc<dyn Connector>>,
    saas: SaasSettings,
    client: VendorClient,
    vault: Vault,
}

impl Reloadable {
    /// Builds the connector for `saas`.
    pub async fn build(
        saas: &SaasSettings,
        client: &VendorClient,
        vault: &Vault,
    ) -> Result<Self, BuildError> {
        let connector = super::build(saas, client, vault).await?;
        Ok(Self {
            current: RwLock::new(connector),
            saas: saas.clone(),
            client: client.clone(),
            vault: vault.clone(),
        })
    }

    /// Rebuilds the connector with the credential read again from its
    /// source; on failure the current one stays.
    pub async fn reload(&self) -> Result<(), BuildError> {
        let fresh = super::build(&self.saas, &self.client, &self.vault).await?;
        *self.current.write().expect("never poisoned") = fresh;
        Ok(())
    }

    fn current(&self) -> Arc<dyn Connector> {
        self.current.read().expect("never poisoned").clone()
    }
}

#[async_trait]
impl Connector for Reloadable {
    async fn lookup(&self, user: &UserRef) -> Result<Lookup, ConnectorError> {
        self.current().lookup(user).await
    }

    async fn act(
        &self,
        action: Action,
        user: &UserRef,
        attributes: &BTreeMap<String, String>,
    ) -> Result<ActionDone, ConnectorError> {
        self.current().act(action, user, attributes).await
    }

    async fn list_page(&self, cursor: Option<&str>) -> Result<super::UserPage, ConnectorError> {
        self.current().list_page(cursor).await
    }
}
