//! Bad configuration fails at start, naming the key.

use std::process::Command;

use rolecall_common::config;
use rolecall_sim::SimConfig;
use rolecall_tests::{AppSpec, TestEnv, temp_file, workspace_binary};

fn run_binary(name: &str, config_text: &str, env: &[(&str, &str)], args: &[&str]) -> (i32, String) {
    let (_dir, path) = temp_file("rolecall.toml", config_text);
    let mut cmd = Command::new(workspace_binary(name).expect("the binary is built"));
    cmd.arg("--config").arg(&path).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/bad-config");

#[test]
fn each_bad_example_names_its_key() {
    let cases = [
        ("unknown-connector.toml", "saas.lever_prod.connector"),
        ("zero-rate.toml", "saas.lever_prod.rate.per_second"),
        ("missing-rate.toml", "saas.lever_prod.rate"),
        ("missing-credential-name.toml", "saas.lever_prod.credential"),
        ("bad-amqp-url.toml", "amqp.url"),
        ("unknown-worker-saas.toml", "worker.saas"),
    ];
    for (file, key) in cases {
        let text = std::fs::read_to_string(format!("{EXAMPLES}/{file}")).unwrap();
        let err = config::from_toml(&text).expect_err(file);
        assert!(
            err.problems().iter().any(|p| p.key == key),
            "{file}: expected a problem at {key}, got: {err}"
        );
    }
}

#[test]
fn the_worker_exits_non_zero_naming_the_key() {
    let text = std::fs::read_to_string(format!("{EXAMPLES}/zero-rate.toml")).unwrap();
    let (code, stderr) = run_binary("rolecall-worker", &text, &[], &["--check-config"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("saas.lever_prod.rate.per_second"),
        "{stderr}"
    );

    let text = std::fs::read_to_string(format!("{EXAMPLES}/unknown-connector.toml")).unwrap();
    let (code, stderr) = run_binary("rolecall-scheduler", &text, &[], &["check-config"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("saas.lever_prod.connector"), "{stderr}");
}

#[test]
fn an_environment_override_is_validated_too() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/config/rolecall.example.toml"
    ))
    .unwrap();
    let (code, stderr) = run_binary(
        "rolecall-scheduler",
        &text,
        &[("ROLECALL__SAAS__LEVER_PROD__RATE__PER_SECOND", "0")],
        &["check-config"],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("saas.lever_prod.rate.per_second"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_credential_stops_the_worker_at_start_without_printing_secrets() {
    let env = TestEnv::new().await;
    let sim = rolecall_sim::spawn(SimConfig::default()).await.unwrap();
    let text = env.config_text(
        &[AppSpec {
            name: "lever_prod",
            sim: &sim,
            per_second: 5.0,
            burst: 5,
        }],
        "",
    );
    // The credential variable is absent: the worker names the SaaS app and
    // where it looked, and exits 2.
    let (code, stderr) = run_binary(
        "rolecall-worker",
        &text,
        &[("ROLECALL_SECRET_OTHER", "hunter2")],
        &["--check-config"],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("saas.lever_prod.credential"), "{stderr}");
    assert!(stderr.contains("ROLECALL_SECRET_LEVER_PROD"), "{stderr}");
    assert!(!stderr.contains("hunter2"));

    // With the credential present the same configuration is valid.
    let (code, stderr) = run_binary(
        "rolecall-worker",
        &text,
        &[("ROLECALL_SECRET_LEVER_PROD", "hunter2")],
        &["--check-config"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("hunter2"));
    let _ = config::from_toml(&text).expect("valid");
}

#[test]
fn the_documented_example_configuration_is_valid_for_every_connector() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/config/rolecall.example.toml"
    ))
    .unwrap();
    let mosyle = r#"{"access_token":"t","email":"admin@example.com","password":"p"}"#;
    let (code, stderr) = run_binary(
        "rolecall-worker",
        &text,
        &[
            ("ROLECALL_SECRET_LEVER_PROD", "k"),
            ("ROLECALL_SECRET_MOSYLE_BUSINESS", mosyle),
            ("ROLECALL_SECRET_MIRO_SCIM_TOKEN", "k"),
            ("ROLECALL_SECRET_OKTA_API_TOKEN", "k"),
            ("ROLECALL_SECRET_ZOOM_TOKEN", "k"),
        ],
        &["--check-config"],
    );
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn bad_telemetry_settings_stop_the_scheduler_naming_each_key() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/config/rolecall.example.toml"
    ))
    .unwrap();
    let (code, stderr) = run_binary(
        "rolecall-scheduler",
        &text,
        &[
            ("ROLECALL__TELEMETRY__OTLP_PROTOCOL", "thrift"),
            ("ROLECALL__TELEMETRY__OTLP_ENDPOINT", "collector:4317"),
            ("ROLECALL__TELEMETRY__HTTP_LISTEN", "9464"),
        ],
        &["check-config"],
    );
    assert_eq!(code, 2, "{stderr}");
    for key in [
        "telemetry.otlp_protocol",
        "telemetry.otlp_endpoint",
        "telemetry.http_listen",
    ] {
        assert!(stderr.contains(key), "{key} missing from: {stderr}");
    }
}

#[tokio::test]
async fn a_worker_whose_ops_port_is_taken_stops_at_start_naming_the_key() {
    let env = TestEnv::new().await;
    let sim = rolecall_sim::spawn(SimConfig::default())
        .await
        .expect("the sim starts");
    let apps = [AppSpec {
        name: "lever",
        sim: &sim,
        per_second: 10.0,
        burst: 1,
    }];
    let text = env.config_text(&apps, "");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let (code, stderr) = run_binary(
        "rolecall-worker",
        &text,
        &[
            ("ROLECALL__TELEMETRY__HTTP_LISTEN", listen.as_str()),
            ("ROLECALL_SECRET_LEVER", rolecall_tests::SIM_KEY),
        ],
        &[],
    );
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!("telemetry.http_listen: cannot listen on {listen}")),
        "{stderr}"
    );
}
