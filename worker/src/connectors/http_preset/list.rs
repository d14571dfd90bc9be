//! Listing every user (`[list]`), for the inventory import
//! (`rolecall-scheduler import`).
//!
//! A preset that declares `[list]` names the vendor's list request, where
//! the users array is in each answer, how pages follow (`[list.pagination]`,
//! the same styles as a lookup's) and which fields of a user are its id,
//! e-mail, name, role, status and last login. Some vendors list one status
//! at a time (Zoom's `GET /users?status=active|inactive|pending`), so
//! `sweep` walks the list once per value of a query parameter.
//!
//! The list is the same for every user, so its templates may not use user
//! variables; like every URL, its URL never carries a secret. Each page is
//! one request through the SaaS app's `VendorClient` (the fleet's limit,
//! quota headers and error classes) with the spec's `[auth]`, and every URL
//! — the first, each next page, a cursor handed back by the importer — is
//! checked against `base_url`'s origin before it is sent.
//!
//! The cursor the importer passes back is `<pass>:<page>:<url>`: the sweep
//! value being walked, the pages read so far in it and the next page's URL
//! (empty: the pass's first page). It holds nothing secret, since URLs never do.

use std::num::NonZeroU64;

use serde::Deserialize;
use serde_json::Value;
use url::Url;

use super::pagination::{Pagination, with_param};
use super::rules::{Condition, scalar_text};
use super::spec::{InnerPointer, Pointer, RequestSpec};
use super::template::render_url;
use super::{ConnectorError, HttpPreset};
use crate::connectors::{ListedUser, UserPage};

/// Pages one pass may read when `[list.pagination]` sets no `max_pages`: a
/// guard against a vendor whose cursor loops, far above any real listing
/// (a million pages of even 10 users).
const LIST_MAX_PAGES: u64 = 1_000_000;

/// `[list]`: how to read every user the vendor has.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListSpec {
    /// The list request (`GET` or `POST`, URL, headers, body); the spec's
    /// `[auth]` is added as to a lookup.
    pub(super) request: RequestSpec,
    /// Pointer to the users array in each answer; `""`: the answer is the array.
    #[serde(default)]
    pub(super) users: Pointer,
    /// How the list's pages follow (tagged by `style`, like `[pagination]`).
    #[serde(default)]
    pub(super) pagination: Pagination,
    /// Walk the list once per value of a query parameter.
    pub(super) sweep: Option<Sweep>,
    /// Where a user's fields are.
    pub(super) fields: ListFields,
}

/// `sweep = { param = "status", values = ["active", "inactive"] }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Sweep {
    pub(super) param: String,
    pub(super) values: Vec<String>,
}

/// `[list.fields]`: pointers into one listed user.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListFields {
    /// The user's id at the vendor (required: a record needs it).
    pub(super) id: InnerPointer,
    pub(super) email: Option<InnerPointer>,
    pub(super) name: Option<InnerPointer>,
    /// The role value, stored verbatim like a lookup's.
    pub(super) role: Option<InnerPointer>,
    /// The role of a user whose `role` is absent.
    pub(super) role_default: Option<String>,
    /// The status: when it holds, the user is active (absent: everyone is).
    pub(super) active: Option<Condition>,
    pub(super) last_login: Option<InnerPointer>,
}

impl ListSpec {
    /// Passes of the walk: one per sweep value, else one.
    pub(super) fn passes(&self) -> usize {
        self.sweep.as_ref().map_or(1, |s| s.values.len())
    }

    /// Pages a pass may read.
    fn max_pages(&self) -> u64 {
        self.pagination
            .max_pages_set()
            .map_or(LIST_MAX_PAGES, NonZeroU64::get)
    }
}

/// Where a listing stands: decoded from, and encoded into, the cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Position {
    pass: usize,
    page: u64,
    url: Option<Url>,
}

impl Position {
    fn encode(&self) -> String {
        let url = self.url.as_ref().map_or("", Url::as_str);
        format!("{}:{}:{url}", self.pass, self.page)
    }

    fn decode(cursor: &str) -> Result<Self, ConnectorError> {
        let bad = || ConnectorError::Decode("not a cursor of this connector's listing".into());
        let mut parts = cursor.splitn(3, ':');
        let pass = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let page = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let url = match parts.next().ok_or_else(bad)? {
            "" => None,
            url => Some(Url::parse(url).map_err(|_| bad())?),
        };
        Ok(Self { pass, page, url })
    }
}

