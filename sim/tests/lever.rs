//! The Lever sim over real HTTP, as the worker will see it.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use rolecall_sim::{LEVER_ROLES, RateLimit, SimConfig, SimHandle, StatsSnapshot, spawn};
use serde_json::Value;

const KEY: &str = "test-key";

async fn sim(config: SimConfig) -> SimHandle {
    let config = SimConfig {
        api_key: KEY.to_owned(),
        ..config
    };
    match spawn(config).await {
        Ok(sim) => sim,
        Err(error) => panic!("sim did not start: {error:#}"),
    }
}

/// GET `/v1/users` with the right key; returns status and body.
async fn users(sim: &SimHandle, query: &[(&str, &str)]) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .get(format!("{}/v1/users", sim.base_url()))
        .basic_auth(KEY, None::<&str>)
        .query(query)
        .send()
        .await
        .expect("request failed");
    let status = response.status();
    (status, response.json().await.expect("body is not JSON"))
}

fn data(body: &Value) -> &Vec<Value> {
    body["data"].as_array().expect("no data array")
}

#[tokio::test]
async fn finds_a_user_by_email_in_lever_shape() {
    let sim = sim(SimConfig::default()).await;
    let user = sim
        .population()
        .users
        .iter()
        .find(|u| u.deactivated_at.is_none())
        .expect("an active user")
        .clone();

    let (status, body) = users(&sim, &[("email", &user.email)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["hasNext"], false);
    assert!(body.get("next").is_none());
    let [found] = data(&body).as_slice() else {
        panic!("expected one user: {body}");
    };
    let keys: HashSet<&str> = found
        .as_object()
        .expect("user object")
        .keys()
        .map(String::as_str)
        .collect();
    let expected: HashSet<&str> = [
        "id",
        "name",
        "username",
        "email",
        "accessRole",
        "photo",
        "createdAt",
        "deactivatedAt",
        "externalDirectoryId",
        "linkedContactIds",
        "jobTitle",
        "managerId",
    ]
    .into();
    assert_eq!(keys, expected);
    assert_eq!(found["id"], user.id.as_str());
    assert_eq!(found["email"], user.email.as_str());
    assert_eq!(found["accessRole"], user.access_role.as_str());
    assert!(LEVER_ROLES.contains(&user.access_role.as_str()));
    assert_eq!(found["createdAt"], user.created_at);
    assert!(found["deactivatedAt"].is_null());
    assert!(found["photo"].is_null());

    // The same user by id.
    let response = reqwest::Client::new()
        .get(format!("{}/v1/users/{}", sim.base_url(), user.id))
        .basic_auth(KEY, Some(""))
        .send()
        .await
        .expect("request failed");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["data"]["id"], user.id.as_str());
}

#[tokio::test]
async fn unknown_users_are_empty_or_404() {
    let sim = sim(SimConfig::default()).await;
    let (status, body) = users(&sim, &[("email", "nobody@example.com")]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(data(&body).is_empty());
    assert_eq!(body["hasNext"], false);

    // Matching is exact: a client that forgets to lower-case finds nothing.
    let email = sim.population().users[0].email.to_uppercase();
    let (_, body) = users(&sim, &[("email", &email), ("includeDeactivated", "true")]).await;
    assert!(data(&body).is_empty());

    let response = reqwest::Client::new()
        .get(format!("{}/v1/users/not-an-id", sim.base_url()))
        .basic_auth(KEY, None::<&str>)
        .send()
        .await
        .expect("request failed");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["code"], "NotFoundError");
    assert_eq!(body["message"], "That user doesn't exist on your account");
}

#[tokio::test]
async fn deactivated_users_only_with_include_deactivated() {
    let sim = sim(SimConfig {
        deactivated_ratio: 0.2,
        ..SimConfig::default()
    })
    .await;
    let user = sim
        .population()
        .users
        .iter()
        .find(|u| u.deactivated_at.is_some())
        .expect("a deactivated user")
        .clone();

    for flag in [None, Some("false")] {
        let mut query = vec![("email", user.email.as_str())];
        query.extend(flag.map(|f| ("includeDeactivated", f)));
        let (_, body) = users(&sim, &query).await;
        assert!(data(&body).is_empty(), "{flag:?}");
    }
    for flag in ["true", "True"] {
        let (_, body) = users(
            &sim,
            &[("email", &user.email), ("includeDeactivated", flag)],
        )
        .await;
        let [found] = data(&body).as_slice() else {
            panic!("expected one user: {body}");
        };
        assert_eq!(found["deactivatedAt"], user.deactivated_at.expect("set"));
    }
}

