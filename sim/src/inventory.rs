//! The scheduler's input: a CSV inventory of who the company believes has an
//! account at which SaaS.
//!
//! It is built from the same population the sim serves, plus the usual mess of
//! a real inventory — people the vendor has never heard of, deactivated
//! employees, emails typed with a capital letter — so that every path through
//! the fleet gets exercised.

use std::io::Write;

use chrono::{DateTime, SecondsFormat};
use rand::seq::index;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

use crate::population::Population;
use crate::vendors::Vendor;

/// Mixed into the seed so the inventory's draws never mirror the population's.
const INVENTORY_SALT: u64 = 0x1D7E_A70F_0000_0002;
/// Every n-th row's email gets a capital first letter.
const CAPITALISE_EVERY: usize = 7;
/// Share of rows that carry an `ext-N` external id.
const EXTERNAL_ID_SHARE: f64 = 0.7;
/// 2026-01-01T00:00:00Z: last logins fall in the 120 days before it. Fixed so
/// equal inputs give byte-identical files.
const LAST_LOGIN_ANCHOR_SECS: i64 = 1_767_225_600;
const LAST_LOGIN_SPREAD_SECS: i64 = 120 * 86_400;

const DEPARTMENTS: [&str; 8] = [
    "Engineering",
    "Sales",
    "Recruiting",
    "People",
    "Finance",
    "Marketing",
    "Support",
    "Legal",
];

#[derive(Clone, Debug)]
pub struct InventorySpec {
    /// Row `r` goes to `saas[r % saas.len()]`.
    pub saas: Vec<String>,
    /// `round(missing_ratio * users)` extra rows for people the vendor doesn't know.
    pub missing_ratio: f64,
    /// Share of all rows with status `deactivated`.
    pub inactive_ratio: f64,
    pub seed: u64,
    pub email_domain: String,
    /// GitHub is looked up by login, not email, so for GitHub every row's
    /// `external_id` is the person's login (`SimUser::github_login`; for
    /// people the vendor doesn't know, a login nobody has). Other vendors get
    /// `ext-N` on a share of rows.
    pub vendor: Vendor,
}

/// One CSV row; field order is the CSV column order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryRow {
    pub saas: String,
    pub user_id: String,
    pub email: String,
    pub external_id: String,
    pub status: String,
    pub last_login: String,
    pub department: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InventorySummary {
    pub rows: usize,
    /// Row count per SaaS name, in `--saas` order.
    pub per_saas: Vec<(String, usize)>,
    /// Rows for people who do not exist at the vendor.
    pub missing: usize,
    pub deactivated: usize,
    pub capitalised: usize,
}

