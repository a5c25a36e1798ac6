//! The route table and its guards.
//!
//! Every route is declared through [`Routes`], with who may call it on the same
//! line: `public`, `session` (a live session), or `guarded` by a [`Permission`].
//! The declarations are kept as data ([`RouteRule`]) so tests can walk the real
//! table (the RBAC matrix test does), and a guarded route's handler receives the
//! [`Permit`] its guard issued.

use axum::{
    Router,
    extract::{FromRequestParts, MatchedPath, Request, State},
    handler::Handler,
    http::{Method, request::Parts},
    middleware::{Next, from_fn_with_state},
    response::{IntoResponse, Response},
    routing::{MethodFilter, on},
};

use super::{AppState, client::source_of, error::AppError};
use crate::{
    auth::Authenticated,
    authz::{self, Permission, Permit},
};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone.
    Public,
    /// Anyone with a live session.
    Session,
    /// A live session whose user holds the permission now.
    Guarded(Permission),
}

/// One declared route.
#[derive(Debug, Clone)]
pub struct RouteRule {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
}

/// A router under construction, with the rules it was built from.
pub struct Routes {
    state: AppState,
    router: Router<AppState>,
    rules: Vec<RouteRule>,
}

impl Routes {
    pub fn new(state: AppState) -> Self {
        Routes { state, router: Router::new(), rules: Vec::new() }
    }

    pub fn public<H, T>(self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add(method, path, Access::Public, handler)
    }

    /// The handler must take [`Authenticated`], which answers 401 without a session.
    pub fn session<H, T>(self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add(method, path, Access::Session, handler)
    }

    pub fn guarded<H, T>(self, method: Method, path: &'static str, permission: Permission, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add(method, path, Access::Guarded(permission), handler)
    }

    fn add<H, T>(mut self, method: Method, path: &'static str, access: Access, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("routes use standard methods");
        let mut route = on(filter, handler);
        if let Access::Guarded(permission) = access {
            let guard = Guard { state: self.state.clone(), permission };
            route = route.route_layer(from_fn_with_state(guard, enforce));
        }
        self.router = self.router.route(path, route);
        self.rules.push(RouteRule { method, path, access });
        self
    }

    pub fn into_parts(self) -> (Router<AppState>, Vec<RouteRule>) {
        (self.router, self.rules)
    }
}

#[derive(Clone)]
struct Guard {
    state: AppState,
    permission: Permission,
}

/// Runs before a guarded route's handler (and before its body is read): 401
/// without a session, 403 plus `rbac.denied` without the permission.
async fn enforce(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let who = match Authenticated::from_request_parts(&mut parts, &guard.state).await {
        Ok(who) => who,
        Err(e) => return e.into_response(),
    };
    let route = match parts.extensions.get::<MatchedPath>() {
        Some(m) => m.as_str().to_string(),
        None => parts.uri.path().to_string(),
    };
    let source = source_of(&parts, &guard.state.config);
    let now = guard.state.clock.now();
    let decision =
        authz::authorize(&guard.state.db, &who, guard.permission, parts.method.as_str(), &route, &source, now).await;
    match decision {
        Ok(permit) => {
            parts.extensions.insert(permit);
            next.run(Request::from_parts(parts, body)).await
        }
        Err(e) => e.into_response(),
    }
}

/// A guarded handler's permit. Only the guard issues one; a handler that asks
/// for it on an unguarded route is a programming error and answers 500.
impl FromRequestParts<AppState> for Permit {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Permit>()
            .cloned()
            .ok_or_else(|| AppError::Internal(anyhow::anyhow!("handler wants a Permit but its route has no guard")))
    }
}
