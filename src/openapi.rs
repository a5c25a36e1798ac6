//! The OpenAPI 3.1 description of the JSON API (`GET /api/openapi.json`).
//!
//! Two sources, so it cannot drift from the server: each handler module lists
//! its operations with the types its handlers parse and answer
//! ([`crate::http::apidoc::Op`]), and the route table says for each route who
//! may call it. From the route table come the security requirements (the
//! session cookie, with `X-CSRF-Token` on unsafe methods; bearer API keys where
//! keys are allowed), the answers every route shares (401, 403, step-up, 413,
//! 415, 422, 429, 503, in the one error shape) and `Idempotency-Key` on
//! creates. `tests/openapi.rs` checks that every JSON route is described and
//! nothing else is.

use std::collections::BTreeMap;

use axum::http::Method;
use serde_json::{Map, Value, json};

use crate::http::{
    Access, RouteRule,
    apidoc::{Op, error_ref, expand_patterns},
    routes::Admits,
};

/// Whether `rule` is a route of the JSON API (pages are not described).
pub fn is_json_route(rule: &RouteRule) -> bool {
    const PREFIXES: [&str; 4] = ["/auth/", "/me", "/api/", "/admin/incidents"];
    !rule.html && (PREFIXES.iter().any(|p| rule.path.starts_with(p)) || matches!(rule.path, "/healthz" | "/readyz"))
}

/// Whether an API key may call `rule` (the guard's rule: guarded API routes
/// without step-up, for full sessions).
pub fn admits_keys(rule: &RouteRule) -> bool {
    matches!(rule.access, Access::Guarded(_)) && !rule.step_up && rule.admits == Admits::Full && !rule.html
}

/// The document for `ops`, completed from `rules`. `cookie` is the session
/// cookie's name. Panics if an operation has no route (the test catches it).
pub fn document(rules: &[RouteRule], ops: Vec<Op>, cookie: &str) -> Value {
    let mut paths: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    let mut schemas = Map::new();
    schemas.insert("Error".into(), error_schema());
    for op in ops {
        let rule = rules
            .iter()
            .find(|r| r.method == op.method && r.path == op.path)
            .unwrap_or_else(|| panic!("{} {} is described but not routed", op.method, op.path));
        for (name, schema) in &op.components {
            schemas.insert(name.clone(), schema.clone());
        }
        let method = op.method.as_str().to_ascii_lowercase();
        paths.entry(op.path).or_default().insert(method, operation(rule, op));
    }
    let mut document = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "FortiFile",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A secure document-sharing server: role-based permissions, mandatory access control \
                            and tenant isolation, every decision in an append-only audit log. Errors are \
                            `{\"error\": ...}` (with `field` for invalid input). Sessions come from \
                            `POST /auth/login`; unsafe methods then need the `X-CSRF-Token` it returns. \
                            Programs use API keys (`Authorization: Bearer ffk_...`) on the routes that allow them.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "session": { "type": "apiKey", "in": "cookie", "name": cookie,
                             "description": "The session cookie set by `POST /auth/login`." },
                "csrf": { "type": "apiKey", "in": "header", "name": "X-CSRF-Token",
                          "description": "The session's `csrfToken`, on every unsafe method sent with the cookie." },
                "apiKey": { "type": "http", "scheme": "bearer", "bearerFormat": "ffk_...",
                            "description": "An API key from `POST /me/api-keys`." },
            },
        },
    });
    expand_patterns(&mut document);
    document
}

fn error_schema() -> Value {
    json!({
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": { "type": "string", "description": "What went wrong, for people." },
            "field": { "type": "string", "description": "The input the error concerns (422)." },
            "stepUp": { "type": "boolean", "description": "A second-factor verification is needed first." },
            "mfaEnrollmentRequired": { "type": "boolean", "description": "Enrol a second factor first." },
        },
    })
}

