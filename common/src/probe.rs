//! `check-config --connect`: one harmless call to each backend a process
//! needs, reported one line per backend. Shared by every binary so their
//! reports read the same. Errors are reported by kind and message only: the
//! URLs (which may hold passwords) and credentials are never printed.

use std::fmt::Write as _;
use std::time::Duration;

use crate::ledger::{self, Ledger};
use crate::{Names, Settings, amqp};

/// Longest wait for any one check: a check must not hang a deploy script.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked ("RabbitMQ", "Redis", "credential of lever_prod").
    pub what: String,
    /// `Err` holds why it failed, without secrets.
    pub result: Result<(), String>,
}

impl Check {
    /// Runs `call` under [`CHECK_TIMEOUT`] and names it `what`.
    pub async fn run<E: std::fmt::Display>(
        what: impl Into<String>,
        call: impl Future<Output = Result<(), E>>,
    ) -> Check {
        let what = what.into();
        let result = match tokio::time::timeout(CHECK_TIMEOUT, call).await {
            Ok(Ok(())) => Ok(()),
            // Errors often name their subject ("RabbitMQ: …"), and the
            // line already does: "FAILED  RabbitMQ: RabbitMQ: …" reads badly.
            Ok(Err(e)) => {
                let text = e.to_string();
                Err(match text.strip_prefix(&format!("{what}: ")) {
                    Some(rest) => rest.to_string(),
                    None => text,
                })
            }
            Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
        };
        Check { what, result }
    }
}

/// Opens (and closes) a RabbitMQ connection, and PINGs Redis.
pub async fn backends(settings: &Settings, process: &str) -> Vec<Check> {
    let rabbit = Check::run("RabbitMQ", async {
        let conn = amqp::connect(&settings.amqp, process).await?;
        let _ = conn.close(200, "checked".into()).await;
        Ok::<_, amqp::AmqpError>(())
    })
    .await;
    let redis = Check::run("Redis", async {
        let conn = ledger::connect(&settings.redis).await?;
        Ledger::new(conn, Names::new(&settings.namespace), &settings.redis)
            .ping()
            .await
    })
    .await;
    vec![rabbit, redis]
}

/// One line per check (`ok      Redis`, `FAILED  RabbitMQ: …`).
pub fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let _ = match &c.result {
            Ok(()) => writeln!(out, "ok      {}", c.what),
            Err(why) => writeln!(out, "FAILED  {}: {why}", c.what),
        };
    }
    out
}

/// Some `check-config --connect` checks failed.
#[derive(Debug, thiserror::Error)]
#[error("{0} connection check(s) failed")]
pub struct ChecksFailed(pub usize);

/// Prints one line per check; fails when any did.
pub fn report(checks: &[Check]) -> Result<(), ChecksFailed> {
    print!("{}", render(checks));
    match failures(checks) {
        0 => Ok(()),
        n => Err(ChecksFailed(n)),
    }
}

/// How many checks failed.
pub fn failures(checks: &[Check]) -> usize {
    checks.iter().filter(|c| c.result.is_err()).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failure_naming_its_subject_is_not_prefixed_twice() {
        let check = Check::run("RabbitMQ", async {
            Err::<(), _>("RabbitMQ: IO error: Connection refused")
        })
        .await;
        assert_eq!(
            render(&[check]),
            "FAILED  RabbitMQ: IO error: Connection refused\n"
        );
        let check = Check::run("Redis", async { Err::<(), _>("no route to host") }).await;
        assert_eq!(render(&[check]), "FAILED  Redis: no route to host\n");
    }
}
