//! The spec as serde reads it.
//!
//! Shapes are `#[derive(Deserialize)]` with `deny_unknown_fields`, so a typo
//! fails the worker's start naming the key and the keys that exist. Values
//! with a syntax of their own (templates, JSON pointers, header names,
//! statuses) are types whose `Deserialize` checks that syntax, so their
//! errors carry the key too. What depends on more than one key or on the
//! place (which variables a template may use, `body` needs `POST`) is
//! `validate`'s job.
//!
//! `[auth]` and `[pagination]` are tables tagged by a key inside them
//! (`kind`, `style`). serde's internally tagged enums buffer the table and
//! lose the path of every error inside it, so [`parse`] moves the tag out
//! first (`{kind = "bearer", token = …}` → `{bearer = {token = …}}`) and
//! reads an ordinary externally tagged enum, whose errors keep their path.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Deref;

use reqwest::header::{AUTHORIZATION, HeaderName};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::list::ListSpec;
use super::pagination::Pagination;
use super::rules::{Condition, NotFoundRules, ThrottleRule};
use super::template::Template;

/// A spec problem: the key (relative to the spec's root, or to the options
/// when `option` is set) and why.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Problem {
    pub(super) path: String,
    pub(super) reason: String,
    /// The key is an option of the SaaS app (`vars.org`), not a key of the
    /// spec, even when the spec came from a preset file.
    pub(super) option: bool,
}

impl Problem {
    pub(super) fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
            option: false,
        }
    }

    pub(super) fn option(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            option: true,
            ..Self::new(path, reason)
        }
    }
}

/// `path.key`; `key` at the root, `path` for the table itself (an empty key).
pub(super) fn join(path: &str, key: &str) -> String {
    match (path.is_empty(), key.is_empty()) {
        (true, _) => key.to_owned(),
        (false, true) => path.to_owned(),
        (false, false) => format!("{path}.{key}"),
    }
}

/// A spec, read. `validate` checks what its types cannot.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Spec {
    #[serde(default = "inline_name")]
    pub(super) name: String,
    /// For readers of the spec; the connector does not use it.
    #[serde(default, rename = "description")]
    _description: Option<String>,
    /// Default values of `{{vars.NAME}}`.
    #[serde(default)]
    pub(super) vars: BTreeMap<String, String>,
    pub(super) auth: Auth,
    pub(super) request: RequestSpec,
    pub(super) response: ResponseSpec,
    #[serde(default)]
    pub(super) pagination: Pagination,
    /// How to list every user (for inventory imports); `None`: the preset
    /// cannot list.
    pub(super) list: Option<ListSpec>,
}

fn inline_name() -> String {
    "inline spec".into()
}

/// How every lookup authenticates (`[auth]`, tagged by `kind`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub(super) enum Auth {
    Basic {
        user: Template,
        #[serde(default = "empty_template")]
        password: Template,
    },
    Bearer {
        token: Template,
    },
    Header {
        name: HeaderKey,
        value: Template,
    },
    Session(Box<Session>),
}

fn empty_template() -> Template {
    Template::literal("")
}

/// A login whose answer holds a token sent with every lookup.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Session {
    pub(super) login: RequestSpec,
    pub(super) token_from: TokenFrom,
    /// The header the token is sent in.
    #[serde(default = "authorization")]
    pub(super) header: HeaderKey,
    /// Text before the token (`"Bearer "`).
    #[serde(default)]
    pub(super) prefix: String,
}

fn authorization() -> HeaderKey {
    HeaderKey {
        name: AUTHORIZATION,
        written: AUTHORIZATION.to_string(),
    }
}

/// Where the login response holds the token.
#[derive(Debug)]
pub(super) enum TokenFrom {
    Header(HeaderName),
    Json(String),
}

impl std::fmt::Display for TokenFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenFrom::Header(name) => write!(f, "header:{name}"),
            TokenFrom::Json(pointer) => write!(f, "json:{pointer}"),
        }
    }
}

impl<'de> Deserialize<'de> for TokenFrom {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if let Some(name) = text.strip_prefix("header:") {
            HeaderName::from_bytes(name.trim().as_bytes())
                .map(TokenFrom::Header)
                .map_err(|_| de::Error::custom("`header:` needs a valid HTTP header name"))
        } else if let Some(pointer) = text.strip_prefix("json:") {
            if pointer.starts_with('/') {
                Ok(TokenFrom::Json(pointer.to_owned()))
            } else {
                Err(de::Error::custom(
                    "`json:` needs a JSON pointer such as json:/access_token",
                ))
            }
        } else {
            Err(de::Error::custom(
                "must be \"header:<Name>\" or \"json:<pointer>\"",
            ))
        }
    }
}

