//! The scheduler as a service: one leader among `serve` replicas, runs that
//! survive their publisher, missed slots, and criteria on a large inventory.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use rolecall_common::config;
use rolecall_scheduler::RunOnceOptions;
use rolecall_scheduler::lease::Lease;
use rolecall_scheduler::publish::job_id;
use rolecall_tests::{RedisProcess, SchedulerProcess, TestEnv, consume_all, temp_file};

mod redrive;
mod slots;

/// A SaaS app no worker talks to in these tests: they look at what was
/// published, not at vendors.
pub(crate) const APP: &str = r#"
[saas.lever]
connector = "lever"
base_url = "http://127.0.0.1:9"
credential = "lever"
rate = { per_second = 10 }
"#;

/// A Lever sim of `users` users that never throttles.
async fn unlimited_sim(users: usize, seed: u64) -> rolecall_sim::SimHandle {
    rolecall_sim::spawn(rolecall_sim::SimConfig {
        users,
        seed,
        rate: None,
        ..Default::default()
    })
    .await
    .expect("the sim starts")
}

/// The app `lever` at `sim`, limited far above what these tests send.
fn lever_at(sim: &rolecall_sim::SimHandle) -> [rolecall_tests::AppSpec<'_>; 1] {
    [rolecall_tests::AppSpec {
        name: "lever",
        sim,
        per_second: 1_000.0,
        burst: 100,
    }]
}

fn inventory(n: usize) -> String {
    let mut csv = String::from("saas,user_id,email,status\n");
    for i in 0..n {
        csv.push_str(&format!("lever,u{i},u{i}@example.com,active\n"));
    }
    csv
}

