//! What every Rolecall process shares: the configuration model, the wire
//! schemas, the names of queues and keys, RabbitMQ topology and publishing,
//! the run ledger in Redis, credentials and logging.
//!
//! The scheduler and the worker depend on this crate and on nothing of each
//! other, so the contract between them is exactly what is here.

#![warn(missing_docs)]

pub mod amqp;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod http;
pub mod inventory;
pub mod ledger;
pub mod messages;
pub mod names;
pub mod probe;
pub mod process;
pub mod redis_conn;
pub mod shutdown;
pub mod telemetry;

pub use config::Settings;
pub use names::Names;
pub use redis_conn::RedisConnection;
