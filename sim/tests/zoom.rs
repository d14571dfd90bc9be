//! Zoom's Users API (`/v2`) over real HTTP.

mod common;

use std::collections::HashSet;

use common::{KEY, answer, header, start, tight_rate};
use rolecall_sim::{SimConfig, SimHandle, Vendor, ZOOM_ROLES, ZOOM_TYPES};
use serde_json::{Value, json};

fn zoom(config: SimConfig) -> SimConfig {
    SimConfig {
        vendor: Vendor::Zoom,
        ..config
    }
}

async fn get_user(sim: &SimHandle, key: &str) -> (u16, Value) {
    let (status, _, body) = answer(
        reqwest::Client::new()
            .get(format!("{}/v2/users/{key}", sim.base_url()))
            .bearer_auth(KEY),
    )
    .await;
    (status, body)
}

#[tokio::test]
async fn finds_users_by_email_or_id() {
    let sim = start(zoom(SimConfig {
        users: 150,
        deactivated_ratio: 0.1,
        ..SimConfig::default()
    }))
    .await;
    let mut types = HashSet::new();
    for user in sim.population().users.iter().take(60) {
        let (status, body) = get_user(&sim, &user.email.to_uppercase()).await;
        assert_eq!(status, 200);
        assert_eq!(body["id"], user.id.as_str());
        assert_eq!(body["email"], user.email.as_str());
        assert_eq!(body["role_name"], user.access_role.as_str());
        assert!(
            ZOOM_ROLES
                .iter()
                .any(|(name, id)| body["role_name"] == *name && body["role_id"] == *id)
        );
        let kind = body["type"].as_u64().expect("type");
        assert!(ZOOM_TYPES.iter().any(|t| u64::from(*t) == kind));
        types.insert(kind);
        let status = body["status"].as_str().expect("status");
        if user.deactivated_at.is_some() {
            assert_eq!(status, "inactive");
        } else {
            assert!(["active", "pending"].contains(&status), "{status}");
        }
        for key in [
            "first_name",
            "last_name",
            "display_name",
            "created_at",
            "account_id",
        ] {
            assert!(body[key].is_string(), "{key}");
        }
        let (_, by_id) = get_user(&sim, &user.id).await;
        assert_eq!(by_id, body);
    }
    assert!(types.contains(&2) && types.len() >= 2, "{types:?}");
}

#[tokio::test]
async fn unknown_users_are_1001() {
    let sim = start(zoom(SimConfig::default())).await;
    let (status, body) = get_user(&sim, "nobody@example.com").await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({"code": 1001, "message": "User does not exist: nobody@example.com."})
    );
}

#[tokio::test]
async fn lists_pages_with_next_page_token() {
    let sim = start(zoom(SimConfig {
        users: 100,
        deactivated_ratio: 0.1,
        ..SimConfig::default()
    }))
    .await;
    let active: HashSet<&str> = sim
        .population()
        .users
        .iter()
        .filter(|u| u.extra["status"] == "active")
        .map(|u| u.id.as_str())
        .collect();
    let client = reqwest::Client::new();
    let mut token = String::new();
    let mut seen = Vec::new();
    for _ in 0..10 {
        let (status, _, body) = answer(
            client
                .get(format!("{}/v2/users", sim.base_url()))
                .bearer_auth(KEY)
                .query(&[("page_size", "30"), ("next_page_token", token.as_str())]),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body["total_records"], active.len());
        assert_eq!(body["page_size"], 30);
        seen.extend(
            body["users"]
                .as_array()
                .expect("users")
                .iter()
                .map(|u| u["id"].as_str().expect("id").to_owned()),
        );
        token = body["next_page_token"].as_str().expect("token").to_owned();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen.len(), active.len());
    assert_eq!(
        seen.iter().map(String::as_str).collect::<HashSet<_>>(),
        active
    );

    let (_, _, inactive) = answer(
        client
            .get(format!("{}/v2/users?status=inactive", sim.base_url()))
            .bearer_auth(KEY),
    )
    .await;
    assert_eq!(inactive["total_records"], 10);
}

#[tokio::test]
async fn bad_tokens_and_throttling_in_zoom_shape() {
    let sim = start(zoom(SimConfig {
        rate: tight_rate(),
        ..SimConfig::default()
    }))
    .await;
    let client = reqwest::Client::new();
    let url = format!("{}/v2/users/nobody@example.com", sim.base_url());
    for request in [client.get(&url), client.get(&url).bearer_auth("wrong")] {
        let (status, _, body) = answer(request).await;
        assert_eq!(
            (status, body),
            (
                401,
                json!({"code": 124, "message": "Invalid access token."})
            )
        );
    }
    let (status, headers, body) = answer(client.get(&url).bearer_auth(KEY)).await;
    assert_eq!(status, 429);
    // Zoom's Retry-After is unverified: none by default.
    assert_eq!(header(&headers, "retry-after"), None);
    assert_eq!(
        body,
        json!({"code": 429, "message": "You have reached the maximum per-second rate limit for this API. Try again later."})
    );
}
