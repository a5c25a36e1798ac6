//! The route builder: every route is declared through [`Routes`], with who
//! may call it on the same line: `public`, `session` (a live session), or
//! `guarded` by a [`Permission`]; which stages of the second factor it admits
//! (a full session by default; `second_step` routes only a session waiting for
//! its second factor, `enrolment` routes also one held in MFA enrolment); with
//! `_step_up`, that it needs a second-factor verification within
//! `FORTIFILE_STEP_UP_MINUTES`; and with `.idempotent()`, that it is a create
//! honouring `Idempotency-Key`. The declarations are kept as data
//! ([`RouteRule`]) so tests can walk the real table (the RBAC matrix test and
//! the OpenAPI description do). Every route but a public one passes the guard
//! ([`super::guard`]).

use axum::{
    Router,
    extract::DefaultBodyLimit,
    handler::Handler,
    http::Method,
    middleware::from_fn,
    routing::{MethodFilter, MethodRouter, on},
};

pub use super::guard::Admits;
use super::{
    AppState,
    guard::{self, Kind},
};
use crate::authz::Permission;

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
    pub admits: Admits,
    /// Needs a recent second-factor verification (from users who have a factor).
    pub step_up: bool,
    /// A page for browsers: without a session it redirects to the login page,
    /// and a refusal is the HTML 403 page (API routes answer 401/403 JSON).
    pub html: bool,
    /// A create that honours `Idempotency-Key` (see [`super::idempotency`]).
    pub idempotent: bool,
}

/// A router under construction, with the rules it was built from.
pub struct Routes {
    state: AppState,
    router: Router<AppState>,
    rules: Vec<RouteRule>,
    /// The route declared last, finished when the next one is declared, so a
    /// modifier such as [`Routes::idempotent`] still applies to it.
    last: Option<(MethodRouter<AppState>, Kind)>,
}

impl Routes {
    pub fn new(state: AppState) -> Self {
        Routes { state, router: Router::new(), rules: Vec::new(), last: None }
    }

