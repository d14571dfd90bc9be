//! Criteria: which inventory rows a run checks (the Begin block's rules).
//!
//! A rule is one line of text, `field op value`:
//!
//! | rule | selects rows whose field … |
//! |---|---|
//! | `status == active`, `status != active` | equals / differs (case-insensitive; a missing field is "") |
//! | `department in [sales, "customer success"]`, `not in [..]` | is / is not one of the values |
//! | `email starts_with admin`, `ends_with @corp.com`, `contains test` | has the prefix, suffix, substring (case-insensitive) |
//! | `last_login older_than 90d`, `newer_than 2w` | holds a date (RFC 3339 or `YYYY-MM-DD`) before / within that age |
//! | `external_id exists`, `external_id not exists` | is present and not empty / is absent or empty |
//!
//! Rules combine as TOML: a list means all of them; `{ all = [...] }` and
//! `{ any = [...] }` nest. Rules are parsed when the configuration is
//! validated, so a bad rule stops the process at start naming its key and
//! its text; the fields a rule names are checked against the inventory's
//! columns when a run opens it.

use std::fmt;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::Deserialize;

/// Criteria as the configuration writes them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawCriteria {
    /// One rule.
    Rule(String),
    /// Every element must hold.
    List(Vec<RawCriteria>),
    /// `{ all = [...] }`: every element must hold.
    All {
        /// The elements.
        all: Vec<RawCriteria>,
    },
    /// `{ any = [...] }`: at least one element must hold.
    Any {
        /// The elements.
        any: Vec<RawCriteria>,
    },
}

/// Validated criteria: a tree of rules.
#[derive(Debug, Clone, PartialEq)]
pub enum Criteria {
    /// One rule, with the key it was configured under (for messages).
    Rule {
        /// The parsed rule.
        rule: Rule,
        /// Where it was configured, e.g. `workflow.nightly.criteria[1]`.
        key: String,
    },
    /// Every element must hold (an empty list selects every row).
    All(Vec<Criteria>),
    /// At least one element must hold.
    Any(Vec<Criteria>),
}

/// Access to a row's fields by name.
pub trait Fields {
    /// A field's value; `None` when the row does not have it.
    fn field(&self, name: &str) -> Option<&str>;
}

impl Criteria {
    /// The default: only active users.
    pub fn default_active() -> Criteria {
        Criteria::All(vec![Criteria::Rule {
            rule: Rule::parse("status == active").expect("the default rule parses"),
            key: "criteria (default)".into(),
        }])
    }

    /// Whether a row is selected, with dates compared to `now`.
    pub fn matches(&self, row: &impl Fields, now: DateTime<Utc>) -> bool {
        match self {
            Criteria::Rule { rule, .. } => rule.matches(row.field(&rule.field), now),
            Criteria::All(items) => items.iter().all(|c| c.matches(row, now)),
            Criteria::Any(items) => items.iter().any(|c| c.matches(row, now)),
        }
    }

    /// Every rule with its key, for checking the fields they name.
    pub fn rules(&self) -> Vec<(&Rule, &str)> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect<'a>(&'a self, out: &mut Vec<(&'a Rule, &'a str)>) {
        match self {
            Criteria::Rule { rule, key } => out.push((rule, key)),
            Criteria::All(items) | Criteria::Any(items) => {
                items.iter().for_each(|c| c.collect(out))
            }
        }
    }
}

/// One comparison of a field with a value.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Inventory field or free attribute name.
    pub field: String,
    /// The comparison.
    pub op: Op,
    /// The text as configured, for messages.
    pub text: String,
}

/// What a rule compares.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `==` (case-insensitive).
    Eq(String),
    /// `!=`.
    Ne(String),
    /// `in [..]`.
    In(Vec<String>),
    /// `not in [..]`.
    NotIn(Vec<String>),
    /// `starts_with`.
    StartsWith(String),
    /// `ends_with`.
    EndsWith(String),
    /// `contains`.
    Contains(String),
    /// A date further back than this age.
    OlderThan(TimeDelta),
    /// A date within this age.
    NewerThan(TimeDelta),
    /// Present and not empty.
    Exists,
    /// Absent or empty.
    NotExists,
}

