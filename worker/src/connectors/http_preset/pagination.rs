//! Following a vendor's pages (`[pagination]`, tagged by `style`).
//!
//! Page parameters go into the query string of the rendered URL; a `Link`
//! header's next page is taken as the vendor gives it. Either way the
//! connector checks the next URL's origin before sending anything to it
//! (`HttpPreset::pin`), so this module only computes URLs.

use std::num::NonZeroU64;

use reqwest::header::{HeaderMap, LINK};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use super::ConnectorError;
use super::rules::scalar_text;
use super::spec::InnerPointer;

/// Pages followed before giving up: a paginated lookup that never ends is a
/// spec bug, and a scan cut short can never say "not found".
pub(super) const DEFAULT_MAX_PAGES: u64 = 20;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub(super) enum Pagination {
    /// One request per lookup.
    None {},
    /// `offset + items` until an empty page.
    Offset {
        #[serde(default = "offset_param")]
        offset_param: String,
        #[serde(default = "limit_param")]
        limit_param: String,
        #[serde(default = "default_limit")]
        limit: NonZeroU64,
        #[serde(default)]
        start: u64,
        max_pages: Option<NonZeroU64>,
    },
    /// `page + 1` until an empty page.
    Page {
        #[serde(default = "page_param")]
        page_param: String,
        size_param: Option<String>,
        size: Option<NonZeroU64>,
        #[serde(default = "first_page")]
        start: u64,
        max_pages: Option<NonZeroU64>,
    },
    /// `param=<cursor>` until the cursor is absent/empty or `has_more` is false.
    Cursor {
        next: InnerPointer,
        param: String,
        has_more: Option<InnerPointer>,
        size_param: Option<String>,
        size: Option<NonZeroU64>,
        max_pages: Option<NonZeroU64>,
    },
    /// The `Link: <…>; rel="next"` header (RFC 8288).
    Link {
        size_param: Option<String>,
        size: Option<NonZeroU64>,
        max_pages: Option<NonZeroU64>,
    },
}

fn offset_param() -> String {
    "offset".into()
}
fn limit_param() -> String {
    "limit".into()
}
fn default_limit() -> NonZeroU64 {
    NonZeroU64::new(100).expect("not zero")
}
fn page_param() -> String {
    "page".into()
}
fn first_page() -> u64 {
    1
}

impl Default for Pagination {
    fn default() -> Self {
        Pagination::None {}
    }
}

impl Pagination {
    pub(super) fn is_none(&self) -> bool {
        matches!(self, Pagination::None {})
    }

    /// The pages a lookup may read before it gives up without a verdict.
    pub(super) fn max_pages(&self) -> u64 {
        match self {
            Pagination::None {} => 1,
            Pagination::Offset { max_pages, .. }
            | Pagination::Page { max_pages, .. }
            | Pagination::Cursor { max_pages, .. }
            | Pagination::Link { max_pages, .. } => {
                max_pages.map_or(DEFAULT_MAX_PAGES, NonZeroU64::get)
            }
        }
    }

    /// `max_pages` when the spec sets it (a listing has no default cap
    /// of a lookup's size).
    pub(super) fn max_pages_set(&self) -> Option<NonZeroU64> {
        match self {
            Pagination::None {} => None,
            Pagination::Offset { max_pages, .. }
            | Pagination::Page { max_pages, .. }
            | Pagination::Cursor { max_pages, .. }
            | Pagination::Link { max_pages, .. } => *max_pages,
        }
    }

    /// `size_param` and `size` as given (`validate` checks they come together).
    pub(super) fn size_keys(&self) -> (bool, bool) {
        match self {
            Pagination::Page {
                size_param, size, ..
            }
            | Pagination::Cursor {
                size_param, size, ..
            }
            | Pagination::Link {
                size_param, size, ..
            } => (size_param.is_some(), size.is_some()),
            Pagination::None {} | Pagination::Offset { .. } => (false, false),
        }
    }

    fn size(&self) -> Option<(&str, u64)> {
        match self {
            Pagination::Page {
                size_param: Some(param),
                size: Some(size),
                ..
            }
            | Pagination::Cursor {
                size_param: Some(param),
                size: Some(size),
                ..
            }
            | Pagination::Link {
                size_param: Some(param),
                size: Some(size),
                ..
            } => Some((param, size.get())),
            _ => None,
        }
    }

