//! What serde cannot check: rules that span keys or depend on the place.
//!
//! Runs after the spec has been read, and reports every problem it finds
//! rather than the first, so one deployment attempt shows them all:
//!
//! - which variables each template may use (no secrets in URLs or
//!   comparisons, no per-user values in authentication or the list);
//! - keys that only make sense together (`body` with `POST`, `size` with
//!   `size_param`, pagination with `match`);
//! - statuses a rule may claim (401/403/408/429 mean the same for every
//!   connector);
//! - variables: every `{{vars.NAME}}` has a value and every value is used;
//! - the URL, headers and body rendered with sample values: the URL parses
//!   and stays on `base_url`'s origin (scheme, host, port), so a credential
//!   never leaves for a host the configuration did not name.

use std::collections::BTreeMap;

use reqwest::header::HeaderValue;
use rolecall_common::messages::UserRef;
use serde_json::Value;
use url::{Origin, Url};

use super::rules::Condition;
use super::spec::{Auth, Method, Problem, RequestSpec, Spec};
use super::template::{Allow, Escape, Piece, SecretSource, Template, Values, Var, render};

/// Statuses that may mean "not found": successes and client errors other
/// than those every connector must treat alike (auth, timeout, throttle).
fn not_found_status(code: u16) -> bool {
    (200..300).contains(&code)
        || ((400..500).contains(&code) && !matches!(code, 401 | 403 | 408 | 429))
}

/// A template and where it stands.
struct Place<'s> {
    path: String,
    template: &'s Template,
    allow: Allow,
}

/// Every template of the spec, with its key and what it may use.
fn places(spec: &Spec) -> Vec<Place<'_>> {
    let mut all = Places(Vec::new());
    all.request("request", &spec.request, Allow::URL, Allow::PAYLOAD);
    match &spec.auth {
        Auth::Basic { user, password } => {
            all.push("auth.user", user, Allow::AUTH);
            all.push("auth.password", password, Allow::AUTH);
        }
        Auth::Bearer { token } => all.push("auth.token", token, Allow::AUTH),
        Auth::Header { value, .. } => all.push("auth.value", value, Allow::AUTH),
        Auth::Session(s) => all.request("auth.login", &s.login, Allow::LOGIN_URL, Allow::AUTH),
    }
    if let Some(list) = &spec.list {
        // The same list for every user: no user variables anywhere in it.
        all.request("list.request", &list.request, Allow::LOGIN_URL, Allow::AUTH);
        if let Some(active) = &list.fields.active {
            for (key, template) in active.templates() {
                all.push(
                    format!("list.fields.active.{key}"),
                    template,
                    Allow::LOGIN_URL,
                );
            }
        }
    }
    let response = &spec.response;
    let mut conditions: Vec<(String, &Condition)> = response
        .not_found
        .keyed("response.not_found")
        .into_iter()
        .filter_map(|(path, rule)| rule.when.as_ref().map(|c| (path, c)))
        .collect();
    conditions.extend(
        response
            .matcher
            .as_ref()
            .map(|c| ("response.match".into(), c)),
    );
    conditions.extend(
        response
            .active
            .as_ref()
            .map(|c| ("response.active".into(), c)),
    );
    for (path, condition) in conditions {
        for (key, template) in condition.templates() {
            all.push(format!("{path}.{key}"), template, Allow::CONDITION);
        }
    }
    all.0
}

/// Every template of the spec (for the credential fields it uses).
pub(super) fn templates(spec: &Spec) -> impl Iterator<Item = &Template> {
    places(spec).into_iter().map(|p| p.template)
}

struct Places<'s>(Vec<Place<'s>>);

impl<'s> Places<'s> {
    fn push(&mut self, path: impl Into<String>, template: &'s Template, allow: Allow) {
        self.0.push(Place {
            path: path.into(),
            template,
            allow,
        });
    }

    fn request(&mut self, at: &str, request: &'s RequestSpec, url: Allow, rest: Allow) {
        self.push(format!("{at}.url"), &request.url, url);
        for (key, template) in &request.headers.0 {
            self.push(format!("{at}.headers.{}", key.written), template, rest);
        }
        if let Some(body) = &request.body {
            self.push(format!("{at}.body"), body, rest);
        }
        if let Some(basic) = &request.basic {
            self.push(format!("{at}.basic.user"), &basic.user, rest);
            self.push(format!("{at}.basic.password"), &basic.password, rest);
        }
    }
}

