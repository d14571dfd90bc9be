//! The operator's commands, run as the real binaries: `runs`, `status`,
//! `summary --latest`, and `check-config --connect` on both binaries.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use rolecall_common::config;
use rolecall_common::credentials::Vault;
use rolecall_sim::{SimConfig, SimHandle};
use rolecall_tests::{
    AppSpec, SIM_KEY, SchedulerProcess, TestEnv, active_rows, publish, temp_file, workspace_binary,
};

/// Runs `binary --config <text> args…` with `env`; returns (exit code, stdout, stderr).
fn run(
    binary: &str,
    config_text: &str,
    env: &[(String, String)],
    args: &[&str],
) -> (i32, String, String) {
    let (_dir, path) = temp_file("rolecall.toml", config_text);
    let out = Command::new(workspace_binary(binary).expect("the binary is built"))
        .arg("--config")
        .arg(&path)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn sim(users: usize) -> SimHandle {
    rolecall_sim::spawn(SimConfig {
        users,
        seed: 5,
        ..SimConfig::default()
    })
    .await
    .expect("the sim starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_status_and_summary_latest_show_the_run_and_each_app() {
    let env = TestEnv::new().await;
    let sim = sim(30).await;
    let apps = [AppSpec {
        name: "lever",
        sim: &sim,
        per_second: 500.0,
        burst: 50,
    }];
    let (_inv_dir, inventory) = temp_file("users.csv", &active_rows(&sim, "lever", 20));
    let text = env.config_text(
        &apps,
        &format!(
            "[workflow.nightly]\nschedule = \"0 2 * * *\"\ntimezone = \"Europe/Berlin\"\napps = [\"lever\"]\ninventory = \"{}\"\n",
            inventory.display()
        ),
    );
    let settings = config::from_toml(&text).expect("valid");

    let (code, out, err) = run("rolecall-scheduler", &text, &[], &["runs"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no runs recorded"), "{out}");

    // Published, nobody consuming: in progress, 20 jobs waiting, no consumer.
    let report = publish(&settings, &active_rows(&sim, "lever", 20)).await;
    let (code, out, err) = run("rolecall-scheduler", &text, &[], &["runs"]);
    assert_eq!(code, 0, "{err}");
    let row = out
        .lines()
        .find(|l| l.contains(&report.run_id))
        .unwrap_or_else(|| panic!("no row for the run:\n{out}"));
    assert!(
        row.contains("| lever |") && row.contains("| in progress |"),
        "{row}"
    );
    assert!(row.contains("|        20 |"), "published 20: {row}");

    let (code, out, err) = run("rolecall-scheduler", &text, &[], &["status"]);
    assert_eq!(code, 0, "{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with("| lever "))
        .unwrap_or_else(|| panic!("no row for lever:\n{out}"));
    assert!(row.contains("|          20 |"), "depth 20: {row}");
    assert!(row.contains("|         0 |"), "no consumer: {row}");
    assert!(row.contains("nightly at "), "next slot: {row}");
    assert!(out.contains("leader: none"), "{out}");

    // A `serve` replica leads: `status` names its host and pid.
    let mut serve = SchedulerProcess::spawn(&text, &["serve"]);
    serve
        .wait_for_log("Became the scheduler leader", Duration::from_secs(15))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (code, out, err) = run("rolecall-scheduler", &text, &[], &["status"]);
        assert_eq!(code, 0, "{err}");
        if out.contains(" pid ") {
            eprintln!("{out}");
            assert!(
                out.contains("leader: ") && out.contains("(lease token "),
                "{out}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no leader named:\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    serve.stop();

    // A worker finishes it: `runs` says finished, `summary --latest` finds it.
    let worker = env.spawn_worker(&settings).await;
    env.wait_for_run(&settings, &report.run_id, Duration::from_secs(20))
        .await;
    let (code, out, err) = run(
        "rolecall-scheduler",
        &text,
        &[],
        &["runs", "--saas", "lever"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("| finished |"), "{out}");
    eprintln!("{out}");
    let (code, out, err) = run(
        "rolecall-scheduler",
        &text,
        &[],
        &["summary", "--latest", "--saas", "lever"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("Run {}", report.run_id)), "{out}");
    assert!(
        out.contains("| users checked            |    20 |"),
        "{out}"
    );
    let (code, _, err) = run(
        "rolecall-scheduler",
        &text,
        &[],
        &["summary", "--latest", "--saas", "zoom"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("SaaS app `zoom` is not configured"), "{err}");
    worker.stop().await;
    env.cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_connect_reports_each_backend_and_a_refused_credential_without_the_secret() {
    let env = TestEnv::new().await;
    let sim = sim(5).await;
    let apps = [
        AppSpec {
            name: "lever_ok",
            sim: &sim,
            per_second: 100.0,
            burst: 10,
        },
        AppSpec {
            name: "lever_bad",
            sim: &sim,
            per_second: 100.0,
            burst: 10,
        },
    ];
    let text = env.config_text(&apps, "");
    let settings = config::from_toml(&text).expect("valid");
    let vault = Vault::with_env(settings.credentials.clone(), HashMap::new());
    const WRONG: &str = "wrong-key-Xy7Qp2";
    let good = vec![
        (vault.env_var("lever_ok"), SIM_KEY.to_string()),
        (vault.env_var("lever_bad"), SIM_KEY.to_string()),
    ];

    // The scheduler checks the backends it uses; the subcommand and the
    // old flag are the same command.
    for args in [&["check-config", "--connect"][..], &["--check-config"][..]] {
        let (code, out, err) = run("rolecall-scheduler", &text, &[], args);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        assert!(out.contains("configuration is valid"), "{out}");
    }
    let (_, out, _) = run(
        "rolecall-scheduler",
        &text,
        &[],
        &["check-config", "--connect"],
    );
    assert!(
        out.contains("ok      RabbitMQ") && out.contains("ok      Redis"),
        "{out}"
    );

    // Worker, every credential right: all ok.
    let (code, out, err) = run(
        "rolecall-worker",
        &text,
        &good,
        &["check-config", "--connect"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok      credential of lever_ok"), "{out}");
    assert!(out.contains("ok      credential of lever_bad"), "{out}");
    let (code, _, err) = run("rolecall-worker", &text, &good, &["--check-config"]);
    assert_eq!(code, 0, "{err}");

    // One credential wrong: reported as failed, exit non-zero, secret absent.
    let bad = vec![
        (vault.env_var("lever_ok"), SIM_KEY.to_string()),
        (vault.env_var("lever_bad"), WRONG.to_string()),
    ];
    let (code, out, err) = run(
        "rolecall-worker",
        &text,
        &bad,
        &["check-config", "--connect"],
    );
    assert_ne!(code, 0, "{out}{err}");
    assert!(out.contains("ok      credential of lever_ok"), "{out}");
    assert!(out.contains("FAILED  credential of lever_bad"), "{out}");
    assert!(out.contains("401") || out.contains("refused"), "{out}");
    assert!(err.contains("1 connection check(s) failed"), "{err}");
    eprintln!("{out}{err}");
    assert!(!out.contains(WRONG) && !err.contains(WRONG), "{out}{err}");
    assert!(
        !out.contains(SIM_KEY) && !err.contains(SIM_KEY),
        "{out}{err}"
    );

    // A Redis nobody listens on: failed, named, non-zero.
    let dead = env.config_text_with_redis(&apps, "", "redis://127.0.0.1:9");
    let (code, out, _) = run(
        "rolecall-scheduler",
        &dead,
        &[],
        &["check-config", "--connect"],
    );
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("FAILED  Redis"), "{out}");
}

#[tokio::test]
async fn status_before_any_queue_exists_prints_no_error_and_names_a_workflows_failed_slot() {
    let env = TestEnv::new().await;
    let sim = sim(1).await;
    let apps = [AppSpec {
        name: "lever",
        sim: &sim,
        per_second: 10.0,
        burst: 5,
    }];
    let text = env.config_text(
        &apps,
        "[workflow.nightly]\nschedule = \"0 2 * * *\"\napps = [\"lever\"]\ninventory = \"/nonexistent/users.csv\"\n",
    );
    let settings = config::from_toml(&text).expect("valid");
    // Nothing declared the queue yet: the broker closes the channel of the
    // passive declare, which `status` expects ("no queue").
    let (code, out, err) = run("rolecall-scheduler", &text, &[], &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("| no queue "), "{out}");
    assert!(!err.contains("ERROR"), "nothing failed: {err}");
    // A filter naming an app the configuration lacks is a typo, said so.
    for args in [
        &["runs", "--saas", "levr"][..],
        &["summary", "--latest", "--saas", "levr"],
    ] {
        let (code, _, err) = run("rolecall-scheduler", &text, &[], args);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("SaaS app `levr` is not configured (configured: lever)"),
            "{err}"
        );
    }
    let (code, _, err) = run(
        "rolecall-scheduler",
        &text,
        &[],
        &["summary", "--latest", "--saas", "lever"],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("no run is recorded for SaaS app `lever`"),
        "{err}"
    );
    // What `serve` notes when a slot cannot start its run.
    let mut conn = env.redis.clone();
    let () = redis::cmd("HSET")
        .arg(env.names.workflow_key("nightly"))
        .arg("last_error")
        .arg("the run did not start: cannot read inventory /nonexistent/users.csv")
        .arg("last_error_at")
        .arg("2026-12-01T02:00:00+00:00")
        .query_async(&mut conn)
        .await
        .unwrap();
    let (code, out, err) = run("rolecall-scheduler", &text, &[], &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("workflow nightly: its last slot did not start (2026-12-01T02:00:00+00:00): the run did not start: cannot read inventory /nonexistent/users.csv"),
        "{out}"
    );
    env.cleanup(&settings).await;
}