#[tokio::test]
async fn leader_killed_mid_publish_the_survivor_takes_over_and_every_user_is_published_once() {
    const USERS: usize = 50_000;
    let env = TestEnv::new().await;
    let (_dir, path) = temp_file("users.csv", &inventory(USERS));
    let extra = format!(
        r#"{APP}
[scheduler]
lease_ms = 2000
tick_ms = 200
[workflow.nightly]
schedule = "0 2 * * *"
timezone = "Europe/Berlin"
apps = ["lever"]
inventory = "{}"
"#,
        path.display()
    );
    let text = env.config_text(&[], &extra);
    let settings = config::from_toml(&text).expect("valid");
    // The last slot fired three days ago: the leader owes one run (the
    // latest slot), not three.
    let mut conn = env.redis.clone();
    let three_days_ago = chrono::Utc::now() - chrono::TimeDelta::days(3);
    let () = redis::cmd("HSET")
        .arg(env.names.workflow_key("nightly"))
        .arg("last_slot")
        .arg(three_days_ago.timestamp())
        .query_async(&mut conn)
        .await
        .unwrap();

    let mut first = SchedulerProcess::spawn(&text, &["serve"]);
    first
        .wait_for_log("Became the scheduler leader", Duration::from_secs(15))
        .await;
    let second = SchedulerProcess::spawn(&text, &["serve"]);
    first
        .wait_for_log("Run started", Duration::from_secs(15))
        .await;
    // The replica that did not win says so, naming the leader's host.
    second
        .wait_for_log("Following: another replica leads", Duration::from_secs(10))
        .await;
    assert!(second.log().contains(" pid "), "{}", second.log());
    let runs = env.run_ids().await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run_id = runs[0].clone();
    assert!(run_id.starts_with("nightly-"), "{run_id}");

    // Kill the leader once it has confirmed a few thousand jobs.
    let (_, at_kill) = first.kill9_once_published(&env, Some(&run_id), 2_000).await;
    assert!(
        at_kill < USERS as u64,
        "the leader finished before it could be killed"
    );

    second
        .wait_for_log("Took over run", Duration::from_secs(20))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let run = loop {
        let run = env.run_hash(&run_id).await;
        if run.get("publishing_done").map(String::as_str) == Some("1") {
            break run;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run was not finished by the survivor: {run:?}\n{}",
            second.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(run["published"], USERS.to_string(), "{run:?}");
    assert_eq!(run.get("takeovers").map(String::as_str), Some("1"));
    assert!(
        second.log().contains(&format!("Took over run {run_id}")),
        "{}",
        second.log()
    );

    let messages = consume_all(&env, &env.names.jobs_queue("lever"), Duration::from_secs(2)).await;
    let ids: HashSet<String> = messages
        .iter()
        .map(|m| {
            m.properties
                .message_id()
                .as_ref()
                .expect("a message id")
                .to_string()
        })
        .collect();
    let expected: HashSet<String> = (0..USERS)
        .map(|i| job_id(&run_id, "lever", &format!("u{i}")))
        .collect();
    assert_eq!(ids.len(), USERS, "distinct jobs in the queue");
    assert!(ids == expected, "the queue holds exactly the run's users");
    // Jobs confirmed after the dead leader's last checkpoint are published
    // again with the same id (the workers' done marker absorbs them): a
    // bounded handful, never a second run.
    let repeats = messages.len() - USERS;
    assert!(repeats <= 2_000, "{repeats} jobs published twice");
    eprintln!("killed at {at_kill} confirmed; {repeats} jobs published again after the takeover");
    assert_eq!(env.run_ids().await.len(), 1, "one run for the missed slots");
    drop(second);
    env.cleanup(&settings).await;
}

#[tokio::test]
async fn criteria_select_exactly_the_expected_users_of_ten_thousand() {
    const USERS: usize = 10_000;
    let env = TestEnv::new().await;
    let departments = ["sales", "eng", "customer success", "it"];
    let statuses = ["active", "suspended", "deactivated"];
    let now = chrono::Utc::now();
    let mut csv = String::from("saas,user_id,email,status,last_login,department,external_id\n");
    let mut expected = BTreeSet::new();
    for i in 0..USERS {
        let status = statuses[i % 3];
        let department = departments[i % 4];
        // Whole days back; never exactly 90, the rule's boundary.
        let days = match (i * 7) % 200 {
            90 => 91,
            d => d,
        };
        let login = if i % 11 == 0 {
            String::new()
        } else {
            (now - chrono::TimeDelta::days(days as i64))
                .format("%Y-%m-%d")
                .to_string()
        };
        let email = if i % 13 == 0 {
            format!("svc-{i}@robots.example.com")
        } else {
            format!("u{i}@example.com")
        };
        let external = if i % 5 == 0 {
            format!("x{i}")
        } else {
            String::new()
        };
        csv.push_str(&format!(
            "lever,u{i},{email},{status},{login},{department},{external}\n"
        ));
        // The same rules as the configuration below, written plainly.
        let old = !login.is_empty() && days > 90;
        let selected = status == "active"
            && email.starts_with('u')
            && (["sales", "customer success"].contains(&department)
                || (old && !external.is_empty()));
        if selected {
            expected.insert(format!("u{i}"));
        }
    }
    let (_dir, path) = temp_file("users.csv", &csv);
    let extra = format!(
        r#"{APP}criteria = [
  "status == active",
  "department != hr",
  "email starts_with u",
  {{ any = ["department in [sales, 'customer success']", {{ all = ["last_login older_than 90d", "external_id exists"] }}] }},
  {{ any = ["last_login newer_than 400d", "last_login not exists"] }},
]
"#
    );
    let text = env.config_text(&[], &extra);
    let settings = config::from_toml(&text).expect("valid");
    let report = rolecall_scheduler::run_once(&settings, RunOnceOptions::whole(&path))
        .await
        .expect("the run publishes");
    assert_eq!(report.published, expected.len() as u64);
    assert_eq!(report.skipped, (USERS - expected.len()) as u64);
    let messages = consume_all(&env, &env.names.jobs_queue("lever"), Duration::from_secs(2)).await;
    let users: BTreeSet<String> = messages
        .iter()
        .map(|m| {
            let job = rolecall_common::messages::JobV1::decode(&m.data).expect("a job");
            job.user.id
        })
        .collect();
    assert_eq!(messages.len(), expected.len());
    assert!(
        users == expected,
        "selected users differ from the expected ones"
    );
    env.cleanup(&settings).await;
}

#[tokio::test]
async fn a_resumed_run_judges_criteria_dates_against_the_runs_start_not_the_publishers() {
    use rolecall_scheduler::inventory::Format;
    use rolecall_scheduler::publish::{self, RunPlan};

    let env = TestEnv::new().await;
    // The run started 30 days ago (a successor resumes it now). u1 logged
    // in 100 days before that start, u2 70: against the start only u1 is
    // older than 90 days; against now both would be.
    let started = chrono::Utc::now() - chrono::TimeDelta::days(30);
    let day = |back: i64| {
        (started - chrono::TimeDelta::days(back))
            .format("%Y-%m-%d")
            .to_string()
    };
    let csv = format!(
        "saas,user_id,email,status,last_login\nlever,u1,u1@example.com,active,{}\nlever,u2,u2@example.com,active,{}\n",
        day(100),
        day(70)
    );
    let (_dir, path) = temp_file("users.csv", &csv);
    let extra = format!("{APP}criteria = [\"status == active\", \"last_login older_than 90d\"]\n");
    let settings = config::from_toml(&env.config_text(&[], &extra)).expect("valid");
    let plan = RunPlan {
        run_id: "r-dates".into(),
        inventory: path,
        format: Format::Csv,
        apps: vec!["lever".into()],
        workflow: None,
    };
    let lease = publish::start(&env.redis, &env.names, &plan, Duration::from_secs(15))
        .await
        .unwrap()
        .expect("a new run");
    let () = redis::cmd("HSET")
        .arg(env.names.run_key(&plan.run_id))
        .arg("started_at")
        .arg(started.to_rfc3339())
        .query_async(&mut env.redis.clone())
        .await
        .unwrap();
    let conns = rolecall_scheduler::Connections::open(&settings, &env.names)
        .await
        .unwrap();
    let report = publish::publish(&settings, &conns, &plan, &lease, Default::default())
        .await
        .expect("the run publishes");
    conns.close().await;
    assert_eq!((report.published, report.skipped), (1, 1), "{report:?}");
    env.cleanup(&settings).await;
}

#[tokio::test]
async fn a_rule_naming_a_column_the_inventory_lacks_fails_at_start_naming_the_rule() {
    let env = TestEnv::new().await;
    let (_dir, path) = temp_file("users.csv", &inventory(10));
    let extra = format!("{APP}criteria = [\"status == active\", \"cost_center == 42\"]\n");
    let settings = config::from_toml(&env.config_text(&[], &extra)).expect("valid");
    let err = rolecall_scheduler::run_once(&settings, RunOnceOptions::whole(&path))
        .await
        .expect_err("the run must not start");
    let err = format!("{err:#}");
    assert!(err.contains("saas.lever.criteria[1]"), "{err}");
    assert!(err.contains("`cost_center == 42`"), "{err}");
    assert!(
        env.scan(&format!("{}run:*", env.names.ledger_prefix()))
            .await
            .is_empty(),
        "no run is recorded"
    );

    // A rule with a bad value stops the process at start (exit code 2),
    // naming the key and the rule.
    let text = env.config_text(
        &[],
        &format!("{APP}criteria = [\"last_login older_than ninety\"]\n"),
    );
    let (_cdir, config_path) = temp_file("rolecall.toml", &text);
    let out = std::process::Command::new(
        rolecall_tests::workspace_binary("rolecall-scheduler").expect("built"),
    )
    .arg("--config")
    .arg(&config_path)
    .arg("check-config")
    .output()
    .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("saas.lever.criteria[0]"), "{stderr}");
    assert!(
        stderr.contains("`last_login older_than ninety`"),
        "{stderr}"
    );

    // `check-config` checks a workflow's rules against its inventory as
    // `serve` does at start, and `run-once` with such a rule also exits 2.
    let scheduler = |text: &str, args: &[&str]| {
        let (_dir, config_path) = temp_file("rolecall.toml", text);
        let out = std::process::Command::new(
            rolecall_tests::workspace_binary("rolecall-scheduler").expect("built"),
        )
        .arg("--config")
        .arg(&config_path)
        .args(args)
        .output()
        .expect("runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let workflow = env.config_text(
        &[],
        &format!(
            "{APP}[workflow.nightly]\nschedule = \"0 2 * * *\"\napps = [\"lever\"]\ninventory = \"{}\"\ncriteria = [\"cost_center == 42\"]\n",
            path.display()
        ),
    );
    let (code, stderr) = scheduler(&workflow, &["check-config"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("workflow.nightly.criteria[0]") && stderr.contains("cost_center"),
        "{stderr}"
    );
    let (code, stderr) = scheduler(
        &env.config_text(&[], &extra),
        &["run-once", "--inventory", &path.display().to_string()],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("saas.lever.criteria[1]"), "{stderr}");
}

/// `run-once` of `users` users killed (SIGKILL) once it confirmed 2,000 of
/// them, with a 2 s lease: the run a next `run-once` finds orphaned.
struct KilledRunOnce {
    settings: config::Settings,
    path: std::path::PathBuf,
    run_id: String,
    _dir: tempfile::TempDir,
}

impl KilledRunOnce {
    async fn start(env: &TestEnv, users: usize) -> KilledRunOnce {
        let (dir, path) = temp_file("users.csv", &inventory(users));
        let text = env.config_text(
            &[],
            &format!("{APP}\n[scheduler]\nlease_ms = 2000\ntick_ms = 200\n"),
        );
        let settings = config::from_toml(&text).expect("valid");
        let inventory_arg = path.display().to_string();
        let mut first =
            SchedulerProcess::spawn(&text, &["run-once", "--inventory", &inventory_arg]);
        let (run_id, at_kill) = first.kill9_once_published(env, None, 2_000).await;
        assert!(at_kill < users as u64, "the run finished before the kill");
        KilledRunOnce {
            settings,
            path,
            run_id,
            _dir: dir,
        }
    }

    /// The same `run-once` again, once the dead publisher's lease expired.
    async fn run_again(&self) -> anyhow::Result<rolecall_scheduler::RunReport> {
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        rolecall_scheduler::run_once(&self.settings, RunOnceOptions::whole(&self.path)).await
    }
}

#[tokio::test]
async fn run_once_killed_mid_publish_is_resumed_by_the_next_run_once_not_started_again() {
    const USERS: usize = 30_000;
    let env = TestEnv::new().await;
    let killed = KilledRunOnce::start(&env, USERS).await;
    let (settings, run_id) = (&killed.settings, killed.run_id.clone());
    // The same command again, once the dead publisher's lease expired.
    let report = killed.run_again().await.expect("the run resumes");
    assert_eq!(
        report.run_id, run_id,
        "the first run is resumed, not a new one started"
    );
    assert_eq!(report.published, USERS as u64);
    let run = env.run_hash(&run_id).await;
    assert_eq!(run["published"], USERS.to_string());
    assert_eq!(run["publishing_done"], "1");
    let messages = consume_all(&env, &env.names.jobs_queue("lever"), Duration::from_secs(2)).await;
    let ids: HashSet<String> = messages
        .iter()
        .map(|m| m.properties.message_id().as_ref().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), USERS);
    assert!(
        messages.len() - USERS <= 2_000,
        "{} repeats",
        messages.len() - USERS
    );
    assert_eq!(env.run_ids().await.len(), 1);
    env.cleanup(settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_inventory_file_was_rewritten_is_abandoned_not_resumed_by_offset() {
    const USERS: usize = 30_000;
    let env = TestEnv::new().await;
    let killed = KilledRunOnce::start(&env, USERS).await;
    let (settings, path, run_id) = (&killed.settings, &killed.path, killed.run_id.clone());
    // Tomorrow's export lands at the same path before anyone resumes.
    std::fs::write(path, inventory(1_000)).unwrap();
    let report = killed.run_again().await.expect("a new run publishes");
    assert_ne!(
        report.run_id, run_id,
        "a new run, not the old one by offset"
    );
    assert_eq!(report.published, 1_000, "the whole new file");
    let old = env.run_hash(&run_id).await;
    assert_eq!(old["abandoned"], "1", "{old:?}");
    assert_eq!(old["publishing_done"], "1");
    assert!(
        old["abandoned_reason"].contains("not the file the run started with"),
        "{old:?}"
    );
    let alerts = env
        .alerts_until(Duration::from_secs(10), |a| {
            a.iter().any(|a| a.kind.as_str() == "run_abandoned")
        })
        .await;
    assert!(
        alerts
            .iter()
            .any(|a| a.kind.as_str() == "run_abandoned" && a.run_id == run_id)
    );
    env.cleanup(settings).await;
}

#[tokio::test]
async fn a_run_whose_inventory_is_gone_after_its_publisher_died_is_abandoned_with_an_alert() {
    const USERS: usize = 30_000;
    let env = TestEnv::new().await;
    let (_dir, path) = temp_file("users.csv", &inventory(USERS));
    let text = env.config_text(
        &[],
        &format!("{APP}\n[scheduler]\nlease_ms = 2000\ntick_ms = 200\n"),
    );
    let settings = config::from_toml(&text).expect("valid");
    let inventory_arg = path.display().to_string();
    let mut publisher =
        SchedulerProcess::spawn(&text, &["run-once", "--inventory", &inventory_arg]);
    let (run_id, _) = publisher.kill9_once_published(&env, None, 1_000).await;
    std::fs::remove_file(&path).unwrap();

    let server = SchedulerProcess::spawn(&text, &["serve"]);
    server
        .wait_for_log("Run abandoned", Duration::from_secs(20))
        .await;
    let run = env.run_hash(&run_id).await;
    assert_eq!(
        run.get("abandoned").map(String::as_str),
        Some("1"),
        "{run:?}"
    );
    assert_eq!(run["publishing_done"], "1");
    let published: u64 = run["published"].parse().unwrap();
    assert!((1_000..USERS as u64).contains(&published), "{run:?}");
    let alerts = env
        .alerts_until(Duration::from_secs(10), |a| {
            a.iter().any(|a| a.kind.as_str() == "run_abandoned")
        })
        .await;
    let alert = alerts
        .iter()
        .find(|a| a.kind.as_str() == "run_abandoned")
        .expect("a run_abandoned alert");
    assert_eq!(alert.run_id, run_id);
    assert!(alert.error.contains("users.csv"), "{}", alert.error);
    drop(server);
    env.cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_finishes_with_exactly_one_result_per_user_when_workers_consume() {
    const USERS: usize = 2_000;
    let env = TestEnv::new().await;
    let sim = unlimited_sim(USERS, 7).await;
    // One confirm at a time: slow enough to be killed mid-publish.
    let text = env.config_text(
        &lever_at(&sim),
        "\n[scheduler]\npublish_window = 1\nlease_ms = 2000\ntick_ms = 200\n",
    );
    let settings = config::from_toml(&text).expect("valid");
    let (_dir, path) = temp_file(
        "users.csv",
        &rolecall_tests::active_rows(&sim, "lever", USERS),
    );
    let inventory_arg = path.display().to_string();
    let mut publisher =
        SchedulerProcess::spawn(&text, &["run-once", "--inventory", &inventory_arg]);
    let (run_id, published) = publisher.kill9_once_published(&env, None, 1).await;
    assert!(published < USERS as u64, "the run finished before the kill");
    let worker = env.spawn_worker(&settings).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let report = rolecall_scheduler::run_once(&settings, RunOnceOptions::whole(&path))
        .await
        .expect("the run resumes");
    assert_eq!(report.run_id, run_id);
    let counters = env
        .wait_for_run(&settings, &run_id, Duration::from_secs(60))
        .await;
    worker.stop().await;
    assert_eq!(counters.published, USERS as u64);
    assert_eq!(counters.outcomes(), USERS as u64, "{counters:?}");
    let results = env.results().await;
    assert_eq!(results.len(), USERS);
    for ((saas, user), result) in &results {
        assert_eq!(result["run_id"], run_id);
        assert_eq!(result["job_id"], job_id(&run_id, saas, user));
    }
    env.cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_lease_that_cannot_be_renewed_in_time_is_given_up_before_it_lapses() {
    // A private Redis, frozen: renewals get no answer at all.
    let redis = RedisProcess::start().await;
    let settings = config::from_toml(&format!("[redis]\nurl = \"{}\"\n", redis.url()))
        .expect("a Redis URL is a whole configuration");
    let conn = rolecall_common::redis_conn::connect(&settings.redis)
        .await
        .unwrap();
    let ttl = Duration::from_secs(3);
    let lease = Lease::acquire(&conn, "run:lease", "fence", ttl)
        .await
        .unwrap()
        .expect("a free lease is taken");
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let (mut lost, keeper) = lease.keep_alive(conn.clone(), stop_rx);
    let frozen = tokio::time::Instant::now();
    redis.freeze();
    let gave_up = tokio::time::timeout(ttl, lost.wait_for(|lost| *lost)).await;
    let after = frozen.elapsed();
    redis.thaw();
    assert!(
        gave_up.is_ok(),
        "the holder still held on {after:?} after Redis froze (TTL {ttl:?})"
    );
    assert!(after < ttl, "{after:?}");
    keeper.await.unwrap();
}
