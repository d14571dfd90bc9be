//! What each scenario sets up: the simulated vendor (its limit, as the
//! vendor counts it), the inventory, and Rolecall's configuration with the
//! vendor's documented limit written exactly as documented.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use rolecall_sim::{BucketSpec, Limit, RateLimit, SimConfig, SimHandle, Vendor};

/// The simulated vendors' main secret (Lever key, Okta SSWS token, Mosyle
/// access token).
pub const API_KEY: &str = "bench-vendor-key";

/// Lever's documented limit (VENDORS.md §2.6): 10 requests/s per key,
/// bursts of 20, a token bucket; 429s carry no `Retry-After`.
pub const LEVER_RATE: RateLimit = RateLimit {
    per_second: 10.0,
    burst: 20,
};

/// Okta's Users endpoints: 600 requests per minute, each endpoint group
/// counted apart (VENDORS.md §5); Okta resets its counters per minute
/// (`X-Rate-Limit-Reset`), so the sim counts fixed, epoch-aligned minutes.
pub const OKTA_REQUESTS: u32 = 600;
pub const OKTA_WINDOW: Duration = Duration::from_secs(60);
pub const OKTA_ROLES_PATH: &str = "/api/v1/users/*/roles";

/// Mosyle documents no limit (VENDORS.md §1.7); the sim enforces a strict
/// sliding window of this many per second, and Rolecall is configured
/// with the same number.
pub const MOSYLE_REQUESTS: u32 = 10;
/// The connector's list cache (its default, written out).
pub const MOSYLE_LIST_CACHE_S: u64 = 60;

/// `N per W`, as a vendor documents a window limit: `50` (per second) or
/// `200/30s`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowLimit {
    pub requests: u32,
    pub window: Duration,
}

impl WindowLimit {
    pub fn per_second(&self) -> f64 {
        f64::from(self.requests) / self.window.as_secs_f64()
    }

    /// The strict sliding window the sim enforces.
    pub fn sliding(&self) -> Limit {
        Limit::sliding_window(self.requests, self.window)
    }

    pub fn halved(&self) -> Self {
        Self {
            requests: (self.requests / 2).max(1),
            window: self.window,
        }
    }

    /// Rolecall's `rate` keys, exactly as documented.
    fn toml(&self) -> String {
        format!(
            "requests = {}, per = \"{}\"",
            self.requests,
            window_text(self.window)
        )
    }
}

impl fmt::Display for WindowLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.requests, window_text(self.window))
    }
}

impl FromStr for WindowLimit {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (requests, window) = match text.trim().split_once('/') {
            Some((n, w)) => (
                n,
                rolecall_sim::parse_window(w.trim()).map_err(|e| e.to_string())?,
            ),
            None => (text.trim(), Duration::from_secs(1)),
        };
        let requests = requests
            .trim()
            .parse()
            .map_err(|_| format!("{text:?}: want N or N/WINDOW, e.g. 50 or 200/30s"))?;
        if requests == 0 || window.is_zero() {
            return Err(format!(
                "{text:?}: the limit and its window must be positive"
            ));
        }
        Ok(Self { requests, window })
    }
}

fn window_text(window: Duration) -> String {
    let ms = window.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The scenario families (`--scenarios`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Lever behind a strict sliding window, steady limit.
    Sliding,
    /// As `Sliding`, the limit halved a third of the way in.
    Halved,
    /// Lever as documented (token bucket), lookups that may page.
    Lever,
    /// Okta: search + roles per lookup, a bucket per endpoint group.
    Okta,
    /// Mosyle Business: list scans behind a cache, logins.
    Mosyle,
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Ok(match text.trim() {
            "sliding" => Self::Sliding,
            "halved" => Self::Halved,
            "lever" => Self::Lever,
            "okta" => Self::Okta,
            "mosyle" => Self::Mosyle,
            other => {
                return Err(format!(
                    "unknown scenario {other:?} (sliding, halved, lever, okta, mosyle)"
                ));
            }
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sliding => "sliding",
            Self::Halved => "halved",
            Self::Lever => "lever",
            Self::Okta => "okta",
            Self::Mosyle => "mosyle",
        })
    }
}

