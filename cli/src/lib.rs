//! The `pointflow` command's library: the local runner (the HTTP API and SQS
//! pollers in one process over the embedded or AWS backend), its demo and
//! the CSV file import.

pub mod backend;
pub mod bench;
pub mod demo;
pub mod import;
pub mod poller;
pub mod runner;
pub mod server;
pub mod settings;
