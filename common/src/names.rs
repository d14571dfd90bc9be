//! Names of every exchange, queue and Redis key, in one place.
//!
//! A namespace prefixes all of them, so parallel test runs (and several
//! environments) share one broker and one Redis without seeing each other.
//!
//! Every Redis key opens with a hash tag, so that the keys one Lua script or
//! transaction touches hash to one Redis Cluster slot: the ledger's keys
//! (results, runs, markers, events) share `{<ns>:rolecall}`, each SaaS
//! app's limiter and breaker keys share `{<ns>:rolecall:<saas>}`, which
//! spreads the apps' limiters over the cluster's masters, and each app's
//! inventory shares `{<ns>:rolecall:inv:<saas>}`.

use std::time::Duration;

/// Builds names under one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    amqp_prefix: String,
    /// `<ns>:rolecall` (or `rolecall`): the base of every hash tag.
    base: String,
}

impl Names {
    /// Names under `namespace` ("" for none).
    pub fn new(namespace: &str) -> Self {
        if namespace.is_empty() {
            Self {
                amqp_prefix: "rolecall.".into(),
                base: "rolecall".into(),
            }
        } else {
            Self {
                amqp_prefix: format!("{namespace}.rolecall."),
                base: format!("{namespace}:rolecall"),
            }
        }
    }

    // --- AMQP ---------------------------------------------------------------

    /// Direct exchange jobs are published to; routing key = SaaS app.
    pub fn jobs_exchange(&self) -> String {
        format!("{}jobs", self.amqp_prefix)
    }

    /// The quorum queue of one SaaS app's jobs.
    pub fn jobs_queue(&self, saas: &str) -> String {
        format!("{}jobs.{saas}", self.amqp_prefix)
    }

    /// A delay queue: messages wait `delay` there, then return to the jobs exchange.
    pub fn retry_queue(&self, saas: &str, delay: Duration) -> String {
        format!("{}retry.{saas}.{}ms", self.amqp_prefix, delay.as_millis())
    }

    /// Direct exchange of dead letters; routing key = SaaS app.
    pub fn dead_exchange(&self) -> String {
        format!("{}dead", self.amqp_prefix)
    }

    /// One SaaS app's dead-letter queue.
    pub fn dead_queue(&self, saas: &str) -> String {
        format!("{}dead.{saas}", self.amqp_prefix)
    }

    /// A copy of every dead letter of a SaaS app, for the workers: they count
    /// the ones the broker dead-lettered (delivery limit) in their run.
    pub fn dead_watch_queue(&self, saas: &str) -> String {
        format!("{}dead-watch.{saas}", self.amqp_prefix)
    }

    /// The alert queue the notifier consumes.
    pub fn alerts_queue(&self) -> String {
        format!("{}alerts", self.amqp_prefix)
    }

    // --- Redis --------------------------------------------------------------

    /// Hash with a user's latest result: role, seat price, found, ….
    pub fn role_key(&self, saas: &str, user_id: &str) -> String {
        format!("{}role:{saas}:{user_id}", self.ledger_prefix())
    }

    /// Hash of a SaaS app's open credential incident (the fleet-wide breaker).
    pub fn breaker_key(&self, saas: &str) -> String {
        format!("{}breaker", self.app_prefix(saas))
    }

    /// Marker that an alert with this dedup key was sent (TTL: its quiet period).
    pub fn alerted_key(&self, dedup: &str) -> String {
        format!("{}alerted:{dedup}", self.ledger_prefix())
    }

    /// The capped, secret-free copy of the vendor's last answer about a user (TTL).
    pub fn audit_key(&self, saas: &str, user_id: &str) -> String {
        format!("{}audit:{saas}:{user_id}", self.ledger_prefix())
    }

    /// Hash with a run's counters.
    pub fn run_key(&self, run_id: &str) -> String {
        format!("{}run:{run_id}", self.ledger_prefix())
    }

