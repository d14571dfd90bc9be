//! Credentials by name: environment variables, mounted secret files, and
//! HashiCorp Vault KV v2.
//!
//! A SaaS app's configuration names its credential (`credential =
//! "lever-prod"`); the secret itself never appears in configuration,
//! messages or logs. Lookup order:
//! 1. the environment variable `<env_prefix><NAME>` (name upper-cased,
//!    other characters as `_`);
//! 2. the file `<dir>/<name>` (a Kubernetes Secret mounted as a volume);
//! 3. Vault KV v2: `GET <address>/v1/<mount>/data/<path_prefix><name>` with
//!    the Vault token. A secret with a single `value` key yields that string;
//!    a secret with several keys (Mosyle's access token, e-mail and
//!    password) yields them as a JSON object, which the connector parses.
//!
//! Secrets are held as `SecretString` (redacted `Debug`, zeroed on drop).

use std::collections::HashMap;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::config::{CredentialSettings, VaultSettings};

/// Why a credential could not be resolved. Names where it looked, never a value.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// No provider has it.
    #[error("credential `{name}` not found (looked at environment variable {env}{more})")]
    Missing {
        /// Credential name.
        name: String,
        /// Variable looked at.
        env: String,
        /// Further places looked at.
        more: String,
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
    /// Vault could not be asked, or refused.
    #[error("credential `{name}`: Vault: {reason}")]
    Vault {
        /// Credential name.
        name: String,
        /// What went wrong (status, never the token).
        reason: String,
    },
}

/// Resolves credentials by name.
#[derive(Debug, Clone)]
pub struct Vault {
    settings: CredentialSettings,
    env: Option<HashMap<String, String>>,
    http: reqwest::Client,
}

impl Vault {
    /// A vault reading the process environment, the folder and Vault.
    pub fn new(settings: CredentialSettings) -> Self {
        Self {
            settings,
            env: None,
            http: crate::http::client(),
        }
    }

    /// A vault reading the given variables instead of the process
    /// environment (tests never mutate the process environment).
    pub fn with_env(settings: CredentialSettings, env: HashMap<String, String>) -> Self {
        Self {
            settings,
            env: Some(env),
            http: crate::http::client(),
        }
    }

    fn var(&self, name: &str) -> Option<String> {
        match &self.env {
            Some(map) => map.get(name).cloned(),
            None => std::env::var(name).ok(),
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
    pub async fn get(&self, name: &str) -> Result<SecretString, CredentialError> {
        let var = self.env_var(name);
        if let Some(value) = self.var(&var) {
            return non_empty(name, value);
        }
        let mut more = String::new();
        if let Some(dir) = &self.settings.dir {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(value) => return non_empty(name, value.trim_end_matches(['\n', '\r']).into()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    more.push_str(&format!(", file {}", path.display()));
                }
                Err(source) => {
                    return Err(CredentialError::Unreadable {
                        name: name.into(),
                        path,
                        source,
                    });
                }
            }
        }
        if let Some(vault) = &self.settings.vault {
            match self.read_vault(vault, name).await? {
                Some(value) => return non_empty(name, value),
                None => more.push_str(&format!(
                    ", Vault {}/{}{name}",
                    vault.mount, vault.path_prefix
                )),
            }
        }
        Err(CredentialError::Missing {
            name: name.into(),
            env: var,
            more,
        })
    }

    async fn read_vault(
        &self,
        vault: &VaultSettings,
        name: &str,
    ) -> Result<Option<String>, CredentialError> {
        let fail = |reason: String| CredentialError::Vault {
            name: name.into(),
            reason,
        };
        let token = match self.var(&vault.token_env) {
            Some(t) => SecretString::from(t),
            None => match &vault.token_file {
                Some(path) => SecretString::from(
                    std::fs::read_to_string(path)
                        .map_err(|e| {
                            fail(format!(
                                "cannot read the token file {}: {e}",
                                path.display()
                            ))
                        })?
                        .trim()
                        .to_string(),
                ),
                None => {
                    return Err(fail(format!(
                        "no token: set {} or credentials.vault.token_file",
                        vault.token_env
                    )));
                }
            },
        };
        let mut url = vault.address.clone();
        url.set_path(&format!(
            "/v1/{}/data/{}{}",
            vault.mount, vault.path_prefix, name
        ));
        let response = self
            .http
            .get(url)
            .header("X-Vault-Token", token.expose_secret())
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| fail(e.without_url().to_string()))?;
        match response.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            403 => {
                return Err(fail(
                    "permission denied (HTTP 403): check the token's policy".into(),
                ));
            }
            status => return Err(fail(format!("HTTP {status}"))),
        }
        let body: Value = response
            .json()
            .await
            .map_err(|e| fail(format!("unreadable response: {}", e.without_url())))?;
        let data = body
            .pointer("/data/data")
            .and_then(Value::as_object)
            .ok_or_else(|| fail("response is not a KV v2 secret (no data.data)".into()))?;
        Ok(Some(match (data.len(), data.get("value")) {
            (1, Some(Value::String(v))) => v.clone(),
            _ => Value::Object(data.clone()).to_string(),
        }))
    }
}

