//! The audit copy of a vendor's answer about a user: what admins map as the
//! "API Response" in other tools, to see why a user got a verdict.
//!
//! It is stored beside the result with a TTL, so it must be small and hold
//! no secret: values under keys that name credentials are redacted, and the
//! copy is capped.

use serde_json::{Map, Value};

/// Largest copy kept, in bytes of JSON.
pub const MAX_AUDIT_BYTES: usize = 4096;

/// Key fragments whose values are never kept.
const SECRET_KEYS: [&str; 9] = [
    "password",
    "secret",
    "token",
    "apikey",
    "api_key",
    "authorization",
    "cookie",
    "session",
    "credential",
];

/// A capped, secret-free JSON copy of `raw`.
pub fn audit_copy(raw: &Value) -> String {
    let text = redact(raw).to_string();
    if text.len() <= MAX_AUDIT_BYTES {
        return text;
    }
    // Too large to keep whole: keep its start, marked as cut.
    let cut = crate::error::clip(&text, MAX_AUDIT_BYTES - 64);
    serde_json::json!({ "truncated": true, "start": cut }).to_string()
}

fn redact(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let lower = k.to_ascii_lowercase();
                    let v = if SECRET_KEYS.iter().any(|s| lower.contains(s)) {
                        Value::String("[redacted]".into())
                    } else {
                        redact(v)
                    };
                    (k.clone(), v)
                })
                .collect::<Map<_, _>>(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn credential_fields_are_redacted_at_any_depth() {
        let raw = json!({"id": "u1", "accessToken": "hunter2", "profile": {"password": "p", "login": "a@b.c"}});
        let copy = audit_copy(&raw);
        assert!(
            !copy.contains("hunter2") && !copy.contains("\"p\""),
            "{copy}"
        );
        assert!(copy.contains("a@b.c") && copy.contains("u1"), "{copy}");
    }

    #[test]
    fn large_answers_are_capped() {
        let raw = json!({"notes": "x".repeat(20_000)});
        let copy = audit_copy(&raw);
        assert!(copy.len() <= MAX_AUDIT_BYTES, "{}", copy.len());
        assert!(copy.contains("truncated"));
    }
}
