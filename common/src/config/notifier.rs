//! The `[notifier]` section: where alerts go (channels), who hears about
//! which SaaS app (routes) and how alerts are grouped and retried.
//!
//! Secrets never appear in the file: a webhook URL (a Slack incoming-webhook
//! URL is a credential) and an SMTP password are named credentials, resolved
//! like a SaaS app's (`credentials.*`: environment, mounted file, Vault) when
//! the notifier starts.
//!
//! ```toml
//! [notifier]
//! label = "prod"              # optional: leads every message ([prod] …)
//! group_window = "60s"
//! [notifier.channels.ops]
//! type = "webhook"
//! url_credential = "slack-ops"
//! [notifier.channels.it_mail]
//! type = "email"
//! host = "smtp.example.com"
//! port = 587
//! tls = "starttls"
//! username = "rolecall"
//! password_credential = "smtp-rolecall"
//! from = "Rolecall <rolecall@example.com>"
//! to = ["it-admins@example.com"]
//! [notifier.routes]
//! default = ["ops"]
//! lever_prod = ["ops", "it_mail"]
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{is_name, parse_duration};

/// The route every SaaS app without its own route uses.
pub const DEFAULT_ROUTE: &str = "default";

/// The `[notifier]` table as written.
#[allow(missing_docs)]
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct RawNotifier {
    pub label: Option<String>,
    pub group_window: Option<String>,
    pub max_backoff: Option<String>,
    pub delivery_timeout: Option<String>,
    pub dedup_ttl: Option<String>,
    pub examples: Option<usize>,
    pub channels: BTreeMap<String, RawChannel>,
    pub routes: BTreeMap<String, Vec<String>>,
}

/// One `[notifier.channels.<name>]` table as written: the fields of both
/// types, checked against `type` by validation (so a webhook with an SMTP
/// `host` is reported, not ignored).
#[allow(missing_docs)]
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct RawChannel {
    #[serde(rename = "type")]
    pub kind: String,
    pub url_credential: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub tls: Option<String>,
    pub username: Option<String>,
    pub password_credential: Option<String>,
    pub from: Option<String>,
    pub to: Vec<String>,
    pub ca_file: Option<PathBuf>,
}

/// Validated notifier settings.
#[derive(Debug, Clone)]
pub struct NotifierSettings {
    /// Leads every message (`[prod] …`, subject `[rolecall prod] …`), so
    /// several installations sharing a channel are told apart.
    pub label: Option<String>,
    /// How long alerts of one SaaS app and kind gather before they are sent
    /// as one message.
    pub group_window: Duration,
    /// The longest wait between two delivery attempts of a group.
    pub max_backoff: Duration,
    /// Bound on one delivery attempt to one channel.
    pub delivery_timeout: Duration,
    /// How long an alert id is remembered (redeliveries within it are no-ops).
    pub dedup_ttl: Duration,
    /// Example users listed in a grouped message.
    pub examples: usize,
    /// Channels by name.
    pub channels: BTreeMap<String, ChannelSettings>,
    /// Channel names by SaaS app; [`DEFAULT_ROUTE`] for every other app.
    pub routes: BTreeMap<String, Vec<String>>,
}

impl Default for NotifierSettings {
    fn default() -> Self {
        Self {
            label: None,
            group_window: Duration::from_secs(60),
            max_backoff: Duration::from_secs(300),
            delivery_timeout: Duration::from_secs(15),
            dedup_ttl: Duration::from_secs(7 * 24 * 3600),
            examples: 5,
            channels: BTreeMap::new(),
            routes: BTreeMap::new(),
        }
    }
}

impl NotifierSettings {
    /// The channels that hear about `saas` (its route, else the default one).
    pub fn route(&self, saas: &str) -> &[String] {
        self.routes
            .get(saas)
            .or_else(|| self.routes.get(DEFAULT_ROUTE))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

/// Where a channel delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelSettings {
    /// A Slack-compatible incoming webhook (`POST {"text": …}`).
    Webhook {
        /// Name of the credential holding the URL.
        url_credential: String,
    },
    /// E-mail over SMTP.
    Email(EmailSettings),
}

/// How an e-mail channel reaches its SMTP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailSettings {
    /// SMTP server host name (also the name its certificate must carry).
    pub host: String,
    /// SMTP port.
    pub port: u16,
    /// Transport security.
    pub tls: SmtpTls,
    /// Login name, when the server wants one.
    pub username: Option<String>,
    /// Name of the credential holding the password (with `username`).
    pub password_credential: Option<String>,
    /// Sender (`Name <addr>` or `addr`).
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// PEM file of the CA that signed the server's certificate (else the
    /// system's roots).
    pub ca_file: Option<PathBuf>,
}

