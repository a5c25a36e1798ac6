//! How a JSON handler describes itself for the OpenAPI document: next to its
//! handlers, each module lists its operations ([`Op`]) with the types the
//! handlers parse and answer (`utoipa::ToSchema`, `utoipa::IntoParams`), so a
//! changed type changes the description. What every route shares (who may
//! call it, the error shape, 401/403/413/415/422/429, `Idempotency-Key`, the
//! security schemes) is added from the route table by `crate::openapi`.
//!
//! ```ignore
//! Op::post("/api/departments", "Create a department")
//!     .json::<DepartmentInput>()
//!     .answers(201, Reply::new().field::<DepartmentView>("department"))
//!     .error(409, "a department with that name exists")
//! ```

use axum::http::Method;
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema, openapi::path::ParameterIn};

/// The schemas an operation refers to, by name.
pub type Components = Vec<(String, Value)>;

/// A body: its content type and schema.
pub type Content = (&'static str, Value);

/// One described operation.
#[derive(Debug, Clone)]
pub struct Op {
    pub method: Method,
    pub path: &'static str,
    pub summary: &'static str,
    pub description: Option<&'static str>,
    /// `(content type, schema)` of the request body.
    pub body: Option<Content>,
    /// Query (and overridden path) parameters, as OpenAPI parameter objects.
    pub params: Vec<Value>,
    /// Path parameters that are not UUIDs: `(name, schema)`.
    pub path_params: Vec<(&'static str, Value)>,
    /// Status, description and content (`None`: no body).
    pub responses: Vec<(u16, String, Option<Content>)>,
    pub components: Components,
}

impl Op {
    pub fn new(method: Method, path: &'static str, summary: &'static str) -> Op {
        Op {
            method,
            path,
            summary,
            description: None,
            body: None,
            params: Vec::new(),
            path_params: Vec::new(),
            responses: Vec::new(),
            components: Vec::new(),
        }
    }

    pub fn get(path: &'static str, summary: &'static str) -> Op {
        Op::new(Method::GET, path, summary)
    }

    pub fn post(path: &'static str, summary: &'static str) -> Op {
        Op::new(Method::POST, path, summary)
    }

    pub fn put(path: &'static str, summary: &'static str) -> Op {
        Op::new(Method::PUT, path, summary)
    }

    pub fn patch(path: &'static str, summary: &'static str) -> Op {
        Op::new(Method::PATCH, path, summary)
    }

    pub fn delete(path: &'static str, summary: &'static str) -> Op {
        Op::new(Method::DELETE, path, summary)
    }

    /// A longer explanation (CommonMark).
    pub fn describe(mut self, text: &'static str) -> Op {
        self.description = Some(text);
        self
    }

    /// The request body is JSON of type `T`.
    pub fn json<T: ToSchema>(mut self) -> Op {
        let schema = reference::<T>(&mut self.components);
        self.body = Some(("application/json", schema));
        self
    }

    /// The request body is given by `schema` under `content_type` (uploads).
    pub fn body(mut self, content_type: &'static str, schema: Value) -> Op {
        self.body = Some((content_type, schema));
        self
    }

    /// The query string's parameters, from the handler's query type.
    pub fn query<Q: IntoParams>(mut self) -> Op {
        for parameter in Q::into_params(|| Some(ParameterIn::Query)) {
            self.params.push(serde_json::to_value(parameter).expect("a parameter serializes"));
        }
        self
    }

    /// Leaves out the query parameter `name` (one that another operation
    /// sharing the query type takes, and this one refuses).
    pub fn without_param(mut self, name: &str) -> Op {
        self.params.retain(|p| p["name"] != name);
        self
    }

    /// A path parameter that is not a UUID (every other `{name}` is one).
    pub fn path_param<T: ToSchema>(mut self, name: &'static str) -> Op {
        let schema = reference::<T>(&mut self.components);
        self.path_params.push((name, schema));
        self
    }

    /// A JSON answer with `status`.
    pub fn answers(mut self, status: u16, reply: Reply) -> Op {
        let description = reply.description.unwrap_or_else(|| default_description(status).to_string());
        self.components.extend(reply.components);
        let schema = json!({ "type": "object", "properties": reply.properties, "required": reply.required });
        self.responses.push((status, description, Some(("application/json", schema))));
        self
    }

    /// 200 `{key: T}`.
    pub fn ok<T: ToSchema>(self, key: &'static str) -> Op {
        self.answers(200, Reply::new().field::<T>(key))
    }

    /// 201 `{key: T}`.
    pub fn created<T: ToSchema>(self, key: &'static str) -> Op {
        self.answers(201, Reply::new().field::<T>(key))
    }

    /// 200 `{key: [T], nextCursor: string | null}`: a page of a list.
    pub fn page<T: ToSchema>(self, key: &'static str) -> Op
    where
        Vec<T>: ToSchema,
    {
        self.answers(200, Reply::new().field::<Vec<T>>(key).field::<Option<String>>("nextCursor"))
    }

    /// 202 `{approval}`: the operation is under dual control and waits for
    /// a second person (`authz::dual`).
    pub fn held(self) -> Op {
        let reply = Reply::new()
            .field::<crate::authz::dual::ApprovalView>("approval")
            .describe("Held for approval: nothing changed yet; the request waits for a second, eligible person");
        self.answers(202, reply)
    }

    /// 204 without a body.
    pub fn no_content(mut self) -> Op {
        self.responses.push((204, "Done; nothing to answer".into(), None));
        self
    }

    /// A body that is not JSON (a download, an export), with `status` 200.
    pub fn content(mut self, content_type: &'static str, description: &'static str) -> Op {
        let schema = json!({ "type": "string", "format": "binary" });
        self.responses.push((200, description.into(), Some((content_type, schema))));
        self
    }

    /// A refusal or failure this operation answers itself (besides those
    /// every route shares), with the error shape.
    pub fn error(mut self, status: u16, when: &'static str) -> Op {
        match self.responses.iter_mut().find(|(s, _, _)| *s == status) {
            Some((_, description, _)) => {
                description.push_str("; or ");
                description.push_str(when);
            }
            None => self.responses.push((status, when.into(), Some(("application/json", error_ref())))),
        }
        self
    }
}

/// The fields of a JSON answer: `{"user": {...}, "csrfToken": "..."}`.
#[derive(Debug, Default)]
pub struct Reply {
    properties: Map<String, Value>,
    required: Vec<String>,
    components: Components,
    description: Option<String>,
}

impl Reply {
    pub fn new() -> Reply {
        Reply::default()
    }

    /// A field of type `T`; required unless `T` is an `Option`.
    pub fn field<T: ToSchema>(mut self, key: &'static str) -> Reply {
        let schema = reference::<T>(&mut self.components);
        if !nullable(&schema) {
            self.required.push(key.to_string());
        }
        self.properties.insert(key.to_string(), schema);
        self
    }

    pub fn describe(mut self, text: &str) -> Reply {
        self.description = Some(text.to_string());
        self
    }
}

/// The schema of `T`: a reference to a named component for a struct or an
/// enum (registered in `components`, with those it refers to), else inline.
fn reference<T: ToSchema>(components: &mut Components) -> Value {
    let mut nested = Vec::new();
    T::schemas(&mut nested);
    for (name, schema) in nested {
        components.push((name, serde_json::to_value(schema).expect("a schema serializes")));
    }
    let schema = serde_json::to_value(T::schema()).expect("a schema serializes");
    if nullable(&schema) {
        // `Option<T>`: utoipa names them all "Option"; inline, `null` or `T`.
        return schema;
    }
    let named = schema.get("properties").is_some() || schema.get("enum").is_some() || schema.get("oneOf").is_some();
    let name = T::name();
    if named && !name.contains(['<', ' ']) && name.chars().next().is_some_and(char::is_uppercase) {
        components.push((name.to_string(), schema));
        json!({ "$ref": format!("#/components/schemas/{name}") })
    } else {
        schema
    }
}

fn nullable(schema: &Value) -> bool {
    match &schema["type"] {
        Value::Array(types) => types.iter().any(|t| t == "null"),
        _ => schema["oneOf"].as_array().is_some_and(|o| o.iter().any(|s| s["type"] == "null")),
    }
}

/// Whitespace as Rust's `str::trim` sees it.
macro_rules! ws {
    () => {
        r"[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    };
}

/// A character that is neither a control character nor whitespace (nor, with
/// an argument, those characters).
macro_rules! visible {
    () => {
        visible!("")
    };
    ($also:literal) => {
        concat!(r"[^", $also, r"\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")
    };
}

macro_rules! hex_uuid {
    () => {
        r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
    };
}

/// Patterns too long to repeat on every field. A field declares
/// `#[schema(pattern = "@text")]` (utoipa takes only a literal there) and the
/// document carries the pattern ([`expand_patterns`]). ECMA-262 syntax, also
/// valid for Python's `re` (schemathesis generates strings from them).
pub const PATTERNS: &[(&str, &str)] = &[
    // Text the server trims and checks for control characters: at least one
    // visible character, no control character inside.
    ("@text", concat!("^", ws!(), "*", visible!(), r"(?:[^\x00-\x1f\x7f-\x9f]*", visible!(), ")?", ws!(), "*$")),
    // The same, at most 100 characters once trimmed.
    (
        "@text-100",
        concat!("^", ws!(), "*", visible!(), r"(?:[^\x00-\x1f\x7f-\x9f]{0,98}", visible!(), ")?", ws!(), "*$"),
    ),
    ("@username", concat!("^", ws!(), r"*[A-Za-z0-9][A-Za-z0-9._-]{2,63}", ws!(), "*$")),
    ("@email", concat!("^", ws!(), "*", visible!("@"), "+@", visible!("@"), "+", ws!(), "*$")),
    // A TOTP code: six digits, whitespace anywhere.
    ("@totp-code", concat!("^", ws!(), "*(?:[0-9]", ws!(), "*){6}$")),
    // A recovery code: ten characters of its alphabet, whitespace and `-` anywhere.
    (
        "@recovery-code",
        r"^[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000-]*(?:[a-hjkmnp-zA-HJKMNP-Z2-9][\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000-]*){10}$",
    ),
    // A page cursor: microseconds, a dot, a UUID in any form the server parses.
    (
        "@cursor",
        concat!(
            r"^[+-]?[0-9]{1,17}\.(?:[0-9A-Fa-f]{32}|",
            hex_uuid!(),
            r"|\{",
            hex_uuid!(),
            r"\}|[Uu][Rr][Nn]:[Uu][Uu][Ii][Dd]:",
            hex_uuid!(),
            ")$"
        ),
    ),
];

/// Replaces every named pattern (`"pattern": "@text"`) in `value` with the
/// pattern itself. Panics on a name that is not in [`PATTERNS`].
pub fn expand_patterns(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                match inner {
                    Value::String(name) if key == "pattern" && name.starts_with('@') => {
                        let found = PATTERNS.iter().find(|(n, _)| n == name);
                        let (_, pattern) = found.unwrap_or_else(|| panic!("no pattern named {name}"));
                        *name = pattern.to_string();
                    }
                    _ => expand_patterns(inner),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(expand_patterns),
        _ => {}
    }
}

pub fn error_ref() -> Value {
    json!({ "$ref": "#/components/schemas/Error" })
}

pub fn default_description(status: u16) -> &'static str {
    match status {
        200 => "Done",
        201 => "Created",
        204 => "Done; nothing to answer",
        _ => "Answer",
    }
}
