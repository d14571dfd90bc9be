//! The generic SCIM connector against a real third-party SCIM 2.0 server:
//! the Python package `scim2-server`, installed by scripts/test.sh into a
//! throwaway virtualenv and run here on 127.0.0.1.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rolecall_common::config;
use rolecall_common::credentials::Vault;
use rolecall_common::messages::{Action, UserRef};
use rolecall_tests::free_port;
use rolecall_worker::connectors::{self, Lookup, VendorRequest, VendorResponse};
use rolecall_worker::error::ErrorClass;
use serde_json::json;

const TOKEN: &str = "scim-test-token";

struct ScimServer {
    child: Child,
    url: String,
}

impl Drop for ScimServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn scim2_server_binary() -> String {
    std::env::var("ROLECALL_SCIM2_SERVER")
        .unwrap_or_else(|_| "/tmp/rolecall-test-venv/bin/scim2-server".into())
}

async fn start() -> ScimServer {
    let port = free_port();
    let binary = scim2_server_binary();
    let child = Command::new(&binary)
        .args([
            "--hostname",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--bearer-token",
            TOKEN,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{binary} does not run ({e}): scripts/test.sh installs scim2-server")
        });
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let http = reqwest::Client::new();
    loop {
        let ready = http
            .get(format!("{url}/ServiceProviderConfig"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "scim2-server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ScimServer { child, url }
}

async fn add_user(server: &ScimServer, user: serde_json::Value) {
    let mut body = user;
    body["schemas"] = json!(["urn:ietf:params:scim:schemas:core:2.0:User"]);
    let response = reqwest::Client::new()
        .post(format!("{}/Users", server.url))
        .bearer_auth(TOKEN)
        .header("content-type", "application/scim+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{}",
        response.text().await.unwrap()
    );
}

async fn connector(
    server: &ScimServer,
    options: &str,
    token: &str,
) -> std::sync::Arc<dyn connectors::Connector> {
    let settings = config::from_toml(&format!(
        r#"
[saas.scim]
connector = "scim"
base_url = "{}"
credential = "scim"
rate = {{ per_second = 100 }}
options = {options}
"#,
        server.url
    ))
    .unwrap();
    let saas = &settings.saas["scim"];
    let vault = Vault::with_env(
        settings.credentials.clone(),
        HashMap::from([("ROLECALL_SECRET_SCIM".to_string(), token.to_string())]),
    );
    connectors::build(saas, &connectors::VendorClient::standalone(saas), &vault)
        .await
        .expect("the connector builds")
}

fn user(email: &str) -> UserRef {
    UserRef {
        id: "u".into(),
        email: email.into(),
        external_id: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scim_connector_works_against_scim2_server() {
    let server = start().await;
    add_user(
        &server,
        json!({"userName": "ana@example.com", "userType": "Employee", "active": true,
        "roles": [{"value": "viewer"}, {"value": "admin", "primary": true}],
        "entitlements": [{"value": "basic"}, {"value": "enterprise"}],
        "emails": [{"value": "ana@example.com", "primary": true}]}),
    )
    .await;
    add_user(
        &server,
        json!({"userName": "bo@example.com", "userType": "Contractor", "active": false,
        "roles": [{"value": "editor", "primary": true}]}),
    )
    .await;
    add_user(
        &server,
        json!({"userName": "quo\"te@example.com", "userType": "Employee", "active": true,
        "roles": [{"value": "viewer", "primary": true}]}),
    )
    .await;

    let scim = connector(&server, "{ preset = \"generic\" }", TOKEN).await;
    match scim.lookup(&user("ANA@example.com")).await.unwrap() {
        Lookup::Found(u) => {
            assert_eq!(u.raw_role, "admin", "the primary role");
            assert!(u.active);
            assert_eq!(u.raw["userType"], "Employee");
        }
        other => panic!("expected ana, got {other:?}"),
    }
    match scim.lookup(&user("bo@example.com")).await.unwrap() {
        Lookup::Found(u) => assert!(!u.active, "active=false is a deactivated user"),
        other => panic!("expected bo, got {other:?}"),
    }
    assert_eq!(
        scim.lookup(&user("nobody@example.com")).await.unwrap(),
        Lookup::NotFound
    );
    // The filter value is escaped: an unescaped quote would be invalidFilter.
    assert!(matches!(
        scim.lookup(&user("quo\"te@example.com")).await.unwrap(),
        Lookup::Found(_)
    ));

    // Other role sources.
    let by_type = connector(&server, "{ role_source = \"user_type\" }", TOKEN).await;
    match by_type.lookup(&user("ana@example.com")).await.unwrap() {
        Lookup::Found(u) => assert_eq!(u.raw_role, "Employee"),
        other => panic!("{other:?}"),
    }
    let by_entitlement = connector(
        &server,
        "{ role_source = \"entitlements\", role_order = [\"enterprise\", \"pro\", \"basic\"] }",
        TOKEN,
    )
    .await;
    match by_entitlement
        .lookup(&user("ana@example.com"))
        .await
        .unwrap()
    {
        Lookup::Found(u) => assert_eq!(u.raw_role, "enterprise", "highest entitlement wins"),
        other => panic!("{other:?}"),
    }

    // A refused token is an auth error, classified once.
    let refused = connector(&server, "{}", "wrong-token").await;
    let err = refused.lookup(&user("ana@example.com")).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Auth, "{err}");
    assert!(!err.to_string().contains("wrong-token"));

    // Deactivation through PATCH active=false.
    let done = connectors::call(
        scim.as_ref(),
        &VendorRequest {
            action: Action::DeactivateUser,
            user: user("ana@example.com"),
            attributes: Default::default(),
        },
    )
    .await
    .unwrap();
    assert!(matches!(done, VendorResponse::Done(_)));
    match scim.lookup(&user("ana@example.com")).await.unwrap() {
        Lookup::Found(u) => assert!(!u.active, "deactivated at the server"),
        other => panic!("{other:?}"),
    }
}
