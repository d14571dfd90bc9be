//! The whole slice: inventory → scheduler → RabbitMQ → worker → vendor → Redis.

use std::collections::HashMap;
use std::time::Duration;

use rolecall_common::messages::AlertKind;
use rolecall_sim::{RateLimit, SimConfig, SimHandle};
use rolecall_tests::{AppSpec, TestEnv, publish};

const SIM_RATE: f64 = 100.0;
const SIM_BURST: u32 = 20;

async fn lever_sim(users: usize, seed: u64) -> SimHandle {
    rolecall_sim::spawn(SimConfig {
        users,
        seed,
        rate: Some(RateLimit {
            per_second: SIM_RATE,
            burst: SIM_BURST,
        }),
        ..SimConfig::default()
    })
    .await
    .expect("the sim starts")
}

/// What the test expects for one inventory row.
struct Expect {
    saas: &'static str,
    user_id: String,
    email: String,
    /// `Some((raw role, active))` when the vendor knows the user.
    vendor: Option<(String, bool)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_users_across_two_apps_get_exactly_a_thousand_results() {
    let env = TestEnv::new().await;
    let sim_a = lever_sim(560, 11).await;
    let sim_b = lever_sim(560, 22).await;
    let apps = [
        AppSpec {
            name: "lever_a",
            sim: &sim_a,
            per_second: 80.0,
            burst: 10,
        },
        AppSpec {
            name: "lever_b",
            sim: &sim_b,
            per_second: 80.0,
            burst: 10,
        },
    ];
    let settings = env.settings(&apps);

    // 500 active users per app: 450 the vendor knows (some of them
    // deactivated there), 50 it does not; plus 40 rows deactivated in the
    // inventory, which must never be published.
    let mut csv = String::from("saas,user_id,email,external_id,status,last_login,cost_center\n");
    let mut expected = Vec::new();
    for (saas, sim) in [("lever_a", &sim_a), ("lever_b", &sim_b)] {
        for (i, user) in sim.population().users.iter().take(450).enumerate() {
            // Mixed case, as inventories write them: the connector must cope.
            let email = if i % 3 == 0 {
                user.email.to_uppercase()
            } else {
                user.email.clone()
            };
            let user_id = format!("{saas}-u{i}");
            csv.push_str(&format!(
                "{saas},{user_id},{email},,active,2026-11-01,cc{}\n",
                i % 4
            ));
            expected.push(Expect {
                saas,
                user_id,
                email,
                vendor: Some((user.access_role.clone(), user.deactivated_at.is_none())),
            });
        }
        for i in 0..50 {
            let user_id = format!("{saas}-gone{i}");
            let email = format!("gone.{i}@example.com");
            csv.push_str(&format!("{saas},{user_id},{email},,active,,cc1\n"));
            expected.push(Expect {
                saas,
                user_id,
                email,
                vendor: None,
            });
        }
        for i in 0..20 {
            csv.push_str(&format!(
                "{saas},{saas}-left{i},left.{i}@example.com,,deactivated,,cc1\n"
            ));
        }
    }

    let worker = env.spawn_worker(&settings).await;
    let report = publish(&settings, &csv).await;
    assert_eq!(report.published, 1000);
    assert_eq!(report.skipped, 40, "deactivated inventory rows are skipped");
    assert_eq!(report.rejected_count, 0);
    assert_eq!(report.published_by_saas["lever_a"], 500);

    let counters = env
        .wait_for_run(&settings, &report.run_id, Duration::from_secs(90))
        .await;
    let worker = worker.stop().await;

    // Exactly one result per published user, with the vendor's role.
    let results = env.results().await;
    assert_eq!(results.len(), 1000);
    let mut expected_counts: HashMap<&str, u64> = HashMap::new();
    for e in &expected {
        let r = &results[&(e.saas.to_string(), e.user_id.clone())];
        assert_eq!(r["email"], e.email);
        assert_eq!(r["run_id"], report.run_id);
        match &e.vendor {
            Some((role, active)) => {
                assert_eq!(r["found"], "1", "{r:?}");
                assert_eq!(&r["role"], role);
                let (normalized, price) = match role.as_str() {
                    "super admin" | "admin" => ("admin", "45"),
                    "team member" => ("member", "30"),
                    "limited team member" => ("member", "15"),
                    _ => ("unknown", "10"),
                };
                assert_eq!(r["normalized_role"], normalized);
                assert_eq!(r["seat_price"], price);
                assert_eq!(
                    r["role_known"],
                    if normalized == "unknown" { "0" } else { "1" }
                );
                if *active {
                    assert_eq!(r["status"], "found");
                    assert_eq!(r["deactivated"], "0");
                    *expected_counts.entry("succeeded").or_default() += 1;
                } else {
                    assert_eq!(r["status"], "inactive");
                    assert_eq!(r["deactivated"], "1");
                    *expected_counts.entry("inactive").or_default() += 1;
                }
            }
            None => {
                assert_eq!(r["found"], "0");
                assert_eq!(r["status"], "not_found");
                assert_eq!(r["deactivated"], "1");
                *expected_counts.entry("not_found").or_default() += 1;
            }
        }
    }
    assert!(
        expected_counts["inactive"] > 0,
        "the population has users deactivated at the vendor"
    );

    // The export says each user's status: a not-found user is told from a
    // found one without a role.
    let mut out = Vec::new();
    let rows = rolecall_scheduler::results::export(
        &env.redis,
        &env.names,
        "lever_a",
        rolecall_scheduler::seats::OutputFormat::Csv,
        &mut out,
    )
    .await
    .unwrap();
    assert_eq!(rows, 500);
    let csv_out = String::from_utf8(out).unwrap();
    assert!(
        csv_out.starts_with("user_id,email,status,role,normalized_role,seat_price,checked_at\n"),
        "{csv_out}"
    );
    assert!(
        csv_out.contains("lever_a-gone0,gone.0@example.com,not_found,"),
        "{csv_out}"
    );

    // Run counters add up to the published jobs.
    assert_eq!(counters.published, 1000);
    assert_eq!(counters.succeeded, expected_counts["succeeded"]);
    assert_eq!(counters.inactive, expected_counts["inactive"]);
    assert_eq!(counters.not_found, 100);
    assert_eq!(counters.failed, 0);
    assert_eq!(counters.outcomes(), 1000);
    assert_eq!(counters.deactivated, counters.not_found + counters.inactive);

    // Every deactivated user has exactly one event.
    let events = env.events().await;
    let deactivations: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "user_deactivated")
        .collect();
    assert_eq!(deactivations.len() as u64, counters.deactivated);
    for i in 0..50 {
        assert!(
            deactivations
                .iter()
                .any(|e| e["user_id"] == format!("lever_a-gone{i}")
                    && e["reason"] == "not_found_at_vendor")
        );
    }

