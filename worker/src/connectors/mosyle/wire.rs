//! What Mosyle's JSON looks like: users, write bodies, statuses and the
//! loose scalars (ids and counts as numbers or strings).

use std::collections::BTreeMap;

use rolecall_common::messages::{Action, UserRef};
use secrecy::ExposeSecret;
use serde_json::{Map, Value, json};
use url::Url;

use super::{ConnectorError, Inner, MAX_INFO, Product, VendorUser};

impl Inner {
    pub(super) fn is_removed(&self, raw: &Value) -> bool {
        self.product == Product::Business && raw.get("is_removed").is_some_and(truthy)
    }

    pub(super) fn found(&self, raw: Value) -> Result<VendorUser, ConnectorError> {
        let id_key = match self.product {
            Product::Business => "iduser",
            Product::Manager => "id",
        };
        let vendor_id = raw
            .get(id_key)
            .and_then(scalar)
            .ok_or_else(|| ConnectorError::Decode(format!("a user has no `{id_key}`")))?;
        let raw_role = raw
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| ConnectorError::Decode("a user has no `type`".into()))?
            .to_owned();
        let active = !self.is_removed(&raw);
        Ok(VendorUser::new(vendor_id, raw_role, active, raw))
    }

    /// The request body of a create or update.
    pub(super) fn write_body(
        &self,
        action: Action,
        user: &UserRef,
        attributes: &BTreeMap<String, String>,
    ) -> Value {
        let create = action == Action::CreateUser;
        let user_id = attributes
            .get("user_id")
            .cloned()
            .unwrap_or_else(|| user.id.clone());
        match self.product {
            Product::Business => {
                let mut body: Map<String, Value> = attributes
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect();
                let operation = if create { "create_user" } else { "update_user" };
                body.insert("operation".into(), operation.into());
                body.insert("user_id".into(), user_id.into());
                if create {
                    body.insert("email".into(), user.email.clone().into());
                    body.entry("type").or_insert_with(|| "ENDUSER".into());
                }
                Value::Object(body)
            }
            Product::Manager => {
                let mut element = Map::new();
                for (key, value) in attributes {
                    match key.as_str() {
                        "user_id" | "location" | "grade_level" => {}
                        "type" => {
                            element.insert(key.clone(), manager_type(value).into());
                        }
                        "welcome_email" | "idaccount" => {
                            element.insert(key.clone(), number_or_string(value));
                        }
                        "locations" => {
                            let parsed = serde_json::from_str::<Value>(value)
                                .ok()
                                .filter(Value::is_array)
                                .unwrap_or_else(|| json!([{"name": value}]));
                            element.insert(key.clone(), parsed);
                        }
                        _ => {
                            element.insert(key.clone(), value.clone().into());
                        }
                    }
                }
                if let Some(location) = attributes.get("location") {
                    let mut entry = json!({"name": location});
                    if let Some(grade) = attributes.get("grade_level") {
                        entry["grade_level"] = grade.clone().into();
                    }
                    element.insert("locations".into(), json!([entry]));
                }
                let operation = if create { "save" } else { "update" };
                element.insert("operation".into(), operation.into());
                element.insert("id".into(), user_id.into());
                if create {
                    element.insert("email".into(), user.email.clone().into());
                    // Mosyle e-mails the user when asked; a sync must not by default.
                    element.entry("welcome_email").or_insert(0.into());
                }
                json!({
                    "accessToken": self.access_token.expose_secret(),
                    "elements": [Value::Object(element)],
                })
            }
        }
    }
}

/// The API root with one trailing slash: accepts `https://host`,
/// `https://host/`, `https://host/v1` and a path prefix before them.
pub(super) fn api_root(base: &Url) -> Url {
    let mut root = base.clone();
    root.set_query(None);
    root.set_fragment(None);
    let path = root.path().trim_end_matches('/');
    let path = path
        .strip_suffix("/v1")
        .or_else(|| path.strip_suffix("/v2"))
        .unwrap_or(path)
        .to_owned();
    root.set_path(&format!("{path}/"));
    root
}

/// Write answers carry a status per element (`response[]`, `response`,
/// `elements[]`), which may fail while the envelope says OK (§1.8).
pub(super) fn check_nested(reply: &Value) -> Result<(), ConnectorError> {
    let nested = ["response", "elements"]
        .iter()
        .filter_map(|k| reply.get(*k))
        .flat_map(|v| match v {
            Value::Array(items) => items.iter().collect::<Vec<_>>(),
            other => vec![other],
        });
    for item in nested {
        if let Some(code) = status_of(item)
            && !is_ok(code)
        {
            return Err(vendor_status(code, item));
        }
    }
    Ok(())
}

/// The written user's id as Mosyle reports it: Business `iduser` (the id
/// lookups report), Manager `elements[0].id`. None when the answer has none.
pub(super) fn written_id(product: Product, reply: &Value) -> Option<String> {
    let candidates: &[&str] = match product {
        Product::Business => &["/response/0/iduser", "/response/iduser", "/iduser"],
        Product::Manager => &["/elements/0/id", "/response/0/id"],
    };
    candidates
        .iter()
        .find_map(|p| reply.pointer(p).and_then(scalar))
}

pub(super) fn manager_type(value: &str) -> String {
    match value.to_ascii_uppercase().as_str() {
        "STUDENT" => "S".into(),
        "TEACHER" => "T".into(),
        _ => value.to_owned(),
    }
}

pub(super) fn number_or_string(value: &str) -> Value {
    value
        .trim()
        .parse::<i64>()
        .map(Value::from)
        .unwrap_or_else(|_| value.into())
}

pub(super) fn status_of(value: &Value) -> Option<&str> {
    value.get("status").and_then(Value::as_str)
}

pub(super) fn is_ok(code: &str) -> bool {
    code.eq_ignore_ascii_case("OK")
}

pub(super) fn vendor_status(code: &str, holder: &Value) -> ConnectorError {
    let info = ["info", "message", "error"]
        .iter()
        .find_map(|k| holder.get(*k).and_then(Value::as_str));
    ConnectorError::VendorStatus(match info {
        Some(info) => format!("{}: {}", clip(code), clip(info)),
        None => clip(code),
    })
}

pub(super) fn clip(text: &str) -> String {
    crate::error::clip(text, MAX_INFO)
}

pub(super) fn email_of(raw: &Value) -> Option<String> {
    raw.get("email")
        .and_then(Value::as_str)
        .map(|e| e.trim().to_lowercase())
        .filter(|e| !e.is_empty())
}

/// Ids arrive as strings or numbers depending on the route.
pub(super) fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Counts arrive as numbers or numeric strings (`"rows": "1328"`, §1.4).
pub(super) fn count(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `is_removed` as a boolean, `1`/`0` or `"true"`/`"1"`.
pub(super) fn truthy(value: &Value) -> bool {
    match value {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_u64().is_some_and(|n| n != 0),
        Value::String(s) => matches!(s.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes"),
        _ => false,
    }
}
