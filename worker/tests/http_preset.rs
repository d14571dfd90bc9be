//! The declarative HTTP connector against the simulated vendors over real
//! HTTP: the shipped GitHub and Zoom presets, and inline specs for Lever
//! (basic auth, list + match), GitHub's member list (Link pagination), Zoom's
//! user list (cursor pagination) and Mosyle Business (session login).
//!
//! Connectors are built the way the worker builds them — settings parsed
//! from TOML, the credential resolved through the vault — so these tests also
//! cover option parsing and credential plumbing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use rolecall_common::credentials::Vault;
use rolecall_common::messages::UserRef;
use rolecall_sim::{RateLimit, SimConfig, SimHandle, SimUser, Vendor};
use rolecall_worker::connectors::{self, Connector, Lookup, VendorClient, VendorUser};
use rolecall_worker::error::ErrorClass;

const GITHUB: &str = r#"preset = "github-org-membership"
vars = { org = "acme" }"#;
const ZOOM: &str = r#"preset = "zoom-users""#;

/// The Lever users API described as data (VENDORS.md §2).
const LEVER_SPEC: &str = r#"
[saas.x.options.spec]
name = "Lever users (inline)"
[saas.x.options.spec.auth]
kind = "basic"
user = "{{secret}}"
password = ""
[saas.x.options.spec.request]
url = "{{base_url}}/v1/users?email={{email}}&includeDeactivated=true"
[saas.x.options.spec.response]
list = "/data"
match = { pointer = "/email", equals = "{{email}}", case_insensitive = true }
role = "/accessRole"
vendor_id = "/id"
active = { pointer = "/deactivatedAt", is_null = true }
error_code = "/code"
"#;

fn sim_config(vendor: Vendor, api_key: &str) -> SimConfig {
    SimConfig {
        vendor,
        api_key: api_key.to_owned(),
        ..SimConfig::default()
    }
}

async fn sim(config: SimConfig) -> SimHandle {
    rolecall_sim::spawn(config).await.expect("sim starts")
}

/// Builds the `http` connector for `sim` as the worker would: a `[saas.x]`
/// table with `options`, the credential from the vault's environment, and
/// every request through the SaaS app's vendor client. The client holds no
/// job for quota (`max_hold` zero), so a throttle reaches the test as the
/// connector classified it instead of being waited out and resent.
async fn build(
    sim: &SimHandle,
    base_path: &str,
    options: &str,
    secret: &str,
) -> Result<Arc<dyn Connector>, connectors::BuildError> {
    let text = format!(
        r#"
        [saas.x]
        connector = "http"
        base_url = "{}{base_path}"
        credential = "x-token"
        rate = {{ per_second = 100 }}
        [saas.x.options]
        {options}
        "#,
        sim.base_url()
    );
    let settings = rolecall_common::config::from_toml(&text).expect("valid settings");
    let saas = settings.saas["x"].clone();
    let var =
        Vault::with_env(settings.credentials.clone(), HashMap::new()).env_var(&saas.credential);
    let vault = Vault::with_env(
        settings.credentials.clone(),
        HashMap::from([(var, secret.to_owned())]),
    );
    let client = VendorClient::standalone(&saas).with_max_hold(Duration::ZERO);
    connectors::build(&saas, &client, &vault).await
}

async fn connector(sim: &SimHandle, options: &str, secret: &str) -> Arc<dyn Connector> {
    build(sim, "", options, secret)
        .await
        .expect("connector builds")
}

fn by_email(email: &str) -> UserRef {
    UserRef {
        id: "inv-1".into(),
        email: email.into(),
        external_id: None,
    }
}

fn by_login(login: &str) -> UserRef {
    UserRef {
        id: "inv-1".into(),
        email: "someone@example.com".into(),
        external_id: Some(login.into()),
    }
}

fn found(lookup: Lookup) -> VendorUser {
    match lookup {
        Lookup::Found(user) => user,
        Lookup::NotFound => panic!("expected the user, got NotFound"),
    }
}

fn first(sim: &SimHandle, what: impl Fn(&SimUser) -> bool) -> &SimUser {
    sim.population()
        .users
        .iter()
        .find(|u| what(u))
        .expect("the population has such a user")
}

