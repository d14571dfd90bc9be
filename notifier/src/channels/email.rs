//! E-mail over SMTP (lettre, tokio, rustls): STARTTLS (required, not
//! opportunistic), TLS from the first byte, or plain for a local relay.
//!
//! The server's certificate is checked against the system's roots and, when
//! `ca_file` is set, that CA too (a private relay). The password is a
//! credential from the vault; lettre never logs it, and errors only carry
//! the server's reply.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use rolecall_common::config::{EmailSettings, SmtpTls};
use rolecall_common::credentials::Vault;
use secrecy::ExposeSecret;

use super::{BuildError, DeliveryError, Notification};

/// An e-mail channel.
pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
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
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host)
            .port(s.port)
            .tls(tls)
            .timeout(Some(timeout));
        if let Some(user) = &s.username {
            let password = match &s.password_credential {
                Some(name) => vault
                    .get(name)
                    .await
                    .map_err(|source| BuildError::Credential {
                        channel: channel.to_string(),
                        source,
                    })?
                    .expose_secret()
                    .to_string(),
                None => String::new(),
            };
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        let from: Mailbox = s.from.parse().map_err(|e| invalid(format!("from: {e}")))?;
        let to =
            s.to.iter()
                .enumerate()
                .map(|(i, t)| t.parse().map_err(|e| invalid(format!("to[{i}]: {e}"))))
                .collect::<Result<Vec<Mailbox>, _>>()?;
        Ok(Email {
            transport: builder.build(),
            from,
            to,
        })
    }

    /// Connects, says EHLO, upgrades to TLS and logs in as configured,
    /// then quits: everything but sending (`check-config --connect`).
    pub async fn check(&self) -> Result<(), DeliveryError> {
        match self.transport.test_connection().await {
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
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            // 5xx: the server refused us (login, sender, recipient).
            Err(e) if e.is_permanent() => Err(DeliveryError::Configuration(format!("SMTP: {e}"))),
            Err(e) => Err(DeliveryError::Transient(format!("SMTP: {e}"))),
        }
    }
}
