//! Writing a deactivation back to the user's system of record.
//!
//! When a job deactivates a user (`deactivate_missing`: the vendor does not
//! have them, or has them inactive), the worker looks the user up in the
//! Redis inventory (by the sync key) and writes the change back where the
//! record came from:
//!
//! - a record the inventory holds itself (loaded from a file): its
//!   `status` becomes `deactivated` in Redis;
//! - a record from an HTTP source with a `write_back` table: a `PATCH` or
//!   `POST` to the source, with an `Idempotency-Key` of run, app and user;
//! - anything else (a read-only source, a user the inventory lacks): only
//!   the `user_deactivated` event the ledger writes anyway.
//!
//! Once per user and run: a marker (`writeback:<run>:<saas>:<user>`) is set
//! with the run's `written_back` counter in one script after a success, and
//! a redelivered job finding it does nothing. A failure is returned as a
//! connector error, so the job goes through the retry queues like a failed
//! vendor call. A worker killed between the request and the marker sends
//! the request again on redelivery, with the same idempotency key.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use redis::{AsyncCommands, Script};
use rolecall_common::config::{Settings, SyncKey, WriteBackSettings};
use rolecall_common::credentials::Vault;
use rolecall_common::inventory::{InventoryStore, email_key};
use rolecall_common::messages::JobV1;
use rolecall_common::{Names, RedisConnection};
use secrecy::{ExposeSecret, SecretString};

use crate::error::ConnectorError;

/// Markers outlive any run.
const MARKER_TTL_S: u64 = 30 * 24 * 3600;

/// KEYS: marker, run. Sets the marker and counts it once.
static DONE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  redis.call('HINCRBY', KEYS[2], 'written_back', 1)
  return 1
end
return 0
",
    )
});

struct Target {
    name: String,
    settings: WriteBackSettings,
    /// The vault credential of the bearer token.
    credential: String,
    /// The token last read.
    token: std::sync::Mutex<SecretString>,
}

/// Where deactivations go back to.
pub struct WriteBack {
    names: Names,
    sync_key: SyncKey,
    targets: HashMap<String, Target>,
    vault: Vault,
    http: reqwest::Client,
}

/// What a write-back did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Already written back in this run.
    Already,
    /// The Redis inventory's record was updated.
    Inventory,
    /// The HTTP source was told.
    Http,
    /// Nothing writable: the event is all.
    EventOnly,
}

impl WriteBack {
    /// Reads the bearer token of every source that takes write-backs. A
    /// token is read again when the source refuses it (401, 403), as a
    /// vendor credential is: a rotated one is used without a restart.
    pub async fn build(settings: &Settings, vault: &Vault) -> Result<Self, String> {
        let mut targets = HashMap::new();
        for (name, source) in &settings.inventory.sources {
            let Some(write_back) = &source.write_back else {
                continue;
            };
            let token = vault
                .get(&source.credential)
                .await
                .map_err(|e| format!("inventory.sources.{name}.credential: {e}"))?;
            targets.insert(
                name.clone(),
                Target {
                    name: name.clone(),
                    settings: write_back.clone(),
                    credential: source.credential.clone(),
                    token: std::sync::Mutex::new(token),
                },
            );
        }
        Ok(Self {
            names: Names::new(&settings.namespace),
            sync_key: settings.inventory.sync_key,
            targets,
            vault: vault.clone(),
            http: crate::vendor::http_client(),
        })
    }

    fn marker(&self, job: &JobV1) -> String {
        format!(
            "{}writeback:{}:{}:{}",
            self.names.ledger_prefix(),
            job.run_id,
            job.saas,
            job.user.id
        )
    }

