//! The digest as text: run-wide counts, then, per SaaS app the channel hears
//! about, seats and seat cost by role with the change since the previous
//! run of the same kind, role changes and deactivations.

use std::fmt::Write as _;

use super::{AppDigest, Digest, RunKind};

/// The digest text for a channel that hears about `apps` (only those
/// apps' sections are shown).
pub fn render(d: &Digest, apps: &[String]) -> String {
    let mut out = String::new();
    let shown: Vec<&String> = d.apps.iter().filter(|a| apps.contains(a)).collect();
    let names: Vec<&str> = shown.iter().map(|a| a.as_str()).collect();
    let _ = write!(out, "Run {} finished", d.run_id);
    if !names.is_empty() {
        let _ = write!(out, " ({})", names.join(", "));
    }
    if !d.recorded {
        // The ledger entry expired before the digest was built.
        let _ = write!(out, ": {}", d.summary);
        return out;
    }
    // Builds choose no baseline for or of an empty run; a digest frozen by
    // an older notifier may still carry one, and it must not show either.
    let prev = d
        .previous
        .as_deref()
        .filter(|p| p.checked > 0 && d.checked > 0);
    let _ = write!(
        out,
        ": {} users checked{}",
        d.checked,
        change_u(d.checked, prev.map(|p| p.checked))
    );
    let changes: u64 = shown.iter().map(|a| app(d, a).role_changes).sum();
    let deactivations: u64 = shown.iter().map(|a| app(d, a).deactivations).sum();
    let _ = write!(
        out,
        "\n• role changes: {changes}\n• deactivations: {deactivations}\n• failures: {}{}\n• not found at the vendor: {}, inactive there: {}",
        d.failed,
        change_u(d.failed, prev.map(|p| p.failed)),
        d.not_found,
        d.inactive
    );
    let mut total_users = 0;
    let mut total_cost = 0.0;
    let mut prev_users = 0;
    let mut prev_cost = 0.0;
    for name in &shown {
        let a = app(d, name);
        let before = prev.and_then(|p| p.per_app.get(*name));
        let mut lines = Vec::new();
        for s in &a.seats {
            // Against no previous run, nothing is new: no remark at all.
            let change = match prev {
                None => String::new(),
                Some(_) => {
                    let old = before.and_then(|b| b.seats.iter().find(|o| o.role == s.role));
                    change_seats(s.users, s.cost, old.map(|o| (o.users, o.cost)))
                }
            };
            lines.push(format!(
                "{}: {} users, {}{change}",
                s.role,
                s.users,
                money(s.cost)
            ));
            total_users += s.users;
            total_cost += s.cost;
        }
        // Roles that had seats last time and have none now.
        for o in before.map(|b| b.seats.as_slice()).unwrap_or_default() {
            if !a.seats.iter().any(|s| s.role == o.role) {
                lines.push(format!(
                    "{}: 0 users, {}{}",
                    o.role,
                    money(0.0),
                    change_seats(0, 0.0, Some((o.users, o.cost)))
                ));
            }
        }
        if let Some(b) = before {
            prev_users += b.seats.iter().map(|s| s.users).sum::<u64>();
            prev_cost += b.seats.iter().map(|s| s.cost).sum::<f64>();
        }
        let _ = write!(out, "\n\n{name} — seats by role:");
        if lines.is_empty() {
            out.push_str(" none recorded");
        }
        for line in &lines {
            let _ = write!(out, "\n• {line}");
        }
        if !a.change_examples.is_empty() {
            let _ = write!(
                out,
                "\nrole changes ({}): {}",
                a.role_changes,
                examples(&a.change_examples, a.role_changes)
            );
        }
        if !a.deactivation_examples.is_empty() {
            let _ = write!(
                out,
                "\ndeactivated ({}): {}",
                a.deactivations,
                examples(&a.deactivation_examples, a.deactivations)
            );
        }
    }
    let _ = write!(
        out,
        "\n\nTotal: {total_users} seats, seat cost {}",
        money(total_cost)
    );
    match prev {
        Some(p) => {
            let _ = write!(
                out,
                "{} since run {}{}",
                change_seats(total_users, total_cost, Some((prev_users, prev_cost))),
                p.run_id,
                match &d.kind {
                    Some(RunKind::Workflow(w)) => format!(", the previous run of workflow {w}"),
                    Some(RunKind::Apps(_)) => ", the previous run-once over the same apps".into(),
                    None => String::new(),
                }
            );
        }
        None if d.checked == 0 => out.push_str(" (no users checked, so nothing to compare)"),
        None => out.push_str(" (no previous run to compare with)"),
    }
    out
}

fn app<'a>(d: &'a Digest, name: &str) -> &'a AppDigest {
    static EMPTY: std::sync::LazyLock<AppDigest> = std::sync::LazyLock::new(AppDigest::default);
    d.per_app.get(name).unwrap_or(&EMPTY)
}