#[derive(Clone, Debug)]
pub struct Inventory {
    pub rows: Vec<InventoryRow>,
    pub summary: InventorySummary,
}

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("at least one SaaS name is needed")]
    NoSaas,
    #[error("SaaS names must not be empty")]
    EmptySaasName,
    #[error("{name} must be a finite number between 0 and {max}, not {value}")]
    Ratio {
        name: &'static str,
        value: f64,
        max: f64,
    },
    #[error("cannot write the inventory CSV")]
    Csv(#[from] csv::Error),
    #[error("cannot write the inventory CSV")]
    Io(#[from] std::io::Error),
}

pub fn build_inventory(
    population: &Population,
    spec: &InventorySpec,
) -> Result<Inventory, InventoryError> {
    validate(spec)?;
    let domain = spec
        .email_domain
        .trim_start_matches('@')
        .to_ascii_lowercase();
    let users = population.users.len();
    let missing = ratio_of(users, spec.missing_ratio);
    let total = users + missing;

    let known = population
        .users
        .iter()
        .map(|u| (u.email.clone(), u.github_login.clone()));
    let unknown = (1..=missing).map(|n| (format!("gone.{n}@{domain}"), format!("gone-{n}")));
    let mut rng = StdRng::seed_from_u64(spec.seed ^ INVENTORY_SALT);
    let mut rows: Vec<InventoryRow> = known
        .chain(unknown)
        .enumerate()
        .map(|(r, (email, login))| InventoryRow {
            saas: spec.saas[r % spec.saas.len()].clone(),
            user_id: format!("u-{:06}", r + 1),
            email: if r % CAPITALISE_EVERY == CAPITALISE_EVERY - 1 {
                capitalise(&email)
            } else {
                email
            },
            // Drawn for every vendor, so the other columns do not depend on it.
            external_id: match (rng.random_bool(EXTERNAL_ID_SHARE), spec.vendor) {
                (_, Vendor::Github) => login,
                (true, _) => format!("ext-{}", r + 1),
                (false, _) => String::new(),
            },
            status: "active".to_owned(),
            last_login: last_login(&mut rng),
            department: DEPARTMENTS[rng.random_range(0..DEPARTMENTS.len())].to_owned(),
        })
        .collect();

    let deactivated = ratio_of(total, spec.inactive_ratio);
    for r in index::sample(&mut rng, total, deactivated) {
        rows[r].status = "deactivated".to_owned();
    }

    let summary = InventorySummary {
        rows: total,
        per_saas: spec
            .saas
            .iter()
            .enumerate()
            .map(|(s, name)| (name.clone(), rows_for_saas(total, spec.saas.len(), s)))
            .collect(),
        missing,
        deactivated,
        capitalised: total / CAPITALISE_EVERY,
    };
    Ok(Inventory { rows, summary })
}

impl Inventory {
    /// Writes the header `saas,user_id,email,external_id,status,last_login,department`
    /// and one line per row.
    pub fn write_csv<W: Write>(&self, writer: W) -> Result<(), InventoryError> {
        let mut csv = csv::Writer::from_writer(writer);
        for row in &self.rows {
            csv.serialize(row)?;
        }
        if self.rows.is_empty() {
            csv.write_record([
                "saas",
                "user_id",
                "email",
                "external_id",
                "status",
                "last_login",
                "department",
            ])?;
        }
        csv.flush()?;
        Ok(())
    }
}

impl std::fmt::Display for InventorySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let per_saas: Vec<String> = self
            .per_saas
            .iter()
            .map(|(name, count)| format!("{name} {count}"))
            .collect();
        write!(
            f,
            "{} rows ({}); {} not at the vendor, {} deactivated, {} capitalised emails",
            self.rows,
            per_saas.join(", "),
            self.missing,
            self.deactivated,
            self.capitalised
        )
    }
}

fn validate(spec: &InventorySpec) -> Result<(), InventoryError> {
    if spec.saas.is_empty() {
        return Err(InventoryError::NoSaas);
    }
    if spec.saas.iter().any(|name| name.trim().is_empty()) {
        return Err(InventoryError::EmptySaasName);
    }
    let check = |name, value: f64, max| {
        if value.is_finite() && (0.0..=max).contains(&value) {
            Ok(())
        } else {
            Err(InventoryError::Ratio { name, value, max })
        }
    };
    check("missing ratio", spec.missing_ratio, 10.0)?;
    check("inactive ratio", spec.inactive_ratio, 1.0)
}

fn ratio_of(count: usize, ratio: f64) -> usize {
    ((count as f64) * ratio).round() as usize
}

fn rows_for_saas(total: usize, saas_count: usize, saas_index: usize) -> usize {
    total / saas_count + usize::from(saas_index < total % saas_count)
}

