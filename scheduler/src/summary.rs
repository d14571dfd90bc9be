//! Following a run to its end and summarising it for a person.

use std::fmt::Write as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rolecall_common::ledger::{Ledger, LedgerError, RoleTally, RunCounters, UnknownRole};

/// Polls the run's counters until every published job has an outcome or
/// `timeout` passes, drawing a progress bar when `show` is set (and stderr is
/// a terminal; otherwise it stays quiet). Returns the last counters read.
pub async fn follow(
    ledger: &Ledger,
    run_id: &str,
    timeout: Duration,
    show: bool,
) -> Result<(RunCounters, bool), LedgerError> {
    let bar = ProgressBar::with_draw_target(
        Some(0),
        if show {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40.cyan/blue} {pos}/{len} users checked ({per_sec}, eta {eta}) {msg}",
        )
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let counters = ledger.run(run_id).await?;
        bar.set_length(counters.published.max(counters.outcomes()));
        bar.set_position(counters.outcomes());
        bar.set_message(format!(
            "· {} not found · {} failed",
            counters.not_found, counters.failed
        ));
        if counters.finished_at.is_some() {
            bar.finish();
            return Ok((counters, true));
        }
        if tokio::time::Instant::now() >= deadline {
            bar.abandon_with_message("· gave up waiting");
            return Ok((counters, false));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Renders the end-of-run table: users checked, seats by role and cost, not
/// found and deactivated users, failures, unknown roles.
pub fn render(
    run_id: &str,
    counters: &RunCounters,
    tallies: &[RoleTally],
    unknown: &[UnknownRole],
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Run {run_id}");
    let mut rows = vec![
        ("published jobs", counters.published.to_string()),
        ("users checked", counters.outcomes().to_string()),
        ("  found, active", counters.succeeded.to_string()),
        ("  inactive at vendor", counters.inactive.to_string()),
        ("  not found", counters.not_found.to_string()),
        ("  failed", counters.failed.to_string()),
        ("  changes made (actions)", counters.acted.to_string()),
        ("deactivated", counters.deactivated.to_string()),
        ("  written back (source)", counters.written_back.to_string()),
        ("malformed inventory rows", counters.rejected.to_string()),
        ("rows not selected", counters.skipped.to_string()),
    ];
    if counters.duplicates > 0 {
        rows.push((
            "users listed again (checked once)",
            counters.duplicates.to_string(),
        ));
    }
    table(
        &mut out,
        &["", "count"],
        rows.iter().map(|(a, b)| vec![a.to_string(), b.clone()]),
    );

    let _ = writeln!(out);
    let total_users: u64 = tallies.iter().map(|t| t.users).sum();
    // Folded from +0.0: an empty sum of f64 is -0.0, which prints "-0.00".
    let total_cost: f64 = tallies.iter().fold(0.0, |sum, t| sum + t.cost);
    let mut role_rows: Vec<Vec<String>> = tallies
        .iter()
        .map(|t| {
            vec![
                t.saas.clone(),
                t.role.clone(),
                t.users.to_string(),
                format!("{:.2}", t.cost),
            ]
        })
        .collect();
    role_rows.push(vec![
        "total".into(),
        String::new(),
        total_users.to_string(),
        format!("{total_cost:.2}"),
    ]);
    table(
        &mut out,
        &["saas", "role", "users", "seat cost"],
        role_rows.into_iter(),
    );

    if !unknown.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Roles missing from the role map (priced with the default role):"
        );
        table(
            &mut out,
            &["saas", "vendor role", "users"],
            unknown
                .iter()
                .map(|u| vec![u.saas.clone(), u.raw_role.clone(), u.users.to_string()]),
        );
    }
    out
}

pub(crate) fn table(out: &mut String, header: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    let rows: Vec<Vec<String>> = rows.collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut String, cells: &[String]| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                // Numbers read best right-aligned; the first column is a label.
                if i > 0 && c.chars().next().is_some_and(|ch| ch.is_ascii_digit()) {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        let _ = writeln!(out, "| {} |", text.join(" | "));
    };
    line(
        out,
        &header.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
    );
    let _ = writeln!(
        out,
        "|{}|",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("|")
    );
    for row in &rows {
        line(out, row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_runs_seat_cost_reads_0_00_not_minus_0_00() {
        let text = render("r0", &RunCounters::default(), &[], &[]);
        assert!(!text.contains("-0.00"), "{text}");
        assert!(text.contains("0.00"), "{text}");
    }

    #[test]
    fn the_summary_lists_counts_roles_costs_and_unknown_roles() {
        let counters = RunCounters {
            published: 10,
            succeeded: 7,
            not_found: 2,
            deactivated: 2,
            failed: 1,
            ..Default::default()
        };
        let tallies = vec![
            RoleTally {
                saas: "lever".into(),
                role: "admin".into(),
                users: 2,
                cost: 90.0,
            },
            RoleTally {
                saas: "lever".into(),
                role: "member".into(),
                users: 5,
                cost: 50.0,
            },
        ];
        let unknown = vec![UnknownRole {
            saas: "lever".into(),
            raw_role: "custom".into(),
            users: 1,
        }];
        let text = render("r1", &counters, &tallies, &unknown);
        assert!(
            text.contains("| users checked            |    10 |"),
            "{text}"
        );
        assert!(
            text.contains("| total |        |     7 |    140.00 |"),
            "{text}"
        );
        assert!(text.contains("custom"), "{text}");
    }
}
