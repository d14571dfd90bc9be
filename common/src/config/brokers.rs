//! The RabbitMQ brokers a process may connect to: `amqp.url` (one node) or
//! `amqp.urls` (the nodes of a cluster, tried in turn), and the type of the
//! delay queues (`amqp.delay_queues`).
//!
//! Quorum queues survive the loss of a minority of nodes, but only for a
//! client that can reach another node; a single URL would pin every process
//! to one node's fate. The two keys are exclusive, so a deployment never
//! wonders which one wins.
//!
//! The delay (retry and defer) queues are quorum queues by default: a
//! classic queue dead-letters its expired jobs at most once, and RabbitMQ
//! drops them when the jobs queue has no leader at that moment — right
//! after a broker restart, every job whose delay ran out meanwhile (the
//! chaos bench lost 52 of 600 jobs that way). A classic queue also lives on
//! one node: while that node is down it cannot even be declared, so a
//! worker could not reconnect to the surviving nodes of a cluster. Quorum
//! delay queues (message TTL and at-least-once dead-lettering, RabbitMQ ≥
//! 3.10) have neither problem. `amqp.delay_queues = "classic"` keeps the
//! classic ones of an existing deployment (a queue cannot change type in
//! place).

use secrecy::SecretString;

use super::check_url;

/// The broker used when neither key is set: `scripts/services.sh`'s node.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

const SCHEMES: &[&str] = &["amqp", "amqps"];

/// The queue type of the delay (retry and defer) queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelayQueues {
    /// At-most-once dead-lettering, on one node: for deployments that
    /// declared them before quorum delay queues.
    Classic,
    /// At-least-once dead-lettering, replicated; the default.
    Quorum,
}

/// Validates `amqp.delay_queues` (`quorum`, the default, or `classic`).
pub(crate) fn validate_delay_queues(
    raw: Option<&str>,
    bad: &mut impl FnMut(String, String),
) -> DelayQueues {
    match raw {
        None | Some("quorum") => DelayQueues::Quorum,
        Some("classic") => DelayQueues::Classic,
        Some(_) => {
            bad(
                "amqp.delay_queues".into(),
                "must be `classic` or `quorum`".into(),
            );
            DelayQueues::Classic
        }
    }
}

/// Validates `amqp.url` / `amqp.urls` into the list of brokers, in the
/// order they are tried. Problems name the key (and the position in the
/// list), never the URL: it may carry a password.
pub(crate) fn validate_brokers(
    url: Option<String>,
    urls: Option<Vec<String>>,
    bad: &mut impl FnMut(String, String),
) -> Vec<SecretString> {
    match (url, urls) {
        (Some(_), Some(_)) => {
            bad(
                "amqp.urls".into(),
                "set either amqp.url (one broker) or amqp.urls (a cluster), not both".into(),
            );
            Vec::new()
        }
        (url, None) => {
            let url = url.unwrap_or_else(|| DEFAULT_AMQP_URL.into());
            // A cluster's nodes written into the one-URL key (as a Secret's
            // value for ROLECALL__AMQP__URL, say) would parse as one odd
            // URL and retry its first host for ever.
            if SCHEMES.iter().any(|s| url.contains(&format!(",{s}://"))) {
                bad(
                    "amqp.url".into(),
                    "holds several URLs: list a cluster's nodes in amqp.urls (ROLECALL__AMQP__URLS takes them comma-separated)".into(),
                );
                return Vec::new();
            }
            check_url(&url, SCHEMES, "amqp.url", bad);
            vec![SecretString::from(url)]
        }
        (None, Some(urls)) => {
            if urls.is_empty() {
                bad("amqp.urls".into(), "must list at least one broker".into());
            }
            for (i, url) in urls.iter().enumerate() {
                if url.trim().is_empty() {
                    bad(format!("amqp.urls[{i}]"), "is empty".into());
                } else {
                    check_url(url, SCHEMES, &format!("amqp.urls[{i}]"), bad);
                }
            }
            urls.into_iter().map(SecretString::from).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn run(url: Option<&str>, urls: Option<&[&str]>) -> (Vec<String>, Vec<(String, String)>) {
        let mut problems = Vec::new();
        let brokers = validate_brokers(
            url.map(String::from),
            urls.map(|u| u.iter().map(|s| s.to_string()).collect()),
            &mut |k, r| problems.push((k, r)),
        );
        let brokers = brokers
            .iter()
            .map(|s| s.expose_secret().to_string())
            .collect();
        (brokers, problems)
    }

    #[test]
    fn neither_key_means_the_local_default_broker() {
        assert_eq!(
            run(None, None),
            (vec![DEFAULT_AMQP_URL.to_string()], vec![])
        );
    }

    #[test]
    fn urls_keep_their_order() {
        let (brokers, problems) = run(None, Some(&["amqp://a:5701", "amqps://b:5702"]));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(brokers, ["amqp://a:5701", "amqps://b:5702"]);
    }

    #[test]
    fn both_keys_are_refused_naming_amqp_urls() {
        let (_, problems) = run(Some("amqp://a"), Some(&["amqp://b"]));
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, "amqp.urls");
    }

    #[test]
    fn a_bad_entry_is_named_by_its_position_without_its_password() {
        let (_, problems) = run(None, Some(&["amqp://a", "http://u:hunter2@b", ""]));
        let keys: Vec<_> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["amqp.urls[1]", "amqp.urls[2]"]);
        assert!(problems.iter().all(|(_, r)| !r.contains("hunter2")));
    }

    #[test]
    fn delay_queues_are_quorum_unless_classic_is_asked_for() {
        let mut problems = Vec::new();
        let mut bad = |k: String, r: String| problems.push((k, r));
        assert_eq!(validate_delay_queues(None, &mut bad), DelayQueues::Quorum);
        assert_eq!(
            validate_delay_queues(Some("classic"), &mut bad),
            DelayQueues::Classic
        );
        validate_delay_queues(Some("stream"), &mut bad);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, "amqp.delay_queues");
    }

    #[test]
    fn an_empty_list_is_refused() {
        let (_, problems) = run(None, Some(&[]));
        assert_eq!(problems[0].0, "amqp.urls");
    }

    #[test]
    fn several_urls_in_amqp_url_are_refused_pointing_at_amqp_urls() {
        let (_, problems) = run(
            Some("amqp://u:secret@a:5672/%2f,amqp://u:secret@b:5672/%2f"),
            None,
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].0, "amqp.url");
        assert!(problems[0].1.contains("amqp.urls"), "{problems:?}");
        assert!(!problems[0].1.contains("secret"), "{problems:?}");
    }

    #[test]
    fn urls_from_the_environment_are_a_comma_separated_list() {
        let env = [(
            "ROLECALL__AMQP__URLS".to_string(),
            "amqp://a:5701/%2f,amqp://b:5702/%2f".to_string(),
        )];
        let settings =
            super::super::load_with_env(None, Some(env.into_iter().collect())).expect("valid");
        let urls: Vec<&str> = settings
            .amqp
            .urls
            .iter()
            .map(|u| u.expose_secret())
            .collect();
        assert_eq!(urls, ["amqp://a:5701/%2f", "amqp://b:5702/%2f"]);
    }
}
