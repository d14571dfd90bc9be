//! The admin subcommands against a live sim, as a benchmark script runs them.

mod common;

use std::process::Output;

use rolecall_sim::{Limit, RateLimit, SimConfig, StatsSnapshot, spawn};
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

    // Windows too, per bucket.
    let out = run(&[
        "set-rate",
        "--url",
        &url,
        "--scheme",
        "sliding-window",
        "--requests",
        "50",
        "--window",
        "1s",
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sliding window, 50 per 1s"),
        "{out:?}"
    );
    assert_eq!(
        sim.limit(),
        Some(Limit::sliding_window(50, std::time::Duration::from_secs(1)))
    );
    let out = run(&["set-rate", "--url", &url, "--bucket", "nope", "--rate", "1"]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404"),
        "{out:?}"
    );

    let out = run(&["set-rate", "--url", &format!("{url}/"), "--unlimited"]).await;
    assert!(out.status.success(), "{out:?}");
    let out = run(&["reset", "--url", &url]).await;
    assert!(out.status.success(), "{out:?}");
    let stats = sim.stats();
    assert_eq!(stats, common::cleared(&stats));
    assert_eq!(stats.buckets["default"].limit, None);
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

#[tokio::test]
async fn github_inventories_carry_logins() {
    let dir = std::env::temp_dir().join(format!("rolecall-sim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let out = dir.join("github.csv");
    let path = out.to_str().expect("UTF-8 path");
    let run_out = run(&[
        "inventory",
        "--users",
        "10",
        "--seed",
        "3",
        "--saas",
        "gh",
        "--vendor",
        "github",
        "--out",
        path,
    ])
    .await;
    assert!(run_out.status.success(), "{run_out:?}");
    let csv = std::fs::read_to_string(&out).expect("CSV");
    let _ = std::fs::remove_dir_all(&dir);
    let population = rolecall_sim::generate_vendor_population(
        rolecall_sim::Vendor::Github,
        10,
        3,
        "example.com",
        0.05,
    );
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(rows.len(), 11);
    for (row, user) in rows.iter().zip(&population.users) {
        assert!(row[2].eq_ignore_ascii_case(&user.email));
        assert_eq!(row[3], user.github_login);
    }
    assert_eq!(rows[10][3], "gone-1");
}

#[tokio::test]
async fn serve_runs_the_chosen_vendor() {
    let dir = std::env::temp_dir().join(format!("rolecall-sim-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let port_file = dir.join("port");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rolecall-sim"))
        .args(["serve", "--vendor", "zoom", "--users", "5", "--port-file"])
        .arg(&port_file)
        .env("RUST_LOG", "warn")
        .env("SIM_API_KEY", "zoom-token")
        .kill_on_drop(true)
        .spawn()
        .expect("cannot run rolecall-sim");
    let mut port = None;
    for _ in 0..100 {
        if let Ok(text) = std::fs::read_to_string(&port_file) {
            port = text.trim().parse::<u16>().ok();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let port = port.expect("the sim wrote its port");
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/v2/users/nobody@example.com");
    let response = client
        .get(&url)
        .bearer_auth("zoom-token")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 404);
    let body: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(body["code"], 1001);
    let response = client
        .get(&url)
        .bearer_auth("sim-lever-key")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 401);
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
}
