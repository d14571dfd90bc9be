//! End-to-end tests against real RabbitMQ and Redis (start them with
//! `scripts/services.sh`). One test binary, one module per concern.

mod actions;
mod backpressure;
mod bad_config;
mod bad_input;
mod digest_baseline;
mod example_limits;
mod failures;
mod four_apps;
mod happy_path;
mod inventory;
mod inventory_missing;
mod inventory_preset;
mod inventory_run;
mod inventory_sor;
mod limits;
mod no_secrets;
mod notifier;
mod operator_cli;
mod rabbit_cluster;
mod redis_cluster;
mod scheduler_service;
mod scim_server;
mod telemetry;
mod tls;
mod topology;
mod vault;
