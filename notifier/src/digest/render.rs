//! The digest as text: run-wide counts, then, per SaaS app the channel hears
//! about, seats and seat cost by role with the change since the previous
//! run, role changes and deactivations.

use std::fmt::Write as _;

use super::{AppDigest, Digest};

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
    let prev = d.previous.as_deref();
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
        let _ = write!(out, "\n\n{name} — seats by role:");
        if a.seats.is_empty() {
            out.push_str(" none recorded");
        }
        for s in &a.seats {
            // Against no previous run, nothing is new: no remark at all.
            let change = match prev {
                None => String::new(),
                Some(_) => {
                    let old = before.and_then(|b| b.seats.iter().find(|o| o.role == s.role));
                    change_seats(s.users, s.cost, old.map(|o| (o.users, o.cost)))
                }
            };
            let _ = write!(
                out,
                "\n• {}: {} users, {:.2}{change}",
                s.role, s.users, s.cost
            );
            total_users += s.users;
            total_cost += s.cost;
        }
        // Roles that had seats last time and have none now.
        for o in before.map(|b| b.seats.as_slice()).unwrap_or_default() {
            if !a.seats.iter().any(|s| s.role == o.role) {
                let _ = write!(
                    out,
                    "\n• {}: 0 users, 0.00{}",
                    o.role,
                    change_seats(0, 0.0, Some((o.users, o.cost)))
                );
            }
        }
        if let Some(b) = before {
            prev_users += b.seats.iter().map(|s| s.users).sum::<u64>();
            prev_cost += b.seats.iter().map(|s| s.cost).sum::<f64>();
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
        "\n\nTotal: {total_users} seats, seat cost {total_cost:.2}"
    );
    match prev {
        Some(p) => {
            let _ = write!(
                out,
                "{} since run {}",
                change_seats(total_users, total_cost, Some((prev_users, prev_cost))),
                p.run_id
            );
        }
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
        Some((u, c)) => format!(" ({:+} users, {:+.2})", users as i64 - u as i64, cost - c),
    }
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
}
