//! dbctl as a library: the binary is a thin shell over `commands::run`.

pub mod cli;
pub mod commands;
pub mod config;
pub mod diag;
pub mod fmt;
pub mod graph;
pub mod model;
