//! The bare-axum baseline of bench/run: the smallest JSON answer axum can give,
//! on the same runtime and HTTP stack as FortiFile. `hello ADDR`.

use axum::{Router, http::header, response::IntoResponse, routing::get};

async fn me() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], r#"{"user":{"username":"hello"}}"#)
}

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:18501".into());
    let app = Router::new().route("/me", get(me)).route("/readyz", get(|| async { "ready" }));
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    axum::serve(listener, app).await.expect("serve");
}
