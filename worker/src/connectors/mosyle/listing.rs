//! The user listing: page scans and the shared e-mail → user map that
//! answers lookups (see the module docs for why a cache).

use std::collections::HashMap;
use std::sync::Arc;

use futures::FutureExt;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tokio::time::Instant;
use tracing::debug;

use super::wire::{count, email_of, is_ok, status_of, vendor_status};
use super::{
    ConnectorError, Inner, Listing, Lookup, MANAGER_COLUMNS, MAX_PAGES, Mosyle, Page, Product,
    VendorClient,
};

impl Mosyle {
    /// A map that answers lookups: the current one if it is young enough
    /// (and, with `newer_than`, built after that instant), else a rebuilt one.
    pub(super) async fn listing(
        &self,
        newer_than: Option<Instant>,
    ) -> Result<Arc<Listing>, ConnectorError> {
        let refresh = {
            let mut state = self
                .inner
                .cache
                .lock()
                .expect("the cache lock is never poisoned");
            if let Some(current) = &state.current
                && current.built.elapsed() < self.inner.list_cache_ttl
                && newer_than.is_none_or(|t| current.built > t)
            {
                return Ok(current.clone());
            }
            // A rebuild under way started after `newer_than` (rebuilds never
            // overlap), so its map answers the question too.
            match &state.refreshing {
                Some(refresh) => refresh.clone(),
                None => {
                    let inner = self.inner.clone();
                    let epoch = state.epoch;
                    let task = tokio::spawn(async move {
                        let result = inner.build_listing().await.map(Arc::new);
                        let mut state = inner
                            .cache
                            .lock()
                            .expect("the cache lock is never poisoned");
                        if state.epoch == epoch {
                            state.refreshing = None;
                            if let Ok(listing) = &result {
                                state.current = Some(listing.clone());
                            }
                        }
                        result
                    });
                    let refresh = async move {
                        task.await.unwrap_or_else(|e| {
                            Err(ConnectorError::Transport(format!(
                                "the user listing task failed: {e}"
                            )))
                        })
                    }
                    .boxed()
                    .shared();
                    state.refreshing = Some(refresh.clone());
                    refresh
                }
            }
        };
        refresh.await
    }

    /// Drops the map after a write so the next lookup sees the change.
    pub(super) fn forget_listing(&self) {
        let mut state = self
            .inner
            .cache
            .lock()
            .expect("the cache lock is never poisoned");
        state.epoch += 1;
        state.current = None;
        state.refreshing = None;
    }

    /// Without a cache: scan until the user turns up. A removed account is
    /// kept while the scan looks on for a live one with the same e-mail.
    pub(super) async fn scan_for(&self, email: &str) -> Result<Lookup, ConnectorError> {
        let inner = &self.inner;
        let mut found: Option<Value> = None;
        inner
            .scan(&inner.client, |raw| {
                if email_of(&raw).as_deref() != Some(email) {
                    return false;
                }
                let live = !inner.is_removed(&raw);
                if live || found.is_none() {
                    found = Some(raw);
                }
                live
            })
            .await?;
        match found {
            Some(raw) => inner.found(raw).map(Lookup::Found),
            None => Ok(Lookup::NotFound),
        }
    }
}

impl Inner {
    pub(super) async fn list_page(
        &self,
        client: &VendorClient,
        page: u64,
    ) -> Result<Page, ConnectorError> {
        let body = match self.product {
            Product::Business => json!({"operation": "list_users", "options": {"page": page}}),
            Product::Manager => json!({
                "accessToken": self.access_token.expose_secret(),
                "options": {"page": page, "specific_columns": MANAGER_COLUMNS},
            }),
        };
        parse_page(self.post(client, &self.list_url, &body).await?)
    }

