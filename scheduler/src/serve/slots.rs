//! When a workflow's run starts: the decision, kept pure so it is tested
//! without clocks or servers.
//!
//! The last slot a workflow fired is remembered in Redis. A slot is due
//! when the schedule's next slot after it has passed; then only the latest
//! passed slot runs, so a scheduler that was down for a week starts one
//! run on its return, not seven.

use chrono::{DateTime, Utc};
use rolecall_common::config::{Overlap, Schedule};

/// What a workflow does at this tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing is due.
    Idle,
    /// Start a run for this slot.
    Start {
        /// The slot.
        slot: DateTime<Utc>,
        /// Whether it had been queued behind a previous run.
        queued: bool,
        /// Whether a queued slot is to be dropped: it started now, or a
        /// newer slot came due meanwhile and stands for it (several slots
        /// behind one run are one run; the older one must not start after).
        clears_queue: bool,
    },
    /// The slot is due but the previous run is in progress: drop it.
    Skip(DateTime<Utc>),
    /// The slot is due but the previous run is in progress: run it after.
    Queue(DateTime<Utc>),
}

/// Decides for one workflow: `last` is the last slot fired (or dropped,
/// or queued), `queued` a slot waiting for the previous run to finish.
pub fn decide(
    schedule: &Schedule,
    overlap: Overlap,
    last: DateTime<Utc>,
    queued: Option<DateTime<Utc>>,
    in_progress: bool,
    now: DateTime<Utc>,
) -> Decision {
    let due = schedule
        .next_after(last)
        .filter(|next| *next <= now)
        .and_then(|_| schedule.latest_at_or_before(now));
    match (due, in_progress, overlap) {
        (Some(slot), false, _) => Decision::Start {
            slot,
            queued: false,
            clears_queue: queued.is_some(),
        },
        (Some(slot), true, Overlap::Skip) => Decision::Skip(slot),
        (Some(slot), true, Overlap::Queue) => Decision::Queue(slot),
        (None, false, _) => match queued {
            Some(slot) => Decision::Start {
                slot,
                queued: true,
                clears_queue: true,
            },
            None => Decision::Idle,
        },
        (None, true, _) => Decision::Idle,
    }
}

/// The id of a workflow's run for a slot: one run per slot, whichever
/// leader starts it.
pub fn run_id(workflow: &str, slot: DateTime<Utc>) -> String {
    format!("{workflow}-{}", slot.format("%Y%m%dT%H%M%SZ"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn daily() -> Schedule {
        Schedule::parse("0 2 * * *", "Europe/Berlin").unwrap()
    }

    #[test]
    fn a_week_of_missed_slots_starts_one_run_for_the_latest() {
        let d = decide(
            &daily(),
            Overlap::Skip,
            utc("2026-11-20T01:00:00Z"),
            None,
            false,
            utc("2026-11-27T09:00:00Z"),
        );
        assert_eq!(
            d,
            Decision::Start {
                slot: utc("2026-11-27T01:00:00Z"),
                queued: false,
                clears_queue: false,
            }
        );
    }

    #[test]
    fn nothing_is_due_before_the_next_slot() {
        let d = decide(
            &daily(),
            Overlap::Skip,
            utc("2026-11-27T01:00:00Z"),
            None,
            false,
            utc("2026-11-28T00:59:59Z"),
        );
        assert_eq!(d, Decision::Idle);
    }

    #[test]
    fn a_due_slot_is_skipped_or_queued_while_the_previous_run_is_in_progress() {
        let last = utc("2026-11-26T01:00:00Z");
        let now = utc("2026-11-27T01:00:05Z");
        let slot = utc("2026-11-27T01:00:00Z");
        assert_eq!(
            decide(&daily(), Overlap::Skip, last, None, true, now),
            Decision::Skip(slot)
        );
        assert_eq!(
            decide(&daily(), Overlap::Queue, last, None, true, now),
            Decision::Queue(slot)
        );
    }

    #[test]
    fn a_queued_slot_starts_once_the_previous_run_finished_and_waits_while_it_runs() {
        let last = utc("2026-11-27T01:00:00Z");
        let now = utc("2026-11-27T05:00:00Z");
        assert_eq!(
            decide(&daily(), Overlap::Queue, last, Some(last), true, now),
            Decision::Idle
        );
        assert_eq!(
            decide(&daily(), Overlap::Queue, last, Some(last), false, now),
            Decision::Start {
                slot: last,
                queued: true,
                clears_queue: true,
            }
        );
    }

    #[test]
    fn a_slot_due_after_the_run_finished_replaces_the_one_queued_behind_it() {
        // 02:00 was queued behind a run that finished only after 02:00 the
        // next day had passed: that slot starts, and the queued one is
        // dropped rather than started after it, out of order.
        let queued = utc("2026-11-27T01:00:00Z");
        let now = utc("2026-11-28T01:30:00Z");
        assert_eq!(
            decide(&daily(), Overlap::Queue, queued, Some(queued), false, now),
            Decision::Start {
                slot: utc("2026-11-28T01:00:00Z"),
                queued: false,
                clears_queue: true,
            }
        );
    }

    #[test]
    fn run_ids_name_the_workflow_and_the_slot_in_utc() {
        assert_eq!(
            run_id("nightly", utc("2026-11-27T01:00:00Z")),
            "nightly-20261127T010000Z"
        );
    }
}
