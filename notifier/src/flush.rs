//! Delivering due groups: claim, render, send to each channel of the route,
//! note each channel served, and either finish the group or put it back for
//! a later attempt with capped exponential backoff.
//!
//! A group is retried forever: an alert that cannot be delivered waits in
//! Redis (and says so in the log at every attempt) until its channel works
//! or its configuration is fixed. A channel that took a group is noted
//! before the next one is tried, so neither a retry nor a crash resends to
//! it. Groups are claimed with a lease (see `store`), so replicas share
//! the work without sending a group twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use rolecall_common::Names;
use rolecall_common::config::NotifierSettings;
use rolecall_common::config::notifier::DEFAULT_ROUTE;
use rolecall_common::ledger::Ledger;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::channels::{Channel, Notification};
use crate::digest::{self, Digest};
use crate::metrics::Metrics;
use crate::render;
use crate::store::{Group, Store, StoreError, now_ms};

/// How often due groups are looked for.
const TICK: Duration = Duration::from_millis(250);
/// Groups claimed per look.
const CLAIM_BATCH: usize = 16;
/// How often the pending groups are counted for the gauge: a group waits
/// `group_window` at least, so a few seconds is current enough.
const PENDING_GAUGE_EVERY: Duration = Duration::from_secs(5);
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// The first retry's wait; it doubles per failed round up to `max_backoff`.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Redis failed while a group was being delivered: its claim lapses and
/// it is tried again.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    /// Reading or writing the pending group.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading the run's ledger for its digest.
    #[error("reading the run for its digest: {0}")]
    Ledger(#[from] rolecall_common::ledger::LedgerError),
}

/// Delivers due groups.
pub struct Flusher {
    pub(crate) store: Store,
    pub(crate) ledger: Ledger,
    pub(crate) names: Names,
    pub(crate) settings: NotifierSettings,
    pub(crate) channels: Arc<BTreeMap<String, Channel>>,
    pub(crate) metrics: Arc<Metrics>,
    /// This process's claim token.
    pub(crate) token: String,
}

impl Flusher {
    /// How long a claim holds a group: every channel's attempt in turn,
    /// plus slack for Redis round trips. Longer than any delivery round, so
    /// a live replica never loses a group it is still sending.
    fn lease(&self) -> Duration {
        self.settings.delivery_timeout * (self.channels.len() as u32 + 1) + Duration::from_secs(10)
    }

