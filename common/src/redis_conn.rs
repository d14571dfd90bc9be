//! One Redis connection type for a single server and a Redis Cluster, so
//! the ledger, the limiters and the breakers are written once.
//!
//! Scripts work the same on both: `redis::Script` sends EVALSHA, which the
//! cluster client routes by the script's first key, and on NOSCRIPT loads the
//! script (SCRIPT LOAD goes to every node) and retries. The key names
//! ([`crate::names`]) put every script's keys in one hash slot.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use secrecy::ExposeSecret;

use crate::config::{RedisSettings, seed_urls};

/// Bounds shared by both kinds of connection: a Redis that stops answering
/// fails a command after this long instead of hanging it, so callers notice
/// an outage and hold their work until it is over.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// A cluster command may be redirected (MOVED/ASK) or wait out a failover
/// (a replica's promotion takes a few seconds): its retries get this long in
/// all.
const CLUSTER_OVERALL_TIMEOUT: Duration = Duration::from_secs(15);

/// A reconnecting connection to one Redis server or to a Redis Cluster.
/// Cheap to clone: clones share the underlying connections.
#[derive(Clone)]
pub enum RedisConnection {
    /// One server (reconnects by itself).
    Single(ConnectionManager),
    /// A Redis Cluster: each command goes to the master of its key's slot.
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

impl RedisConnection {
    /// Runs `cmd` on the master that serves `key`'s slot. For commands
    /// that name no key but are about one hash tag's keys: `SCAN` over the
    /// ledger's results, which share one slot and so one master, where a
    /// cluster client would otherwise pick a node at random.
    pub async fn query_on_node_of<T: redis::FromRedisValue>(
        &mut self,
        key: &str,
        cmd: Cmd,
    ) -> redis::RedisResult<T> {
        match self {
            Self::Single(c) => cmd.query_async(c).await,
            Self::Cluster(c) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let route = Route::with_key(key, SlotAddr::Master);
                let value = c
                    .route_command(
                        cmd,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await?;
                Ok(redis::from_redis_value(value)?)
            }
        }
    }
}

/// The CA and client certificate of `redis.tls`, when a `rediss://` URL
/// needs them.
fn certificates(settings: &RedisSettings) -> redis::RedisResult<Option<redis::TlsCertificates>> {
    let url = settings.url.expose_secret();
    if !url.trim_start().starts_with("rediss://") || settings.tls == Default::default() {
        return Ok(None);
    }
    let io = |e: std::io::Error| {
        redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "cannot read a Redis TLS file",
            e.to_string(),
        ))
    };
    Ok(Some(redis::TlsCertificates {
        client_tls: settings
            .tls
            .client_pem()
            .map_err(io)?
            .map(|(client_cert, client_key)| redis::ClientTlsConfig {
                client_cert,
                client_key,
            }),
        root_cert: settings.tls.ca_pem().map_err(io)?,
    }))
}

/// A client for one Redis server (not a cluster): with the CA and client
/// certificate of a `rediss://` URL.
pub fn client(settings: &RedisSettings) -> redis::RedisResult<redis::Client> {
    let url = settings.url.expose_secret().trim();
    match certificates(settings)? {
        None => redis::Client::open(url),
        Some(certs) => redis::Client::build_with_tls(url, certs),
    }
}

/// Opens a reconnecting connection to the server or cluster of the
/// settings; the URL is never logged.
pub async fn connect(settings: &RedisSettings) -> redis::RedisResult<RedisConnection> {
    if !settings.cluster {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_with_config(client(settings)?, config).await?;
        return Ok(RedisConnection::Single(manager));
    }
    let mut builder = ClusterClientBuilder::new(seed_urls(settings.url.expose_secret()))
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .overall_response_timeout(Some(CLUSTER_OVERALL_TIMEOUT))
        // Retries follow redirections and failovers; waits stay short so a
        // promoted replica is found within the overall timeout.
        .retries(8)
        .min_retry_wait(100)
        .max_retry_wait(2_000);
    if let Some(certs) = certificates(settings)? {
        builder = builder.certs(certs);
    }
    let cluster = builder.build()?.get_async_connection().await?;
    Ok(RedisConnection::Cluster(cluster))
}
