//! A generic SCIM 2.0 provider (`/scim/v2`) over real HTTP.

mod common;

use std::collections::HashSet;

use common::{KEY, answer, header, start, tight_rate};
use rolecall_sim::{SCIM_ENTITLEMENTS, SCIM_ROLES, SimConfig, SimHandle, Vendor};
use serde_json::{Value, json};

fn scim(config: SimConfig) -> SimConfig {
    SimConfig {
        vendor: Vendor::Scim,
        ..config
    }
}

async fn list(sim: &SimHandle, query: &[(&str, &str)]) -> (u16, Value) {
    let (status, headers, body) = answer(
        reqwest::Client::new()
            .get(format!("{}/scim/v2/Users", sim.base_url()))
            .bearer_auth(KEY)
            .query(query),
    )
    .await;
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/scim+json")
    );
    (status, body)
}

#[tokio::test]
async fn users_carry_type_roles_entitlements_and_groups() {
    let sim = start(scim(SimConfig {
        deactivated_ratio: 0.2,
        ..SimConfig::default()
    }))
    .await;
    for user in sim.population().users.iter().take(10) {
        for filter in [
            format!("userName eq \"{}\"", user.email),
            format!("emails.value eq \"{}\"", user.email.to_uppercase()),
            format!("emails[type eq \"work\" and value eq \"{}\"]", user.email),
        ] {
            let (status, body) = list(&sim, &[("filter", &filter)]).await;
            assert_eq!(
                (status, &body["totalResults"]),
                (200, &json!(1)),
                "{filter}"
            );
            let found = &body["Resources"][0];
            assert_eq!(found["id"], user.id.as_str());
            assert_eq!(found["active"], user.deactivated_at.is_none());
            assert_eq!(found["userType"], user.extra["userType"]);
            assert!(
                ["Employee", "Contractor"]
                    .contains(&found["userType"].as_str().unwrap_or_default())
            );
            let role = &found["roles"][0];
            assert_eq!(role["primary"], true);
            assert_eq!(role["value"], user.access_role.as_str());
            assert!(SCIM_ROLES.contains(&user.access_role.as_str()));
            for key in ["display", "type"] {
                assert!(role[key].is_string(), "{key}");
            }
            let entitlement = found["entitlements"][0]["value"]
                .as_str()
                .expect("entitlement");
            assert!(SCIM_ENTITLEMENTS.contains(&entitlement));
            let group = found["groups"][0]["display"].as_str().expect("group");
            assert!(["Viewers", "Editors", "Admins"].contains(&group));
            assert!(found["groups"][0]["value"].is_string());
        }
    }
    let (status, body) = list(&sim, &[("filter", "userName eq \"nobody@example.com\"")]).await;
    assert_eq!((status, &body["totalResults"]), (200, &json!(0)));
    let (status, body) = list(
        &sim,
        &[("filter", "roles.value eq \"admin\" and active eq true")],
    )
    .await;
    assert_eq!(status, 200);
    let admins = sim
        .population()
        .users
        .iter()
        .filter(|u| u.access_role == "admin" && u.deactivated_at.is_none())
        .count();
    assert_eq!(body["totalResults"], admins);
}

#[tokio::test]
async fn count_defaults_to_and_is_capped_at_the_page_size() {
    let sim = start(scim(SimConfig {
        users: 45,
        page_size: 20,
        ..SimConfig::default()
    }))
    .await;
    let mut ids = HashSet::new();
    for (start_index, expected) in [("1", 20), ("21", 20), ("41", 5), ("46", 0)] {
        let (_, body) = list(&sim, &[("startIndex", start_index), ("count", "100")]).await;
        assert_eq!(body["totalResults"], 45);
        assert_eq!(body["itemsPerPage"], expected, "{start_index}");
        for user in body["Resources"].as_array().expect("Resources") {
            ids.insert(user["id"].as_str().expect("id").to_owned());
        }
    }
    assert_eq!(ids.len(), 45);
    let (_, body) = list(&sim, &[("count", "0")]).await;
    assert_eq!(
        (&body["itemsPerPage"], &body["totalResults"]),
        (&json!(0), &json!(45))
    );

    let (status, _, config) = answer(
        reqwest::Client::new()
            .get(format!("{}/scim/v2/ServiceProviderConfig", sim.base_url()))
            .bearer_auth(KEY),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        config["filter"],
        json!({"supported": true, "maxResults": 20})
    );
    assert_eq!(config["patch"]["supported"], true);
    assert_eq!(
        config["authenticationSchemes"][0]["type"],
        "oauthbearertoken"
    );
}

#[tokio::test]
async fn patch_by_path_and_errors_in_scim_shape() {
    let sim = start(scim(SimConfig {
        deactivated_ratio: 0.0,
        ..SimConfig::default()
    }))
    .await;
    let client = reqwest::Client::new();
    let user = sim.population().users[0].clone();
    let url = format!("{}/scim/v2/Users/{}", sim.base_url(), user.id);
    let (status, _, body) = answer(client.patch(&url).bearer_auth(KEY).json(&json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [
            {"op": "replace", "path": "active", "value": "False"},
            {"op": "add", "path": "userType", "value": "Contractor"},
        ],
    })))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["active"], &body["userType"]),
        (&json!(false), &json!("Contractor"))
    );

    let (status, _, body) = answer(
        client
            .get(format!("{}/scim/v2/Users/nope", sim.base_url()))
            .bearer_auth(KEY),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        body["schemas"],
        json!(["urn:ietf:params:scim:api:messages:2.0:Error"])
    );
    assert_eq!(body["status"], "404");

    let (status, body) = list(&sim, &[("filter", "userName eq \"a\"b\"")]).await;
    assert_eq!((status, &body["scimType"]), (400, &json!("invalidFilter")));

    let (status, _, body) = answer(client.get(&url).bearer_auth("wrong")).await;
    assert_eq!((status, &body["status"]), (401, &json!("401")));
}

#[tokio::test]
async fn throttled_requests_get_a_scim_429() {
    let sim = start(scim(SimConfig {
        rate: tight_rate(),
        ..SimConfig::default()
    }))
    .await;
    for _ in 0..2 {
        assert_eq!(list(&sim, &[]).await.0, 200);
    }
    let (status, headers, body) = answer(
        reqwest::Client::new()
            .get(format!("{}/scim/v2/Users", sim.base_url()))
            .bearer_auth(KEY),
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(header(&headers, "retry-after"), Some("2"));
    assert_eq!(body["status"], "429");
    assert!(
        body.get("scimType").is_none(),
        "RFC 7644 defines none: {body}"
    );
}