fn non_empty(name: &str, value: String) -> Result<SecretString, CredentialError> {
    if value.is_empty() {
        Err(CredentialError::Empty(name.into()))
    } else {
        Ok(SecretString::from(value))
    }
}

/// A credential made of several named parts (JSON object), e.g. Mosyle's
/// access token, admin e-mail and password.
#[derive(Debug)]
pub struct CredentialParts(HashMap<String, SecretString>);

impl CredentialParts {
    /// Parses `secret` as a JSON object of strings holding at least `required`.
    /// The error says what is missing, never what is there.
    pub fn parse(secret: &SecretString, required: &[&str]) -> Result<Self, String> {
        let value: Value = serde_json::from_str(secret.expose_secret()).map_err(|_| {
            format!(
                "is not a JSON object with the fields {}",
                required.join(", ")
            )
        })?;
        let object = value.as_object().ok_or_else(|| {
            format!(
                "is not a JSON object with the fields {}",
                required.join(", ")
            )
        })?;
        let mut parts = HashMap::new();
        for (k, v) in object {
            if let Value::String(s) = v {
                parts.insert(k.clone(), SecretString::from(s.clone()));
            }
        }
        let missing: Vec<&str> = required
            .iter()
            .copied()
            .filter(|k| parts.get(*k).is_none_or(|v| v.expose_secret().is_empty()))
            .collect();
        if !missing.is_empty() {
            return Err(format!("lacks the field(s) {}", missing.join(", ")));
        }
        Ok(Self(parts))
    }

    /// One part (present: `parse` checked the required ones).
    pub fn get(&self, key: &str) -> Option<&SecretString> {
        self.0.get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: Option<PathBuf>) -> CredentialSettings {
        CredentialSettings {
            env_prefix: "ROLECALL_SECRET_".into(),
            dir,
            vault: None,
        }
    }

    #[tokio::test]
    async fn the_environment_comes_first_then_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("lever-prod"), "from-file\n").unwrap();
        std::fs::write(dir.path().join("miro"), "miro-file").unwrap();
        let env = HashMap::from([(
            "ROLECALL_SECRET_LEVER_PROD".to_string(),
            "from-env".to_string(),
        )]);
        let vault = Vault::with_env(settings(Some(dir.path().into())), env);
        assert_eq!(
            vault.get("lever-prod").await.unwrap().expose_secret(),
            "from-env"
        );
        assert_eq!(
            vault.get("miro").await.unwrap().expose_secret(),
            "miro-file"
        );
    }

    #[tokio::test]
    async fn a_missing_credential_names_where_it_looked_not_a_value() {
        let vault = Vault::with_env(settings(None), HashMap::new());
        let err = vault.get("lever-prod").await.unwrap_err().to_string();
        assert!(err.contains("ROLECALL_SECRET_LEVER_PROD"), "{err}");
    }

    #[tokio::test]
    async fn secrets_do_not_leak_through_debug() {
        let env = HashMap::from([("ROLECALL_SECRET_X".to_string(), "hunter2".to_string())]);
        let vault = Vault::with_env(settings(None), env);
        let secret = vault.get("x").await.unwrap();
        assert!(!format!("{secret:?}").contains("hunter2"));
    }

    #[test]
    fn structured_credentials_name_missing_parts_never_values() {
        let ok = SecretString::from(r#"{"access_token":"t","email":"a@b.c","password":"p"}"#);
        let parts = CredentialParts::parse(&ok, &["access_token", "email", "password"]).unwrap();
        assert_eq!(parts.get("email").unwrap().expose_secret(), "a@b.c");
        let partial = SecretString::from(r#"{"access_token":"hunter2"}"#);
        let err =
            CredentialParts::parse(&partial, &["access_token", "email", "password"]).unwrap_err();
        assert_eq!(err, "lacks the field(s) email, password");
        let junk = SecretString::from("hunter2".to_string());
        let err = CredentialParts::parse(&junk, &["access_token"]).unwrap_err();
        assert!(!err.contains("hunter2"));
    }
}
