//! Workflows: which SaaS apps are checked when, from which inventory, with
//! which criteria (`[workflow.<name>]`).
//!
//! A schedule is a cron pattern read by `croner` (five fields, or six with
//! seconds first; `@daily`-style aliases; shorthands `hourly`, `daily`,
//! `weekly`, `monthly`) in an IANA time zone (`chrono-tz`), so "02:00 in
//! Berlin" stays 02:00 across daylight-saving changes: a slot inside a
//! spring-forward gap fires at the first instant after the gap, and a slot
//! in a fall-back hour fires once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use serde::Deserialize;

use super::criteria::{self, Criteria, RawCriteria};
use super::is_name;

/// A workflow as the configuration writes it.
#[allow(missing_docs)]
#[derive(Debug, Deserialize, Default)]
pub struct RawWorkflow {
    #[serde(default)]
    pub schedule: String,
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub apps: Vec<String>,
    #[serde(default)]
    pub inventory: String,
    #[serde(default)]
    pub criteria: Option<RawCriteria>,
    #[serde(default)]
    pub overlap: Option<String>,
}

/// What happens when a slot comes while the workflow's previous run is
/// still in progress (publishing, or jobs without an outcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// The slot is dropped (logged); the next slot is the next chance.
    Skip,
    /// The slot waits and starts as soon as the previous run finishes;
    /// several waiting slots are one run, not a backlog.
    Queue,
}

/// A validated workflow.
#[derive(Debug, Clone)]
pub struct WorkflowSettings {
    /// Its name (part of its runs' ids).
    pub name: String,
    /// When it runs.
    pub schedule: Schedule,
    /// SaaS apps it checks.
    pub apps: Vec<String>,
    /// The inventory file read at each run, or `redis:inventory` for
    /// Rolecall's own inventory in Redis.
    pub inventory: PathBuf,
    /// Which rows it checks; `None` means each app's own criteria.
    pub criteria: Option<Criteria>,
    /// What a slot does while the previous run is in progress.
    pub overlap: Overlap,
}

/// A cron pattern in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    text: String,
    cron: Cron,
    tz: Tz,
}

impl Schedule {
    /// Parses a pattern (or shorthand) and a time zone name.
    pub fn parse(pattern: &str, timezone: &str) -> Result<Schedule, String> {
        let tz = Tz::from_str(timezone.trim()).map_err(|_| {
            format!("`{timezone}` is not an IANA time zone (like \"Europe/Berlin\" or \"UTC\")")
        })?;
        let Some(expanded) = expand(pattern) else {
            return Err("missing: a cron pattern like \"0 2 * * *\", or daily/weekly".into());
        };
        let cron = Cron::from_str(&expanded).map_err(|e| {
            format!("`{pattern}` is not a cron pattern like \"0 2 * * *\" or daily/weekly ({e})")
        })?;
        Ok(Schedule {
            text: pattern.trim().to_string(),
            cron,
            tz,
        })
    }

    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The last slot at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&t.with_timezone(&self.tz), true)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The time zone.
    pub fn timezone(&self) -> Tz {
        self.tz
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.text, self.tz)
    }
}

fn expand(pattern: &str) -> Option<String> {
    let p = pattern.trim();
    if p.is_empty() {
        return None;
    }
    Some(match p.to_ascii_lowercase().as_str() {
        "hourly" | "daily" | "weekly" | "monthly" => format!("@{p}"),
        _ => p.to_string(),
    })
}

