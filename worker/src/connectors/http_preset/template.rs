//! Strings with `{{…}}` variables, and how values are put into them.
//!
//! A template is parsed once, when the spec is read (so a typo in a variable
//! name names its key), and rendered per request. Escaping depends on where
//! the result goes, never on the template author: percent-encoding in URLs,
//! JSON escapes in bodies. That is what keeps an e-mail with `+` or a login
//! with `/` from changing the request's shape.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use reqwest::header::HeaderValue;
use rolecall_common::credentials::CredentialParts;
use rolecall_common::messages::UserRef;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use url::Url;

use super::ConnectorError;

/// What a lookup needs and lacks when the inventory has no external id; the
/// error is permanent because retrying cannot conjure the id.
pub(super) const NEEDS_EXTERNAL_ID: &str =
    "look a user up without an external_id (this SaaS app needs external_id in the inventory)";

/// A `{{…}}` variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Var {
    Email,
    EmailRaw,
    UserId,
    ExternalId,
    BaseUrl,
    Named(String),
    Secret,
    SecretField(String),
}

const KNOWN_VARS: &str =
    "email, email_raw, user_id, external_id, base_url, vars.NAME, secret, secret.FIELD";

impl Var {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "email" => Var::Email,
            "email_raw" => Var::EmailRaw,
            "user_id" => Var::UserId,
            "external_id" => Var::ExternalId,
            "base_url" => Var::BaseUrl,
            "secret" => Var::Secret,
            _ => {
                if let Some(n) = name.strip_prefix("vars.") {
                    Var::Named(identifier(n)?.to_owned())
                } else if let Some(f) = name.strip_prefix("secret.") {
                    Var::SecretField(identifier(f)?.to_owned())
                } else {
                    return None;
                }
            }
        })
    }

    pub(super) fn is_secret(&self) -> bool {
        matches!(self, Var::Secret | Var::SecretField(_))
    }

    fn is_user(&self) -> bool {
        matches!(
            self,
            Var::Email | Var::EmailRaw | Var::UserId | Var::ExternalId
        )
    }

    fn name(&self) -> String {
        match self {
            Var::Email => "email".into(),
            Var::EmailRaw => "email_raw".into(),
            Var::UserId => "user_id".into(),
            Var::ExternalId => "external_id".into(),
            Var::BaseUrl => "base_url".into(),
            Var::Named(n) => format!("vars.{n}"),
            Var::Secret => "secret".into(),
            Var::SecretField(f) => format!("secret.{f}"),
        }
    }
}

/// Letters, digits, `-` and `_`: variable, credential field and preset names.
pub(super) fn identifier(name: &str) -> Option<&str> {
    (!name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
    .then_some(name)
}

#[derive(Debug, Clone)]
pub(super) enum Piece {
    Text(String),
    Var(Var),
}

/// A string with `{{…}}` variables.
#[derive(Debug, Clone)]
pub(super) struct Template {
    pub(super) pieces: Vec<Piece>,
}

/// Which variables a place may use (checked by `validate`, which knows the place).
#[derive(Clone, Copy, Debug)]
pub(super) struct Allow {
    secret: bool,
    user: bool,
}

impl Allow {
    /// The lookup URL: never secrets (URLs are logged by proxies and vendors).
    pub(super) const URL: Allow = Allow {
        secret: false,
        user: true,
    };
    /// The lookup's headers and body.
    pub(super) const PAYLOAD: Allow = Allow {
        secret: true,
        user: true,
    };
    /// Auth and the login's and the list's headers and body: the same for every user.
    pub(super) const AUTH: Allow = Allow {
        secret: true,
        user: false,
    };
    /// The login URL, the list's URL and its status condition.
    pub(super) const LOGIN_URL: Allow = Allow {
        secret: false,
        user: false,
    };
    /// Values compared in responses.
    pub(super) const CONDITION: Allow = Allow {
        secret: false,
        user: true,
    };
}

impl Template {
    /// Parses the `{{…}}` syntax; which variables are allowed depends on
    /// the place and is checked by [`allows`](Self::allows).
    pub(super) fn parse(text: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                pieces.push(Piece::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                return Err("unclosed `{{`".into());
            };
            let name = after[..end].trim();
            let Some(var) = Var::parse(name) else {
                return Err(format!(
                    "unknown variable `{{{{{name}}}}}` (known: {KNOWN_VARS})"
                ));
            };
            pieces.push(Piece::Var(var));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Self { pieces })
    }

    /// A template without variables.
    pub(super) fn literal(text: &str) -> Self {
        Self {
            pieces: vec![Piece::Text(text.to_owned())],
        }
    }

    /// Why this template may not stand where `allow` describes, if it may not.
    pub(super) fn allows(&self, allow: Allow) -> Result<(), String> {
        for var in self.vars() {
            if var.is_secret() && !allow.secret {
                return Err("secrets may only be used in headers, bodies and [auth], never in URLs or comparisons".into());
            }
            if var.is_user() && !allow.user {
                return Err(format!(
                    "`{{{{{}}}}}` is per user; authentication and the list must not depend on the user",
                    var.name()
                ));
            }
        }
        Ok(())
    }

    pub(super) fn vars(&self) -> impl Iterator<Item = &Var> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Var(v) => Some(v),
            Piece::Text(_) => None,
        })
    }

    pub(super) fn uses_secret(&self) -> bool {
        self.vars().any(Var::is_secret)
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Template::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// How substituted values are escaped; template text is never escaped.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Escape {
    None,
    /// Percent-encoded except RFC 3986 unreserved characters: safe in a
    /// path segment and in a query value alike.
    Url,
    /// JSON string escapes, without the quotes (the template has them).
    Json,
}

