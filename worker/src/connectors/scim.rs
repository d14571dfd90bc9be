//! SCIM 2.0 (RFC 7643/7644): Miro, and any SCIM server, through presets.
//!
//! Lookup: `GET <base>/Users?filter=userName eq "<email>"` (RFC 7644
//! §3.4.2.2). A query without matches is a success with `totalResults: 0`
//! (§3.4.2), so "not found" is never a 404 here. Errors come as SCIM error
//! bodies (`scimType`, `detail`, `status` as a string); vendors answer 429
//! with them (Miro adds `scimType: tooManyRequests`), which the shared
//! response helper classifies like any throttle.
//!
//! SCIM has no canonical role attribute, so where the role comes from is
//! configuration (`role_source`): `user_type` (Miro's licence), the primary
//! of `roles[]`, `entitlements[]`, or `groups[]`. Multi-valued sources pick
//! the highest role by `role_order` ("highest role wins"). Presets give each
//! kind of server sensible defaults:
//!
//! | preset | role_source | notes |
//! |---|---|---|
//! | `miro` | `user_type` | licence (Full, Free, …); Bearer SCIM token |
//! | `okta` | `groups` | Okta pushes groups; order them in `role_order` |
//! | `slack` | `roles` | primary role; Slack also sets `userType` |
//! | `generic` | `roles` | |

use std::collections::BTreeMap;

use async_trait::async_trait;
use rolecall_common::credentials::CredentialParts;
use rolecall_common::messages::{Action, UserRef};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use url::Url;

use serde::Deserialize;

use super::listing::text;
use super::{
    ActionDone, BuildContext, BuildError, Connector, ConnectorError, ListedUser, Lookup, UserPage,
    VendorClient, VendorUser,
};

const SCIM_JSON: &str = "application/scim+json";

/// Where a user's role is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleSource {
    /// The `userType` attribute (Miro: the licence).
    #[serde(alias = "userType")]
    UserType,
    /// The primary entry of `roles[]` (else the highest by `role_order`).
    Roles,
    /// The highest entry of `entitlements[]` by `role_order`.
    Entitlements,
    /// The highest group of `groups[]` by `role_order` (display or value).
    Groups,
}

/// Kinds of SCIM servers, each with its own role source by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
enum Preset {
    Miro,
    Okta,
    Slack,
    #[default]
    Generic,
}

/// How the credential is presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
enum AuthKind {
    #[default]
    Bearer,
    Basic,
}

/// The connector's options (`saas.<name>.options`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    #[serde(default)]
    preset: Preset,
    #[serde(default)]
    role_source: Option<RoleSource>,
    #[serde(default)]
    role_order: Vec<String>,
    #[serde(default)]
    auth: AuthKind,
    #[serde(default)]
    filter: FilterOn,
}

enum Auth {
    Bearer(SecretString),
    Basic {
        username: SecretString,
        password: SecretString,
    },
}

/// Which attribute the e-mail is matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
enum FilterOn {
    /// `userName eq "…"`: most servers use the e-mail as userName.
    #[default]
    #[serde(alias = "userName")]
    UserName,
    /// `emails.value eq "…"`, for servers whose userName is not the e-mail.
    Emails,
}

/// A SCIM 2.0 server.
pub struct Scim {
    client: VendorClient,
    users_url: Url,
    auth: Auth,
    role_source: RoleSource,
    role_order: Vec<String>,
    filter_on: FilterOn,
}