    /// The first page's URL: the rendered URL plus the page parameters.
    pub(super) fn first(&self, url: Url) -> Url {
        let url = match self {
            Pagination::Offset {
                offset_param,
                limit_param,
                limit,
                start,
                ..
            } => {
                let url = with_param(&url, offset_param, &start.to_string());
                with_param(&url, limit_param, &limit.to_string())
            }
            Pagination::Page {
                page_param, start, ..
            } => with_param(&url, page_param, &start.to_string()),
            Pagination::None {} | Pagination::Cursor { .. } | Pagination::Link { .. } => url,
        };
        match self.size() {
            Some((param, size)) => with_param(&url, param, &size.to_string()),
            None => url,
        }
    }

    /// The next page's URL, or `None` when the vendor says `current` was
    /// the last page. The caller checks the URL's origin.
    ///
    /// Offset and page styles end only at an empty page, never at one
    /// shorter than `limit`/`size`: vendors cap page sizes below what was
    /// asked (the cap is rarely documented), and a walk that took a capped
    /// page for the last would answer "not found" for a user on the next
    /// one (a deactivation) or import a fraction of a listing. The price is
    /// one more request when a walk reaches its end.
    pub(super) fn next(
        &self,
        current: &Url,
        headers: &HeaderMap,
        body: &Value,
        count: usize,
    ) -> Result<Option<Url>, ConnectorError> {
        let count = count as u64;
        Ok(match self {
            Pagination::None {} => None,
            Pagination::Offset {
                offset_param,
                start,
                ..
            } => (count > 0).then(|| {
                let offset = param_u64(current, offset_param).unwrap_or(*start);
                with_param(current, offset_param, &(offset + count).to_string())
            }),
            Pagination::Page {
                page_param, start, ..
            } => (count > 0).then(|| {
                let page = param_u64(current, page_param).unwrap_or(*start);
                with_param(current, page_param, &(page + 1).to_string())
            }),
            Pagination::Cursor {
                next,
                param,
                has_more,
                ..
            } => {
                let more = has_more
                    .as_ref()
                    .is_none_or(|p| body.pointer(p).is_some_and(|v| v == &Value::Bool(true)));
                match body.pointer(next).and_then(scalar_text) {
                    Some(cursor) if more && !cursor.is_empty() => {
                        Some(with_param(current, param, &cursor))
                    }
                    _ => None,
                }
            }
            Pagination::Link { .. } => match next_link(headers) {
                None => None,
                Some(link) => Some(current.join(&link).map_err(|_| {
                    ConnectorError::Decode("the Link header's next page is not a URL".into())
                })?),
            },
        })
    }
}

/// `url` with `name` set to `value` (replacing any earlier value).
pub(super) fn with_param(url: &Url, name: &str, value: &str) -> Url {
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut next = url.clone();
    next.query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair(name, value);
    next
}

fn param_u64(url: &Url, name: &str) -> Option<u64> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.parse().ok())
}

/// The target of the first `rel="next"` link in the `Link` headers (RFC 8288).
fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            parse_links(v)
                .into_iter()
                .find(|(_, rels)| rels.iter().any(|r| r.eq_ignore_ascii_case("next")))
                .map(|(target, _)| target)
        })
}