/// The lookup (`[request]`) or the login (`[auth.login]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RequestSpec {
    #[serde(default)]
    pub(super) method: Method,
    pub(super) url: Template,
    #[serde(default)]
    pub(super) headers: Headers,
    pub(super) body: Option<Template>,
    /// HTTP Basic on the login request (an OAuth token endpoint's client id
    /// and secret); the lookup's auth lives in `[auth]` (`validate` says so).
    pub(super) basic: Option<Basic>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Basic {
    pub(super) user: Template,
    #[serde(default = "empty_template")]
    pub(super) password: Template,
}

/// `GET` or `POST` (any case): a lookup reads, it never changes anything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum Method {
    #[default]
    Get,
    Post,
}

impl Method {
    pub(super) fn http(self) -> reqwest::Method {
        match self {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
        }
    }
}

impl<'de> Deserialize<'de> for Method {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match String::deserialize(deserializer)?
            .to_ascii_uppercase()
            .as_str()
        {
            "GET" => Ok(Method::Get),
            "POST" => Ok(Method::Post),
            _ => Err(de::Error::custom(
                "must be GET or POST (a lookup reads, it never changes anything)",
            )),
        }
    }
}

/// Header names (as written, and parsed) and their templates, in the spec's order.
#[derive(Debug, Default)]
pub(super) struct Headers(pub(super) Vec<(HeaderKey, Template)>);

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Headers;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table of header names and values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Headers, A::Error> {
                let mut headers = Vec::new();
                while let Some(key) = map.next_key()? {
                    headers.push((key, map.next_value()?));
                }
                Ok(Headers(headers))
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// A valid HTTP header name, and how the spec wrote it (for error paths).
#[derive(Debug, Clone)]
pub(super) struct HeaderKey {
    pub(super) name: HeaderName,
    pub(super) written: String,
}

impl<'de> Deserialize<'de> for HeaderKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let written = String::deserialize(deserializer)?;
        match HeaderName::from_bytes(written.as_bytes()) {
            Ok(name) => Ok(HeaderKey { name, written }),
            Err(_) => Err(de::Error::custom("is not a valid HTTP header name")),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ResponseSpec {
    #[serde(default)]
    pub(super) not_found: NotFoundRules,
    /// Pointer to the array of candidates; empty: the body (see `rules::items`).
    #[serde(default)]
    pub(super) list: Pointer,
    #[serde(rename = "match")]
    pub(super) matcher: Option<Condition>,
    pub(super) role: InnerPointer,
    pub(super) role_default: Option<String>,
    pub(super) vendor_id: InnerPointer,
    pub(super) active: Option<Condition>,
    /// Where the vendor's error code is (pointer or field name).
    #[serde(default = "default_error_code")]
    pub(super) error_code: String,
    pub(super) throttle: Option<ThrottleRule>,
}

fn default_error_code() -> String {
    "/code".into()
}

/// A JSON pointer: `""` (the whole document) or `/a/b`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Pointer(String);

impl Deref for Pointer {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Pointer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.is_empty() || text.starts_with('/') {
            Ok(Pointer(text))
        } else {
            Err(de::Error::custom(
                "must be a JSON pointer: \"\" or starting with / (e.g. \"/user/id\")",
            ))
        }
    }
}

/// A JSON pointer into the document (not the document itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct InnerPointer(Pointer);

impl Deref for InnerPointer {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for InnerPointer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let pointer = Pointer::deserialize(deserializer)?;
        if pointer.is_empty() {
            return Err(de::Error::custom(
                "must point into the document (e.g. \"/role\")",
            ));
        }
        Ok(InnerPointer(pointer))
    }
}

/// One HTTP status or a list of them.
#[derive(Debug, Clone, Default)]
pub(super) struct Statuses(pub(super) Vec<u16>);

