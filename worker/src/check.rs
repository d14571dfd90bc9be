//! `check-config --connect` for the worker: besides RabbitMQ and Redis, one
//! harmless call per SaaS app proves its credential works: a lookup of a
//! user that cannot exist (a reserved `.invalid` address, RFC 2606), the
//! same kind of call the auth breaker's probe makes. A vendor that answers
//! "not found" (or anything but a refusal) accepted the credential.

use rolecall_common::messages::UserRef;
use rolecall_common::probe::{self, Check};

use crate::Worker;
use crate::connectors::Connector;

/// The user every credential check looks up.
fn nobody() -> UserRef {
    UserRef {
        id: "rolecall-check-config".into(),
        email: "rolecall-check-config@example.invalid".into(),
        external_id: None,
    }
}

impl Worker {
    /// Checks the backends, then each SaaS app's credential with one lookup.
    /// Reports carry the error's kind and status, never the credential.
    pub async fn check_connections(&self) -> Vec<Check> {
        let mut checks = probe::backends(&self.settings, "rolecall-worker check-config").await;
        for app in &self.apps {
            let user = nobody();
            checks.push(
                Check::run(format!("credential of {}", app.settings.name), async {
                    app.connector.lookup(&user).await.map(drop)
                })
                .await,
            );
        }
        checks
    }
}