/// SMTP transport security.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which is required.
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
    /// No encryption (a local relay only).
    None,
}

/// Validates the `[notifier]` table.
pub(crate) fn validate(
    raw: RawNotifier,
    saas: &[&String],
    bad: &mut impl FnMut(String, String),
) -> NotifierSettings {
    let defaults = NotifierSettings::default();
    let mut duration = |key: &str, text: Option<String>, default: Duration| match text {
        None => default,
        Some(t) => match parse_duration(&t) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                bad(format!("notifier.{key}"), "must be more than zero".into());
                default
            }
            Err(e) => {
                bad(format!("notifier.{key}"), e);
                default
            }
        },
    };
    let group_window = duration("group_window", raw.group_window, defaults.group_window);
    let max_backoff = duration("max_backoff", raw.max_backoff, defaults.max_backoff);
    let delivery_timeout = duration(
        "delivery_timeout",
        raw.delivery_timeout,
        defaults.delivery_timeout,
    );
    let dedup_ttl = duration("dedup_ttl", raw.dedup_ttl, defaults.dedup_ttl);
    let label = raw.label.map(|l| l.trim().to_string());
    if let Some(l) = &label
        && (l.is_empty() || l.chars().count() > 40 || l.chars().any(char::is_control))
    {
        bad(
            "notifier.label".into(),
            "must be 1 to 40 printable characters (e.g. \"prod\")".into(),
        );
    }
    let examples = raw.examples.unwrap_or(defaults.examples);
    if examples > 50 {
        bad("notifier.examples".into(), "must be at most 50".into());
    }

    // Routes are checked against the channels the file names, valid or
    // not: a broken channel is reported once, by its own key.
    let named: Vec<String> = raw.channels.keys().cloned().collect();
    let mut channels = BTreeMap::new();
    for (name, ch) in raw.channels {
        let key = format!("notifier.channels.{name}");
        if !is_name(&name) {
            bad(
                key.clone(),
                "channel names use lower-case letters, digits, '_' and '-'".into(),
            );
        }
        if let Some(c) = validate_channel(&key, ch, bad) {
            channels.insert(name, c);
        }
    }

    for (app, list) in &raw.routes {
        let key = format!("notifier.routes.{app}");
        if app != DEFAULT_ROUTE && !saas.contains(&app) {
            bad(
                key.clone(),
                format!("no [saas.{app}] table: route `default` or a configured SaaS app"),
            );
        }
        for ch in list {
            if !named.contains(ch) {
                bad(
                    key.clone(),
                    format!("no channel `{ch}` in [notifier.channels]"),
                );
            }
        }
    }
    if !named.is_empty() && !raw.routes.contains_key(DEFAULT_ROUTE) {
        // Without a default route an alert about an app nobody routed
        // would have nowhere to go: it would wait forever.
        bad(
            "notifier.routes.default".into(),
            "missing: list the channels that hear about SaaS apps without their own route".into(),
        );
    }
    NotifierSettings {
        label,
        group_window,
        max_backoff,
        delivery_timeout,
        dedup_ttl,
        examples,
        channels,
        routes: raw.routes,
    }
}

