//! FortiFile: a secure document-sharing server.
//!
//! See ARCHITECTURE.md for the module map and the path of a request.

pub mod admin;
pub mod app;
pub mod approvals;
pub mod audit;
pub mod auth;
pub mod authz;
pub mod cli;
pub mod clock;
pub mod config;
pub mod db;
pub mod directory;
pub mod files;
pub mod http;
pub mod incidents;
pub mod jobs;
pub mod keyfile;
pub mod openapi;
pub mod storage;
pub mod telemetry;
pub mod web;