/// Follows `next` until `hasNext` is false, passing the token either through the
/// HTTP library's query encoding or verbatim in the URL.
async fn list_all(sim: &SimHandle, include_deactivated: bool, verbatim: bool) -> Vec<String> {
    let client = reqwest::Client::new();
    let flag = include_deactivated.to_string();
    let mut ids = Vec::new();
    let mut next: Option<String> = None;
    for _ in 0..1000 {
        let mut request = match (&next, verbatim) {
            (Some(token), true) => client.get(format!(
                "{}/v1/users?limit=10&includeDeactivated={flag}&offset={token}",
                sim.base_url()
            )),
            _ => client
                .get(format!("{}/v1/users", sim.base_url()))
                .query(&[("limit", "10"), ("includeDeactivated", &flag)]),
        };
        if let (Some(token), false) = (&next, verbatim) {
            request = request.query(&[("offset", token)]);
        }
        let response = request
            .basic_auth(KEY, None::<&str>)
            .send()
            .await
            .expect("request failed");
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("JSON");
        let page = data(&body);
        assert!(page.len() <= 10);
        ids.extend(
            page.iter()
                .map(|u| u["id"].as_str().expect("id").to_owned()),
        );
        if body["hasNext"] == false {
            assert!(body.get("next").is_none());
            return ids;
        }
        next = Some(body["next"].as_str().expect("next token").to_owned());
    }
    panic!("paging never ended");
}

#[tokio::test]
async fn paging_visits_every_user_once() {
    let sim = sim(SimConfig {
        users: 95,
        deactivated_ratio: 0.1,
        ..SimConfig::default()
    })
    .await;
    let everyone: HashSet<&str> = sim
        .population()
        .users
        .iter()
        .map(|u| u.id.as_str())
        .collect();
    let active: HashSet<&str> = sim
        .population()
        .users
        .iter()
        .filter(|u| u.deactivated_at.is_none())
        .map(|u| u.id.as_str())
        .collect();
    assert_eq!(active.len(), 85);

    for verbatim in [false, true] {
        let ids = list_all(&sim, true, verbatim).await;
        assert_eq!(ids.len(), 95, "verbatim={verbatim}");
        assert_eq!(
            ids.iter().map(String::as_str).collect::<HashSet<_>>(),
            everyone
        );
    }
    let ids = list_all(&sim, false, false).await;
    assert_eq!(ids.len(), 85);
    assert_eq!(
        ids.iter().map(String::as_str).collect::<HashSet<_>>(),
        active
    );
}

#[tokio::test]
async fn bad_requests_are_400() {
    let sim = sim(SimConfig::default()).await;
    let cases: [&[(&str, &str)]; 5] = [
        &[("limit", "0")],
        &[("limit", "101")],
        &[("limit", "ten")],
        &[("offset", "not-a-token")],
        &[("includeDeactivated", "yes")],
    ];
    for query in cases {
        let (status, body) = users(&sim, query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query:?}");
        assert_eq!(body["code"], "BadRequestError");
        assert!(body["message"].is_string());
    }
    let (status, body) = users(&sim, &[("limit", "100")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(data(&body).len(), 95);
}

#[tokio::test]
async fn bad_or_missing_key_is_401() {
    let sim = sim(SimConfig::default()).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/users", sim.base_url());
    let requests = [
        client.get(&url),
        client.get(&url).basic_auth("wrong-key", None::<&str>),
        client.get(&url).basic_auth("", Some(KEY)),
        client.get(&url).bearer_auth(KEY),
    ];
    for request in requests {
        let response = request.send().await.expect("request failed");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(
            body,
            serde_json::json!({"code": "UnauthorizedError", "message": "Invalid API key"})
        );
    }
    let stats = sim.stats();
    assert_eq!(
        (stats.requests, stats.accepted, stats.unauthorized),
        (4, 4, 4)
    );
}

#[tokio::test]
async fn failing_emails_answer_500() {
    let sim = sim(SimConfig {
        fail_emails: HashSet::from(["Flaky@Example.com".to_owned()]),
        ..SimConfig::default()
    })
    .await;
    let (status, body) = users(&sim, &[("email", "flaky@example.com")]).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["code"], "InternalServerError");
}

#[tokio::test]
async fn endless_emails_page_forever_without_a_match() {
    let sim = sim(SimConfig {
        endless_emails: HashSet::from(["Loop@Example.com".to_owned()]),
        ..SimConfig::default()
    })
    .await;
    let known = sim.population().users[0].email.clone();
    let (status, body) = users(&sim, &[("email", &known)]).await;
    assert_eq!((status, data(&body).len()), (StatusCode::OK, 1));

    let mut cursors = HashSet::new();
    let mut query = vec![("email", "loop@example.com".to_owned())];
    for page in 0..25 {
        let pairs: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, body) = users(&sim, &pairs).await;
        assert_eq!(status, StatusCode::OK, "page {page}: {body}");
        assert!(data(&body).is_empty(), "page {page}: {body}");
        assert_eq!(body["hasNext"], true, "page {page}");
        let next = body["next"].as_str().expect("a next cursor").to_owned();
        assert!(cursors.insert(next.clone()), "page {page} repeats a cursor");
        query = vec![("email", "loop@example.com".to_owned()), ("offset", next)];
    }
    assert_eq!(sim.stats().requests, 26);
}

