//! Authentication: passwords, sessions, and the register/login/logout flows.

pub mod account;
pub mod apikeys;
pub mod extractor;
pub mod handlers;
pub mod lockout;
pub mod mfa;
pub mod own;
pub mod password;
pub mod session;
pub mod throttle;
pub mod user;

pub use extractor::{Authenticated, Me};
