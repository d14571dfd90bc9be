//! Okta's Users API (`/api/v1`) over real HTTP: search, roles, `Link`
//! paging and the rate-limit headers on every response.

mod common;

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{KEY, answer, header, start};
use reqwest::header::HeaderMap;
use rolecall_sim::{OKTA_ROLES, RateLimit, SimConfig, SimHandle, Vendor};
use serde_json::{Value, json};

fn okta(config: SimConfig) -> SimConfig {
    SimConfig {
        vendor: Vendor::Okta,
        ..config
    }
}

async fn get(sim: &SimHandle, path: &str, query: &[(&str, &str)]) -> (u16, HeaderMap, Value) {
    answer(
        reqwest::Client::new()
            .get(format!("{}/api/v1{path}", sim.base_url()))
            .header("Authorization", format!("SSWS {KEY}"))
            .query(query),
    )
    .await
}

fn search_for(email: &str) -> String {
    format!("profile.email eq \"{email}\"")
}

fn rate_headers(headers: &HeaderMap) -> (u64, u64, u64) {
    let number = |name| {
        header(headers, name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    (
        number("x-rate-limit-limit"),
        number("x-rate-limit-remaining"),
        number("x-rate-limit-reset"),
    )
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

#[tokio::test]
async fn finds_a_user_and_their_roles() {
    let sim = start(okta(SimConfig {
        users: 200,
        ..SimConfig::default()
    }))
    .await;
    let admin = sim
        .population()
        .users
        .iter()
        .find(|u| !u.access_role.is_empty() && u.deactivated_at.is_none())
        .expect("an admin")
        .clone();
    let (status, headers, body) =
        get(&sim, "/users", &[("search", &search_for(&admin.email))]).await;
    assert_eq!(status, 200);
    let (limit, remaining, reset) = rate_headers(&headers);
    assert_eq!((limit, remaining), (600, 600), "nominal when unlimited");
    assert!(reset > now_secs());
    let [found] = body.as_array().expect("array").as_slice() else {
        panic!("one user expected: {body}");
    };
    assert_eq!(found["id"], admin.id.as_str());
    assert!(admin.id.starts_with("00u") && admin.id.len() == 20);
    assert_eq!(found["status"], "ACTIVE");
    let (given, family) = admin.given_and_family_name();
    assert_eq!(
        found["profile"],
        json!({"firstName": given, "lastName": family, "mobilePhone": null,
               "secondEmail": null, "login": admin.email, "email": admin.email})
    );

    let (status, _, roles) = get(&sim, &format!("/users/{}/roles", admin.id), &[]).await;
    assert_eq!(status, 200);
    let roles = roles.as_array().expect("array");
    // The main (most privileged) role first, then any lesser ones.
    let role = &roles[0];
    assert_eq!(role["type"], admin.access_role.as_str());
    assert!(OKTA_ROLES.contains(&admin.access_role.as_str()));
    for role in roles {
        assert_eq!(
            (&role["status"], &role["assignmentType"]),
            (&json!("ACTIVE"), &json!("USER"))
        );
        assert!(role["label"].is_string() && role["id"].is_string());
    }

    // By login, in any case, then roles by id: none for a plain user.
    let plain = sim
        .population()
        .users
        .iter()
        .find(|u| u.access_role.is_empty())
        .expect("a plain user")
        .clone();
    let (status, _, body) = get(&sim, &format!("/users/{}", plain.email.to_uppercase()), &[]).await;
    assert_eq!((status, &body["id"]), (200, &json!(plain.id)));
    let (_, _, roles) = get(&sim, &format!("/users/{}/roles", plain.id), &[]).await;
    assert_eq!(roles, json!([]));
}

#[tokio::test]
async fn unknown_users_are_empty_or_404() {
    let sim = start(okta(SimConfig::default())).await;
    let (status, _, body) = get(
        &sim,
        "/users",
        &[("search", &search_for("nobody@example.com"))],
    )
    .await;
    assert_eq!((status, body), (200, json!([])));
    for path in ["/users/nobody@example.com", "/users/00unope/roles"] {
        let (status, headers, body) = get(&sim, path, &[]).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["errorCode"], "E0000007");
        assert_eq!(body["errorLink"], "E0000007");
        assert!(
            body["errorSummary"]
                .as_str()
                .is_some_and(|s| s.starts_with("Not found"))
        );
        assert_eq!(body["errorCauses"], json!([]));
        assert!(body["errorId"].is_string());
        rate_headers(&headers);
    }
    let (status, _, body) = get(&sim, "/users", &[("search", "profile.email eq nobody")]).await;
    assert_eq!((status, &body["errorCode"]), (400, &json!("E0000031")));
}

#[tokio::test]
async fn deactivated_users_are_found_by_search_with_their_status() {
    let sim = start(okta(SimConfig {
        users: 100,
        deactivated_ratio: 0.2,
        ..SimConfig::default()
    }))
    .await;
    let gone: Vec<_> = sim
        .population()
        .users
        .iter()
        .filter(|u| u.deactivated_at.is_some())
        .cloned()
        .collect();
    let mut statuses = HashSet::new();
    for user in &gone {
        let (_, _, body) = get(&sim, "/users", &[("search", &search_for(&user.email))]).await;
        let status = body[0]["status"].as_str().expect("status").to_owned();
        assert!(
            ["DEPROVISIONED", "SUSPENDED"].contains(&status.as_str()),
            "{status}"
        );
        assert_eq!(user.extra["status"], status.as_str());
        statuses.insert(status);
    }
    assert_eq!(statuses.len(), 2, "both kinds appear");

    // A plain list leaves deprovisioned users out.
    let (_, _, body) = get(&sim, "/users", &[]).await;
    let deprovisioned = gone
        .iter()
        .filter(|u| u.extra["status"] == "DEPROVISIONED")
        .count();
    assert_eq!(body.as_array().expect("array").len(), 100 - deprovisioned);
}

#[tokio::test]
async fn pages_follow_the_link_header() {
    let sim = start(okta(SimConfig {
        users: 95,
        deactivated_ratio: 0.0,
        ..SimConfig::default()
    }))
    .await;
    let client = reqwest::Client::new();
    let mut url = format!("{}/api/v1/users?limit=40", sim.base_url());
    let mut ids = Vec::new();
    for _ in 0..10 {
        let (status, headers, body) = answer(
            client
                .get(&url)
                .header("Authorization", format!("SSWS {KEY}")),
        )
        .await;
        assert_eq!(status, 200);
        ids.extend(
            body.as_array()
                .expect("array")
                .iter()
                .map(|u| u["id"].as_str().expect("id").to_owned()),
        );
        let links: Vec<&str> = headers
            .get_all("link")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        assert!(links.iter().any(|l| l.ends_with("rel=\"self\"")));
        let Some(next) = links.iter().find(|l| l.ends_with("rel=\"next\"")) else {
            break;
        };
        url = next
            .trim_start_matches('<')
            .split('>')
            .next()
            .expect("url")
            .to_owned();
    }
    assert_eq!(ids.len(), 95);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 95);
}

#[tokio::test]
async fn bad_tokens_are_e0000011() {
    let sim = start(okta(SimConfig::default())).await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/users", sim.base_url());
    for request in [
        client.get(&url),
        client.get(&url).header("Authorization", "SSWS wrong"),
        client.get(&url).bearer_auth(KEY),
    ] {
        let (status, headers, body) = answer(request).await;
        assert_eq!(status, 401);
        assert_eq!(body["errorCode"], "E0000011");
        assert_eq!(body["errorSummary"], "Invalid token provided");
        rate_headers(&headers);
    }
    assert_eq!(sim.stats().unauthorized, 3);
}

#[tokio::test]
async fn rate_headers_follow_the_bucket() {
    let sim = start(okta(SimConfig {
        rate: Some(RateLimit {
            per_second: 0.5,
            burst: 3,
        }),
        ..SimConfig::default()
    }))
    .await;
    let before = now_secs();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (status, headers, body) = get(&sim, "/users", &[("limit", "1")]).await;
        let (limit, remaining, reset) = rate_headers(&headers);
        assert_eq!(limit, 3);
        assert!(reset >= before, "{reset} vs {before}");
        seen.push((status, remaining));
        if status == 429 {
            assert_eq!(body["errorCode"], "E0000047");
            assert_eq!(
                body["errorSummary"],
                "API call exceeded rate limit due to too many requests."
            );
            assert!(header(&headers, "retry-after").is_none());
            // Three tokens at 0.5/s: full again about six seconds from now.
            assert!(
                (before + 5..=before + 8).contains(&reset),
                "{reset} vs {before}"
            );
        }
    }
    assert_eq!(seen, [(200, 2), (200, 1), (200, 0), (429, 0)]);
}

