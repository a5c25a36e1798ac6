//! What every extractor does with input before a handler sees it.
//!
//! - Text holding a NUL character is refused with 422: PostgreSQL cannot store
//!   NUL in `text`, so it would otherwise surface as a 500 deep in a query.
//! - A value of the wrong form is explained in the API's words: which field,
//!   and what it must be. Never a Rust type, and never the list of accepted
//!   field names (serde's messages carry both).
//!
//! The JSON body, query string, path, URL-encoded form and multipart text
//! extractors all come through here, so the rules hold for every route.

use std::fmt::Display;

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::StatusCode,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::AppError;

/// The message for text that holds a NUL character.
pub const NUL_MESSAGE: &str = "must not contain NUL characters";

/// The whole body, within the router's body limit (413 past it).
pub async fn body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, AppError> {
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::PayloadTooLarge
        } else {
            AppError::BadRequest("Unreadable request body".into())
        }
    })
}

/// Refuses `text` (a field called `field`) if it holds NUL.
pub fn refuse_nul(field: &str, text: &str) -> Result<(), AppError> {
    if text.contains('\0') { Err(AppError::invalid(printable(field), NUL_MESSAGE)) } else { Ok(()) }
}

/// Whether raw JSON may hold a NUL: JSON can only spell one as the escape
/// `\u0000`, so only text containing that escape (not itself escaped) can.
pub fn json_may_hold_nul(bytes: &[u8]) -> bool {
    bytes
        .windows(6)
        .enumerate()
        .any(|(at, w)| w == b"\\u0000" && bytes[..at].iter().rev().take_while(|b| **b == b'\\').count() % 2 == 0)
}

/// The path of the first key or string in `value` that holds NUL.
pub fn nul_in_json(value: &Value) -> Option<String> {
    fn walk(value: &Value, path: &str) -> Option<String> {
        match value {
            Value::String(s) if s.contains('\0') => Some(path.to_string()),
            Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| walk(v, &format!("{path}[{i}]"))),
            Value::Object(map) => map.iter().find_map(|(k, v)| {
                let here = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                if k.contains('\0') { Some(here) } else { walk(v, &here) }
            }),
            _ => None,
        }
    }
    walk(value, "").map(|p| if p.is_empty() { "body".into() } else { printable(&p) })
}

/// Refuses URL-encoded pairs (a query string or form body) holding NUL.
pub fn refuse_nul_pairs(bytes: &[u8]) -> Result<(), AppError> {
    for (key, value) in url::form_urlencoded::parse(bytes) {
        if key.contains('\0') || value.contains('\0') {
            return Err(AppError::invalid(printable(&key), NUL_MESSAGE));
        }
    }
    Ok(())
}

/// Deserializes URL-encoded pairs into `T`, explaining a failure as a 422
/// whose field is `whole` when the failure is not about one field.
pub fn from_pairs<T: DeserializeOwned>(bytes: &[u8], whole: &'static str) -> Result<T, AppError> {
    refuse_nul_pairs(bytes)?;
    let deserializer = serde_urlencoded::Deserializer::new(url::form_urlencoded::parse(bytes));
    serde_path_to_error::deserialize(deserializer).map_err(|e| explain(e, whole))
}

/// A deserialization failure as a 422 naming the field and what it must be.
pub fn explain<E: Display>(err: serde_path_to_error::Error<E>, whole: &'static str) -> AppError {
    let path: Vec<String> = err.path().iter().map(|s| s.to_string()).filter(|s| s != "?").collect();
    let text = err.inner().to_string();
    let (extra, message) = describe(strip_position(&text));
    let mut field = path.join(".").replace(".[", "[");
    // serde_path_to_error names an unknown field already; a missing one it does not.
    if let Some(name) = extra
        && path.last() != Some(&name)
    {
        field = if field.is_empty() { name } else { format!("{field}.{name}") };
    }
    if field.is_empty() {
        return AppError::invalid(whole, message);
    }
    AppError::invalid(printable(&field), message)
}

/// serde_json appends " at line L column C"; the client knows where its body is.
fn strip_position(text: &str) -> &str {
    match text.rfind(" at line ") {
        Some(at) if text[at..].contains(" column ") => &text[..at],
        _ => text,
    }
}

