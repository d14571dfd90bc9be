//! SCIM filter expressions (RFC 7644 §3.4.2.2), evaluated against a resource
//! as JSON.
//!
//! Parsed properly rather than pattern-matched, because the point of the sim
//! is to catch clients that build filters carelessly: a `"` or `\` inside a
//! value must be escaped as in JSON, or the filter is malformed. Okta's
//! `search` uses the same grammar, so its sim reuses this module.
//!
//! Supported: `attrPath op value` with `eq ne co sw ew gt ge lt le`,
//! `attrPath pr`, `and`, `or`, `not (…)`, parentheses and value paths
//! (`emails[type eq "work" and value co "@x.com"]`). Attribute names,
//! operators and keywords are case-insensitive; attribute paths may carry a
//! schema URN prefix. String comparisons ignore case except on the attributes
//! the caller names as case-exact (`id`, `externalId`).

use std::cmp::Ordering;
use std::fmt;

use serde_json::Value;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Filter {
    Compare {
        path: AttrPath,
        op: Op,
        value: Literal,
    },
    Present(AttrPath),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    /// `attr[filter]`: some element of the multi-valued `attr` matches.
    ValuePath {
        path: AttrPath,
        filter: Box<Filter>,
    },
}

/// `[schema:]attr[.sub]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AttrPath {
    /// The schema URN, when given and not the resource's core schema.
    pub(crate) schema: Option<String>,
    pub(crate) attr: String,
    pub(crate) sub: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Literal {
    Str(String),
    Bool(bool),
    Null,
    Num(f64),
}

/// Why a filter was refused; the text goes into the SCIM error's `detail`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FilterError(pub(crate) String);

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Core schemas, whose URN prefix just restates the resource type.
const CORE_SCHEMAS: [&str; 2] = [
    "urn:ietf:params:scim:schemas:core:2.0:user",
    "urn:ietf:params:scim:schemas:core:2.0:group",
];

pub(crate) fn parse(text: &str) -> Result<Filter, FilterError> {
    let mut parser = Parser {
        chars: text.chars().collect(),
        at: 0,
    };
    let filter = parser.or()?;
    parser.skip_spaces();
    if parser.at < parser.chars.len() {
        return Err(parser.error("unexpected text"));
    }
    Ok(filter)
}

struct Parser {
    chars: Vec<char>,
    at: usize,
}