#[tokio::test]
async fn some_admins_hold_several_roles_the_main_one_first() {
    let sim = start(okta(SimConfig {
        users: 300,
        ..SimConfig::default()
    }))
    .await;
    let several: Vec<_> = sim
        .population()
        .users
        .iter()
        .filter(|u| u.extra["roles"].as_array().is_some_and(|r| r.len() > 1))
        .cloned()
        .collect();
    assert!(
        several.len() >= 5,
        "{} admins with several roles",
        several.len()
    );
    // Least to most privileged, as Okta ranks its standard roles.
    let rank = |role: &str| {
        [
            "REPORT_ADMIN",
            "READ_ONLY_ADMIN",
            "HELP_DESK_ADMIN",
            "USER_ADMIN",
            "APP_ADMIN",
            "ORG_ADMIN",
            "SUPER_ADMIN",
        ]
        .iter()
        .position(|r| *r == role)
        .unwrap_or_else(|| panic!("unknown role {role}"))
    };
    for user in several.iter().take(5) {
        let (status, _, roles) = get(&sim, &format!("/users/{}/roles", user.id), &[]).await;
        assert_eq!(status, 200);
        let types: Vec<&str> = roles
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|r| r["type"].as_str())
            .collect();
        assert!(types.len() > 1, "{roles}");
        assert_eq!(types[0], user.access_role);
        assert!(
            types[1..].iter().all(|t| rank(t) < rank(types[0])),
            "{types:?}"
        );
        let ids: HashSet<&str> = roles
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|r| r["id"].as_str())
            .collect();
        assert_eq!(ids.len(), types.len(), "assignment ids are unique");
    }
}
