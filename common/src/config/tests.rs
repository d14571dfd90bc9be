//! Loading and validation: defaults, environment overrides, every problem
//! reported with its key.

use super::*;

const GOOD: &str = r#"
    [saas.lever_prod]
    connector = "lever"
    base_url = "https://api.lever.co"
    credential = "lever-prod"
    deactivate_missing = true
    rate = { per_second = 10, burst = 20 }
    roles = { "Super Admin" = { role = "admin", seat_price = 45.0 } }
"#;

fn keys(err: ConfigError) -> Vec<String> {
    err.problems().iter().map(|p| p.key.clone()).collect()
}

#[test]
fn a_good_file_validates_into_typed_values() {
    let s = from_toml(GOOD).expect("valid");
    let lever = &s.saas["lever_prod"];
    assert_eq!(lever.connector, ConnectorKind::Lever);
    assert_eq!(lever.rate.burst.get(), 20);
    assert_eq!(lever.criteria, Criteria::default_active());
    let (m, known) = lever.map_role("super admin");
    assert!(known);
    assert_eq!(m.seat_price, 45.0);
    let (m, known) = lever.map_role("custom role");
    assert!(!known);
    assert_eq!(m.role, "unknown");
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let text = r#"
        [amqp]
        prefetch = 0
        [saas.a]
        connector = "levr"
        base_url = "https://x"
        credential = "a"
        rate = { per_second = 0 }
        [saas.b]
        connector = "lever"
        base_url = "https://x"
        rate = { per_second = 5 }
    "#;
    let err = from_toml(text).unwrap_err();
    let keys = keys(err);
    assert!(keys.contains(&"amqp.prefetch".to_string()), "{keys:?}");
    assert!(keys.contains(&"saas.a.connector".to_string()), "{keys:?}");
    assert!(
        keys.contains(&"saas.a.rate.per_second".to_string()),
        "{keys:?}"
    );
    assert!(keys.contains(&"saas.b.credential".to_string()), "{keys:?}");
}

#[test]
fn unknown_keys_are_rejected_by_name() {
    let text = format!("{GOOD}\nratee = 3\n");
    let err = from_toml(&text).unwrap_err().to_string();
    assert!(err.contains("ratee"), "{err}");
}

#[test]
fn unknown_keys_are_reported_with_every_other_problem_at_once() {
    let text = r#"
        [worker]
        attempt_timout_ms = 5
        [saas.a]
        connector = "lever"
        base_url = "https://api.lever.co"
        credential = "a"
        rate = { requests = 0, per = "1s", burts = 3 }
        critera = ["status == active"]
    "#;
    let keys = keys(from_toml(text).unwrap_err());
    for k in [
        "worker.attempt_timout_ms",
        "saas.a.rate.burts",
        "saas.a.critera",
        "saas.a.rate.requests",
    ] {
        assert!(keys.contains(&k.to_string()), "{k} missing from {keys:?}");
    }
}

#[test]
fn environment_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rolecall.toml");
    std::fs::write(&path, GOOD).unwrap();
    let env = HashMap::from([
        (
            "ROLECALL__SAAS__LEVER_PROD__RATE__PER_SECOND".to_string(),
            "3.5".to_string(),
        ),
        ("ROLECALL__NAMESPACE".to_string(), "t1".to_string()),
        (
            "ROLECALL__WORKER__SAAS".to_string(),
            "lever_prod".to_string(),
        ),
    ]);
    let s = load_with_env(Some(&path), Some(env)).expect("valid");
    assert_eq!(s.namespace, "t1");
    assert_eq!(s.saas["lever_prod"].rate.per_second, 3.5);
    assert_eq!(s.worker.saas, vec!["lever_prod".to_string()]);
}

