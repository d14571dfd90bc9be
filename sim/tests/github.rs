//! GitHub organisation memberships over real HTTP: lookups by login, 404s for
//! non-members, member listing with `Link` paging, and rate-limit headers.

mod common;

use std::collections::HashSet;

use common::{KEY, answer, header, start, tight_rate};
use reqwest::header::HeaderMap;
use rolecall_sim::{GITHUB_ROLES, SimConfig, SimHandle, Vendor};
use serde_json::{Value, json};

fn github(config: SimConfig) -> SimConfig {
    SimConfig {
        vendor: Vendor::Github,
        ..config
    }
}

async fn membership(sim: &SimHandle, org: &str, login: &str) -> (u16, HeaderMap, Value) {
    answer(
        reqwest::Client::new()
            .get(format!("{}/orgs/{org}/memberships/{login}", sim.base_url()))
            .bearer_auth(KEY)
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28"),
    )
    .await
}

fn assert_rate_headers(headers: &HeaderMap) {
    for name in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-used",
        "x-ratelimit-reset",
    ] {
        assert!(
            header(headers, name).is_some_and(|v| v.parse::<u64>().is_ok()),
            "{name}"
        );
    }
    assert_eq!(header(headers, "x-ratelimit-resource"), Some("core"));
}

#[tokio::test]
async fn members_are_found_by_login_with_role_and_state() {
    let sim = start(github(SimConfig {
        users: 300,
        deactivated_ratio: 0.0,
        ..SimConfig::default()
    }))
    .await;
    let mut roles = HashSet::new();
    let mut states = HashSet::new();
    for user in sim.population().users.iter().take(120) {
        // Logins are case-insensitive.
        let (status, headers, body) =
            membership(&sim, "ACME", &user.github_login.to_uppercase()).await;
        assert_eq!(status, 200, "{body}");
        assert_rate_headers(&headers);
        assert_eq!(body["role"], user.access_role.as_str());
        assert!(GITHUB_ROLES.contains(&user.access_role.as_str()));
        assert_eq!(body["state"], user.extra["state"]);
        assert_eq!(body["organization"]["login"], "acme");
        assert_eq!(body["user"]["login"], user.github_login.as_str());
        assert_eq!(body["user"]["id"], user.extra["id"]);
        assert_eq!(body["user"]["id"].to_string(), user.id);
        assert!(body["url"].as_str().is_some_and(|u| {
            u.ends_with(&format!("/orgs/acme/memberships/{}", user.github_login))
        }));
        roles.insert(body["role"].as_str().unwrap_or_default().to_owned());
        states.insert(body["state"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(roles.len(), 3, "{roles:?}");
    assert_eq!(
        states,
        HashSet::from(["active".to_owned(), "pending".to_owned()])
    );
}

#[tokio::test]
async fn non_members_are_404() {
    let sim = start(github(SimConfig {
        deactivated_ratio: 0.2,
        ..SimConfig::default()
    }))
    .await;
    let member = sim
        .population()
        .users
        .iter()
        .find(|u| u.deactivated_at.is_none())
        .expect("a member")
        .clone();
    let gone = sim
        .population()
        .users
        .iter()
        .find(|u| u.deactivated_at.is_some())
        .expect("a former member")
        .clone();
    for (org, login) in [
        ("acme", "nobody-at-all"),
        ("acme", gone.github_login.as_str()),
        ("other-org", member.github_login.as_str()),
        // The email is not a login.
        ("acme", member.email.as_str()),
    ] {
        let (status, headers, body) = membership(&sim, org, login).await;
        assert_eq!(status, 404, "{org}/{login}");
        assert_eq!(body["message"], "Not Found");
        assert!(body["documentation_url"].is_string());
        assert_eq!(body["status"], "404");
        assert_rate_headers(&headers);
    }
}

#[tokio::test]
async fn members_list_pages_with_link_headers() {
    let sim = start(github(SimConfig {
        users: 60,
        ..SimConfig::default()
    }))
    .await;
    let expected: HashSet<&str> = sim
        .population()
        .users
        .iter()
        .filter(|u| u.extra["state"] == "active" && u.access_role != "billing_manager")
        .map(|u| u.github_login.as_str())
        .collect();
    let client = reqwest::Client::new();
    let mut url = format!("{}/orgs/acme/members?per_page=10", sim.base_url());
    let mut seen = Vec::new();
    for _ in 0..20 {
        let (status, headers, body) = answer(client.get(&url).bearer_auth(KEY)).await;
        assert_eq!(status, 200);
        seen.extend(
            body.as_array()
                .expect("array")
                .iter()
                .map(|u| u["login"].as_str().expect("login").to_owned()),
        );
        let next = header(&headers, "link").and_then(|link| {
            link.split(", ")
                .find(|l| l.ends_with("rel=\"next\""))
                .map(|l| {
                    l.trim_start_matches('<')
                        .split('>')
                        .next()
                        .unwrap_or_default()
                        .to_owned()
                })
        });
        match next {
            Some(next) => url = next,
            None => break,
        }
    }
    assert_eq!(seen.len(), expected.len());
    assert_eq!(
        seen.iter().map(String::as_str).collect::<HashSet<_>>(),
        expected
    );

    let (_, _, admins) = answer(
        client
            .get(format!(
                "{}/orgs/acme/members?role=admin&per_page=100",
                sim.base_url()
            ))
            .bearer_auth(KEY),
    )
    .await;
    for admin in admins.as_array().expect("array") {
        let user = sim
            .population()
            .by_github_login(admin["login"].as_str().unwrap_or_default())
            .expect("known");
        assert_eq!(user.access_role, "admin");
    }
}

#[tokio::test]
async fn credentials_and_throttling() {
    let sim = start(github(SimConfig {
        rate: tight_rate(),
        ..SimConfig::default()
    }))
    .await;
    let client = reqwest::Client::new();
    let login = sim.population().users[0].github_login.clone();
    let url = format!("{}/orgs/acme/memberships/{login}", sim.base_url());

    let (status, headers, body) = answer(client.get(&url).bearer_auth("wrong")).await;
    assert_eq!((status, &body["message"]), (401, &json!("Bad credentials")));
    assert!(body["documentation_url"].is_string());
    assert_eq!(header(&headers, "x-ratelimit-limit"), Some("2"));
    assert_eq!(header(&headers, "x-ratelimit-remaining"), Some("1"));
    assert_eq!(header(&headers, "x-ratelimit-used"), Some("1"));

    // The older `token` scheme works too.
    let (status, _, _) = answer(
        client
            .get(&url)
            .header("Authorization", format!("token {KEY}")),
    )
    .await;
    assert_ne!(status, 401);

    let (status, headers, body) = answer(client.get(&url)).await;
    assert_eq!(status, 429);
    // GitHub's primary limit says when to come back in x-ratelimit-reset only.
    assert_eq!(header(&headers, "retry-after"), None);
    assert_eq!(header(&headers, "x-ratelimit-remaining"), Some("0"));
    let reset: u64 = header(&headers, "x-ratelimit-reset")
        .and_then(|v| v.parse().ok())
        .expect("x-ratelimit-reset");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    assert!((now + 2..=now + 5).contains(&reset), "{reset} vs {now}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("API rate limit exceeded"))
    );
    assert_eq!(body["status"], "429");
    assert_eq!(sim.stats().throttled, 1);

    sim.set_rate(None);
    let (status, _, body) = answer(client.get(&url)).await;
    assert_eq!(
        (status, &body["message"]),
        (401, &json!("Requires authentication"))
    );
}
