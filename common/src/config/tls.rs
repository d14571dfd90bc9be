//! TLS for RabbitMQ (`amqps://`) and Redis (`rediss://`).
//!
//! The server is verified against the CA file when one is given (a private
//! CA, as in most clusters), else against the system's roots. A client
//! certificate and key (both PEM) turn on mutual TLS. Files are checked at
//! start, so a typo in a path stops the process with the key named, not at
//! the first reconnect.

use std::path::PathBuf;

use serde::Deserialize;

/// The `tls` table as written.
#[allow(missing_docs)]
#[derive(Debug, Deserialize, Clone, Default)]
pub struct RawTls {
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

/// TLS settings of one connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM file of the CA(s) that signed the server's certificate.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for mutual TLS.
    pub client: Option<(PathBuf, PathBuf)>,
}

impl TlsSettings {
    /// The CA certificates (PEM), if a file is configured.
    pub fn ca_pem(&self) -> std::io::Result<Option<Vec<u8>>> {
        self.ca_file.as_ref().map(std::fs::read).transpose()
    }

    /// The client certificate and key (PEM), if configured.
    pub fn client_pem(&self) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.client
            .as_ref()
            .map(|(cert, key)| Ok((std::fs::read(cert)?, std::fs::read(key)?)))
            .transpose()
    }
}

/// Validates the `tls` table at `prefix` (`amqp.tls`, `redis.tls`).
pub(crate) fn validate_tls(
    prefix: &str,
    raw: RawTls,
    bad: &mut dyn FnMut(String, String),
) -> TlsSettings {
    let mut check = |key: &str, path: &Option<PathBuf>| {
        if let Some(p) = path
            && let Err(e) = std::fs::metadata(p)
        {
            bad(
                format!("{prefix}.{key}"),
                format!("cannot read {}: {e}", p.display()),
            );
        }
    };
    check("ca_file", &raw.ca_file);
    check("client_cert_file", &raw.client_cert_file);
    check("client_key_file", &raw.client_key_file);
    let client = match (raw.client_cert_file, raw.client_key_file) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        (Some(_), None) => {
            bad(
                format!("{prefix}.client_key_file"),
                "missing: a client certificate needs its key".into(),
            );
            None
        }
        (None, Some(_)) => {
            bad(
                format!("{prefix}.client_cert_file"),
                "missing: a client key needs its certificate".into(),
            );
            None
        }
    };
    TlsSettings {
        ca_file: raw.ca_file,
        client,
    }
}