/// Checks `spec` for the SaaS app at `base_url` with `options.vars` = `given`;
/// returns the variables' values (the spec's defaults overridden by `given`).
pub(super) fn validate(
    spec: &Spec,
    given: &BTreeMap<String, String>,
    base_url: &Url,
) -> Result<BTreeMap<String, String>, Vec<Problem>> {
    let mut problems = Vec::new();
    let places = places(spec);
    for place in &places {
        if let Err(reason) = place.template.allows(place.allow) {
            problems.push(Problem::new(place.path.clone(), reason));
        }
    }
    check_request(&mut problems, "request", &spec.request);
    if spec.request.basic.is_some() {
        problems.push(Problem::new(
            "request.basic",
            "only the login request takes `basic`; the lookup authenticates with [auth]",
        ));
    }
    if let Auth::Session(session) = &spec.auth {
        check_request(&mut problems, "auth.login", &session.login);
        if HeaderValue::from_str(&session.prefix).is_err() {
            problems.push(Problem::new(
                "auth.prefix",
                "is not valid in an HTTP header",
            ));
        }
    }
    check_response(&mut problems, spec);
    check_pagination(&mut problems, spec);
    check_list(&mut problems, spec);
    let vars = check_vars(&mut problems, spec, &places, given);
    // Rendering needs every template and variable to be right.
    if problems.is_empty() {
        check_samples(&mut problems, spec, &vars, base_url);
    }
    if problems.is_empty() {
        Ok(vars)
    } else {
        Err(problems)
    }
}

fn check_request(problems: &mut Vec<Problem>, at: &str, request: &RequestSpec) {
    let base_at = request
        .url
        .pieces
        .iter()
        .position(|p| matches!(p, Piece::Var(Var::BaseUrl)));
    if base_at.is_some_and(|i| i != 0) {
        problems.push(Problem::new(
            format!("{at}.url"),
            "{{base_url}} may only start the URL",
        ));
    }
    if request.body.is_some() && request.method == Method::Get {
        problems.push(Problem::new(
            format!("{at}.body"),
            "a body needs method = \"POST\"",
        ));
    }
}

fn check_response(problems: &mut Vec<Problem>, spec: &Spec) {
    let response = &spec.response;
    for (path, rule) in response.not_found.keyed("response.not_found") {
        if rule.status.iter().any(|s| !not_found_status(*s)) {
            problems.push(Problem::new(
                format!("{path}.status"),
                "may only hold 2xx and 4xx statuses other than 401, 403, 408 and 429 (those are errors for every connector)",
            ));
        }
    }
    if let Some(rule) = &response.throttle {
        let statuses = &rule.status.0;
        if statuses.is_empty() {
            problems.push(Problem::new("response.throttle.status", "needs a status"));
        }
        if statuses.iter().any(|s| !(400..600).contains(s)) {
            problems.push(Problem::new(
                "response.throttle.status",
                "must be 4xx or 5xx statuses",
            ));
        }
        match (&rule.header, &rule.equals) {
            (Some(_), None) => problems.push(Problem::new(
                "response.throttle.equals",
                "is required with `header`",
            )),
            (None, Some(_)) => problems.push(Problem::new(
                "response.throttle.header",
                "is required with `equals`",
            )),
            _ => {}
        }
    }
}

fn check_pagination(problems: &mut Vec<Problem>, spec: &Spec) {
    let pagination = &spec.pagination;
    if !pagination.is_none() && spec.response.matcher.is_none() {
        problems.push(Problem::new(
            "response.match",
            "pagination needs `match` to pick the user out of each page",
        ));
    }
    match pagination.size_keys() {
        (true, false) => problems.push(Problem::new(
            "pagination.size",
            "is required with `size_param`",
        )),
        (false, true) => problems.push(Problem::new(
            "pagination.size_param",
            "is required with `size`",
        )),
        _ => {}
    }
}

fn check_list(problems: &mut Vec<Problem>, spec: &Spec) {
    let Some(list) = &spec.list else {
        return;
    };
    check_request(problems, "list.request", &list.request);
    if list.request.basic.is_some() {
        problems.push(Problem::new(
            "list.request.basic",
            "only the login request takes `basic`; the list authenticates with [auth]",
        ));
    }
    match list.pagination.size_keys() {
        (true, false) => problems.push(Problem::new(
            "list.pagination.size",
            "is required with `size_param`",
        )),
        (false, true) => problems.push(Problem::new(
            "list.pagination.size_param",
            "is required with `size`",
        )),
        _ => {}
    }
    if let Some(sweep) = &list.sweep {
        if sweep.param.trim().is_empty() {
            problems.push(Problem::new(
                "list.sweep.param",
                "must name a query parameter",
            ));
        }
        if sweep.values.is_empty() {
            problems.push(Problem::new(
                "list.sweep.values",
                "must hold at least one value (the list is walked once per value)",
            ));
        }
    }
}

