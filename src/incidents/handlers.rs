//! HTTP handlers for incidents: parse, call the capability, shape the answer.

use axum::{
    Json,
    extract::{FromRequest, Request, State},
    http::header,
    response::IntoResponse,
};
use serde_json::json;
use uuid::Uuid;

use super::{IncidentChange, ListQuery, NewIncident};
use crate::{
    admin,
    authz::Permit,
    http::{
        AppState,
        client::ClientSource,
        guard::Tx,
        json::ApiJson,
        params::{ApiForm, ApiPath, ApiQuery},
        reply::{Answer, created, ok},
    },
};

/// `POST /admin/incidents`: JSON (the API) or the new-incident page's form.
pub async fn create(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    req: Request,
) -> Answer {
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if is_form {
        let ApiForm(form) = ApiForm::<admin::incidents::IncidentForm>::from_request(req, &s).await?;
        return Ok(admin::incidents::create_from_form(&s, &permit, &src, tx, form).await);
    }
    let ApiJson(input) = ApiJson::<NewIncident>::from_request(req, &s).await?;
    created("incident", super::create(&s, &permit, &src, tx, input).await?)
}

pub async fn update(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(input): ApiJson<IncidentChange>,
) -> Answer {
    ok("incident", super::update(&s, &permit, &src, tx, id, input).await?)
}

pub async fn get(ClientSource(src): ClientSource, permit: Permit, Tx(tx): Tx, ApiPath(id): ApiPath<Uuid>) -> Answer {
    ok("incident", super::get(&permit, &src, tx, id).await?)
}

pub async fn list(permit: Permit, Tx(mut tx): Tx, ApiQuery(q): ApiQuery<ListQuery>) -> Answer {
    let (incidents, next) = super::list(&permit, &mut tx, q).await?;
    tx.commit().await?;
    Ok(Json(json!({ "incidents": incidents, "nextCursor": next })).into_response())
}
