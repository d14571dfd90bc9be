//! The people who exist at the simulated vendor.
//!
//! The sim and the inventory generator must agree on who exists without sharing
//! anything but `(users, seed, domain)`, so the population is a pure function of
//! its inputs: a demo can start `serve` and `inventory` as separate processes and
//! still get matching emails.

use rand::seq::index;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Serialize;

use crate::vendors::lever::LEVER_ROLES;

/// Relative weights for [`LEVER_ROLES`]: real accounts have a handful of super
/// admins and are mostly team members and interviewers.
const ROLE_WEIGHTS: [u32; LEVER_ROLES.len()] = [2, 8, 40, 20, 30];

/// 2019-01-01T00:00:00Z. A fixed origin keeps `createdAt` deterministic.
const FIRST_CREATED_AT_MS: i64 = 1_546_300_800_000;
/// Accounts are spread over six years whatever the population size, so large
/// populations do not end up "created" in the future.
const CREATION_SPAN_MS: i64 = 6 * 365 * DAY_MS;
const DAY_MS: i64 = 86_400_000;

/// Mixed into the seed for the deactivation draw, so that changing
/// `deactivated_ratio` leaves ids, names, emails and roles untouched.
const DEACTIVATION_SALT: u64 = 0xD1CE_5EED_0000_0001;

/// Every n-th user's `name` is their email, as seen in real Lever payloads for
/// accounts created by invitation.
const NAME_IS_EMAIL_EVERY: usize = 50;

const FIRST_NAMES: [&str; 24] = [
    "Ada", "Ben", "Chloe", "Dmitri", "Elena", "Farah", "Gustav", "Hana", "Ivan", "Jonas", "Keiko",
    "Liam", "Maya", "Nadia", "Omar", "Priya", "Quentin", "Rosa", "Sven", "Tariq", "Uma", "Vera",
    "Wen", "Zoe",
];

const LAST_NAMES: [&str; 24] = [
    "Abbott",
    "Brandt",
    "Costa",
    "Dubois",
    "Eriksen",
    "Fischer",
    "Garcia",
    "Haddad",
    "Ito",
    "Jensen",
    "Kowalski",
    "Lindqvist",
    "Moreau",
    "Nakamura",
    "Okafor",
    "Petrov",
    "Quinn",
    "Rossi",
    "Schmidt",
    "Tanaka",
    "Ueda",
    "Varga",
    "Weber",
    "Young",
];

/// A user as the vendor stores it; vendor modules render it in their own shape.
#[derive(Clone, Debug, Serialize)]
pub struct SimUser {
    pub id: String,
    /// Always lower-case: clients that forget to lower-case their lookups must miss.
    pub email: String,
    pub name: String,
    pub access_role: String,
    /// Epoch milliseconds.
    pub created_at: i64,
    /// Epoch milliseconds; `None` for active users.
    pub deactivated_at: Option<i64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Population {
    pub users: Vec<SimUser>,
}

impl Population {
    /// Case-insensitive, unlike the vendor API: tests ask "what should the worker
    /// have found for this inventory row?", and inventory rows may be capitalised.
    pub fn by_email(&self, email: &str) -> Option<&SimUser> {
        self.users
            .iter()
            .find(|user| user.email.eq_ignore_ascii_case(email))
    }
}

/// `deactivated_ratio` is clamped to `0.0..=1.0`; exactly
/// `round(users * ratio)` users are deactivated.
pub fn generate_population(
    users: usize,
    seed: u64,
    email_domain: &str,
    deactivated_ratio: f64,
) -> Population {
    let domain = email_domain.trim_start_matches('@').to_ascii_lowercase();
    let mut rng = StdRng::seed_from_u64(seed);
    let mean_step_ms = (CREATION_SPAN_MS / i64::try_from(users.max(1)).unwrap_or(i64::MAX)).max(1);

    let mut created_at = FIRST_CREATED_AT_MS;
    let mut generated: Vec<SimUser> = (0..users)
        .map(|i| {
            let first = FIRST_NAMES[rng.random_range(0..FIRST_NAMES.len())];
            let last = LAST_NAMES[rng.random_range(0..LAST_NAMES.len())];
            let email = format!(
                "{}.{}.{}@{domain}",
                first.to_ascii_lowercase(),
                last.to_ascii_lowercase(),
                i + 1
            );
            let name = if (i + 1).is_multiple_of(NAME_IS_EMAIL_EVERY) {
                email.clone()
            } else {
                format!("{first} {last}")
            };
            let access_role = pick_role(&mut rng).to_owned();
            created_at += rng.random_range(1..=2 * mean_step_ms);
            SimUser {
                id: uuid_v4(&mut rng),
                email,
                name,
                access_role,
                created_at,
                deactivated_at: None,
            }
        })
        .collect();

    deactivate_some(&mut generated, seed, deactivated_ratio);
    Population { users: generated }
}

fn deactivate_some(users: &mut [SimUser], seed: u64, ratio: f64) {
    let ratio = if ratio.is_nan() {
        0.0
    } else {
        ratio.clamp(0.0, 1.0)
    };
    let count = ((users.len() as f64) * ratio).round() as usize;
    let count = count.min(users.len());
    let mut rng = StdRng::seed_from_u64(seed ^ DEACTIVATION_SALT);
    let last_day = FIRST_CREATED_AT_MS + CREATION_SPAN_MS + 30 * DAY_MS;
    for i in index::sample(&mut rng, users.len(), count) {
        let user = &mut users[i];
        let until = last_day.max(user.created_at + DAY_MS);
        user.deactivated_at = Some(rng.random_range(user.created_at + DAY_MS..=until));
    }
}

fn pick_role(rng: &mut StdRng) -> &'static str {
    let total: u32 = ROLE_WEIGHTS.iter().sum();
    let mut ticket = rng.random_range(0..total);
    for (role, weight) in LEVER_ROLES.iter().zip(ROLE_WEIGHTS) {
        if ticket < weight {
            return role;
        }
        ticket -= weight;
    }
    LEVER_ROLES[LEVER_ROLES.len() - 1]
}