fn throttled_config(vendor: Vendor, api_key: &str) -> SimConfig {
    SimConfig {
        rate: Some(RateLimit {
            per_second: 0.5,
            burst: 1,
        }),
        ..sim_config(vendor, api_key)
    }
}

fn assert_throttled(err: &connectors::ConnectorError) {
    assert!(
        matches!(err.class(), ErrorClass::Throttled(Some(wait)) if wait >= Duration::from_secs(1)),
        "{err:?}"
    );
}

// --- GitHub: the shipped github-org-membership preset ----------------------

fn github_state(user: &SimUser) -> Option<&str> {
    user.extra["state"].as_str()
}

#[tokio::test]
async fn github_finds_members_by_login_with_their_role() {
    let sim = sim(sim_config(Vendor::Github, "gh-token")).await;
    let github = connector(&sim, GITHUB, "gh-token").await;
    let member = first(&sim, |u| github_state(u) == Some("active"));
    // Logins are case-insensitive at GitHub.
    let user = found(
        github
            .lookup(&by_login(&member.github_login.to_uppercase()))
            .await
            .unwrap(),
    );
    assert_eq!(user.raw_role, member.access_role);
    assert_eq!(user.vendor_id, member.extra["id"].to_string());
    assert!(user.active);
    assert_eq!(user.raw["user"]["login"], member.github_login.as_str());
}

#[tokio::test]
async fn github_pending_invitations_are_found_inactive() {
    let sim = sim(SimConfig {
        users: 300,
        ..sim_config(Vendor::Github, "gh-token")
    })
    .await;
    let github = connector(&sim, GITHUB, "gh-token").await;
    let invited = first(&sim, |u| github_state(u) == Some("pending"));
    let user = found(
        github
            .lookup(&by_login(&invited.github_login))
            .await
            .unwrap(),
    );
    assert!(!user.active);
    assert_eq!(user.raw_role, invited.access_role);
}

#[tokio::test]
async fn github_non_members_are_not_found() {
    let sim = sim(SimConfig {
        deactivated_ratio: 0.5,
        ..sim_config(Vendor::Github, "gh-token")
    })
    .await;
    let github = connector(&sim, GITHUB, "gh-token").await;
    assert_eq!(
        github.lookup(&by_login("no-such-login")).await.unwrap(),
        Lookup::NotFound
    );
    let left = first(&sim, |u| u.deactivated_at.is_some());
    assert_eq!(
        github.lookup(&by_login(&left.github_login)).await.unwrap(),
        Lookup::NotFound
    );
}

#[tokio::test]
async fn github_a_bad_token_is_an_auth_error_that_does_not_echo_it() {
    let sim = sim(sim_config(Vendor::Github, "gh-token")).await;
    let github = connector(&sim, GITHUB, "wrong-hunter2").await;
    let err = github.lookup(&by_login("anyone")).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Auth);
    assert!(err.to_string().contains("Bad credentials"), "{err}");
    assert!(!err.to_string().contains("hunter2"));
}

#[tokio::test]
async fn github_throttling_is_classified_with_the_wait() {
    let sim = sim(throttled_config(Vendor::Github, "gh-token")).await;
    let github = connector(&sim, GITHUB, "gh-token").await;
    github.lookup(&by_login("anyone")).await.unwrap();
    let err = github.lookup(&by_login("anyone")).await.unwrap_err();
    assert_throttled(&err);
}

#[tokio::test]
async fn github_without_an_external_id_is_permanent_and_sends_nothing() {
    let sim = sim(sim_config(Vendor::Github, "gh-token")).await;
    let github = connector(&sim, GITHUB, "gh-token").await;
    let err = github.lookup(&by_email("a@example.com")).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(
        err.to_string()
            .contains("needs external_id in the inventory"),
        "{err}"
    );
    assert_eq!(sim.stats().requests, 0);
}

#[tokio::test]
async fn github_vendor_failures_are_transient() {
    // The population is a function of the config: pick the victim first.
    let config = sim_config(Vendor::Github, "gh-token");
    let population = rolecall_sim::generate_vendor_population(
        Vendor::Github,
        config.users,
        config.seed,
        &config.email_domain,
        config.deactivated_ratio,
    );
    let member = population
        .users
        .iter()
        .find(|u| github_state(u) == Some("active"))
        .unwrap()
        .clone();
    let sim = sim(SimConfig {
        fail_emails: HashSet::from([member.email.clone()]),
        ..config
    })
    .await;
    let github = connector(&sim, GITHUB, "gh-token").await;
    let err = github
        .lookup(&by_login(&member.github_login))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient);
}