/// `<target>; rel="a b"; x=y, <target2>; rel=c` → targets with their rels.
/// Tolerant of spacing and of parameters it does not know.
fn parse_links(value: &str) -> Vec<(String, Vec<String>)> {
    let mut links = Vec::new();
    let mut rest = value;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>') else {
            break;
        };
        let target = rest[open + 1..open + close].trim().to_owned();
        rest = &rest[open + close + 1..];
        let mut rels = Vec::new();
        // Parameters run until the next comma outside quotes.
        let mut end = rest.len();
        let mut quoted = false;
        for (i, c) in rest.char_indices() {
            match c {
                '"' => quoted = !quoted,
                ',' if !quoted => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        for param in rest[..end].split(';') {
            if let Some((name, value)) = param.split_once('=')
                && name.trim().eq_ignore_ascii_case("rel")
            {
                rels.extend(
                    value
                        .trim()
                        .trim_matches('"')
                        .split_whitespace()
                        .map(str::to_owned),
                );
            }
        }
        links.push((target, rels));
        rest = &rest[end..];
    }
    links
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn pagination(text: &str) -> Pagination {
        let mut doc = super::super::load::parse_toml(&format!("[pagination]\n{text}")).unwrap();
        doc["auth"] = serde_json::json!({"kind": "bearer", "token": "t"});
        doc["request"] = serde_json::json!({"url": "{{base_url}}/u"});
        doc["response"] = serde_json::json!({"role": "/r", "vendor_id": "/id"});
        super::super::spec::parse(doc).unwrap().pagination
    }

    #[test]
    fn links_are_parsed_per_rfc_8288() {
        let github = r#"<https://api.github.com/orgs/a/members?page=2>; rel="next", <https://api.github.com/orgs/a/members?page=5>; rel="last""#;
        assert_eq!(
            parse_links(github),
            vec![
                (
                    "https://api.github.com/orgs/a/members?page=2".to_owned(),
                    vec!["next".to_owned()]
                ),
                (
                    "https://api.github.com/orgs/a/members?page=5".to_owned(),
                    vec!["last".to_owned()]
                ),
            ]
        );
        let mut headers = HeaderMap::new();
        headers.append(
            LINK,
            HeaderValue::from_static(r#"</p?c=1>; title="a, b"; rel="prev""#),
        );
        headers.append(
            LINK,
            HeaderValue::from_static(r#"</p?c=3>;rel="last NEXT""#),
        );
        assert_eq!(next_link(&headers).as_deref(), Some("/p?c=3"));
        assert_eq!(next_link(&HeaderMap::new()), None);
        assert_eq!(parse_links("garbage"), vec![]);
    }

    #[test]
    fn each_pagination_style_finds_the_next_page_and_offsets_and_pages_end_only_when_empty() {
        let url = Url::parse("https://vendor.example/api/users?email=a%2Bb%40x.com").unwrap();
        let none = HeaderMap::new();
        let body = serde_json::json!({"next": "abc", "hasNext": true});

        let offset = pagination("style = \"offset\"\nlimit = 2");
        let first = offset.first(url.clone());
        assert_eq!(first.query(), Some("email=a%2Bb%40x.com&offset=0&limit=2"));
        let second = offset.next(&first, &none, &body, 2).unwrap().unwrap();
        assert_eq!(param_u64(&second, "offset"), Some(2));
        // A short page is not the last (the vendor may cap pages); an empty one is.
        let third = offset.next(&second, &none, &body, 1).unwrap().unwrap();
        assert_eq!(param_u64(&third, "offset"), Some(3));
        assert!(offset.next(&third, &none, &body, 0).unwrap().is_none());

        let paged = pagination("style = \"page\"\nsize_param = \"per_page\"\nsize = 100");
        let first = paged.first(url.clone());
        assert_eq!(param_u64(&first, "page"), Some(1));
        assert_eq!(param_u64(&first, "per_page"), Some(100));
        let second = paged.next(&first, &none, &body, 100).unwrap().unwrap();
        assert_eq!(param_u64(&second, "page"), Some(2));
        let third = paged.next(&second, &none, &body, 3).unwrap().unwrap();
        assert_eq!(param_u64(&third, "page"), Some(3));
        assert!(paged.next(&third, &none, &body, 0).unwrap().is_none());

        let cursor = pagination(
            "style = \"cursor\"\nnext = \"/next\"\nparam = \"offset\"\nhas_more = \"/hasNext\"",
        );
        let next = cursor.next(&url, &none, &body, 50).unwrap().unwrap();
        assert_eq!(
            next.query_pairs().find(|(k, _)| k == "offset").unwrap().1,
            "abc"
        );
        assert_eq!(
            next.query_pairs().find(|(k, _)| k == "email").unwrap().1,
            "a+b@x.com"
        );
        let done = serde_json::json!({"next": "abc", "hasNext": false});
        assert!(cursor.next(&url, &none, &done, 50).unwrap().is_none());

        let link = pagination("style = \"link\"");
        let mut headers = HeaderMap::new();
        headers.insert(
            LINK,
            HeaderValue::from_static(r#"</api/users?page=2>; rel="next""#),
        );
        let next = link.next(&url, &headers, &body, 1).unwrap().unwrap();
        assert_eq!(next.as_str(), "https://vendor.example/api/users?page=2");
        assert!(link.next(&url, &none, &body, 1).unwrap().is_none());
    }

    #[test]
    fn max_pages_defaults_to_twenty_and_one_without_pagination() {
        assert_eq!(
            pagination("style = \"link\"").max_pages(),
            DEFAULT_MAX_PAGES
        );
        assert_eq!(pagination("style = \"link\"\nmax_pages = 3").max_pages(), 3);
        assert_eq!(Pagination::default().max_pages(), 1);
    }
}