impl Parser {
    fn error(&self, what: &str) -> FilterError {
        let rest: String = self.chars[self.at.min(self.chars.len())..]
            .iter()
            .take(30)
            .collect();
        if rest.is_empty() {
            FilterError(format!("Invalid filter: {what} at the end"))
        } else {
            FilterError(format!("Invalid filter: {what} at '{rest}'"))
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn skip_spaces(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.at += 1;
        }
    }

    /// A keyword (`and`, `or`, `not`) followed by a space or parenthesis.
    fn keyword(&mut self, word: &str) -> bool {
        self.skip_spaces();
        let end = self.at + word.len();
        if end > self.chars.len() {
            return false;
        }
        let candidate: String = self.chars[self.at..end].iter().collect();
        let boundary = self
            .chars
            .get(end)
            .is_none_or(|c| c.is_whitespace() || *c == '(');
        if candidate.eq_ignore_ascii_case(word) && boundary {
            self.at = end;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.and()?;
        while self.keyword("or") {
            let right = self.and()?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.unary()?;
        while self.keyword("and") {
            let right = self.unary()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, FilterError> {
        self.skip_spaces();
        if self.keyword("not") {
            self.skip_spaces();
            if self.peek() != Some('(') {
                return Err(self.error("expected '(' after not"));
            }
            return Ok(Filter::Not(Box::new(self.group()?)));
        }
        if self.peek() == Some('(') {
            return self.group();
        }
        self.attribute_expression()
    }

    fn group(&mut self) -> Result<Filter, FilterError> {
        self.at += 1; // '('
        let inner = self.or()?;
        self.skip_spaces();
        if self.peek() != Some(')') {
            return Err(self.error("expected ')'"));
        }
        self.at += 1;
        Ok(inner)
    }

    fn attribute_expression(&mut self) -> Result<Filter, FilterError> {
        let path = self.attr_path()?;
        if self.peek() == Some('[') {
            self.at += 1;
            let inner = self.or()?;
            self.skip_spaces();
            if self.peek() != Some(']') {
                return Err(self.error("expected ']'"));
            }
            self.at += 1;
            if path.sub.is_some() {
                return Err(self.error("a value path takes an attribute, not a sub-attribute"));
            }
            return Ok(Filter::ValuePath {
                path,
                filter: Box::new(inner),
            });
        }
        if !self.peek().is_some_and(char::is_whitespace) {
            return Err(self.error("expected an operator"));
        }
        let op = self.word();
        let op = match op.to_ascii_lowercase().as_str() {
            "pr" => return Ok(Filter::Present(path)),
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "co" => Op::Co,
            "sw" => Op::Sw,
            "ew" => Op::Ew,
            "gt" => Op::Gt,
            "ge" => Op::Ge,
            "lt" => Op::Lt,
            "le" => Op::Le,
            "" => return Err(self.error("expected an operator")),
            other => {
                return Err(FilterError(format!(
                    "Invalid filter: unknown operator '{other}'"
                )));
            }
        };
        if !self.peek().is_some_and(char::is_whitespace) {
            return Err(self.error("expected a value"));
        }
        let value = self.value()?;
        // RFC 7644: booleans and null compare only with eq / ne.
        let ordered = !matches!(op, Op::Eq | Op::Ne);
        if ordered && matches!(value, Literal::Bool(_) | Literal::Null) {
            return Err(FilterError(format!(
                "Invalid filter: operator {op:?} cannot compare with {value:?}"
            )));
        }
        Ok(Filter::Compare { path, op, value })
    }

    /// A run of characters that can be part of a name, URN or number.
    fn word(&mut self) -> String {
        self.skip_spaces();
        let start = self.at;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || "_-.:$+".contains(c))
        {
            self.at += 1;
        }
        self.chars[start..self.at].iter().collect()
    }

    fn attr_path(&mut self) -> Result<AttrPath, FilterError> {
        let word = self.word();
        if word.is_empty() {
            return Err(self.error("expected an attribute name"));
        }
        let (schema, rest) = if word.to_ascii_lowercase().starts_with("urn:") {
            let split = word.rfind(':').unwrap_or(0);
            let schema = &word[..split];
            let known_core = CORE_SCHEMAS.contains(&schema.to_ascii_lowercase().as_str());
            ((!known_core).then(|| schema.to_owned()), &word[split + 1..])
        } else {
            (None, word.as_str())
        };
        let mut parts = rest.split('.');
        let attr = parts.next().unwrap_or_default();
        let sub = parts.next();
        let valid = |name: &str| {
            name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '$')
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$')
        };
        if !valid(attr) || sub.is_some_and(|s| !valid(s)) || parts.next().is_some() {
            return Err(FilterError(format!(
                "Invalid filter: bad attribute name '{word}'"
            )));
        }
        Ok(AttrPath {
            schema,
            attr: attr.to_owned(),
            sub: sub.map(str::to_owned),
        })
    }

    fn value(&mut self) -> Result<Literal, FilterError> {
        self.skip_spaces();
        if self.peek() == Some('"') {
            return self.string().map(Literal::Str);
        }
        let word = self.word();
        match word.to_ascii_lowercase().as_str() {
            "true" => Ok(Literal::Bool(true)),
            "false" => Ok(Literal::Bool(false)),
            "null" => Ok(Literal::Null),
            "" => Err(self.error("expected a value")),
            _ => word
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite())
                .map(Literal::Num)
                .ok_or_else(|| {
                    FilterError(format!(
                        "Invalid filter: '{word}' is not a value (strings must be quoted)"
                    ))
                }),
        }
    }

    /// A JSON string: `\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t`, `\uXXXX`.
    fn string(&mut self) -> Result<String, FilterError> {
        self.at += 1; // opening quote
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(self.error("unterminated string"));
            };
            self.at += 1;
            match c {
                '"' => return Ok(out),
                '\\' => {
                    let Some(escaped) = self.peek() else {
                        return Err(self.error("unterminated escape"));
                    };
                    self.at += 1;
                    match escaped {
                        '"' => out.push('"'),
                        '\\' => out.push('\\'),
                        '/' => out.push('/'),
                        'b' => out.push('\u{8}'),
                        'f' => out.push('\u{c}'),
                        'n' => out.push('\n'),
                        'r' => out.push('\r'),
                        't' => out.push('\t'),
                        'u' => out.push(self.unicode_escape()?),
                        other => {
                            return Err(FilterError(format!(
                                "Invalid filter: unknown escape '\\{other}'"
                            )));
                        }
                    }
                }
                c if u32::from(c) < 0x20 => {
                    return Err(self.error("control character in string"));
                }
                c => out.push(c),
            }
        }
    }