/// GitHub's member list: a bare array (`list = ""`), pages in `Link`.
const GITHUB_MEMBERS: &str = r#"
[saas.x.options.spec]
[saas.x.options.spec.auth]
kind = "bearer"
token = "{{secret}}"
[saas.x.options.spec.request]
url = "{{base_url}}/orgs/{{vars.org}}/members"
headers = { Accept = "application/vnd.github+json" }
[saas.x.options.spec.response]
list = ""
match = { pointer = "/login", equals = "{{external_id}}", case_insensitive = true }
role = "/type"
vendor_id = "/id"
[saas.x.options.spec.pagination]
style = "link"
size_param = "per_page"
size = 10
max_pages = 50
[saas.x.options.vars]
org = "acme"
"#;

#[tokio::test]
async fn github_member_list_is_followed_through_link_headers() {
    let sim = sim(sim_config(Vendor::Github, "gh-token")).await;
    let github = connector(&sim, GITHUB_MEMBERS, "gh-token").await;
    // The sim lists active members other than billing managers, in order.
    let listed: Vec<&SimUser> = sim
        .population()
        .users
        .iter()
        .filter(|u| github_state(u) == Some("active") && u.access_role != "billing_manager")
        .collect();
    let late = listed[listed.len() - 1];
    let user = found(github.lookup(&by_login(&late.github_login)).await.unwrap());
    assert_eq!(user.vendor_id, late.extra["id"].to_string());
    assert_eq!(user.raw_role, "User");
    let pages = listed.len().div_ceil(10) as u64;
    assert_eq!(sim.stats().requests, pages);
    assert_eq!(
        github.lookup(&by_login("no-such-login")).await.unwrap(),
        Lookup::NotFound
    );
    assert_eq!(sim.stats().requests, 2 * pages);
}

#[tokio::test]
async fn github_member_list_cut_short_by_max_pages_is_no_verdict() {
    let sim = sim(sim_config(Vendor::Github, "gh-token")).await;
    let capped = GITHUB_MEMBERS.replace("max_pages = 50", "max_pages = 2");
    let github = connector(&sim, &capped, "gh-token").await;
    // Someone on no page: two pages read, more follow, so no "not found".
    let err = github.lookup(&by_login("no-such-login")).await.unwrap_err();
    assert!(
        matches!(err, connectors::ConnectorError::Inconclusive(_)),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert_eq!(sim.stats().requests, 2);
}

// --- Zoom: the shipped zoom-users preset ----------------------------------

fn zoom_status(user: &SimUser) -> Option<&str> {
    user.extra["status"].as_str()
}

#[tokio::test]
async fn zoom_finds_users_by_email_with_their_licence_type() {
    let sim = sim(sim_config(Vendor::Zoom, "zoom-token")).await;
    let zoom = connector(&sim, ZOOM, "zoom-token").await;
    let known = first(&sim, |u| zoom_status(u) == Some("active"));
    let user = found(
        zoom.lookup(&by_email(&known.email.to_uppercase()))
            .await
            .unwrap(),
    );
    assert_eq!(user.raw_role, known.extra["type"].to_string());
    assert!(["1", "2", "4"].contains(&user.raw_role.as_str()));
    assert_eq!(user.vendor_id, known.id);
    assert!(user.active);
}

#[tokio::test]
async fn zoom_inactive_and_pending_users_are_found_inactive() {
    let sim = sim(SimConfig {
        users: 300,
        deactivated_ratio: 0.2,
        ..sim_config(Vendor::Zoom, "zoom-token")
    })
    .await;
    let zoom = connector(&sim, ZOOM, "zoom-token").await;
    for status in ["inactive", "pending"] {
        let known = first(&sim, |u| zoom_status(u) == Some(status));
        let user = found(zoom.lookup(&by_email(&known.email)).await.unwrap());
        assert!(!user.active, "{status}");
    }
}

#[tokio::test]
async fn zoom_unknown_users_are_not_found_but_other_404s_are_errors() {
    let sim = sim(sim_config(Vendor::Zoom, "zoom-token")).await;
    let zoom = connector(&sim, ZOOM, "zoom-token").await;
    // A `+` and an `@` travel percent-encoded in the path and are still one segment.
    assert_eq!(
        zoom.lookup(&by_email("No.Body+tag@example.com"))
            .await
            .unwrap(),
        Lookup::NotFound
    );
    // A wrong base URL answers 404 without Zoom's code 1001: not "not found".
    let misrouted = build(&sim, "/nope", ZOOM, "zoom-token").await.unwrap();
    let err = misrouted
        .lookup(&by_email("nobody@example.com"))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(err.to_string().contains("HTTP 404"), "{err}");
}

#[tokio::test]
async fn zoom_a_bad_token_is_an_auth_error_with_zooms_code() {
    let sim = sim(sim_config(Vendor::Zoom, "zoom-token")).await;
    let zoom = connector(&sim, ZOOM, "wrong-hunter2").await;
    let err = zoom.lookup(&by_email("a@example.com")).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Auth);
    assert!(err.to_string().contains("124"), "{err}");
    assert!(!err.to_string().contains("hunter2"));
}