#[tokio::test]
async fn throttles_with_retry_after_and_counts_from_the_vendor_side() {
    // Lever documents no Retry-After; the sim sends one when asked to.
    let sim = sim(SimConfig {
        rate: Some(RateLimit {
            per_second: 0.25,
            burst: 3,
        }),
        retry_after: Some(true),
        ..SimConfig::default()
    })
    .await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/users?email=nobody@example.com", sim.base_url());
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let response = client
            .get(&url)
            .basic_auth(KEY, None::<&str>)
            .send()
            .await
            .expect("request failed");
        statuses.push(response.status());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            // One token takes 4 s at 0.25/s.
            let retry_after = response.headers().get("retry-after").cloned();
            assert_eq!(
                retry_after.as_ref().and_then(|v| v.to_str().ok()),
                Some("4")
            );
            let body: Value = response.json().await.expect("JSON");
            assert_eq!(
                body,
                serde_json::json!({"code": "TooManyRequestsError", "message": "Rate limit exceeded"})
            );
        }
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 429, 429].map(|s| StatusCode::from_u16(s).expect("status"))
    );
    let expected = sim.stats();
    assert_eq!(
        (
            expected.requests,
            expected.accepted,
            expected.throttled,
            expected.unauthorized,
            expected.peak_1s,
            expected.peak_accepted_1s
        ),
        (5, 3, 2, 0, 5, 3)
    );

    // The admin view agrees, and is neither throttled nor counted.
    let admin: StatsSnapshot = client
        .get(format!("{}/_sim/stats", sim.base_url()))
        .send()
        .await
        .expect("request failed")
        .json()
        .await
        .expect("JSON");
    assert_eq!(admin, expected);

    // Lifting the limit over the admin API lets requests through again.
    let response = client
        .put(format!("{}/_sim/rate", sim.base_url()))
        .json(&Option::<RateLimit>::None)
        .send()
        .await
        .expect("request failed");
    assert_eq!(response.status(), StatusCode::OK);
    let rate: Option<RateLimit> = client
        .get(format!("{}/_sim/rate", sim.base_url()))
        .send()
        .await
        .expect("request failed")
        .json()
        .await
        .expect("JSON");
    assert_eq!(rate, None);
    let (status, _) = users(&sim, &[]).await;
    assert_eq!(status, StatusCode::OK);

    // ... and the handle can put one back.
    sim.set_rate(Some(RateLimit {
        per_second: 1.0,
        burst: 0,
    }));
    let (status, _) = users(&sim, &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(sim.stats().throttled, 3);
}

#[tokio::test]
async fn latency_delays_responses_and_health_answers() {
    let sim = sim(SimConfig {
        latency: Duration::from_millis(150),
        ..SimConfig::default()
    })
    .await;
    let started = Instant::now();
    let (status, _) = users(&sim, &[("email", "nobody@example.com")]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(150));

    let health = reqwest::get(format!("{}/_sim/health", sim.base_url()))
        .await
        .expect("request failed");
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.text().await.expect("text"), "ok");
    sim.shutdown().await;
}

#[tokio::test]
async fn equal_configs_serve_equal_populations() {
    let a = sim(SimConfig::default()).await;
    let b = sim(SimConfig::default()).await;
    let (_, body_a) = users(&a, &[("includeDeactivated", "true")]).await;
    let (_, body_b) = users(&b, &[("includeDeactivated", "true")]).await;
    assert_eq!(body_a, body_b);
    let roles: HashMap<&str, usize> =
        a.population()
            .users
            .iter()
            .fold(HashMap::new(), |mut counts, user| {
                *counts.entry(user.access_role.as_str()).or_default() += 1;
                counts
            });
    assert!(roles["team member"] > roles.get("super admin").copied().unwrap_or(0));
}
