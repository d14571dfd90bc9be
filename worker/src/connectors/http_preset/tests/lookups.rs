//! Lookups against a scripted vendor on a local port, through the vendor
//! client: page caps, links to other origins, throttle and "not found"
//! rules, session logins.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::{CLIENT_SECRET, REQUEST, RESPONSE, SESSION, build_at, inline, user};
use crate::connectors::{Connector, ConnectorError, Lookup};
use crate::error::ErrorClass;

/// A vendor on a local port answering every request with `respond(target)`
/// (a whole HTTP response), and the requests' heads it received.
pub(super) struct Scripted {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Scripted {
    pub(super) async fn start(respond: impl Fn(&str) -> String + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let respond = Arc::new(respond);
        let log = heads.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let respond = respond.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&request).into_owned();
                    let response = respond(head.split(' ').nth(1).unwrap_or(""));
                    log.lock().unwrap().push(head);
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Self { addr, heads }
    }

    pub(super) fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(super) fn requests(&self) -> usize {
        self.heads.lock().unwrap().len()
    }

    pub(super) fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

pub(super) fn http(status: &str, headers: &[(&str, String)], body: &str) -> String {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    out
}

/// A member list paged by `Link` headers, `max_pages` = 3.
const LINKED: &str = r#"
    [saas.app.options.spec.auth]
    kind = "bearer"
    token = "{{secret}}"
    [saas.app.options.spec.request]
    url = "{{base_url}}/members"
    [saas.app.options.spec.response]
    list = ""
    match = { pointer = "/email", equals = "{{email}}", case_insensitive = true }
    role = "/role"
    vendor_id = "/id"
    [saas.app.options.spec.pagination]
    style = "link"
    max_pages = 3
"#;

const SOMEONE_ELSE: &str = r#"[{"id": 1, "email": "other@example.com", "role": "member"}]"#;

#[tokio::test]
async fn a_page_cap_reached_is_inconclusive_not_not_found() {
    // Every page points to a next one; the user is on none of the first three.
    let vendor = Scripted::start(|target| {
        let page: u32 = target
            .rsplit_once("page=")
            .and_then(|(_, n)| n.parse().ok())
            .unwrap_or(1);
        let next = format!("</members?page={}>; rel=\"next\"", page + 1);
        http("200 OK", &[("Link", next)], SOMEONE_ELSE)
    })
    .await;
    let preset = build_at(&vendor.base_url(), LINKED, "token").unwrap();
    let err = preset
        .lookup(&user("wanted@example.com"))
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectorError::Inconclusive(_)), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(err.to_string().contains("pagination.max_pages"), "{err}");
    assert_eq!(vendor.requests(), 3, "the cap bounds the requests");
}

#[tokio::test]
async fn the_last_page_without_the_user_is_not_found() {
    // Two pages, the second without a next link: the vendor said "no more".
    let vendor = Scripted::start(|target| {
        let link = if target.contains("page=2") {
            vec![]
        } else {
            vec![("Link", "</members?page=2>; rel=\"next\"".to_owned())]
        };
        http("200 OK", &link, SOMEONE_ELSE)
    })
    .await;
    let preset = build_at(&vendor.base_url(), LINKED, "token").unwrap();
    assert_eq!(
        preset.lookup(&user("wanted@example.com")).await.unwrap(),
        Lookup::NotFound
    );
    assert_eq!(vendor.requests(), 2);
}

#[tokio::test]
async fn a_user_past_a_page_the_vendor_capped_below_the_limit_is_found_not_missing() {
    // Asked for 100 per page, the vendor answers one: the short first page
    // is not the last, and the user on the second is found. Past the end
    // comes an empty page, which is the vendor's "no more".
    let vendor = Scripted::start(|target| {
        let body = if target.contains("offset=0") {
            SOMEONE_ELSE
        } else if target.contains("offset=1") {
            r#"[{"id": 2, "email": "Wanted@example.com", "role": "admin"}]"#
        } else {
            "[]"
        };
        http("200 OK", &[], body)
    })
    .await;
    let offset = LINKED.replace("style = \"link\"", "style = \"offset\"\nlimit = 100");
    let preset = build_at(&vendor.base_url(), &offset, "token").unwrap();
    match preset.lookup(&user("wanted@example.com")).await.unwrap() {
        Lookup::Found(found) => assert_eq!(found.vendor_id, "2"),
        other => panic!("expected the user on page two, got {other:?}"),
    }
    assert_eq!(
        preset.lookup(&user("absent@example.com")).await.unwrap(),
        Lookup::NotFound
    );
    assert_eq!(
        vendor.requests(),
        2 + 3,
        "the absent user's walk ends at the empty page"
    );
}

