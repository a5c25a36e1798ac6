//! `POST /admin/logs/verify`: the dashboard's "Verify integrity" action (guard
//! `admin.view_logs`). The same check as `fortifile audit verify`, for the
//! administrator's organisation, recorded as `audit.verify`.

use askama::Template;
use axum::{extract::State, response::Response};
use time::{OffsetDateTime, macros::format_description};

use crate::{
    audit::integrity::{self, ChainState, Verification},
    auth::{Authenticated, Me},
    authz::Permit,
    http::{AppState, client::ClientSource, error::AppError, guard::Tx},
    web::{Nav, render},
};

#[derive(Template)]
#[template(path = "admin_integrity.html")]
struct IntegrityPage {
    nav: Nav,
    result: Verification,
    chain: ChainState,
}

impl IntegrityPage {
    fn time(&self, at: &OffsetDateTime) -> String {
        at.format(format_description!("[year]-[month]-[day] [hour]:[minute]:[second]")).unwrap_or_default()
    }
}

pub async fn verify(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    who: Authenticated,
    me: Me,
    permit: Permit,
    Tx(mut tx): Tx,
) -> Result<Response, AppError> {
    let result = integrity::verify_and_record(&state, &mut tx, &source).await?;
    let chain = integrity::state(&state, &mut tx).await?;
    tx.commit().await?;
    let nav = Nav::new(&me, &who, permit.subject());
    Ok(render(&IntegrityPage { nav, result, chain }))
}
