//! The chaos report as a Markdown table.

use crate::harness::Report;
use crate::scenarios::Outcome;

const HEADER: &str = "| scenario | users | results (one each) | counters = inventory | run finished | duplicate events | left in queues (ready + unacked, or all messages if more) | alerts (distinct) | failed users | re-driven jobs | seconds to recover |\n|---|---|---|---|---|---|---|---|---|---|---|\n";

fn yes(ok: bool) -> &'static str {
    if ok { "yes" } else { "**NO**" }
}

fn row(r: &Report) -> String {
    let c = &r.counters;
    let counters_ok = c.published == r.users as u64 && c.outcomes() == r.users as u64;
    let alerts = if r.alerts.is_empty() {
        "none".to_string()
    } else {
        r.alerts
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let recover = if r.recovered_s.is_empty() {
        "n/a (no outage)".to_string()
    } else {
        r.recovered_s
            .iter()
            .map(|s| {
                if *s < 1.0 {
                    format!("{s:.2}")
                } else {
                    format!("{s:.1}")
                }
            })
            .collect::<Vec<_>>()
            .join(" / ")
    };
    format!(
        "| {} ({}) | {} | {}/{} {} | {} ({} published, {} outcomes) | {} | {} | {} | {} | {} | {} | {} |\n",
        r.scenario,
        r.note,
        r.users,
        r.results,
        r.users,
        yes(r.results == r.users),
        yes(counters_ok),
        c.published,
        c.outcomes(),
        yes(r.finished),
        r.duplicate_events,
        r.left_in_queues,
        alerts,
        c.failed,
        r.redriven,
        recover,
    )
}

pub fn render(outcomes: &[Outcome]) -> String {
    let mut text = String::from(HEADER);
    for outcome in outcomes {
        match outcome {
            Outcome::Ran(report) => text.push_str(&row(report)),
            Outcome::NotRun(name, reason) => {
                text.push_str(&format!("| {name} | {reason} | | | | | | | | | |\n"))
            }
        }
    }
    text
}