fn capitalise(email: &str) -> String {
    let mut chars = email.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

fn last_login(rng: &mut StdRng) -> String {
    let secs = LAST_LOGIN_ANCHOR_SECS - rng.random_range(0..LAST_LOGIN_SPREAD_SECS);
    DateTime::from_timestamp(secs, 0)
        .map(|at| at.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate_population;

    fn spec(saas: &[&str]) -> InventorySpec {
        InventorySpec {
            saas: saas.iter().map(|s| (*s).to_owned()).collect(),
            missing_ratio: 0.05,
            inactive_ratio: 0.02,
            seed: 42,
            email_domain: "example.com".to_owned(),
            vendor: Vendor::Lever,
        }
    }

    fn csv_text(inventory: &Inventory) -> String {
        let mut out = Vec::new();
        assert!(inventory.write_csv(&mut out).is_ok());
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn equal_inputs_give_identical_csv() {
        let population = generate_population(500, 42, "example.com", 0.05);
        let spec = spec(&["lever-prod", "lever-sandbox"]);
        let a = build_inventory(&population, &spec).map(|i| csv_text(&i));
        let b = build_inventory(&population, &spec).map(|i| csv_text(&i));
        let (Ok(a), Ok(b)) = (a, b) else {
            panic!("inventory failed");
        };
        assert_eq!(a, b);
        assert!(a.starts_with("saas,user_id,email,external_id,status,last_login,department\n"));
        assert_eq!(a.lines().count(), 1 + 525);
    }

    #[test]
    fn rows_follow_the_rules() {
        let population = generate_population(500, 42, "example.com", 0.05);
        let Ok(inventory) = build_inventory(&population, &spec(&["a", "b", "c"])) else {
            panic!("inventory failed");
        };
        let rows = &inventory.rows;
        assert_eq!(rows.len(), 525);
        for (r, row) in rows.iter().enumerate() {
            assert_eq!(row.saas, ["a", "b", "c"][r % 3]);
            assert_eq!(row.user_id, format!("u-{:06}", r + 1));
            assert!(DateTime::parse_from_rfc3339(&row.last_login).is_ok());
            assert!(row.external_id.is_empty() || row.external_id == format!("ext-{}", r + 1));
            let capitalised = row.email.starts_with(|c: char| c.is_ascii_uppercase());
            assert_eq!(capitalised, r % 7 == 6, "{}", row.email);
            if r < 500 {
                assert!(row.email.eq_ignore_ascii_case(&population.users[r].email));
            } else {
                assert!(population.by_email(&row.email).is_none());
                assert!(row.email.to_lowercase().starts_with("gone."));
            }
        }
        let deactivated = rows.iter().filter(|r| r.status == "deactivated").count();
        assert_eq!(deactivated, 11);
        assert!(
            rows.iter()
                .all(|r| r.status == "active" || r.status == "deactivated")
        );
        assert_eq!(
            inventory.summary,
            InventorySummary {
                rows: 525,
                per_saas: vec![("a".into(), 175), ("b".into(), 175), ("c".into(), 175)],
                missing: 25,
                deactivated: 11,
                capitalised: 75,
            }
        );
    }

    #[test]
    fn github_rows_carry_the_login() {
        let population =
            crate::generate_vendor_population(Vendor::Github, 50, 42, "example.com", 0.05);
        let spec = InventorySpec {
            vendor: Vendor::Github,
            ..spec(&["gh"])
        };
        let Ok(inventory) = build_inventory(&population, &spec) else {
            panic!("inventory failed");
        };
        let Ok(lever) = build_inventory(&population, &self::spec(&["gh"])) else {
            panic!("inventory failed");
        };
        for (r, (row, plain)) in inventory.rows.iter().zip(&lever.rows).enumerate() {
            if r < 50 {
                assert_eq!(row.external_id, population.users[r].github_login);
            } else {
                assert_eq!(row.external_id, format!("gone-{}", r - 49));
                assert!(population.by_github_login(&row.external_id).is_none());
            }
            // Only the external id differs from the default inventory.
            assert_eq!((&row.email, &row.status), (&plain.email, &plain.status));
        }
    }

    #[test]
    fn bad_specs_are_rejected() {
        let population = generate_population(5, 1, "example.com", 0.0);
        let mut bad = spec(&[]);
        assert!(matches!(
            build_inventory(&population, &bad),
            Err(InventoryError::NoSaas)
        ));
        bad = spec(&["x"]);
        bad.inactive_ratio = 1.5;
        assert!(matches!(
            build_inventory(&population, &bad),
            Err(InventoryError::Ratio { .. })
        ));
    }
}