fn examples(list: &[String], total: u64) -> String {
    let mut s = list.join(", ");
    if total > list.len() as u64 {
        s.push_str(", …");
    }
    s
}

fn change_u(now: u64, before: Option<u64>) -> String {
    match before {
        Some(b) if b != now => format!(" ({:+})", now as i64 - b as i64),
        _ => String::new(),
    }
}

fn change_seats(users: u64, cost: f64, before: Option<(u64, f64)>) -> String {
    match before {
        None => " (new)".into(),
        Some((u, c)) if u == users && (c - cost).abs() < 0.005 => " (no change)".into(),
        Some((u, c)) => format!(
            " ({:+} users, {})",
            users as i64 - u as i64,
            signed_money(cost - c)
        ),
    }
}

/// An amount to the cent. Sums and differences of prices can be -0.0 (the
/// sum of no `f64`s is -0.0) or round to a negative zero (-0.004): neither
/// is a cost anyone owes, so both read 0.00.
fn money(x: f64) -> String {
    let s = format!("{x:.2}");
    if s == "-0.00" { "0.00".into() } else { s }
}

/// A change in cost, always signed; no change reads +0.00, never -0.00.
fn signed_money(x: f64) -> String {
    let s = format!("{x:+.2}");
    if s == "-0.00" { "+0.00".into() } else { s }
}

#[cfg(test)]
mod tests {
    use super::super::Seats;
    use super::*;

    fn digest(run: &str, admins: u64) -> Digest {
        let mut d = Digest {
            run_id: run.into(),
            apps: vec!["lever_prod".into(), "miro".into()],
            recorded: true,
            checked: 10,
            failed: 1,
            ..Digest::default()
        };
        d.per_app.insert(
            "lever_prod".into(),
            AppDigest {
                seats: vec![Seats {
                    role: "admin".into(),
                    users: admins,
                    cost: admins as f64 * 45.0,
                }],
                role_changes: 3,
                change_examples: vec!["u-1: viewer → admin".into()],
                ..AppDigest::default()
            },
        );
        d.per_app.insert(
            "miro".into(),
            AppDigest {
                deactivations: 2,
                ..AppDigest::default()
            },
        );
        d
    }

    #[test]
    fn a_digest_shows_seat_cost_and_the_change_since_the_previous_run() {
        let mut d = digest("r2", 3);
        d.previous = Some(Box::new(digest("r1", 2)));
        let text = render(&d, &["lever_prod".into(), "miro".into()]);
        assert!(
            text.starts_with("Run r2 finished (lever_prod, miro): 10 users checked"),
            "{text}"
        );
        assert!(
            text.contains("• admin: 3 users, 135.00 (+1 users, +45.00)"),
            "{text}"
        );
        assert!(
            text.contains("role changes (3): u-1: viewer → admin, …"),
            "{text}"
        );
        assert!(text.contains("• deactivations: 2"), "{text}");
        assert!(
            text.contains("Total: 3 seats, seat cost 135.00 (+1 users, +45.00) since run r1"),
            "{text}"
        );
    }

    #[test]
    fn a_channel_sees_only_the_apps_its_route_covers() {
        let text = render(&digest("r1", 2), &["miro".into()]);
        assert!(!text.contains("lever_prod"), "{text}");
        assert!(text.contains("(no previous run to compare with)"), "{text}");
    }

    const BOTH: [&str; 2] = ["lever_prod", "miro"];

    fn both() -> Vec<String> {
        BOTH.iter().map(|a| a.to_string()).collect()
    }

    /// A nightly run as the trial saw it: 42 users, all holding a seat
    /// (6 admins and 24 free members in lever_prod, 12 members in miro).
    fn nightly(run: &str) -> Digest {
        let seat = |role: &str, users: u64, cost: f64| Seats {
            role: role.into(),
            users,
            cost,
        };
        let mut d = Digest {
            run_id: run.into(),
            apps: both(),
            kind: Some(RunKind::Workflow("nightly".into())),
            recorded: true,
            checked: 42,
            active: 42,
            ..Digest::default()
        };
        d.per_app.insert(
            "lever_prod".into(),
            AppDigest {
                seats: vec![seat("admin", 6, 270.0), seat("member", 24, 0.0)],
                ..AppDigest::default()
            },
        );
        d.per_app.insert(
            "miro".into(),
            AppDigest {
                seats: vec![seat("member", 12, 96.0)],
                ..AppDigest::default()
            },
        );
        d
    }

    /// A run-once whose rows were all skipped: nothing checked, no seats.
    fn empty(run: &str) -> Digest {
        let mut d = Digest {
            run_id: run.into(),
            apps: both(),
            kind: Some(RunKind::Apps(both())),
            recorded: true,
            ..Digest::default()
        };
        for app in BOTH {
            d.per_app.insert(app.into(), AppDigest::default());
        }
        d
    }

