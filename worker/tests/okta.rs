//! The Okta connector against the simulated Okta API over real HTTP, built
//! the way the worker builds it. The sim serves no lifecycle routes, so the
//! deactivation of an active user runs against a scripted one-route server.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use rolecall_common::config::{CredentialSettings, from_toml};
use rolecall_common::credentials::Vault;
use rolecall_common::messages::{Action, UserRef};
use rolecall_sim::{RateLimit, SimConfig, SimHandle, SimUser, Vendor};
use rolecall_worker::connectors::{
    self, BuildError, Connector, ConnectorError, Lookup, VendorUser,
};
use rolecall_worker::error::ErrorClass;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "sim-okta-token-hunter2";

fn user(email: &str) -> UserRef {
    UserRef {
        id: "inv-1".into(),
        email: email.into(),
        external_id: None,
    }
}

fn sim_config() -> SimConfig {
    SimConfig {
        vendor: Vendor::Okta,
        api_key: TOKEN.into(),
        users: 200,
        deactivated_ratio: 0.2,
        ..SimConfig::default()
    }
}

async fn build(
    base_url: &str,
    options: &str,
    credential: &str,
) -> Result<Arc<dyn Connector>, BuildError> {
    let settings = from_toml(&format!(
        r#"
        [saas.okta]
        connector = "okta"
        base_url = "{base_url}"
        credential = "okta"
        rate = {{ per_second = 100 }}
        options = {{ {options} }}
        "#
    ))
    .expect("the test configuration is valid");
    let vault = Vault::with_env(
        CredentialSettings {
            env_prefix: "TEST_".into(),
            dir: None,
            vault: None,
        },
        HashMap::from([("TEST_OKTA".to_string(), credential.to_string())]),
    );
    connectors::build(
        &settings.saas["okta"],
        &connectors::VendorClient::standalone(&settings.saas["okta"]),
        &vault,
    )
    .await
}

async fn start(config: SimConfig) -> (SimHandle, Arc<dyn Connector>) {
    let sim = rolecall_sim::spawn(config).await.unwrap();
    let okta = build(&sim.base_url(), "", TOKEN).await.unwrap();
    (sim, okta)
}

fn status(u: &SimUser) -> &str {
    u.extra["status"].as_str().unwrap()
}

fn pick(sim: &SimHandle, test: impl Fn(&SimUser) -> bool) -> SimUser {
    sim.population()
        .users
        .iter()
        .find(|u| test(u))
        .expect("the population has such a user")
        .clone()
}

fn found(lookup: Lookup) -> VendorUser {
    match lookup {
        Lookup::Found(user) => user,
        other => panic!("expected a user, got {other:?}"),
    }
}

#[tokio::test]
async fn finds_admins_by_email_whatever_the_case_with_their_role() {
    let (sim, okta) = start(sim_config()).await;
    for role in rolecall_sim::OKTA_ROLES {
        let admin = pick(&sim, |u| u.access_role == role && status(u) == "ACTIVE");
        let got = found(
            okta.lookup(&user(&admin.email.to_uppercase()))
                .await
                .unwrap(),
        );
        assert_eq!(got.vendor_id, admin.id);
        assert_eq!(got.raw_role, role);
        assert!(got.active);
        assert_eq!(got.raw["profile"]["email"], admin.email.as_str());
    }
}

#[tokio::test]
async fn users_without_an_admin_role_are_plain_users() {
    let (sim, okta) = start(sim_config()).await;
    let plain = pick(&sim, |u| u.access_role.is_empty() && status(u) == "ACTIVE");
    let got = found(okta.lookup(&user(&plain.email)).await.unwrap());
    assert_eq!(got.raw_role, "USER");
    assert!(got.active);
}

#[tokio::test]
async fn deprovisioned_and_suspended_users_are_found_inactive() {
    let (sim, okta) = start(sim_config()).await;
    for gone in ["DEPROVISIONED", "SUSPENDED"] {
        let u = pick(&sim, |u| status(u) == gone);
        let got = found(okta.lookup(&user(&u.email)).await.unwrap());
        assert!(!got.active, "{gone}");
        assert_eq!(got.raw["status"], gone);
    }
}

#[tokio::test]
async fn unknown_users_are_not_found_even_with_quotes_in_the_email() {
    let (_sim, okta) = start(sim_config()).await;
    for email in ["nobody@example.com", r#"no"body\@example.com"#] {
        assert_eq!(okta.lookup(&user(email)).await.unwrap(), Lookup::NotFound);
    }
}