    // Seat tallies match the results.
    let tallies = env
        .ledger(&settings)
        .role_tallies(&report.run_id)
        .await
        .unwrap();
    let tallied: u64 = tallies.iter().map(|t| t.users).sum();
    assert_eq!(tallied, counters.succeeded);

    // The vendor was never pushed past its limit.
    for sim in [&sim_a, &sim_b] {
        let stats = sim.stats();
        assert_eq!(stats.throttled, 0, "{stats:?}");
        assert!(
            stats.peak_1s <= SIM_RATE as u64 + u64::from(SIM_BURST),
            "{stats:?}"
        );
    }
    let calls: u64 = worker.metrics().values().map(|m| m.attempts).sum();
    assert_eq!(calls, 1000, "one vendor call per user");
    // One fleet slot per HTTP request, and the vendors saw exactly those.
    let slots: u64 = worker.metrics().values().map(|m| m.requests).sum();
    let received: u64 = [&sim_a, &sim_b].iter().map(|s| s.stats().received).sum();
    assert_eq!(slots, received);

    // Found users keep an audit copy of the vendor's answer, with a TTL,
    // and their vendor role values verbatim.
    let found = expected
        .iter()
        .find(|e| e.vendor.is_some())
        .expect("a found user");
    let mut conn = env.redis.clone();
    let key = env.names.audit_key(found.saas, &found.user_id);
    let copy: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        ttl > 0 && ttl <= settings.redis.audit_ttl.as_secs() as i64,
        "{ttl}"
    );
    let doc: serde_json::Value = serde_json::from_str(&copy).unwrap();
    assert!(doc.get("accessRole").is_some(), "{copy}");
    let r = &results[&(found.saas.to_string(), found.user_id.clone())];
    let roles: Vec<String> = serde_json::from_str(&r["vendor_roles"]).unwrap();
    assert_eq!(roles, [r["role"].clone()]);

    // Admins hear that the run finished, once.
    let alerts = env
        .alerts_until(Duration::from_secs(5), |a| {
            a.iter().any(|a| a.kind == AlertKind::RunFinished)
        })
        .await;
    assert_eq!(
        alerts
            .iter()
            .filter(|a| a.kind == AlertKind::RunFinished)
            .count(),
        1,
        "{alerts:?}"
    );
    env.cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_deactivated_in_the_inventory_are_never_published() {
    let env = TestEnv::new().await;
    let sim = lever_sim(50, 3).await;
    let settings = env.settings(&[AppSpec {
        name: "lever",
        sim: &sim,
        per_second: 50.0,
        burst: 10,
    }]);
    let mut csv = String::from("saas,user_id,email,status\n");
    for (i, user) in sim.population().users.iter().take(40).enumerate() {
        let status = if i % 2 == 0 { "active" } else { "deactivated" };
        csv.push_str(&format!("lever,u{i},{},{status}\n", user.email));
    }
    let worker = env.spawn_worker(&settings).await;
    let report = publish(&settings, &csv).await;
    assert_eq!(report.published, 20);
    assert_eq!(report.skipped, 20);
    env.wait_for_run(&settings, &report.run_id, Duration::from_secs(30))
        .await;
    worker.stop().await;
    let results = env.results().await;
    assert_eq!(results.len(), 20);
    for i in (1..40).step_by(2) {
        assert!(
            !results.contains_key(&("lever".to_string(), format!("u{i}"))),
            "u{i} was deactivated"
        );
    }
    assert_eq!(
        sim.stats().requests,
        20,
        "the vendor was asked about active users only"
    );
    env.cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_deactivated_by_one_run_is_not_deactivated_again_by_the_next() {
    let env = TestEnv::new().await;
    let sim = lever_sim(10, 3).await;
    let settings = env.settings(&[AppSpec {
        name: "lever",
        sim: &sim,
        per_second: SIM_RATE,
        burst: SIM_BURST,
    }]);
    let mut csv = String::from("saas,user_id,email,status\n");
    for i in 0..3 {
        csv.push_str(&format!("lever,gone{i},gone.{i}@example.com,active\n"));
    }
    let worker = env.spawn_worker(&settings).await;
    let first = publish(&settings, &csv).await;
    let first = env
        .wait_for_run(&settings, &first.run_id, Duration::from_secs(30))
        .await;
    let second = publish(&settings, &csv).await;
    let second = env
        .wait_for_run(&settings, &second.run_id, Duration::from_secs(30))
        .await;
    worker.stop().await;
    assert_eq!(first.deactivated, 3);
    assert_eq!(second.not_found, 3, "still checked and still missing");
    assert_eq!(second.deactivated, 0, "but not deactivated again");
    let events = env.events().await;
    let deactivations = events
        .iter()
        .filter(|e| e["type"] == "user_deactivated")
        .count();
    assert_eq!(deactivations, 3, "one event per user, ever");
    env.cleanup(&settings).await;
}
