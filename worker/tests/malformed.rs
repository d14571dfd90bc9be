//! Every connector classifies a 200 whose body is not its vendor's shape the
//! same way: a permanent error (retrying would not make the body readable).

use std::collections::HashMap;
use std::sync::Arc;

use rolecall_common::config;
use rolecall_common::credentials::Vault;
use rolecall_common::messages::UserRef;
use rolecall_sim::{Fault, MALFORMED, SimConfig, SimHandle, Vendor};
use rolecall_worker::connectors::{self, Connector};
use rolecall_worker::error::ErrorClass;

const KEY: &str = "malformed-key";

async fn connector(
    sim: &SimHandle,
    connector: &str,
    base: &str,
    options: &str,
    secret: &str,
) -> Arc<dyn Connector> {
    let settings = config::from_toml(&format!(
        r#"
[saas.app]
connector = "{connector}"
base_url = "{}{base}"
credential = "app"
rate = {{ per_second = 100 }}
options = {options}
"#,
        sim.base_url()
    ))
    .unwrap();
    let vault = Vault::with_env(
        settings.credentials.clone(),
        HashMap::from([("ROLECALL_SECRET_APP".to_string(), secret.to_string())]),
    );
    connectors::build(
        &settings.saas["app"],
        &connectors::VendorClient::standalone(&settings.saas["app"]),
        &vault,
    )
    .await
    .expect("the connector builds")
}

#[tokio::test]
async fn a_malformed_body_is_permanent_for_every_connector() {
    let mosyle_secret =
        serde_json::json!({"access_token": KEY, "email": "admin@example.com", "password": "sim-password"}).to_string();
    let cases: [(Vendor, &str, &str, &str, &str); 6] = [
        (Vendor::Lever, "lever", "", "{}", KEY),
        (
            Vendor::MiroScim,
            "scim",
            "/api/v1/scim",
            "{ preset = \"miro\" }",
            KEY,
        ),
        (Vendor::Scim, "scim", "/scim/v2", "{}", KEY),
        (Vendor::Okta, "okta", "", "{}", KEY),
        (Vendor::Zoom, "http", "", "{ preset = \"zoom-users\" }", KEY),
        (
            Vendor::MosyleBusiness,
            "mosyle",
            "",
            "{ list_cache_s = 0 }",
            &mosyle_secret,
        ),
    ];
    for (vendor, kind, base, options, secret) in cases {
        let sim = rolecall_sim::spawn(SimConfig {
            vendor,
            users: 5,
            api_key: KEY.into(),
            ..SimConfig::default()
        })
        .await
        .unwrap();
        let c = connector(&sim, kind, base, options, secret).await;
        // Mosyle logs in first; make the listing itself come back malformed.
        if vendor == Vendor::MosyleBusiness {
            let warmup = UserRef {
                id: "w".into(),
                email: "nobody@example.com".into(),
                external_id: None,
            };
            c.lookup(&warmup).await.unwrap();
        }
        sim.inject(Fault {
            status: MALFORMED,
            retry_after: None,
            count: 10,
        });
        let user = UserRef {
            id: "u".into(),
            email: sim.population().users[0].email.clone(),
            external_id: None,
        };
        let err = c.lookup(&user).await.expect_err(kind);
        assert_eq!(err.class(), ErrorClass::Permanent, "{vendor:?}: {err}");
        assert!(
            err.to_string().contains("unexpected shape"),
            "{vendor:?}: {err}"
        );
    }
}