#[tokio::test]
async fn zoom_throttling_is_classified_with_the_wait_zoom_names() {
    // Zoom's Retry-After is unverified (VENDORS.md §8): the sim sends one
    // only when asked, and then the wait reaches the error.
    let sim = sim(SimConfig {
        retry_after: Some(true),
        ..throttled_config(Vendor::Zoom, "zoom-token")
    })
    .await;
    let zoom = connector(&sim, ZOOM, "zoom-token").await;
    zoom.lookup(&by_email("a@example.com")).await.unwrap();
    let err = zoom.lookup(&by_email("a@example.com")).await.unwrap_err();
    assert_throttled(&err);
}

#[tokio::test]
async fn zoom_throttling_without_a_retry_after_is_still_a_throttle() {
    let sim = sim(throttled_config(Vendor::Zoom, "zoom-token")).await;
    let zoom = connector(&sim, ZOOM, "zoom-token").await;
    zoom.lookup(&by_email("a@example.com")).await.unwrap();
    let err = zoom.lookup(&by_email("a@example.com")).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Throttled(None), "{err:?}");
}

#[tokio::test]
async fn zoom_user_list_is_followed_through_cursors() {
    let sim = sim(SimConfig {
        users: 120,
        deactivated_ratio: 0.0,
        ..sim_config(Vendor::Zoom, "zoom-token")
    })
    .await;
    let spec = r#"
        [saas.x.options.spec]
        [saas.x.options.spec.auth]
        kind = "bearer"
        token = "{{secret}}"
        [saas.x.options.spec.request]
        url = "{{base_url}}/v2/users?status=active"
        [saas.x.options.spec.response]
        list = "/users"
        match = { pointer = "/email", equals = "{{email}}", case_insensitive = true }
        role = "/role_name"
        vendor_id = "/id"
        [saas.x.options.spec.pagination]
        style = "cursor"
        next = "/next_page_token"
        param = "next_page_token"
        size_param = "page_size"
        size = 10
    "#;
    let zoom = connector(&sim, spec, "zoom-token").await;
    let active: Vec<&SimUser> = sim
        .population()
        .users
        .iter()
        .filter(|u| zoom_status(u) == Some("active"))
        .collect();
    let late = active[active.len() - 1];
    let user = found(zoom.lookup(&by_email(&late.email)).await.unwrap());
    assert_eq!(user.raw_role, late.access_role);
    let pages = active.len().div_ceil(10) as u64;
    assert_eq!(sim.stats().requests, pages);
    // Someone on no page: every page read, then not found.
    assert_eq!(
        zoom.lookup(&by_email("nobody@example.com")).await.unwrap(),
        Lookup::NotFound
    );
    assert_eq!(sim.stats().requests, 2 * pages);
}

// --- Lever, described inline ----------------------------------------------

