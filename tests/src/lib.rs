//! Shared pieces of Pointflow's integration tests: backends to run against
//! (in-memory, and the AWS adapters over the moto emulator), the port
//! contract suite every backend must pass, and helpers that drive the real
//! Lambda handlers.

pub mod backend;
pub mod contract;
pub mod lambda;
