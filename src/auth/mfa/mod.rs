//! Multi-factor authentication (seed 001 §4, NIST SP 800-63B-4 AAL2): TOTP
//! factors, recovery codes, the login's second step, step-up for sensitive
//! actions, and enforcement of the `requires_mfa` / `mfa_type` of a user's roles.
//!
//! Where a session stands ([`MfaState`]) comes from the request's first
//! statement, so a role that starts requiring a second factor holds its users on
//! their very next request. The route table declares which stages a route admits
//! and whether it needs a recent step-up; the guard enforces both.

pub mod flow;
pub mod handlers;
pub mod passkeys;
pub mod schema;
pub mod store;
pub mod totp;

use std::time::Duration;

use time::OffsetDateTime;

/// Where a session stands with its second factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The password was right; the second factor is outstanding. Such a
    /// session reaches only the second-factor routes (and logout).
    Pending,
    /// The user's roles require a factor they lack: only `/me/mfa` and logout.
    Enrolment,
    /// Everything the user's grants allow.
    Full,
}

/// What the request's first statement said about the session's second factor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfaState {
    pub stage: Stage,
    /// The user's confirmed methods (`totp`, `webauthn`).
    pub methods: Vec<String>,
    /// The strictest factor the user's current roles require: `any`, `totp`
    /// (TOTP or a passkey) or `fido2` (a passkey only).
    pub required: Option<String>,
    /// The session's last second-factor verification.
    pub verified_at: Option<OffsetDateTime>,
}

impl MfaState {
    pub fn new(
        pending: bool,
        methods: Vec<String>,
        required: Option<String>,
        verified_at: Option<OffsetDateTime>,
    ) -> MfaState {
        let compliant = compliant(required.as_deref(), &methods);
        let stage = if pending {
            Stage::Pending
        } else if !compliant {
            Stage::Enrolment
        } else {
            Stage::Full
        };
        MfaState { stage, methods, required, verified_at }
    }

    /// Whether the user's factors satisfy what their roles require.
    pub fn compliant(&self) -> bool {
        compliant(self.required.as_deref(), &self.methods)
    }

    pub fn enabled(&self) -> bool {
        !self.methods.is_empty()
    }

    /// Whether a sensitive action may go ahead at `now`: users without a factor
    /// have nothing to step up with; others need a verification within `window`.
    pub fn stepped_up(&self, now: OffsetDateTime, window: Duration) -> bool {
        !self.enabled() || self.verified_at.is_some_and(|at| at <= now && now - at <= window)
    }
}

/// Whether `methods` satisfy a requirement of `required`.
pub fn compliant(required: Option<&str>, methods: &[String]) -> bool {
    let has = |m: &str| methods.iter().any(|x| x == m);
    match required {
        None => true,
        Some("fido2") => has("webauthn"),
        Some(_) => has("totp") || has("webauthn"),
    }
}

/// The methods a login's second step offers for `methods` (recovery codes
/// always, once any factor is enrolled).
pub fn second_step_methods(methods: &[&str]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    if methods.contains(&"totp") {
        out.push("totp");
    }
    if methods.contains(&"webauthn") {
        out.push("webauthn");
    }
    out.push("recovery");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn methods(m: &[&str]) -> Vec<String> {
        m.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn fido2_counts_only_a_passkey_and_totp_counts_either() {
        assert!(compliant(None, &[]));
        assert!(!compliant(Some("any"), &[]));
        assert!(compliant(Some("any"), &methods(&["totp"])));
        assert!(compliant(Some("totp"), &methods(&["webauthn"])));
        assert!(!compliant(Some("fido2"), &methods(&["totp"])));
        assert!(compliant(Some("fido2"), &methods(&["totp", "webauthn"])));
    }

    #[test]
    fn a_step_up_counts_for_its_window_and_not_after() {
        let at = OffsetDateTime::from_unix_timestamp(1_000_000).unwrap();
        let window = Duration::from_secs(600);
        let state = MfaState::new(false, methods(&["totp"]), None, Some(at));
        assert!(state.stepped_up(at + Duration::from_secs(600), window));
        assert!(!state.stepped_up(at + Duration::from_secs(601), window));
        assert!(!MfaState::new(false, methods(&["totp"]), None, None).stepped_up(at, window));
        assert!(MfaState::new(false, Vec::new(), None, None).stepped_up(at, window), "no factor, nothing to step up");
    }

    #[test]
    fn pending_wins_over_enrolment() {
        assert_eq!(MfaState::new(true, Vec::new(), Some("fido2".into()), None).stage, Stage::Pending);
        assert_eq!(MfaState::new(false, methods(&["totp"]), Some("fido2".into()), None).stage, Stage::Enrolment);
        assert_eq!(MfaState::new(false, methods(&["totp"]), Some("totp".into()), None).stage, Stage::Full);
    }
}
