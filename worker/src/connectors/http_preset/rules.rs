//! Reading an answer: conditions, "not found" rules, throttle rules, and
//! where the candidates are in a body.
//!
//! "Not found" may deactivate someone, so it needs an affirmative answer: a
//! rule holds only when every part it states holds, an *absent* value is
//! never "empty", and a status the spec does not name stays an error.

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::ConnectorError;
use super::spec::{HeaderKey, Pointer, Statuses};
use super::template::{Escape, RenderError, Template, Values, render};
use crate::vendor::quota::Quota;

/// A test on one value of a JSON document.
#[derive(Debug, Deserialize)]
#[serde(try_from = "ConditionDoc")]
pub(super) struct Condition {
    pub(super) pointer: Pointer,
    pub(super) test: Test,
    pub(super) case_insensitive: bool,
}

/// A condition as written: `pointer` and exactly one test.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConditionDoc {
    pointer: Pointer,
    equals: Option<Expected>,
    one_of: Option<Vec<Expected>>,
    is_null: Option<bool>,
    #[serde(default)]
    case_insensitive: bool,
}

/// The test keys, shared by conditions and "not found" rules (serde's
/// `flatten` would lose `deny_unknown_fields` and the error paths).
struct TestDoc {
    equals: Option<Expected>,
    one_of: Option<Vec<Expected>>,
    is_null: Option<bool>,
    case_insensitive: bool,
}

impl TestDoc {
    fn given(&self) -> usize {
        usize::from(self.equals.is_some())
            + usize::from(self.one_of.is_some())
            + usize::from(self.is_null.is_some())
    }

    fn into_test(self) -> Result<Test, &'static str> {
        match (self.equals, self.one_of, self.is_null) {
            (Some(e), None, None) => Ok(Test::Equals(e)),
            (None, Some(list), None) => Ok(Test::OneOf(list)),
            (None, None, Some(want)) => Ok(Test::IsNull(want)),
            (None, None, None) => Err("needs a test: `equals`, `one_of` or `is_null`"),
            _ => Err("use only one of `equals`, `one_of`, `is_null`"),
        }
    }
}

impl TryFrom<ConditionDoc> for Condition {
    type Error = &'static str;

    fn try_from(doc: ConditionDoc) -> Result<Self, Self::Error> {
        let test = TestDoc {
            equals: doc.equals,
            one_of: doc.one_of,
            is_null: doc.is_null,
            case_insensitive: doc.case_insensitive,
        };
        Condition::new(doc.pointer, test)
    }
}

impl Condition {
    fn new(pointer: Pointer, test: TestDoc) -> Result<Self, &'static str> {
        let case_insensitive = test.case_insensitive;
        Ok(Condition {
            pointer,
            test: test.into_test()?,
            case_insensitive,
        })
    }
}

#[derive(Debug)]
pub(super) enum Test {
    Equals(Expected),
    OneOf(Vec<Expected>),
    /// `true`: null or absent; `false`: present and not null.
    IsNull(bool),
}

/// The value a condition compares with.
#[derive(Debug)]
pub(super) enum Expected {
    Text(Template),
    Number(serde_json::Number),
    Bool(bool),
}

