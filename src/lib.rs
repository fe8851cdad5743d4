//! dbctl as a library: the binary is a thin shell over `commands::run`.

pub mod apply;
pub mod aws;
pub mod backup;
pub mod cli;
pub mod commands;
pub mod config;
pub mod diag;
pub mod diff;
pub mod engine;
pub mod fmt;
pub mod graph;
pub mod migrate;
pub mod model;
pub mod plan;
pub mod rds;
pub mod reach;
pub mod router;
pub mod secrets;
pub mod state;