/// What variables stand for during one rendering.
pub(super) struct Values<'a> {
    pub(super) user: Option<&'a UserRef>,
    pub(super) base_url: &'a str,
    pub(super) vars: &'a BTreeMap<String, String>,
    pub(super) secret: SecretSource<'a>,
}

pub(super) enum SecretSource<'a> {
    Real(&'a Secrets),
    /// Build-time checks render a stand-in, so a check's error can never
    /// carry the real secret.
    Sample,
}

/// The credential: whole, and as named parts when the spec uses `{{secret.FIELD}}`.
pub(super) struct Secrets {
    pub(super) whole: SecretString,
    pub(super) parts: Option<CredentialParts>,
}

#[derive(Debug)]
pub(super) enum RenderError {
    MissingExternalId,
    /// A value that cannot travel in a URL path (`.` and `..` would move up
    /// the path even percent-encoded, per the URL standard).
    DotSegment,
    /// A variable with no value here; validation makes this unreachable.
    Unavailable(&'static str),
}

impl From<RenderError> for ConnectorError {
    fn from(e: RenderError) -> Self {
        ConnectorError::Unsupported(match e {
            RenderError::MissingExternalId => NEEDS_EXTERNAL_ID,
            RenderError::DotSegment => "put `.` or `..` into a URL",
            RenderError::Unavailable(what) => what,
        })
    }
}

pub(super) fn render(
    template: &Template,
    values: &Values<'_>,
    escape: Escape,
) -> Result<String, RenderError> {
    let mut out = String::new();
    for piece in &template.pieces {
        let var = match piece {
            Piece::Text(text) => {
                out.push_str(text);
                continue;
            }
            Piece::Var(var) => var,
        };
        let user = || {
            values
                .user
                .ok_or(RenderError::Unavailable("use a user variable here"))
        };
        let value: Cow<'_, str> = match var {
            // The base URL is a URL prefix, not a value: never encoded in URLs.
            Var::BaseUrl if escape == Escape::Url => {
                out.push_str(values.base_url);
                continue;
            }
            Var::BaseUrl => values.base_url.into(),
            Var::Email => user()?.email.trim().to_lowercase().into(),
            Var::EmailRaw => user()?.email.as_str().into(),
            Var::UserId => user()?.id.as_str().into(),
            Var::ExternalId => match user()?.external_id.as_deref().map(str::trim) {
                Some(id) if !id.is_empty() => id.into(),
                _ => return Err(RenderError::MissingExternalId),
            },
            Var::Named(name) => values
                .vars
                .get(name)
                .map(String::as_str)
                .ok_or(RenderError::Unavailable("use an undefined variable"))?
                .into(),
            Var::Secret => match &values.secret {
                SecretSource::Real(s) => s.whole.expose_secret().into(),
                SecretSource::Sample => "sample-secret".into(),
            },
            Var::SecretField(field) => match &values.secret {
                SecretSource::Real(s) => s
                    .parts
                    .as_ref()
                    .and_then(|p| p.get(field))
                    .ok_or(RenderError::Unavailable("use a missing credential field"))?
                    .expose_secret()
                    .into(),
                SecretSource::Sample => "sample-secret".into(),
            },
        };
        match escape {
            Escape::None => out.push_str(&value),
            Escape::Url => {
                if value == "." || value == ".." {
                    return Err(RenderError::DotSegment);
                }
                percent_encode_into(&mut out, &value);
            }
            Escape::Json => {
                let quoted = Value::String(value.into_owned()).to_string();
                out.push_str(&quoted[1..quoted.len() - 1]);
            }
        }
    }
    Ok(out)
}

