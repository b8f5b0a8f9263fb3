//! Pointflow: credits loyalty points in bulk, exactly once.
//!
//! The library is layered; each folder depends only on those above it:
//!
//! - [`domain`]: the rules, pure and without I/O: accruals, jobs, lots,
//!   uses, reversals, history entries, validation, packing, queue messages.
//! - [`ports`]: small traits the services speak through, one per capability,
//!   in domain types only.
//! - [`services`]: the HTTP API, the worker, the file import, job cancel,
//!   the DLQ tools and history paging, written against the ports.
//! - [`adapters`]: the ports' implementations, one folder per backend
//!   (AWS behind feature `aws`, SQLite behind `sqlite`, in memory behind
//!   `testkit`), and [`backend`] wires each backend's set of ports.
//!
//! [`flaws`] holds the deliberate defects the simulation switches on to
//! show its checks catch them: a constant `false` without feature `testkit`.
//!
//! Function crates (`functions/*`) only translate Lambda events into calls
//! on [`services`] and back. `docs/ARCHITECTURE.md` has the whole map.

pub mod adapters;
pub mod backend;
#[cfg(feature = "aws")]
pub mod config;
pub mod domain;
pub mod flaws;
pub mod ports;
pub mod services;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;
