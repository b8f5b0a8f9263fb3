//! Pointflow's shared library: the domain rules, the ingest and worker
//! services, the ports they speak through, and the adapters behind them.
//!
//! Function crates (`functions/*`) only translate Lambda events into calls on
//! [`ingest::IngestService`] and [`worker::Worker`] and back.

pub mod adapters;
pub mod api;
pub mod aws;
pub mod baseline;
pub mod cancel;
pub mod capacity;
pub mod config;
pub mod csv_rows;
pub mod dlq;
pub mod domain;
pub mod fuzzing;
pub mod history;
pub mod import;
pub mod ingest;
pub mod lots;
pub mod message;
pub mod metrics;
pub mod packing;
pub mod ports;
pub mod retry;
pub mod reversal;
pub mod simulation;
pub mod strict_json;
pub mod submission;
pub mod telemetry;
pub mod uses;
pub mod validation;
pub mod worker;
