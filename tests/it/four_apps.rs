//! One inventory, four SaaS apps behind four different connectors (Mosyle
//! Business, Lever, Miro SCIM and the Zoom preset): every user gets the role
//! and seat price their vendor reports.

use std::collections::HashMap;
use std::time::Duration;

use rolecall_common::config;
use rolecall_common::credentials::Vault;
use rolecall_sim::{RateLimit, SimConfig, SimHandle, SimUser, Vendor};
use rolecall_tests::{TestEnv, publish};

const KEY: &str = "four-apps-key";

async fn sim(vendor: Vendor) -> SimHandle {
    rolecall_sim::spawn(SimConfig {
        vendor,
        users: 60,
        seed: 9,
        api_key: KEY.into(),
        page_size: 25,
        rate: Some(RateLimit {
            per_second: 200.0,
            burst: 20,
        }),
        ..SimConfig::default()
    })
    .await
    .expect("the sim starts")
}

/// What the vendor reports for a user: `None` = not found, else (raw role, active).
fn expected(vendor: Vendor, user: &SimUser) -> Option<(String, bool)> {
    let active = user.deactivated_at.is_none();
    match vendor {
        // Removed Mosyle users (`is_removed`) are found and inactive, like
        // every other vendor's deactivated users.
        Vendor::Lever | Vendor::MosyleBusiness => Some((user.access_role.clone(), active)),
        Vendor::MiroScim => Some((user.extra["userType"].as_str().unwrap().to_string(), active)),
        Vendor::Zoom => Some((
            user.extra["type"].to_string(),
            user.extra["status"].as_str() == Some("active"),
        )),
        other => unreachable!("{other:?} is not in this test"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_user_of_four_apps_gets_their_role_and_seat_price() {
    let env = TestEnv::new().await;
    let mosyle = sim(Vendor::MosyleBusiness).await;
    let lever = sim(Vendor::Lever).await;
    let miro = sim(Vendor::MiroScim).await;
    let zoom = sim(Vendor::Zoom).await;
    let apps = format!(
        r#"
[saas.mosyle]
connector = "mosyle"
base_url = "{mosyle}"
credential = "mosyle"
deactivate_missing = true
rate = {{ per_second = 100, burst = 5 }}
options = {{ product = "business" }}
roles = {{ ENDUSER = {{ role = "user", seat_price = 4.0 }}, GROUP_ADMIN = {{ role = "admin", seat_price = 8.0 }}, ADMIN = {{ role = "admin", seat_price = 8.0 }} }}

[saas.lever]
connector = "lever"
base_url = "{lever}"
credential = "lever"
deactivate_missing = true
rate = {{ per_second = 100, burst = 5 }}
roles = {{ "super admin" = {{ role = "admin", seat_price = 45.0 }}, admin = {{ role = "admin", seat_price = 45.0 }}, "team member" = {{ role = "member", seat_price = 30.0 }}, "limited team member" = {{ role = "member", seat_price = 15.0 }}, interviewer = {{ role = "viewer", seat_price = 0.0 }} }}

[saas.miro]
connector = "scim"
base_url = "{miro}/api/v1/scim"
credential = "miro"
deactivate_missing = true
rate = {{ per_second = 100, burst = 5 }}
options = {{ preset = "miro" }}
roles = {{ Full = {{ role = "full", seat_price = 10.0 }}, Free = {{ role = "free", seat_price = 0.0 }}, "Free Restricted" = {{ role = "free", seat_price = 0.0 }}, Occasional = {{ role = "occasional", seat_price = 5.0 }} }}

[saas.zoom]
connector = "http"
base_url = "{zoom}"
credential = "zoom"
deactivate_missing = true
rate = {{ per_second = 100, burst = 5 }}
options = {{ preset = "zoom-users" }}
roles = {{ "1" = {{ role = "basic", seat_price = 0.0 }}, "2" = {{ role = "licensed", seat_price = 15.99 }}, "4" = {{ role = "unassigned", seat_price = 0.0 }} }}
"#,
        mosyle = mosyle.base_url(),
        lever = lever.base_url(),
        miro = miro.base_url(),
        zoom = zoom.base_url(),
    );
    let settings = config::from_toml(&env.config_text(&[], &apps)).expect("valid configuration");
    let mut secrets = HashMap::new();
    let lookup = Vault::with_env(settings.credentials.clone(), HashMap::new());
    for name in ["lever", "miro", "zoom"] {
        secrets.insert(lookup.env_var(name), KEY.to_string());
    }
    secrets.insert(
        lookup.env_var("mosyle"),
        serde_json::json!({"access_token": KEY, "email": "admin@example.com", "password": "sim-password"}).to_string(),
    );
    let vault = Vault::with_env(settings.credentials.clone(), secrets);

    let mut csv = String::from("saas,user_id,email,status\n");
    let mut expectations = Vec::new();
    for (saas, sim, vendor) in [
        ("mosyle", &mosyle, Vendor::MosyleBusiness),
        ("lever", &lever, Vendor::Lever),
        ("miro", &miro, Vendor::MiroScim),
        ("zoom", &zoom, Vendor::Zoom),
    ] {
        for (i, user) in sim.population().users.iter().take(45).enumerate() {
            let user_id = format!("{saas}-{i}");
            csv.push_str(&format!("{saas},{user_id},{},active\n", user.email));
            expectations.push((saas, user_id, expected(vendor, user)));
        }
        for i in 0..3 {
            let user_id = format!("{saas}-gone{i}");
            csv.push_str(&format!("{saas},{user_id},gone.{i}@example.com,active\n"));
            expectations.push((saas, user_id, None));
        }
    }

    let worker = rolecall_worker::Worker::build(settings.clone(), &vault)
        .await
        .expect("every connector builds");
    let stop = tokio_util::sync::CancellationToken::new();
    let token = stop.clone();
    let running = tokio::spawn(async move {
        worker.run_until_stopped(token).await.unwrap();
        worker
    });
    let report = publish(&settings, &csv).await;
    assert_eq!(report.published, 4 * 48);
    let counters = env
        .wait_for_run(&settings, &report.run_id, Duration::from_secs(90))
        .await;
    stop.cancel();
    let _worker = running.await.unwrap();
    assert_eq!(counters.failed, 0, "{counters:?}");
    assert_eq!(counters.outcomes(), 4 * 48);

    let results = env.results().await;
    assert_eq!(results.len(), 4 * 48);
    for (saas, user_id, expect) in &expectations {
        let r = &results[&(saas.to_string(), user_id.clone())];
        match expect {
            None => assert_eq!(r["status"], "not_found", "{saas} {user_id}: {r:?}"),
            Some((role, active)) => {
                assert_eq!(&r["role"], role, "{saas} {user_id}: {r:?}");
                assert_eq!(
                    r["status"],
                    if *active { "found" } else { "inactive" },
                    "{saas} {user_id}"
                );
                let (mapping, known) = settings.saas[*saas].map_role(role);
                assert!(known, "{saas} role {role} is in the role map");
                assert_eq!(r["normalized_role"], mapping.role);
                assert_eq!(r["seat_price"].parse::<f64>().unwrap(), mapping.seat_price);
            }
        }
    }
    // Mosyle: one session and one listing served every lookup.
    assert_eq!(mosyle.login_count(), 1);
    let tallies = env
        .ledger(&settings)
        .role_tallies(&report.run_id)
        .await
        .unwrap();
    for saas in ["mosyle", "lever", "miro", "zoom"] {
        assert!(
            tallies.iter().any(|t| t.saas == saas),
            "{saas} has seats in the summary"
        );
    }
    env.cleanup(&settings).await;
}