    /// The route declared just before creates something and honours
    /// `Idempotency-Key`: a retry with the same key gets the first answer.
    pub fn idempotent(mut self) -> Self {
        let (rule, (_, kind)) = match (self.rules.last_mut(), self.last.as_mut()) {
            (Some(rule), Some(last)) => (rule, last),
            _ => panic!("idempotent() follows a route"),
        };
        assert!(
            rule.method == Method::POST && rule.access != Access::Public && !rule.html,
            "idempotent(): API creates"
        );
        rule.idempotent = true;
        kind.idempotent = true;
        self
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

    /// A session route that also needs a recent step-up (changing one's password).
    pub fn session_step_up<H, T>(self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add_with(method, path, Access::Session, handler, Kind { step_up: true, ..Kind::API })
    }

    /// A page form for anyone signed in that also needs a recent step-up.
    pub fn page_step_up<H, T>(self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add_with(method, path, Access::Session, handler, Kind { step_up: true, ..Kind::PAGE })
    }

    /// A session route that any session reaches, whatever its second factor's stage (logout).
    pub fn any_session<H, T>(self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add_with(method, path, Access::Session, handler, Kind { admits: Admits::Any, ..Kind::API })
    }

    /// A route of the login's second step: only a session waiting for its second factor.
    pub fn second_step<H, T>(self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add_with(method, path, Access::Session, handler, Kind { admits: Admits::SecondStep, ..Kind::API })
    }

    /// A route of MFA enrolment: full sessions and those held until they enrol.
    pub fn enrolment<H, T>(self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add_with(method, path, Access::Session, handler, Kind { admits: Admits::Enrolment, ..Kind::API })
    }

    /// An enrolment route that also needs a recent step-up (changing factors).
    pub fn enrolment_step_up<H, T>(self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let kind = Kind { admits: Admits::Enrolment, step_up: true, ..Kind::API };
        self.add_with(method, path, Access::Session, handler, kind)
    }

    /// A guarded route that also needs a recent step-up.
    pub fn guarded_step_up<H, T>(self, method: Method, path: &'static str, permission: Permission, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add_with(method, path, Access::Guarded(permission), handler, Kind { step_up: true, ..Kind::API })
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
        self.add_with(method, path, Access::Guarded(permission), handler, Kind { stream: true, ..Kind::API })
    }

    /// A page for anyone signed in (others are sent to the login page).
    pub fn page<H, T>(self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add_with(method, path, Access::Session, handler, Kind::PAGE)
    }

    /// A page guarded by `permission`: the login page without a session, the
    /// HTML 403 page (and `rbac.denied`) without the permission.
    pub fn page_guarded<H, T>(self, method: Method, path: &'static str, permission: Permission, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add_with(method, path, Access::Guarded(permission), handler, Kind::PAGE)
    }

    /// A page of MFA enrolment (`/me/mfa`'s forms, the step-up page): full
    /// sessions and those held until they enrol.
    pub fn page_enrolment<H, T>(self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add_with(method, path, Access::Session, handler, Kind { admits: Admits::Enrolment, ..Kind::PAGE })
    }

    /// An enrolment page's form that also needs a recent step-up.
    pub fn page_enrolment_step_up<H, T>(self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let kind = Kind { admits: Admits::Enrolment, step_up: true, ..Kind::PAGE };
        self.add_with(method, path, Access::Session, handler, kind)
    }

    /// The login page's second step: a form for a session waiting for its second factor.
    pub fn page_second_step<H, T>(self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add_with(method, path, Access::Session, handler, Kind { admits: Admits::SecondStep, ..Kind::PAGE })
    }

    /// A guarded page (a form post) that also needs a recent step-up.
    pub fn page_guarded_step_up<H, T>(
        self,
        method: Method,
        path: &'static str,
        permission: Permission,
        handler: H,
    ) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add_with(method, path, Access::Guarded(permission), handler, Kind { step_up: true, ..Kind::PAGE })
    }

    /// A guarded page whose form posts a file (multipart, streamed).
    pub fn page_stream<H, T>(self, method: Method, path: &'static str, permission: Permission, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add_with(method, path, Access::Guarded(permission), handler, Kind { stream: true, ..Kind::PAGE })
    }

    fn add<H, T>(self, method: Method, path: &'static str, access: Access, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add_with(method, path, access, handler, Kind::API)
    }

    fn add_with<H, T>(mut self, method: Method, path: &'static str, access: Access, handler: H, kind: Kind) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.finish_last();
        let filter = MethodFilter::try_from(method.clone()).expect("routes use standard methods");
        self.last = Some((on(filter, handler), kind));
        self.rules.push(RouteRule {
            method,
            path,
            access,
            admits: kind.admits,
            step_up: kind.step_up,
            html: kind.html,
            idempotent: false,
        });
        self
    }

    /// Puts the route declared last, with its guard, into the router.
    fn finish_last(&mut self) {
        let (Some((mut route, kind)), Some(rule)) = (self.last.take(), self.rules.last()) else { return };
        if kind.stream {
            route = route.layer(DefaultBodyLimit::disable());
        }
        let permission = match rule.access {
            Access::Guarded(permission) => Some(permission),
            _ => None,
        };
        // Every route but a public one passes the guard: it opens the session
        // (and sends a browser without one to the login page).
        if rule.access != Access::Public {
            route = guard::around(route, self.state.clone(), permission, kind);
        }
        if kind.html {
            // Outside the guard, so its errors are pages too.
            route = route.layer(from_fn(crate::web::html_errors));
        }
        self.router = std::mem::take(&mut self.router).route(rule.path, route);
    }

    pub fn into_parts(mut self) -> (Router<AppState>, Vec<RouteRule>) {
        self.finish_last();
        (self.router, self.rules)
    }
}
