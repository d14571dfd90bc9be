//! Mosyle Business (`/v1`) and Manager (`/v2`) over real HTTP: logins and
//! sessions, paging, and errors that arrive as HTTP 200.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{KEY, answer, header, start, tight_rate};
use rolecall_sim::{MOSYLE_BUSINESS_TYPES, MOSYLE_MANAGER_TYPES, SimConfig, SimHandle, Vendor};
use serde_json::{Value, json};

const EMAIL: &str = "admin@example.com";
const PASSWORD: &str = "sim-password";

fn business(config: SimConfig) -> SimConfig {
    SimConfig {
        vendor: Vendor::MosyleBusiness,
        ..config
    }
}

fn manager(config: SimConfig) -> SimConfig {
    SimConfig {
        vendor: Vendor::MosyleManager,
        ..config
    }
}

/// Logs in to Business and returns the whole `Authorization` header value.
async fn business_login(sim: &SimHandle) -> String {
    let (status, headers, body) = answer(
        reqwest::Client::new()
            .post(format!("{}/v1/login", sim.base_url()))
            .header("accessToken", KEY)
            .json(&json!({"email": EMAIL, "password": PASSWORD})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["email"], EMAIL);
    assert!(body["UserID"].is_string());
    let bearer = header(&headers, "authorization").expect("Authorization header");
    assert!(bearer.starts_with("Bearer "), "{bearer}");
    bearer.to_owned()
}

async fn business_call(sim: &SimHandle, bearer: &str, body: &Value) -> (u16, Value) {
    let (status, _, body) = answer(
        reqwest::Client::new()
            .post(format!("{}/v1/users", sim.base_url()))
            .header("accessToken", KEY)
            .header("Authorization", bearer)
            .json(body),
    )
    .await;
    (status, body)
}

fn list_page(page: usize) -> Value {
    json!({"operation": "list_users", "options": {"page": page}})
}

#[tokio::test]
async fn business_lists_every_user_across_pages_with_one_login() {
    let sim = start(business(SimConfig {
        users: 120,
        deactivated_ratio: 0.1,
        ..SimConfig::default()
    }))
    .await;
    let bearer = business_login(&sim).await;
    let mut seen = Vec::new();
    for page in 1..=4 {
        let (status, body) = business_call(&sim, &bearer, &list_page(page)).await;
        assert_eq!(status, 200);
        assert_eq!(body["status"], "OK", "{body}");
        let [result] = body["response"]
            .as_array()
            .expect("response array")
            .as_slice()
        else {
            panic!("one result expected: {body}");
        };
        assert_eq!(result["rows"], 120);
        assert_eq!(result["page_size"], 50);
        assert_eq!(result["page"], page);
        let users = result["users"].as_array().expect("users");
        assert_eq!(users.len(), [50, 50, 20, 0][page - 1], "page {page}");
        seen.extend(users.iter().cloned());
    }
    assert_eq!(sim.login_count(), 1, "the session is reused");

    let population = sim.population();
    assert_eq!(seen.len(), population.users.len());
    for (user, listed) in population.users.iter().zip(&seen) {
        let keys: HashSet<&str> = listed
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            HashSet::from([
                "iduser",
                "identifier",
                "name",
                "email",
                "type",
                "is_removed"
            ])
        );
        assert_eq!(listed["iduser"], user.id.as_str());
        assert_eq!(listed["type"], user.access_role.as_str());
        assert!(MOSYLE_BUSINESS_TYPES.contains(&user.access_role.as_str()));
        assert_eq!(listed["is_removed"], user.deactivated_at.is_some());
        let stored = listed["email"].as_str().expect("email");
        assert_eq!(stored, user.extra["email"]);
        assert!(stored.eq_ignore_ascii_case(&user.email));
    }
    let capitalised = seen
        .iter()
        .filter(|u| {
            u["email"]
                .as_str()
                .is_some_and(|e| e.starts_with(char::is_uppercase))
        })
        .count();
    assert_eq!(capitalised, 24, "every 5th stored email");
    assert_eq!(seen.iter().filter(|u| u["is_removed"] == true).count(), 12);
}