impl Rule {
    /// Parses one rule; the error says what is wrong in words.
    pub fn parse(text: &str) -> Result<Rule, String> {
        let trimmed = text.trim();
        let (field, rest) = trimmed
            .split_once(char::is_whitespace)
            .map(|(f, r)| (f, r.trim()))
            .unwrap_or((trimmed, ""));
        // `field==value` without spaces is common enough to accept.
        let (field, rest) = match field.find(['=', '!']) {
            Some(i) if i > 0 => (&field[..i], format!("{} {rest}", &field[i..])),
            _ => (field, rest.to_string()),
        };
        if field.is_empty()
            || !field
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
        {
            return Err(format!(
                "`{field}` is not a field name (letters, digits, '_', '-', '.')"
            ));
        }
        let rest = rest.trim();
        let (op_word, operand) = split_op(rest);
        let one = |what: &str| -> Result<String, String> {
            let v = unquote(operand);
            if v.is_empty() {
                Err(format!("`{what}` needs a value"))
            } else {
                Ok(v)
            }
        };
        let op = match op_word {
            "==" => Op::Eq(one("==")?),
            "!=" => Op::Ne(one("!=")?),
            "in" => Op::In(list(operand)?),
            "not in" => Op::NotIn(list(operand)?),
            "starts_with" => Op::StartsWith(one("starts_with")?),
            "ends_with" => Op::EndsWith(one("ends_with")?),
            "contains" => Op::Contains(one("contains")?),
            "older_than" => Op::OlderThan(age(operand)?),
            "newer_than" => Op::NewerThan(age(operand)?),
            "exists" if operand.is_empty() => Op::Exists,
            "not exists" if operand.is_empty() => Op::NotExists,
            "exists" | "not exists" => return Err(format!("`{op_word}` takes no value")),
            "" => return Err("no comparison after the field name".into()),
            other => {
                return Err(format!(
                    "unknown comparison `{other}` (known: ==, !=, in, not in, starts_with, \
                     ends_with, contains, older_than, newer_than, exists, not exists)"
                ));
            }
        };
        Ok(Rule {
            field: field.to_string(),
            op,
            text: trimmed.to_string(),
        })
    }

