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

// ---------------------------------------------------------------------------
// Errors from reading the file never quote a secret.
// ---------------------------------------------------------------------------

#[test]
fn a_toml_syntax_error_masks_the_url_password_but_shows_line_key_and_mistake() {
    let text = "[amqp]\nprefetch = 3\nurl = \"amqp://guest:hunter2pw@127.0.0.1:5672/%2f\n";
    let err = from_toml(text).unwrap_err().to_string();
    assert!(!err.contains("hunter2pw"), "{err}");
    // The caret still points past the end of the (shorter) line.
    assert_eq!(
        err,
        "cannot read configuration: TOML parse error at line 3, column 49\n  \
         |\n\
         3 | url = \"amqp://guest:***@127.0.0.1:5672/%2f\n  \
         |                                           ^\n\
         invalid basic string, expected `\"`"
    );
}

#[test]
fn a_toml_syntax_error_hides_an_unclosed_credential_value() {
    let text = "[saas.a]\nconnector = \"lever\"\ncredential = \"sk-live-abc123def456\n";
    let err = from_toml(text).unwrap_err().to_string();
    assert!(!err.contains("sk-live"), "{err}");
    assert!(err.contains("at line 3, column 35"), "{err}");
    assert!(err.contains("3 | credential = \"***\n"), "{err}");
    assert!(err.contains("invalid basic string"), "{err}");
}

#[test]
fn a_toml_syntax_error_on_an_unquoted_url_masks_its_password() {
    let text = "[amqp]\nurl = amqp://guest:hunter6pw@127.0.0.1:5672/%2f\n";
    let err = from_toml(text).unwrap_err().to_string();
    assert!(!err.contains("hunter6pw"), "{err}");
    assert!(
        err.contains("2 | url = amqp://guest:***@127.0.0.1:5672/%2f\n"),
        "{err}"
    );
    assert!(err.contains("string values must be quoted"), "{err}");
}

#[test]
fn a_toml_syntax_error_hides_inline_secret_keys_comments_and_lines_of_unknown_context() {
    let inline = "[saas.a]\noptions = { api_key = \"sk-1\", page = 5, token = 'tok-2\n";
    let err = from_toml(inline).unwrap_err().to_string();
    assert!(!err.contains("sk-1") && !err.contains("tok-2"), "{err}");
    assert!(
        err.contains("options = { api_key = \"***\", page = 5, token = '***\n"),
        "{err}"
    );

    // A continuation line of an array does not say whose values it holds.
    let array = "[amqp]\nurls = [\n  \"amqp://h1\",\n  \"plain-secret\" 3\n]\n";
    let err = from_toml(array).unwrap_err().to_string();
    assert!(!err.contains("plain-secret"), "{err}");
    assert!(err.contains("4 |   \"***\" ***\n"), "{err}");

    // Nor does a line inside a multi-line string.
    let multi = "[saas.a]\nconnector = \"lever\"\nnote = \"\"\"\nhunter3\\q\n\"\"\"\n";
    let err = from_toml(multi).unwrap_err().to_string();
    assert!(!err.contains("hunter3"), "{err}");
    assert!(err.contains("4 | ***\n"), "{err}");

    // A known, harmless key's values stay visible; a comment does not.
    let comment = "[saas.a]\nconnector = \"lever\" x # was hunter4\n";
    let err = from_toml(comment).unwrap_err().to_string();
    assert!(!err.contains("hunter4"), "{err}");
    assert!(err.contains("2 | connector = \"lever\" x # ***\n"), "{err}");
}

#[test]
fn a_toml_syntax_error_in_a_table_header_still_shows_the_header() {
    let err = from_toml("[saas.a\nconnector = \"lever\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 | [saas.a\n"), "{err}");
    assert!(err.contains("unclosed table"), "{err}");
}

#[test]
fn a_type_error_masks_the_url_password_but_names_key_and_mistake() {
    let text = "[amqp]\nurls = \"amqp://guest:hunter5pw@127.0.0.1:5672/%2f\"\n";
    let err = from_toml(text).unwrap_err().to_string();
    assert_eq!(
        err,
        "cannot read configuration: invalid type: string \
         \"amqp://guest:***@127.0.0.1:5672/%2f\", expected a sequence for key `amqp.urls`"
    );
}

#[test]
fn a_type_error_under_a_secret_key_hides_the_value_whole() {
    let err = config::ConfigError::At {
        error: Box::new(config::ConfigError::Message(
            "invalid value: string \"sk-live-9\\\"x\", expected a name".into(),
        )),
        origin: None,
        key: Some("notifier.channels.ops.password_credential".into()),
    };
    assert_eq!(
        ConfigError::from(err).to_string(),
        "cannot read configuration: invalid value: string \"***\", expected a name \
         for key `notifier.channels.ops.password_credential`"
    );
}

#[test]
fn errors_from_a_file_name_the_file_and_hide_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rolecall.toml");
    std::fs::write(&path, "[redis]\nurl = \"redis://:hunter7pw@cache:6379/0\n").unwrap();
    let err = load_with_env(Some(&path), Some(HashMap::new()))
        .unwrap_err()
        .to_string();
    assert!(!err.contains("hunter7pw"), "{err}");
    assert!(err.contains("line 2"), "{err}");
    assert!(err.contains("url = \"redis://:***@cache:6379/0"), "{err}");
    // The `config` crate names the file by a relative path.
    assert!(
        err.contains("\nin ") && err.ends_with("rolecall.toml"),
        "{err}"
    );

    let env = HashMap::from([(
        "ROLECALL__REDIS__CLUSTER".to_string(),
        "redis://:hunter8pw@cache".to_string(),
    )]);
    let err = load_with_env(None, Some(env)).unwrap_err().to_string();
    assert!(!err.contains("hunter8pw"), "{err}");
    assert!(err.contains("redis.cluster"), "{err}");
}

#[test]
fn url_passwords_are_masked_inside_any_text() {
    let mask = |t: &str| redact::mask_userinfo(t, true);
    // Cluster seeds: each URL's password, and a password holding `@` or `/`.
    assert_eq!(
        mask("redis://:p1@h1,redis://u:p@2/x@h2"),
        "redis://:***@h1,redis://u:***@h2"
    );
    // No password, nothing to hide; the form of `redact_url`.
    assert_eq!(mask("https://api.lever.co/v1"), "https://api.lever.co/v1");
    assert_eq!(mask("amqp://guest@h"), "amqp://guest@h");
    // In running text a URL ends at a quote or a space.
    assert_eq!(
        redact::mask_userinfo("`amqp://a:b@h` and ops@example.com", false),
        "`amqp://a:***@h` and ops@example.com"
    );
}