/// Validates every `[workflow.<name>]` table.
pub fn validate_workflows(
    raw: BTreeMap<String, RawWorkflow>,
    apps: &BTreeMap<String, super::RawSaas>,
    bad: &mut dyn FnMut(String, String),
) -> BTreeMap<String, WorkflowSettings> {
    let mut out = BTreeMap::new();
    for (name, w) in raw {
        let key = |k: &str| format!("workflow.{name}.{k}");
        let mut ok = true;
        if !is_name(&name) {
            bad(
                format!("workflow.{name}"),
                "workflow names use lower-case letters, digits, '_' and '-'".into(),
            );
            ok = false;
        }
        let tz = w.timezone.as_deref().unwrap_or("UTC");
        let schedule = match Schedule::parse(&w.schedule, tz) {
            Ok(s) => Some(s),
            Err(reason) => {
                let k = if reason.contains("time zone") {
                    "timezone"
                } else {
                    "schedule"
                };
                bad(key(k), reason);
                None
            }
        };
        if w.apps.is_empty() {
            bad(key("apps"), "list at least one SaaS app".into());
            ok = false;
        }
        for app in &w.apps {
            if !apps.contains_key(app) {
                bad(
                    key("apps"),
                    format!("SaaS app `{app}` has no [saas.{app}] table"),
                );
                ok = false;
            }
        }
        if w.inventory.trim().is_empty() {
            bad(
                key("inventory"),
                "missing: the inventory file to read (or `redis:inventory`)".into(),
            );
            ok = false;
        }
        let criteria = match &w.criteria {
            None => None,
            Some(raw) => match criteria::validate(&key("criteria"), raw, bad) {
                Some(c) => Some(c),
                None => {
                    ok = false;
                    None
                }
            },
        };
        let overlap = match w.overlap.as_deref().unwrap_or("skip") {
            "skip" => Overlap::Skip,
            "queue" => Overlap::Queue,
            other => {
                bad(
                    key("overlap"),
                    format!("`{other}` is not one of: skip, queue"),
                );
                ok = false;
                Overlap::Skip
            }
        };
        if let (Some(schedule), true) = (schedule, ok) {
            out.insert(
                name.clone(),
                WorkflowSettings {
                    name,
                    schedule,
                    apps: w.apps,
                    inventory: PathBuf::from(w.inventory.trim()),
                    criteria,
                    overlap,
                },
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn berlin_at_two_stays_at_two_local_across_both_dst_changes() {
        let s = Schedule::parse("0 2 * * *", "Europe/Berlin").unwrap();
        // Winter: CET = UTC+1.
        assert_eq!(
            s.next_after(utc("2026-01-10T12:00:00Z")),
            Some(utc("2026-01-11T01:00:00Z"))
        );
        // Summer: CEST = UTC+2.
        assert_eq!(
            s.next_after(utc("2026-07-10T12:00:00Z")),
            Some(utc("2026-07-11T00:00:00Z"))
        );
        // 2026-03-29: 02:00 local does not exist (02:00 → 03:00); the slot
        // fires at the first instant after the gap (03:00 CEST = 01:00 UTC), once.
        let gap = s.next_after(utc("2026-03-28T12:00:00Z")).unwrap();
        assert_eq!(gap, utc("2026-03-29T01:00:00Z"));
        assert_eq!(s.next_after(gap), Some(utc("2026-03-30T00:00:00Z")));
        // 2026-10-25: back to CET the night after.
        assert_eq!(
            s.next_after(utc("2026-10-24T12:00:00Z")),
            Some(utc("2026-10-25T00:00:00Z"))
        );
        assert_eq!(
            s.next_after(utc("2026-10-25T12:00:00Z")),
            Some(utc("2026-10-26T01:00:00Z"))
        );
    }

    #[test]
    fn a_slot_in_the_repeated_hour_fires_once() {
        // 2026-10-25 02:30 happens twice in Berlin (CEST, then CET).
        let s = Schedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
        let first = s.next_after(utc("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(first, utc("2026-10-25T00:30:00Z"));
        assert_eq!(s.next_after(first), Some(utc("2026-10-26T01:30:00Z")));
    }

    #[test]
    fn new_york_and_sydney_change_on_their_own_dates() {
        let ny = Schedule::parse("0 9 * * 1-5", "America/New_York").unwrap();
        // Fri 2026-03-06 (EST, UTC-5) → Mon 2026-03-09 after the change (EDT, UTC-4).
        assert_eq!(
            ny.next_after(utc("2026-03-06T15:00:00Z")),
            Some(utc("2026-03-09T13:00:00Z"))
        );
        let syd = Schedule::parse("weekly", "Australia/Sydney").unwrap();
        // Sunday midnight; Sydney leaves daylight time on 2026-04-05 (UTC+11 → +10).
        assert_eq!(
            syd.next_after(utc("2026-04-01T00:00:00Z")),
            Some(utc("2026-04-04T13:00:00Z"))
        );
        assert_eq!(
            syd.next_after(utc("2026-04-05T00:00:00Z")),
            Some(utc("2026-04-11T14:00:00Z"))
        );
    }

    #[test]
    fn the_latest_slot_is_found_for_a_missed_backlog() {
        let s = Schedule::parse("daily", "UTC").unwrap();
        assert_eq!(
            s.latest_at_or_before(utc("2026-11-30T16:00:00Z")),
            Some(utc("2026-11-30T00:00:00Z"))
        );
        let every_two = Schedule::parse("*/2 * * * * *", "UTC").unwrap();
        assert_eq!(
            every_two.next_after(utc("2026-11-30T16:00:01Z")),
            Some(utc("2026-11-30T16:00:02Z"))
        );
    }

    #[test]
    fn bad_schedules_and_zones_say_why() {
        assert!(
            Schedule::parse("0 2 * *", "UTC")
                .unwrap_err()
                .contains("not a cron pattern")
        );
        assert!(
            Schedule::parse("0 2 * * *", "Europe/Berlinn")
                .unwrap_err()
                .contains("time zone")
        );
        assert!(Schedule::parse(" ", "UTC").unwrap_err().contains("missing"));
    }
}
