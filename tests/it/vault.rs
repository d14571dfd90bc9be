//! Credentials from HashiCorp Vault KV v2 over HTTP (token auth), served
//! here by a small stand-in that answers Vault's KV v2 read API.

use std::collections::HashMap;

use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use rolecall_common::config;
use rolecall_common::credentials::{CredentialParts, Vault};
use secrecy::ExposeSecret;
use serde_json::json;

const VAULT_TOKEN: &str = "s.vault-test-token";

/// `GET /v1/secret/data/<path>` as Vault KV v2 answers it.
async fn read(Path(path): Path<String>, headers: HeaderMap) -> impl IntoResponse {
    if headers.get("x-vault-token").and_then(|v| v.to_str().ok()) != Some(VAULT_TOKEN) {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"errors": ["permission denied"]})),
        );
    }
    let data = match path.as_str() {
        "rolecall/lever-prod" => json!({"value": "lever-key-from-vault"}),
        "rolecall/mosyle-prod" => {
            json!({"access_token": "t", "email": "admin@example.com", "password": "p"})
        }
        _ => return (StatusCode::NOT_FOUND, Json(json!({"errors": []}))),
    };
    (
        StatusCode::OK,
        Json(json!({"data": {"data": data, "metadata": {"version": 1}}})),
    )
}

async fn vault_server() -> String {
    let app = Router::new().route("/v1/secret/data/{*path}", get(read));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn settings(address: &str) -> rolecall_common::Settings {
    config::from_toml(&format!(
        r#"
[credentials.vault]
address = "{address}"
mount = "secret"
path_prefix = "rolecall/"
"#
    ))
    .unwrap()
}

#[tokio::test]
async fn credentials_come_from_vault_kv_v2() {
    let address = vault_server().await;
    let s = settings(&address);
    let env = HashMap::from([("VAULT_TOKEN".to_string(), VAULT_TOKEN.to_string())]);
    let vault = Vault::with_env(s.credentials.clone(), env);
    assert_eq!(
        vault.get("lever-prod").await.unwrap().expose_secret(),
        "lever-key-from-vault"
    );
    // Several keys come back as one JSON object, for connectors that need parts.
    let mosyle = vault.get("mosyle-prod").await.unwrap();
    let parts = CredentialParts::parse(&mosyle, &["access_token", "email", "password"]).unwrap();
    assert_eq!(
        parts.get("email").unwrap().expose_secret(),
        "admin@example.com"
    );
    // Missing: the error names where it looked, Vault included.
    let err = vault.get("nobody").await.unwrap_err().to_string();
    assert!(
        err.contains("ROLECALL_SECRET_NOBODY") && err.contains("secret/rolecall/nobody"),
        "{err}"
    );
}

#[tokio::test]
async fn a_refused_vault_token_is_a_clear_error_without_the_token() {
    let address = vault_server().await;
    let s = settings(&address);
    let env = HashMap::from([("VAULT_TOKEN".to_string(), "s.wrong-token".to_string())]);
    let vault = Vault::with_env(s.credentials.clone(), env);
    let err = vault.get("lever-prod").await.unwrap_err().to_string();
    assert!(err.contains("permission denied"), "{err}");
    assert!(!err.contains("s.wrong-token"));
    // No token at all names the variable to set.
    let vault = Vault::with_env(s.credentials.clone(), HashMap::new());
    let err = vault.get("lever-prod").await.unwrap_err().to_string();
    assert!(err.contains("VAULT_TOKEN"), "{err}");
}

#[tokio::test]
async fn a_worker_with_a_malformed_vault_credential_fails_naming_the_saas_app() {
    let address = vault_server().await;
    let text = format!(
        r#"
[credentials.vault]
address = "{address}"
path_prefix = "rolecall/"
[saas.mosyle]
connector = "mosyle"
base_url = "http://127.0.0.1:9"
credential = "lever-prod"
rate = {{ per_second = 5 }}
"#
    );
    let s = config::from_toml(&text).unwrap();
    let env = HashMap::from([("VAULT_TOKEN".to_string(), VAULT_TOKEN.to_string())]);
    let vault = Vault::with_env(s.credentials.clone(), env);
    // A single-value secret where Mosyle needs access_token, email and password.
    let err = match rolecall_worker::Worker::build(s, &vault).await {
        Ok(_) => panic!("a malformed credential must stop the worker"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("saas.mosyle.credential"), "{err}");
    assert!(!err.contains("lever-key-from-vault"), "{err}");
}