impl Scim {
    /// Builds the connector from a SaaS app's settings.
    pub fn from_context(ctx: &BuildContext<'_>) -> Result<Self, BuildError> {
        let options: Options = ctx.options()?;
        let role_source = options.role_source.unwrap_or(match options.preset {
            Preset::Miro => RoleSource::UserType,
            Preset::Okta => RoleSource::Groups,
            Preset::Slack | Preset::Generic => RoleSource::Roles,
        });
        let role_order = options.role_order;
        if role_source == RoleSource::Groups && role_order.is_empty() {
            return Err(ctx.bad_option(
                "role_order",
                "groups are mapped to roles through role_order (highest first): list them",
            ));
        }
        let auth = match options.auth {
            AuthKind::Bearer => Auth::Bearer(ctx.credential.clone()),
            AuthKind::Basic => {
                let parts = CredentialParts::parse(&ctx.credential, &["username", "password"])
                    .map_err(|reason| ctx.malformed(reason))?;
                Auth::Basic {
                    username: parts.get("username").cloned().expect("checked by parse"),
                    password: parts.get("password").cloned().expect("checked by parse"),
                }
            }
        };
        let filter_on = options.filter;
        let mut base = ctx.saas.base_url.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        Ok(Self {
            client: ctx.client.with_error_code("scimType"),
            users_url: base.join("Users").expect("a constant relative path joins"),
            auth,
            role_source,
            role_order,
            filter_on,
        })
    }

    fn request(&self, method: reqwest::Method, url: Url) -> reqwest::RequestBuilder {
        let builder = self
            .client
            .request(method, url)
            .header(reqwest::header::ACCEPT, SCIM_JSON);
        match &self.auth {
            Auth::Bearer(token) => builder.bearer_auth(token.expose_secret()),
            Auth::Basic { username, password } => {
                builder.basic_auth(username.expose_secret(), Some(password.expose_secret()))
            }
        }
    }

    async fn find(&self, email: &str) -> Result<Option<Value>, ConnectorError> {
        let attribute = match self.filter_on {
            FilterOn::UserName => "userName",
            FilterOn::Emails => "emails.value",
        };
        let filter = format!("{attribute} eq {}", filter_string(email));
        let request = self
            .request(reqwest::Method::GET, self.users_url.clone())
            .query(&[
                ("filter", filter.as_str()),
                ("startIndex", "1"),
                ("count", "10"),
            ]);
        let body = self.client.send(request).await?.json()?;
        let total = body
            .get("totalResults")
            .and_then(Value::as_u64)
            .ok_or_else(|| ConnectorError::Decode("ListResponse without totalResults".into()))?;
        if total == 0 {
            return Ok(None);
        }
        let resources = body
            .get("Resources")
            .and_then(Value::as_array)
            .ok_or_else(|| ConnectorError::Decode("ListResponse without Resources".into()))?;
        // Servers may be lax with filters: keep only a real match.
        let found = resources.iter().find(|u| matches_email(u, email)).cloned();
        if found.is_none() && total > resources.len() as u64 {
            // More matches than this page holds, and none of these is the
            // user: no verdict.
            return Err(ConnectorError::Inconclusive(format!(
                "the filter matched {total} users and the {} returned do not include the user",
                resources.len()
            )));
        }
        Ok(found)
    }

