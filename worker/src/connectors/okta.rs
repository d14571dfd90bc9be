//! Okta Users API (`/api/v1`) with admin roles.
//!
//! Facts this file relies on (`/work/shared/VENDORS.md` §5):
//! - Auth: `Authorization: SSWS <api token>` (a static token: a 401
//!   `E0000011` means revoked or wrong, and no renewal can help).
//! - Lookup: `GET /api/v1/users?search=profile.email eq "<email>"` answers an
//!   array, `[]` when nobody matches. Search, unlike a plain list, also
//!   returns `DEPROVISIONED` users, so a deactivated user is found as
//!   inactive rather than reported missing.
//! - Status values: `STAGED, PROVISIONED, ACTIVE, RECOVERY, LOCKED_OUT,
//!   PASSWORD_EXPIRED, SUSPENDED, DEPROVISIONED`. Active here means "holds
//!   access": every status but `SUSPENDED` (an admin blocked sign-in) and
//!   `DEPROVISIONED` (deactivated). Locked-out, recovering and
//!   password-expired users get back in by themselves, and staged or
//!   provisioned users are assigned and count against the licence, so all
//!   of those are active.
//! - The role is not on the user: `GET /api/v1/users/{id}/roles` lists
//!   admin role assignments by `type`. The vendor's answer is kept whole:
//!   every active assignment's type, sorted (empty for a user with no admin
//!   role). The role map is keyed by the most privileged one by a fixed
//!   order ([`ROLE_ORDER`]), or `USER` for a user with no admin role; role
//!   types Okta adds later rank below the known ones but above `USER`.
//! - Okta counts requests per endpoint (search and roles are separate
//!   buckets): a SaaS app configures them as `rate.buckets`, and the vendor
//!   client paces each request against its own bucket.
//! - Errors share one body shape with `errorCode`: `E0000011` invalid token
//!   (401), `E0000006` forbidden (403), `E0000007` not found (404),
//!   `E0000047` rate limit (429). Every request goes through the vendor
//!   client, which also reads the `X-Rate-Limit-*` headers for the limiter.
//!
//! Actions: `deactivate_user` (`POST /api/v1/users/{id}/lifecycle/deactivate`
//! after a lookup; an already deprovisioned user is left alone, so a
//! retried job succeeds).

use std::collections::BTreeMap;

use async_trait::async_trait;
use futures::{StreamExt as _, TryStreamExt as _};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use rolecall_common::messages::{Action, UserRef};
use secrecy::ExposeSecret;
use serde_json::Value;
use url::Url;

use super::listing::text;
use super::{
    ActionDone, BuildContext, BuildError, Connector, ConnectorError, ListedUser, Lookup, UserPage,
    VendorClient, VendorUser,
};

/// Admin role types from most to least privileged.
pub const ROLE_ORDER: [&str; 11] = [
    "SUPER_ADMIN",
    "ORG_ADMIN",
    "APP_ADMIN",
    "USER_ADMIN",
    "GROUP_MEMBERSHIP_ADMIN",
    "HELP_DESK_ADMIN",
    "READ_ONLY_ADMIN",
    "REPORT_ADMIN",
    "MOBILE_ADMIN",
    "API_ACCESS_MANAGEMENT_ADMIN",
    "CUSTOM",
];

/// The raw role of a user without any admin role.
pub const NO_ADMIN_ROLE: &str = "USER";

/// Roles requests a listing page keeps open at once.
const ROLES_IN_FLIGHT: usize = 8;

/// Where Okta puts its error code.
const CODE: &str = "errorCode";

/// The Okta connector.
pub struct Okta {
    client: VendorClient,
    users_url: Url,
    /// `SSWS <token>`, marked sensitive.
    auth: HeaderValue,
}

impl Okta {
    /// Builds the connector from a SaaS app's settings.
    pub fn from_context(ctx: &BuildContext<'_>) -> Result<Self, BuildError> {
        let Options {} = ctx.options()?;
        let token = ctx.credential.expose_secret().trim();
        if token.is_empty() || token.contains(char::is_whitespace) {
            return Err(ctx.malformed("is not an Okta API token (one word, no spaces)"));
        }
        let mut auth = HeaderValue::from_str(&format!("SSWS {token}"))
            .map_err(|_| ctx.malformed("is not a valid HTTP header value"))?;
        auth.set_sensitive(true);
        Ok(Self {
            client: ctx.client.with_error_code(CODE),
            users_url: users_url(&ctx.saas.base_url),
            auth,
        })
    }