/// A field name fit for a message: at most 64 characters, no control characters.
fn printable(field: &str) -> String {
    field.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// The text between the first `start` and the next `end`.
fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

/// serde's message as (a field name it mentions, what to tell the client).
fn describe(text: &str) -> (Option<String>, String) {
    if let Some(name) = between(text, "unknown field `", "`") {
        return (Some(name.to_string()), "is not a field of this request".into());
    }
    if let Some(name) = between(text, "missing field `", "`") {
        return (Some(name.to_string()), "is required".into());
    }
    if text.starts_with("unknown variant") {
        let allowed = text.split_once("expected ").map(|(_, rest)| rest.replace('`', "")).unwrap_or_default();
        let allowed = allowed.trim_start_matches("one of ").to_string();
        return (
            None,
            if allowed.is_empty() { "is not an accepted value".into() } else { format!("must be one of {allowed}") },
        );
    }
    if let Some((head, expected)) = text.split_once(", expected ") {
        let out_of_range = head.starts_with("invalid value: integer");
        let what = kind(expected);
        return (
            None,
            if out_of_range && what == WHOLE { format!("must be {WHOLE} in range") } else { format!("must be {what}") },
        );
    }
    let lower = text.to_ascii_lowercase();
    let message = if lower.contains("did not match any variant") {
        "has the wrong form"
    } else if lower.contains("component") || lower.contains("rfc3339") || lower.contains("datetime") {
        DATE
    } else if lower.contains("invalid digit") || lower.contains("parse integer") || lower.contains("number too") {
        "must be a whole number"
    } else if lower.contains("uuid") || lower.contains("invalid character") || lower.contains("invalid group") {
        "must be a UUID"
    } else if lower.contains("invalid length") {
        "has the wrong length"
    } else if lower.contains("provided string was not") || lower.contains("invalid bool") {
        "must be true or false"
    } else {
        "is not valid"
    };
    (None, message.into())
}

const WHOLE: &str = "a whole number";
const DATE: &str = "must be a date and time such as 2026-12-01T09:30:00Z";

/// What serde's "expected …" means, in the API's words.
fn kind(expected: &str) -> &'static str {
    let e = expected.trim();
    let integer = ["i8", "i16", "i32", "i64", "i128", "isize", "u8", "u16", "u32", "u64", "u128", "usize"];
    if integer.iter().any(|t| e == *t || e.starts_with(&format!("{t} "))) {
        WHOLE
    } else if e.starts_with("f32") || e.starts_with("f64") {
        "a number"
    } else if e.contains("OffsetDateTime") || e.to_ascii_lowercase().contains("rfc3339") {
        "a date and time such as 2026-12-01T09:30:00Z"
    } else if e.contains("UUID") || e.contains("uuid") {
        "a UUID"
    } else if e.contains("string") || e.contains("char") {
        "text"
    } else if e.contains("bool") {
        "true or false"
    } else if e.contains("sequence") || e.contains("tuple") {
        "a list"
    } else if e.starts_with("struct") || e.contains("map") || e.contains("object") {
        "an object"
    } else {
        "a value of another type"
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Body {
        name: String,
        limit: Option<i32>,
        #[serde(default, with = "time::serde::rfc3339::option")]
        expires_at: Option<time::OffsetDateTime>,
        id: Option<uuid::Uuid>,
    }

    fn json_error(body: &str) -> (String, String) {
        let mut de = serde_json::Deserializer::from_str(body);
        let err = serde_path_to_error::deserialize::<_, Body>(&mut de).unwrap_err();
        match explain(err, "body") {
            AppError::Invalid { field, message } => (field.into_owned(), message),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn messages_name_the_field_and_what_it_must_be_never_a_rust_type_or_the_field_list() {
        assert_eq!(json_error(r#"{"name": 7}"#), ("name".into(), "must be text".into()));
        assert_eq!(json_error(r#"{"name": "a", "limit": "x"}"#), ("limit".into(), "must be a whole number".into()));
        assert_eq!(json_error(r#"{"name": "a", "limit": 9999999999}"#).1, "must be a whole number in range");
        assert_eq!(
            json_error(r#"{"name": "a", "secret": 1}"#),
            ("secret".into(), "is not a field of this request".into())
        );
        assert_eq!(json_error(r#"{}"#), ("name".into(), "is required".into()));
        assert_eq!(json_error(r#""text""#), ("body".into(), "must be an object".into()));
        assert_eq!(json_error(r#"{"name": "a", "expiresAt": "tomorrow"}"#).0, "expiresAt");
        assert!(json_error(r#"{"name": "a", "expiresAt": "tomorrow"}"#).1.contains("date and time"));
        assert_eq!(json_error(r#"{"name": "a", "id": "nope"}"#), ("id".into(), "must be a UUID".into()));
        for body in [r#"{"name": 7}"#, r#"{"secret": 1}"#, r#""x""#, r#"{"name": "a", "limit": true}"#] {
            let (_, message) = json_error(body);
            for leak in ["i32", "struct", "Body", "expected", "`"] {
                assert!(!message.contains(leak), "{body}: {message}");
            }
        }
    }

    #[test]
    fn an_escaped_nul_is_found_and_an_escaped_backslash_is_not_one() {
        assert!(json_may_hold_nul(br#"{"a": "x\u0000y"}"#));
        assert!(!json_may_hold_nul(br#"{"a": "x\\u0000y"}"#));
        assert!(json_may_hold_nul(br#"{"a": "x\\\u0000y"}"#));
        let value: Value = serde_json::from_str(r#"{"a": {"b": ["ok", "x\u0000"]}}"#).unwrap();
        assert_eq!(nul_in_json(&value).as_deref(), Some("a.b[1]"));
        let key: Value = serde_json::from_str(r#"{"k\u0000": 1}"#).unwrap();
        assert_eq!(nul_in_json(&key).as_deref(), Some("k"));
    }

    #[test]
    fn url_encoded_nul_is_refused_and_named() {
        let err = refuse_nul_pairs(b"ok=1&user=a%00b").unwrap_err();
        assert!(matches!(err, AppError::Invalid { ref field, .. } if field == "user"), "{err:?}");
        assert!(refuse_nul_pairs(b"ok=1&user=ab").is_ok());
    }
}