    /// Hash of a run's role tallies: `n:<saas>:<role>` and `cost:<saas>:<role>`.
    pub fn run_roles_key(&self, run_id: &str) -> String {
        format!("{}run:{run_id}:roles", self.ledger_prefix())
    }

    /// Hash of vendor roles missing from a SaaS app's role map: `<saas>:<raw role>` → count.
    pub fn run_unknown_roles_key(&self, run_id: &str) -> String {
        format!("{}run:{run_id}:unknown_roles", self.ledger_prefix())
    }

    /// Sorted set of runs by start time.
    pub fn runs_index(&self) -> String {
        format!("{}runs", self.ledger_prefix())
    }

    /// Marker that a job's outcome was recorded (idempotency under redelivery).
    pub fn done_key(&self, job_id: &str) -> String {
        format!("{}done:{job_id}", self.ledger_prefix())
    }

    /// Stream of deactivations and role changes, for downstream automations.
    pub fn events_stream(&self) -> String {
        format!("{}events", self.ledger_prefix())
    }

    /// The `serve` leader's lease: its fencing token, with a TTL.
    pub fn leader_key(&self) -> String {
        format!("{}scheduler:leader", self.ledger_prefix())
    }

    /// Who holds the `serve` leader lease (`<token> <host> pid <pid>`), for
    /// `status`; written by the leader each tick with the lease's TTL.
    pub fn leader_holder_key(&self) -> String {
        format!("{}scheduler:leader:holder", self.ledger_prefix())
    }

    /// Counter every lease's fencing token is drawn from (monotonic, so a
    /// newer holder always has a larger token than any stale one).
    pub fn fence_key(&self) -> String {
        format!("{}scheduler:fence", self.ledger_prefix())
    }

    /// The lease of the one process publishing a run: its fencing token, with a TTL.
    pub fn run_lease_key(&self, run_id: &str) -> String {
        format!("{}run:{run_id}:lease", self.ledger_prefix())
    }

    /// Held while a run is re-driven (`SET NX PX`): one re-drive at a time,
    /// whether the leader's or one by hand.
    pub fn run_redrive_key(&self, run_id: &str) -> String {
        format!("{}run:{run_id}:redriving", self.ledger_prefix())
    }

    /// Set of runs still publishing: where a leader looks for runs whose
    /// publisher died.
    pub fn publishing_runs(&self) -> String {
        format!("{}runs:publishing", self.ledger_prefix())
    }

    /// Hash of a workflow's schedule state: `last_slot`, `current_run`, `queued_slot`.
    pub fn workflow_key(&self, workflow: &str) -> String {
        format!("{}workflow:{workflow}", self.ledger_prefix())
    }

    /// Hash with a SaaS app's fleet-wide limiter state (GCRA TAT, adaptive factor).
    pub fn limiter_key(&self, saas: &str) -> String {
        format!("{}rl", self.app_prefix(saas))
    }

    /// Epoch milliseconds until which the vendor asked the whole fleet to pause.
    pub fn pause_key(&self, saas: &str) -> String {
        format!("{}pause", self.app_prefix(saas))
    }

    /// Sorted set of in-flight request leases (member = lease id, score = expiry ms).
    pub fn leases_key(&self, saas: &str) -> String {
        format!("{}inflight", self.app_prefix(saas))
    }

    /// Hash of operator overrides of a SaaS app's limits (per_second, burst, max_in_flight).
    pub fn limits_override_key(&self, saas: &str) -> String {
        format!("{}limits", self.app_prefix(saas))
    }

    /// Prefix of the notifier's keys (pending alert groups, seen alert
    /// ids, the last digest per app set: `notifier/src/store`). Under the
    /// ledger's tag: a digest reads the ledger, and a group's scripts touch
    /// its seen marker, open pointer, due set and parts together.
    pub fn notify_prefix(&self) -> String {
        format!("{}notify:", self.ledger_prefix())
    }

    /// Prefix of every Redis key in this namespace (for cleanup and scans):
    /// `{<ns>:rolecall` — the open hash tag, which every key family extends.
    pub fn key_prefix(&self) -> String {
        format!("{{{}", self.base)
    }