fn operation(rule: &RouteRule, op: Op) -> Value {
    let unsafe_method = !matches!(rule.method, Method::GET | Method::HEAD);
    let mut parameters: Vec<Value> = path_names(op.path)
        .map(|name| {
            let schema = op
                .path_params
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, s)| s.clone())
                .unwrap_or_else(|| json!({ "type": "string", "format": "uuid" }));
            json!({ "name": name, "in": "path", "required": true, "schema": schema })
        })
        .collect();
    parameters.extend(op.params.iter().cloned());
    if rule.idempotent {
        parameters.push(json!({
            "name": "Idempotency-Key", "in": "header", "required": false,
            "description": "Makes the create safe to retry: a retry with the same key and request gets the \
                            first answer (with `Idempotency-Replayed: true`) for 24 hours.",
            "schema": { "type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$" },
        }));
    }
    let mut responses = Map::new();
    for (status, description, content) in &op.responses {
        let mut response = json!({ "description": description });
        if let Some((content_type, schema)) = content {
            response["content"] = json!({ *content_type: { "schema": schema } });
        }
        if rule.idempotent && (200..300).contains(status) {
            response["headers"] = json!({ "Idempotency-Replayed": {
                "description": "`true` when this is the stored answer to an earlier request with the key",
                "schema": { "type": "string", "enum": ["true"] },
            }});
        }
        responses.insert(status.to_string(), response);
    }
    let has_input = op.body.is_some() || !parameters.is_empty();
    for (status, when) in shared_answers(rule, op.body.as_ref().map(|(ct, _)| *ct), has_input) {
        let entry = responses.entry(status.to_string()).or_insert_with(
            || json!({ "description": "", "content": { "application/json": { "schema": error_ref() } } }),
        );
        let description = entry["description"].as_str().unwrap_or_default();
        entry["description"] =
            Value::String(if description.is_empty() { when } else { format!("{description}; or {when}") });
        if status == 429 {
            entry["headers"] = json!({ "Retry-After": {
                "description": "Seconds until a request is allowed again", "schema": { "type": "integer" } } });
        }
    }
    let mut operation = json!({
        "operationId": operation_id(&rule.method, rule.path),
        "summary": op.summary,
        "tags": [tag(rule.path)],
        "responses": responses,
    });
    if let Some(description) = op.description {
        operation["description"] = json!(description);
    }
    if !parameters.is_empty() {
        operation["parameters"] = json!(parameters);
    }
    if let Some((content_type, schema)) = op.body {
        operation["requestBody"] = json!({ "required": true, "content": { content_type: { "schema": schema } } });
    }
    operation["security"] = match rule.access {
        Access::Public => json!([]),
        _ => {
            let mut session = json!({ "session": [] });
            if unsafe_method {
                session["csrf"] = json!([]);
            }
            if admits_keys(rule) { json!([session, { "apiKey": [] }]) } else { json!([session]) }
        }
    };
    operation
}

/// The answers every route of its kind shares, from the route table.
fn shared_answers(rule: &RouteRule, body: Option<&str>, has_input: bool) -> Vec<(u16, String)> {
    let mut answers = Vec::new();
    if has_input {
        answers.push((422, "Invalid input: `field` names it".to_string()));
    }
    if body.is_some() {
        answers.push((400, "The body is not well-formed JSON".to_string()));
        answers.push((413, "The body is too large".to_string()));
        answers.push((415, format!("The body is not `{}`", body.unwrap_or_default())));
    }
    if rule.access != Access::Public {
        answers.push((401, "No live session, or an API key that is unknown, revoked or expired".into()));
        answers.push((400, "Both a session cookie and an API key were sent".into()));
        let mut forbidden = vec!["the CSRF token is missing or wrong (cookie sessions, unsafe methods)"];
        if let Access::Guarded(_) = rule.access {
            forbidden.push("the user (or the key) lacks the permission (`rbac.denied` is audited)");
        }
        if rule.admits != Admits::SecondStep {
            forbidden.push("the user must enrol a second factor first (`mfaEnrollmentRequired`)");
        }
        if rule.step_up {
            forbidden.push("a second-factor verification is needed first (`stepUp`: `POST /auth/step-up`)");
        }
        if admits_keys(rule) {
            forbidden.push("an API key came with an `X-CSRF-Token`, which belongs to a session cookie");
        } else {
            forbidden.push("API keys cannot call this: it needs a person signed in");
        }
        answers.push((403, forbidden.join("; or ")));
        answers.push((503, "The database is unavailable".into()));
    }
    if rule.idempotent {
        answers.push((409, "A request with this Idempotency-Key is still being processed".into()));
        answers.push((422, "The Idempotency-Key is malformed or was used for a different request".into()));
    }
    if !matches!(rule.path, "/healthz" | "/readyz") {
        answers.push((429, "Over the request rate limit; see `Retry-After`".into()));
    }
    answers
}

/// The `{name}`s of a path template.
fn path_names(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
}

/// `post /api/users/{id}/roles` → `postApiUsersIdRoles`.
fn operation_id(method: &Method, path: &str) -> String {
    let mut id = method.as_str().to_ascii_lowercase();
    for word in path.split(['/', '-', '.', '{', '}']).filter(|w| !w.is_empty()) {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            id.extend(first.to_uppercase());
            id.push_str(chars.as_str());
        }
    }
    id
}

fn tag(path: &str) -> &'static str {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        ["auth", "mfa", ..] | ["auth", "step-up", ..] | ["me", "mfa", ..] => "second factor",
        ["auth", ..] => "sessions",
        ["me", ..] => "account",
        ["api", "users", ..] => "users",
        ["api", "roles" | "permissions", ..] => "roles",
        ["api", "departments" | "clearance-levels", ..] => "attributes",
        ["api", "files", ..] => "files",
        ["api", "audit-logs", ..] => "audit",
        ["api", "incidents", ..] | ["admin", "incidents", ..] => "incidents",
        _ => "server",
    }
}