    /// Pages through every user, handing each to `visit` until it returns
    /// true. A scan that cannot reach the end of the list is an error: a
    /// partial list proves nobody missing.
    pub(super) async fn scan(
        &self,
        client: &VendorClient,
        mut visit: impl FnMut(Value) -> bool + Send,
    ) -> Result<(), ConnectorError> {
        let mut previous_first: Option<Value> = None;
        for page in 1..=MAX_PAGES {
            let Page {
                users,
                total,
                page_size,
            } = self.list_page(client, page).await?;
            if users.is_empty() {
                return Ok(());
            }
            // A vendor that ignores `page` would otherwise be scanned 20 000 times.
            let first = users.first().cloned();
            if page > 1 && first == previous_first {
                return Err(ConnectorError::Inconclusive(format!(
                    "page {page} of the user list repeats page {}",
                    page - 1
                )));
            }
            previous_first = first;
            let count = users.len() as u64;
            for user in users {
                if visit(user) {
                    return Ok(());
                }
            }
            match (total, page_size) {
                (Some(total), Some(size)) if size > 0 && page * size >= total => return Ok(()),
                (None, Some(size)) if count < size => return Ok(()),
                _ => {}
            }
        }
        Err(ConnectorError::Inconclusive(format!(
            "the user list has more than {MAX_PAGES} pages"
        )))
    }

    pub(super) async fn build_listing(&self) -> Result<Listing, ConnectorError> {
        let started = Instant::now();
        let mut users: HashMap<String, Value> = HashMap::new();
        let mut seen = 0usize;
        self.scan(&self.background, |raw| {
            seen += 1;
            if let Some(email) = email_of(&raw) {
                // A live account wins over a removed one with the same e-mail.
                let replace = users
                    .get(&email)
                    .is_none_or(|kept| self.is_removed(kept) && !self.is_removed(&raw));
                if replace {
                    users.insert(email, raw);
                }
            }
            false
        })
        .await?;
        debug!(
            saas = %self.saas,
            users = seen,
            emails = users.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Listed Mosyle users."
        );
        // Freshness counts from the end of the scan: a scan of a large tenant
        // may outlast FRESH, and a map must be trusted at least once.
        Ok(Listing {
            users,
            built: Instant::now(),
        })
    }
}

pub(super) fn parse_page(mut reply: Value) -> Result<Page, ConnectorError> {
    let inner = match reply.get_mut("response") {
        // Business: an array holding one page object.
        Some(Value::Array(items)) => match items.first_mut() {
            Some(first) => first.take(),
            None => return Ok(Page::empty()),
        },
        // Manager: the page object itself.
        Some(object @ Value::Object(_)) => object.take(),
        _ => {
            return Err(ConnectorError::Decode(
                "the user list has no `response`".into(),
            ));
        }
    };
    let total = inner
        .get("rows")
        .or_else(|| inner.get("total"))
        .and_then(count);
    let page_size = inner.get("page_size").and_then(count);
    match inner.get("users") {
        Some(Value::Array(users)) => Ok(Page {
            users: users.clone(),
            total,
            page_size,
        }),
        Some(Value::Null) | None => match status_of(&inner) {
            // Device lookups answer DEVICES_NOTFOUND for "nothing" (§1.8), so
            // a user list may say USERS_NOTFOUND. Any other NOTFOUND
            // (ACCOUNT_NOTFOUND, an error example of §1.8) is an error: read
            // as an empty page, it would end the list and report everyone
            // after it not found, and so deactivate them.
            Some(code) if is_ok(code) || names_no_users(code) => Ok(Page::empty()),
            Some(code) => Err(vendor_status(code, &inner)),
            None => Err(ConnectorError::Decode(
                "a user list page has no `users`".into(),
            )),
        },
        Some(_) => Err(ConnectorError::Decode("`users` is not a list".into())),
    }
}

impl Page {
    pub(super) fn empty() -> Self {
        Self {
            users: Vec::new(),
            total: None,
            page_size: None,
        }
    }
}

/// `USERS_NOTFOUND`, `USER_NOT_FOUND`: a status saying the list has no users.
fn names_no_users(code: &str) -> bool {
    let code = code.to_ascii_uppercase().replace('_', "");
    code == "USERSNOTFOUND" || code == "USERNOTFOUND"
}