#[tokio::test]
async fn business_filters_by_identifier_and_type() {
    let sim = start(business(SimConfig::default())).await;
    let bearer = business_login(&sim).await;
    let user = &sim.population().users[7];
    let identifier = user.extra["identifier"].as_str().expect("identifier");
    let (_, body) = business_call(
        &sim,
        &bearer,
        &json!({"operation": "list_users", "options": {"identifiers": [identifier]}}),
    )
    .await;
    assert_eq!(body["response"][0]["rows"], 1);
    assert_eq!(body["response"][0]["users"][0]["iduser"], user.id.as_str());

    // Not found: OK with no users.
    let (status, body) = business_call(
        &sim,
        &bearer,
        &json!({"operation": "list_users", "options": {"identifiers": ["nobody"]}}),
    )
    .await;
    assert_eq!((status, &body["status"]), (200, &json!("OK")));
    assert_eq!(body["response"][0]["users"], json!([]));

    let (_, body) = business_call(
        &sim,
        &bearer,
        &json!({"operation": "list_users", "options": {"types": ["ADMIN"]}}),
    )
    .await;
    let admins = sim
        .population()
        .users
        .iter()
        .filter(|u| u.access_role == "ADMIN")
        .count();
    assert_eq!(body["response"][0]["rows"], admins);
    assert!(
        body["response"][0]["users"]
            .as_array()
            .expect("users")
            .iter()
            .all(|u| u["type"] == "ADMIN")
    );
}

#[tokio::test]
async fn business_refuses_bad_credentials() {
    let sim = start(business(SimConfig::default())).await;
    let client = reqwest::Client::new();
    let login = format!("{}/v1/login", sim.base_url());

    for key in [None, Some("wrong")] {
        let mut request = client
            .post(&login)
            .json(&json!({"email": EMAIL, "password": PASSWORD}));
        if let Some(key) = key {
            request = request.header("accessToken", key);
        }
        let (status, _, body) = answer(request).await;
        assert_eq!(
            (status, body),
            (401, json!({"error": "accessToken Required"}))
        );
    }

    let (status, headers, body) = answer(
        client
            .post(&login)
            .header("accessToken", KEY)
            .json(&json!({"email": EMAIL, "password": "nope"})),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["status"], "WRONG_PASSWORD");
    assert!(header(&headers, "authorization").is_none());
    assert_eq!(sim.login_count(), 0);

    // The email is matched ignoring case.
    let (status, _, _) = answer(
        client
            .post(&login)
            .header("accessToken", KEY)
            .json(&json!({"email": EMAIL.to_uppercase(), "password": PASSWORD})),
    )
    .await;
    assert_eq!(status, 200);

    for bearer in [None, Some("Bearer not-a-session")] {
        let mut request = client
            .post(format!("{}/v1/users", sim.base_url()))
            .header("accessToken", KEY)
            .json(&list_page(1));
        if let Some(bearer) = bearer {
            request = request.header("Authorization", bearer);
        }
        let (status, _, body) = answer(request).await;
        assert_eq!(status, 401);
        assert_eq!(body["status"], "TOKEN_EXPIRED");
        assert!(body["message"].is_string());
    }
    assert_eq!(sim.stats().unauthorized, 5);
}

#[tokio::test]
async fn business_sessions_expire_and_a_new_login_works() {
    let sim = start(business(SimConfig {
        session_ttl: Duration::from_millis(700),
        ..SimConfig::default()
    }))
    .await;
    let first = business_login(&sim).await;
    let (status, _) = business_call(&sim, &first, &list_page(1)).await;
    assert_eq!(status, 200);

    tokio::time::sleep(Duration::from_millis(800)).await;
    let (status, body) = business_call(&sim, &first, &list_page(1)).await;
    assert_eq!(status, 401);
    assert_eq!(body["status"], "TOKEN_EXPIRED");

    let second = business_login(&sim).await;
    assert_ne!(first, second);
    let (status, body) = business_call(&sim, &second, &list_page(1)).await;
    assert_eq!((status, &body["status"]), (200, &json!("OK")));
    assert_eq!(sim.login_count(), 2);
}