    fn get(&self, url: Url) -> reqwest::RequestBuilder {
        self.client
            .get(url)
            .header(AUTHORIZATION, self.auth.clone())
            .header(ACCEPT, "application/json")
    }

    /// `{users_url}/{id}/{rest…}`, with the id escaped as a path segment.
    fn user_url(&self, id: &str, rest: &[&str]) -> Url {
        let mut url = self.users_url.clone();
        url.path_segments_mut()
            .expect("an http(s) URL has path segments")
            .push(id)
            .extend(rest);
        url
    }

    /// The user whose e-mail or login is `email`, ignoring case: searched by
    /// e-mail, then fetched by login when the search finds nobody.
    async fn find(&self, email: &str) -> Result<Option<Value>, ConnectorError> {
        let search = format!("profile.email eq \"{}\"", escape(email));
        let request = self
            .get(self.users_url.clone())
            .query(&[("search", search.as_str())]);
        let body = self.client.send(request).await?.json()?;
        let Value::Array(users) = body else {
            return Err(ConnectorError::Decode(
                "the user search did not answer a list".into(),
            ));
        };
        let matches = |user: &Value, field: &str| {
            user.pointer(&format!("/profile/{field}"))
                .and_then(Value::as_str)
                .is_some_and(|v| v.trim().eq_ignore_ascii_case(email))
        };
        let mut candidates: Vec<Value> = users
            .into_iter()
            .filter(|u| matches(u, "email") || matches(u, "login"))
            .collect();
        // Two accounts may share an e-mail (an old deprovisioned one and its
        // successor): the one holding access is the one that costs a seat.
        candidates.sort_by_key(|u| !is_active(status(u)));
        if let Some(user) = candidates.into_iter().next() {
            return Ok(Some(user));
        }
        // Nobody has it as `profile.email`, but it may be a login (kept
        // when the primary e-mail changed, or a UPN alias): "not found" is
        // what deactivates, so it needs both of Okta's answers for it,
        // `[]` on the search and 404 on `/users/{login}` (VENDORS.md §5, §9).
        match self.client.send(self.get(self.user_url(email, &[]))).await {
            Ok(reply) => {
                let user = reply.json()?;
                Ok((matches(&user, "login") || matches(&user, "email")).then_some(user))
            }
            Err(ConnectorError::Rejected { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A user's roles; `None` when Okta answers 404 (the user was deleted
    /// since it was found).
    async fn roles(&self, id: &str) -> Result<Option<Vec<Value>>, ConnectorError> {
        let request = self.get(self.user_url(id, &["roles"]));
        match self.client.send(request).await {
            Ok(reply) => match reply.json()? {
                Value::Array(roles) => Ok(Some(roles)),
                _ => Err(ConnectorError::Decode(
                    "the roles answer is not a list".into(),
                )),
            },
            Err(ConnectorError::Rejected { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The `after` cursor of a `Link: <…>; rel="next"` header, if any.
fn next_after(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find(|link| link.contains("rel=\"next\""))
        .and_then(|link| {
            let target = link.split(';').next()?.trim();
            let url = Url::parse(target.trim_start_matches('<').trim_end_matches('>')).ok()?;
            url.query_pairs()
                .find(|(k, _)| k == "after")
                .map(|(_, v)| v.into_owned())
        })
}

#[async_trait]
impl Connector for Okta {
    /// `GET /api/v1/users?search=status pr&limit=200[&after=<cursor>]`: a
    /// search, unlike the plain list, includes `DEPROVISIONED` users. The
    /// cursor is the `after` of the `Link: rel="next"` header (only the
    /// value is kept, so a link to another host is never followed). The list
    /// carries no roles: Okta documents them only per user
    /// (`GET /api/v1/users/{id}/roles`, VENDORS.md §5), so each listed user
    /// costs one roles request, through the same client and fleet limit as
    /// a lookup's (Okta's roles bucket, when configured), a few at a time.
    /// The role kept is the lookup's: the most privileged type, or `USER`.
    async fn list_page(&self, cursor: Option<&str>) -> Result<UserPage, ConnectorError> {
        let mut request = self
            .get(self.users_url.clone())
            .query(&[("search", "status pr"), ("limit", "200")]);
        if let Some(after) = cursor {
            request = request.query(&[("after", after)]);
        }
        let reply = self.client.send(request).await?;
        let Value::Array(found) = reply.json()? else {
            return Err(ConnectorError::Decode(
                "the user list did not answer a list".into(),
            ));
        };
        let mut users = Vec::with_capacity(found.len());
        for user in &found {
            users.push(ListedUser {
                vendor_id: user_id(user)?,
                email: text(user.pointer("/profile/email"))
                    .or_else(|| text(user.pointer("/profile/login"))),
                name: match (
                    text(user.pointer("/profile/firstName")),
                    text(user.pointer("/profile/lastName")),
                ) {
                    (Some(f), Some(l)) => Some(format!("{f} {l}")),
                    (f, l) => f.or(l),
                },
                raw_role: None,
                active: is_active(status(user)),
                last_login: text(user.get("lastLogin")),
            });
        }
        // In order, at most ROLES_IN_FLIGHT at once: the limiter paces them,
        // this only bounds the page's open requests.
        let ids: Vec<String> = users.iter().map(|u| u.vendor_id.clone()).collect();
        let roles: Vec<Option<String>> = futures::stream::iter(ids)
            .map(|id| async move {
                Ok::<_, ConnectorError>(self.roles(&id).await?.map(|r| highest_role(&r)))
            })
            .buffered(ROLES_IN_FLIGHT)
            .try_collect()
            .await?;
        // A user deleted between the list and its roles call is left out
        // of the page, as if listed a moment later: the import then counts
        // it gone, which it is; failing the import for it would leave
        // every other user's record stale.
        let mut roles = roles.into_iter();
        users.retain_mut(|user| match roles.next().flatten() {
            Some(role) => {
                user.raw_role = Some(role);
                true
            }
            None => false,
        });
        let next = if found.is_empty() {
            None
        } else {
            next_after(&reply.headers)
        };
        Ok(UserPage { users, next })
    }

    async fn lookup(&self, user: &UserRef) -> Result<Lookup, ConnectorError> {
        let email = user.email.trim();
        let Some(found) = self.find(email).await? else {
            return Ok(Lookup::NotFound);
        };
        let id = user_id(&found)?;
        // Deleted between the search and now, perhaps: but a 404 on the
        // roles of a user the search just returned is no verdict.
        let roles = self.roles(&id).await?.ok_or_else(|| {
            ConnectorError::Inconclusive(
                "Okta found the user but answered 404 for their roles".into(),
            )
        })?;
        Ok(Lookup::Found(VendorUser {
            vendor_id: id,
            raw_role: highest_role(&roles),
            vendor_roles: role_types(&roles),
            active: is_active(status(&found)),
            raw: found,
        }))
    }

    async fn act(
        &self,
        action: Action,
        user: &UserRef,
        _attributes: &BTreeMap<String, String>,
    ) -> Result<ActionDone, ConnectorError> {
        if action != Action::DeactivateUser {
            return Err(ConnectorError::Unsupported(action.as_str()));
        }
        let Some(found) = self.find(user.email.trim()).await? else {
            return Err(ConnectorError::no_such_user("deactivate"));
        };
        let id = user_id(&found)?;
        if status(&found) == "DEPROVISIONED" {
            return Ok(ActionDone {
                vendor_id: Some(id),
                detail: "already deactivated".into(),
            });
        }
        let request = self
            .client
            .post(self.user_url(&id, &["lifecycle", "deactivate"]))
            .header(AUTHORIZATION, self.auth.clone())
            .header(ACCEPT, "application/json");
        self.client.send(request).await?;
        Ok(ActionDone {
            vendor_id: Some(id),
            detail: "deactivated".into(),
        })
    }
}

/// `{base}/api/v1/users`, whether the base URL is the bare org URL or
/// already ends in `/api/v1`.
fn users_url(base: &Url) -> Url {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    let path = url.path().trim_end_matches('/');
    let path = path.strip_suffix("/api/v1").unwrap_or(path).to_owned();
    url.set_path(&format!("{path}/api/v1/users"));
    url
}

/// Escapes a value for a double-quoted string in Okta's search expression.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

fn status(user: &Value) -> &str {
    user.get("status").and_then(Value::as_str).unwrap_or("")
}

fn is_active(status: &str) -> bool {
    !matches!(status, "DEPROVISIONED" | "SUSPENDED")
}

fn user_id(user: &Value) -> Result<String, ConnectorError> {
    user.get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| ConnectorError::Decode("a user has no `id`".into()))
}

/// Okta takes no options.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {}

/// The types of the active role assignments.
fn active_types(roles: &[Value]) -> impl Iterator<Item = &str> {
    roles
        .iter()
        // Assignments carry a status; one that is not ACTIVE grants nothing.
        .filter(|r| {
            r.get("status")
                .and_then(Value::as_str)
                .is_none_or(|s| s == "ACTIVE")
        })
        .filter_map(|r| r.get("type").and_then(Value::as_str))
        .filter(|t| !t.is_empty())
}

/// Every active role type, verbatim, sorted and without repeats.
fn role_types(roles: &[Value]) -> Vec<String> {
    let mut types: Vec<String> = active_types(roles).map(str::to_owned).collect();
    types.sort();
    types.dedup();
    types
}

/// The most privileged role type among active assignments, by [`ROLE_ORDER`].
fn highest_role(roles: &[Value]) -> String {
    active_types(roles)
        .min_by_key(|t| {
            ROLE_ORDER
                .iter()
                .position(|known| known == t)
                .unwrap_or(ROLE_ORDER.len())
        })
        .map_or_else(|| NO_ADMIN_ROLE.to_owned(), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_most_privileged_role_wins() {
        let roles = [
            json!({"type": "HELP_DESK_ADMIN", "status": "ACTIVE"}),
            json!({"type": "ORG_ADMIN", "status": "ACTIVE"}),
            json!({"type": "SUPER_ADMIN", "status": "INACTIVE"}),
        ];
        assert_eq!(highest_role(&roles), "ORG_ADMIN");
        assert_eq!(highest_role(&[]), "USER");
        let unknown = [json!({"type": "NEW_KIND_ADMIN"}), json!({"type": "CUSTOM"})];
        assert_eq!(highest_role(&unknown), "CUSTOM");
        assert_eq!(
            highest_role(&[json!({"type": "NEW_KIND_ADMIN"})]),
            "NEW_KIND_ADMIN"
        );
    }

    #[test]
    fn every_active_role_type_is_kept_sorted() {
        let roles = [
            json!({"type": "USER_ADMIN", "status": "ACTIVE"}),
            json!({"type": "APP_ADMIN", "status": "ACTIVE"}),
            json!({"type": "USER_ADMIN", "status": "ACTIVE"}),
            json!({"type": "SUPER_ADMIN", "status": "INACTIVE"}),
        ];
        assert_eq!(role_types(&roles), ["APP_ADMIN", "USER_ADMIN"]);
        assert!(role_types(&[]).is_empty());
    }

    #[test]
    fn search_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c@x.org"#), r#"a\"b\\c@x.org"#);
    }

    #[test]
    fn the_users_url_tolerates_slashes_and_api_paths() {
        for base in [
            "https://acme.okta.com",
            "https://acme.okta.com/",
            "https://acme.okta.com/api/v1",
            "https://acme.okta.com/api/v1/",
        ] {
            assert_eq!(
                users_url(&base.parse().unwrap()).as_str(),
                "https://acme.okta.com/api/v1/users",
                "{base}"
            );
        }
    }

    #[test]
    fn suspended_and_deprovisioned_users_are_inactive() {
        for s in [
            "ACTIVE",
            "STAGED",
            "PROVISIONED",
            "RECOVERY",
            "LOCKED_OUT",
            "PASSWORD_EXPIRED",
        ] {
            assert!(is_active(s), "{s}");
        }
        assert!(!is_active("SUSPENDED"));
        assert!(!is_active("DEPROVISIONED"));
    }
}