    /// The user's role according to the configured source, and every
    /// value the source holds, verbatim.
    fn role_of(&self, user: &Value) -> (String, Vec<String>) {
        let ranked = |candidates: Vec<String>| -> Option<String> {
            if self.role_order.is_empty() {
                return candidates.into_iter().next();
            }
            self.role_order
                .iter()
                .find(|r| candidates.iter().any(|c| c.eq_ignore_ascii_case(r)))
                .cloned()
        };
        let values = |attr: &str, keys: &[&str]| -> Vec<String> {
            user.get(attr)
                .and_then(Value::as_array)
                .map(|items| {
                    items
                        .iter()
                        .flat_map(|i| keys.iter().filter_map(move |k| i.get(*k)?.as_str()))
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        let all = match self.role_source {
            RoleSource::UserType => user
                .get("userType")
                .and_then(Value::as_str)
                .map(str::to_string)
                .into_iter()
                .collect(),
            RoleSource::Roles => values("roles", &["value"]),
            RoleSource::Entitlements => values("entitlements", &["value"]),
            RoleSource::Groups => values("groups", &["display", "value"]),
        };
        let role = match self.role_source {
            RoleSource::UserType => all.first().cloned(),
            RoleSource::Roles => {
                let primary = user
                    .get("roles")
                    .and_then(Value::as_array)
                    .and_then(|roles| {
                        roles
                            .iter()
                            .find(|r| r.get("primary").and_then(Value::as_bool) == Some(true))
                    })
                    .and_then(|r| r.get("value").and_then(Value::as_str))
                    .map(str::to_string);
                primary.or_else(|| ranked(values("roles", &["value"])))
            }
            RoleSource::Entitlements => ranked(values("entitlements", &["value"])),
            RoleSource::Groups => ranked(values("groups", &["display", "value"])),
        };
        // No role at all is still an answer: it is priced with the default
        // role and shows up in the summary as an unknown role.
        (role.unwrap_or_else(|| "(none)".into()), all)
    }
}

/// Quotes a value for a SCIM filter: a JSON string, so `"` and `\` are escaped.
pub fn filter_string(value: &str) -> String {
    Value::String(value.to_string()).to_string()
}

fn matches_email(user: &Value, email: &str) -> bool {
    let user_name = user.get("userName").and_then(Value::as_str);
    let emails = user
        .get("emails")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("value").and_then(Value::as_str));
    user_name
        .into_iter()
        .chain(emails)
        .any(|v| v.eq_ignore_ascii_case(email))
}

/// Users asked for per listing page; servers cap it (Miro at 1000, RFC
/// 7644 lets any server return fewer), so paging goes by what came back.
const LIST_COUNT: usize = 1000;

#[async_trait]
impl Connector for Scim {
    /// `GET <base>/Users?startIndex=<cursor>&count=1000`: SCIM index paging
    /// (RFC 7644 §3.4.2.4); the cursor is the next 1-based start index.
    async fn list_page(&self, cursor: Option<&str>) -> Result<UserPage, ConnectorError> {
        let start: u64 = match cursor {
            None => 1,
            Some(c) => c
                .parse()
                .map_err(|_| ConnectorError::Decode(format!("bad SCIM list cursor `{c}`")))?,
        };
        let request = self
            .request(reqwest::Method::GET, self.users_url.clone())
            .query(&[
                ("startIndex", start.to_string()),
                ("count", LIST_COUNT.to_string()),
            ]);
        let body = self.client.send(request).await?.json()?;
        let total = body
            .get("totalResults")
            .and_then(Value::as_u64)
            .ok_or_else(|| ConnectorError::Decode("ListResponse without totalResults".into()))?;
        let resources = match body.get("Resources") {
            Some(Value::Array(r)) => r.as_slice(),
            None if total < start => &[],
            _ => {
                return Err(ConnectorError::Decode(
                    "ListResponse without Resources".into(),
                ));
            }
        };
        let mut users = Vec::with_capacity(resources.len());
        for user in resources {
            let vendor_id = text(user.get("id"))
                .ok_or_else(|| ConnectorError::Decode("user without id".into()))?;
            let primary = user
                .get("emails")
                .and_then(Value::as_array)
                .and_then(|emails| {
                    emails
                        .iter()
                        .find(|e| e.get("primary").and_then(Value::as_bool) == Some(true))
                        .or_else(|| emails.first())
                })
                .and_then(|e| text(e.get("value")));
            let (raw_role, _) = self.role_of(user);
            users.push(ListedUser {
                vendor_id,
                email: primary.or_else(|| text(user.get("userName"))),
                name: text(user.get("displayName")),
                raw_role: Some(raw_role),
                active: user.get("active").and_then(Value::as_bool).unwrap_or(true),
                last_login: None,
            });
        }
        let end = start - 1 + users.len() as u64;
        let next = (!users.is_empty() && end < total).then(|| (end + 1).to_string());
        Ok(UserPage { users, next })
    }

    async fn lookup(&self, user: &UserRef) -> Result<Lookup, ConnectorError> {
        let Some(found) = self.find(user.email.trim()).await? else {
            return Ok(Lookup::NotFound);
        };
        let vendor_id = found
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| ConnectorError::Decode("user without id".into()))?
            .to_string();
        let (raw_role, vendor_roles) = self.role_of(&found);
        Ok(Lookup::Found(VendorUser {
            vendor_id,
            raw_role,
            vendor_roles,
            // RFC 7643: `active` is the administrative status; absent means active.
            active: found.get("active").and_then(Value::as_bool).unwrap_or(true),
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
        let found = self
            .find(user.email.trim())
            .await?
            .ok_or_else(|| ConnectorError::no_such_user("deactivate"))?;
        let id = found
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| ConnectorError::Decode("user without id".into()))?;
        let mut url = self.users_url.clone();
        url.path_segments_mut()
            .map_err(|_| ConnectorError::Decode("base URL cannot take a path".into()))?
            .push(id);
        let patch = serde_json::json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{ "op": "replace", "value": { "active": false } }]
        });
        let request = self
            .request(reqwest::Method::PATCH, url)
            .header(reqwest::header::CONTENT_TYPE, SCIM_JSON)
            .body(patch.to_string());
        self.client.send(request).await?;
        Ok(ActionDone {
            vendor_id: Some(id.to_string()),
            detail: "deactivated (active=false)".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scim(source: RoleSource, order: &[&str]) -> Scim {
        Scim {
            client: VendorClient::unlimited("test"),
            users_url: "http://127.0.0.1:9/Users".parse().unwrap(),
            auth: Auth::Bearer(SecretString::from("t".to_string())),
            role_source: source,
            role_order: order.iter().map(|s| s.to_string()).collect(),
            filter_on: FilterOn::UserName,
        }
    }

    #[test]
    fn filter_values_are_escaped_as_json_strings() {
        assert_eq!(filter_string("a@x.io"), r#""a@x.io""#);
        assert_eq!(filter_string(r#"a"b\c@x.io"#), r#""a\"b\\c@x.io""#);
    }

    #[test]
    fn the_role_comes_from_the_configured_source() {
        let user = json!({
            "userType": "Full",
            "roles": [{"value": "viewer"}, {"value": "admin", "primary": true}],
            "entitlements": [{"value": "basic"}, {"value": "enterprise"}],
            "groups": [{"value": "g1", "display": "Viewers"}, {"value": "g2", "display": "Admins"}]
        });
        assert_eq!(scim(RoleSource::UserType, &[]).role_of(&user).0, "Full");
        assert_eq!(scim(RoleSource::Roles, &[]).role_of(&user).0, "admin");
        assert_eq!(
            scim(RoleSource::Entitlements, &["enterprise", "pro", "basic"])
                .role_of(&user)
                .0,
            "enterprise"
        );
        assert_eq!(
            scim(RoleSource::Groups, &["Admins", "Editors", "Viewers"])
                .role_of(&user)
                .0,
            "Admins"
        );
        assert_eq!(
            scim(RoleSource::Groups, &["Owners"]).role_of(&user).0,
            "(none)"
        );
    }

    #[test]
    fn every_value_of_the_source_is_kept_verbatim() {
        let user = json!({"roles": [{"value": "viewer"}, {"value": "Admin", "primary": true}]});
        let (role, all) = scim(RoleSource::Roles, &[]).role_of(&user);
        assert_eq!(role, "Admin");
        assert_eq!(all, ["viewer", "Admin"]);
    }

    #[test]
    fn without_a_primary_role_the_highest_wins() {
        let user = json!({"roles": [{"value": "viewer"}, {"value": "editor"}]});
        assert_eq!(
            scim(RoleSource::Roles, &["admin", "editor", "viewer"])
                .role_of(&user)
                .0,
            "editor"
        );
    }

    #[test]
    fn e_mails_match_user_name_or_emails_case_insensitively() {
        let user = json!({"userName": "ana", "emails": [{"value": "Ana@X.io"}]});
        assert!(matches_email(&user, "ana@x.io"));
        assert!(!matches_email(&user, "bo@x.io"));
    }
}
