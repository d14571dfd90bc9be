//! Where a spec comes from: the connector's options, an inline `spec`, or a
//! preset, and how a problem in any of them names its key.
//!
//! Presets are read from two places only: the set shipped with this build
//! (embedded, so a deployed binary needs no folder) and `options.presets_dir`,
//! an absolute path an operator configured. Never the worker's working
//! directory: what a process happens to be started in must not decide which
//! hosts receive a credential or how "not found" is read.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::spec::{self, Problem, Spec, join};
use super::template::identifier;
use super::{BuildContext, BuildError};

/// The presets shipped with this build, embedded so that a deployed binary
/// works without the `presets/` folder next to it.
pub(super) const SHIPPED: &[(&str, &str)] = &[
    (
        "github-org-membership",
        include_str!("../../../../presets/github-org-membership.toml"),
    ),
    (
        "zoom-users",
        include_str!("../../../../presets/zoom-users.toml"),
    ),
];

/// The options of `connector = "http"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Options {
    /// A preset's name: the file `<name>.toml`.
    preset: Option<String>,
    /// A spec inline, read by [`spec::parse`] (so its errors name `spec.…`).
    spec: Option<Value>,
    /// Values for `{{vars.NAME}}`.
    #[serde(default)]
    pub(super) vars: BTreeMap<String, String>,
    /// A folder of preset files that win over the shipped ones.
    presets_dir: Option<PathBuf>,
}

/// Where the spec came from, for error messages.
pub(super) enum Source {
    Inline,
    Preset { name: String, from: String },
}

impl Source {
    /// One error for all `problems` (at least one): the first names its key,
    /// the others follow on their own lines, each naming its own key.
    /// Inline specs name the option key; presets name the file and the key in it.
    pub(super) fn error(&self, ctx: &BuildContext<'_>, problems: Vec<Problem>) -> BuildError {
        let mut errors = problems.into_iter().map(|p| self.one(ctx, p));
        let first = errors.next().expect("at least one problem");
        let rest: Vec<String> = errors.map(|e| e.to_string()).collect();
        match first {
            BuildError::Option { saas, key, reason } if !rest.is_empty() => BuildError::Option {
                saas,
                key,
                reason: format!("{reason}\n  - {}", rest.join("\n  - ")),
            },
            first => first,
        }
    }

    fn one(&self, ctx: &BuildContext<'_>, problem: Problem) -> BuildError {
        match self {
            _ if problem.option => ctx.bad_option(&problem.path, problem.reason),
            Source::Inline => ctx.bad_option(&join("spec", &problem.path), problem.reason),
            Source::Preset { name, from } => {
                let at = if problem.path.is_empty() {
                    String::new()
                } else {
                    format!("{}: ", problem.path)
                };
                ctx.bad_option(
                    "preset",
                    format!("preset `{name}` ({from}): {at}{}", problem.reason),
                )
            }
        }
    }
}

/// The options, the spec they name and where it came from.
pub(super) fn load(ctx: &BuildContext<'_>) -> Result<(Options, Spec, Source), BuildError> {
    let options: Options = ctx.options()?;
    let (doc, source) = match (&options.preset, &options.spec) {
        (Some(_), Some(_)) => {
            return Err(ctx.bad_option("spec", "set either `preset` or `spec`, not both"));
        }
        (None, None) => {
            return Err(ctx.bad_option(
                "preset",
                format!(
                    "set `preset` (shipped: {}) or describe the vendor in `spec` (see docs/presets.md)",
                    shipped_names()
                ),
            ));
        }
        (None, Some(spec)) => {
            if options.presets_dir.is_some() {
                return Err(ctx.bad_option("presets_dir", "only used with `preset`"));
            }
            (spec.clone(), Source::Inline)
        }
        (Some(name), None) => {
            let (from, text) = find_preset(name, options.presets_dir.as_deref())
                .map_err(|(key, reason)| ctx.bad_option(key, reason))?;
            let doc = parse_toml(&text)
                .map_err(|e| ctx.bad_option("preset", format!("preset `{name}` ({from}): {e}")))?;
            let source = Source::Preset {
                name: name.clone(),
                from,
            };
            (doc, source)
        }
    };
    match spec::parse(doc) {
        Ok(spec) => Ok((options, spec, source)),
        Err(problem) => Err(source.error(ctx, vec![problem])),
    }
}

fn shipped_names() -> String {
    SHIPPED
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The preset's text and where it came from: `dir/<name>.toml` when a
/// folder is configured and holds it, else the shipped copy. A file in the
/// folder wins so that a site can fix a preset without waiting for a release.
/// Errors name the option at fault.
fn find_preset(
    name: &str,
    dir: Option<&Path>,
) -> Result<(String, Cow<'static, str>), (&'static str, String)> {
    if identifier(name).is_none() {
        return Err((
            "preset",
            "a preset name is letters, digits, '-' and '_' (the file <name>.toml)".into(),
        ));
    }
    if let Some(dir) = dir {
        if !dir.is_absolute() {
            return Err((
                "presets_dir",
                "must be an absolute path (a relative one would depend on the worker's working directory)".into(),
            ));
        }
        let path = dir.join(format!("{name}.toml"));
        match std::fs::read_to_string(&path) {
            Ok(text) => return Ok((path.display().to_string(), Cow::Owned(text))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(("preset", format!("cannot read {}: {e}", path.display()))),
        }
    }
    match SHIPPED.iter().find(|(shipped, _)| *shipped == name) {
        Some((_, text)) => Ok(("built in".to_owned(), Cow::Borrowed(text))),
        None => Err((
            "preset",
            format!(
                "no preset `{name}` ({}shipped: {})",
                dir.map(|d| format!("not in {}; ", d.display()))
                    .unwrap_or_default(),
                shipped_names()
            ),
        )),
    }
}

/// TOML through the `config` crate the workspace already uses, so preset
/// files and inline specs (which arrive through the same crate) are read alike.
pub(super) fn parse_toml(text: &str) -> Result<Value, String> {
    config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize::<Value>())
        .map_err(|e| e.to_string())
}