impl<'de> Deserialize<'de> for Statuses {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Statuses;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an HTTP status or a list of them")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Statuses, E> {
                u16::try_from(v)
                    .map(|s| Statuses(vec![s]))
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Statuses, E> {
                u16::try_from(v)
                    .map(|s| Statuses(vec![s]))
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Statuses, A::Error> {
                let mut statuses = Vec::new();
                while let Some(status) = seq.next_element()? {
                    statuses.push(status);
                }
                Ok(Statuses(statuses))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Tables tagged by a key inside them: (key of the table, tag, default tag).
const TAGGED: &[(&str, &str, Option<&str>)] = &[
    ("auth", "kind", None),
    ("pagination", "style", Some("none")),
    ("list.pagination", "style", Some("none")),
];

/// Reads a spec document; the problem's path is relative to the spec's root.
pub(super) fn parse(mut doc: Value) -> Result<Spec, Problem> {
    let Value::Object(root) = &mut doc else {
        return Err(Problem::new("", "must be a table"));
    };
    for (key, tag, default) in TAGGED {
        retag(root, key, tag, *default)?;
    }
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = path_of(e.path());
        let reason = e.into_inner().to_string();
        Problem::new(path, reason)
    })
}

/// `{tag = "x", …}` at `root[key]` → `{x = {…}}`; `key` may be dotted
/// (`list.pagination`). A missing table, or a parent that is not a table
/// (serde names that one), is left alone.
fn retag(
    root: &mut Map<String, Value>,
    key: &str,
    tag: &str,
    default: Option<&str>,
) -> Result<(), Problem> {
    let mut parent = root;
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().expect("split yields one part");
    for part in parts {
        match parent.get_mut(part) {
            Some(Value::Object(inner)) => parent = inner,
            _ => return Ok(()),
        }
    }
    let Some(place) = parent.get_mut(last) else {
        return Ok(());
    };
    let Value::Object(table) = place else {
        return Err(Problem::new(key, "must be a table"));
    };
    let variant = match (table.remove(tag), default) {
        (Some(Value::String(variant)), _) => variant,
        (None, Some(default)) => default.to_owned(),
        (None, None) => return Err(Problem::new(key, format!("missing field `{tag}`"))),
        (Some(_), _) => return Err(Problem::new(join(key, tag), "must be a string")),
    };
    let inner = std::mem::take(table);
    table.insert(variant, Value::Object(inner));
    Ok(())
}

/// `response.not_found[1].pointer`: map keys joined by dots, list indexes in
/// brackets, the enum level that [`retag`] added left out. An error at a
/// retagged table itself is about its tag (an unknown `kind`), so it names the tag.
fn path_of(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    let mut last_was_enum = false;
    for segment in path.iter() {
        last_was_enum = false;
        match segment {
            serde_path_to_error::Segment::Seq { index } => {
                let _ = write!(out, "[{index}]");
            }
            serde_path_to_error::Segment::Map { key } => out = join(&out, key),
            serde_path_to_error::Segment::Enum { .. } => last_was_enum = true,
            serde_path_to_error::Segment::Unknown => out = join(&out, "?"),
        }
    }
    if !last_was_enum && let Some((_, tag, _)) = TAGGED.iter().find(|(key, _, _)| *key == out) {
        out = join(&out, tag);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(doc: Value) -> Problem {
        parse(doc).expect_err("a problem")
    }

    fn minimal() -> Value {
        serde_json::json!({
            "auth": {"kind": "bearer", "token": "{{secret}}"},
            "request": {"url": "{{base_url}}/u"},
            "response": {"role": "/role", "vendor_id": "/id"},
        })
    }

    #[test]
    fn errors_inside_tagged_tables_keep_their_path() {
        let mut doc = minimal();
        doc["auth"] =
            serde_json::json!({"kind": "session", "token_from": "json:/t", "login": {"url": 1}});
        let p = problem(doc);
        assert_eq!(p.path, "auth.login.url");
        let mut doc = minimal();
        doc["auth"] = serde_json::json!({"kind": "oauth"});
        let p = problem(doc);
        assert_eq!(p.path, "auth.kind");
        assert!(p.reason.contains("unknown variant `oauth`"), "{p:?}");
        let mut doc = minimal();
        doc["auth"] = serde_json::json!({"token": "x"});
        assert_eq!(problem(doc), Problem::new("auth", "missing field `kind`"));
        let mut doc = minimal();
        doc["auth"] = serde_json::json!({"kind": "bearer"});
        let p = problem(doc);
        assert_eq!(
            (p.path.as_str(), p.reason.as_str()),
            ("auth", "missing field `token`")
        );
        let mut doc = minimal();
        doc["pagination"] = serde_json::json!({"max_pages": 3});
        let p = problem(doc);
        assert_eq!(p.path, "pagination.max_pages");
    }

    #[test]
    fn list_items_are_named_by_index() {
        let mut doc = minimal();
        doc["response"]["not_found"] = serde_json::json!([{"status": 404}, {"status": [200, "x"]}]);
        let p = problem(doc);
        assert_eq!(p.path, "response.not_found[1].status[1]");
    }

    #[test]
    fn a_spec_without_pagination_reads() {
        let spec = parse(minimal()).unwrap();
        assert_eq!(spec.name, "inline spec");
        assert_eq!(&*spec.response.role, "/role");
        assert_eq!(spec.response.error_code, "/code");
        assert_eq!(spec.request.method, Method::Get);
    }
}