    /// Runs until `stop`; a round in progress finishes first.
    pub async fn run(&self, stop: CancellationToken) {
        let mut gauge_due = tokio::time::Instant::now();
        loop {
            let now = tokio::time::Instant::now();
            if now >= gauge_due {
                gauge_due = now + PENDING_GAUGE_EVERY;
                match self.store.pending().await {
                    Ok(n) => self.metrics.pending(n),
                    Err(e) => warn!(error = %e, "Could not count the pending alert groups."),
                }
            }
            match self.round().await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => warn!(error = %e, "Could not look for due alert groups; trying again."),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }

    /// Claims and delivers one batch of due groups; returns how many.
    pub async fn round(&self) -> Result<usize, StoreError> {
        let ids = self.store.claim(self.lease(), CLAIM_BATCH).await?;
        let n = ids.len();
        for result in join_all(ids.iter().map(|id| self.deliver(id))).await {
            if let Err(e) = result {
                // The claim lapses and the group is tried again.
                warn!(error = %e, "Redis failed while delivering an alert group.");
            }
        }
        Ok(n)
    }

    async fn deliver(&self, id: &str) -> Result<(), FlushError> {
        let taken = self.store.take(id, &self.token).await?;
        let loaded = if taken {
            self.store.load(id).await?
        } else {
            None
        };
        let Some(mut group) = loaded else {
            // Due but gone (delivered by a replica whose lease had lapsed).
            return Ok(self
                .store
                .complete(&Group {
                    id: id.to_string(),
                    ..Group::default()
                })
                .await?);
        };
        let digest = match group.kind.as_str() {
            "run_finished" => Some(self.digest(&mut group).await?),
            _ => None,
        };
        let routes = self.routes(&group, digest.as_ref()).await?;
        if routes.is_empty() {
            // Only a route written as `[]` gets here: a muted app.
            info!(
                group = id,
                kind = group.kind,
                saas = group.saas,
                alerts = group.count,
                "No channel hears about this app (its route is empty); the group is dropped as configured."
            );
        }
        let mut failed = false;
        // The longest wait a failed channel asked for.
        let mut asked = Duration::ZERO;
        for (channel_name, apps) in &routes {
            if group.sent.contains(channel_name) {
                continue;
            }
            let Some(channel) = self.channels.get(channel_name) else {
                continue; // validation makes every routed channel exist
            };
            if !self.store.holds(id, &self.token).await? {
                return Ok(()); // our lease lapsed; the new holder goes on
            }
            let label = self.settings.label.as_deref();
            let notification = match &digest {
                Some(d) => render::notification(id, channel_name, digest::render(d, apps), label),
                None => render::group_notification(&group, channel_name, label),
            };
            match channel
                .send(&notification, self.settings.delivery_timeout)
                .await
            {
                Ok(()) => {
                    self.store.mark_sent(id, channel_name).await?;
                    self.metrics.delivered(channel_name);
                    info!(
                        group = id,
                        kind = group.kind,
                        saas = group.saas,
                        channel = channel_name,
                        alerts = group.count,
                        "Notification delivered."
                    );
                }
                Err(e) => {
                    self.metrics.failed_attempt(channel_name);
                    self.log_failure(&group, channel_name, &notification, &e);
                    failed = true;
                    asked = asked.max(e.retry_after().unwrap_or_default().min(MAX_RETRY_AFTER));
                }
            }
        }
        if !failed {
            return Ok(self.store.complete(&group).await?);
        }
        // A receiver's Retry-After is a floor (bounded: a broken header
        // must not park a group for a day).
        let wait = backoff(group.attempts + 1, self.settings.max_backoff).max(asked);
        self.store.retry_later(id, &self.token, wait).await?;
        Ok(())
    }

    fn log_failure(
        &self,
        group: &Group,
        channel: &str,
        n: &Notification,
        e: &crate::channels::DeliveryError,
    ) {
        let pending_s = (now_ms() - group.created_ms).max(0) / 1000;
        let attempts = group.attempts + 1;
        if e.is_configuration() {
            error!(group = group.id, channel, kind = group.kind, saas = group.saas, attempts, pending_s, error = %e,
                subject = n.subject, "Notification refused by its channel (a configuration problem?); it stays pending and is retried.");
        } else {
            warn!(group = group.id, channel, kind = group.kind, saas = group.saas, attempts, pending_s, error = %e,
                "Notification not delivered; it stays pending and is retried.");
        }
    }

    /// The run's digest: the frozen one, or built now and frozen.
    async fn digest(&self, group: &mut Group) -> Result<Digest, FlushError> {
        if let Some(d) = group
            .digest
            .as_deref()
            .and_then(|j| serde_json::from_str(j).ok())
        {
            return Ok(d);
        }
        let d = digest::build(
            &self.ledger,
            &self.names,
            &group.run_id,
            &group.first_error,
            self.settings.examples,
        )
        .await?;
        let json = serde_json::to_string(&d).expect("a digest serializes");
        let stored = self.store.freeze_digest(&group.id, &json).await?;
        let frozen: Digest = serde_json::from_str(&stored).unwrap_or(d);
        group.digest = Some(stored);
        Ok(frozen)
    }

    /// Each channel that hears about the group, with the apps it covers.
    async fn routes(
        &self,
        group: &Group,
        digest: Option<&Digest>,
    ) -> Result<BTreeMap<String, Vec<String>>, StoreError> {
        let apps: Vec<String> = if !group.saas.is_empty() {
            vec![group.saas.clone()]
        } else if let Some(d) = digest {
            d.apps.clone()
        } else if !group.run_id.is_empty() {
            digest::run_apps(&self.store.connection(), &self.names, &group.run_id)
                .await
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for app in &apps {
            for ch in self.settings.route(app) {
                out.entry(ch.clone()).or_default().push(app.clone());
            }
        }
        if apps.is_empty() {
            for ch in self.settings.route(DEFAULT_ROUTE) {
                out.entry(ch.clone()).or_default();
            }
        }
        // A channel routed twice for one app hears once.
        for list in out.values_mut() {
            let unique: BTreeSet<String> = list.drain(..).collect();
            list.extend(unique);
        }
        Ok(out)
    }
}

/// The wait before round `n` (1-based) of a group: doubling from
/// [`FIRST_RETRY`], capped, with jitter so replicas and groups spread out.
pub fn backoff(n: u32, max: Duration) -> Duration {
    let exp = FIRST_RETRY.saturating_mul(1u32 << n.saturating_sub(1).min(20));
    let capped = exp.min(max);
    let jitter = rand::random_range(0.75..=1.0);
    capped.mul_f64(jitter).max(Duration::from_millis(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_stops_at_the_cap() {
        let max = Duration::from_secs(300);
        for n in 1..=12 {
            let ceiling = (FIRST_RETRY * (1 << (n - 1))).min(max);
            let wait = backoff(n, max);
            assert!(
                wait <= ceiling && wait >= ceiling.mul_f64(0.75),
                "round {n}: {wait:?}"
            );
        }
        assert!(
            backoff(1000, max) <= max,
            "no overflow, however long it fails"
        );
    }
}