    fn unicode_escape(&mut self) -> Result<char, FilterError> {
        let high = self.hex4()?;
        if (0xD800..0xDC00).contains(&high) {
            if self.chars.get(self.at) == Some(&'\\') && self.chars.get(self.at + 1) == Some(&'u') {
                self.at += 2;
                let low = self.hex4()?;
                if (0xDC00..0xE000).contains(&low) {
                    let code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                    return char::from_u32(code).ok_or_else(|| self.error("bad \\u escape"));
                }
            }
            return Err(self.error("unpaired surrogate"));
        }
        char::from_u32(high).ok_or_else(|| self.error("bad \\u escape"))
    }

    fn hex4(&mut self) -> Result<u32, FilterError> {
        let end = self.at + 4;
        let digits: String = self
            .chars
            .get(self.at..end)
            .unwrap_or_default()
            .iter()
            .collect();
        let code = u32::from_str_radix(&digits, 16)
            .ok()
            .filter(|_| digits.len() == 4)
            .ok_or_else(|| self.error("bad \\u escape"))?;
        self.at = end;
        Ok(code)
    }
}

impl Filter {
    /// Top-level attributes the filter names, for refusing ones a resource
    /// does not have (`email eq …` on a user is a client bug worth a 400,
    /// not an empty result).
    pub(crate) fn attributes(&self) -> Vec<&AttrPath> {
        match self {
            Self::Compare { path, .. } | Self::Present(path) | Self::ValuePath { path, .. } => {
                vec![path]
            }
            Self::And(a, b) | Self::Or(a, b) => {
                let mut all = a.attributes();
                all.extend(b.attributes());
                all
            }
            Self::Not(inner) => inner.attributes(),
        }
    }

    /// Whether `resource` matches; `case_exact` names the attributes whose
    /// strings compare exactly.
    pub(crate) fn matches(&self, resource: &Value, case_exact: &[&str]) -> bool {
        match self {
            Self::And(a, b) => a.matches(resource, case_exact) && b.matches(resource, case_exact),
            Self::Or(a, b) => a.matches(resource, case_exact) || b.matches(resource, case_exact),
            Self::Not(inner) => !inner.matches(resource, case_exact),
            Self::Present(path) => resolve(resource, path).iter().any(|v| present(v)),
            Self::ValuePath { path, filter } => {
                let Some(attr) = attribute(resource, path) else {
                    return false;
                };
                match attr {
                    Value::Array(items) => {
                        items.iter().any(|item| filter.matches(item, case_exact))
                    }
                    single => filter.matches(single, case_exact),
                }
            }
            Self::Compare { path, op, value } => {
                let exact = case_exact
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(&path.attr));
                let values = resolve(resource, path);
                match (op, value) {
                    (Op::Eq, Literal::Null) => values.iter().all(|v| !present(v)),
                    (Op::Ne, Literal::Null) => values.iter().any(|v| present(v)),
                    (Op::Ne, _) => !values.iter().any(|v| compare(v, Op::Eq, value, exact)),
                    _ => values.iter().any(|v| compare(v, *op, value, exact)),
                }
            }
        }
    }
}

fn present(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        _ => true,
    }
}

/// Looks a key up ignoring case, as SCIM attribute names are.
fn get_ci<'v>(object: &'v Value, key: &str) -> Option<&'v Value> {
    let map = object.as_object()?;
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn attribute<'v>(resource: &'v Value, path: &AttrPath) -> Option<&'v Value> {
    let holder = match &path.schema {
        Some(schema) => get_ci(resource, schema)?,
        None => resource,
    };
    get_ci(holder, &path.attr)
}

/// The values a path points at, flattening multi-valued attributes; a
/// complex value compared without a sub-attribute stands for its `value`.
fn resolve<'v>(resource: &'v Value, path: &AttrPath) -> Vec<&'v Value> {
    let Some(attr) = attribute(resource, path) else {
        return Vec::new();
    };
    let items: Vec<&Value> = match attr {
        Value::Array(items) => items.iter().collect(),
        single => vec![single],
    };
    items
        .into_iter()
        .filter_map(|item| match (&path.sub, item) {
            (Some(sub), item) => get_ci(item, sub),
            (None, Value::Object(_)) => get_ci(item, "value"),
            (None, item) => Some(item),
        })
        .collect()
}