    /// Whether a field's value satisfies the rule.
    pub fn matches(&self, actual: Option<&str>, now: DateTime<Utc>) -> bool {
        let value = actual.unwrap_or("").trim();
        let lower = || value.to_lowercase();
        match &self.op {
            Op::Eq(v) => value.eq_ignore_ascii_case(v),
            Op::Ne(v) => !value.eq_ignore_ascii_case(v),
            Op::In(vs) => vs.iter().any(|v| value.eq_ignore_ascii_case(v)),
            Op::NotIn(vs) => !vs.iter().any(|v| value.eq_ignore_ascii_case(v)),
            Op::StartsWith(v) => lower().starts_with(&v.to_lowercase()),
            Op::EndsWith(v) => lower().ends_with(&v.to_lowercase()),
            Op::Contains(v) => lower().contains(&v.to_lowercase()),
            // A row without a readable date is neither old nor new: a rule
            // about age selects only rows that state one.
            Op::OlderThan(age) => parse_date(value).is_some_and(|d| d < now - *age),
            Op::NewerThan(age) => parse_date(value).is_some_and(|d| d >= now - *age),
            Op::Exists => !value.is_empty(),
            Op::NotExists => value.is_empty(),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn split_op(rest: &str) -> (&str, &str) {
    for op in ["==", "!="] {
        if let Some(operand) = rest.strip_prefix(op) {
            return (op, operand.trim());
        }
    }
    if let Some(after) = rest.strip_prefix("not ") {
        let after = after.trim_start();
        for word in ["in", "exists"] {
            if let Some(operand) = after.strip_prefix(word)
                && (operand.is_empty() || operand.starts_with([' ', '[']))
            {
                return (
                    if word == "in" { "not in" } else { "not exists" },
                    operand.trim(),
                );
            }
        }
    }
    match rest.find([' ', '[']) {
        Some(i) => (&rest[..i], rest[i..].trim()),
        None => (rest, ""),
    }
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    let stripped = s
        .strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .or_else(|| s.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')));
    stripped.unwrap_or(s).to_string()
}

fn list(operand: &str) -> Result<Vec<String>, String> {
    let inner = operand
        .trim()
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or_else(|| format!("`{operand}` is not a list like [a, b]"))?;
    let values: Vec<String> = inner
        .split(',')
        .map(unquote)
        .filter(|v| !v.is_empty())
        .collect();
    if values.is_empty() {
        return Err("the list is empty".into());
    }
    Ok(values)
}

fn age(operand: &str) -> Result<TimeDelta, String> {
    let text = operand.trim();
    let bad = || format!("`{text}` is not an age like 90d, 12w, 36h or 30m");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (digits, unit) = text.split_at(split);
    let n: i64 = digits.parse().map_err(|_| bad())?;
    let delta = match unit.trim() {
        "m" | "min" => TimeDelta::try_minutes(n),
        "h" => TimeDelta::try_hours(n),
        "d" => TimeDelta::try_days(n),
        "w" => TimeDelta::try_weeks(n),
        _ => None,
    };
    delta.filter(|_| n > 0).ok_or_else(bad)
}

/// Reads a date as inventories write them: RFC 3339, or a bare day (UTC midnight).
pub fn parse_date(value: &str) -> Option<DateTime<Utc>> {
    if value.is_empty() {
        return None;
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(value) {
        return Some(d.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
}

/// Validates criteria configured under `key`, reporting each bad rule with
/// its key and text.
pub fn validate(
    key: &str,
    raw: &RawCriteria,
    bad: &mut dyn FnMut(String, String),
) -> Option<Criteria> {
    match raw {
        RawCriteria::Rule(text) => match Rule::parse(text) {
            Ok(rule) => Some(Criteria::Rule {
                rule,
                key: key.to_string(),
            }),
            Err(reason) => {
                bad(key.to_string(), format!("rule `{}`: {reason}", text.trim()));
                None
            }
        },
        RawCriteria::List(items) => group(key, "", items, bad).map(Criteria::All),
        RawCriteria::All { all } => group(key, ".all", all, bad).map(Criteria::All),
        RawCriteria::Any { any } => {
            if any.is_empty() {
                bad(format!("{key}.any"), "must list at least one rule".into());
                return None;
            }
            group(key, ".any", any, bad).map(Criteria::Any)
        }
    }
}

fn group(
    key: &str,
    suffix: &str,
    items: &[RawCriteria],
    bad: &mut dyn FnMut(String, String),
) -> Option<Vec<Criteria>> {
    let mut out = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match validate(&format!("{key}{suffix}[{i}]"), item, bad) {
            Some(c) => out.push(c),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Row(HashMap<&'static str, &'static str>);
    impl Fields for Row {
        fn field(&self, name: &str) -> Option<&str> {
            self.0.get(name).copied()
        }
    }

    fn now() -> DateTime<Utc> {
        "2026-11-30T12:00:00Z".parse().unwrap()
    }

    fn rule(text: &str) -> Rule {
        Rule::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn every_comparison_of_the_issue_parses_and_matches() {
        let at = |text: &str, value: Option<&str>| rule(text).matches(value, now());
        assert!(at("status == active", Some("Active")));
        assert!(at("status==active", Some("active")));
        assert!(!at("status != active", Some("ACTIVE")));
        assert!(at(
            "department in [sales, \"customer success\"]",
            Some("Customer Success")
        ));
        assert!(!at("department not in [sales, eng]", Some("eng")));
        assert!(at("department not in [sales, eng]", None));
        assert!(at("email starts_with admin", Some("Admin.x@corp.com")));
        assert!(at("email ends_with @corp.com", Some("a@CORP.com")));
        assert!(at("email contains +test", Some("a+test@corp.com")));
        assert!(at("last_login older_than 90d", Some("2026-08-01")));
        assert!(!at(
            "last_login older_than 90d",
            Some("2026-11-01T00:00:00Z")
        ));
        assert!(at(
            "last_login newer_than 2w",
            Some("2026-11-20T08:00:00+01:00")
        ));
        assert!(!at("last_login older_than 90d", None));
        assert!(!at("last_login older_than 90d", Some("yesterday")));
        assert!(at("external_id exists", Some("x")));
        assert!(!at("external_id exists", Some("")));
        assert!(at("external_id not exists", None));
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        for (text, says) in [
            ("status", "no comparison"),
            ("status = active", "unknown comparison `=`"),
            ("last_login older_than ninety", "not an age"),
            ("last_login older_than 0d", "not an age"),
            ("department in sales", "not a list"),
            ("department in []", "empty"),
            ("status ==", "needs a value"),
            ("external_id exists yes", "takes no value"),
            ("de partment == x", "unknown comparison"),
        ] {
            let err = Rule::parse(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn groups_nest_and_errors_name_the_rule_and_its_key() {
        let raw: RawCriteria = serde_json::from_str(
            r#"{"any": ["status == active", {"all": ["department == it", "last_login older_than 90d"]}]}"#,
        )
        .unwrap();
        let c = validate("workflow.w.criteria", &raw, &mut |k, r| panic!("{k}: {r}")).unwrap();
        let row = |status, dept, login| {
            Row(HashMap::from([
                ("status", status),
                ("department", dept),
                ("last_login", login),
            ]))
        };
        assert!(c.matches(&row("active", "sales", ""), now()));
        assert!(c.matches(&row("suspended", "it", "2025-01-01"), now()));
        assert!(!c.matches(&row("suspended", "it", "2026-11-29"), now()));
        let keys: Vec<_> = c.rules().iter().map(|(_, k)| k.to_string()).collect();
        assert_eq!(
            keys,
            [
                "workflow.w.criteria.any[0]",
                "workflow.w.criteria.any[1].all[0]",
                "workflow.w.criteria.any[1].all[1]"
            ]
        );

        let raw: RawCriteria =
            serde_json::from_str(r#"["status == active", {"any": ["x older_than soon"]}]"#)
                .unwrap();
        let mut problems = Vec::new();
        assert!(validate("saas.a.criteria", &raw, &mut |k, r| problems.push((k, r))).is_none());
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, "saas.a.criteria[1].any[0]");
        assert!(
            problems[0].1.contains("`x older_than soon`"),
            "{problems:?}"
        );
    }
}
