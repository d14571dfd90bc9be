//! The trial's sequence of runs, recorded in a real Redis as the scheduler
//! and the workers record them, and each run's digest built from it: which
//! run each is compared with, and the text admins get.

use rolecall_common::config;
use rolecall_common::ledger::Ledger;
use rolecall_notifier::digest::{self, Digest};
use rolecall_tests::TestEnv;

/// The two apps of the trial (nobody calls their vendors here).
const APPS: &str = r#"
[saas.lever_prod]
connector = "lever"
base_url = "https://api.lever.co"
credential = "lever-prod"
rate = { per_second = 10, burst = 20 }
[saas.miro]
connector = "lever"
base_url = "https://api.lever.co"
credential = "miro"
rate = { per_second = 10, burst = 20 }
"#;

struct Env {
    env: TestEnv,
    ledger: Ledger,
}

impl Env {
    async fn new() -> Env {
        let env = TestEnv::new().await;
        let settings =
            config::from_toml(&env.config_text(&[], APPS)).expect("a valid configuration");
        let ledger = env.ledger(&settings);
        Env { env, ledger }
    }

    /// Records a finished run the way `publish::start`, the workers and the
    /// last outcome leave it: its plan, its counters, its role tallies.
    /// `seats` are (app, role, users, cost); `minute` is its start.
    async fn run(
        &self,
        id: &str,
        workflow: &str,
        apps: &str,
        checked: u64,
        seats: &[(&str, &str, u64, f64)],
        minute: u32,
    ) {
        let started = format!("2026-05-01T10:{minute:02}:00.000000+00:00");
        let finished = format!("2026-05-01T10:{minute:02}:40.000000+00:00");
        let epoch = chrono::DateTime::parse_from_rfc3339(&started)
            .unwrap()
            .timestamp();
        let mut c = self.ledger.connection();
        let mut pipe = redis::pipe();
        pipe.cmd("HSET")
            .arg(self.env.names.run_key(id))
            .arg(&[
                ("started_at", started.as_str()),
                ("workflow", workflow),
                ("apps", apps),
                ("publishing_done", "1"),
                ("finished_at", finished.as_str()),
            ])
            .arg(&[
                ("published", checked),
                ("succeeded", checked),
                ("skipped", 42 - checked.min(42)),
            ])
            .ignore();
        pipe.cmd("ZADD")
            .arg(self.env.names.runs_index())
            .arg(epoch)
            .arg(id)
            .ignore();
        for (app, role, users, cost) in seats {
            pipe.cmd("HSET")
                .arg(self.env.names.run_roles_key(id))
                .arg(format!("n:{app}:{role}"))
                .arg(users)
                .arg(format!("cost:{app}:{role}"))
                .arg(cost)
                .ignore();
        }
        let () = pipe.query_async(&mut c).await.expect("Redis takes the run");
    }

    async fn digest(&self, id: &str) -> Digest {
        digest::build(&self.ledger, &self.env.names, id, "run finished", 3)
            .await
            .expect("the digest builds")
    }

    async fn cleanup(&self) {
        self.env.cleanup_keys().await;
    }
}

fn text(d: &Digest) -> String {
    let text = digest::render(d, &d.apps);
    println!("---- {}\n{text}\n", d.run_id);
    text
}

const NIGHTLY_SEATS: [(&str, &str, u64, f64); 3] = [
    ("lever_prod", "admin", 6, 270.0),
    ("lever_prod", "member", 24, 0.0),
    ("miro", "member", 12, 96.0),
];

#[tokio::test]
async fn each_run_is_compared_with_the_previous_finished_non_empty_run_of_its_kind() {
    let env = Env::new().await;
    let apps = "lever_prod,miro";
    env.run("nightly-1", "nightly", apps, 42, &NIGHTLY_SEATS, 0)
        .await;
    // A run-once whose rows were all skipped.
    env.run("adhoc-empty", "", apps, 0, &[], 10).await;
    let mut more_admins = NIGHTLY_SEATS;
    more_admins[0] = ("lever_prod", "admin", 7, 315.0);
    env.run("nightly-2", "nightly", apps, 43, &more_admins, 20)
        .await;
    env.run(
        "adhoc-3",
        "",
        apps,
        3,
        &[("lever_prod", "admin", 3, 135.0)],
        30,
    )
    .await;
    // The same apps, named in another order.
    env.run(
        "adhoc-4",
        "",
        "miro,lever_prod",
        4,
        &[("lever_prod", "admin", 4, 180.0)],
        40,
    )
    .await;

    let empty = env.digest("adhoc-empty").await;
    assert_eq!(
        empty.previous, None,
        "an empty run is compared with nothing"
    );
    let t = text(&empty);
    assert!(
        t.starts_with("Run adhoc-empty finished (lever_prod, miro): 0 users checked\n"),
        "{t}"
    );
    assert!(
        t.contains("lever_prod — seats by role: none recorded\n\nmiro"),
        "{t}"
    );
    assert!(
        t.ends_with("Total: 0 seats, seat cost 0.00 (no users checked, so nothing to compare)"),
        "{t}"
    );

    let nightly = env.digest("nightly-2").await;
    let previous = nightly.previous.as_deref().map(|p| p.run_id.as_str());
    assert_eq!(
        previous,
        Some("nightly-1"),
        "not the empty run-once in between"
    );
    let t = text(&nightly);
    assert!(!t.contains("(new)"), "{t}");
    assert!(t.contains("43 users checked (+1)"), "{t}");
    assert!(
        t.contains("• admin: 7 users, 315.00 (+1 users, +45.00)"),
        "{t}"
    );
    assert!(
        t.ends_with("since run nightly-1, the previous run of workflow nightly"),
        "{t}"
    );

    let adhoc = env.digest("adhoc-3").await;
    assert_eq!(
        adhoc.previous, None,
        "no earlier non-empty run-once over these apps; a workflow run is not one"
    );
    let t = text(&adhoc);
    assert!(
        t.starts_with("Run adhoc-3 finished (lever_prod, miro): 3 users checked\n"),
        "{t}"
    );
    assert!(t.contains("(no previous run to compare with)"), "{t}");

    let next = env.digest("adhoc-4").await;
    let previous = next.previous.as_deref().map(|p| p.run_id.as_str());
    assert_eq!(previous, Some("adhoc-3"));
    let t = text(&next);
    assert!(t.contains("4 users checked (+1)"), "{t}");
    assert!(
        t.ends_with("since run adhoc-3, the previous run-once over the same apps"),
        "{t}"
    );
    env.cleanup().await;
}
