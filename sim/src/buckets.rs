//! Named rate-limit buckets: endpoint groups a vendor counts separately.
//!
//! Okta limits per endpoint — user search (`GET /api/v1/users`) and role
//! reads (`GET /api/v1/users/{id}/roles`) draw on different quotas — and Miro
//! gives each SCIM route its own "per 30 s" figure. A fleet that treats the
//! vendor as one bucket can still overrun one endpoint, so the sim can be
//! configured with named buckets, each a path pattern and its own [`Limit`].
//! A request goes to the first bucket whose pattern matches its path, and to
//! the `default` bucket (the sim's `rate`/`limit`) when none does.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::limit::{Limit, LimitError};

/// The bucket that takes requests no named bucket matches.
pub const DEFAULT_BUCKET: &str = "default";

/// A named bucket: `pattern` is a full request path where `*` matches
/// exactly one path segment (`/api/v1/users/*/roles`). `limit: None`
/// counts the bucket's requests separately without limiting them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BucketSpec {
    pub name: String,
    pub pattern: String,
    pub limit: Option<Limit>,
}

impl BucketSpec {
    pub fn new(name: &str, pattern: &str, limit: Option<Limit>) -> Self {
        Self {
            name: name.to_owned(),
            pattern: pattern.to_owned(),
            limit,
        }
    }