/// One scenario to run.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub kind: Kind,
    /// The window limit of `Sliding` and `Halved` (before halving).
    pub limit: Option<WindowLimit>,
    pub jobs: usize,
    pub latency: Duration,
    pub jitter: Duration,
}

impl Scenario {
    /// A short name for files and progress lines.
    pub fn slug(&self) -> String {
        match self.limit {
            Some(l) => format!("{}-{}-per-{}", self.kind, l.requests, window_text(l.window)),
            None => self.kind.to_string(),
        }
    }

    /// Whether dramatiq and Celery run it too (they only do Lever lookups
    /// under a per-second limit).
    pub fn peers_apply(&self) -> bool {
        matches!(self.kind, Kind::Sliding | Kind::Halved)
            && self
                .limit
                .is_some_and(|l| l.window <= Duration::from_secs(1))
    }

    pub fn vendor(&self) -> Vendor {
        match self.kind {
            Kind::Sliding | Kind::Halved | Kind::Lever => Vendor::Lever,
            Kind::Okta => Vendor::Okta,
            Kind::Mosyle => Vendor::MosyleBusiness,
        }
    }

    /// The vendor's users per inventory row: Mosyle's tenant is twice the
    /// inventory, so each list scan pages through more than is looked up.
    fn tenant_factor(&self) -> usize {
        if self.kind == Kind::Mosyle { 2 } else { 1 }
    }

    pub fn sim_config(&self) -> SimConfig {
        let mut config = SimConfig {
            vendor: self.vendor(),
            users: self.jobs * self.tenant_factor(),
            seed: 42,
            api_key: API_KEY.into(),
            latency: self.latency,
            jitter: self.jitter,
            ..SimConfig::default()
        };
        match self.kind {
            Kind::Sliding | Kind::Halved => {
                config.limit = self.limit.map(|l| l.sliding());
            }
            Kind::Lever => config.rate = Some(LEVER_RATE),
            Kind::Okta => {
                let minute = Limit::fixed_window(OKTA_REQUESTS, OKTA_WINDOW);
                config.limit = Some(minute);
                config.buckets = vec![BucketSpec::new("roles", OKTA_ROLES_PATH, Some(minute))];
            }
            Kind::Mosyle => {
                config.limit = Some(Limit::sliding_window(
                    MOSYLE_REQUESTS,
                    Duration::from_secs(1),
                ));
            }
        }
        config
    }

    /// The `[saas.bench]` table: connector, options and the vendor's limit
    /// exactly as documented (no headroom: `margin` stays "auto").
    pub fn saas_toml(&self, base_url: &str) -> String {
        let head = |connector: &str| {
            format!(
                "[saas.bench]\nconnector = \"{connector}\"\nbase_url = \"{base_url}\"\n\
                 credential = \"bench\"\ndeactivate_missing = true\n"
            )
        };
        match self.kind {
            Kind::Sliding | Kind::Halved => {
                let limit = self.limit.expect("window scenarios have a limit");
                format!("{}rate = {{ {} }}\n", head("lever"), limit.toml())
            }
            Kind::Lever => format!(
                "{}rate = {{ per_second = {}, burst = {} }}\n",
                head("lever"),
                LEVER_RATE.per_second,
                LEVER_RATE.burst
            ),
            Kind::Okta => {
                let per = window_text(OKTA_WINDOW);
                format!(
                    "{}[saas.bench.rate]\nrequests = {OKTA_REQUESTS}\nper = \"{per}\"\n\
                     [saas.bench.rate.buckets.roles]\nrequests = {OKTA_REQUESTS}\nper = \"{per}\"\n\
                     paths = [\"{OKTA_ROLES_PATH}\"]\n",
                    head("okta")
                )
            }
            Kind::Mosyle => format!(
                "{}options = {{ product = \"business\", list_cache_s = {MOSYLE_LIST_CACHE_S} }}\n\
                 rate = {{ requests = {MOSYLE_REQUESTS}, per = \"1s\" }}\n",
                head("mosyle")
            ),
        }
    }

