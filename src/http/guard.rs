//! The route table and its guards.
//!
//! Every route is declared through [`Routes`], with who may call it on the same
//! line: `public`, `session` (a live session), or `guarded` by a [`Permission`].
//! The declarations are kept as data ([`RouteRule`]) so tests can walk the real
//! table (the RBAC matrix test does), and a guarded route's handler receives the
//! [`Permit`] its guard issued.

use axum::{
    Router,
    extract::{DefaultBodyLimit, FromRequestParts, MatchedPath, Request, State},
    handler::Handler,
    http::{Method, request::Parts},
    middleware::{Next, from_fn, from_fn_with_state},
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
    /// A page for browsers: without a session it redirects to the login page,
    /// and a refusal is the HTML 403 page (API routes answer 401/403 JSON).
    pub html: bool,
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

    /// A guarded route whose body is streamed and limited by its handler (file
    /// uploads) instead of the router's small default body limit.
    pub fn guarded_stream<H, T>(self, method: Method, path: &'static str, permission: Permission, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add_with(method, path, Access::Guarded(permission), handler, Kind { stream: true, html: false })
    }

    /// A page for anyone signed in (others are sent to the login page).
    pub fn page<H, T>(self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add_with(method, path, Access::Session, handler, Kind { stream: false, html: true })
    }

    /// A page guarded by `permission`: the login page without a session, the
    /// HTML 403 page (and `rbac.denied`) without the permission.
    pub fn page_guarded<H, T>(self, method: Method, path: &'static str, permission: Permission, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add_with(method, path, Access::Guarded(permission), handler, Kind { stream: false, html: true })
    }

    /// A guarded page whose form posts a file (multipart, streamed).
    pub fn page_stream<H, T>(self, method: Method, path: &'static str, permission: Permission, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add_with(method, path, Access::Guarded(permission), handler, Kind { stream: true, html: true })
    }

    fn add<H, T>(self, method: Method, path: &'static str, access: Access, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add_with(method, path, access, handler, Kind { stream: false, html: false })
    }

    fn add_with<H, T>(mut self, method: Method, path: &'static str, access: Access, handler: H, kind: Kind) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("routes use standard methods");
        let mut route = on(filter, handler);
        if kind.stream {
            route = route.layer(DefaultBodyLimit::disable());
        }
        let permission = match access {
            Access::Guarded(permission) => Some(permission),
            _ => None,
        };
        // Pages always pass the guard: it sends a browser without a session to
        // the login page.
        if permission.is_some() || kind.html {
            let guard = Guard { state: self.state.clone(), permission, html: kind.html };
            route = route.route_layer(from_fn_with_state(guard, enforce));
        }
        if kind.html {
            // Outside the guard, so its errors are pages too.
            route = route.layer(from_fn(crate::web::html_errors));
        }
        self.router = self.router.route(path, route);
        self.rules.push(RouteRule { method, path, access, html: kind.html });
        self
    }

    pub fn into_parts(self) -> (Router<AppState>, Vec<RouteRule>) {
        (self.router, self.rules)
    }
}

#[derive(Clone, Copy)]
struct Kind {
    /// The handler streams and limits the body itself.
    stream: bool,
    html: bool,
}

#[derive(Clone)]
struct Guard {
    state: AppState,
    /// `None`: a page that needs only a session.
    permission: Option<Permission>,
    html: bool,
}

/// Runs before a guarded route's handler (and before its body is read): 401
/// without a session, 403 plus `rbac.denied` without the permission. For pages:
/// a redirect to the login page, and the HTML 403 page.
async fn enforce(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let who = match Authenticated::from_request_parts(&mut parts, &guard.state).await {
        Ok(who) => who,
        Err(AppError::Unauthorized) if guard.html => return crate::web::to_login(&parts.uri),
        Err(e) => return e.into_response(),
    };
    let Some(permission) = guard.permission else {
        return next.run(Request::from_parts(parts, body)).await;
    };
    let route = match parts.extensions.get::<MatchedPath>() {
        Some(m) => m.as_str().to_string(),
        None => parts.uri.path().to_string(),
    };
    let source = source_of(&parts, &guard.state.config);
    let now = guard.state.clock.now();
    let decision =
        authz::authorize(&guard.state.db, &who, permission, parts.method.as_str(), &route, &source, now).await;
    match decision {
        Ok(permit) => {
            parts.extensions.insert(permit);
            next.run(Request::from_parts(parts, body)).await
        }
        Err(AppError::Forbidden(_)) if guard.html => crate::web::forbidden_page(),
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
