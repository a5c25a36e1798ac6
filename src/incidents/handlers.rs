//! HTTP handlers for incidents: parse, call the capability, shape the answer.

use axum::{
    Json,
    extract::{FromRequest, Request, State},
    http::header,
    response::IntoResponse,
};
use serde_json::json;
use uuid::Uuid;

use super::{IncidentChange, IncidentView, ListQuery, NewIncident};
use crate::{
    admin,
    authz::Permit,
    http::{
        AppState,
        apidoc::Op,
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
    tx.end_read_only().await?;
    Ok(Json(json!({ "incidents": incidents, "nextCursor": next })).into_response())
}

/// This module's operations, for the OpenAPI document.
pub fn api() -> Vec<Op> {
    const OUT_OF_SCOPE: &str = "the incident is outside the caller's `incident.manage` scope (`rbac.denied`)";
    vec![
        Op::post("/admin/incidents", "Open an incident")
            .describe(
                "Opens an incident (status `open`), optionally linked to the audit entry that prompted it. The \
                 new-incident page posts the same route as a form (`application/x-www-form-urlencoded`) and gets \
                 a page back.",
            )
            .json::<NewIncident>()
            .created::<IncidentView>("incident")
            .error(
                422,
                "`title` is empty or longer than 200 characters, `description` is longer than 10000, `severity` \
                 is not `low`, `medium` or `high`, or `relatedAuditLogId` names no audit entry the caller may see",
            ),
        Op::patch("/admin/incidents/{id}", "Change an incident's status or severity")
            .json::<IncidentChange>()
            .ok::<IncidentView>("incident")
            .error(403, OUT_OF_SCOPE)
            .error(404, "no such incident")
            .error(422, "neither `status` nor `severity` is given, or one is not an accepted value"),
        Op::get("/api/incidents", "List incidents")
            .describe("A page of the incidents within the caller's `incident.manage` scope, newest first.")
            .query::<ListQuery>()
            .page::<IncidentView>("incidents")
            .error(
                422,
                "`status` or `severity` is not an accepted value, `limit` is not between 1 and 200, or `after` is \
                 not a cursor from a previous page",
            ),
        Op::get("/api/incidents/{id}", "Get an incident")
            .ok::<IncidentView>("incident")
            .error(403, OUT_OF_SCOPE)
            .error(404, "no such incident"),
    ]
}