#[tokio::test]
async fn an_inline_lever_spec_finds_reads_and_misses_users() {
    let sim = sim(SimConfig {
        deactivated_ratio: 0.5,
        ..SimConfig::default()
    })
    .await;
    let key = SimConfig::default().api_key;
    let lever = connector(&sim, LEVER_SPEC, &key).await;
    let active = first(&sim, |u| u.deactivated_at.is_none());
    let user = found(
        lever
            .lookup(&by_email(&active.email.to_uppercase()))
            .await
            .unwrap(),
    );
    assert_eq!(user.vendor_id, active.id);
    assert_eq!(user.raw_role, active.access_role);
    assert!(user.active);
    let gone = first(&sim, |u| u.deactivated_at.is_some());
    assert!(!found(lever.lookup(&by_email(&gone.email)).await.unwrap()).active);
    assert_eq!(
        lever.lookup(&by_email("nobody@example.com")).await.unwrap(),
        Lookup::NotFound
    );
}

#[tokio::test]
async fn an_inline_lever_spec_classifies_auth_and_throttling() {
    // Lever documents no Retry-After (VENDORS.md §2.6); ask the sim for one
    // so the wait can be checked.
    let sim = sim(SimConfig {
        rate: Some(RateLimit {
            per_second: 0.5,
            burst: 1,
        }),
        retry_after: Some(true),
        ..SimConfig::default()
    })
    .await;
    let wrong = connector(&sim, LEVER_SPEC, "wrong-hunter2").await;
    let err = wrong.lookup(&by_email("a@example.com")).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Auth);
    assert!(err.to_string().contains("UnauthorizedError"), "{err}");
    assert!(!err.to_string().contains("hunter2"));
    // The refused request took the only token; the next one is throttled.
    let lever = connector(&sim, LEVER_SPEC, &SimConfig::default().api_key).await;
    let err = lever.lookup(&by_email("a@example.com")).await.unwrap_err();
    assert_throttled(&err);
}

// --- Mosyle Business, described inline: session login --------------------

#[tokio::test]
async fn a_session_spec_logs_in_once_and_again_when_the_session_expires() {
    let config = SimConfig {
        vendor: Vendor::MosyleBusiness,
        api_key: "mosyle-access".into(),
        login_email: "admin@example.com".into(),
        login_password: "pw".into(),
        session_ttl: Duration::from_secs(1),
        page_size: 1000,
        ..SimConfig::default()
    };
    let sim = sim(config).await;
    let spec = r#"
        [saas.x.options.spec]
        [saas.x.options.spec.auth]
        kind = "session"
        token_from = "header:Authorization"
        [saas.x.options.spec.auth.login]
        method = "POST"
        url = "{{base_url}}/v1/login"
        headers = { accessToken = "{{secret.access_token}}" }
        body = '{"email": "{{secret.email}}", "password": "{{secret.password}}"}'
        [saas.x.options.spec.request]
        method = "POST"
        url = "{{base_url}}/v1/users"
        headers = { accessToken = "{{secret.access_token}}" }
        body = '{"operation": "list_users", "options": {"page": 1}}'
        [saas.x.options.spec.response]
        list = "/response/0/users"
        match = { pointer = "/email", equals = "{{email}}", case_insensitive = true }
        role = "/type"
        vendor_id = "/iduser"
        active = { pointer = "/is_removed", equals = false }
        error_code = "/status"
    "#;
    let secret = r#"{"access_token":"mosyle-access","email":"admin@example.com","password":"pw"}"#;
    let mosyle = connector(&sim, spec, secret).await;
    let known = sim.population().users[3].clone();
    let user = found(mosyle.lookup(&by_email(&known.email)).await.unwrap());
    assert_eq!(user.raw_role, known.access_role);
    mosyle.lookup(&by_email(&known.email)).await.unwrap();
    assert_eq!(sim.login_count(), 1, "the session is reused");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    found(mosyle.lookup(&by_email(&known.email)).await.unwrap());
    assert_eq!(sim.login_count(), 2, "one new login after the 401");

    let wrong =
        r#"{"access_token":"mosyle-access","email":"admin@example.com","password":"hunter2"}"#;
    let refused = connector(&sim, spec, wrong).await;
    let err = refused.lookup(&by_email(&known.email)).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Auth);
    assert!(!err.to_string().contains("hunter2"));
}