    pub fn validate(&self) -> Result<(), BucketError> {
        let name_ok = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            return Err(BucketError::Name(self.name.clone()));
        }
        if self.name == DEFAULT_BUCKET {
            return Err(BucketError::Reserved);
        }
        if !self.pattern.starts_with('/') {
            return Err(BucketError::Pattern(self.pattern.clone()));
        }
        if let Some(limit) = &self.limit {
            limit.validate().map_err(|source| BucketError::Limit {
                name: self.name.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

/// `NAME=PATTERN:LIMIT`, the command line's `--bucket`, e.g.
/// `roles=/api/v1/users/*/roles:600/60s`; LIMIT is a [`Limit`] in its text
/// form, or `unlimited`. The pattern ends at the first `:`.
impl FromStr for BucketSpec {
    type Err = BucketError;

    fn from_str(text: &str) -> Result<Self, BucketError> {
        let syntax = || BucketError::Syntax(text.to_owned());
        let (name, rest) = text.split_once('=').ok_or_else(syntax)?;
        let (pattern, limit) = rest.split_once(':').ok_or_else(syntax)?;
        let limit = match limit.trim() {
            "unlimited" => None,
            limit => Some(limit.parse().map_err(|source| BucketError::Limit {
                name: name.trim().to_owned(),
                source,
            })?),
        };
        let spec = Self::new(name.trim(), pattern.trim(), limit);
        spec.validate()?;
        Ok(spec)
    }
}

impl fmt::Display for BucketSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.limit {
            Some(limit) => write!(f, "{} ({}): {limit}", self.name, self.pattern),
            None => write!(f, "{} ({}): unlimited", self.name, self.pattern),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BucketError {
    #[error(
        "cannot read {0:?} as a bucket (NAME=PATTERN:LIMIT, e.g. roles=/api/v1/users/*/roles:600/60s)"
    )]
    Syntax(String),
    #[error("a bucket name is letters, digits, '-', '_' or '.', not {0:?}")]
    Name(String),
    #[error("\"default\" is the bucket of requests no named bucket matches")]
    Reserved,
    #[error("a bucket pattern is a path starting with '/', not {0:?}")]
    Pattern(String),
    #[error("bucket {0:?} is configured twice")]
    Duplicate(String),
    #[error("bucket {name:?}: {source}")]
    Limit {
        name: String,
        #[source]
        source: LimitError,
    },
    #[error("no bucket named {0:?}")]
    Unknown(String),
}

/// Checks a set of buckets: each valid, names unique.
pub(crate) fn validate_all(specs: &[BucketSpec]) -> Result<(), BucketError> {
    for (i, spec) in specs.iter().enumerate() {
        spec.validate()?;
        if specs[..i].iter().any(|s| s.name == spec.name) {
            return Err(BucketError::Duplicate(spec.name.clone()));
        }
    }
    Ok(())
}

/// A compiled pattern.
#[derive(Clone, Debug)]
pub(crate) struct PathPattern {
    segments: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq)]
enum Segment {
    Any,
    Exact(String),
}

impl PathPattern {
    pub(crate) fn new(pattern: &str) -> Self {
        let segments = split(pattern)
            .map(|s| {
                if s == "*" {
                    Segment::Any
                } else {
                    Segment::Exact(s.to_owned())
                }
            })
            .collect();
        Self { segments }
    }

    /// Segment by segment, same count; a trailing slash is ignored.
    pub(crate) fn matches(&self, path: &str) -> bool {
        let mut parts = split(path);
        self.segments.iter().all(|segment| match parts.next() {
            Some(part) => match segment {
                Segment::Any => !part.is_empty(),
                Segment::Exact(exact) => part == exact,
            },
            None => false,
        }) && parts.next().is_none()
    }
}

fn split(path: &str) -> impl Iterator<Item = &str> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let path = path.strip_suffix('/').unwrap_or(path);
    path.split('/').filter(move |_| !path.is_empty())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn stars_match_one_segment() {
        let roles = PathPattern::new("/api/v1/users/*/roles");
        assert!(roles.matches("/api/v1/users/00u123/roles"));
        assert!(roles.matches("/api/v1/users/ada@example.com/roles/"));
        assert!(!roles.matches("/api/v1/users/00u123"));
        assert!(!roles.matches("/api/v1/users/a/b/roles"));
        assert!(!roles.matches("/api/v1/users//roles"));
        assert!(!roles.matches("/api/v1/users/00u123/roles/x"));

        let search = PathPattern::new("/api/v1/users");
        assert!(search.matches("/api/v1/users"));
        assert!(!search.matches("/api/v1/users/00u123"));
        assert!(!search.matches("/api/v1"));
        assert!(PathPattern::new("/").matches("/"));
        assert!(!PathPattern::new("/").matches("/x"));
    }

    #[test]
    fn command_line_form() {
        let spec: Result<BucketSpec, _> = "roles=/api/v1/users/*/roles:600/60s".parse();
        assert_eq!(
            spec,
            Ok(BucketSpec::new(
                "roles",
                "/api/v1/users/*/roles",
                Some(Limit::sliding_window(600, Duration::from_secs(60)))
            ))
        );
        let spec: Result<BucketSpec, _> = "search=/api/v1/users:fixed:100/1m".parse();
        assert_eq!(
            spec.map(|s| s.limit),
            Ok(Some(Limit::fixed_window(100, Duration::from_secs(60))))
        );
        let spec: Result<BucketSpec, _> = "other=/v1/x:unlimited".parse();
        assert_eq!(spec.map(|s| s.limit), Ok(None));

        for (bad, expected) in [
            ("roles", BucketError::Syntax("roles".into())),
            ("roles=/x", BucketError::Syntax("roles=/x".into())),
            ("default=/x:1/1s", BucketError::Reserved),
            ("a b=/x:1/1s", BucketError::Name("a b".into())),
            ("r=x:1/1s", BucketError::Pattern("x".into())),
        ] {
            assert_eq!(bad.parse::<BucketSpec>(), Err(expected), "{bad}");
        }
        assert!(matches!(
            "r=/x:1/0s".parse::<BucketSpec>(),
            Err(BucketError::Limit { .. })
        ));
    }

    #[test]
    fn names_are_unique() {
        let a = BucketSpec::new("a", "/x", None);
        let b = BucketSpec::new("b", "/y", None);
        assert_eq!(validate_all(&[a.clone(), b]), Ok(()));
        assert_eq!(
            validate_all(&[a.clone(), a]),
            Err(BucketError::Duplicate("a".into()))
        );
    }
}
