//! Inventories of any size, written as a stream (nothing per user is kept).
//!
//! One user in 20 is deactivated and one in 10 works in a department the
//! criteria leave out, so the criteria decide about each row and the
//! selected users are known in advance.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// The SaaS app every row belongs to (one job queue, like the issue's run).
pub const SAAS: &str = "lever";
/// Criteria the run applies: status and department.
pub const CRITERIA: &str = r#"["status == active", "department in [sales, engineering, support]"]"#;

const DEPARTMENTS: [&str; 10] = [
    "sales",
    "engineering",
    "support",
    "sales",
    "engineering",
    "support",
    "sales",
    "engineering",
    "support",
    "finance",
];

/// One generated user; the same in both formats.
struct User {
    id: String,
    email: String,
    external_id: String,
    status: &'static str,
    last_login: String,
    department: &'static str,
}

fn user(i: u64) -> User {
    User {
        id: format!("u{i:08}"),
        email: format!("user{i}@example.com"),
        external_id: format!("ext-{i}"),
        status: if i % 20 == 4 { "deactivated" } else { "active" },
        last_login: format!("2026-{:02}-{:02}", 1 + i % 11, 1 + i % 28),
        department: DEPARTMENTS[(i % 10) as usize],
    }
}

/// Whether the criteria select user `i`.
fn selected(i: u64) -> bool {
    i % 20 != 4 && i % 10 != 9
}

/// Users the criteria select among the first `users`.
pub fn expected_jobs(users: u64) -> u64 {
    (0..users).filter(|&i| selected(i)).count() as u64
}

/// Writes `users` rows as CSV and as JSON Lines into `dir`.
pub fn write(dir: &Path, users: u64) -> anyhow::Result<(PathBuf, PathBuf)> {
    let csv = dir.join("users.csv");
    let jsonl = dir.join("users.jsonl");
    let mut c = BufWriter::new(File::create(&csv)?);
    let mut j = BufWriter::new(File::create(&jsonl)?);
    writeln!(
        c,
        "saas,user_id,email,external_id,status,last_login,department"
    )?;
    for i in 0..users {
        let u = user(i);
        writeln!(
            c,
            "{SAAS},{},{},{},{},{},{}",
            u.id, u.email, u.external_id, u.status, u.last_login, u.department
        )?;
        writeln!(
            j,
            r#"{{"saas":"{SAAS}","user_id":"{}","email":"{}","external_id":"{}","status":"{}","last_login":"{}","department":"{}"}}"#,
            u.id, u.email, u.external_id, u.status, u.last_login, u.department
        )?;
    }
    c.flush()?;
    j.flush()?;
    Ok((csv, jsonl))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_users_in_twenty_are_left_out() {
        // 4 (deactivated), 9 and 19 (finance) out of each 20.
        assert_eq!(expected_jobs(20), 17);
        assert_eq!(expected_jobs(1_000_000), 850_000);
    }
}
