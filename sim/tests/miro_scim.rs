//! Miro's SCIM API (`/api/v1/scim`) over real HTTP: filters parsed as SCIM
//! filters, ListResponse paging, PATCH, and Miro's error bodies.

mod common;

use std::collections::HashSet;

use common::{KEY, answer, header, start, tight_rate};
use rolecall_sim::{MIRO_ROLES, MIRO_USER_TYPES, SimConfig, SimHandle, Vendor};
use serde_json::{Value, json};

const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

fn miro(config: SimConfig) -> SimConfig {
    SimConfig {
        vendor: Vendor::MiroScim,
        ..config
    }
}

fn users_url(sim: &SimHandle) -> String {
    format!("{}/api/v1/scim/Users", sim.base_url())
}

async fn list(sim: &SimHandle, query: &[(&str, &str)]) -> (u16, Value) {
    let (status, headers, body) = answer(
        reqwest::Client::new()
            .get(users_url(sim))
            .bearer_auth(KEY)
            .header("Accept", "application/scim+json")
            .query(query),
    )
    .await;
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/scim+json")
    );
    (status, body)
}

fn filter_for(email: &str) -> String {
    format!(
        "userName eq {}",
        serde_json::to_string(email).expect("JSON string")
    )
}

#[tokio::test]
async fn finds_a_user_by_user_name_in_miro_shape() {
    let sim = start(miro(SimConfig::default())).await;
    let user = sim
        .population()
        .users
        .iter()
        .find(|u| u.deactivated_at.is_none())
        .expect("an active user")
        .clone();
    // userName is caseExact false.
    let (status, body) = list(&sim, &[("filter", &filter_for(&user.email.to_uppercase()))]).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["schemas"],
        json!(["urn:ietf:params:scim:api:messages:2.0:ListResponse"])
    );
    assert_eq!(
        (
            &body["totalResults"],
            &body["itemsPerPage"],
            &body["startIndex"]
        ),
        (&json!(1), &json!(1), &json!(1))
    );
    let found = &body["Resources"][0];
    assert_eq!(
        found["schemas"],
        json!(["urn:ietf:params:scim:schemas:core:2.0:User"])
    );
    assert_eq!(found["id"], user.id.as_str());
    assert!(user.id.chars().all(|c| c.is_ascii_digit()), "{}", user.id);
    assert_eq!(found["userName"], user.email.as_str());
    assert_eq!(found["active"], true);
    assert_eq!(
        found["emails"][0],
        json!({"value": user.email, "type": "work", "primary": true})
    );
    assert!(found["name"]["givenName"].is_string());
    assert_eq!(found["meta"]["resourceType"], "User");
    assert!(
        found["meta"]["location"]
            .as_str()
            .is_some_and(|l| l.ends_with(&format!("/api/v1/scim/Users/{}", user.id)))
    );
    let user_type = found["userType"].as_str().expect("userType");
    assert!(MIRO_USER_TYPES.contains(&user_type));
    let primary: Vec<&Value> = found["roles"]
        .as_array()
        .expect("roles")
        .iter()
        .filter(|r| r["type"] == "organization_user_role")
        .collect();
    assert_eq!(primary.len(), 1);
    assert_eq!(primary[0]["primary"], true);
    assert_eq!(primary[0]["value"], user.access_role.as_str());
    assert!(MIRO_ROLES.contains(&user.access_role.as_str()));

    let (status, headers, by_id) = answer(
        reqwest::Client::new()
            .get(format!("{}/{}", users_url(&sim), user.id))
            .bearer_auth(KEY),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/scim+json")
    );
    assert_eq!(&by_id, found);
}

#[tokio::test]
async fn unknown_users_are_zero_results_or_404() {
    let sim = start(miro(SimConfig::default())).await;
    let (status, body) = list(&sim, &[("filter", &filter_for("nobody@example.com"))]).await;
    assert_eq!(status, 200);
    assert_eq!(
        (&body["totalResults"], &body["Resources"]),
        (&json!(0), &json!([]))
    );

    let (status, _, body) = answer(
        reqwest::Client::new()
            .get(format!("{}/123", users_url(&sim)))
            .bearer_auth(KEY),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["schemas"], json!([ERROR]));
    assert_eq!(body["status"], "404");
    assert!(body["detail"].is_string());
}

#[tokio::test]
async fn deactivated_users_are_inactive() {
    let sim = start(miro(SimConfig {
        deactivated_ratio: 0.3,
        ..SimConfig::default()
    }))
    .await;
    let gone = sim
        .population()
        .users
        .iter()
        .find(|u| u.deactivated_at.is_some())
        .expect("a deactivated user")
        .clone();
    let (_, body) = list(&sim, &[("filter", &filter_for(&gone.email))]).await;
    assert_eq!(body["Resources"][0]["active"], false);
    let (_, body) = list(&sim, &[("filter", "active eq false"), ("count", "1000")]).await;
    assert_eq!(body["totalResults"], 30);
}

