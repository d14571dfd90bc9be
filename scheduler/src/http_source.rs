//! An HTTP system of record as an inventory source (`rolecall-scheduler
//! inventory sync --source <name>`): pages through its JSON API with a
//! bearer token from the credential store, maps each user object to
//! inventory fields by configuration (`[inventory.sources.<name>]`) and
//! upserts them, a page per script call, into the Redis inventory of every
//! SaaS app the source feeds. Records remember the source (`sor_source`), so
//! the workers know where a deactivation is written back.
//!
//! The token never leaves the request: errors name the URL's path and the
//! status, not the headers; next links to another origin are refused.

use std::time::Duration;

use reqwest::StatusCode;
use rolecall_common::config::{HttpSourceSettings, Paging};
use rolecall_common::credentials::Vault;
use rolecall_common::inventory::InventoryStore;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use url::Url;

use crate::inventory::{InventoryRow, KNOWN_FIELDS};
use crate::sor::{LoadOptions, LoadReport, find_missing, upsert_of};

/// Pages followed at most (a guard against a server that loops).
const MAX_PAGES: u64 = 1_000_000;

/// Why a sync stopped.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The source is not configured.
    #[error("inventory.sources.{0} is not configured")]
    Unknown(String),
    /// The bearer token could not be read.
    #[error("inventory.sources.{name}.credential: {reason}")]
    Credential {
        /// Source.
        name: String,
        /// Why (never the value).
        reason: String,
    },
    /// A page failed for good.
    #[error("inventory.sources.{name}: {url_path}: {reason}")]
    Page {
        /// Source.
        name: String,
        /// The page's path (no query: cursors may be sensitive).
        url_path: String,
        /// Why.
        reason: String,
    },
}

/// One page: its users and the next page's URL.
struct SourcePage {
    users: Vec<Value>,
    next: Option<Url>,
}

/// Pages through a source.
pub struct HttpSource {
    settings: HttpSourceSettings,
    token: SecretString,
    http: reqwest::Client,
}

impl HttpSource {
    /// The source `name`, its token read from `vault`.
    pub async fn open(
        sources: &std::collections::BTreeMap<String, HttpSourceSettings>,
        name: &str,
        vault: &Vault,
    ) -> Result<Self, SourceError> {
        let settings = sources
            .get(name)
            .ok_or_else(|| SourceError::Unknown(name.to_owned()))?
            .clone();
        let token = vault
            .get(&settings.credential)
            .await
            .map_err(|e| SourceError::Credential {
                name: name.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            settings,
            token,
            http: rolecall_worker::vendor::http_client(),
        })
    }

    fn fail(&self, url: &Url, reason: impl Into<String>) -> SourceError {
        SourceError::Page {
            name: self.settings.name.clone(),
            url_path: url.path().to_owned(),
            reason: reason.into(),
        }
    }

