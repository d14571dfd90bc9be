//! What every vendor shares: the gate's injected faults and failing emails,
//! answered in each vendor's own error shape.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{KEY, answer, header, start};
use rolecall_sim::{Fault, SimConfig, SimHandle, Vendor};
use serde_json::{Value, json};

/// A lookup of `email` the way a connector for `vendor` would send it
/// (Mosyle's list call stands in, as it has no lookup by email).
fn lookup(sim: &SimHandle, vendor: Vendor, email: &str, login: &str) -> reqwest::RequestBuilder {
    let client = reqwest::Client::new();
    let base = sim.base_url();
    let filter = format!("userName eq \"{email}\"");
    match vendor {
        Vendor::Lever => client
            .get(format!("{base}/v1/users"))
            .basic_auth(KEY, None::<&str>)
            .query(&[("email", email)]),
        Vendor::MosyleBusiness => client
            .post(format!("{base}/v1/login"))
            .header("accessToken", KEY)
            .json(&json!({"email": "admin@example.com", "password": "sim-password"})),
        Vendor::MosyleManager => client.post(format!("{base}/v2/login")).json(
            &json!({"accessToken": KEY, "email": "admin@example.com", "password": "sim-password"}),
        ),
        Vendor::MiroScim => client
            .get(format!("{base}/api/v1/scim/Users"))
            .bearer_auth(KEY)
            .query(&[("filter", filter.as_str())]),
        Vendor::Scim => client
            .get(format!("{base}/scim/v2/Users"))
            .bearer_auth(KEY)
            .query(&[("filter", filter.as_str())]),
        Vendor::Okta => client
            .get(format!("{base}/api/v1/users"))
            .header("Authorization", format!("SSWS {KEY}"))
            .query(&[("search", format!("profile.email eq \"{email}\""))]),
        Vendor::Github => client
            .get(format!("{base}/orgs/acme/memberships/{login}"))
            .bearer_auth(KEY),
        Vendor::Zoom => client
            .get(format!("{base}/v2/users/{email}"))
            .bearer_auth(KEY),
    }
}

/// The key that marks each vendor's error body.
fn error_marker(vendor: Vendor, body: &Value) -> bool {
    match vendor {
        Vendor::Lever => body["code"].is_string() && body["message"].is_string(),
        Vendor::MosyleBusiness | Vendor::MosyleManager => {
            body["status"].is_u64() && body["message"].is_string()
        }
        Vendor::MiroScim | Vendor::Scim => {
            body["schemas"] == json!(["urn:ietf:params:scim:api:messages:2.0:Error"])
                && body["status"].is_string()
        }
        Vendor::Okta => body["errorCode"].is_string() && body["errorSummary"].is_string(),
        Vendor::Github => body["message"].is_string() && body["documentation_url"].is_string(),
        Vendor::Zoom => body["code"].is_u64() && body["message"].is_string(),
    }
}

#[tokio::test]
async fn injected_faults_come_in_each_vendors_shape() {
    for vendor in Vendor::ALL {
        let sim = start(SimConfig {
            vendor,
            users: 20,
            deactivated_ratio: 0.0,
            ..SimConfig::default()
        })
        .await;
        let user = sim.population().users[0].clone();
        sim.inject(Fault {
            status: 503,
            retry_after: Some(Duration::from_secs(3)),
            count: 1,
        });
        sim.inject(Fault {
            status: 429,
            retry_after: None,
            count: 1,
        });
        let (status, headers, body) =
            answer(lookup(&sim, vendor, &user.email, &user.github_login)).await;
        assert_eq!(status, 503, "{vendor}");
        assert_eq!(header(&headers, "retry-after"), Some("3"), "{vendor}");
        assert!(error_marker(vendor, &body), "{vendor}: {body}");

        let (status, _, body) = answer(lookup(&sim, vendor, &user.email, &user.github_login)).await;
        assert_eq!(status, 429, "{vendor}");
        assert!(error_marker(vendor, &body), "{vendor}: {body}");

        let (status, _, body) = answer(lookup(&sim, vendor, &user.email, &user.github_login)).await;
        assert_eq!(status, 200, "{vendor}: {body}");
        let stats = sim.stats();
        assert_eq!((stats.requests, stats.throttled), (3, 1), "{vendor}");
        assert_eq!(sim.requests().len(), 3, "{vendor}");
    }
}

#[tokio::test]
async fn failing_emails_answer_500_in_each_vendors_shape() {
    for vendor in [
        Vendor::Lever,
        Vendor::MiroScim,
        Vendor::Scim,
        Vendor::Okta,
        Vendor::Github,
        Vendor::Zoom,
    ] {
        let population =
            rolecall_sim::generate_vendor_population(vendor, 20, 1, "example.com", 0.0);
        let user = population.users[4].clone();
        let sim = start(SimConfig {
            vendor,
            users: 20,
            deactivated_ratio: 0.0,
            fail_emails: HashSet::from([user.email.to_uppercase()]),
            ..SimConfig::default()
        })
        .await;
        let (status, _, body) = answer(lookup(&sim, vendor, &user.email, &user.github_login)).await;
        assert_eq!(status, 500, "{vendor}: {body}");
        assert!(error_marker(vendor, &body), "{vendor}: {body}");
    }
}

#[tokio::test]
async fn throttled_answers_carry_retry_after_as_each_vendor_documents() {
    for vendor in Vendor::ALL {
        for setting in [None, Some(true), Some(false)] {
            let sim = start(SimConfig {
                vendor,
                users: 5,
                rate: common::tight_rate(),
                retry_after: setting,
                ..SimConfig::default()
            })
            .await;
            let user = sim.population().users[0].clone();
            for _ in 0..2 {
                answer(lookup(&sim, vendor, &user.email, &user.github_login)).await;
            }
            let (status, headers, body) =
                answer(lookup(&sim, vendor, &user.email, &user.github_login)).await;
            assert_eq!(status, 429, "{vendor}: {body}");
            assert!(error_marker(vendor, &body), "{vendor}: {body}");
            let expected = setting.unwrap_or(vendor.sends_retry_after());
            let sent = header(&headers, "retry-after");
            assert_eq!(sent.is_some(), expected, "{vendor} {setting:?}");
            if expected {
                assert_eq!(sent, Some("2"), "{vendor}");
            }
        }
    }
}
