//! The people who exist at the simulated vendor.
//!
//! The sim and the inventory generator must agree on who exists without sharing
//! anything but `(users, seed, domain)`, so the population is a pure function of
//! its inputs: a demo can start `serve` and `inventory` as separate processes and
//! still get matching emails.
//!
//! Every vendor gets the same people (ids aside): the same emails, names,
//! creation dates and the same deactivated users for equal inputs. What
//! differs per vendor — role, licence, status, the vendor's own ids — is drawn
//! afterwards from a generator seeded per user, so it never shifts anybody
//! else's draws and Lever populations stay exactly as they always were.

use rand::seq::index;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Serialize;
use serde_json::{Value, json};

use crate::vendors::lever::LEVER_ROLES;
use crate::vendors::{Vendor, github, mosyle, okta, scim, zoom};

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
/// Mixed into each user's seed for vendor-specific attributes.
const VENDOR_SALT: u64 = 0x7E4D_0125_0000_0003;

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
///
/// Which field a connector should read as the user's role, and how a
/// deactivated user (`deactivated_at` set) shows, per vendor:
///
/// | vendor | `id` | role (`access_role`) | `extra` | deactivated |
/// |---|---|---|---|---|
/// | Lever | UUID | `accessRole` | `{}` | `deactivatedAt` set; hidden unless `includeDeactivated` |
/// | Mosyle Business | `iduser` (numeric string) | `type`: ENDUSER, GROUP_ADMIN, ADMIN | `iduser`, `identifier`, `email` as stored (every 5th capitalised), `type`, `is_removed` | `is_removed: true`, still listed |
/// | Mosyle Manager | `id` (UUID) | `type`: STUDENT, TEACHER, STAFF, LOCATION_LEADER, ADMIN, ACCOUNT_ADMIN, DISTRICT_ADMIN | `id`, `email` as stored (every 5th capitalised), `type`, `managedappleid`, `grades`, `locations`, `account` | not listed (Manager has no removed flag) |
/// | Miro SCIM | numeric string | primary `roles[]` value of type `organization_user_role`: ORGANIZATION_INTERNAL_USER, ORGANIZATION_INTERNAL_ADMIN; licence in `userType` | `userType` (Full, Free, Free Restricted, Occasional), `roles`, `groups`, `active` | `active: false` |
/// | generic SCIM | UUID | primary `roles[]` value: viewer, editor, admin | `userType` (Employee, Contractor), `roles`, `entitlements` (basic, pro, enterprise), `groups` (Viewers, Editors, Admins), `active` | `active: false` |
/// | Okta | `00u…` | `type` of `/users/{id}/roles` entries (READ_ONLY_ADMIN, USER_ADMIN, ORG_ADMIN, SUPER_ADMIN); `""` for the many with no admin role | `status`, `roles` (list of types) | `status` DEPROVISIONED or SUSPENDED; still found by search and by id |
/// | GitHub | numeric user id | membership `role`: member, admin, billing_manager; `state` active or pending | `id` (number), `login`, `role`, `state` (`null` when not a member) | not a member: 404 |
/// | Zoom | 22-char id | `role_name`: Member, Admin, Owner; licence in `type` (1 Basic, 2 Licensed, 4 Unassigned) | `type`, `role_name`, `role_id`, `status` | `status: "inactive"` |
#[derive(Clone, Debug, Serialize)]
pub struct SimUser {
    /// The vendor's id for the user (see the table).
    pub id: String,
    /// Always lower-case: clients that forget to lower-case their lookups must miss.
    /// Vendors that store mixed case (Mosyle) show theirs in `extra["email"]`.
    pub email: String,
    /// "First Last"; for Lever every 50th user's name is their email.
    pub name: String,
    /// The vendor's role string (see the table).
    pub access_role: String,
    /// Epoch milliseconds.
    pub created_at: i64,
    /// Epoch milliseconds; `None` for active users.
    pub deactivated_at: Option<i64>,
    /// The user's GitHub username, the key a GitHub lookup needs: the email's
    /// local part with `.` turned into `-` (`ada.abbott.3` → `ada-abbott-3`).
    /// Set for every vendor; only the GitHub sim serves it.
    pub github_login: String,
    /// Vendor-specific attributes as the vendor stores them (see the table).
    pub extra: Value,
}

