//! The ports: small traits that speak the domain, one file per port. The
//! services only see these; each backend (AWS, SQLite, in memory)
//! implements them and passes the same contract suite
//! (`tests/src/contract.rs`).

pub mod error;
pub mod forward;
pub mod jobs;
pub mod ledger;
pub mod objects;
pub mod queue;
pub mod uploads;

pub use error::{log_form, BackendFailure, BoxError, QueueError, StoreError};
pub use jobs::{CreateJob, JobStore};
pub use ledger::{ApplyOutcome, CreditTally, Credits, Debits, Ledger, LedgerReads, LedgerRepairs};
pub use queue::{ReceivedMessage, WorkQueue};
