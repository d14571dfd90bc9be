//! The notifier against real receivers (`rolecall_tests::receivers`): a
//! Slack-compatible webhook (an axum server on port 0) and a real SMTP
//! server (the Python package `aiosmtpd`, installed by scripts/test.sh into
//! a throwaway virtualenv), with alerts on the real alert queue and groups
//! in the real Redis.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rolecall_common::config::{self, Settings};
use rolecall_common::credentials::Vault;
use rolecall_common::messages::{AlertKind, AlertV1, UserRef};
use rolecall_common::{amqp, messages};
use rolecall_notifier::Notifier;
use rolecall_sim::SimConfig;
use rolecall_tests::receivers::{SmtpServer, Webhook};
use rolecall_tests::{AppSpec, TestEnv, active_rows, free_port, publish};
use tokio_util::sync::CancellationToken;

// --- the notifier -----------------------------------------------------------

struct Running {
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<Notifier>,
}

impl Running {
    async fn stop(self) -> Notifier {
        self.stop.cancel();
        self.handle.await.expect("the notifier does not panic")
    }
}

async fn spawn_notifier(settings: &Settings, hook: &Webhook) -> Running {
    let probe = Vault::with_env(settings.credentials.clone(), HashMap::new());
    let vault = Vault::with_env(
        settings.credentials.clone(),
        HashMap::from([(probe.env_var("hook"), hook.url.clone())]),
    );
    let notifier = Notifier::build(settings.clone(), &vault)
        .await
        .expect("the notifier builds");
    let stop = CancellationToken::new();
    let token = stop.clone();
    let handle = tokio::spawn(async move {
        notifier
            .run_until_stopped(token)
            .await
            .expect("the notifier stops cleanly");
        notifier
    });
    Running { stop, handle }
}

/// The `[notifier]` tables: a webhook channel `hook` and, with a port, an
/// e-mail channel `mail`; every app routed to both.
fn notifier_toml(window: &str, smtp: Option<(u16, &str)>, routes: &str) -> String {
    let mut text = format!(
        r#"
[notifier]
group_window = "{window}"
max_backoff = "1s"
delivery_timeout = "5s"
[notifier.channels.hook]
type = "webhook"
url_credential = "hook"
"#
    );
    let mut all = vec!["\"hook\""];
    if let Some((port, tls)) = smtp {
        text.push_str(&format!(
            r#"
[notifier.channels.mail]
type = "email"
host = "127.0.0.1"
port = {port}
{tls}
from = "Rolecall <rolecall@example.com>"
to = ["it-admins@example.com"]
"#
        ));
        all.push("\"mail\"");
    }
    text.push_str(&format!(
        "[notifier.routes]\ndefault = [{}]\n{routes}",
        all.join(", ")
    ));
    text
}

