//! The admin subcommands against a live sim, as a benchmark script runs them.

use std::process::Output;

use rolecall_sim::{RateLimit, SimConfig, StatsSnapshot, spawn};
use tokio::process::Command;

async fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rolecall-sim"))
        .args(args)
        .env("RUST_LOG", "warn")
        // Symbolising an error's backtrace takes most of a second.
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .await
        .expect("cannot run rolecall-sim")
}

#[tokio::test]
async fn stats_reset_and_set_rate_drive_a_running_sim() {
    let sim = spawn(SimConfig::default()).await.expect("sim");
    let url = sim.base_url();
    reqwest::get(format!("{url}/v1/users"))
        .await
        .expect("request failed");

    let out = run(&["stats", "--url", &url]).await;
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(
        stdout.contains("\n  \"requests\": 1,"),
        "not pretty: {stdout}"
    );
    let printed: StatsSnapshot = serde_json::from_str(&stdout).expect("stats JSON");
    assert_eq!(printed, sim.stats());

    let out = run(&["set-rate", "--url", &url, "--rate", "2.5", "--burst", "4"]).await;
    assert!(out.status.success(), "{out:?}");
    let stats = sim.stats();
    assert_eq!(stats.requests, 1, "admin calls are not counted");

    let rate: Option<RateLimit> = reqwest::get(format!("{url}/_sim/rate"))
        .await
        .expect("request failed")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        rate,
        Some(RateLimit {
            per_second: 2.5,
            burst: 4
        })
    );

    let out = run(&["set-rate", "--url", &format!("{url}/"), "--unlimited"]).await;
    assert!(out.status.success(), "{out:?}");
    let out = run(&["reset", "--url", &url]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(sim.stats(), StatsSnapshot::default());
    let rate: Option<RateLimit> = reqwest::get(format!("{url}/_sim/rate"))
        .await
        .expect("request failed")
        .json()
        .await
        .expect("JSON");
    assert_eq!(rate, None);

    // A sim that is gone is an error, not empty output.
    sim.shutdown().await;
    let out = run(&["stats", "--url", &url]).await;
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot reach the sim"), "{stderr}");
}
