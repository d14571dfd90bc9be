//! The text of a grouped alert: one message for many alerts of one SaaS app
//! and kind ("312 users of lever_prod failed: 401 Unauthorized"), short
//! messages for incidents.

use std::fmt::Write as _;

use crate::channels::Notification;
use crate::store::Group;

/// Kind of the alerts that could not be decoded (they are delivered too).
pub const UNREADABLE: &str = "unreadable";

/// Scope of a group of alerts about jobs (one user each).
pub const USERS: &str = "users";
/// Scope of a group of alerts about an app or a run (incidents).
pub const APP: &str = "app";

/// Errors listed beyond the headline.
const MORE_ERRORS: usize = 3;

/// The notification of a group for one channel.
pub fn group_notification(group: &Group, channel: &str, label: Option<&str>) -> Notification {
    let text = group_text(group);
    notification(&group.id, channel, text, label)
}

/// A notification with the subject taken from the text's first line. The
/// installation's `label` (`notifier.label`), when set, leads the subject
/// and the text: installations sharing a channel are told apart at a glance.
pub fn notification(
    group_id: &str,
    channel: &str,
    text: String,
    label: Option<&str>,
) -> Notification {
    let first = text.lines().next().unwrap_or_default();
    let mut subject: String = first.chars().take(120).collect();
    if first.chars().count() > 120 {
        subject.push('…');
    }
    let (subject, text) = match label {
        Some(label) => (
            format!("[rolecall {label}] {subject}"),
            format!("[{label}] {text}"),
        ),
        None => (format!("[rolecall] {subject}"), text),
    };
    Notification {
        subject,
        text,
        id: message_id(group_id, channel),
    }
}

/// A stable, RFC 5322-safe id of a group's notification on a channel.
fn message_id(group_id: &str, channel: &str) -> String {
    format!("{group_id}.{channel}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The message text of a group.
pub fn group_text(g: &Group) -> String {
    let mut out = String::new();
    let more = g.count.saturating_sub(1);
    match g.kind.as_str() {
        // Alerts about jobs, whatever their kind (a permanent error, a
        // refused credential, a vendor that stayed down): users failed.
        _ if g.scope == USERS => job_failures(&mut out, g),
        "job_failed" => job_failures(&mut out, g),
        "run_abandoned" => {
            let _ = write!(out, "Run {} was abandoned: {}", g.run_id, g.first_error);
            if more > 0 {
                let _ = write!(out, " (and {more} more runs: {})", g.runs.join(", "));
            }
        }
        UNREADABLE => {
            let _ = write!(
                out,
                "{} alert(s) on the alert queue could not be read; the first: {}",
                g.count, g.first_error
            );
        }
        kind => {
            let _ = write!(out, "[{kind}] ");
            if !g.saas.is_empty() && !g.first_error.contains(&g.saas) {
                let _ = write!(out, "{}: ", g.saas);
            }
            out.push_str(&g.first_error);
            if more > 0 {
                let _ = write!(out, " (and {more} more like it)");
            }
        }
    }
    if g.kind != "run_abandoned" && !g.runs.is_empty() {
        let label = if g.runs.len() == 1 { "Run" } else { "Runs" };
        let _ = write!(out, "\n{label}: {}", g.runs.join(", "));
    }
    out
}

fn job_failures(out: &mut String, g: &Group) {
    let users = if g.count == 1 { "user" } else { "users" };
    let saas = if g.saas.is_empty() { "?" } else { &g.saas };
    match g.errors.as_slice() {
        [] => {
            let _ = write!(out, "{} {users} of {saas} failed", g.count);
        }
        [(only, _)] => {
            let _ = write!(out, "{} {users} of {saas} failed: {only}", g.count);
        }
        [(top, n), rest @ ..] => {
            let _ = write!(
                out,
                "{} {users} of {saas} failed, most often: {top} ({n})",
                g.count
            );
            for (e, n) in rest.iter().take(MORE_ERRORS) {
                let _ = write!(out, "\n• {n}× {e}");
            }
            let others: u64 = rest.iter().skip(MORE_ERRORS).map(|(_, n)| n).sum();
            if others > 0 {
                let _ = write!(out, "\n• {others}× other errors");
            }
        }
    }
    if !g.examples.is_empty() {
        let _ = write!(out, "\nFor example: {}", g.examples.join(", "));
        if g.count > g.examples.len() as u64 {
            out.push_str(", …");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failures(errors: &[(&str, u64)]) -> Group {
        Group {
            id: "01J".into(),
            saas: "lever_prod".into(),
            kind: "job_failed".into(),
            scope: USERS.into(),
            run_id: "r1".into(),
            count: errors.iter().map(|e| e.1).sum(),
            errors: errors.iter().map(|(e, n)| (e.to_string(), *n)).collect(),
            examples: vec!["ana@example.com (u-1)".into()],
            runs: vec!["r1".into()],
            ..Group::default()
        }
    }

    #[test]
    fn many_failures_read_as_one_sentence_with_examples_and_the_run() {
        let text = group_text(&failures(&[("401 Unauthorized", 312)]));
        assert!(
            text.starts_with("312 users of lever_prod failed: 401 Unauthorized"),
            "{text}"
        );
        assert!(
            text.contains("For example: ana@example.com (u-1), …"),
            "{text}"
        );
        assert!(text.contains("Run: r1"), "{text}");
    }

    #[test]
    fn mixed_failures_list_the_most_common_errors_first() {
        let text = group_text(&failures(&[
            ("401 Unauthorized", 300),
            ("503", 7),
            ("timeout", 3),
            ("a", 1),
            ("b", 1),
        ]));
        assert!(
            text.contains("most often: 401 Unauthorized (300)"),
            "{text}"
        );
        assert!(text.contains("• 7× 503"), "{text}");
        assert!(text.contains("• 1× other errors"), "{text}");
    }

    #[test]
    fn users_refused_by_the_vendor_read_as_failed_users_not_as_an_incident() {
        let mut g = failures(&[(
            "auth: vendor refused the credential (401 Unauthorized)",
            312,
        )]);
        g.kind = "auth_failed".into();
        let text = group_text(&g);
        assert!(
            text.starts_with("312 users of lever_prod failed: auth: vendor refused the credential (401 Unauthorized)"),
            "{text}"
        );
    }

    #[test]
    fn an_incident_is_one_short_line() {
        let g = Group {
            id: "g".into(),
            saas: "lever_prod".into(),
            kind: "auth_failed".into(),
            scope: APP.into(),
            first_error: "lever_prod: the vendor refused the credential".into(),
            count: 1,
            ..Group::default()
        };
        assert_eq!(
            group_text(&g),
            "[auth_failed] lever_prod: the vendor refused the credential"
        );
    }

    #[test]
    fn message_ids_are_stable_and_safe_in_an_email_header() {
        let n = notification("run:r-1", "it_mail", "x".into(), None);
        assert_eq!(n.id, "run-r-1.it_mail".replace('_', "-"));
        assert_eq!(n.subject, "[rolecall] x");
    }

    #[test]
    fn a_label_leads_the_subject_and_the_text_and_no_label_changes_nothing() {
        let n = notification("run:r-1", "ops", "x\ny".into(), None);
        assert_eq!(n.subject, "[rolecall] x");
        assert_eq!(n.text, "x\ny");
        let n = notification("run:r-1", "ops", "x\ny".into(), Some("prod"));
        assert_eq!(n.subject, "[rolecall prod] x");
        assert_eq!(n.text, "[prod] x\ny");
    }
}
