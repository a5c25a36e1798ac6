//! `GET /api/openapi.json`: served without a session, it describes every JSON
//! route of the route table and nothing that is not routed, with who may call
//! each operation and the answers its route can give.

mod common;

use std::collections::BTreeSet;

use common::{TestApp, new_client};
use fortifile::{app::route_table, http::Access, openapi::is_json_route};
use reqwest::StatusCode;
use serde_json::Value;

async fn document(app: &TestApp) -> Value {
    let res = new_client().get(app.url("/api/openapi.json")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "served without a session");
    res.json().await.unwrap()
}

fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            out.push((method.to_uppercase(), path.clone(), op));
        }
    }
    out
}

#[tokio::test]
async fn every_json_route_is_described_and_nothing_that_is_not_routed() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let routed: BTreeSet<(String, String)> = route_table(app.state.clone())
        .iter()
        .filter(|r| is_json_route(r))
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    let described: BTreeSet<(String, String)> = operations(&doc).into_iter().map(|(m, p, _)| (m, p)).collect();
    let missing: Vec<_> = routed.difference(&described).collect();
    let extra: Vec<_> = described.difference(&routed).collect();
    assert!(missing.is_empty(), "routed but not described: {missing:?}");
    assert!(extra.is_empty(), "described but not routed: {extra:?}");
    assert!(routed.len() > 60, "the API has its routes: {}", routed.len());
}

#[tokio::test]
async fn each_operation_says_who_may_call_it_and_every_answer_its_route_can_give() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let rules = route_table(app.state.clone());
    for (method, path, op) in operations(&doc) {
        let rule = rules.iter().find(|r| r.method.as_str() == method && r.path == path).unwrap();
        let answers = op["responses"].as_object().unwrap();
        let security = op["security"].as_array().unwrap();
        let ok = answers.keys().any(|s| s.starts_with('2'));
        assert!(ok, "{method} {path} describes its success");
        if path != "/healthz" && path != "/readyz" {
            assert!(answers.contains_key("429"), "{method} {path}: rate limits");
        }
        if rule.access == Access::Public {
            assert!(security.is_empty(), "{method} {path} needs nothing");
            continue;
        }
        for status in ["401", "403"] {
            assert!(answers.contains_key(status), "{method} {path} answers {status}");
            let schema = &answers[status]["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(schema, "#/components/schemas/Error", "{method} {path} {status}: the error shape");
        }
        let session = &security[0];
        assert!(session.get("session").is_some(), "{method} {path}: the session cookie");
        assert_eq!(session.get("csrf").is_some(), method != "GET", "{method} {path}: CSRF on unsafe methods");
        let keys = security.iter().any(|s| s.get("apiKey").is_some());
        assert_eq!(keys, fortifile::openapi::admits_keys(rule), "{method} {path}: API keys");
        if rule.step_up {
            assert!(answers["403"]["description"].as_str().unwrap().contains("stepUp"), "{method} {path}");
        }
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        let has_key = params.iter().any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header");
        assert_eq!(has_key, rule.idempotent, "{method} {path}: Idempotency-Key");
        if op.get("requestBody").is_some() {
            for status in ["413", "415", "422"] {
                assert!(answers.contains_key(status), "{method} {path} with a body answers {status}");
            }
        }
        for name in path.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}')) {
            assert!(params.iter().any(|p| p["name"] == name && p["in"] == "path"), "{method} {path}: {{{name}}}");
        }
    }
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert_eq!(schemes["session"]["in"], "cookie");
    assert_eq!(schemes["csrf"]["name"], "X-CSRF-Token");
    assert_eq!(schemes["apiKey"]["scheme"], "bearer");
}

#[tokio::test]
async fn every_schema_an_operation_refers_to_is_in_the_document() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let text = doc.to_string();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("#/components/schemas/") {
        rest = &rest[at + "#/components/schemas/".len()..];
        let name: String = rest.chars().take_while(|c| *c != '"').collect();
        assert!(schemas.contains_key(&name), "{name} is referred to but not defined");
    }
}

#[tokio::test]
async fn every_pattern_in_the_document_is_a_regular_expression_python_accepts() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    fn patterns(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    match inner {
                        Value::String(p) if key == "pattern" => out.push(p.clone()),
                        _ => patterns(inner, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| patterns(i, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    patterns(&doc, &mut found);
    assert!(found.len() > 20, "fields carry their patterns: {}", found.len());
    assert!(found.iter().all(|p| !p.starts_with('@')), "every named pattern is expanded");
    // schemathesis generates strings from them with Python's `re`.
    let script = "import json, re, sys\nfor p in json.load(sys.stdin): re.compile(p)\n";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(serde_json::to_string(&found).unwrap().as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "every pattern compiles");
}
