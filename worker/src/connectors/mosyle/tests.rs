//! Unit tests of Mosyle's wire shapes; the connector against the sim is
//! tested in `worker/tests/mosyle.rs`.

use serde_json::json;

use super::listing::parse_page;
use super::session::{bearer_token, is_session_status, session_refusal};
use super::wire::check_nested;
use super::*;

#[test]
fn the_api_root_ignores_trailing_slashes_and_versions() {
    for base in [
        "https://businessapi.mosyle.com",
        "https://businessapi.mosyle.com/",
        "https://businessapi.mosyle.com/v1",
        "https://businessapi.mosyle.com/v1/",
    ] {
        let root = api_root(&base.parse().unwrap());
        assert_eq!(root.as_str(), "https://businessapi.mosyle.com/", "{base}");
    }
    let root = api_root(&"http://proxy/mosyle/v2".parse().unwrap());
    assert_eq!(
        root.join("v2/listusers").unwrap().as_str(),
        "http://proxy/mosyle/v2/listusers"
    );
}

#[test]
fn bearer_tokens_come_only_from_a_bearer_header() {
    assert_eq!(bearer_token("Bearer abc").unwrap().expose_secret(), "abc");
    assert_eq!(bearer_token("bearer  abc ").unwrap().expose_secret(), "abc");
    assert!(bearer_token("Basic abc").is_none());
    assert!(bearer_token("Bearer ").is_none());
    assert!(bearer_token("abc").is_none());
}

#[test]
fn both_page_shapes_are_read() {
    let business = json!({"status": "OK", "response": [{"users": [{"iduser": "1"}], "rows": "3", "page_size": 1, "page": 1}]});
    let page = parse_page(business).unwrap();
    assert_eq!(
        (page.users.len(), page.total, page.page_size),
        (1, Some(3), Some(1))
    );
    let manager = json!({"status": "OK", "response": {"users": [], "total": 0, "page_size": 50}});
    let page = parse_page(manager).unwrap();
    assert_eq!((page.users.len(), page.total), (0, Some(0)));
    let missing = json!({"status": "OK", "response": [{"status": "USERS_NOTFOUND"}]});
    assert!(parse_page(missing).unwrap().users.is_empty());
    // Not "no users": an error, never an empty page (which ends a scan and
    // makes everyone after it not found).
    for code in ["ACCOUNT_NOTFOUND", "DEVICES_NOTFOUND"] {
        let error = json!({"status": "OK", "response": {"status": code}});
        assert!(
            matches!(parse_page(error), Err(ConnectorError::VendorStatus(s)) if s == code),
            "{code}"
        );
    }
    let refused = json!({"status": "OK", "response": [{"status": "NOT_ALLOWED", "info": "no"}]});
    assert!(
        matches!(parse_page(refused), Err(ConnectorError::VendorStatus(s)) if s == "NOT_ALLOWED: no")
    );
}

#[test]
fn nested_write_statuses_fail_the_write() {
    assert!(
        check_nested(&json!({"status": "OK", "elements": [{"id": "a", "status": "OK"}]})).is_ok()
    );
    let err = check_nested(&json!({"status": "OK", "response": [{"status": "MISSING_DATA", "info": "Missing key: name"}]}))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "vendor reported an error: MISSING_DATA: Missing key: name"
    );
}

#[test]
fn session_statuses_are_recognised() {
    assert!(is_session_status("TOKEN_EXPIRED"));
    assert!(is_session_status("ACCESS_TOKEN_INVALID"));
    assert!(is_session_status("session_expired"));
    assert!(!is_session_status("MISSING_DATA"));
    let invalid = json!({"status": "ERROR", "info": "ACCESS_TOKEN_INVALID"});
    assert_eq!(
        session_refusal(&invalid).unwrap(),
        "ERROR: ACCESS_TOKEN_INVALID"
    );
    let bad_request = json!({"status": "MISSING_DATA", "info": "Missing key: accessToken"});
    assert!(session_refusal(&bad_request).is_none());
    assert!(session_refusal(&json!({"status": "OK"})).is_none());
}

fn connector(product: &str) -> Mosyle {
    let settings = rolecall_common::config::from_toml(&format!(
        r#"
        [saas.m]
        connector = "mosyle"
        base_url = "https://mosyle.invalid"
        credential = "m"
        rate = {{ per_second = 1 }}
        options = {{ product = "{product}" }}
        "#
    ))
    .unwrap();
    let ctx = BuildContext {
        saas: &settings.saas["m"],
        client: VendorClient::standalone(&settings.saas["m"]),
        credential: SecretString::from(
            r#"{"access_token":"tok","email":"a@b.c","password":"pw"}"#.to_string(),
        ),
    };
    Mosyle::from_context(&ctx).unwrap()
}

fn user() -> UserRef {
    UserRef {
        id: "inv-7".into(),
        email: "Jane@School.org".into(),
        external_id: None,
    }
}

#[test]
fn business_writes_follow_the_client_code() {
    let m = connector("business");
    let attrs = BTreeMap::from([("name".to_string(), "Jane".to_string())]);
    let body = m.inner.write_body(Action::CreateUser, &user(), &attrs);
    assert_eq!(
        body,
        json!({"operation": "create_user", "user_id": "inv-7", "name": "Jane",
               "email": "Jane@School.org", "type": "ENDUSER"})
    );
    let attrs = BTreeMap::from([
        ("user_id".to_string(), "jane".to_string()),
        ("type".to_string(), "ADMIN".to_string()),
    ]);
    let body = m.inner.write_body(Action::UpdateUser, &user(), &attrs);
    assert_eq!(
        body,
        json!({"operation": "update_user", "user_id": "jane", "type": "ADMIN"})
    );
}

#[test]
fn manager_writes_follow_the_manager_docs() {
    let m = connector("manager");
    let attrs = BTreeMap::from([
        ("name".to_string(), "Jane".to_string()),
        ("type".to_string(), "STUDENT".to_string()),
        ("location".to_string(), "Cityview Day School".to_string()),
        ("grade_level".to_string(), "Kindergarten".to_string()),
        ("idaccount".to_string(), "12".to_string()),
    ]);
    let body = m.inner.write_body(Action::CreateUser, &user(), &attrs);
    assert_eq!(
        body,
        json!({"accessToken": "tok", "elements": [{
            "operation": "save", "id": "inv-7", "name": "Jane", "type": "S",
            "email": "Jane@School.org", "welcome_email": 0, "idaccount": 12,
            "locations": [{"name": "Cityview Day School", "grade_level": "Kindergarten"}],
        }]})
    );
    let attrs = BTreeMap::from([("type".to_string(), "TEACHER".to_string())]);
    let body = m.inner.write_body(Action::UpdateUser, &user(), &attrs);
    assert_eq!(
        body,
        json!({"accessToken": "tok", "elements": [{"operation": "update", "id": "inv-7", "type": "T"}]})
    );
    let reply = json!({"status": "OK", "elements": [{"id": "inv-7", "status": "OK"}]});
    assert_eq!(
        written_id(Product::Manager, &reply).as_deref(),
        Some("inv-7")
    );
}

fn json() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[A-Za-z_]{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("response".to_string()),
                    Just("users".to_string()),
                    Just("status".to_string()),
                    Just("rows".to_string()),
                    Just("page_size".to_string()),
                    "[a-z]{1,6}"
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest::proptest! {
    /// Any answer to a list call is a page or a classified error,
    /// never a panic.
    #[test]
    fn any_list_answer_is_a_page_or_an_error(reply in json()) {
        let _ = parse_page(reply.clone());
        let _ = check_nested(&reply);
    }
}