impl<'de> Deserialize<'de> for Expected {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Expected;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Expected, E> {
                Template::parse(v).map(Expected::Text).map_err(E::custom)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Expected, E> {
                Ok(Expected::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Expected, E> {
                Ok(Expected::Number(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Expected, E> {
                Ok(Expected::Number(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Expected, E> {
                serde_json::Number::from_f64(v)
                    .map(Expected::Number)
                    .ok_or_else(|| E::custom("must be a finite number"))
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl Condition {
    pub(super) fn holds(&self, doc: &Value, values: &Values<'_>) -> Result<bool, RenderError> {
        let actual = doc.pointer(&self.pointer);
        match &self.test {
            Test::IsNull(want) => Ok(actual.is_none_or(Value::is_null) == *want),
            Test::Equals(expected) => self.equal(actual, expected, values),
            Test::OneOf(list) => {
                for expected in list {
                    if self.equal(actual, expected, values)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
        }
    }

    /// Numbers compare as numbers, everything else as text (so `equals = 0`
    /// matches `0` and `"0"`, and `"2"` matches Zoom's `2`).
    fn equal(
        &self,
        actual: Option<&Value>,
        expected: &Expected,
        values: &Values<'_>,
    ) -> Result<bool, RenderError> {
        let Some(actual) = actual else {
            return Ok(false);
        };
        let want = match (expected, actual) {
            (Expected::Number(n), Value::Number(a)) => return Ok(n.as_f64() == a.as_f64()),
            (Expected::Bool(b), Value::Bool(a)) => return Ok(a == b),
            (Expected::Number(n), _) => n.to_string(),
            (Expected::Bool(b), _) => b.to_string(),
            (Expected::Text(t), _) => render(t, values, Escape::None)?,
        };
        let Some(got) = scalar_text(actual) else {
            return Ok(false);
        };
        Ok(if self.case_insensitive {
            got.to_lowercase() == want.to_lowercase()
        } else {
            got == want
        })
    }

    /// The templates among the expected values, with their key relative to the condition.
    pub(super) fn templates(&self) -> Vec<(String, &Template)> {
        match &self.test {
            Test::Equals(Expected::Text(t)) => vec![("equals".into(), t)],
            Test::OneOf(list) => list
                .iter()
                .enumerate()
                .filter_map(|(i, e)| match e {
                    Expected::Text(t) => Some((format!("one_of[{i}]"), t)),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// "Not found" when every part given holds.
#[derive(Debug, Deserialize)]
#[serde(try_from = "NotFoundDoc")]
pub(super) struct NotFoundRule {
    /// Statuses it applies to; empty: any success.
    pub(super) status: Vec<u16>,
    pub(super) when: Option<Condition>,
    /// Pointer to an array/object/string that must exist and be empty.
    pub(super) empty: Option<Pointer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NotFoundDoc {
    #[serde(default)]
    status: Statuses,
    empty: Option<Pointer>,
    pointer: Option<Pointer>,
    equals: Option<Expected>,
    one_of: Option<Vec<Expected>>,
    is_null: Option<bool>,
    #[serde(default)]
    case_insensitive: bool,
}

impl TryFrom<NotFoundDoc> for NotFoundRule {
    type Error = &'static str;

    fn try_from(doc: NotFoundDoc) -> Result<Self, Self::Error> {
        let test = TestDoc {
            equals: doc.equals,
            one_of: doc.one_of,
            is_null: doc.is_null,
            case_insensitive: doc.case_insensitive,
        };
        let when = match doc.pointer {
            Some(pointer) => Some(Condition::new(pointer, test)?),
            None if test.given() > 0 || test.case_insensitive => {
                return Err("a test needs `pointer`");
            }
            None => None,
        };
        if doc.status.0.is_empty() && when.is_none() && doc.empty.is_none() {
            return Err("needs `status`, `empty` or `pointer` with a test");
        }
        Ok(NotFoundRule {
            status: doc.status.0,
            when,
            empty: doc.empty,
        })
    }
}

impl NotFoundRule {
    pub(super) fn holds(
        &self,
        status: u16,
        body: &Value,
        values: &Values<'_>,
    ) -> Result<bool, RenderError> {
        let status_ok = if self.status.is_empty() {
            (200..300).contains(&status)
        } else {
            self.status.contains(&status)
        };
        if !status_ok {
            return Ok(false);
        }
        if let Some(pointer) = &self.empty
            && !is_empty_at(body, pointer)
        {
            return Ok(false);
        }
        match &self.when {
            Some(condition) => condition.holds(body, values),
            None => Ok(true),
        }
    }
}

/// One rule, or a list of them (`not_found = { … }` or `not_found = [{ … }, …]`).
#[derive(Debug, Default)]
pub(super) struct NotFoundRules {
    pub(super) rules: Vec<NotFoundRule>,
    /// Written as a list, so problems name a rule by its index.
    pub(super) listed: bool,
}

impl NotFoundRules {
    /// Each rule with its key (`response.not_found` or `response.not_found[1]`).
    pub(super) fn keyed(&self, key: &str) -> Vec<(String, &NotFoundRule)> {
        self.rules
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                let path = if self.listed {
                    format!("{key}[{i}]")
                } else {
                    key.to_owned()
                };
                (path, rule)
            })
            .collect()
    }
}

impl<'de> Deserialize<'de> for NotFoundRules {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NotFoundRules;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a rule (a table) or a list of rules")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<NotFoundRules, A::Error> {
                let rule = NotFoundRule::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(NotFoundRules {
                    rules: vec![rule],
                    listed: false,
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NotFoundRules, A::Error> {
                let mut rules = Vec::new();
                while let Some(rule) = seq.next_element()? {
                    rules.push(rule);
                }
                Ok(NotFoundRules {
                    rules,
                    listed: true,
                })
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A vendor-specific throttle signal beyond the ones every connector
/// reads (429, 503 with `Retry-After`, 403 with no quota left).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ThrottleRule {
    pub(super) status: Statuses,
    pub(super) header: Option<HeaderKey>,
    pub(super) equals: Option<Scalar>,
    /// Epoch seconds at which the quota is back.
    pub(super) reset_header: Option<HeaderKey>,
}

impl ThrottleRule {
    /// The status is listed and the header says so; a `Retry-After` on a
    /// listed status counts too (GitHub's secondary limits send only that).
    pub(super) fn matches(&self, status: u16, headers: &HeaderMap) -> bool {
        if !self.status.0.contains(&status) {
            return false;
        }
        match (&self.header, &self.equals) {
            (Some(name), Some(want)) => {
                headers
                    .get(&name.name)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.trim() == want.0)
                    || headers.contains_key(reqwest::header::RETRY_AFTER)
            }
            _ => true,
        }
    }

    /// `Retry-After` first, then the reset header (RFC 9110 before vendor
    /// conventions, as in VENDORS.md §9.3).
    pub(super) fn wait(&self, headers: &HeaderMap) -> Option<Duration> {
        Quota::read(headers).retry_after.or_else(|| {
            let reset: i64 = headers
                .get(&self.reset_header.as_ref()?.name)?
                .to_str()
                .ok()?
                .trim()
                .parse()
                .ok()?;
            let wait = reset.saturating_sub(chrono::Utc::now().timestamp());
            Some(Duration::from_secs(wait.max(0).unsigned_abs()))
        })
    }
}

/// A string or a number, as text (a header value to compare with).
#[derive(Debug)]
pub(super) struct Scalar(pub(super) String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::String(s) => Ok(Scalar(s)),
            Value::Number(n) => Ok(Scalar(n.to_string())),
            _ => Err(de::Error::custom("must be a string or number")),
        }
    }
}

/// The candidates in a response: the array at `list`; with `list = ""` the
/// body itself — its elements when it is an array (GitHub's member list),
/// else the body as the one candidate (a single-user endpoint).
pub(super) fn items<'b>(body: &'b Value, list: &str) -> Result<Vec<&'b Value>, ConnectorError> {
    if list.is_empty() {
        return Ok(match body {
            Value::Array(items) => items.iter().collect(),
            single => vec![single],
        });
    }
    match body.pointer(list) {
        Some(Value::Array(items)) => Ok(items.iter().collect()),
        Some(Value::Null) => Ok(Vec::new()),
        Some(_) => Err(ConnectorError::Decode(format!("{list} is not a list"))),
        None => Err(ConnectorError::Decode(format!("no list at {list}"))),
    }
}

/// Strings as they are, numbers and booleans as text; `None` for the rest.
pub(super) fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Present and empty; absent is *not* empty, so a changed response shape
/// fails loudly instead of reporting everyone as not found.
fn is_empty_at(body: &Value, pointer: &str) -> bool {
    match body.pointer(pointer) {
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        Some(Value::String(s)) => s.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use reqwest::header::HeaderValue;
    use rolecall_common::messages::UserRef;

    use super::super::template::SecretSource;
    use super::*;

    fn toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
        let value = super::super::load::parse_toml(text)?;
        serde_path_to_error::deserialize(value).map_err(|e| format!("{}: {}", e.path(), e.inner()))
    }

    fn with_values<R>(f: impl FnOnce(&Values<'_>) -> R) -> R {
        let vars = BTreeMap::new();
        let u = UserRef {
            id: "u-7".into(),
            email: "Jane@Example.com".into(),
            external_id: Some("JaneD".into()),
        };
        f(&Values {
            user: Some(&u),
            base_url: "https://vendor.example/api",
            vars: &vars,
            secret: SecretSource::Sample,
        })
    }

    #[test]
    fn conditions_compare_numbers_text_and_null() {
        let doc = serde_json::json!({
            "login": "janed", "email": "jane@example.com", "n": 0, "s": "0",
            "deactivatedAt": null, "gone": 1700000000000_i64, "ok": true
        });
        with_values(|v| {
            let holds = |text: &str| toml::<Condition>(text).unwrap().holds(&doc, v).unwrap();
            assert!(holds(
                "pointer = \"/login\"\nequals = \"{{external_id}}\"\ncase_insensitive = true"
            ));
            assert!(!holds("pointer = \"/login\"\nequals = \"{{external_id}}\""));
            assert!(holds("pointer = \"/email\"\nequals = \"{{email}}\""));
            assert!(holds("pointer = \"/n\"\nequals = 0"));
            assert!(holds("pointer = \"/s\"\nequals = 0"));
            assert!(holds("pointer = \"/ok\"\nequals = true"));
            assert!(holds("pointer = \"/deactivatedAt\"\nis_null = true"));
            assert!(holds("pointer = \"/absent\"\nis_null = true"));
            assert!(!holds("pointer = \"/gone\"\nis_null = true"));
            assert!(holds("pointer = \"/gone\"\nis_null = false"));
            assert!(!holds("pointer = \"/absent\"\nequals = \"x\""));
        });
    }

    #[test]
    fn a_condition_needs_exactly_one_test() {
        let none = toml::<Condition>("pointer = \"/a\"").unwrap_err();
        assert!(none.contains("needs a test"), "{none}");
        let two = toml::<Condition>("pointer = \"/a\"\nequals = 1\nis_null = true").unwrap_err();
        assert!(two.contains("only one of"), "{two}");
        let typo = toml::<Condition>("pointer = \"/a\"\nequal = 1").unwrap_err();
        assert!(typo.contains("unknown field `equal`"), "{typo}");
    }

    #[test]
    fn not_found_rules_need_every_part_to_hold() {
        // A TOML document is a table: the list sits under a key.
        #[derive(Deserialize)]
        struct Doc {
            not_found: NotFoundRules,
        }
        let rules = toml::<Doc>(
            r#"not_found = [
                { status = [404], pointer = "/code", equals = 1001 },
                { pointer = "/totalResults", equals = 0 },
                { empty = "/data" },
            ]"#,
        )
        .unwrap()
        .not_found;
        with_values(|v| {
            let any = |status: u16, body: Value| {
                rules
                    .rules
                    .iter()
                    .any(|r| r.holds(status, &body, v).unwrap())
            };
            assert!(any(
                404,
                serde_json::json!({"code": 1001, "message": "User does not exist"})
            ));
            assert!(!any(404, serde_json::json!({"code": 124})));
            assert!(!any(404, Value::Null));
            assert!(any(
                200,
                serde_json::json!({"totalResults": 0, "Resources": []})
            ));
            assert!(!any(200, serde_json::json!({"totalResults": 1})));
            assert!(any(200, serde_json::json!({"data": []})));
            // Absent is not empty: a changed shape must not read as "nobody here".
            assert!(!any(200, serde_json::json!({"users": []})));
            assert!(!any(200, serde_json::json!({"data": [{}]})));
        });
    }

    #[test]
    fn lists_are_found_by_pointer_or_are_the_body() {
        let single = serde_json::json!({"id": 1});
        assert_eq!(items(&single, "").unwrap(), vec![&single]);
        let bare = serde_json::json!([{"id": 1}, {"id": 2}]);
        assert_eq!(items(&bare, "").unwrap().len(), 2);
        let wrapped = serde_json::json!({"data": [{"id": 1}], "none": null, "one": {}});
        assert_eq!(items(&wrapped, "/data").unwrap().len(), 1);
        assert!(items(&wrapped, "/none").unwrap().is_empty());
        assert!(matches!(
            items(&wrapped, "/one"),
            Err(ConnectorError::Decode(_))
        ));
        assert!(matches!(
            items(&wrapped, "/users"),
            Err(ConnectorError::Decode(_))
        ));
    }

    #[test]
    fn throttle_rules_read_the_reset_header() {
        let rule: ThrottleRule = toml(
            r#"status = [403]
            header = "x-ratelimit-remaining"
            equals = "0"
            reset_header = "x-ratelimit-reset""#,
        )
        .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        let reset = (chrono::Utc::now().timestamp() + 30).to_string();
        headers.insert("x-ratelimit-reset", HeaderValue::from_str(&reset).unwrap());
        assert!(rule.matches(403, &headers));
        assert!(!rule.matches(401, &headers));
        let wait = rule.wait(&headers).unwrap();
        assert!((28..=30).contains(&wait.as_secs()), "{wait:?}");
        let mut plain = HeaderMap::new();
        plain.insert("x-ratelimit-remaining", HeaderValue::from_static("17"));
        assert!(
            !rule.matches(403, &plain),
            "a plain 403 is a permission problem"
        );
        plain.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("60"));
        assert!(rule.matches(403, &plain));
        assert_eq!(rule.wait(&plain), Some(Duration::from_secs(60)));
    }
}
