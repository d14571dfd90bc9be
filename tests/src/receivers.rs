//! Receivers for the notifier's tests: a Slack-compatible webhook (an axum
//! server on port 0) and a real SMTP server (`python -m aiosmtpd`, installed
//! by scripts/test.sh in a throwaway virtualenv, its Mailbox handler
//! writing each message into a Maildir the test reads).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;

use crate::free_port;

// --- a Slack-compatible webhook ---------------------------------------------

/// What the webhook received.
#[derive(Default)]
pub struct HookState {
    /// Texts of the requests answered 200.
    pub texts: Mutex<Vec<String>>,
    /// Requests answered 500.
    pub refused: AtomicUsize,
    /// While set, every request is answered 500.
    pub failing: AtomicBool,
}

/// A Slack-compatible incoming webhook on a free loopback port.
pub struct Webhook {
    /// Its URL (the path plays a Slack webhook's secret part).
    pub url: String,
    /// What it received; `failing` makes it answer 500.
    pub state: Arc<HookState>,
}

impl Webhook {
    /// Starts one.
    pub async fn start() -> Webhook {
        let state = Arc::new(HookState::default());
        async fn receive(
            State(s): State<Arc<HookState>>,
            Json(body): Json<serde_json::Value>,
        ) -> StatusCode {
            if s.failing.load(Ordering::SeqCst) {
                s.refused.fetch_add(1, Ordering::SeqCst);
                return StatusCode::INTERNAL_SERVER_ERROR;
            }
            let text = body["text"].as_str().unwrap_or_default().to_string();
            s.texts.lock().unwrap().push(text);
            StatusCode::OK
        }
        let app = axum::Router::new()
            // The path plays the secret part of a Slack webhook URL.
            .route("/services/T0/B0/s3cr3t-hook", post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/services/T0/B0/s3cr3t-hook",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Webhook { url, state }
    }

    /// The texts received (answered 200), in order.
    pub fn texts(&self) -> Vec<String> {
        self.state.texts.lock().unwrap().clone()
    }
}

// --- a real SMTP server -----------------------------------------------------

/// `aiosmtpd` on loopback; stopped when dropped.
pub struct SmtpServer {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    maildir: tempfile::TempDir,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python with `aiosmtpd` (scripts/test.sh sets `ROLECALL_TEST_PYTHON`).
fn python() -> String {
    std::env::var("ROLECALL_TEST_PYTHON")
        .unwrap_or_else(|_| "/tmp/rolecall-test-venv/bin/python".into())
}

impl SmtpServer {
    /// `aiosmtpd` on a free loopback port, its Mailbox handler writing each
    /// message into a Maildir; with `tls`, a (certificate, key) pair for
    /// STARTTLS, which the server then requires.
    pub async fn start(tls: Option<(&Path, &Path)>) -> SmtpServer {
        Self::start_on(free_port(), tls).await
    }

    /// Like [`SmtpServer::start`], on a given port.
    pub async fn start_on(port: u16, tls: Option<(&Path, &Path)>) -> SmtpServer {
        let maildir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(python());
        cmd.args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")]);
        if let Some((cert, key)) = tls {
            cmd.arg("--tlscert").arg(cert).arg("--tlskey").arg(key);
        }
        cmd.args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir.path().join("mail"));
        Self::spawn(cmd, port, maildir).await
    }

    /// `aiosmtpd` that takes mail only after `AUTH` (PLAIN or LOGIN, over
    /// plain SMTP) as `user` with the password `password_file` holds when
    /// the client logs in: rewriting the file rotates the password.
    pub async fn start_with_login(user: &str, password_file: &Path) -> SmtpServer {
        const SERVER: &str = r#"
import pathlib, sys, threading
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword
port, maildir, user, password_file = sys.argv[1:5]
def authenticate(server, session, envelope, mechanism, data):
    ok = (isinstance(data, LoginPassword) and data.login.decode() == user
          and data.password.decode() == pathlib.Path(password_file).read_text().strip())
    return AuthResult(success=ok)
Controller(Mailbox(maildir), hostname="127.0.0.1", port=int(port),
           authenticator=authenticate, auth_required=True,
           auth_require_tls=False).start()
threading.Event().wait()
"#;
        let port = free_port();
        let maildir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(python());
        cmd.args(["-c", SERVER, &port.to_string()])
            .arg(maildir.path().join("mail"))
            .arg(user)
            .arg(password_file);
        Self::spawn(cmd, port, maildir).await
    }

    async fn spawn(mut cmd: Command, port: u16, maildir: tempfile::TempDir) -> SmtpServer {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{} does not run ({e}): scripts/test.sh installs aiosmtpd",
                    python()
                )
            });
        let server = SmtpServer {
            child,
            port,
            maildir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "aiosmtpd did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
    }

    /// Every message received so far (raw RFC 5322 text).
    pub fn messages(&self) -> Vec<String> {
        let dir = self.maildir.path().join("mail").join("new");
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .collect()
    }
}
