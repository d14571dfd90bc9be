//! Where Redis is: one server (`redis.url`), or a Redis Cluster
//! (`redis.cluster = true`, with `redis.url` listing seed nodes separated by
//! commas). One key holds both forms so `ROLECALL__REDIS__URL` overrides
//! either from the environment, where a list cannot be written.

use url::Url;

/// The seed URLs of `redis.url`: one for a single server, one or more
/// (comma-separated) for a cluster. Empty entries are dropped.
pub fn seed_urls(url: &str) -> Vec<&str> {
    url.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Checks `redis.url` against `redis.cluster`, reporting each problem under
/// the key it is about. The reasons never repeat a URL: it may hold a
/// password.
pub(super) fn validate(url: &str, cluster: bool, bad: &mut impl FnMut(String, String)) {
    let seeds = seed_urls(url);
    if seeds.is_empty() {
        bad("redis.url".into(), "must not be empty".into());
        return;
    }
    if !cluster && seeds.len() > 1 {
        bad(
            "redis.url".into(),
            "lists several URLs: set redis.cluster = true for a Redis Cluster, or give one URL"
                .into(),
        );
        return;
    }
    let mut schemes = Vec::new();
    for (i, seed) in seeds.iter().enumerate() {
        let which = if seeds.len() > 1 {
            format!(" (seed {})", i + 1)
        } else {
            String::new()
        };
        match Url::parse(seed) {
            Ok(u) if ["redis", "rediss"].contains(&u.scheme()) => {
                schemes.push(u.scheme().to_string());
                // A cluster has only database 0.
                let db = u.path().trim_start_matches('/');
                if cluster && !db.is_empty() && db != "0" {
                    bad(
                        "redis.url".into(),
                        format!("a Redis Cluster has only database 0{which}"),
                    );
                }
            }
            Ok(_) => bad(
                "redis.url".into(),
                format!("scheme must be one of: redis, rediss{which}"),
            ),
            Err(e) => bad("redis.url".into(), format!("not a URL ({e}){which}")),
        }
    }
    schemes.dedup();
    if schemes.len() > 1 {
        bad(
            "redis.url".into(),
            "cluster seeds must all use redis:// or all rediss://".into(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(url: &str, cluster: bool) -> Vec<(String, String)> {
        let mut out = Vec::new();
        validate(url, cluster, &mut |k, r| out.push((k, r)));
        out
    }

    #[test]
    fn a_cluster_takes_comma_separated_seeds() {
        assert!(problems("redis://a:7001, redis://b:7002,redis://c:7003", true).is_empty());
        assert_eq!(
            seed_urls("redis://a:7001, redis://b:7002,"),
            ["redis://a:7001", "redis://b:7002"]
        );
    }

    #[test]
    fn several_urls_without_cluster_name_the_key_and_the_fix() {
        let p = problems("redis://a:1,redis://b:2", false);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].0, "redis.url");
        assert!(p[0].1.contains("redis.cluster = true"), "{}", p[0].1);
    }

    #[test]
    fn cluster_seeds_are_checked_each_without_repeating_a_password() {
        let p = problems("redis://:hunter2@a:1/3,http://b:2,rediss://c:3", true);
        let reasons: Vec<&str> = p.iter().map(|(_, r)| r.as_str()).collect();
        assert!(p.iter().all(|(k, _)| k == "redis.url"));
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("only database 0 (seed 1)"))
        );
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("scheme") && r.contains("seed 2"))
        );
        assert!(reasons.iter().any(|r| r.contains("all use redis://")));
        assert!(reasons.iter().all(|r| !r.contains("hunter2")));
    }

    #[test]
    fn an_empty_url_is_a_problem() {
        assert_eq!(problems(" , ", true).len(), 1);
    }
}