impl HttpPreset {
    /// One page of the listing from `cursor` (`None`: the first).
    pub(super) async fn list(&self, cursor: Option<&str>) -> Result<UserPage, ConnectorError> {
        let Some(list) = &self.spec.list else {
            return Err(ConnectorError::Unsupported("list_users"));
        };
        let position = match cursor {
            None => Position {
                pass: 0,
                page: 0,
                url: None,
            },
            Some(cursor) => Position::decode(cursor)?,
        };
        if position.pass >= list.passes() {
            return Err(ConnectorError::Decode(
                "the cursor names a pass the listing does not have".into(),
            ));
        }
        let url = match position.url.clone() {
            Some(url) => url,
            None => self.first_list_url(list, position.pass)?,
        };
        let url = self.pin(url, || {
            ConnectorError::Decode(
                "the list's next page is on another origin than base_url; not following it with the credential".into(),
            )
        })?;
        let (headers, body) = self.fetch_list(&list.request, &url).await?;
        let items = users_in(&body, &list.users)?;
        let users = items
            .iter()
            .map(|item| self.listed_user(&list.fields, item))
            .collect::<Result<Vec<_>, _>>()?;
        let page = position.page + 1;
        let next = match list.pagination.next(&url, &headers, &body, items.len())? {
            // More follow, but the cap is reached: a partial listing must
            // never pass for a complete one (it would mark the rest gone).
            Some(_) if page >= list.max_pages() => {
                return Err(ConnectorError::Inconclusive(format!(
                    "the listing has more than {} pages (list.pagination.max_pages)",
                    list.max_pages()
                )));
            }
            Some(next) => Some(Position {
                pass: position.pass,
                page,
                url: Some(next),
            }),
            None if position.pass + 1 < list.passes() => Some(Position {
                pass: position.pass + 1,
                page: 0,
                url: None,
            }),
            None => None,
        };
        Ok(UserPage {
            users,
            next: next.map(|p| p.encode()),
        })
    }

    /// The first page of a pass: the rendered URL, the sweep's value and
    /// the pagination's first parameters.
    fn first_list_url(&self, list: &ListSpec, pass: usize) -> Result<Url, ConnectorError> {
        let mut url = render_url(&list.request.url, &self.values(None))?;
        if let Some(sweep) = &list.sweep {
            url = with_param(&url, &sweep.param, &sweep.values[pass]);
        }
        Ok(list.pagination.first(url))
    }

    /// The listed user in `item`.
    fn listed_user(&self, fields: &ListFields, item: &Value) -> Result<ListedUser, ConnectorError> {
        let text = |pointer: &Option<InnerPointer>| {
            pointer
                .as_ref()
                .and_then(|p| item.pointer(p))
                .and_then(scalar_text)
                .filter(|v| !v.trim().is_empty())
        };
        let vendor_id = item
            .pointer(&fields.id)
            .and_then(scalar_text)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| {
                ConnectorError::Decode(format!("a listed user has no id at {}", &*fields.id))
            })?;
        let active = match &fields.active {
            Some(condition) => condition.holds(item, &self.values(None))?,
            None => true,
        };
        Ok(ListedUser {
            vendor_id,
            email: text(&fields.email),
            name: text(&fields.name),
            raw_role: text(&fields.role).or_else(|| fields.role_default.clone()),
            active,
            last_login: text(&fields.last_login),
        })
    }

    /// Sends one list request (with the spec's auth, logging in first for
    /// session auth) and reads the answer: the spec's throttle rule, else
    /// the client's classification of any status but success.
    async fn fetch_list(
        &self,
        request: &RequestSpec,
        url: &Url,
    ) -> Result<(reqwest::header::HeaderMap, Value), ConnectorError> {
        let accept: Vec<u16> = self
            .spec
            .response
            .throttle
            .iter()
            .flat_map(|t| t.status.0.iter().copied())
            .collect();
        self.with_session(|session| {
            let accept = &accept;
            async move {
                let built = self.build(request, url.clone(), None, true, session.as_ref())?;
                let reply = self.client.send_accepting(built, accept).await?;
                let code = reply.status.as_u16();
                if reply.status.is_success() {
                    return Ok((reply.headers.clone(), reply.json()?));
                }
                if let Some(rule) = &self.spec.response.throttle
                    && rule.matches(code, &reply.headers)
                {
                    return Err(ConnectorError::Throttled {
                        status: code,
                        retry_after: rule.wait(&reply.headers),
                    });
                }
                Err(self.client.error_for(&reply))
            }
        })
        .await
    }
}

/// The users array of a list answer. Unlike a lookup's candidates, a
/// single object is not a list of one: a listing that cannot be read is an
/// error, never a short (and so "complete") page.
fn users_in<'b>(body: &'b Value, pointer: &str) -> Result<&'b [Value], ConnectorError> {
    let found = if pointer.is_empty() {
        Some(body)
    } else {
        body.pointer(pointer)
    };
    match found {
        Some(Value::Array(users)) => Ok(users),
        Some(Value::Null) => Ok(&[]),
        Some(_) => Err(ConnectorError::Decode(format!(
            "the list answer's users at `{pointer}` are not an array"
        ))),
        None => Err(ConnectorError::Decode(format!(
            "the list answer has no users at `{pointer}`"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let position = Position {
            pass: 2,
            page: 7,
            url: Some(Url::parse("https://v.example/v2/users?next_page_token=a:b").unwrap()),
        };
        assert_eq!(Position::decode(&position.encode()).unwrap(), position);
        let first = Position {
            pass: 1,
            page: 0,
            url: None,
        };
        assert_eq!(Position::decode(&first.encode()).unwrap(), first);
        assert!(Position::decode("abc").is_err());
        assert!(Position::decode("1:x:").is_err());
    }

    #[test]
    fn a_list_answer_without_a_users_array_is_an_error_not_an_empty_page() {
        let body = serde_json::json!({"users": [{"id": 1}], "one": {"id": 2}});
        assert_eq!(users_in(&body, "/users").unwrap().len(), 1);
        assert!(users_in(&body, "/one").is_err());
        assert!(users_in(&body, "/missing").is_err());
        assert!(
            users_in(&serde_json::json!({"users": null}), "/users")
                .unwrap()
                .is_empty()
        );
    }
}
