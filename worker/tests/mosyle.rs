//! The Mosyle connector (Business and Manager) against the simulated Mosyle
//! APIs over real HTTP, built the way the worker builds it: from a `[saas]`
//! table and a credential in the vault.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rolecall_common::config::{CredentialSettings, from_toml};
use rolecall_common::credentials::Vault;
use rolecall_common::messages::{Action, UserRef};
use rolecall_sim::{Fault, RateLimit, SimConfig, SimHandle, SimUser, Vendor};
use rolecall_worker::connectors::{self, BuildError, Connector, Lookup, VendorUser};
use rolecall_worker::error::ErrorClass;

const TOKEN: &str = "sim-mosyle-access-token";
const EMAIL: &str = "admin@example.com";
const PASSWORD: &str = "sim-password-hunter2";

fn user(email: &str) -> UserRef {
    UserRef {
        id: "inv-1".into(),
        email: email.into(),
        external_id: None,
    }
}

fn sim_config(vendor: Vendor) -> SimConfig {
    SimConfig {
        vendor,
        users: 120,
        page_size: 25,
        api_key: TOKEN.into(),
        login_email: EMAIL.into(),
        login_password: PASSWORD.into(),
        ..SimConfig::default()
    }
}

fn credential(token: &str, password: &str) -> String {
    serde_json::json!({"access_token": token, "email": EMAIL, "password": password}).to_string()
}

