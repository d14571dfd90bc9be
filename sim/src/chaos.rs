//! Vendor misbehaviour by share rather than by count, for chaos runs: a
//! share of requests answered 503 (an overloaded backend), a share that
//! hang, and a credential revoked at the vendor (every request 401) until
//! it is restored.
//!
//! On the wire (`PUT /_sim/chaos`, `GET /_sim/chaos`):
//! `{"error_ratio": 0.2, "hang_ratio": 0.01, "hang_s": 30, "revoked": false}`;
//! missing fields are off. It applies before the vendor's own rate limit
//! and auth, so a faulted request is not counted by the vendor's buckets.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

/// What the vendor does wrong, and how often.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Chaos {
    /// Share of requests (0 to 1) answered 503 with no `Retry-After`: a
    /// failure, not a throttle.
    pub error_ratio: f64,
    /// Share of requests that get no answer for `hang_s` (then a 504).
    pub hang_ratio: f64,
    /// How long a hanging request hangs.
    pub hang_s: u64,
    /// The credential is revoked: every request is refused with 401.
    pub revoked: bool,
}

/// A share outside 0..=1 is a mistake in the caller, reported as such.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0} must be between 0 and 1")]
pub struct ChaosError(&'static str);

impl Chaos {
    pub fn validate(&self) -> Result<(), ChaosError> {
        for (name, ratio) in [
            ("error_ratio", self.error_ratio),
            ("hang_ratio", self.hang_ratio),
        ] {
            if !(0.0..=1.0).contains(&ratio) {
                return Err(ChaosError(name));
            }
        }
        Ok(())
    }
}

#[derive(Default)]
pub(crate) struct ChaosState(RwLock<Chaos>);

impl ChaosState {
    pub(crate) fn get(&self) -> Chaos {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set(&self, chaos: Chaos) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = chaos;
    }
}

/// The middleware in front of the vendor's routes.
pub(crate) async fn apply(
    State(state): State<Arc<ChaosState>>,
    request: Request,
    next: Next,
) -> Response {
    let chaos = state.get();
    if chaos.revoked {
        return (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({"code": "Unauthorized", "message": "Credential revoked."})),
        )
            .into_response();
    }
    let draw: f64 = rand::random();
    if draw < chaos.hang_ratio {
        tokio::time::sleep(Duration::from_secs(chaos.hang_s)).await;
        return StatusCode::GATEWAY_TIMEOUT.into_response();
    }
    if draw < chaos.hang_ratio + chaos.error_ratio {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"code": "ServiceUnavailable", "message": "Try again."})),
        )
            .into_response();
    }
    next.run(request).await
}

pub(crate) fn router(state: Arc<ChaosState>) -> Router {
    Router::new()
        .route("/chaos", get(get_chaos).put(put_chaos))
        .with_state(state)
}

async fn get_chaos(State(state): State<Arc<ChaosState>>) -> Json<Chaos> {
    Json(state.get())
}

/// Answers the chaos now in force; a bad body is a 4xx with the reason.
async fn put_chaos(
    State(state): State<Arc<ChaosState>>,
    chaos: Result<Json<Chaos>, JsonRejection>,
) -> Response {
    let chaos = match chaos {
        Ok(Json(chaos)) => chaos,
        Err(rejection) => return (rejection.status(), rejection.body_text()).into_response(),
    };
    if let Err(error) = chaos.validate() {
        return (StatusCode::BAD_REQUEST, error.to_string()).into_response();
    }
    state.set(chaos);
    Json(state.get()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_outside_zero_to_one_are_refused() {
        let bad = Chaos {
            error_ratio: 1.5,
            ..Chaos::default()
        };
        assert_eq!(bad.validate(), Err(ChaosError("error_ratio")));
        let good = Chaos {
            error_ratio: 0.2,
            hang_ratio: 0.01,
            ..Chaos::default()
        };
        assert!(good.validate().is_ok());
    }
}