#[tokio::test]
async fn pages_with_start_index_and_count() {
    let sim = start(miro(SimConfig {
        users: 250,
        ..SimConfig::default()
    }))
    .await;
    let mut ids = Vec::new();
    let mut start_index = 1;
    loop {
        let (status, body) = list(
            &sim,
            &[("startIndex", &start_index.to_string()), ("count", "100")],
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body["totalResults"], 250);
        assert_eq!(body["startIndex"], start_index);
        let page = body["Resources"].as_array().expect("Resources");
        assert_eq!(body["itemsPerPage"], page.len());
        ids.extend(
            page.iter()
                .map(|u| u["id"].as_str().expect("id").to_owned()),
        );
        start_index += page.len();
        if page.is_empty() || start_index > 250 {
            break;
        }
    }
    assert_eq!(ids.len(), 250);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 250);

    // Default count 100; above 1000 is capped; startIndex below 1 means 1.
    let (_, body) = list(&sim, &[]).await;
    assert_eq!(body["itemsPerPage"], 100);
    let (_, body) = list(&sim, &[("count", "5000"), ("startIndex", "0")]).await;
    assert_eq!(
        (&body["itemsPerPage"], &body["startIndex"]),
        (&json!(250), &json!(1))
    );
    let (status, body) = list(&sim, &[("count", "ten")]).await;
    assert_eq!((status, &body["scimType"]), (400, &json!("invalidValue")));
}

#[tokio::test]
async fn filters_must_be_escaped_properly() {
    let sim = start(miro(SimConfig::default())).await;
    // A quote inside the value, escaped as in JSON: parses, matches nobody.
    let (status, body) = list(&sim, &[("filter", r#"userName eq "a\"b@x.com""#)]).await;
    assert_eq!((status, &body["totalResults"]), (200, &json!(0)));

    for bad in [
        r#"userName eq "a"b@x.com""#,
        r#"userName eq a@x.com"#,
        r#"userName eq "unterminated"#,
        r#"email eq "a@x.com""#,
    ] {
        let (status, body) = list(&sim, &[("filter", bad)]).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(body["schemas"], json!([ERROR]));
        assert_eq!(body["status"], "400");
        assert_eq!(body["scimType"], "invalidFilter", "{bad}");
    }

    // Operators and attribute names ignore case; sub-attributes work.
    let user = sim.population().users[3].clone();
    let text = format!("EMAILS.VALUE Eq \"{}\" and userName pr", user.email);
    let (_, body) = list(&sim, &[("filter", &text)]).await;
    assert_eq!(body["Resources"][0]["id"], user.id.as_str());
}

#[tokio::test]
async fn patch_deactivates_a_user() {
    let sim = start(miro(SimConfig {
        deactivated_ratio: 0.0,
        ..SimConfig::default()
    }))
    .await;
    let client = reqwest::Client::new();
    let users = &sim.population().users;
    let patches = [
        (
            &users[0],
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                   "Operations": [{"op": "replace", "value": {"active": false}}]}),
        ),
        (
            &users[1],
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                   "Operations": [{"op": "Replace", "path": "active", "value": false}]}),
        ),
    ];
    for (user, patch) in patches {
        let url = format!("{}/{}", users_url(&sim), user.id);
        let (status, headers, body) = answer(
            client
                .patch(&url)
                .bearer_auth(KEY)
                .header("content-type", "application/scim+json")
                .body(patch.to_string()),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            header(&headers, "content-type"),
            Some("application/scim+json")
        );
        assert_eq!(body["active"], false);
        assert_eq!(body["id"], user.id.as_str());
        let (_, _, again) = answer(client.get(&url).bearer_auth(KEY)).await;
        assert_eq!(again["active"], false);
    }
    let (_, body) = list(&sim, &[("filter", "active eq false")]).await;
    assert_eq!(body["totalResults"], 2);

    let bad = [
        (
            json!({"Operations": [{"op": "replace", "path": "active", "value": false}]}),
            "invalidSyntax",
        ),
        (
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "userType", "value": "Free"}]}),
            "invalidValue",
        ),
        (
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "active", "value": 3}]}),
            "invalidValue",
        ),
        (
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "id", "value": "1"}]}),
            "mutability",
        ),
    ];
    let url = format!("{}/{}", users_url(&sim), users[2].id);
    for (patch, scim_type) in bad {
        let (status, _, body) = answer(client.patch(&url).bearer_auth(KEY).json(&patch)).await;
        assert_eq!(
            (status, &body["scimType"]),
            (400, &json!(scim_type)),
            "{patch}"
        );
    }
    let (_, _, untouched) = answer(client.get(&url).bearer_auth(KEY)).await;
    assert_eq!(untouched["active"], true);

    let (status, _, _) = answer(
        client
            .patch(format!("{}/999", users_url(&sim)))
            .bearer_auth(KEY)
            .json(&patches_first()),
    )
    .await;
    assert_eq!(status, 404);
}

fn patches_first() -> Value {
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
           "Operations": [{"op": "replace", "value": {"active": false}}]})
}

#[tokio::test]
async fn bad_tokens_and_throttling_in_miro_shape() {
    let sim = start(miro(SimConfig {
        rate: tight_rate(),
        ..SimConfig::default()
    }))
    .await;
    let client = reqwest::Client::new();
    for request in [
        client.get(users_url(&sim)),
        client.get(users_url(&sim)).bearer_auth("wrong"),
    ] {
        let (status, headers, body) = answer(request).await;
        assert_eq!(status, 401);
        assert_eq!(
            header(&headers, "content-type"),
            Some("application/scim+json")
        );
        assert_eq!(body["status"], "401");
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("Miro cannot authorize"))
        );
    }
    let (status, headers, body) = answer(client.get(users_url(&sim)).bearer_auth(KEY)).await;
    assert_eq!(status, 429);
    // Miro shows no headers on its SCIM 429s.
    assert_eq!(header(&headers, "retry-after"), None);
    assert_eq!(
        body,
        json!({
            "schemas": [ERROR],
            "status": "429",
            "scimType": "tooManyRequests",
            "detail": "The user has sent too many requests in a given amount of time",
        })
    );
    let stats = sim.stats();
    assert_eq!((stats.unauthorized, stats.throttled), (2, 1));
}