fn percent_encode_into(out: &mut String, value: &str) {
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

pub(super) fn render_url(template: &Template, values: &Values<'_>) -> Result<Url, ConnectorError> {
    let text = render(template, values, Escape::Url)?;
    // Validated with sample values at build time; a failure here comes from
    // a user value, whose text must not reach the error.
    Url::parse(&text).map_err(|_| ConnectorError::Unsupported("build a valid URL for this user"))
}

/// A header value for the wire; secret-bearing ones are marked sensitive so
/// that HTTP/2 never indexes them and `Debug` never prints them.
pub(super) fn runtime_header(value: &str, secret: bool) -> Result<HeaderValue, ConnectorError> {
    let mut header = HeaderValue::from_str(value)
        .map_err(|_| ConnectorError::Unsupported("send a header value with control characters"))?;
    header.set_sensitive(secret);
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(email: &str, external_id: Option<&str>) -> UserRef {
        UserRef {
            id: "u-7".into(),
            email: email.into(),
            external_id: external_id.map(str::to_owned),
        }
    }

    fn values<'a>(user: Option<&'a UserRef>, vars: &'a BTreeMap<String, String>) -> Values<'a> {
        Values {
            user,
            base_url: "https://vendor.example/api",
            vars,
            secret: SecretSource::Sample,
        }
    }

    fn template(text: &str) -> Template {
        Template::parse(text).unwrap()
    }

    #[test]
    fn url_values_are_percent_encoded_and_emails_lower_cased() {
        let vars = BTreeMap::from([("org".to_owned(), "a b/c".to_owned())]);
        let u = user(" Jane.Doe+Tag@Example.com", Some("jd/../x"));
        let v = values(Some(&u), &vars);
        let url = template(
            "{{base_url}}/orgs/{{vars.org}}/m/{{external_id}}?e={{email}}&r={{email_raw}}",
        );
        assert_eq!(
            render(&url, &v, Escape::Url).unwrap(),
            "https://vendor.example/api/orgs/a%20b%2Fc/m/jd%2F..%2Fx?e=jane.doe%2Btag%40example.com&r=%20Jane.Doe%2BTag%40Example.com"
        );
        // The + survives a parse and comes back decoded as +, not a space.
        let parsed = render_url(&url, &v).unwrap();
        let e = parsed.query_pairs().find(|(k, _)| k == "e").unwrap().1;
        assert_eq!(e, "jane.doe+tag@example.com");
        let dots = user("a@b.c", Some(".."));
        assert!(matches!(
            render(
                &template("/{{external_id}}"),
                &values(Some(&dots), &vars),
                Escape::Url
            ),
            Err(RenderError::DotSegment)
        ));
    }

    #[test]
    fn body_values_are_json_escaped() {
        let vars = BTreeMap::new();
        let u = user(r#"x"y\z@example.com"#, None);
        let body = template(r#"{"email": "{{email}}", "id": "{{user_id}}"}"#);
        let text = render(&body, &values(Some(&u), &vars), Escape::Json).unwrap();
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["email"], r#"x"y\z@example.com"#);
        assert_eq!(parsed["id"], "u-7");
    }

    #[test]
    fn a_missing_external_id_is_a_permanent_error_naming_the_fix() {
        let vars = BTreeMap::new();
        for id in [None, Some(""), Some("  ")] {
            let u = user("a@example.com", id);
            let err = render(
                &template("{{external_id}}"),
                &values(Some(&u), &vars),
                Escape::Url,
            )
            .unwrap_err();
            let err = ConnectorError::from(err);
            assert_eq!(err.class(), crate::error::ErrorClass::Permanent);
            assert!(
                err.to_string()
                    .contains("needs external_id in the inventory"),
                "{err}"
            );
        }
    }

    #[test]
    fn template_syntax_errors_and_misplaced_variables_are_explained() {
        let err = Template::parse("{{emial}}").unwrap_err();
        assert!(err.contains("unknown variable `{{emial}}`"), "{err}");
        assert!(
            Template::parse("x {{email")
                .unwrap_err()
                .contains("unclosed")
        );
        assert!(
            Template::parse("{{vars.}}")
                .unwrap_err()
                .contains("unknown variable")
        );
        let secret = template("{{secret}}");
        assert!(
            secret
                .allows(Allow::URL)
                .unwrap_err()
                .contains("never in URLs")
        );
        assert!(secret.allows(Allow::AUTH).is_ok());
        let email = template("{{ email }}");
        assert!(
            email
                .allows(Allow::AUTH)
                .unwrap_err()
                .contains("`{{email}}` is per user")
        );
        // Spaces inside braces are tolerated.
        assert_eq!(email.pieces.len(), 1);
    }

    proptest::proptest! {
        /// Any template text parses or is refused with a reason; one that
        /// parses renders for any user without a panic.
        #[test]
        fn any_template_text_parses_or_is_refused_and_renders(
            text in "[a-z{}/?=&.]{0,20}(\\{\\{(email|user_id|external_id|base_url|vars\\.org|nope)\\}\\})?[a-z{}/]{0,10}",
            email in "\\PC{0,30}",
        ) {
            if let Ok(t) = Template::parse(&text) {
                let vars = BTreeMap::from([("org".to_owned(), "acme".to_owned())]);
                let u = user(&email, Some("x"));
                for escape in [Escape::Url, Escape::Json, Escape::None] {
                    let _ = render(&t, &values(Some(&u), &vars), escape);
                }
            }
        }
    }
}
