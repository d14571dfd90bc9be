//! A cuttable TCP proxy: network failures between one process and a
//! server that other tests share.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// A TCP proxy in front of a shared server (RabbitMQ, Redis) that a test
/// can cut: the process behind it loses its connection as in a network
/// failure, while the server (and every other test) goes on undisturbed.
pub struct CuttableProxy {
    /// Where the proxy listens.
    pub addr: SocketAddr,
    open: Arc<std::sync::atomic::AtomicBool>,
    links: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl CuttableProxy {
    /// Proxies connections to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> CuttableProxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let accept = {
            let (open, links) = (open.clone(), links.clone());
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !open.load(Ordering::SeqCst) {
                        continue; // dropped: connection refused, in effect
                    }
                    let upstream = upstream.clone();
                    links.lock().unwrap().push(tokio::spawn(async move {
                        if let Ok(mut out) = tokio::net::TcpStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                        }
                    }));
                }
            })
        };
        CuttableProxy {
            addr,
            open,
            links,
            accept,
        }
    }

    /// A proxy in front of the server of `url` (`scheme://[user@]host:port/…`),
    /// and that URL pointed at the proxy instead.
    pub async fn in_front_of(url: &str) -> (CuttableProxy, String) {
        let mut url = reqwest::Url::parse(url).expect("a server URL");
        let port = url.port_or_known_default().unwrap_or(match url.scheme() {
            "redis" => 6379,
            _ => 5672,
        });
        let proxy = Self::start(format!("{}:{port}", url.host_str().expect("a host"))).await;
        url.set_port(Some(proxy.addr.port()))
            .expect("a URL with a port");
        (proxy, url.to_string())
    }

    /// Closes every proxied connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