    /// Prefix of the ledger's keys: one hash tag for all of them, because
    /// recording an outcome touches the job's marker, the user's result, the
    /// run's hashes and the events stream in one script.
    pub fn ledger_prefix(&self) -> String {
        format!("{{{}}}:", self.base)
    }

    /// Prefix of one SaaS app's limiter and breaker keys: one hash tag per
    /// app, because a limiter script touches the bucket's state, pause and
    /// send log with the app's leases and override, and different apps then
    /// land on different cluster slots.
    pub fn app_prefix(&self, saas: &str) -> String {
        format!("{{{}:{saas}}}:", self.base)
    }

    /// Prefix of one SaaS app's inventory keys (records, index, meta,
    /// imports): one hash tag per app, because each inventory script
    /// touches one app's index and records only, and different apps then
    /// spread over the cluster's masters instead of crowding the ledger's.
    pub fn inventory_prefix(&self, saas: &str) -> String {
        format!("{{{}:inv:{saas}}}:", self.base)
    }

    /// Prefix of every AMQP name in this namespace.
    pub fn amqp_prefix(&self) -> &str {
        &self.amqp_prefix
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_namespace_matches_the_documented_names() {
        let n = Names::new("");
        assert_eq!(n.jobs_exchange(), "rolecall.jobs");
        assert_eq!(n.jobs_queue("lever"), "rolecall.jobs.lever");
        assert_eq!(n.alerts_queue(), "rolecall.alerts");
        assert_eq!(n.role_key("lever", "u-1"), "{rolecall}:role:lever:u-1");
        assert_eq!(n.events_stream(), "{rolecall}:events");
        assert_eq!(n.limiter_key("lever"), "{rolecall:lever}:rl");
        assert_eq!(n.breaker_key("lever"), "{rolecall:lever}:breaker");
        assert_eq!(n.inventory_prefix("lever"), "{rolecall:inv:lever}:");
    }

    #[test]
    fn a_namespace_prefixes_everything() {
        let n = Names::new("t42");
        assert_eq!(n.jobs_queue("a"), "t42.rolecall.jobs.a");
        assert_eq!(
            n.retry_queue("a", Duration::from_secs(5)),
            "t42.rolecall.retry.a.5000ms"
        );
        assert_eq!(n.run_key("r"), "{t42:rolecall}:run:r");
        assert_eq!(n.pause_key("a"), "{t42:rolecall:a}:pause");
        assert!(n.limits_override_key("a").starts_with(&n.key_prefix()));
        assert!(n.done_key("j").starts_with(&n.key_prefix()));
    }

    /// The part of a key Redis Cluster hashes: the first `{…}` with content.
    fn hash_tag(key: &str) -> &str {
        let open = key.find('{').expect("a tag");
        let close = open + key[open..].find('}').expect("a closed tag");
        &key[open + 1..close]
    }

    #[test]
    fn keys_one_script_touches_share_a_hash_tag_and_apps_do_not() {
        let n = Names::new("t42");
        let ledger = [
            n.done_key("j"),
            n.role_key("a", "u"),
            n.run_key("r"),
            n.run_roles_key("r"),
            n.run_unknown_roles_key("r"),
            n.events_stream(),
            n.runs_index(),
            n.audit_key("a", "u"),
            n.alerted_key("d"),
            n.leader_key(),
            n.leader_holder_key(),
            n.fence_key(),
            n.run_lease_key("r"),
            n.publishing_runs(),
            n.workflow_key("w"),
            n.notify_prefix(),
        ];
        assert!(ledger.iter().all(|k| hash_tag(k) == "t42:rolecall"));
        let app = [
            n.limiter_key("a"),
            n.pause_key("a"),
            n.leases_key("a"),
            n.limits_override_key("a"),
            n.breaker_key("a"),
        ];
        assert!(app.iter().all(|k| hash_tag(k) == "t42:rolecall:a"));
        assert_ne!(hash_tag(&n.limiter_key("a")), hash_tag(&n.limiter_key("b")));
    }
}
