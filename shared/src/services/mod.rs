//! The services: Pointflow's behaviour, written against the ports only.

pub mod api;
pub mod cancel;
pub mod dlq;
pub mod history;
pub mod import;
pub mod job_list;
pub mod reconcile;
pub mod worker;
