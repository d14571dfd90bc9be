//! E-mail over SMTP (lettre, tokio, rustls): STARTTLS (required, not
//! opportunistic), TLS from the first byte, or plain for a local relay.
//!
//! The server's certificate is checked against the system's roots and, when
//! `ca_file` is set, that CA too (a private relay). The password is a
//! credential from the vault, read again for each delivery (a rotated one
//! is used without a restart); lettre never logs it, and errors only carry
//! the server's reply.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use rolecall_common::config::{EmailSettings, SmtpTls};
use rolecall_common::credentials::Vault;
use secrecy::{ExposeSecret, SecretString};

use super::{BuildError, DeliveryError, Notification};

/// An e-mail channel.
pub struct Email {
    channel: String,
    server: Server,
    vault: Vault,
    /// The transport logging in with the password last read, rebuilt when
    /// a read finds another one.
    current: tokio::sync::Mutex<Current>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

/// Where and how the channel connects: all a transport needs but the
/// password.
struct Server {
    host: String,
    port: u16,
    tls: Tls,
    timeout: Duration,
    login: Option<Login>,
}

impl Server {
    fn transport(&self, password: &SecretString) -> AsyncSmtpTransport<Tokio1Executor> {
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&self.host)
            .port(self.port)
            .tls(self.tls.clone())
            .timeout(Some(self.timeout));
        if let Some(login) = &self.login {
            builder = builder.credentials(Credentials::new(
                login.user.clone(),
                password.expose_secret().to_string(),
            ));
        }
        builder.build()
    }

    /// The vault credential holding the password, if the channel logs in
    /// with one.
    fn password_credential(&self) -> Option<&str> {
        self.login.as_ref()?.password_credential.as_deref()
    }
}

/// Who the channel logs in as.
struct Login {
    user: String,
    /// The vault credential holding the password (none: an empty one).
    password_credential: Option<String>,
}

struct Current {
    password: SecretString,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl Email {
    /// Builds the transport: reads the CA file and the password, parses the
    /// addresses. Connects to nothing yet.
    pub async fn build(
        channel: &str,
        s: &EmailSettings,
        vault: &Vault,
        timeout: Duration,
    ) -> Result<Email, BuildError> {
        let invalid = |reason: String| BuildError::Invalid {
            channel: channel.to_string(),
            reason,
        };
        let tls_parameters = || -> Result<TlsParameters, BuildError> {
            let mut builder = TlsParameters::builder(s.host.clone());
            if let Some(path) = &s.ca_file {
                let pem = std::fs::read(path).map_err(|e| {
                    invalid(format!("ca_file: cannot read {}: {e}", path.display()))
                })?;
                let cert = Certificate::from_pem(&pem)
                    .map_err(|e| invalid(format!("ca_file: {}: {e}", path.display())))?;
                builder = builder.add_root_certificate(cert);
            }
            builder
                .build_rustls()
                .map_err(|e| invalid(format!("TLS: {e}")))
        };
        let tls = match s.tls {
            SmtpTls::Starttls => Tls::Required(tls_parameters()?),
            SmtpTls::Tls => Tls::Wrapper(tls_parameters()?),
            SmtpTls::None => Tls::None,
        };
        let from: Mailbox = s.from.parse().map_err(|e| invalid(format!("from: {e}")))?;
        let to =
            s.to.iter()
                .enumerate()
                .map(|(i, t)| t.parse().map_err(|e| invalid(format!("to[{i}]: {e}"))))
                .collect::<Result<Vec<Mailbox>, _>>()?;
        let login = s.username.as_ref().map(|user| Login {
            user: user.clone(),
            password_credential: s.password_credential.clone(),
        });
        let server = Server {
            host: s.host.clone(),
            port: s.port,
            tls,
            timeout,
            login,
        };
        let password = match server.password_credential() {
            Some(name) => vault
                .get(name)
                .await
                .map_err(|source| BuildError::Credential {
                    channel: channel.to_string(),
                    source,
                })?,
            None => SecretString::from(String::new()),
        };
        Ok(Email {
            channel: channel.to_string(),
            current: tokio::sync::Mutex::new(Current {
                transport: server.transport(&password),
                password,
            }),
            server,
            vault: vault.clone(),
            from,
            to,
        })
    }

    /// The transport to send with. The password is read from the vault
    /// again for each delivery, as the webhook's URL is: a rotated SMTP
    /// password (a Secret updated in place) is used without a restart, so
    /// a notification refused for the old login goes out on its next try.
    /// If it cannot be read now, the last one read is used.
    async fn transport(&self) -> AsyncSmtpTransport<Tokio1Executor> {
        // Held across the read, so a delivery that read the old password
        // cannot put the old transport back after another installed the new.
        let mut current = self.current.lock().await;
        if let Some(name) = self.server.password_credential() {
            match self.vault.get(name).await {
                Ok(password) if password.expose_secret() != current.password.expose_secret() => {
                    current.transport = self.server.transport(&password);
                    current.password = password;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(channel = self.channel, error = %e, "Could not read the SMTP password again; using the last one read.");
                }
            }
        }
        current.transport.clone()
    }

    /// Connects, says EHLO, upgrades to TLS and logs in as configured,
    /// then quits: everything but sending (`check-config --connect`).
    pub async fn check(&self) -> Result<(), DeliveryError> {
        match self.transport().await.test_connection().await {
            Ok(true) => Ok(()),
            Ok(false) => Err(DeliveryError::Transient(
                "SMTP server did not accept the connection".into(),
            )),
            Err(e) if e.is_permanent() => Err(DeliveryError::Configuration(format!("SMTP: {e}"))),
            Err(e) => Err(DeliveryError::Transient(format!("SMTP: {e}"))),
        }
    }

    /// Sends the notification as a plain-text e-mail to every recipient.
    pub async fn send(&self, n: &Notification) -> Result<(), DeliveryError> {
        let mut message = Message::builder()
            .from(self.from.clone())
            .subject(n.subject.clone())
            .message_id(Some(format!("<{}@rolecall>", n.id)))
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            message = message.to(to.clone());
        }
        let message = message
            .body(n.text.clone())
            .map_err(|e| DeliveryError::Configuration(format!("cannot build the e-mail: {e}")))?;
        match self.transport().await.send(message).await {
            Ok(_) => Ok(()),
            // 5xx: the server refused us (login, sender, recipient).
            Err(e) if e.is_permanent() => Err(DeliveryError::Configuration(format!("SMTP: {e}"))),
            Err(e) => Err(DeliveryError::Transient(format!("SMTP: {e}"))),
        }
    }
}
