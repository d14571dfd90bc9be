//! Observability with real parts: a real Prometheus server scrapes a worker
//! process during a run; a real OTLP receiver (the protocol's gRPC service,
//! and OTLP/HTTP protobuf) gets one job's spans from the scheduler and
//! worker processes; `/readyz` follows a Redis or RabbitMQ outage.

mod health;
mod otlp;
mod prometheus;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use rolecall_sim::{SimConfig, SimHandle};
use rolecall_tests::{
    AppSpec, CuttableProxy, RedisProcess, SchedulerProcess, TestEnv, WorkerProcess, active_rows,
    free_port, publish, temp_file,
};

async fn sim(users: usize, seed: u64) -> SimHandle {
    rolecall_sim::spawn(SimConfig {
        users,
        seed,
        ..SimConfig::default()
    })
    .await
    .expect("the sim starts")
}

fn app(sim: &SimHandle) -> [AppSpec<'_>; 1] {
    [AppSpec {
        name: "lever",
        sim,
        per_second: 200.0,
        burst: 20,
    }]
}

async fn http_get(url: &str) -> Option<(u16, String)> {
    let r = reqwest::get(url).await.ok()?;
    Some((r.status().as_u16(), r.text().await.ok()?))
}

/// Polls `url` until it answers `status`, or panics after `timeout`.
async fn wait_for_status(url: &str, status: u16, timeout: Duration) -> String {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let got = http_get(url).await;
        if let Some((s, body)) = &got
            && *s == status
        {
            return body.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} did not answer {status} in {timeout:?}: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