impl SimUser {
    /// Given and family name, from the email (so even users whose `name` is
    /// their email have them).
    pub fn given_and_family_name(&self) -> (String, String) {
        let local = self.email.split('@').next().unwrap_or_default();
        let mut parts = local.split('.').map(capitalise);
        let given = parts.next().unwrap_or_default();
        let family = parts.next().unwrap_or_default();
        (given, family)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Population {
    pub vendor: Vendor,
    pub users: Vec<SimUser>,
}

impl Population {
    /// Maps a key of every user to the user's index, for a vendor's lookups
    /// (by id, by stored e-mail, by lower-cased login, …).
    pub fn index_by(
        &self,
        key: impl Fn(&SimUser) -> String,
    ) -> std::collections::HashMap<String, usize> {
        self.users
            .iter()
            .enumerate()
            .map(|(i, u)| (key(u), i))
            .collect()
    }

    /// Case-insensitive, unlike the vendor API: tests ask "what should the worker
    /// have found for this inventory row?", and inventory rows may be capitalised.
    pub fn by_email(&self, email: &str) -> Option<&SimUser> {
        self.users
            .iter()
            .find(|user| user.email.eq_ignore_ascii_case(email))
    }

    /// Case-insensitive, as GitHub logins are.
    pub fn by_github_login(&self, login: &str) -> Option<&SimUser> {
        self.users
            .iter()
            .find(|user| user.github_login.eq_ignore_ascii_case(login))
    }
}

/// What a vendor adds to a generated user.
pub(crate) struct Profile {
    /// Replaces the UUID when the vendor has ids of its own.
    pub(crate) id: Option<String>,
    pub(crate) access_role: String,
    pub(crate) extra: Value,
}

/// The Lever population: `generate_vendor_population(Vendor::Lever, ...)`.
pub fn generate_population(
    users: usize,
    seed: u64,
    email_domain: &str,
    deactivated_ratio: f64,
) -> Population {
    generate_vendor_population(Vendor::Lever, users, seed, email_domain, deactivated_ratio)
}

/// `deactivated_ratio` is clamped to `0.0..=1.0`; exactly
/// `round(users * ratio)` users are deactivated, the same ones for every vendor.
pub fn generate_vendor_population(
    vendor: Vendor,
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
                github_login: email
                    .split('@')
                    .next()
                    .unwrap_or_default()
                    .replace('.', "-"),
                email,
                name,
                access_role,
                created_at,
                deactivated_at: None,
                extra: json!({}),
            }
        })
        .collect();

    deactivate_some(&mut generated, seed, deactivated_ratio);
    if vendor != Vendor::Lever {
        for (i, user) in generated.iter_mut().enumerate() {
            // Only Lever shows emails as names.
            let (given, family) = user.given_and_family_name();
            user.name = format!("{given} {family}");
            let mut rng = StdRng::seed_from_u64(user_seed(seed, vendor, i));
            let profile = vendor_profile(vendor, &mut rng, i, user);
            if let Some(id) = profile.id {
                user.id = id;
            }
            user.access_role = profile.access_role;
            user.extra = profile.extra;
        }
    }
    Population {
        vendor,
        users: generated,
    }
}

fn user_seed(seed: u64, vendor: Vendor, index: usize) -> u64 {
    let tag = Vendor::ALL.iter().position(|v| *v == vendor).unwrap_or(0) as u64;
    seed ^ VENDOR_SALT ^ (tag << 56) ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn vendor_profile(vendor: Vendor, rng: &mut StdRng, index: usize, user: &SimUser) -> Profile {
    match vendor {
        // Drawn in the main loop, for compatibility with earlier populations.
        Vendor::Lever => Profile {
            id: None,
            access_role: user.access_role.clone(),
            extra: json!({}),
        },
        Vendor::MosyleBusiness => mosyle::business_profile(rng, index, user),
        Vendor::MosyleManager => mosyle::manager_profile(rng, index, user),
        Vendor::MiroScim => scim::miro_profile(rng, index, user),
        Vendor::Scim => scim::generic_profile(rng, user),
        Vendor::Okta => okta::profile(rng, user),
        Vendor::Github => github::profile(rng, index, user),
        Vendor::Zoom => zoom::profile(rng, user),
    }
}

/// One of `choices`, with probability proportional to its weight.
pub(crate) fn weighted<T: Copy>(rng: &mut StdRng, choices: &[(T, u32)]) -> T {
    let total: u32 = choices.iter().map(|(_, weight)| weight).sum();
    let mut ticket = rng.random_range(0..total.max(1));
    for &(choice, weight) in choices {
        if ticket < weight {
            return choice;
        }
        ticket -= weight;
    }
    choices[choices.len() - 1].0
}

/// `len` characters drawn from `alphabet`.
pub(crate) fn random_chars(rng: &mut StdRng, alphabet: &[u8], len: usize) -> String {
    (0..len)
        .map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())]))
        .collect()
}

pub(crate) fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
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