fn compare(actual: &Value, op: Op, expected: &Literal, exact: bool) -> bool {
    match (actual, expected) {
        (Value::Bool(a), Literal::Bool(b)) => op == Op::Eq && a == b,
        (Value::Number(a), Literal::Num(b)) => {
            a.as_f64().is_some_and(|a| ordered(a.partial_cmp(b), op))
        }
        (Value::String(a), Literal::Str(b)) => {
            let (a, b) = if exact {
                (a.clone(), b.clone())
            } else {
                (a.to_lowercase(), b.to_lowercase())
            };
            match op {
                Op::Co => a.contains(&b),
                Op::Sw => a.starts_with(&b),
                Op::Ew => a.ends_with(&b),
                _ => ordered(Some(a.cmp(&b)), op),
            }
        }
        _ => false,
    }
}

fn ordered(ordering: Option<Ordering>, op: Op) -> bool {
    let Some(ordering) = ordering else {
        return false;
    };
    match op {
        Op::Eq => ordering == Ordering::Equal,
        Op::Ne => ordering != Ordering::Equal,
        Op::Gt => ordering == Ordering::Greater,
        Op::Ge => ordering != Ordering::Less,
        Op::Lt => ordering == Ordering::Less,
        Op::Le => ordering != Ordering::Greater,
        Op::Co | Op::Sw | Op::Ew => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn eq(attr: &str, value: &str) -> Filter {
        Filter::Compare {
            path: AttrPath {
                schema: None,
                attr: attr.to_owned(),
                sub: None,
            },
            op: Op::Eq,
            value: Literal::Str(value.to_owned()),
        }
    }

    #[test]
    fn parses_escaped_strings() {
        assert_eq!(
            parse(r#"userName eq "a@x.com""#),
            Ok(eq("userName", "a@x.com"))
        );
        assert_eq!(
            parse(r#"USERNAME  EQ  "a\"b@x.com""#),
            Ok(eq("USERNAME", "a\"b@x.com"))
        );
        assert_eq!(parse(r#"userName eq "a\\b""#), Ok(eq("userName", "a\\b")));
        assert_eq!(parse(r#"userName eq "\u00e9\/""#), Ok(eq("userName", "é/")));
        assert_eq!(
            parse(r#"userName eq "\ud83d\ude00""#),
            Ok(eq("userName", "😀"))
        );
    }

    #[test]
    fn rejects_malformed_filters() {
        for bad in [
            r#"userName eq "a"b@x.com""#,
            r#"userName eq "unterminated"#,
            r#"userName eq a@x.com"#,
            r#"userName "a""#,
            r#"userName eq"a""#,
            r#"userName xx "a""#,
            r#"userName eq "a\q""#,
            r#"(userName eq "a""#,
            r#"userName eq "a" and"#,
            r#"userName co true"#,
            r#"emails[value eq "a""#,
            r#"not userName eq "a""#,
            "",
            "   ",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn evaluates_against_json() {
        let user = json!({
            "id": "AbC",
            "userName": "Jane@Example.com",
            "active": false,
            "emails": [{"value": "jane@example.com", "type": "work", "primary": true}],
            "roles": [{"value": "admin", "primary": true}],
            "profile": {"email": "jane@example.com"},
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Sales"},
        });
        let exact = ["id"];
        let yes = [
            r#"username eq "jane@example.COM""#,
            r#"emails.value eq "JANE@example.com""#,
            r#"emails eq "jane@example.com""#,
            r#"emails[type eq "work" and value ew "@example.com"]"#,
            r#"active eq false"#,
            r#"roles.value eq "admin" and not (active eq true)"#,
            r#"id eq "AbC" or id eq "x""#,
            r#"userName sw "jane" and userName co "example""#,
            r#"profile.email eq "jane@example.com""#,
            r#"urn:ietf:params:scim:schemas:core:2.0:User:userName pr"#,
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "sales""#,
            r#"title eq null"#,
            r#"userName gt "a""#,
        ];
        for text in yes {
            let filter = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert!(filter.matches(&user, &exact), "{text}");
        }
        let no = [
            r#"id eq "abc""#,
            r#"userName eq "jane""#,
            r#"emails[type eq "home"]"#,
            r#"active eq true"#,
            r#"title pr"#,
            r#"userName ne "jane@example.com""#,
        ];
        for text in no {
            let filter = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert!(!filter.matches(&user, &exact), "{text}");
        }
    }
}
