//! The domain: what accruals, jobs, lots, uses, reversals and history
//! entries are, and the rules over them (validation, id derivation,
//! packing, the queue message). Pure: no I/O, no SDK types, no ports.

pub mod accrual;
pub mod accrual_ids;
pub mod audit;
pub mod capabilities;
pub mod capacity;
pub mod history;
pub mod job;
pub mod job_list;
pub mod limits;
pub mod lots;
pub mod message;
pub mod packing;
pub mod readers;
pub mod reconcile;
pub mod retention;
pub mod reversal;
pub mod row_rules;
pub mod strict_json;
pub mod submission;
pub mod text_encoding;
pub mod transaction_plan;
pub mod uploads;
pub mod uses;
pub mod validation;

/// The CSV reader under its earlier path.
pub use readers::csv as csv_rows;
/// The workbook reader under its earlier path.
#[cfg(feature = "xlsx")]
pub use readers::xlsx as xlsx_rows;

pub use accrual::*;
pub use job::*;
