//! Building the connector from options: every error names its key, every
//! problem validation finds is reported. Lookups against a scripted vendor
//! are in `lookups`.

mod listing;
mod lookups;

use rolecall_common::config::SaasSettings;

use super::template::SecretSource;
use super::*;

/// A SaaS app `app` at `base_url` with the given options (TOML lines under `[saas.app.options]`).
fn saas_at(base_url: &str, options: &str) -> SaasSettings {
    let text = format!(
        r#"
        [saas.app]
        connector = "http"
        base_url = "{base_url}"
        credential = "app"
        rate = {{ per_second = 100 }}
        [saas.app.options]
        {options}
        "#
    );
    rolecall_common::config::from_toml(&text)
        .expect("valid settings")
        .saas["app"]
        .clone()
}

fn build_at(base_url: &str, options: &str, secret: &str) -> Result<HttpPreset, BuildError> {
    let saas = saas_at(base_url, options);
    let ctx = BuildContext {
        saas: &saas,
        client: VendorClient::standalone(&saas),
        credential: SecretString::from(secret.to_owned()),
    };
    HttpPreset::from_context(&ctx)
}

fn build_with(options: &str, secret: &str) -> Result<HttpPreset, BuildError> {
    build_at("https://vendor.example/api/", options, secret)
}

fn build(options: &str) -> Result<HttpPreset, BuildError> {
    build_with(options, "hunter2")
}

fn error(options: &str) -> String {
    match build(options) {
        Ok(_) => panic!("expected a build error for {options}"),
        Err(e) => e.to_string(),
    }
}

/// A minimal valid inline spec in sections (TOML forbids redefining a
/// table, so tests replace whole sections).
const AUTH: &str = r#"
    [saas.app.options.spec.auth]
    kind = "bearer"
    token = "{{secret}}"
"#;
const REQUEST: &str = r#"
    [saas.app.options.spec.request]
    url = "{{base_url}}/users?email={{email}}"
"#;
const RESPONSE: &str = r#"
    [saas.app.options.spec.response]
    list = "/data"
    match = { pointer = "/email", equals = "{{email}}", case_insensitive = true }
    role = "/role"
    vendor_id = "/id"
"#;

fn inline(auth: &str, request: &str, response: &str, rest: &str) -> String {
    format!("{auth}\n{request}\n{response}\n{rest}")
}

fn user(email: &str) -> UserRef {
    UserRef {
        id: "u-7".into(),
        email: email.into(),
        external_id: None,
    }
}