#[tokio::test]
async fn business_errors_are_http_200_with_a_status() {
    let sim = start(business(SimConfig::default())).await;
    let bearer = business_login(&sim).await;
    let (status, body) =
        business_call(&sim, &bearer, &json!({"operation": "list_devices_x"})).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("INVALID_OPERATION"))
    );
    assert!(body["info"].is_string());

    let (status, body) = business_call(&sim, &bearer, &json!({"options": {}})).await;
    assert_eq!((status, &body["status"]), (200, &json!("MISSING_DATA")));

    let (status, _, body) = answer(
        reqwest::Client::new()
            .post(format!("{}/v1/users", sim.base_url()))
            .header("accessToken", KEY)
            .header("Authorization", &bearer)
            .header("content-type", "application/json")
            .body("{not json"),
    )
    .await;
    assert_eq!((status, &body["status"]), (200, &json!("MISSING_DATA")));

    let (status, _, body) = answer(
        reqwest::Client::new()
            .get(format!("{}/v1/users", sim.base_url()))
            .header("accessToken", KEY),
    )
    .await;
    assert_eq!(
        (status, body),
        (405, json!({"status": 405, "message": "INVALID_METHOD"}))
    );

    let response = reqwest::Client::new()
        .post(format!("{}/v1/nothing", sim.base_url()))
        .header("accessToken", KEY)
        .send()
        .await
        .expect("request failed");
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.text().await.expect("text"),
        "Ops, something happened!"
    );
}

#[tokio::test]
async fn business_creates_and_updates_users() {
    let sim = start(business(SimConfig::default())).await;
    let bearer = business_login(&sim).await;
    let create = json!({
        "operation": "create_user",
        "user_id": "new.person",
        "name": "New Person",
        "email": "new.person@example.com",
        "type": "GROUP_ADMIN",
    });
    let (status, body) = business_call(&sim, &bearer, &create).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "OK");
    assert_eq!(body["response"][0]["status"], "OK", "{body}");
    let iduser = body["response"][0]["iduser"].clone();
    assert!(iduser.is_string());

    // The same user_id again, and a bad type: errors inside an OK envelope.
    let (_, body) = business_call(&sim, &bearer, &create).await;
    assert_eq!(body["status"], "OK");
    assert_eq!(body["response"][0]["status"], "INVALID_DATA");
    let mut bad = create.clone();
    bad["user_id"] = json!("other");
    bad["type"] = json!("SUPERUSER");
    let (_, body) = business_call(&sim, &bearer, &bad).await;
    assert_eq!(body["response"][0]["status"], "INVALID_DATA");

    let update = json!({"operation": "update_user", "user_id": "new.person", "type": "ADMIN"});
    let (_, body) = business_call(&sim, &bearer, &update).await;
    assert_eq!(body["response"][0]["status"], "OK", "{body}");
    assert_eq!(body["response"][0]["iduser"], iduser);
    let (_, body) = business_call(
        &sim,
        &bearer,
        &json!({"operation": "update_user", "iduser": "999999", "name": "X"}),
    )
    .await;
    assert_eq!(body["response"][0]["status"], "INVALID_DATA");

    let (_, body) = business_call(
        &sim,
        &bearer,
        &json!({"operation": "list_users", "options": {"identifiers": ["new.person"]}}),
    )
    .await;
    let user = &body["response"][0]["users"][0];
    assert_eq!(user["type"], "ADMIN");
    assert_eq!(user["iduser"], iduser);
    assert_eq!(user["email"], "new.person@example.com");
    assert_eq!(user["is_removed"], false);
    assert_eq!(body["response"][0]["rows"], 1);
}

