//! Credentials by name, from the environment or mounted secret files.
//!
//! A SaaS app's configuration names its credential (`credential =
//! "lever-prod"`); the secret itself never appears in configuration,
//! messages or logs. Lookup order: the environment variable
//! `<env_prefix><NAME>` (name upper-cased, `-` and `.` as `_`), then the file
//! `<dir>/<name>` (a Kubernetes Secret mounted as a volume).

use std::path::PathBuf;

use secrecy::SecretString;

use crate::config::CredentialSettings;

/// Why a credential could not be resolved. Names where it looked, never a value.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// Neither the variable nor the file exists.
    #[error("credential `{name}` not found (looked at environment variable {env}{file})")]
    Missing {
        /// Credential name.
        name: String,
        /// Variable looked at.
        env: String,
        /// ", and file …" when a secrets folder is configured.
        file: String,
    },
    /// Found but empty.
    #[error("credential `{0}` is empty")]
    Empty(String),
    /// The file exists but could not be read.
    #[error("credential `{name}`: cannot read {path}: {source}")]
    Unreadable {
        /// Credential name.
        name: String,
        /// File path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Resolves credentials by name.
#[derive(Debug, Clone)]
pub struct Vault {
    settings: CredentialSettings,
    env: Option<std::collections::HashMap<String, String>>,
}

impl Vault {
    /// A vault reading the process environment and the configured folder.
    pub fn new(settings: CredentialSettings) -> Self {
        Self {
            settings,
            env: None,
        }
    }

    /// A vault reading the given variables instead of the process
    /// environment (tests never mutate the process environment).
    pub fn with_env(
        settings: CredentialSettings,
        env: std::collections::HashMap<String, String>,
    ) -> Self {
        Self {
            settings,
            env: Some(env),
        }
    }

    /// The environment variable a credential is read from.
    pub fn env_var(&self, name: &str) -> String {
        let suffix: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        format!("{}{suffix}", self.settings.env_prefix)
    }

    /// Looks a credential up.
    pub fn get(&self, name: &str) -> Result<SecretString, CredentialError> {
        let var = self.env_var(name);
        let from_env = match &self.env {
            Some(map) => map.get(&var).cloned(),
            None => std::env::var(&var).ok(),
        };
        if let Some(value) = from_env {
            return non_empty(name, value);
        }
        if let Some(dir) = &self.settings.dir {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(value) => return non_empty(name, value.trim_end_matches(['\n', '\r']).into()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(CredentialError::Unreadable {
                        name: name.into(),
                        path,
                        source,
                    });
                }
            }
        }
        Err(CredentialError::Missing {
            name: name.into(),
            env: var,
            file: self
                .settings
                .dir
                .as_ref()
                .map(|d| format!(", and file {}", d.join(name).display()))
                .unwrap_or_default(),
        })
    }
}

fn non_empty(name: &str, value: String) -> Result<SecretString, CredentialError> {
    if value.is_empty() {
        Err(CredentialError::Empty(name.into()))
    } else {
        Ok(SecretString::from(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    fn settings(dir: Option<PathBuf>) -> CredentialSettings {
        CredentialSettings {
            env_prefix: "ROLECALL_SECRET_".into(),
            dir,
        }
    }

    #[test]
    fn the_environment_comes_first_then_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("lever-prod"), "from-file\n").unwrap();
        std::fs::write(dir.path().join("miro"), "miro-file").unwrap();
        let env = HashMap::from([(
            "ROLECALL_SECRET_LEVER_PROD".to_string(),
            "from-env".to_string(),
        )]);
        let vault = Vault::with_env(settings(Some(dir.path().into())), env);
        assert_eq!(vault.get("lever-prod").unwrap().expose_secret(), "from-env");
        assert_eq!(vault.get("miro").unwrap().expose_secret(), "miro-file");
    }

    #[test]
    fn a_missing_credential_names_where_it_looked_not_a_value() {
        let vault = Vault::with_env(settings(None), HashMap::new());
        let err = vault.get("lever-prod").unwrap_err().to_string();
        assert!(err.contains("ROLECALL_SECRET_LEVER_PROD"), "{err}");
    }

    #[test]
    fn secrets_do_not_leak_through_debug() {
        let env = HashMap::from([("ROLECALL_SECRET_X".to_string(), "hunter2".to_string())]);
        let vault = Vault::with_env(settings(None), env);
        let secret = vault.get("x").unwrap();
        assert!(!format!("{secret:?}").contains("hunter2"));
    }
}
