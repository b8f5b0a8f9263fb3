//! The `pointflow` command's library: the local runner (the HTTP API and SQS
//! pollers in one process over the embedded or AWS backend), its demo, the
//! CSV file import, the API client (`submit`, `status`, `wait`, `balance`)
//! and the store-side operator tool `reconcile`.
//!
//! The command line itself (clap arguments, output, exit statuses) is the
//! binary's, not this library's: `main.rs` dispatches to `commands/<area>.rs`,
//! which print through `render.rs`.

pub mod backend;
pub mod bench;
pub mod bench_e2e;
pub mod client;
pub mod console;
pub mod demo;
pub mod exposure;
pub mod import;
pub mod plan;
pub mod poller;
pub mod reconcile;
pub mod runner;
pub mod server;
pub mod settings;
pub mod stack;
#[cfg(test)]
mod template_checks;