#[tokio::test]
async fn business_throttles_in_its_own_shape() {
    let sim = start(business(SimConfig {
        rate: tight_rate(),
        ..SimConfig::default()
    }))
    .await;
    let bearer = business_login(&sim).await;
    let (status, _) = business_call(&sim, &bearer, &list_page(1)).await;
    assert_eq!(status, 200);
    let (status, headers, body) = answer(
        reqwest::Client::new()
            .post(format!("{}/v1/users", sim.base_url()))
            .header("accessToken", KEY)
            .header("Authorization", &bearer)
            .json(&list_page(1)),
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(header(&headers, "retry-after"), Some("2"));
    assert_eq!(body, json!({"status": 429, "message": "TOO_MANY_REQUESTS"}));
    assert_eq!(sim.stats().throttled, 1);
}

async fn manager_login(sim: &SimHandle) -> String {
    let (status, headers, body) = answer(
        reqwest::Client::new()
            .post(format!("{}/v2/login", sim.base_url()))
            .json(&json!({"accessToken": KEY, "email": EMAIL, "password": PASSWORD})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["email"], EMAIL);
    header(&headers, "authorization")
        .expect("Authorization header")
        .to_owned()
}

async fn manager_list(sim: &SimHandle, bearer: &str, body: &Value) -> (u16, Value) {
    let (status, _, body) = answer(
        reqwest::Client::new()
            .post(format!("{}/v2/listusers", sim.base_url()))
            .header("Authorization", bearer)
            .json(body),
    )
    .await;
    (status, body)
}

#[tokio::test]
async fn manager_pages_through_active_users() {
    let sim = start(manager(SimConfig {
        users: 70,
        page_size: 25,
        deactivated_ratio: 0.1,
        ..SimConfig::default()
    }))
    .await;
    let bearer = manager_login(&sim).await;
    let mut seen = Vec::new();
    for page in 1.. {
        let (status, body) = manager_list(
            &sim,
            &bearer,
            &json!({"accessToken": KEY, "options": {"page": page}}),
        )
        .await;
        assert_eq!((status, &body["status"]), (200, &json!("OK")), "{body}");
        let response = &body["response"];
        assert!(response.is_object(), "Manager's response is an object");
        assert_eq!(response["total"], 63, "deactivated users are not listed");
        assert_eq!(response["page_size"], 25);
        let users = response["users"].as_array().expect("users");
        seen.extend(users.iter().cloned());
        if page * 25 >= 63 {
            break;
        }
    }
    assert_eq!(seen.len(), 63);
    for listed in &seen {
        let user = sim
            .population()
            .users
            .iter()
            .find(|u| u.id == listed["id"].as_str().unwrap_or_default())
            .expect("a known user");
        assert!(user.deactivated_at.is_none());
        assert_eq!(listed["type"], user.access_role.as_str());
        assert!(MOSYLE_MANAGER_TYPES.contains(&user.access_role.as_str()));
        assert!(
            listed["email"]
                .as_str()
                .is_some_and(|e| e.eq_ignore_ascii_case(&user.email))
        );
    }

    let (_, body) = manager_list(
        &sim,
        &bearer,
        &json!({"accessToken": KEY, "options": {"specific_columns": ["email", "type"]}}),
    )
    .await;
    let first = body["response"]["users"][0]
        .as_object()
        .expect("user")
        .clone();
    let keys: HashSet<&str> = first.keys().map(String::as_str).collect();
    assert_eq!(keys, HashSet::from(["email", "type"]));

    let (_, body) = manager_list(
        &sim,
        &bearer,
        &json!({"accessToken": KEY, "options": {"types": ["TEACHER"]}}),
    )
    .await;
    assert!(
        body["response"]["users"]
            .as_array()
            .expect("users")
            .iter()
            .all(|u| u["type"] == "TEACHER")
    );
    assert_eq!(sim.login_count(), 1);
}

#[tokio::test]
async fn manager_checks_the_body_token_and_the_session() {
    let sim = start(manager(SimConfig {
        session_ttl: Duration::from_millis(600),
        rate: tight_rate(),
        ..SimConfig::default()
    }))
    .await;
    let bearer = manager_login(&sim).await;
    // A wrong access token in the body is an error inside HTTP 200.
    let (status, body) = manager_list(&sim, &bearer, &json!({"accessToken": "wrong"})).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"status": "ERROR", "info": "ACCESS_TOKEN_INVALID"})
    );
    // Third in a row: throttled.
    let (status, body) = manager_list(&sim, &bearer, &json!({"accessToken": KEY})).await;
    assert_eq!(
        (status, body),
        (429, json!({"status": 429, "message": "TOO_MANY_REQUESTS"}))
    );

    sim.set_rate(None);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (status, body) = manager_list(&sim, &bearer, &json!({"accessToken": KEY})).await;
    assert_eq!((status, &body["status"]), (401, &json!("TOKEN_EXPIRED")));

    let (status, _, body) = answer(
        reqwest::Client::new()
            .post(format!("{}/v2/login", sim.base_url()))
            .json(&json!({"accessToken": "wrong", "email": EMAIL, "password": PASSWORD})),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            401,
            json!({"status": "ERROR", "info": "ACCESS_TOKEN_INVALID"})
        )
    );

    let renewed = manager_login(&sim).await;
    let (status, body) = manager_list(&sim, &renewed, &json!({"accessToken": KEY})).await;
    assert_eq!((status, &body["status"]), (200, &json!("OK")));
    assert_eq!(sim.login_count(), 2);
}