/// Random-version UUID text, drawn from the seeded generator so ids repeat per seed.
fn uuid_v4(rng: &mut StdRng) -> String {
    let mut bytes: [u8; 16] = rng.random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn equal_inputs_give_equal_populations() {
        let a = generate_population(300, 42, "example.com", 0.05);
        let b = generate_population(300, 42, "example.com", 0.05);
        assert_eq!(serde_json::to_value(&a).ok(), serde_json::to_value(&b).ok());
        let c = generate_population(300, 43, "example.com", 0.05);
        assert_ne!(a.users[0].id, c.users[0].id);
    }

    #[test]
    fn deactivation_ratio_does_not_change_identities() {
        let a = generate_population(200, 7, "example.com", 0.0);
        let b = generate_population(200, 7, "example.com", 0.5);
        for (x, y) in a.users.iter().zip(&b.users) {
            assert_eq!(
                (&x.id, &x.email, &x.access_role),
                (&y.id, &y.email, &y.access_role)
            );
        }
        assert_eq!(
            a.users
                .iter()
                .filter(|u| u.deactivated_at.is_some())
                .count(),
            0
        );
        assert_eq!(
            b.users
                .iter()
                .filter(|u| u.deactivated_at.is_some())
                .count(),
            100
        );
    }

    #[test]
    fn users_look_like_lever_users() {
        let population = generate_population(1000, 1, "Example.COM", 0.05);
        let emails: HashSet<&str> = population.users.iter().map(|u| u.email.as_str()).collect();
        let ids: HashSet<&str> = population.users.iter().map(|u| u.id.as_str()).collect();
        assert_eq!(emails.len(), 1000);
        assert_eq!(ids.len(), 1000);
        for user in &population.users {
            assert_eq!(user.email, user.email.to_lowercase());
            assert!(user.email.ends_with("@example.com"));
            assert_eq!(user.id.len(), 36);
            assert_eq!(user.id.as_bytes()[14], b'4');
            assert!(LEVER_ROLES.contains(&user.access_role.as_str()));
            if let Some(at) = user.deactivated_at {
                assert!(at > user.created_at);
            }
        }
        assert!(
            population
                .users
                .windows(2)
                .all(|w| w[0].created_at < w[1].created_at)
        );
        let super_admins = population
            .users
            .iter()
            .filter(|u| u.access_role == "super admin")
            .count();
        assert!((5..=60).contains(&super_admins), "{super_admins}");
    }

    #[test]
    fn by_email_ignores_case() {
        let population = generate_population(10, 1, "example.com", 0.0);
        let email = population.users[3].email.to_uppercase();
        assert_eq!(
            population.by_email(&email).map(|u| &u.id),
            Some(&population.users[3].id)
        );
        assert!(population.by_email("nobody@example.com").is_none());
    }
}
