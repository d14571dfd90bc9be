//! `[list]`: what validation refuses (naming the key), and a listing
//! against a scripted vendor: sweeps, pages, the users' fields, cursors
//! that leave `base_url`'s origin.

use super::lookups::{Scripted, http};
use super::{AUTH, REQUEST, RESPONSE, build_at, error, inline};
use crate::connectors::http_preset::HttpPreset;
use crate::connectors::{Connector, ConnectorError, ListedUser};

/// A list by status (swept), paged by a cursor in the body.
const LIST: &str = r#"
    [saas.app.options.spec.list]
    users = "/users"
    sweep = { param = "status", values = ["active", "inactive"] }
    [saas.app.options.spec.list.request]
    url = "{{base_url}}/users"
    [saas.app.options.spec.list.pagination]
    style = "cursor"
    next = "/next"
    param = "token"
    [saas.app.options.spec.list.fields]
    id = "/id"
    email = "/email"
    role = "/role"
    role_default = "member"
    active = { pointer = "/status", equals = "active" }
    last_login = "/seen"
"#;

fn with_list(list: &str) -> String {
    inline(AUTH, REQUEST, RESPONSE, list)
}

#[test]
fn a_bad_list_section_fails_validation_naming_the_key() {
    let cases = [
        (
            LIST.replace("id = \"/id\"", ""),
            "saas.app.options.spec.list.fields:",
            "missing field `id`",
        ),
        (
            LIST.replace("email = ", "mail = "),
            "saas.app.options.spec.list.fields.mail:",
            "unknown field `mail`",
        ),
        (
            LIST.replace("users = \"/users\"", "users = \"users\""),
            "saas.app.options.spec.list.users:",
            "JSON pointer",
        ),
        (
            LIST.replace("{{base_url}}/users", "{{base_url}}/users?email={{email}}"),
            "saas.app.options.spec.list.request.url:",
            "the list must not depend on the user",
        ),
        (
            LIST.replace("{{base_url}}/users", "{{base_url}}/users?key={{secret}}"),
            "saas.app.options.spec.list.request.url:",
            "never in URLs",
        ),
        (
            LIST.replace("{{base_url}}", "https://elsewhere.example"),
            "saas.app.options.spec.list.request.url:",
            "not to base_url's origin",
        ),
        (
            LIST.replace("style = \"cursor\"", "style = \"scroll\""),
            "saas.app.options.spec.list.pagination.style:",
            "unknown variant `scroll`",
        ),
        (
            LIST.replace("next = \"/next\"", ""),
            "saas.app.options.spec.list.pagination:",
            "missing field `next`",
        ),
        (
            LIST.replace("param = \"token\"", "param = \"token\"\nsize = 10"),
            "saas.app.options.spec.list.pagination.size_param:",
            "is required with `size`",
        ),
        (
            LIST.replace("[\"active\", \"inactive\"]", "[]"),
            "saas.app.options.spec.list.sweep.values:",
            "at least one value",
        ),
        (
            LIST.replace("equals = \"active\"", "equals = \"{{external_id}}\""),
            "saas.app.options.spec.list.fields.active.equals:",
            "per user",
        ),
        (
            LIST.replace(
                "url = \"{{base_url}}/users\"",
                "url = \"{{base_url}}/users\"\nbody = '{}'",
            ),
            "saas.app.options.spec.list.request.body:",
            "POST",
        ),
    ];
    for (list, key, reason) in cases {
        let err = error(&with_list(&list));
        assert!(err.starts_with(key), "expected {key}, got {err}\n{list}");
        assert!(err.contains(reason), "expected {reason:?} in {err}");
    }
}

#[tokio::test]
async fn a_preset_without_a_list_section_cannot_list() {
    let preset = build_at("https://vendor.example", &with_list(""), "t").unwrap();
    let err = preset.list_page(None).await.unwrap_err();
    assert!(matches!(err, ConnectorError::Unsupported(_)), "{err:?}");
}