#[tokio::test]
async fn a_wrong_token_is_an_auth_error_that_does_not_echo_the_token() {
    let sim = rolecall_sim::spawn(sim_config()).await.unwrap();
    let okta = build(&sim.base_url(), "", "wrong-token-hunter3")
        .await
        .unwrap();
    let err = okta.lookup(&user("a@example.com")).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Auth);
    let text = format!("{err} {err:?}");
    assert!(text.contains("E0000011"), "{text}");
    assert!(!text.contains("hunter"), "{text}");
}

#[tokio::test]
async fn throttling_is_classified_as_throttled() {
    let (sim, okta) = start(SimConfig {
        rate: Some(RateLimit {
            per_second: 0.2,
            burst: 1,
        }),
        ..sim_config()
    })
    .await;
    let someone = pick(&sim, |u| status(u) == "ACTIVE");
    // The search takes the only token; the roles call is throttled.
    let err = okta.lookup(&user(&someone.email)).await.unwrap_err();
    assert!(matches!(err.class(), ErrorClass::Throttled(_)), "{err:?}");
    assert!(
        matches!(err, ConnectorError::Throttled { status: 429, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn vendor_failures_are_transient() {
    let mut config = sim_config();
    let (sim, _) = start(config.clone()).await;
    let doomed = pick(&sim, |u| status(u) == "ACTIVE").email;
    config.fail_emails = HashSet::from([doomed.clone()]);
    let (_sim, okta) = start(config).await;
    let err = okta.lookup(&user(&doomed)).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
}

#[tokio::test]
async fn bad_credentials_and_options_are_refused_at_build() {
    let base = "https://acme.okta.com";
    for bad in ["SSWS hunter2", "hunter2\nhunter2"] {
        let err = match build(base, "", bad).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("built with a malformed token"),
        };
        assert!(err.starts_with("saas.okta.credential"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
    let err = match build(base, r#"product = "x""#, TOKEN).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("built with an unknown option"),
    };
    assert!(err.starts_with("saas.okta.options.product"), "{err}");
}

#[tokio::test]
async fn the_base_url_may_end_in_the_api_path() {
    let sim = rolecall_sim::spawn(sim_config()).await.unwrap();
    let okta = build(&format!("{}/api/v1/", sim.base_url()), "", TOKEN)
        .await
        .unwrap();
    let someone = pick(&sim, |u| status(u) == "ACTIVE");
    found(okta.lookup(&user(&someone.email)).await.unwrap());
}

#[tokio::test]
async fn deactivating_an_unknown_user_is_a_permanent_error() {
    let (_sim, okta) = start(sim_config()).await;
    let err = okta
        .act(
            Action::DeactivateUser,
            &user("nobody@example.com"),
            &BTreeMap::new(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ConnectorError::Rejected { status: 404, .. }),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Permanent);
}

#[tokio::test]
async fn deactivating_a_deprovisioned_user_changes_nothing() {
    let (sim, okta) = start(sim_config()).await;
    let gone = pick(&sim, |u| status(u) == "DEPROVISIONED");
    let done = okta
        .act(Action::DeactivateUser, &user(&gone.email), &BTreeMap::new())
        .await
        .unwrap();
    assert_eq!(done.vendor_id.as_deref(), Some(gone.id.as_str()));
    assert_eq!(done.detail, "already deactivated");
    assert_eq!(sim.stats().requests, 1, "only the search");
}

#[tokio::test]
async fn other_actions_are_unsupported() {
    let (_sim, okta) = start(sim_config()).await;
    let err = okta
        .act(Action::CreateUser, &user("a@example.com"), &BTreeMap::new())
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
}

/// What the scripted server saw: request line and `Authorization` header.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// A one-connection-per-request HTTP/1.1 server answering each request line
/// with `answer`'s status and JSON body.
async fn scripted_okta(answer: fn(&str) -> (u16, String)) -> (String, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut raw = Vec::new();
            let mut buf = [0u8; 4096];
            while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => raw.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&raw).to_string();
            let line = head.lines().next().unwrap_or_default().to_string();
            let auth = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("authorization")
                        .then(|| v.trim().to_string())
                })
                .unwrap_or_default();
            log.lock().unwrap().push((line.clone(), auth));
            let (status, body) = answer(&line);
            let response = format!(
                "HTTP/1.1 {status} Scripted\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        }
    });
    (base, seen)
}

#[tokio::test]
async fn deactivating_an_active_user_posts_the_lifecycle_call() {
    // The search finds one active user; the lifecycle call answers `{}`.
    let (base, seen) = scripted_okta(|line| {
        if line.starts_with("GET /api/v1/users?") {
            let user = serde_json::json!([{
                "id": "00uSCRIPTED",
                "status": "ACTIVE",
                "profile": {"login": "ada@example.com", "email": "Ada@Example.com"},
            }]);
            (200, user.to_string())
        } else {
            (200, "{}".to_string())
        }
    })
    .await;
    let okta = build(&base, "", TOKEN).await.unwrap();
    let done = okta
        .act(
            Action::DeactivateUser,
            &user("ada@example.com"),
            &BTreeMap::new(),
        )
        .await
        .unwrap();
    assert_eq!(done.vendor_id.as_deref(), Some("00uSCRIPTED"));
    assert_eq!(done.detail, "deactivated");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    // The search expression is URL-encoded, quotes included.
    assert!(
        seen[0]
            .0
            .starts_with("GET /api/v1/users?search=profile.email+eq+%22ada%40example.com%22 "),
        "{seen:?}"
    );
    assert_eq!(
        seen[1].0,
        "POST /api/v1/users/00uSCRIPTED/lifecycle/deactivate HTTP/1.1"
    );
    for (_, auth) in &seen {
        assert_eq!(auth, &format!("SSWS {TOKEN}"));
    }
}

#[tokio::test]
async fn a_user_deleted_between_the_list_and_its_roles_call_is_left_out_of_the_page() {
    // Two users listed; Okta answers 404 for the second one's roles.
    let (base, seen) = scripted_okta(|line| {
        if line.starts_with("GET /api/v1/users?") {
            let users = serde_json::json!([
                {"id": "00uADA", "status": "ACTIVE", "profile": {"email": "ada@example.com"}},
                {"id": "00uGONE", "status": "ACTIVE", "profile": {"email": "gone@example.com"}},
            ]);
            (200, users.to_string())
        } else if line.starts_with("GET /api/v1/users/00uADA/roles ") {
            (
                200,
                r#"[{"type": "ORG_ADMIN", "status": "ACTIVE"}]"#.to_string(),
            )
        } else {
            (404, r#"{"errorCode": "E0000007"}"#.to_string())
        }
    })
    .await;
    let okta = build(&base, "", TOKEN).await.unwrap();
    let page = okta.list_page(None).await.expect("the page is listed");
    let listed: Vec<(&str, Option<&str>)> = page
        .users
        .iter()
        .map(|u| (u.vendor_id.as_str(), u.raw_role.as_deref()))
        .collect();
    assert_eq!(listed, [("00uADA", Some("ORG_ADMIN"))]);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "the list and two roles calls: {seen:?}");
}

#[tokio::test]
async fn a_user_whose_login_is_the_email_is_found_though_the_email_search_finds_nobody() {
    // Ada's primary e-mail changed; her login is still the inventory's
    // e-mail. The search by `profile.email` answers `[]`, the login fetch
    // finds her. Nobody has bob@: `[]` and 404, so he is not found.
    let (base, seen) = scripted_okta(|line| {
        if line.starts_with("GET /api/v1/users?") {
            (200, "[]".to_string())
        } else if line.starts_with("GET /api/v1/users/ada@example.com ")
            || line.starts_with("GET /api/v1/users/ada%40example.com ")
        {
            let ada = serde_json::json!({
                "id": "00uADA",
                "status": "ACTIVE",
                "profile": {"login": "Ada@Example.com", "email": "ada.lovelace@example.com"},
            });
            (200, ada.to_string())
        } else if line.starts_with("GET /api/v1/users/00uADA/roles ") {
            (
                200,
                r#"[{"type": "ORG_ADMIN", "status": "ACTIVE"}]"#.to_string(),
            )
        } else {
            (404, r#"{"errorCode": "E0000007"}"#.to_string())
        }
    })
    .await;
    let okta = build(&base, "", TOKEN).await.unwrap();
    let ada = found(okta.lookup(&user("ada@example.com")).await.unwrap());
    assert_eq!(ada.vendor_id, "00uADA");
    assert_eq!(ada.raw_role, "ORG_ADMIN");
    assert_eq!(
        okta.lookup(&user("bob@example.com")).await.unwrap(),
        Lookup::NotFound
    );
    let lines: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(l, _)| l.clone())
        .collect();
    assert_eq!(
        lines.len(),
        5,
        "search, login, roles; search, login: {lines:?}"
    );
    assert!(lines[4].starts_with("GET /api/v1/users/bob"), "{lines:?}");
}