async fn publish_alerts(env: &TestEnv, settings: &Settings, alerts: &[AlertV1]) {
    let channel = amqp::confirmed_channel(&env.amqp).await.unwrap();
    amqp::declare_topology(&channel, &env.names, &settings.amqp, &[], &[])
        .await
        .unwrap();
    for alert in alerts {
        // A freshly declared quorum queue on a busy shared broker sometimes
        // nacks: publish again, as producers do (the notifier counts an id
        // once, so a resend is harmless).
        let mut tries = 0;
        while let Err(e) = amqp::publish_alert(&channel, &env.names, alert).await {
            tries += 1;
            assert!(tries < 10, "the broker keeps refusing alerts: {e}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn job_failed(saas: &str, i: usize, error: &str) -> AlertV1 {
    AlertV1 {
        v: 1,
        id: format!("job_failed:{saas}-j{i}"),
        kind: AlertKind::JobFailed,
        saas: saas.into(),
        run_id: "r-test".into(),
        user: Some(UserRef {
            id: format!("u{i}"),
            email: format!("user{i}@example.com"),
            external_id: None,
        }),
        error: error.into(),
        attempts: 3,
        at: chrono::Utc::now(),
    }
}

async fn wait_until(what: &str, timeout: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn pending_groups(env: &TestEnv) -> u64 {
    let mut conn = env.redis.clone();
    redis::cmd("ZCARD")
        .arg(format!("{}due", env.names.notify_prefix()))
        .query_async(&mut conn)
        .await
        .unwrap()
}

// --- tests ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_failures_become_one_notification_per_channel_and_redeliveries_count_once() {
    let env = TestEnv::new().await;
    let hook = Webhook::start().await;
    let smtp = SmtpServer::start(None).await;
    let extra = notifier_toml("2s", Some((smtp.port, "tls = \"none\"")), "");
    let settings = config::from_toml(&env.config_text(&[], &extra)).unwrap();
    let notifier = spawn_notifier(&settings, &hook).await;

    let mut alerts: Vec<AlertV1> = (0..100)
        .map(|i| job_failed("lever_prod", i, "401 Unauthorized"))
        .collect();
    // RabbitMQ redelivering twenty of them (same ids).
    alerts.extend((0..20).map(|i| job_failed("lever_prod", i, "401 Unauthorized")));
    publish_alerts(&env, &settings, &alerts).await;

    wait_until(
        "a webhook message and an e-mail",
        Duration::from_secs(30),
        || !hook.texts().is_empty() && !smtp.messages().is_empty(),
    )
    .await;
    // Longer than a window: nothing else comes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let texts = hook.texts();
    assert_eq!(texts.len(), 1, "{texts:#?}");
    assert!(
        texts[0].starts_with("100 users of lever_prod failed: 401 Unauthorized"),
        "{}",
        texts[0]
    );
    assert!(texts[0].contains("user0@example.com (u0)"), "{}", texts[0]);
    assert!(texts[0].contains("Run: r-test"), "{}", texts[0]);
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1, "{mails:#?}");
    assert!(
        mails[0].contains("Subject: [rolecall] 100 users of lever_prod failed: 401 Unauthorized"),
        "{}",
        mails[0]
    );
    assert!(
        mails[0].contains("To: it-admins@example.com"),
        "{}",
        mails[0]
    );

    let m = notifier.stop().await.metrics();
    assert_eq!(
        (m.counted, m.duplicates, m.delivered),
        (100, 20, 2),
        "{m:?}"
    );
    assert_eq!(pending_groups(&env).await, 0);
    env.cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_answering_500_loses_nothing_and_gets_each_group_once_when_it_recovers() {
    let env = TestEnv::new().await;
    let hook = Webhook::start().await;
    hook.state.failing.store(true, Ordering::SeqCst);
    let settings =
        config::from_toml(&env.config_text(&[], &notifier_toml("1s", None, ""))).unwrap();
    let first = spawn_notifier(&settings, &hook).await;

    let mut alerts: Vec<AlertV1> = (0..30)
        .map(|i| job_failed("lever_a", i, "vendor returned 503"))
        .collect();
    alerts.extend((0..10).map(|i| job_failed("lever_b", i, "401 Unauthorized")));
    // A refused credential: the incident, and the users whose jobs failed
    // on it; they group apart (an incident is not a user).
    alerts.push(AlertV1::about_app(
        AlertKind::AuthFailed,
        "lever_a",
        "r-test",
        "incident-1",
        "lever_a: the vendor refused the credential (401)".into(),
    ));
    alerts.extend((0..5).map(|i| AlertV1 {
        id: format!("auth_failed:lever_a-j{i}"),
        kind: AlertKind::AuthFailed,
        ..job_failed("lever_a", i, "auth: vendor refused the credential (401)")
    }));
    publish_alerts(&env, &settings, &alerts).await;

    // Several refused rounds, then the notifier restarts mid-outage: the
    // groups wait in Redis, not in the process.
    wait_until("refused deliveries", Duration::from_secs(30), || {
        hook.state.refused.load(Ordering::SeqCst) >= 6
    })
    .await;
    let m = first.stop().await.metrics();
    assert_eq!(m.delivered, 0);
    assert!(m.failed_attempts >= 6, "{m:?}");
    assert_eq!(pending_groups(&env).await, 4, "four groups wait");
    let second = spawn_notifier(&settings, &hook).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    hook.state.failing.store(false, Ordering::SeqCst);

    wait_until("four messages", Duration::from_secs(30), || {
        hook.texts().len() >= 4
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut texts = hook.texts();
    texts.sort();
    assert_eq!(texts.len(), 4, "each group once: {texts:#?}");
    assert!(
        texts[0].starts_with("10 users of lever_b failed: 401 Unauthorized"),
        "{texts:#?}"
    );
    assert!(
        texts[1].starts_with("30 users of lever_a failed: vendor returned 503"),
        "{texts:#?}"
    );
    assert!(
        texts[2]
            .starts_with("5 users of lever_a failed: auth: vendor refused the credential (401)"),
        "{texts:#?}"
    );
    assert!(
        texts[3].starts_with("[auth_failed] lever_a: the vendor refused the credential"),
        "{texts:#?}"
    );
    second.stop().await;
    assert_eq!(pending_groups(&env).await, 0);
    env.cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_gets_exactly_one_digest_even_when_run_finished_arrives_twice_and_the_next_shows_the_change()
 {
    let env = TestEnv::new().await;
    let sim = rolecall_sim::spawn(SimConfig {
        users: 40,
        seed: 7,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let hook = Webhook::start().await;
    let smtp = SmtpServer::start(None).await;
    let apps = [AppSpec {
        name: "lever_prod",
        sim: &sim,
        per_second: 200.0,
        burst: 50,
    }];
    let extra = notifier_toml(
        "1s",
        Some((smtp.port, "tls = \"none\"")),
        "lever_prod = [\"hook\", \"mail\"]\n",
    );
    let settings = config::from_toml(&env.config_text(&apps, &extra)).unwrap();
    let worker = env.spawn_worker(&settings).await;
    let notifier = spawn_notifier(&settings, &hook).await;

    let first = publish(&settings, &active_rows(&sim, "lever_prod", 20)).await;
    env.wait_for_run(&settings, &first.run_id, Duration::from_secs(60))
        .await;
    // The announcement again (a redelivery, and a second announcer).
    let again = messages::AlertV1::run_finished(&first.run_id, "run finished".into());
    let other_id = AlertV1 {
        id: format!("run_finished:{}:late", first.run_id),
        ..again.clone()
    };
    publish_alerts(&env, &settings, &[again, other_id]).await;
    wait_until("the first digest", Duration::from_secs(30), || {
        !hook.texts().is_empty() && !smtp.messages().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let texts = hook.texts();
    assert_eq!(texts.len(), 1, "one digest: {texts:#?}");
    let digest = &texts[0];
    assert!(
        digest.starts_with(&format!(
            "Run {} finished (lever_prod): 20 users checked",
            first.run_id
        )),
        "{digest}"
    );
    assert!(digest.contains("lever_prod — seats by role:"), "{digest}");
    assert!(
        digest.contains("(no previous run to compare with)"),
        "{digest}"
    );
    assert_eq!(smtp.messages().len(), 1);

    // The next run over the same app, with ten more users: its digest
    // says what changed since the first.
    let second = publish(&settings, &active_rows(&sim, "lever_prod", 30)).await;
    env.wait_for_run(&settings, &second.run_id, Duration::from_secs(60))
        .await;
    wait_until("the second digest", Duration::from_secs(30), || {
        hook.texts().len() >= 2
    })
    .await;
    let texts = hook.texts();
    let digest = &texts[1];
    assert!(
        digest.starts_with(&format!(
            "Run {} finished (lever_prod): 30 users checked (+10)",
            second.run_id
        )),
        "{digest}"
    );
    assert!(
        digest.contains(&format!("since run {}", first.run_id)),
        "{digest}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(hook.texts().len(), 2);
    assert_eq!(smtp.messages().len(), 2);

    notifier.stop().await;
    worker.stop().await;
    env.cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_goes_over_required_starttls_to_a_server_signed_by_the_configured_ca_and_carries_the_label()
 {
    let env = TestEnv::new().await;
    let certs = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/tls-fixtures.sh");
    let status = Command::new("bash")
        .arg(script)
        .arg(certs.path())
        .status()
        .unwrap();
    assert!(status.success(), "scripts/tls-fixtures.sh failed");
    let file = |name: &str| -> PathBuf { certs.path().join(name) };
    let smtp = SmtpServer::start(Some((&file("server.pem"), &file("server.key")))).await;
    let hook = Webhook::start().await;
    let tls = format!(
        "tls = \"starttls\"\nca_file = \"{}\"",
        file("ca.pem").display()
    );
    // This installation is labelled: its messages say so.
    let extra = notifier_toml("1s", Some((smtp.port, &tls)), "")
        .replace("[notifier]\n", "[notifier]\nlabel = \"staging\"\n");
    let text = env.config_text(&[], &extra);
    let settings = config::from_toml(&text).unwrap();
    assert_eq!(settings.notifier.label.as_deref(), Some("staging"));

    // `check-config --connect` goes as far as the login: STARTTLS verified
    // against the configured CA passes…
    let (code, out) = check_config_connect(&text, &hook.url);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok      e-mail channel mail"), "{out}");
    // …and without it the self-signed chain is refused: the certificate is
    // really checked, not accepted blindly.
    let without_ca = text.replace(&format!("ca_file = \"{}\"", file("ca.pem").display()), "");
    let (code, out) = check_config_connect(&without_ca, &hook.url);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAILED  e-mail channel mail"), "{out}");

    let notifier = spawn_notifier(&settings, &hook).await;
    publish_alerts(
        &env,
        &settings,
        &[AlertV1::about_app(
            AlertKind::PauseCapped,
            "lever_prod",
            "r-test",
            "1",
            "the vendor asked the fleet to pause for 900 s".into(),
        )],
    )
    .await;
    wait_until("an e-mail over STARTTLS", Duration::from_secs(30), || {
        !smtp.messages().is_empty()
    })
    .await;
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1);
    assert!(
        mails[0]
            .contains("[staging] [pause_capped] lever_prod: the vendor asked the fleet to pause"),
        "{}",
        mails[0]
    );
    assert!(
        mails[0].contains("Subject: [rolecall staging] [pause_capped] lever_prod"),
        "{}",
        mails[0]
    );
    // The server refuses MAIL before STARTTLS ("530 Must issue a STARTTLS
    // command first"), so a delivered message went over TLS, and the
    // certificate checked out against the configured CA (it is in no
    // system store).
    notifier.stop().await;
    env.cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_failures_group_into_one_message_and_redeliveries_count_once() {
    // The store's scripts reach a group's keys from its id: they must share
    // the slot of the keys the script declares (scripts/redis-cluster.sh).
    let env = TestEnv::on_cluster().await;
    let hook = Webhook::start().await;
    let settings =
        config::from_toml(&env.config_text(&[], &notifier_toml("1s", None, ""))).unwrap();
    let notifier = spawn_notifier(&settings, &hook).await;
    let mut alerts: Vec<AlertV1> = (0..50)
        .map(|i| job_failed("miro", i, "vendor returned 503"))
        .collect();
    alerts.extend((0..10).map(|i| job_failed("miro", i, "vendor returned 503")));
    publish_alerts(&env, &settings, &alerts).await;
    wait_until("a message", Duration::from_secs(30), || {
        !hook.texts().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let texts = hook.texts();
    assert_eq!(texts.len(), 1, "{texts:#?}");
    assert!(
        texts[0].starts_with("50 users of miro failed: vendor returned 503"),
        "{}",
        texts[0]
    );
    let m = notifier.stop().await.metrics();
    assert_eq!((m.counted, m.duplicates), (50, 10), "{m:?}");
    env.cleanup(&settings).await;
}

/// Runs `rolecall-notifier check-config --connect`: exit code and output.
fn check_config_connect(config_text: &str, hook_url: &str) -> (i32, String) {
    let (_dir, path) = rolecall_tests::temp_file("rolecall.toml", config_text);
    let out = Command::new(
        rolecall_tests::workspace_binary("rolecall-notifier").expect("the binary is built"),
    )
    .arg("--config")
    .arg(&path)
    .args(["check-config", "--connect"])
    .env("ROLECALL_SECRET_HOOK", hook_url)
    .output()
    .expect("the notifier runs");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn check_config_names_a_broken_channel_and_never_prints_the_webhook_url() {
    let binary =
        rolecall_tests::workspace_binary("rolecall-notifier").expect("the binary is built");
    let run = |text: &str, env: &[(&str, &str)]| {
        let (_dir, path) = rolecall_tests::temp_file("rolecall.toml", text);
        let out = Command::new(&binary)
            .arg("--config")
            .arg(&path)
            .arg("check-config")
            .envs(env.iter().copied())
            .output()
            .expect("the notifier runs");
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let good = notifier_toml("60s", None, "");
    let secret = "https://hooks.example.com/services/T0/B0/hunter2";

    // The credential is missing: the channel is named, with where it looked.
    let (code, out) = run(&good, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("notifier.channels.hook"), "{out}");
    assert!(out.contains("ROLECALL_SECRET_HOOK"), "{out}");

    // Present: valid, and the URL is not echoed.
    let (code, out) = run(&good, &[("ROLECALL_SECRET_HOOK", secret)]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("configuration is valid (channels: hook)"),
        "{out}"
    );
    assert!(!out.contains("hunter2"), "{out}");

    // A credential that is not a URL is refused without being repeated.
    let (code, out) = run(&good, &[("ROLECALL_SECRET_HOOK", "hunter2-not-a-url")]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("not an http(s) URL"), "{out}");
    assert!(!out.contains("hunter2"), "{out}");

    // The documented example's channels build.
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/config/rolecall.example.toml"
    ))
    .unwrap();
    let (code, out) = run(
        &example,
        &[
            ("ROLECALL_SECRET_SLACK_IT", secret),
            ("ROLECALL_SECRET_SMTP_ROLECALL", "hunter2-password"),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("channels: it_mail, it_slack"), "{out}");
    assert!(!out.contains("hunter2"), "{out}");

    // Validation problems name their keys, all at once.
    let bad = good.replace("group_window = \"60s\"", "group_window = \"soon\"")
        + "lever_prod = [\"pager\"]\n";
    let (code, out) = run(&bad, &[("ROLECALL_SECRET_HOOK", secret)]);
    assert_eq!(code, 2, "{out}");
    for key in ["notifier.group_window", "notifier.routes.lever_prod"] {
        assert!(out.contains(key), "{key} missing from {out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_smtp_password_is_used_without_a_restart() {
    let env = TestEnv::new().await;
    let hook = Webhook::start().await;
    // The SMTP server's password, and the notifier's credential (a
    // mounted Secret's file): each rotated by rewriting it.
    let secrets = tempfile::tempdir().unwrap();
    let server_password = secrets.path().join("server-password");
    std::fs::write(&server_password, "old-password").unwrap();
    let credentials = secrets.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::write(credentials.join("smtp"), "old-password").unwrap();
    let smtp = SmtpServer::start_with_login("rolecall", &server_password).await;
    let login = "tls = \"none\"\nusername = \"rolecall\"\npassword_credential = \"smtp\"";
    let extra = notifier_toml("1s", Some((smtp.port, login)), "")
        + &format!("[credentials]\ndir = \"{}\"\n", credentials.display());
    let settings = config::from_toml(&env.config_text(&[], &extra)).unwrap();
    let notifier = spawn_notifier(&settings, &hook).await;

    publish_alerts(
        &env,
        &settings,
        &[job_failed("okta", 1, "vendor returned 502")],
    )
    .await;
    wait_until("the first e-mail", Duration::from_secs(30), || {
        smtp.messages().len() == 1
    })
    .await;

    // The server's password changes first: the next e-mail is refused
    // and waits, the webhook is not held up.
    std::fs::write(&server_password, "new-password").unwrap();
    publish_alerts(
        &env,
        &settings,
        &[job_failed("miro", 1, "vendor returned 502")],
    )
    .await;
    wait_until(
        "the webhook's second message",
        Duration::from_secs(30),
        || hook.texts().len() == 2,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(smtp.messages().len(), 1, "refused with the old password");
    assert_eq!(pending_groups(&env).await, 1, "the group waits for e-mail");

    // Then the notifier's Secret: the waiting e-mail goes out on its next
    // try, with no restart.
    std::fs::write(credentials.join("smtp"), "new-password").unwrap();
    wait_until("the second e-mail", Duration::from_secs(30), || {
        smtp.messages().len() == 2
    })
    .await;
    assert!(smtp.messages().iter().any(|m| m.contains("miro")));
    let deadline = Instant::now() + Duration::from_secs(10);
    while pending_groups(&env).await > 0 {
        assert!(Instant::now() < deadline, "the group stays pending");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = notifier.stop().await.metrics();
    assert_eq!(m.delivered, 4, "{m:?}");
    assert!(m.failed_attempts > 0, "{m:?}");
    assert_eq!(hook.texts().len(), 2, "the webhook heard each once");
    env.cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_that_is_down_gets_its_copy_later_and_the_others_hear_once() {
    let env = TestEnv::new().await;
    let hook = Webhook::start().await;
    // The SMTP server's port, with nothing listening yet.
    let port = free_port();
    let extra = notifier_toml("1s", Some((port, "tls = \"none\"")), "");
    let settings = config::from_toml(&env.config_text(&[], &extra)).unwrap();
    let notifier = spawn_notifier(&settings, &hook).await;
    let alerts: Vec<AlertV1> = (0..5)
        .map(|i| job_failed("okta", i, "vendor returned 502"))
        .collect();
    publish_alerts(&env, &settings, &alerts).await;

    wait_until("the webhook's copy", Duration::from_secs(30), || {
        !hook.texts().is_empty()
    })
    .await;
    // Several rounds fail on e-mail; the webhook is not sent again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(hook.texts().len(), 1);
    assert_eq!(pending_groups(&env).await, 1, "the group waits for e-mail");

    let smtp = SmtpServer::start_on(port, None).await;
    wait_until("the e-mail", Duration::from_secs(30), || {
        !smtp.messages().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(smtp.messages().len(), 1);
    assert_eq!(hook.texts().len(), 1, "the webhook heard once");
    let m = notifier.stop().await.metrics();
    assert!(m.failed_attempts >= 2, "{m:?}");
    assert_eq!(m.delivered, 2);
    assert_eq!(pending_groups(&env).await, 0);
    env.cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_deliver_each_group_once() {
    let env = TestEnv::new().await;
    let hook = Webhook::start().await;
    let settings =
        config::from_toml(&env.config_text(&[], &notifier_toml("1s", None, ""))).unwrap();
    let a = spawn_notifier(&settings, &hook).await;
    let b = spawn_notifier(&settings, &hook).await;
    let mut alerts = Vec::new();
    for app in ["app_a", "app_b", "app_c", "app_d"] {
        alerts.extend((0..25).map(|i| job_failed(app, i, "401 Unauthorized")));
    }
    publish_alerts(&env, &settings, &alerts).await;
    wait_until("four messages", Duration::from_secs(30), || {
        hook.texts().len() >= 4
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut texts = hook.texts();
    texts.sort();
    assert_eq!(texts.len(), 4, "{texts:#?}");
    for (text, app) in texts.iter().zip(["app_a", "app_b", "app_c", "app_d"]) {
        assert!(
            text.starts_with(&format!("25 users of {app} failed: 401 Unauthorized")),
            "{text}"
        );
    }
    let (ma, mb) = (a.stop().await.metrics(), b.stop().await.metrics());
    assert_eq!(ma.counted + mb.counted, 100, "{ma:?} {mb:?}");
    assert_eq!(ma.delivered + mb.delivered, 4, "{ma:?} {mb:?}");
    env.cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_delivers_even_an_unreadable_alert_serves_health_and_metrics_and_stops_on_sigterm()
 {
    let env = TestEnv::new().await;
    let hook = Webhook::start().await;
    let text = env.config_text(&[], &notifier_toml("1s", None, ""));
    let settings = config::from_toml(&text).unwrap();
    let (_dir, path) = rolecall_tests::temp_file("rolecall.toml", &text);
    let ops = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(
        rolecall_tests::workspace_binary("rolecall-notifier").expect("the binary is built"),
    )
    .arg("--config")
    .arg(&path)
    .env("ROLECALL__TELEMETRY__HTTP_LISTEN", &ops)
    .env("ROLECALL_SECRET_HOOK", &hook.url)
    // Everything it logs is read below: the webhook URL must not be in it.
    .env("RUST_LOG", "info,rolecall_notifier=debug")
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("the notifier starts");

    publish_alerts(&env, &settings, &[job_failed("lever_prod", 1, "boom")]).await;
    // A body that is not an alert: delivered as such, not dropped.
    let channel = amqp::confirmed_channel(&env.amqp).await.unwrap();
    amqp::publish_confirmed(
        &channel,
        "",
        &env.names.alerts_queue(),
        b"{not an alert",
        Default::default(),
    )
    .await
    .unwrap();
    wait_until("two messages", Duration::from_secs(30), || {
        hook.texts().len() >= 2
    })
    .await;
    let mut texts = hook.texts();
    texts.sort();
    assert!(
        texts[0].starts_with("1 alert(s) on the alert queue could not be read"),
        "{texts:#?}"
    );
    assert!(texts[0].contains("{not an alert"), "{texts:#?}");
    assert!(
        texts[1].starts_with("1 user of lever_prod failed: boom"),
        "{texts:#?}"
    );
    // Consuming, so ready; and what it did is on /metrics.
    let get = |path: &str| {
        let url = format!("http://{ops}{path}");
        async move {
            let r = reqwest::get(&url).await.expect("the ops server answers");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    assert_eq!(get("/healthz").await.0, 200);
    assert_eq!(get("/readyz").await.0, 200);
    let (status, metrics) = get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(r#"rolecall_notifier_alerts_total{result="counted"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"rolecall_notifier_deliveries_total{channel="hook",result="delivered"} 2"#),
        "{metrics}"
    );
    // Both groups delivered: none pending (the gauge is read every 5 s).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let metrics = get("/metrics").await.1;
        if metrics
            .lines()
            .any(|l| l.starts_with("rolecall_notifier_pending") && l.ends_with(" 0"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no pending gauge at 0:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the notifier did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(stderr.contains("Notification delivered"), "{stderr}");
    assert!(!stderr.contains("s3cr3t-hook"), "{stderr}");
    env.cleanup(&settings).await;
}