/// Draws exactly as it always has, so Lever populations do not change.
fn pick_role(rng: &mut StdRng) -> &'static str {
    let choices: [(&'static str, u32); LEVER_ROLES.len()] =
        std::array::from_fn(|i| (LEVER_ROLES[i], ROLE_WEIGHTS[i]));
    weighted(rng, &choices)
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
    fn every_vendor_gets_the_same_people_with_its_own_roles() {
        let lever = generate_population(400, 9, "example.com", 0.1);
        for vendor in Vendor::ALL {
            let population = generate_vendor_population(vendor, 400, 9, "example.com", 0.1);
            let again = generate_vendor_population(vendor, 400, 9, "example.com", 0.1);
            assert_eq!(
                serde_json::to_value(&population).ok(),
                serde_json::to_value(&again).ok(),
                "{vendor}"
            );
            assert_eq!(population.vendor, vendor);
            let ids: HashSet<&str> = population.users.iter().map(|u| u.id.as_str()).collect();
            assert_eq!(ids.len(), 400, "{vendor}: ids are unique");
            for (user, base) in population.users.iter().zip(&lever.users) {
                assert_eq!(
                    (
                        &user.email,
                        user.created_at,
                        user.deactivated_at,
                        &user.github_login
                    ),
                    (
                        &base.email,
                        base.created_at,
                        base.deactivated_at,
                        &base.github_login
                    ),
                );
            }
            let roles: Vec<&str> = population
                .users
                .iter()
                .map(|u| u.access_role.as_str())
                .collect();
            let allowed: Vec<&str> = match vendor {
                Vendor::Lever => LEVER_ROLES.to_vec(),
                Vendor::MosyleBusiness => crate::MOSYLE_BUSINESS_TYPES.to_vec(),
                Vendor::MosyleManager => crate::MOSYLE_MANAGER_TYPES.to_vec(),
                Vendor::MiroScim => crate::MIRO_ROLES.to_vec(),
                Vendor::Scim => crate::SCIM_ROLES.to_vec(),
                Vendor::Okta => [&[""][..], &crate::OKTA_ROLES[..]].concat(),
                Vendor::Github => crate::GITHUB_ROLES.to_vec(),
                Vendor::Zoom => crate::ZOOM_ROLES.iter().map(|(name, _)| *name).collect(),
            };
            assert!(
                roles.iter().all(|r| allowed.contains(r)),
                "{vendor}: {roles:?}"
            );
            // The first role listed is the common one, and there is variety.
            let common = roles.iter().filter(|r| **r == allowed[0]).count();
            let distinct: HashSet<&&str> = roles.iter().collect();
            if vendor != Vendor::Lever {
                assert!(common > 200, "{vendor}: {common}");
            }
            assert!(distinct.len() >= 2, "{vendor}");
        }
    }

    #[test]
    fn vendor_records_show_deactivation_their_way() {
        let status = |vendor, key: &str| -> Vec<(bool, Value)> {
            generate_vendor_population(vendor, 200, 3, "example.com", 0.2)
                .users
                .iter()
                .map(|u| (u.deactivated_at.is_some(), u.extra[key].clone()))
                .collect()
        };
        for (gone, removed) in status(Vendor::MosyleBusiness, "is_removed") {
            assert_eq!(removed, Value::Bool(gone));
        }
        for vendor in [Vendor::MiroScim, Vendor::Scim] {
            for (gone, active) in status(vendor, "active") {
                assert_eq!(active, Value::Bool(!gone));
            }
        }
        for (gone, state) in status(Vendor::Okta, "status") {
            let state = state.as_str().unwrap_or_default().to_owned();
            assert_eq!(
                gone,
                state == "DEPROVISIONED" || state == "SUSPENDED",
                "{state}"
            );
        }
        for (gone, state) in status(Vendor::Github, "state") {
            assert_eq!(gone, state.is_null());
        }
        for (gone, state) in status(Vendor::Zoom, "status") {
            assert_eq!(gone, state == "inactive");
        }
        let mosyle = generate_vendor_population(Vendor::MosyleBusiness, 20, 3, "example.com", 0.0);
        for (i, user) in mosyle.users.iter().enumerate() {
            let stored = user.extra["email"].as_str().unwrap_or_default();
            assert!(stored.eq_ignore_ascii_case(&user.email));
            assert_eq!(stored != user.email, (i + 1) % 5 == 0, "{stored}");
        }
        let github = generate_vendor_population(Vendor::Github, 3, 3, "example.com", 0.0);
        let user = &github.users[0];
        assert_eq!(
            user.github_login,
            user.email
                .split('@')
                .next()
                .unwrap_or_default()
                .replace('.', "-")
        );
        assert_eq!(
            github
                .by_github_login(&user.github_login.to_uppercase())
                .map(|u| &u.id),
            Some(&user.id)
        );
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
