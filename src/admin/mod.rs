//! Administrators' pages: the security dashboard (`logs`), incident tracking
//! (`incidents`), and people and roles (`people`). Each is declared with its permission in
//! `http::routes` and uses the same capability code as the JSON API.

pub mod incidents;
pub mod logs;
pub mod people;