    /// The credential Rolecall's workers get for `credential = "bench"`.
    pub fn credential(&self, sim: &SimConfig) -> String {
        match self.kind {
            Kind::Mosyle => serde_json::json!({
                "access_token": sim.api_key,
                "email": sim.login_email,
                "password": sim.login_password,
            })
            .to_string(),
            _ => sim.api_key.clone(),
        }
    }

    /// The vendor's limit in words, per bucket, for the table.
    pub fn limit_text(&self, bucket: &str) -> String {
        match self.kind {
            Kind::Sliding => format!("sliding {}", self.limit.expect("a limit")),
            Kind::Halved => {
                let limit = self.limit.expect("a limit");
                format!("sliding {limit} → {}", limit.halved())
            }
            Kind::Lever => format!(
                "token bucket {}/s, burst {}",
                LEVER_RATE.per_second, LEVER_RATE.burst
            ),
            Kind::Okta => {
                let what = if bucket == "roles" { "roles" } else { "users" };
                format!(
                    "fixed {OKTA_REQUESTS}/{} ({what})",
                    window_text(OKTA_WINDOW)
                )
            }
            Kind::Mosyle => format!("sliding {MOSYLE_REQUESTS}/1s"),
        }
    }
}

/// The inventory: the vendor's first `jobs` users, one in twenty replaced
/// by an address the vendor does not know. Also returns the e-mail list
/// the peers read.
pub fn write_inventory(
    sim: &SimHandle,
    jobs: usize,
    dir: &Path,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let mut csv = String::from("saas,user_id,email,status\n");
    let mut emails = String::new();
    for (i, user) in sim.population().users.iter().take(jobs).enumerate() {
        let email = if i % 20 == 0 {
            format!("gone.{i}@example.com")
        } else {
            user.email.clone()
        };
        csv.push_str(&format!("bench,u{i},{email},active\n"));
        emails.push_str(&email);
        emails.push('\n');
    }
    let inventory = dir.join("inventory.csv");
    let emails_file = dir.join("emails.txt");
    std::fs::write(&inventory, csv)?;
    std::fs::write(&emails_file, emails)?;
    Ok((inventory, emails_file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_read_as_vendors_write_them() {
        let fifty: WindowLimit = "50".parse().unwrap();
        assert_eq!(fifty.to_string(), "50/1s");
        assert_eq!(fifty.toml(), "requests = 50, per = \"1s\"");
        let miro: WindowLimit = "200/30s".parse().unwrap();
        assert!((miro.per_second() - 200.0 / 30.0).abs() < 1e-9);
        assert_eq!(miro.halved().to_string(), "100/30s");
        assert!("0".parse::<WindowLimit>().is_err());
        assert!("x/1s".parse::<WindowLimit>().is_err());
    }

    #[test]
    fn every_scenario_configures_a_valid_worker() {
        for kind in [
            Kind::Sliding,
            Kind::Halved,
            Kind::Lever,
            Kind::Okta,
            Kind::Mosyle,
        ] {
            let scenario = Scenario {
                kind,
                limit: Some("50".parse().unwrap()),
                jobs: 10,
                latency: Duration::from_millis(20),
                jitter: Duration::from_millis(10),
            };
            let text = scenario.saas_toml("http://127.0.0.1:9");
            let settings = rolecall_common::config::from_toml(&text)
                .unwrap_or_else(|e| panic!("{kind}: {e}\n{text}"));
            let rate = &settings.saas["bench"].rate;
            if kind == Kind::Okta {
                assert_eq!(rate.buckets.len(), 1, "{text}");
            }
        }
    }
}