#[test]
fn delay_lists_from_the_environment_take_one_value_or_several() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rolecall.toml");
    std::fs::write(&path, GOOD).unwrap();
    let env = HashMap::from([
        (
            "ROLECALL__WORKER__RETRY_DELAYS_S".to_string(),
            "30".to_string(),
        ),
        (
            "ROLECALL__WORKER__DEFER_DELAYS_S".to_string(),
            "1,4,9".to_string(),
        ),
    ]);
    let s = load_with_env(Some(&path), Some(env)).expect("valid");
    assert_eq!(s.worker.retry_delays, vec![Duration::from_secs(30)]);
    assert_eq!(
        s.worker.defer_delays,
        [1, 4, 9].map(Duration::from_secs).to_vec()
    );
    let env = HashMap::from([(
        "ROLECALL__WORKER__RETRY_DELAYS_S".to_string(),
        "soon".to_string(),
    )]);
    let err = load_with_env(Some(&path), Some(env))
        .unwrap_err()
        .to_string();
    assert!(err.contains("worker.retry_delays_s"), "{err}");
}

#[test]
fn a_zero_rate_from_the_environment_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rolecall.toml");
    std::fs::write(&path, GOOD).unwrap();
    let env = HashMap::from([(
        "ROLECALL__SAAS__LEVER_PROD__RATE__PER_SECOND".to_string(),
        "0".to_string(),
    )]);
    let err = load_with_env(Some(&path), Some(env)).unwrap_err();
    assert_eq!(
        keys(err),
        vec!["saas.lever_prod.rate.per_second".to_string()]
    );
}

#[test]
fn url_problems_never_echo_the_url() {
    let text = format!("{GOOD}\n[redis]\nurl = \"http://user:hunter2@host\"\n");
    let err = from_toml(&text).unwrap_err().to_string();
    assert!(err.contains("redis.url"));
    assert!(!err.contains("hunter2"));
}

#[test]
fn workflows_validate_and_bad_rules_name_their_key_and_text() {
    let text = format!(
        r#"{GOOD}
        [workflow.nightly]
        schedule = "0 2 * * *"
        timezone = "Europe/Berlin"
        apps = ["lever_prod"]
        inventory = "/data/users.csv"
        overlap = "queue"
        criteria = {{ any = ["status == active", "last_login newer_than 30d"] }}
        [workflow.weekly]
        schedule = "weekly"
        apps = ["lever_prod"]
        inventory = "/data/users.csv"
        "#
    );
    let s = from_toml(&text).expect("valid");
    let w = &s.workflows["nightly"];
    assert_eq!(w.overlap, Overlap::Queue);
    assert_eq!(w.schedule.timezone(), chrono_tz::Europe::Berlin);
    assert_eq!(w.criteria.as_ref().unwrap().rules().len(), 2);
    assert_eq!(s.workflows["weekly"].overlap, Overlap::Skip);

    let text = format!(
        r#"{GOOD}
        [workflow.bad]
        schedule = "0 25 * * *"
        timezone = "Mars/Olympus"
        apps = ["nope"]
        overlap = "later"
        criteria = ["status == active", {{ all = ["last_login older_than ninety"] }}]
        "#
    );
    let err = from_toml(&text).unwrap_err();
    let text = err.to_string();
    let keys = keys(err);
    for k in [
        "workflow.bad.timezone",
        "workflow.bad.apps",
        "workflow.bad.inventory",
        "workflow.bad.overlap",
        "workflow.bad.criteria[1].all[0]",
    ] {
        assert!(keys.contains(&k.to_string()), "{k} missing from {keys:?}");
    }
    assert!(text.contains("`last_login older_than ninety`"), "{text}");
}

#[test]
fn an_apps_bad_rule_names_its_key_and_text() {
    let text = GOOD.replace(
        "deactivate_missing = true",
        "deactivate_missing = true\ncriteria = [\"status = active\"]",
    );
    let err = from_toml(&text).unwrap_err();
    assert_eq!(err.problems()[0].key, "saas.lever_prod.criteria[0]");
    assert!(err.to_string().contains("`status = active`"), "{err}");
}

#[test]
fn redaction_hides_passwords() {
    assert_eq!(
        redact_url("amqp://guest:secret@host:5672/%2f"),
        "amqp://guest:***@host:5672/%2f"
    );
}