/// The spec's defaults overridden by `given`; every variable the templates
/// use must have a non-empty value, and every value given must be used.
fn check_vars(
    problems: &mut Vec<Problem>,
    spec: &Spec,
    places: &[Place<'_>],
    given: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut used: BTreeMap<&str, &str> = BTreeMap::new();
    for place in places {
        for var in place.template.vars() {
            if let Var::Named(name) = var {
                used.entry(name).or_insert(&place.path);
            }
        }
    }
    for name in spec.vars.keys() {
        if !used.contains_key(name.as_str()) {
            problems.push(Problem::new(
                format!("vars.{name}"),
                "not used by any template",
            ));
        }
    }
    let mut vars = spec.vars.clone();
    for (name, value) in given {
        if !used.contains_key(name.as_str()) {
            let known: Vec<&str> = used.keys().copied().collect();
            problems.push(Problem::option(
                format!("vars.{name}"),
                format!(
                    "the spec uses no such variable (it uses: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
        vars.insert(name.clone(), value.clone());
    }
    for (name, place) in &used {
        match vars.get(*name) {
            Some(value) if !value.trim().is_empty() => {}
            Some(_) => problems.push(Problem::option(format!("vars.{name}"), "must not be empty")),
            None => problems.push(Problem::option(
                format!("vars.{name}"),
                format!("the spec needs this variable (used in {place}); set it in options.vars"),
            )),
        }
    }
    vars
}

/// Renders every template with sample values and checks the results: a URL
/// that is not a URL or leaves `base_url`'s origin, a body that is not JSON
/// or a header that cannot be sent fail now rather than on every job.
fn check_samples(
    problems: &mut Vec<Problem>,
    spec: &Spec,
    vars: &BTreeMap<String, String>,
    base_url: &Url,
) {
    let sample_user = UserRef {
        id: "u-1".into(),
        email: "Sample.User+tag@example.com".into(),
        external_id: Some("sample-login".into()),
    };
    let base = base_url.as_str().trim_end_matches('/');
    let mut values = Values {
        user: Some(&sample_user),
        base_url: base,
        vars,
        secret: SecretSource::Sample,
    };
    let origin = base_url.origin();
    sample_request(problems, "request", &spec.request, &values, &origin);
    match &spec.auth {
        Auth::Basic { .. } => {}
        Auth::Bearer { token } => {
            if let Some(t) = sample(problems, "auth.token", token, &values, Escape::None) {
                sample_header(problems, "auth.token", &format!("Bearer {t}"));
            }
        }
        Auth::Header { value, .. } => {
            if let Some(v) = sample(problems, "auth.value", value, &values, Escape::None) {
                sample_header(problems, "auth.value", &v);
            }
        }
        Auth::Session(session) => {
            values.user = None;
            sample_request(problems, "auth.login", &session.login, &values, &origin);
        }
    }
    if let Some(list) = &spec.list {
        values.user = None;
        sample_request(problems, "list.request", &list.request, &values, &origin);
    }
}

fn sample(
    problems: &mut Vec<Problem>,
    path: &str,
    template: &Template,
    values: &Values<'_>,
    escape: Escape,
) -> Option<String> {
    render(template, values, escape)
        .map_err(|e| problems.push(Problem::new(path, format!("cannot be rendered ({e:?})"))))
        .ok()
}

fn sample_header(problems: &mut Vec<Problem>, path: &str, value: &str) {
    if HeaderValue::from_str(value).is_err() {
        problems.push(Problem::new(path, "is not a valid HTTP header value"));
    }
}

fn sample_request(
    problems: &mut Vec<Problem>,
    at: &str,
    request: &RequestSpec,
    values: &Values<'_>,
    origin: &Origin,
) {
    let path = format!("{at}.url");
    if let Some(url) = sample(problems, &path, &request.url, values, Escape::Url) {
        match Url::parse(&url) {
            Ok(u) if !matches!(u.scheme(), "http" | "https") || !u.has_host() => {
                problems.push(Problem::new(path, "must be an http(s) URL"));
            }
            Ok(u) if u.origin() != *origin => problems.push(Problem::new(
                path,
                format!(
                    "leads to {}, not to base_url's origin {}: requests, and so credentials, only go to base_url's scheme, host and port",
                    u.origin().ascii_serialization(),
                    origin.ascii_serialization()
                ),
            )),
            Ok(_) => {}
            Err(e) => problems.push(Problem::new(
                path,
                format!("does not render to a URL ({e}); start it with {{{{base_url}}}}"),
            )),
        }
    }
    for (key, template) in &request.headers.0 {
        let path = format!("{at}.headers.{}", key.written);
        if let Some(value) = sample(problems, &path, template, values, Escape::None) {
            sample_header(problems, &path, &value);
        }
    }
    if let Some(body) = &request.body {
        let path = format!("{at}.body");
        if let Some(text) = sample(problems, &path, body, values, Escape::Json)
            && let Err(e) = serde_json::from_str::<Value>(&text)
        {
            problems.push(Problem::new(
                path,
                format!("does not render to JSON ({e}); put string variables inside quotes"),
            ));
        }
    }
}