#[test]
fn the_shipped_presets_validate() {
    let github = build(
        r#"preset = "github-org-membership"
        vars = { org = "acme" }"#,
    )
    .unwrap();
    assert_eq!(github.spec.name, "GitHub organisation membership");
    assert_eq!(&*github.spec.response.role, "/role");
    assert_eq!(github.vars["org"], "acme");
    let zoom = build(r#"preset = "zoom-users""#).unwrap();
    assert_eq!(&*zoom.spec.response.role, "/type");
    assert_eq!(zoom.base_url, "https://vendor.example/api");
    // Every embedded preset validates in full, given a value for each
    // variable it needs (a new preset in SHIPPED is covered here).
    for (name, text) in load::SHIPPED {
        let doc = load::parse_toml(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let spec = spec::parse(doc).unwrap_or_else(|p| panic!("{name}: {p:?}"));
        let needed: BTreeSet<String> = validate::templates(&spec)
            .flat_map(Template::vars)
            .filter_map(|v| match v {
                template::Var::Named(n) if !spec.vars.contains_key(n) => {
                    Some(format!("{n} = \"x\""))
                }
                _ => None,
            })
            .collect();
        let options = format!(
            "preset = \"{name}\"\nvars = {{ {} }}",
            needed.into_iter().collect::<Vec<_>>().join(", ")
        );
        build(&options).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn spec_problems_name_their_key() {
    let cases: Vec<(String, &str, &str)> = vec![
        (
            "spec = \"nope\"".to_owned(),
            "saas.app.options.spec: must be a table",
            "",
        ),
        (
            inline(AUTH, REQUEST, &RESPONSE.replace("role =", "rol ="), ""),
            "saas.app.options.spec.response.rol:",
            "unknown field `rol`",
        ),
        (
            inline(AUTH, REQUEST, &RESPONSE.replace("role = \"/role\"", ""), ""),
            "saas.app.options.spec.response:",
            "missing field `role`",
        ),
        (
            inline(
                AUTH,
                REQUEST,
                &RESPONSE.replace("\"/role\"", "\"role\""),
                "",
            ),
            "saas.app.options.spec.response.role:",
            "JSON pointer",
        ),
        (
            inline(
                AUTH,
                &REQUEST.replace("{{email}}", "{{secret}}"),
                RESPONSE,
                "",
            ),
            "saas.app.options.spec.request.url:",
            "never in URLs",
        ),
        (
            inline(
                AUTH,
                REQUEST,
                &format!("{RESPONSE}\nnot_found = {{ status = [401] }}"),
                "",
            ),
            "saas.app.options.spec.response.not_found.status:",
            "401",
        ),
        (
            inline(
                AUTH,
                REQUEST,
                &format!("{RESPONSE}\nnot_found = [{{ status = 404 }}, {{ pointer = \"/x\" }}]"),
                "",
            ),
            "saas.app.options.spec.response.not_found[1]:",
            "needs a test",
        ),
        (
            inline(
                AUTH,
                REQUEST,
                &RESPONSE.replace("match = ", "#"),
                "[saas.app.options.spec.pagination]\nstyle = \"link\"",
            ),
            "saas.app.options.spec.response.match:",
            "pagination needs `match`",
        ),
        (
            inline(
                AUTH,
                REQUEST,
                RESPONSE,
                "[saas.app.options.spec.pagination]\nstyle = \"cursor\"\nparam = \"c\"",
            ),
            "saas.app.options.spec.pagination:",
            "missing field `next`",
        ),
        (
            inline(
                AUTH,
                REQUEST,
                RESPONSE,
                "[saas.app.options.spec.pagination]\nstyle = \"offset\"\nnext = \"/n\"",
            ),
            "saas.app.options.spec.pagination.next:",
            "unknown field `next`",
        ),
        (
            inline(
                AUTH,
                REQUEST,
                RESPONSE,
                "[saas.app.options.spec.pagination]\nstyle = \"pages\"",
            ),
            "saas.app.options.spec.pagination.style:",
            "unknown variant `pages`",
        ),
        (
            inline(AUTH, &format!("{REQUEST}\nbody = '{{}}'"), RESPONSE, ""),
            "saas.app.options.spec.request.body:",
            "POST",
        ),
        (
            inline(
                AUTH,
                &format!("{REQUEST}\nmethod = \"POST\"\nbody = '{{\"e\": {{{{email}}}}}}'"),
                RESPONSE,
                "",
            ),
            "saas.app.options.spec.request.body:",
            "does not render to JSON",
        ),
        (
            inline(
                AUTH,
                &format!("{REQUEST}\nmethod = \"DELETE\""),
                RESPONSE,
                "",
            ),
            "saas.app.options.spec.request.method:",
            "GET or POST",
        ),
        (
            inline(
                AUTH,
                &format!("{REQUEST}\nbasic = {{ user = \"{{{{secret}}}}\" }}"),
                RESPONSE,
                "",
            ),
            "saas.app.options.spec.request.basic:",
            "only the login",
        ),
        (
            inline(&AUTH.replace("bearer", "oauth"), REQUEST, RESPONSE, ""),
            "saas.app.options.spec.auth.kind:",
            "unknown variant `oauth`, expected one of `basic`, `bearer`, `header`, `session`",
        ),
        (
            inline(&AUTH.replace("token =", "tokn ="), REQUEST, RESPONSE, ""),
            "saas.app.options.spec.auth.tokn:",
            "unknown field `tokn`, expected `token`",
        ),
        (
            inline(
                AUTH,
                &REQUEST.replace("{{base_url}}", "/relative"),
                RESPONSE,
                "",
            ),
            "saas.app.options.spec.request.url:",
            "does not render to a URL",
        ),
        (
            inline(
                AUTH,
                &REQUEST.replace("{{base_url}}/users", "https://x/{{base_url}}"),
                RESPONSE,
                "",
            ),
            "saas.app.options.spec.request.url:",
            "may only start",
        ),
        (
            inline(
                AUTH,
                &REQUEST.replace("{{base_url}}", "https://elsewhere.example"),
                RESPONSE,
                "",
            ),
            "saas.app.options.spec.request.url:",
            "leads to https://elsewhere.example, not to base_url's origin https://vendor.example",
        ),
        (
            inline(
                AUTH,
                &format!("{REQUEST}\nheaders = {{ \"Bad Header\" = \"x\" }}"),
                RESPONSE,
                "",
            ),
            "saas.app.options.spec.request.headers.Bad Header:",
            "header name",
        ),
        (
            inline(
                AUTH,
                &REQUEST.replace("{{email}}", "{{vars.org}}"),
                RESPONSE,
                "",
            ),
            "saas.app.options.vars.org:",
            "needs this variable",
        ),
        (
            inline(
                AUTH,
                REQUEST,
                RESPONSE,
                "[saas.app.options.vars]\norgg = \"x\"",
            ),
            "saas.app.options.vars.orgg:",
            "no such variable",
        ),
        (
            inline(
                AUTH,
                REQUEST,
                RESPONSE,
                "[saas.app.options.spec.vars]\nunused = \"x\"",
            ),
            "saas.app.options.spec.vars.unused:",
            "not used",
        ),
        (
            format!(
                "preset = \"zoom-users\"\n{}",
                inline(AUTH, REQUEST, RESPONSE, "")
            ),
            "saas.app.options.spec:",
            "not both",
        ),
        (
            format!(
                "presets_dir = \"/srv/presets\"\n{}",
                inline(AUTH, REQUEST, RESPONSE, "")
            ),
            "saas.app.options.presets_dir:",
            "only used with `preset`",
        ),
        (
            "".to_owned(),
            "saas.app.options.preset:",
            "github-org-membership, zoom-users",
        ),
        (
            "preset = \"../etc/passwd\"".to_owned(),
            "saas.app.options.preset:",
            "letters",
        ),
        (
            "preset = \"nope\"".to_owned(),
            "saas.app.options.preset:",
            "no preset `nope` (shipped: github-org-membership, zoom-users)",
        ),
        (
            "preset = \"zoom-users\"\npresets_dir = \"presets\"".to_owned(),
            "saas.app.options.presets_dir:",
            "must be an absolute path",
        ),
        (
            "preset = \"github-org-membership\"".to_owned(),
            "saas.app.options.vars.org:",
            "needs this variable",
        ),
        (
            "preset = \"zoom-users\"\ntypo = 1".to_owned(),
            "saas.app.options.typo:",
            "unknown field `typo`, expected one of `preset`, `spec`, `vars`, `presets_dir`",
        ),
    ];
    for (options, key, reason) in cases {
        let err = error(&options);
        assert!(err.starts_with(key), "expected {key}, got {err}\n{options}");
        assert!(err.contains(reason), "expected {reason:?} in {err}");
    }
}

#[test]
fn a_url_that_only_starts_like_base_url_is_refused() {
    // Without a path in base_url, text after {{base_url}} can extend the
    // host or turn it into user info: the rendered origin decides.
    for trick in ["{{base_url}}.evil.example", "{{base_url}}@evil.example"] {
        let request = REQUEST.replace("{{base_url}}", trick);
        let err = build_at(
            "https://api.vendor.example",
            &inline(AUTH, &request, RESPONSE, ""),
            "hunter2",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.starts_with("saas.app.options.spec.request.url: leads to https://"),
            "{trick}: {err}"
        );
        assert!(
            err.contains("evil.example, not to base_url's origin"),
            "{err}"
        );
    }
}

#[test]
fn every_problem_validation_finds_is_reported_each_naming_its_key() {
    let options = inline(
        AUTH,
        &format!(
            "{}\nbody = '{{}}'",
            REQUEST.replace("{{email}}", "{{secret}}")
        ),
        RESPONSE,
        "[saas.app.options.spec.vars]\nunused = \"x\"",
    );
    let err = error(&options);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0].starts_with("saas.app.options.spec.request.url: secrets"),
        "{err}"
    );
    assert!(
        lines[1].starts_with("  - saas.app.options.spec.request.body: a body needs"),
        "{err}"
    );
    assert!(
        lines[2].starts_with("  - saas.app.options.spec.vars.unused: not used"),
        "{err}"
    );
}

#[test]
fn a_broken_preset_file_names_the_file_and_the_key() {
    let dir = std::env::temp_dir().join(format!("rolecall-presets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let zoom = load::SHIPPED[1].1;
    std::fs::write(
        dir.join("broken.toml"),
        zoom.replacen("role = \"/type\"", "role = \"type\"", 1),
    )
    .unwrap();
    std::fs::write(dir.join("garbled.toml"), "[auth\nkind=").unwrap();
    std::fs::write(
        dir.join("unused.toml"),
        format!("{zoom}\n[vars]\nunused = \"x\"\n"),
    )
    .unwrap();
    let options = |name: &str| {
        format!(
            "preset = \"{name}\"\npresets_dir = {:?}",
            dir.display().to_string()
        )
    };
    let err = error(&options("broken"));
    assert!(
        err.starts_with("saas.app.options.preset: preset `broken` ("),
        "{err}"
    );
    assert!(
        err.contains("broken.toml): response.role: must be a JSON pointer"),
        "{err}"
    );
    let err = error(&options("unused"));
    assert!(
        err.starts_with("saas.app.options.preset: preset `unused`"),
        "{err}"
    );
    assert!(err.contains("vars.unused: not used"), "{err}");
    let err = error(&options("garbled"));
    assert!(
        err.starts_with("saas.app.options.preset: preset `garbled`"),
        "{err}"
    );
    let err = error(&options("nope"));
    assert!(err.contains(&format!("not in {}", dir.display())), "{err}");
    // A shipped preset missing from the folder falls back to the embedded copy.
    let github = build(&format!(
        "{}\nvars = {{ org = \"acme\" }}",
        options("github-org-membership")
    ))
    .unwrap();
    assert_eq!(github.spec.name, "GitHub organisation membership");
    // A file in the folder wins over the embedded copy of the same name.
    std::fs::write(
        dir.join("zoom-users.toml"),
        zoom.replace("name = \"Zoom users\"", "name = \"Zoom users, fixed\""),
    )
    .unwrap();
    let fixed = build(&options("zoom-users")).unwrap();
    assert_eq!(fixed.spec.name, "Zoom users, fixed");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn credential_fields_are_checked_without_echoing_the_credential() {
    let auth = r#"
        [saas.app.options.spec.auth]
        kind = "basic"
        user = "{{secret.user}}"
        password = "{{secret.password}}"
    "#;
    let options = inline(auth, REQUEST, RESPONSE, "");
    let err = build_with(&options, "hunter2").err().unwrap().to_string();
    assert!(err.starts_with("saas.app.credential:"), "{err}");
    assert!(!err.contains("hunter2"));
    let err = build_with(&options, r#"{"user":"hunter2"}"#)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("password") && !err.contains("hunter2"),
        "{err}"
    );
    build_with(&options, r#"{"user":"u","password":"p"}"#).unwrap();
}

const SESSION: &str = r#"
    [saas.app.options.spec.auth]
    kind = "session"
    token_from = "json:/access_token"
    prefix = "Bearer "
    [saas.app.options.spec.auth.login]
    method = "POST"
    url = "{{base_url}}/oauth/token?grant_type=account_credentials&account_id={{vars.account}}"
    basic = { user = "{{secret.client_id}}", password = "{{secret.client_secret}}" }
    [saas.app.options.vars]
    account = "abc"
"#;
const CLIENT_SECRET: &str = r#"{"client_id":"i","client_secret":"s"}"#;

#[test]
fn session_auth_is_validated() {
    let built = build_with(&inline(SESSION, REQUEST, RESPONSE, ""), CLIENT_SECRET).unwrap();
    assert!(matches!(built.spec.auth, Auth::Session(_)));
    let cases = [
        (
            SESSION.replace("{{vars.account}}", "{{email}}"),
            "saas.app.options.spec.auth.login.url:",
            "`{{email}}` is per user",
        ),
        (
            SESSION.replace("json:/access_token", "body:/token"),
            "saas.app.options.spec.auth.token_from:",
            "must be \"header:<Name>\" or \"json:<pointer>\"",
        ),
        (
            SESSION.replace("basic =", "basik ="),
            "saas.app.options.spec.auth.login.basik:",
            "unknown field `basik`",
        ),
        (SESSION.replace("prefix = \"Bearer \"", ""), "", ""),
    ];
    for (session, key, reason) in cases {
        let result = build_with(&inline(&session, REQUEST, RESPONSE, ""), CLIENT_SECRET);
        if key.is_empty() {
            result.unwrap();
            continue;
        }
        let err = result.err().unwrap().to_string();
        assert!(err.starts_with(key), "expected {key}, got {err}");
        assert!(err.contains(reason), "expected {reason:?} in {err}");
    }
}

#[test]
fn a_login_on_another_host_is_refused_at_build() {
    // Zoom's OAuth endpoint (zoom.us) is not its API's host (api.zoom.us):
    // the client secret would leave base_url's origin.
    let elsewhere = SESSION.replace("{{base_url}}", "https://zoom.example");
    let err = build_with(&inline(&elsewhere, REQUEST, RESPONSE, ""), CLIENT_SECRET)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.starts_with("saas.app.options.spec.auth.login.url: leads to https://zoom.example, not to base_url's origin https://vendor.example"),
        "{err}"
    );
}

#[test]
fn users_are_read_through_pointers_with_numbers_as_text() {
    let response = r#"
        [saas.app.options.spec.response]
        role = "/type"
        vendor_id = "/id"
        active = { pointer = "/status", one_of = ["active", "pending"] }
    "#;
    let mut preset = build(&inline(AUTH, REQUEST, response, "")).unwrap();
    let vars = BTreeMap::new();
    let u = user("a@example.com");
    let v = Values {
        user: Some(&u),
        base_url: "https://vendor.example/api",
        vars: &vars,
        secret: SecretSource::Sample,
    };
    let found = preset
        .user_from(
            &serde_json::json!({"id": 42, "type": 2, "status": "pending"}),
            &v,
        )
        .unwrap();
    assert_eq!(
        (
            found.vendor_id.as_str(),
            found.raw_role.as_str(),
            found.active
        ),
        ("42", "2", true)
    );
    assert_eq!(found.vendor_roles, vec!["2".to_owned()]);
    let gone = preset
        .user_from(
            &serde_json::json!({"id": "x", "type": 1, "status": "inactive"}),
            &v,
        )
        .unwrap();
    assert!(!gone.active);
    let err = preset
        .user_from(&serde_json::json!({"id": "x"}), &v)
        .unwrap_err();
    assert!(
        matches!(err, ConnectorError::Decode(ref m) if m.contains("/type")),
        "{err}"
    );
    preset.spec.response.role_default = Some("none".into());
    let defaulted = preset
        .user_from(&serde_json::json!({"id": "x"}), &v)
        .unwrap();
    assert_eq!(defaulted.raw_role, "none");
}
