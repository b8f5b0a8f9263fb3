//! DynamoDB adapter for the ledger ([`Credits`], [`Debits`],
//! [`LedgerReads`]) and [`JobStore`]: one table, keys `pk`/`sk`, and a
//! `history` index on `hist_pk`/`hist_sk`.
//!
//! | item            | pk                    | sk          | written by |
//! |-----------------|-----------------------|-------------|------------|
//! | ledger entry    | `ACCRUAL#<accrual_id>`| `ACCRUAL`   | worker, `attribute_not_exists(pk)` |
//! | use entry       | `USE#<use_id>`        | `USE`       | worker, `attribute_not_exists(pk)` |
//! | reversal entry  | `REVERSAL#<ACCRUAL\|USE>#<id>` | `REVERSAL` | cancel, with the entry's `reversed_at` |
//! | balance         | `MEMBER#<member_id>`  | `BALANCE#<point_type>` | worker, `ADD balance` |
//! | job             | `JOB#<job_id>`        | `JOB`       | ingest (create, with `list_pk`/`list_sk` for the `job_list` index), worker (`ADD` counts) |
//! | message marker  | `MSG#<job_id>#<seq>`  | `MSG`       | worker, `attribute_not_exists(pk)` |
//! | chunk marker    | `CHUNK#<job_id>#<index>` | `CHUNK`  | import, `attribute_not_exists(pk)` |
//!
//! One file per concern: `keys` builds every key, `items` maps items to
//! domain values, `transaction` is the one `TransactWriteItems` helper
//! (send, count, decode `CancellationReasons`, classify, back off) that
//! every transactional write goes through, `ledger` and `jobs` implement the
//! ports (`job_list` the listing of jobs), `schema` creates the table, `baseline` is the naive
//! single-write baseline (feature `testkit`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;

use crate::adapters::retry::Backoff;
use crate::domain::capacity::{WriteCost, WriteMeter, SMALL_WRITE_UNITS};
#[cfg(doc)]
use crate::ports::{Credits, Debits, JobStore, LedgerReads};

#[cfg(feature = "testkit")]
mod baseline;
mod errors;
mod items;
mod job_list;
mod jobs;
mod keys;
mod ledger;
mod reconcile;
mod schema;
#[cfg(test)]
mod sizes;
mod transaction;

pub use crate::domain::transaction_plan::MAX_TRANSACTION_ACTIONS;
pub use items::item_bytes;
pub use job_list::JOB_LIST_INDEX;
pub use schema::{create_table, HISTORY_INDEX, HISTORY_PROJECTION};

/// An item's attributes, as the SDK passes them.
type Item = HashMap<String, AttributeValue>;

/// The DynamoDB ledger and job store.
#[derive(Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
    backoff: Backoff,
    requests: AtomicU64,
    write_units: WriteMeter,
}

impl DynamoStore {
    /// A store on `table` through `client`, with the default backoff.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoStore {
            client,
            table: table.into(),
            backoff: Backoff::default(),
            requests: AtomicU64::new(0),
            write_units: WriteMeter::new(),
        }
    }

    /// Replaces the retry policy for throttling and transaction conflicts.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// DynamoDB requests made so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Counts one request.
    fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Write requests and units so far, units by DynamoDB's sizing rules
    /// ([`crate::domain::capacity`]); failed conditional writes included.
    pub fn write_cost(&self) -> WriteCost {
        self.write_units.cost()
    }

    /// Counts a small standard write of job tracking.
    fn count_small_write(&self) {
        self.count();
        self.write_units.charge_jobs(1, SMALL_WRITE_UNITS);
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }
}
