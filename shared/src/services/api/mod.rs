//! The HTTP API: validate, collapse, pack, record the job, queue; answer
//! job, balance and history reads; apply single uses and reversals. It
//! never applies queued work itself; the worker does.
//!
//! - [`http`]: request, response and error shapes, independent of API
//!   Gateway's event types.
//! - [`routing`]: path and method to handler, and the body checks.
//! - [`handlers`]: one method per endpoint.
//! - [`body`]: reading request bodies strictly within a memory budget.
//! - [`views`]: the JSON bodies the API answers with.

pub mod body;
mod handlers;
pub mod http;
mod routing;
mod uploads;
pub mod views;

pub use body::{parse_cancel, parse_reversal, parse_submission, parse_use, Prepared, ITEM_BUDGET_BYTES};
pub use http::{ApiError, ApiRequest, ApiResponse};
pub use uploads::{UploadAnswer, UploadSettings};
pub use views::{rfc3339, Accepted, JobList, JobView};

use std::sync::Arc;

use crate::domain::limits::Ceilings;
use crate::domain::packing::PackingLimits;
use crate::ports::uploads::UploadSigner;
use crate::ports::{Debits, JobStore, Ledger, LedgerReads, WorkQueue};

/// Largest request body: a Lambda behind API Gateway receives at most 6 MB
/// (synchronous invoke payload), headers and envelope included.
pub const MAX_BODY_BYTES: usize = 6_000_000;
/// Default item limit. A typical item is about 100–120 bytes of JSON, so
/// 50,000 items is what 6 MB holds with some margin.
pub const DEFAULT_MAX_ITEMS: usize = 50_000;

/// Tunables of the ingest API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiSettings {
    pub max_items: usize,
    pub max_body_bytes: usize,
    pub packing: PackingLimits,
    /// Amount, points and accruals a job of accruals may reach.
    pub ceilings: Ceilings,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            max_items: DEFAULT_MAX_ITEMS,
            max_body_bytes: MAX_BODY_BYTES,
            packing: PackingLimits::default(),
            ceilings: Ceilings::default(),
        }
    }
}

/// The HTTP API over its ports: routes nine endpoints ([`routing`]) to
/// their handlers ([`handlers`]).
#[derive(Clone)]
pub struct ApiService {
    jobs: Arc<dyn JobStore>,
    /// Balances and history.
    reads: Arc<dyn LedgerReads>,
    /// Single uses and reversals. The API never credits: accruals reach the
    /// ledger only through the queue and the worker.
    debits: Arc<dyn Debits>,
    queue: Arc<dyn WorkQueue>,
    settings: ApiSettings,
    /// `POST /v1/uploads`, when the stack offers it (else that route is 404).
    uploads: Option<(Arc<dyn UploadSigner>, UploadSettings)>,
}

impl ApiService {
    pub fn new(
        jobs: Arc<dyn JobStore>,
        ledger: Arc<dyn Ledger>,
        queue: Arc<dyn WorkQueue>,
        settings: ApiSettings,
    ) -> Self {
        ApiService {
            jobs,
            reads: ledger.clone(),
            debits: ledger,
            queue,
            settings,
            uploads: None,
        }
    }

    /// Offers `POST /v1/uploads`, signing its PUTs with `signer`.
    pub fn with_uploads(mut self, signer: Arc<dyn UploadSigner>, settings: UploadSettings) -> Self {
        self.uploads = Some((signer, settings));
        self
    }
}