/// Builds the connector through `connectors::build`, as the worker does.
/// `options` is the inside of the TOML inline table.
async fn build(
    base_url: &str,
    options: &str,
    credential: &str,
) -> Result<Arc<dyn Connector>, BuildError> {
    let settings = from_toml(&format!(
        r#"
        [saas.mosyle]
        connector = "mosyle"
        base_url = "{base_url}"
        credential = "mosyle"
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
        HashMap::from([("TEST_MOSYLE".to_string(), credential.to_string())]),
    );
    connectors::build(
        &settings.saas["mosyle"],
        &connectors::VendorClient::standalone(&settings.saas["mosyle"]),
        &vault,
    )
    .await
}

async fn start(config: SimConfig, options: &str) -> (SimHandle, Arc<dyn Connector>) {
    let sim = rolecall_sim::spawn(config).await.unwrap();
    let connector = build(&sim.base_url(), options, &credential(TOKEN, PASSWORD))
        .await
        .unwrap();
    (sim, connector)
}

async fn business(options: &str) -> (SimHandle, Arc<dyn Connector>) {
    start(sim_config(Vendor::MosyleBusiness), options).await
}

async fn manager(options: &str) -> (SimHandle, Arc<dyn Connector>) {
    let options = if options.is_empty() {
        r#"product = "manager""#.to_string()
    } else {
        format!(r#"product = "manager", {options}"#)
    };
    start(sim_config(Vendor::MosyleManager), &options).await
}

fn found(lookup: Lookup) -> VendorUser {
    match lookup {
        Lookup::Found(user) => user,
        other => panic!("expected a user, got {other:?}"),
    }
}

/// The e-mail as Mosyle stores it (every 5th capitalised).
fn stored_email(u: &SimUser) -> String {
    u.extra["email"].as_str().unwrap().to_string()
}

fn live(sim: &SimHandle) -> Vec<SimUser> {
    sim.population()
        .users
        .iter()
        .filter(|u| u.deactivated_at.is_none())
        .cloned()
        .collect()
}

#[tokio::test]
async fn business_finds_users_on_any_page_whatever_the_case() {
    let (sim, mosyle) = business("").await;
    let users = live(&sim);
    // The last live user sits on the last page (25 per page, 120 users);
    // a capitalised stored e-mail is looked up in lower case and vice versa.
    let last = users.last().unwrap();
    let capitalised = users
        .iter()
        .find(|u| stored_email(u) != u.email)
        .expect("the sim capitalises some e-mails");
    for (u, asked) in [
        (last, last.email.to_uppercase()),
        (capitalised, capitalised.email.clone()),
    ] {
        let got = found(mosyle.lookup(&user(&asked)).await.unwrap());
        assert_eq!(got.vendor_id, u.extra["iduser"].as_str().unwrap());
        assert_eq!(got.raw_role, u.access_role);
        assert!(got.active);
        assert_eq!(got.raw["email"], stored_email(u).as_str());
    }
    assert_eq!(sim.login_count(), 1);
}

#[tokio::test]
async fn business_removed_users_are_inactive_and_unknown_users_not_found() {
    let (sim, mosyle) = start(
        SimConfig {
            deactivated_ratio: 0.3,
            ..sim_config(Vendor::MosyleBusiness)
        },
        "",
    )
    .await;
    let removed = sim
        .population()
        .users
        .iter()
        .find(|u| u.deactivated_at.is_some())
        .unwrap()
        .clone();
    let found = found(mosyle.lookup(&user(&removed.email)).await.unwrap());
    assert!(
        !found.active,
        "a removed user is found, inactive: {found:?}"
    );
    assert_eq!(
        mosyle.lookup(&user("nobody@example.com")).await.unwrap(),
        Lookup::NotFound
    );
}

#[tokio::test]
async fn manager_finds_users_with_their_type_and_pages_until_the_total() {
    let config = SimConfig {
        users: 50,
        page_size: 7,
        ..sim_config(Vendor::MosyleManager)
    };
    let (sim, mosyle) = start(config, r#"product = "manager""#).await;
    let last = live(&sim).last().unwrap().clone();
    let got = found(
        mosyle
            .lookup(&user(&last.email.to_uppercase()))
            .await
            .unwrap(),
    );
    assert_eq!(got.vendor_id, last.extra["id"].as_str().unwrap());
    assert_eq!(got.raw_role, last.access_role);
    assert!(got.active);
    // Only the columns asked for.
    let mut keys: Vec<&str> = got
        .raw
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(keys, ["email", "id", "name", "type"]);
    // One login and ceil(listed / 7) pages: the scan stops at the total,
    // without asking for an empty page.
    let listed = live(&sim).len() as u64;
    assert_eq!(sim.stats().requests, 1 + listed.div_ceil(7));
}

#[tokio::test]
async fn manager_does_not_list_deactivated_users() {
    let (sim, mosyle) = start(
        SimConfig {
            deactivated_ratio: 0.3,
            ..sim_config(Vendor::MosyleManager)
        },
        r#"product = "manager""#,
    )
    .await;
    let gone = sim
        .population()
        .users
        .iter()
        .find(|u| u.deactivated_at.is_some())
        .unwrap()
        .clone();
    assert_eq!(
        mosyle.lookup(&user(&gone.email)).await.unwrap(),
        Lookup::NotFound
    );
}

#[tokio::test]
async fn one_scan_answers_many_lookups_and_a_stale_miss_rescans() {
    let (sim, mosyle) = business("list_cache_s = 60").await;
    let scan = 1 + 120u64.div_ceil(25); // login + pages
    for u in live(&sim).iter().take(20) {
        found(mosyle.lookup(&user(&u.email)).await.unwrap());
    }
    // A miss right after the scan is trusted.
    assert_eq!(
        mosyle.lookup(&user("nobody@example.com")).await.unwrap(),
        Lookup::NotFound
    );
    assert_eq!(sim.stats().requests, scan);
    // A miss in an older map rescans before answering (the user may be new).
    tokio::time::sleep(Duration::from_millis(5_200)).await;
    assert_eq!(
        mosyle.lookup(&user("nobody@example.com")).await.unwrap(),
        Lookup::NotFound
    );
    assert_eq!(sim.stats().requests, scan + (scan - 1));
    assert_eq!(sim.login_count(), 1);
}

#[tokio::test]
async fn concurrent_lookups_share_one_login_and_one_scan() {
    let (sim, mosyle) = business("").await;
    let users = live(&sim);
    let lookups = users.iter().take(16).map(|u| {
        let mosyle = mosyle.clone();
        let email = u.email.clone();
        tokio::spawn(async move { mosyle.lookup(&user(&email)).await })
    });
    for result in futures::future::join_all(lookups).await {
        found(result.unwrap().unwrap());
    }
    assert_eq!(sim.login_count(), 1);
    assert_eq!(sim.stats().requests, 1 + 120u64.div_ceil(25));
}

#[tokio::test]
async fn concurrent_scans_without_a_cache_still_log_in_once() {
    let (sim, mosyle) = manager("list_cache_s = 0").await;
    let users = live(&sim);
    let lookups = users.iter().take(8).map(|u| {
        let mosyle = mosyle.clone();
        let email = u.email.clone();
        tokio::spawn(async move { mosyle.lookup(&user(&email)).await })
    });
    for result in futures::future::join_all(lookups).await {
        found(result.unwrap().unwrap());
    }
    assert_eq!(sim.login_count(), 1);
}

#[tokio::test]
async fn an_expired_session_is_renewed_once_even_under_concurrency() {
    let (sim, mosyle) = start(
        SimConfig {
            session_ttl: Duration::from_secs(1),
            ..sim_config(Vendor::MosyleBusiness)
        },
        "list_cache_s = 0",
    )
    .await;
    let users = live(&sim);
    found(mosyle.lookup(&user(&users[0].email)).await.unwrap());
    assert_eq!(sim.login_count(), 1);
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    // The sim refuses the old session with 401 TOKEN_EXPIRED; every job sees
    // it, and only one logs in again.
    let lookups = users.iter().take(6).map(|u| {
        let mosyle = mosyle.clone();
        let email = u.email.clone();
        tokio::spawn(async move { mosyle.lookup(&user(&email)).await })
    });
    for result in futures::future::join_all(lookups).await {
        found(result.unwrap().unwrap());
    }
    assert_eq!(sim.login_count(), 2);
}

#[tokio::test]
async fn sessions_are_renewed_before_they_expire() {
    // `session_ttl_s` shortens the connector's reuse of a session: it logs in
    // again before using an old one, so Mosyle never has to refuse it.
    let (sim, mosyle) = manager("list_cache_s = 0, session_ttl_s = 1").await;
    let users = live(&sim);
    found(mosyle.lookup(&user(&users[0].email)).await.unwrap());
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    found(mosyle.lookup(&user(&users[1].email)).await.unwrap());
    assert_eq!(sim.login_count(), 2);
    assert_eq!(sim.stats().unauthorized, 0);
}

#[tokio::test]
async fn a_wrong_password_is_an_auth_error_that_does_not_echo_secrets() {
    for vendor in [Vendor::MosyleBusiness, Vendor::MosyleManager] {
        let sim = rolecall_sim::spawn(sim_config(vendor)).await.unwrap();
        let product = if vendor == Vendor::MosyleManager {
            "manager"
        } else {
            "business"
        };
        let mosyle = build(
            &sim.base_url(),
            &format!(r#"product = "{product}""#),
            &credential(TOKEN, "wrong-hunter3"),
        )
        .await
        .unwrap();
        let err = mosyle.lookup(&user("a@example.com")).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Auth, "{vendor}: {err}");
        let text = format!("{err} {err:?}");
        assert!(!text.contains("hunter"), "{text}");
        assert!(!text.contains(TOKEN), "{text}");
        // A refused login is remembered for a while: the password is not
        // tried again by every job (it could lock the admin out).
        let again = mosyle.lookup(&user("a@example.com")).await.unwrap_err();
        assert_eq!(again.class(), ErrorClass::Auth);
        assert_eq!(sim.stats().unauthorized, 1, "{vendor}");
    }
}

#[tokio::test]
async fn a_wrong_access_token_is_an_auth_error() {
    for vendor in [Vendor::MosyleBusiness, Vendor::MosyleManager] {
        let sim = rolecall_sim::spawn(sim_config(vendor)).await.unwrap();
        let product = if vendor == Vendor::MosyleManager {
            "manager"
        } else {
            "business"
        };
        let mosyle = build(
            &sim.base_url(),
            &format!(r#"product = "{product}""#),
            &credential("not-the-token", PASSWORD),
        )
        .await
        .unwrap();
        let err = mosyle.lookup(&user("a@example.com")).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Auth, "{vendor}: {err}");
        assert!(!err.to_string().contains("not-the-token"));
    }
}

#[tokio::test]
async fn a_throttled_listing_waits_for_the_vendor_and_then_answers() {
    let (sim, mosyle) = start(
        SimConfig {
            rate: Some(RateLimit {
                per_second: 0.5,
                burst: 1,
            }),
            ..sim_config(Vendor::MosyleBusiness)
        },
        "",
    )
    .await;
    // The login takes the only token; the first list page is throttled.
    // The listing runs for every job of the app, not for one delivery: it
    // waits what the vendor asks and sends the page again.
    let started = std::time::Instant::now();
    let answer = mosyle.lookup(&user("a@example.com")).await;
    assert!(answer.is_ok(), "{answer:?}");
    assert!(sim.stats().throttled >= 1, "{:?}", sim.stats());
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
}

#[tokio::test]
async fn vendor_failures_are_transient() {
    let (sim, mosyle) = manager("").await;
    sim.inject(Fault {
        status: 502,
        retry_after: None,
        count: 1,
    });
    let err = mosyle.lookup(&user("a@example.com")).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
}

#[tokio::test]
async fn a_malformed_credential_names_the_key_never_the_value() {
    let sim = rolecall_sim::spawn(sim_config(Vendor::MosyleBusiness))
        .await
        .unwrap();
    for bad in [
        r#"{"access_token":"hunter2-token"}"#.to_string(),
        "hunter2-token".to_string(),
        serde_json::json!({"access_token": "hunter2\ntoken", "email": EMAIL, "password": "p"})
            .to_string(),
    ] {
        let err = match build(&sim.base_url(), "", &bad).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("built with a malformed credential"),
        };
        assert!(err.starts_with("saas.mosyle.credential"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}

#[tokio::test]
async fn unknown_or_invalid_options_are_refused_by_key() {
    let base = "https://businessapi.mosyle.com";
    let cred = credential(TOKEN, PASSWORD);
    for (options, key) in [
        (r#"prodcut = "manager""#, "saas.mosyle.options.prodcut"),
        (r#"product = "school""#, "saas.mosyle.options.product"),
        ("list_cache_s = -1", "saas.mosyle.options.list_cache_s"),
        ("session_ttl_s = 0", "saas.mosyle.options.session_ttl_s"),
    ] {
        let err = match build(base, options, &cred).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("built with {options}"),
        };
        assert!(err.starts_with(key), "{options}: {err}");
    }
}

#[tokio::test]
async fn the_base_url_may_carry_the_api_version() {
    let sim = rolecall_sim::spawn(sim_config(Vendor::MosyleBusiness))
        .await
        .unwrap();
    let base = format!("{}/v1/", sim.base_url());
    let mosyle = build(&base, "", &credential(TOKEN, PASSWORD))
        .await
        .unwrap();
    let someone = live(&sim)[0].clone();
    found(mosyle.lookup(&user(&someone.email)).await.unwrap());
}

#[tokio::test]
async fn business_creates_and_updates_users() {
    let (_sim, mosyle) = business("").await;
    let email = "new.person@example.com";
    let attributes = BTreeMap::from([
        ("user_id".to_string(), "new.person".to_string()),
        ("name".to_string(), "New Person".to_string()),
        ("type".to_string(), "GROUP_ADMIN".to_string()),
    ]);
    // Warm the listing: the write must make the next lookup see the change.
    assert_eq!(mosyle.lookup(&user(email)).await.unwrap(), Lookup::NotFound);
    let done = mosyle
        .act(Action::CreateUser, &user(email), &attributes)
        .await
        .unwrap();
    assert_eq!(done.detail, "created");
    let iduser = done.vendor_id.expect("Mosyle reports the new iduser");
    let got = found(mosyle.lookup(&user(email)).await.unwrap());
    assert_eq!(
        (got.vendor_id.as_str(), got.raw_role.as_str()),
        (iduser.as_str(), "GROUP_ADMIN")
    );

    let change = BTreeMap::from([
        ("user_id".to_string(), "new.person".to_string()),
        ("type".to_string(), "ADMIN".to_string()),
    ]);
    let done = mosyle
        .act(Action::UpdateUser, &user(email), &change)
        .await
        .unwrap();
    assert_eq!(done.detail, "updated");
    assert_eq!(done.vendor_id.as_deref(), Some(iduser.as_str()));
    assert_eq!(
        found(mosyle.lookup(&user(email)).await.unwrap()).raw_role,
        "ADMIN"
    );
}

#[tokio::test]
async fn errors_inside_an_ok_answer_are_permanent() {
    let (_sim, mosyle) = business("").await;
    // No name: Mosyle answers HTTP 200 with MISSING_DATA inside.
    let err = mosyle
        .act(Action::CreateUser, &user("x@example.com"), &BTreeMap::new())
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent, "{err}");
    assert!(err.to_string().contains("MISSING_DATA"), "{err}");
    let bad_type = BTreeMap::from([
        ("name".to_string(), "X".to_string()),
        ("type".to_string(), "OVERLORD".to_string()),
    ]);
    let err = mosyle
        .act(Action::CreateUser, &user("x@example.com"), &bad_type)
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent, "{err}");
    assert!(err.to_string().contains("INVALID_DATA"), "{err}");
}

#[tokio::test]
async fn other_actions_are_unsupported() {
    let (_sim, mosyle) = business("").await;
    let err = mosyle
        .act(
            Action::DeactivateUser,
            &user("x@example.com"),
            &BTreeMap::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(err.to_string().contains("deactivate_user"), "{err}");
}
