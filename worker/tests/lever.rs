//! The Lever connector against the simulated Lever API over real HTTP.

use std::collections::HashSet;

use rolecall_common::messages::UserRef;
use rolecall_sim::{RateLimit, SimConfig};
use rolecall_worker::connectors::{Connector, Lever, Lookup};
use rolecall_worker::error::ErrorClass;
use secrecy::SecretString;

fn user(email: &str) -> UserRef {
    UserRef {
        id: "u-1".into(),
        email: email.into(),
        external_id: None,
    }
}

async fn sim(config: SimConfig) -> (rolecall_sim::SimHandle, Lever) {
    let key = config.api_key.clone();
    let sim = rolecall_sim::spawn(config).await.unwrap();
    let lever = Lever::new(
        rolecall_worker::vendor::VendorClient::unlimited("lever"),
        sim.base_url().parse().unwrap(),
        SecretString::from(key),
    );
    (sim, lever)
}

#[tokio::test]
async fn finds_users_by_email_whatever_the_case_and_reports_their_role() {
    let (sim, lever) = sim(SimConfig::default()).await;
    let known = sim
        .population()
        .users
        .iter()
        .find(|u| u.deactivated_at.is_none())
        .unwrap()
        .clone();
    let shouted = known.email.to_uppercase();
    match lever.lookup(&user(&shouted)).await.unwrap() {
        Lookup::Found(found) => {
            assert_eq!(found.vendor_id, known.id);
            assert_eq!(found.raw_role, known.access_role);
            assert!(found.active);
            assert_eq!(found.raw["email"], known.email.as_str());
        }
        other => panic!("expected the user, got {other:?}"),
    }
}

#[tokio::test]
async fn deactivated_users_are_found_as_inactive() {
    let (sim, lever) = sim(SimConfig {
        deactivated_ratio: 0.5,
        ..SimConfig::default()
    })
    .await;
    let gone = sim
        .population()
        .users
        .iter()
        .find(|u| u.deactivated_at.is_some())
        .unwrap()
        .clone();
    match lever.lookup(&user(&gone.email)).await.unwrap() {
        Lookup::Found(found) => assert!(!found.active),
        other => panic!("expected an inactive user, got {other:?}"),
    }
}

#[tokio::test]
async fn unknown_users_are_not_found() {
    let (_sim, lever) = sim(SimConfig::default()).await;
    assert_eq!(
        lever.lookup(&user("nobody@example.com")).await.unwrap(),
        Lookup::NotFound
    );
}

#[tokio::test]
async fn a_wrong_key_is_an_auth_error_that_does_not_echo_the_key() {
    let sim = rolecall_sim::spawn(SimConfig::default()).await.unwrap();
    let lever = Lever::new(
        rolecall_worker::vendor::VendorClient::unlimited("lever"),
        sim.base_url().parse().unwrap(),
        SecretString::from("wrong-key-hunter2".to_string()),
    );
    let err = lever.lookup(&user("a@example.com")).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Auth);
    assert!(!err.to_string().contains("hunter2"));
    assert!(err.to_string().contains("UnauthorizedError"), "{err}");
}

#[tokio::test]
async fn throttling_is_classified_with_the_vendors_wait() {
    let config = SimConfig {
        rate: Some(RateLimit {
            per_second: 0.5,
            burst: 1,
        }),
        retry_after: Some(true),
        ..SimConfig::default()
    };
    let key = config.api_key.clone();
    let sim = rolecall_sim::spawn(config).await.unwrap();
    // A job that may not wait: the throttle comes back as an error.
    let lever = Lever::new(
        rolecall_worker::vendor::VendorClient::unlimited("lever")
            .with_max_hold(std::time::Duration::ZERO),
        sim.base_url().parse().unwrap(),
        SecretString::from(key),
    );
    lever.lookup(&user("a@example.com")).await.unwrap();
    let err = lever.lookup(&user("a@example.com")).await.unwrap_err();
    assert!(
        matches!(err.class(), ErrorClass::Throttled(Some(wait)) if wait.as_secs() >= 1),
        "{err:?}"
    );
}

#[tokio::test]
async fn vendor_failures_are_transient() {
    let (_sim, lever) = sim(SimConfig {
        fail_emails: HashSet::from(["boom@example.com".to_string()]),
        ..SimConfig::default()
    })
    .await;
    let err = lever.lookup(&user("boom@example.com")).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient);
}
