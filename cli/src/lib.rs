//! The `pointflow` command's library: the local runner (the HTTP API and SQS
//! pollers in one process over the embedded or AWS backend) and its demo.

pub mod backend;
pub mod demo;
pub mod poller;
pub mod runner;
pub mod server;
pub mod settings;