    async fn fetch(&self, url: &Url) -> Result<(reqwest::header::HeaderMap, Value), SourceError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = self
                .http
                .get(url.clone())
                .bearer_auth(self.token.expose_secret())
                .header(reqwest::header::ACCEPT, "application/json")
                .timeout(Duration::from_secs(30))
                .send()
                .await;
            let retry = match sent {
                Ok(reply) if reply.status().is_success() => {
                    let headers = reply.headers().clone();
                    let body = reply.json::<Value>().await.map_err(|e| {
                        self.fail(url, format!("unreadable JSON: {}", e.without_url()))
                    })?;
                    return Ok((headers, body));
                }
                Ok(reply)
                    if reply.status() == StatusCode::TOO_MANY_REQUESTS
                        || reply.status().is_server_error() =>
                {
                    format!("status {}", reply.status())
                }
                Ok(reply) => return Err(self.fail(url, format!("status {}", reply.status()))),
                Err(e) => e.without_url().to_string(),
            };
            if attempt >= self.settings.max_attempts {
                return Err(self.fail(url, format!("{retry} after {attempt} attempts")));
            }
            tracing::warn!(source = %self.settings.name, attempt, reason = %retry, "Source page failed; retrying.");
            tokio::time::sleep(Duration::from_millis(200 << attempt.min(6))).await;
        }
    }

    async fn page(&self, url: &Url, offset: u64) -> Result<SourcePage, SourceError> {
        let (headers, body) = self.fetch(url).await?;
        let items = if self.settings.items.is_empty() {
            Some(&body)
        } else {
            body.pointer(&self.settings.items)
        };
        let users = match items {
            Some(Value::Array(users)) => users.clone(),
            _ => return Err(self.fail(url, format!("no users array at `{}`", self.settings.items))),
        };
        let next = match &self.settings.paging {
            Paging::NextLink { pointer: Some(p) } => match body.pointer(p) {
                Some(Value::String(s)) if !s.is_empty() => Some(
                    url.join(s)
                        .map_err(|_| self.fail(url, "the next link is not a URL"))?,
                ),
                _ => None,
            },
            Paging::NextLink { pointer: None } => next_link(&headers, url),
            Paging::Cursor { pointer, param } => match body.pointer(pointer) {
                Some(Value::String(c)) if !c.is_empty() => {
                    Some(with_param(&self.settings.url, param, c))
                }
                Some(Value::Number(n)) => {
                    Some(with_param(&self.settings.url, param, &n.to_string()))
                }
                _ => None,
            },
            // Only an empty page ends an offset walk: a source that caps
            // its pages below `page_size` answers short pages all along,
            // and taking the first for the last would make every user
            // after it missing. The cost is one request per sync.
            Paging::Offset { param } => (!users.is_empty()).then(|| {
                with_param(
                    &self.settings.url,
                    param,
                    &(offset + users.len() as u64).to_string(),
                )
            }),
        };
        if let Some(next) = &next
            && next.origin() != self.settings.url.origin()
        {
            return Err(self.fail(url, "the next link leaves the source's origin"));
        }
        Ok(SourcePage { users, next })
    }

    fn first_url(&self) -> Url {
        let mut url = self.settings.url.clone();
        if let Some((param, size)) = &self.settings.page_size {
            url = with_param(&url, param, &size.to_string());
        }
        url
    }

    /// The inventory row a user object maps to, for one SaaS app.
    pub fn row_of(&self, saas: &str, user: &Value) -> InventoryRow {
        let mut row = InventoryRow {
            saas: saas.to_owned(),
            status: "active".into(),
            ..Default::default()
        };
        for (field, pointer) in &self.settings.fields {
            let Some(value) = user.pointer(pointer).and_then(scalar) else {
                continue;
            };
            match field.as_str() {
                "user_id" => row.user_id = value,
                "email" => row.email = value,
                "external_id" => row.external_id = Some(value),
                "status" => row.status = value,
                "last_login" => row.last_login = Some(value),
                other if !KNOWN_FIELDS.contains(&other) => {
                    row.attributes.insert(other.to_owned(), value);
                }
                _ => {}
            }
        }
        if row.user_id.is_empty() {
            row.user_id = row.email.clone();
        }
        row
    }

    /// What a complete sync does to this source's records it did not see:
    /// the source's own `missing`, else `default`.
    pub fn missing(
        &self,
        default: rolecall_common::config::SorMissing,
    ) -> rolecall_common::config::SorMissing {
        self.settings.missing.unwrap_or(default)
    }

    /// Pages through the source into the inventory. After the last page
    /// (a complete listing), the source's records it did not list are
    /// missing (`options.missing`); a sync that fails on a page returns the
    /// error and marks nobody.
    pub async fn sync(
        &self,
        store: &InventoryStore,
        options: &LoadOptions,
    ) -> Result<LoadReport, anyhow::Error> {
        let mut report = LoadReport::start();
        let (sync_key, preference) = (options.sync_key, options.preference);
        let touch = [("sor_run", report.run_id.clone())];
        let touch: Vec<(&str, &str)> = touch.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let source = format!("http:{}", self.settings.name);
        let mut url = self.first_url();
        let mut offset = 0u64;
        for _ in 0..MAX_PAGES {
            let page = self.page(&url, offset).await?;
            offset += page.users.len() as u64;
            report.listed += page.users.len() as u64;
            for saas in &self.settings.saas {
                let mut batch = Vec::with_capacity(page.users.len());
                for user in &page.users {
                    match upsert_of(&self.row_of(saas, user), sync_key) {
                        Some(mut u) => {
                            u.fields
                                .push(("sor_source".into(), self.settings.name.clone()));
                            batch.push(u);
                        }
                        None => report.skipped += 1,
                    }
                }
                let outcome = store
                    .upsert(saas, &batch, preference, &source, &touch)
                    .await?;
                report.counts.add(&outcome.counts);
            }
            match page.next {
                Some(next) => url = next,
                None => {
                    report.complete = true;
                    // An empty listing is more likely a fault of the
                    // source than a company without users: it marks nobody.
                    if report.listed == 0 {
                        return Ok(report);
                    }
                    for saas in &self.settings.saas {
                        find_missing(store, saas, &self.settings.name, options, &mut report)
                            .await?;
                    }
                    return Ok(report);
                }
            }
        }
        anyhow::bail!(
            "inventory.sources.{}: more than {MAX_PAGES} pages",
            self.settings.name
        )
    }
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `url` with `param` set to `value` (replacing an earlier value).
fn with_param(url: &Url, param: &str, value: &str) -> Url {
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != param)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut out = url.clone();
    out.query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair(param, value);
    out
}

/// The `Link: <…>; rel="next"` target, resolved against `base`.
fn next_link(headers: &reqwest::header::HeaderMap, base: &Url) -> Option<Url> {
    headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find(|l| l.contains("rel=\"next\""))
        .and_then(|l| {
            let target = l.split(';').next()?.trim();
            base.join(target.trim_start_matches('<').trim_end_matches('>'))
                .ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_replaces_the_previous_one_and_keeps_other_parameters() {
        let url = Url::parse("https://hr.example.com/users?limit=50&cursor=a").unwrap();
        let next = with_param(&url, "cursor", "b c");
        assert_eq!(
            next.as_str(),
            "https://hr.example.com/users?limit=50&cursor=b+c"
        );
    }

    #[test]
    fn link_headers_name_the_next_page() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::LINK,
            "</users?page=2>; rel=\"next\", </users?page=9>; rel=\"last\""
                .parse()
                .unwrap(),
        );
        let base = Url::parse("https://hr.example.com/users").unwrap();
        assert_eq!(
            next_link(&headers, &base).unwrap().as_str(),
            "https://hr.example.com/users?page=2"
        );
    }
}