    /// The seats section of one app: from its header to the next blank line.
    fn section<'a>(text: &'a str, app: &str) -> &'a str {
        let header = format!("{app} — seats by role:");
        let at = text.find(&header).expect("the app has a section");
        let rest = &text[at..];
        &rest[..rest.find("\n\n").unwrap_or(rest.len())]
    }

    #[test]
    fn an_empty_run_shows_no_change_even_when_its_frozen_digest_carries_a_previous_run() {
        let mut d = empty("adhoc-1");
        d.previous = Some(Box::new(nightly("nightly-1")));
        let text = render(&d, &both());
        assert!(
            text.starts_with("Run adhoc-1 finished (lever_prod, miro): 0 users checked\n"),
            "{text}"
        );
        assert!(
            !text.contains("(-"),
            "no losses against another run: {text}"
        );
        assert!(!text.contains("since run"), "{text}");
        assert!(
            text.ends_with(
                "Total: 0 seats, seat cost 0.00 (no users checked, so nothing to compare)"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_run_after_an_empty_one_reports_no_role_as_new() {
        // A digest frozen by a notifier that still took the empty run as
        // its baseline.
        let mut d = nightly("nightly-2");
        d.previous = Some(Box::new(empty("adhoc-1")));
        let text = render(&d, &both());
        assert!(!text.contains("(new)"), "{text}");
        assert!(
            text.starts_with("Run nightly-2 finished (lever_prod, miro): 42 users checked\n"),
            "{text}"
        );
        assert!(
            text.ends_with("Total: 42 seats, seat cost 366.00 (no previous run to compare with)"),
            "{text}"
        );
    }

    #[test]
    fn the_change_names_the_previous_run_of_the_same_workflow() {
        let mut d = nightly("nightly-2");
        d.per_app.get_mut("lever_prod").unwrap().seats[0] = Seats {
            role: "admin".into(),
            users: 7,
            cost: 315.0,
        };
        d.previous = Some(Box::new(nightly("nightly-1")));
        let text = render(&d, &both());
        assert!(
            text.contains("• admin: 7 users, 315.00 (+1 users, +45.00)"),
            "{text}"
        );
        assert!(
            text.contains("• member: 24 users, 0.00 (no change)"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "Total: 43 seats, seat cost 411.00 (+1 users, +45.00) since run nightly-1, the previous run of workflow nightly"
            ),
            "{text}"
        );
        let mut adhoc = empty("adhoc-2");
        adhoc.checked = 3;
        adhoc.previous = Some(Box::new(Digest {
            checked: 4,
            ..empty("adhoc-1")
        }));
        let text = render(&adhoc, &both());
        assert!(
            text.ends_with("since run adhoc-1, the previous run-once over the same apps"),
            "{text}"
        );
    }

    #[test]
    fn an_empty_run_reads_a_seat_cost_of_0_00_never_minus_0_00() {
        let text = render(&empty("adhoc-1"), &both());
        assert!(text.contains("seat cost 0.00"), "{text}");
        assert!(!text.contains("-0.00"), "{text}");
    }

    #[test]
    fn amounts_that_are_or_round_to_a_negative_zero_read_0_00() {
        let no_costs: f64 = [0.0f64; 0].iter().sum();
        assert!(no_costs.is_sign_negative(), "the sum of no f64s is -0.0");
        assert_eq!(money(no_costs), "0.00");
        assert_eq!(money(-0.004), "0.00");
        assert_eq!(money(-0.005001), "-0.01");
        assert_eq!(money(1080.0), "1080.00");
        assert_eq!(signed_money(no_costs), "+0.00");
        assert_eq!(signed_money(-0.004), "+0.00");
        assert_eq!(signed_money(-45.0), "-45.00");
        // A free role that lost users: the cost did not change.
        assert_eq!(
            change_seats(0, 0.0, Some((24, -0.0))),
            " (-24 users, +0.00)"
        );
    }

    #[test]
    fn a_seats_section_says_none_recorded_only_when_it_lists_no_role() {
        // miro's members all went (deactivated, say): the section lists
        // the role it lost, not "none recorded" too.
        let mut d = nightly("nightly-2");
        d.per_app.insert("miro".into(), AppDigest::default());
        d.previous = Some(Box::new(nightly("nightly-1")));
        let text = render(&d, &both());
        assert_eq!(
            section(&text, "miro"),
            "miro — seats by role:\n• member: 0 users, 0.00 (-12 users, -96.00)",
            "{text}"
        );
        assert_eq!(
            section(&text, "lever_prod"),
            "lever_prod — seats by role:\n• admin: 6 users, 270.00 (no change)\n• member: 24 users, 0.00 (no change)",
            "{text}"
        );
        // An empty run compared with nothing: no role lines at all.
        let text = render(&empty("adhoc-1"), &both());
        assert_eq!(
            section(&text, "lever_prod"),
            "lever_prod — seats by role: none recorded"
        );
    }
}