#[tokio::test]
async fn a_next_link_to_another_origin_is_an_error_and_never_a_request() {
    let elsewhere = Scripted::start(|_| http("200 OK", &[], "[]")).await;
    let away = format!("<{}/members?page=2>; rel=\"next\"", elsewhere.base_url());
    let vendor =
        Scripted::start(move |_| http("200 OK", &[("Link", away.clone())], SOMEONE_ELSE)).await;
    let preset = build_at(&vendor.base_url(), LINKED, "token").unwrap();
    let err = preset
        .lookup(&user("wanted@example.com"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("another origin"), "{err}");
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert_eq!(vendor.requests(), 1);
    assert_eq!(elsewhere.requests(), 0, "the credential never left");
}

/// A single-user endpoint with Zoom-like "not found" and a vendor-specific throttle signal.
const SINGLE: &str = r#"
    [saas.app.options.spec.auth]
    kind = "bearer"
    token = "{{secret}}"
    [saas.app.options.spec.request]
    url = "{{base_url}}/users/{{email}}"
    [saas.app.options.spec.response]
    not_found = { status = [404], pointer = "/code", equals = 1001 }
    role = "/type"
    vendor_id = "/id"
    error_code = "/code"
    throttle = { status = [403], header = "x-quota-left", equals = "none", reset_header = "x-quota-reset" }
"#;

#[tokio::test]
async fn a_spec_throttle_rule_is_a_throttle_and_other_403s_stay_auth_errors() {
    let vendor = Scripted::start(|target| {
        if target.contains("throttled") {
            let reset = (chrono::Utc::now().timestamp() + 30).to_string();
            http(
                "403 Forbidden",
                &[("x-quota-left", "none".into()), ("x-quota-reset", reset)],
                r#"{"code": 429}"#,
            )
        } else {
            http("403 Forbidden", &[], r#"{"code": 124}"#)
        }
    })
    .await;
    let preset = build_at(&vendor.base_url(), SINGLE, "token").unwrap();
    let err = preset
        .lookup(&user("throttled@example.com"))
        .await
        .unwrap_err();
    match err {
        ConnectorError::Throttled {
            status: 403,
            retry_after: Some(wait),
        } => assert!((28..=30).contains(&wait.as_secs()), "{wait:?}"),
        other => panic!("{other:?}"),
    }
    let err = preset
        .lookup(&user("refused@example.com"))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Auth);
    assert_eq!(
        err.to_string(),
        "vendor refused the credential (HTTP 403, 124)"
    );
}

#[tokio::test]
async fn a_not_found_status_needs_its_body_and_vendor_codes_are_clipped() {
    let long = "x".repeat(500);
    let vendor = Scripted::start(move |target| {
        if target.contains("gone") {
            http("404 Not Found", &[], r#"{"code": 1001}"#)
        } else {
            http("404 Not Found", &[], &format!(r#"{{"code": "{long}"}}"#))
        }
    })
    .await;
    let preset = build_at(&vendor.base_url(), SINGLE, "token").unwrap();
    assert_eq!(
        preset.lookup(&user("gone@example.com")).await.unwrap(),
        Lookup::NotFound
    );
    let err = preset
        .lookup(&user("misrouted@example.com"))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
    let text = err.to_string();
    assert!(
        text.starts_with("vendor rejected the request (HTTP 404, xxx"),
        "{text}"
    );
    assert!(text.chars().count() < 200, "{text}");
}

#[tokio::test]
async fn a_session_logs_in_once_at_base_urls_origin_and_sends_the_token() {
    let vendor = Scripted::start(|target| {
        if target.starts_with("/oauth/token") {
            http("200 OK", &[], r#"{"access_token": "tok-1"}"#)
        } else {
            http(
                "200 OK",
                &[],
                r#"{"data": [{"id": "7", "email": "a@example.com", "role": "admin"}]}"#,
            )
        }
    })
    .await;
    let preset = build_at(
        &vendor.base_url(),
        &inline(SESSION, REQUEST, RESPONSE, ""),
        CLIENT_SECRET,
    )
    .unwrap();
    for _ in 0..2 {
        let found = preset.lookup(&user("A@example.com")).await.unwrap();
        assert!(
            matches!(found, Lookup::Found(ref u) if u.raw_role == "admin"),
            "{found:?}"
        );
    }
    let heads = vendor.heads();
    assert_eq!(heads.len(), 3, "one login for two lookups: {heads:?}");
    assert!(heads[0].starts_with("POST /oauth/token?"), "{}", heads[0]);
    for lookup in &heads[1..] {
        assert!(
            lookup.starts_with("GET /users?email=a%40example.com"),
            "{lookup}"
        );
        assert!(
            lookup
                .to_lowercase()
                .contains("authorization: bearer tok-1"),
            "{lookup}"
        );
    }
}
