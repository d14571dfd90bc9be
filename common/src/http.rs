//! HTTP client rules shared by every client that carries a credential.

/// A redirect policy that follows only within one origin (scheme, host,
/// port), at most five hops: a credential header (a vendor token, a Vault
/// token) must never reach another host, whatever a server answers.
pub fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let same = attempt
            .previous()
            .first()
            .is_some_and(|first| first.origin() == attempt.url().origin());
        if !same || attempt.previous().len() > 5 {
            attempt.stop()
        } else {
            attempt.follow()
        }
    })
}

/// A client for credentialed calls: same-origin redirects only.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(same_origin_redirects())
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()
        .expect("a client with these settings always builds")
}

/// A request's error on one line, without its URL, with its causes:
/// reqwest's own text is only "error sending request"; what an operator
/// needs ("Connection refused", "certificate has expired", "dns error") is
/// in the chain below it. The URL may hold a user's e-mail or a webhook's
/// token, so it is taken off; the causes come from hyper and the OS and
/// carry none.
pub fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Serves one HTTP response per connection; counts connections and
    /// remembers what each request carried.
    async fn server(response: String) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                let _ = tx.send(String::from_utf8_lossy(&buf[..n]).to_string());
                let _ = socket.write_all(response.as_bytes()).await;
            }
        });
        (url, rx)
    }

    #[tokio::test]
    async fn a_redirect_to_another_origin_is_not_followed_and_carries_nothing_there() {
        let ok = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_string();
        let (elsewhere, mut elsewhere_seen) = server(ok).await;
        let redirect = format!(
            "HTTP/1.1 302 Found\r\nlocation: {elsewhere}/steal\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        let (origin, mut origin_seen) = server(redirect).await;
        let response = super::client()
            .get(format!("{origin}/users"))
            .header("x-api-key", "hunter2")
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status().as_u16(),
            302,
            "the redirect is not followed"
        );
        assert!(origin_seen.recv().await.unwrap().contains("hunter2"));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(
            elsewhere_seen.try_recv().is_err(),
            "the other host saw a request"
        );
    }
}
