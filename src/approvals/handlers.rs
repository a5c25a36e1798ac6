//! HTTP handlers for dual control: parse, call the capability, shape the answer.

use axum::{extract::State, response::IntoResponse};
use uuid::Uuid;

use super::{
    ListQuery, decide,
    policies::{self, PolicyInput, PolicyView},
};
use crate::{
    auth::Authenticated,
    authz::{
        Permit,
        dual::{ApprovalView, Operation},
    },
    http::{
        AppState,
        apidoc::Op,
        client::ClientSource,
        guard::Tx,
        json::ApiJson,
        params::{ApiPath, ApiQuery},
        reply::{Answer, committed, done, ok},
    },
};

pub async fn list(
    State(s): State<AppState>,
    who: Authenticated,
    Tx(mut tx): Tx,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Answer {
    let (approvals, next) = super::list(&s, &mut tx, who.user_id, &q).await?;
    tx.end_read_only().await?;
    Ok(axum::Json(serde_json::json!({ "approvals": approvals, "nextCursor": next })).into_response())
}

pub async fn get(State(s): State<AppState>, who: Authenticated, Tx(mut tx): Tx, ApiPath(id): ApiPath<Uuid>) -> Answer {
    let approval = super::get(&s, &mut tx, who.user_id, id).await?;
    committed(tx, "approval", approval).await
}

pub async fn approve(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    who: Authenticated,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
    body: axum::body::Bytes,
) -> Answer {
    // The body is optional: `{"comment": ...}` or nothing.
    let input = if body.iter().all(u8::is_ascii_whitespace) {
        decide::Approve::default()
    } else {
        crate::http::json::parse(&body)?
    };
    ok("approval", decide::approve(&s, &src, tx, who.user_id, id, input).await?)
}

pub async fn deny(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    who: Authenticated,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(input): ApiJson<decide::Deny>,
) -> Answer {
    ok("approval", decide::deny(&s, &src, tx, who.user_id, id, input).await?)
}

pub async fn cancel(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    who: Authenticated,
    Tx(tx): Tx,
    ApiPath(id): ApiPath<Uuid>,
) -> Answer {
    ok("approval", decide::cancel(&s, &src, tx, who.user_id, id).await?)
}

pub async fn list_policies(Tx(mut tx): Tx) -> Answer {
    let list = policies::list(&mut tx).await?;
    committed(tx, "policies", list).await
}

pub async fn get_policy(Tx(mut tx): Tx, ApiPath(operation): ApiPath<String>) -> Answer {
    let policy = policies::get(&mut tx, &operation).await?;
    committed(tx, "policy", policy).await
}

pub async fn put_policy(
    State(s): State<AppState>,
    ClientSource(src): ClientSource,
    permit: Permit,
    Tx(tx): Tx,
    ApiPath(operation): ApiPath<String>,
    ApiJson(input): ApiJson<PolicyInput>,
) -> Answer {
    done(policies::put(&s, &permit, &src, tx, &operation, input).await?, |p| ok("policy", p))
}

/// The operations of this module, for the OpenAPI description.
pub fn api() -> Vec<Op> {
    const NOT_VISIBLE: &str = "no such request, or the caller may not see it (only its requester, its approvers \
                               and those eligible to approve it may, each cleared to its document)";
    vec![
        Op::get("/api/approvals", "List dual-control requests")
            .describe(
                "The requests the caller may see, newest first: their own, those they approved, and those they \
                 are eligible to approve. Requests past their time are closed (`approval.expire`) first.",
            )
            .query::<ListQuery>()
            .page::<ApprovalView>("approvals")
            .error(422, "a filter is not an accepted value, or `after` is not a cursor from a previous page"),
        Op::get("/api/approvals/{id}", "Get a dual-control request")
            .ok::<ApprovalView>("approval")
            .error(404, NOT_VISIBLE),
        Op::post("/api/approvals/{id}/approve", "Approve a request")
            .describe(
                "Approves a pending request (recorded as `approval.approve`). With the last required approval the \
                 operation runs at once with the requester's rights (`approval.execute`, success or fail); an \
                 export becomes `approved`, for its requester to run once with `?approval=<id>`.",
            )
            .json::<decide::Approve>()
            .ok::<ApprovalView>("approval")
            .error(403, "the caller requested it, or is not eligible to approve it now (recorded)")
            .error(404, "no such request")
            .error(409, "the request is not pending, has expired, or the caller already approved it (recorded)"),
        Op::post("/api/approvals/{id}/deny", "Deny a request")
            .json::<decide::Deny>()
            .ok::<ApprovalView>("approval")
            .error(403, "the caller requested it (they cancel instead), or is not eligible to decide it (recorded)")
            .error(404, "no such request")
            .error(409, "the request is not pending, or has expired (recorded)"),
        Op::post("/api/approvals/{id}/cancel", "Cancel one's own request")
            .ok::<ApprovalView>("approval")
            .error(403, "the caller did not request it (recorded)")
            .error(404, "no such request")
            .error(409, "the request is no longer open (recorded)"),
        Op::get("/api/approval-policies", "List the dual-control policies")
            .answers(200, crate::http::apidoc::Reply::new().field::<Vec<PolicyView>>("policies")),
        Op::get("/api/approval-policies/{operation}", "Get a dual-control policy")
            .path_param::<Operation>("operation")
            .ok::<PolicyView>("policy")
            .error(404, "no such operation"),
        Op::put("/api/approval-policies/{operation}", "Change a dual-control policy")
            .describe("Itself the operation `policy.change`: with that policy on, any change waits for approval.")
            .path_param::<Operation>("operation")
            .json::<PolicyInput>()
            .ok::<PolicyView>("policy")
            .held()
            .error(404, "no such operation")
            .error(422, "a value is out of range, or `approverRoles` names a role that does not exist"),
    ]
}
