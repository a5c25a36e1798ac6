//! Administrators' pages: the security dashboard (`logs`), incident tracking
//! (`incidents`), people and roles (`people`), and dual control (`approvals`). Each is declared with its permission in
//! `http::routes` and uses the same capability code as the JSON API.

pub mod approvals;
pub mod incidents;
pub mod integrity;
pub mod logs;
pub mod people;