fn validate_channel(
    key: &str,
    ch: RawChannel,
    bad: &mut impl FnMut(String, String),
) -> Option<ChannelSettings> {
    let k = |f: &str| format!("{key}.{f}");
    match ch.kind.as_str() {
        "webhook" => {
            let email_only = [
                ("host", ch.host.is_some()),
                ("port", ch.port.is_some()),
                ("tls", ch.tls.is_some()),
                ("username", ch.username.is_some()),
                ("password_credential", ch.password_credential.is_some()),
                ("from", ch.from.is_some()),
                ("to", !ch.to.is_empty()),
                ("ca_file", ch.ca_file.is_some()),
            ];
            for (field, set) in email_only {
                if set {
                    bad(
                        k(field),
                        "not a webhook setting (type = \"email\" only)".into(),
                    );
                }
            }
            match ch.url_credential.filter(|c| !c.trim().is_empty()) {
                Some(c) => Some(ChannelSettings::Webhook {
                    url_credential: c.trim().to_string(),
                }),
                None => {
                    bad(
                        k("url_credential"),
                        "missing: name the credential holding the webhook URL (a secret)".into(),
                    );
                    None
                }
            }
        }
        "email" => {
            if ch.url_credential.is_some() {
                bad(k("url_credential"), "not an e-mail setting".into());
            }
            let tls = match ch.tls.as_deref() {
                None | Some("starttls") => SmtpTls::Starttls,
                Some("tls") => SmtpTls::Tls,
                Some("none") => SmtpTls::None,
                Some(other) => {
                    bad(
                        k("tls"),
                        format!("`{other}` is not one of: starttls, tls, none"),
                    );
                    SmtpTls::Starttls
                }
            };
            let host = ch.host.filter(|h| !h.trim().is_empty());
            if host.is_none() {
                bad(k("host"), "missing".into());
            }
            let from = ch.from.filter(|f| f.contains('@'));
            if from.is_none() {
                bad(k("from"), "missing or not an e-mail address".into());
            }
            if ch.to.is_empty() {
                bad(k("to"), "list at least one recipient".into());
            }
            for (i, to) in ch.to.iter().enumerate() {
                if !to.contains('@') {
                    bad(format!("{key}.to[{i}]"), "not an e-mail address".into());
                }
            }
            if ch.password_credential.is_some() && ch.username.is_none() {
                bad(
                    k("username"),
                    "missing: a password needs a user name".into(),
                );
            }
            if let Some(p) = &ch.ca_file
                && let Err(e) = std::fs::metadata(p)
            {
                bad(k("ca_file"), format!("cannot read {}: {e}", p.display()));
            }
            let port = ch.port.unwrap_or(match tls {
                SmtpTls::Starttls => 587,
                SmtpTls::Tls => 465,
                SmtpTls::None => 25,
            });
            Some(ChannelSettings::Email(EmailSettings {
                host: host?.trim().to_string(),
                port,
                tls,
                username: ch.username,
                password_credential: ch.password_credential,
                from: from?,
                to: ch.to,
                ca_file: ch.ca_file,
            }))
        }
        "" => {
            bad(k("type"), "missing: \"webhook\" or \"email\"".into());
            None
        }
        other => {
            bad(
                k("type"),
                format!("`{other}` is not one of: webhook, email"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::from_toml;

    const APP: &str = r#"
        [saas.lever_prod]
        connector = "lever"
        base_url = "https://api.lever.co"
        credential = "lever-prod"
        rate = { per_second = 5, burst = 5 }
    "#;

    fn keys(text: &str) -> Vec<String> {
        from_toml(&format!("{APP}\n{text}"))
            .unwrap_err()
            .problems()
            .iter()
            .map(|p| p.key.clone())
            .collect()
    }

    #[test]
    fn channels_and_routes_validate_into_typed_values() {
        let s = from_toml(&format!(
            r#"{APP}
            [notifier]
            label = " prod "
            group_window = "2s"
            [notifier.channels.ops]
            type = "webhook"
            url_credential = "slack-ops"
            [notifier.channels.mail]
            type = "email"
            host = "smtp.example.com"
            from = "rolecall@example.com"
            to = ["it@example.com"]
            [notifier.routes]
            default = ["ops"]
            lever_prod = ["ops", "mail"]
            "#
        ))
        .expect("valid");
        let n = &s.notifier;
        assert_eq!(n.group_window, std::time::Duration::from_secs(2));
        assert_eq!(n.label.as_deref(), Some("prod"));
        assert_eq!(n.route("lever_prod"), ["ops", "mail"]);
        assert_eq!(n.route("other"), ["ops"]);
        match &n.channels["mail"] {
            super::ChannelSettings::Email(e) => {
                assert_eq!(e.port, 587);
                assert_eq!(e.tls, super::SmtpTls::Starttls);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_channel_and_route_problem_names_its_key() {
        let keys = keys(
            r#"
            [notifier]
            label = ""
            group_window = "soon"
            [notifier.channels.ops]
            type = "webhook"
            host = "x"
            [notifier.channels.mail]
            type = "email"
            tls = "ssl"
            to = ["nobody"]
            [notifier.channels.pager]
            type = "pager"
            [notifier.routes]
            lever_prod = ["ops", "nope"]
            ghost = ["ops"]
            "#,
        );
        for k in [
            "notifier.label",
            "notifier.group_window",
            "notifier.channels.ops.host",
            "notifier.channels.ops.url_credential",
            "notifier.channels.mail.tls",
            "notifier.channels.mail.host",
            "notifier.channels.mail.from",
            "notifier.channels.mail.to[0]",
            "notifier.channels.pager.type",
            "notifier.routes.lever_prod",
            "notifier.routes.ghost",
            "notifier.routes.default",
        ] {
            assert!(keys.contains(&k.to_string()), "{k} missing from {keys:?}");
        }
    }

    #[test]
    fn unknown_notifier_keys_are_rejected() {
        let keys = keys(
            r#"
            [notifier]
            group_windw = "1s"
            [notifier.channels.ops]
            type = "webhook"
            url = "https://hooks.example.com/secret"
            url_credential = "ops"
            [notifier.routes]
            default = ["ops"]
            "#,
        );
        assert!(
            keys.contains(&"notifier.group_windw".to_string()),
            "{keys:?}"
        );
        assert!(
            keys.contains(&"notifier.channels.ops.url".to_string()),
            "{keys:?}"
        );
    }
}