#[tokio::test]
async fn a_listing_sweeps_each_value_follows_cursors_and_maps_the_fields() {
    // active: two pages (cursor "p2"); inactive: one page.
    let vendor = Scripted::start(|target| {
        let body = if target.contains("status=inactive") {
            r#"{"users": [{"id": 3, "email": "C@x.com", "status": "inactive"}], "next": ""}"#
        } else if target.contains("token=p2") {
            r#"{"users": [{"id": "2", "email": "b@x.com", "status": "active", "role": "admin"}]}"#
        } else {
            r#"{"users": [{"id": "1", "email": "a@x.com", "status": "active", "role": "owner", "seen": "2026-01-02"}], "next": "p2"}"#
        };
        http("200 OK", &[], body)
    })
    .await;
    let preset = build_at(&vendor.base_url(), &with_list(LIST), "t0ken").unwrap();
    let mut users = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = preset.list_page(cursor.as_deref()).await.unwrap();
        pages += 1;
        users.extend(page.users);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let user = |id: &str, email: &str, role: &str, active: bool, login: Option<&str>| ListedUser {
        vendor_id: id.into(),
        email: Some(email.into()),
        name: None,
        raw_role: Some(role.into()),
        active,
        last_login: login.map(str::to_owned),
    };
    assert_eq!(
        users,
        vec![
            user("1", "a@x.com", "owner", true, Some("2026-01-02")),
            user("2", "b@x.com", "admin", true, None),
            user("3", "C@x.com", "member", false, None),
        ]
    );
    let heads = vendor.heads();
    assert!(
        heads[0].starts_with("GET /users?status=active "),
        "{}",
        heads[0]
    );
    assert!(
        heads[1].starts_with("GET /users?status=active&token=p2 "),
        "{}",
        heads[1]
    );
    assert!(
        heads[2].starts_with("GET /users?status=inactive "),
        "{}",
        heads[2]
    );
    assert!(
        heads
            .iter()
            .all(|h| h.to_lowercase().contains("authorization: bearer t0ken")),
        "every list request carries [auth]"
    );
}

#[tokio::test]
async fn a_cursor_leading_to_another_origin_is_refused_before_any_request() {
    let elsewhere = Scripted::start(|_| http("200 OK", &[], r#"{"users": []}"#)).await;
    let vendor = Scripted::start(|_| http("200 OK", &[], r#"{"users": []}"#)).await;
    let preset = build_at(&vendor.base_url(), &with_list(LIST), "t").unwrap();
    let forged = format!("0:1:{}/users?token=x", elsewhere.base_url());
    let err = preset.list_page(Some(&forged)).await.unwrap_err();
    assert!(err.to_string().contains("another origin"), "{err}");
    assert_eq!(elsewhere.requests(), 0, "the credential never left");
    assert_eq!(vendor.requests(), 0);
}

/// Every page of a listing, following `next` until the listing ends.
async fn list_all(preset: &HttpPreset) -> Vec<ListedUser> {
    let mut users = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = preset.list_page(cursor.as_deref()).await.unwrap();
        users.extend(page.users);
        match page.next {
            Some(next) => cursor = Some(next),
            None => return users,
        }
    }
}

#[tokio::test]
async fn offset_and_page_listings_read_past_pages_the_vendor_caps_below_the_size_asked() {
    // Five users; the vendor answers at most two per page whatever the
    // request asks for (100), as vendors with an undocumented cap do.
    let vendor = Scripted::start(|target| {
        let param = |name: &str| {
            target
                .split(['?', '&', ' '])
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.parse::<usize>().ok())
        };
        let start = param("offset").unwrap_or_else(|| (param("page").unwrap_or(1) - 1) * 2);
        let users: Vec<String> = (start..5.min(start + 2))
            .map(|i| format!(r#"{{"id": "{i}", "email": "u{i}@x.com", "status": "active"}}"#))
            .collect();
        http(
            "200 OK",
            &[],
            &format!(r#"{{"users": [{}]}}"#, users.join(",")),
        )
    })
    .await;
    for pagination in [
        "style = \"offset\"\nlimit = 100",
        "style = \"page\"\nsize_param = \"per_page\"\nsize = 100",
    ] {
        let list = LIST
            .replace(
                "sweep = { param = \"status\", values = [\"active\", \"inactive\"] }\n",
                "",
            )
            .replace(
                "style = \"cursor\"\n    next = \"/next\"\n    param = \"token\"",
                pagination,
            );
        let preset = build_at(&vendor.base_url(), &with_list(&list), "t").unwrap();
        let before = vendor.requests();
        let ids: Vec<String> = list_all(&preset)
            .await
            .into_iter()
            .map(|u| u.vendor_id)
            .collect();
        assert_eq!(ids, ["0", "1", "2", "3", "4"], "{pagination}");
        // Three pages with users, then the empty page that ends the listing.
        assert_eq!(vendor.requests() - before, 4, "{pagination}");
    }
}