    /// Writes `job`'s deactivation back, once per run and user.
    pub async fn deactivated(
        &self,
        conn: &RedisConnection,
        job: &JobV1,
    ) -> Result<Written, ConnectorError> {
        let redis_error = |e: redis::RedisError| ConnectorError::LimiterUnavailable(e.to_string());
        let marker = self.marker(job);
        let mut c = conn.clone();
        let seen: bool = c.exists(&marker).await.map_err(redis_error)?;
        if seen {
            return Ok(Written::Already);
        }
        let key = match self.sync_key {
            SyncKey::Email => email_key(&job.user.email),
            SyncKey::ExternalId => job.user.external_id.clone().filter(|k| !k.is_empty()),
        };
        let Some(key) = key else {
            return Ok(Written::EventOnly);
        };
        let store = InventoryStore::new(conn.clone(), &self.names);
        let record_key = store.record_key(&job.saas, &key);
        let (sor, source): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(&record_key)
            .arg("sor")
            .arg("sor_source")
            .query_async(&mut c)
            .await
            .map_err(redis_error)?;
        let written = match (sor.as_deref(), source.as_deref().filter(|s| !s.is_empty())) {
            (Some("1"), None) => {
                let now = chrono::Utc::now().to_rfc3339();
                let _: () = c
                    .hset_multiple(
                        &record_key,
                        &[
                            ("status", "deactivated"),
                            ("deactivated_at", now.as_str()),
                            ("deactivated_run", job.run_id.as_str()),
                        ],
                    )
                    .await
                    .map_err(redis_error)?;
                Written::Inventory
            }
            (Some("1"), Some(name)) => match self.targets.get(name) {
                Some(target) => {
                    self.send(target, job).await?;
                    Written::Http
                }
                None => return Ok(Written::EventOnly),
            },
            _ => return Ok(Written::EventOnly),
        };
        let _: i64 = DONE
            .key(&marker)
            .key(self.names.run_key(&job.run_id))
            .arg(written_name(written))
            .arg(MARKER_TTL_S)
            .invoke_async(&mut c)
            .await
            .map_err(redis_error)?;
        Ok(written)
    }

    /// Sends the write-back; if the source refuses the token and the vault
    /// now holds another one (rotated), once more with that one.
    async fn send(&self, target: &Target, job: &JobV1) -> Result<(), ConnectorError> {
        let token = target.token.lock().expect("not poisoned").clone();
        match self.send_with(target, job, &token).await {
            Err(ConnectorError::Rejected { status, detail }) if matches!(status, 401 | 403) => {
                match self.vault.get(&target.credential).await {
                    Ok(new) if new.expose_secret() != token.expose_secret() => {
                        tracing::info!(
                            source = target.name,
                            "The system of record refused its token; using the one read again from its credential."
                        );
                        *target.token.lock().expect("not poisoned") = new.clone();
                        self.send_with(target, job, &new).await
                    }
                    Ok(_) => Err(ConnectorError::Rejected { status, detail }),
                    Err(e) => {
                        tracing::warn!(source = target.name, error = %e, "Could not read the write-back token again.");
                        Err(ConnectorError::Rejected { status, detail })
                    }
                }
            }
            other => other,
        }
    }

    async fn send_with(
        &self,
        target: &Target,
        job: &JobV1,
        token: &SecretString,
    ) -> Result<(), ConnectorError> {
        let external = job.user.external_id.clone().unwrap_or_default();
        let url = fill(&target.settings.url, job, &external, |v| {
            url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
        });
        let body = fill(&target.settings.body, job, &external, |v| {
            let quoted = serde_json::Value::String(v.to_owned()).to_string();
            quoted[1..quoted.len() - 1].to_owned()
        });
        let method = reqwest::Method::from_bytes(target.settings.method.as_bytes())
            .unwrap_or(reqwest::Method::PATCH);
        let url = url::Url::parse(&url)
            .map_err(|_| ConnectorError::Decode("the write-back URL does not parse".into()))?;
        let reply = self
            .http
            .request(method, url)
            .bearer_auth(token.expose_secret())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(
                "Idempotency-Key",
                format!("{}:{}:{}", job.run_id, job.saas, job.user.id),
            )
            .body(body)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| ConnectorError::Transport(format!("write-back: {}", e.without_url())))?;
        let status = reply.status();
        if status.is_success() {
            return Ok(());
        }
        let detail = format!(": the system of record answered the write-back with {status}");
        Err(if status.is_server_error() || status.as_u16() == 429 {
            ConnectorError::Upstream {
                status: status.as_u16(),
                detail,
            }
        } else {
            ConnectorError::Rejected {
                status: status.as_u16(),
                detail,
            }
        })
    }
}

fn written_name(w: Written) -> &'static str {
    match w {
        Written::Already => "already",
        Written::Inventory => "inventory",
        Written::Http => "http",
        Written::EventOnly => "event",
    }
}

/// Replaces `{user_id}`, `{email}` and `{external_id}`, each value escaped.
fn fill(template: &str, job: &JobV1, external: &str, escape: impl Fn(&str) -> String) -> String {
    template
        .replace("{user_id}", &escape(&job.user.id))
        .replace("{email}", &escape(&job.user.email))
        .replace("{external_id}", &escape(external))
}
