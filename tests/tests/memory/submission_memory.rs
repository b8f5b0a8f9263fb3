//! A full request body (50,000 accruals, the API's default limit) is read
//! straight into validated accruals: its items are never all held as JSON
//! values, which took several times the accruals' own memory and made the
//! local runner's peak grow with every request in flight.

use std::cell::Cell;

use pointflow::services::api::{parse_submission, Prepared};
use pointflow_cli::demo::Campaign;

use crate::counting::{self, THREAD_LIVE as LIVE, THREAD_PEAK as PEAK};

/// Heap bytes at most, per byte of the body, that reading it may take at
/// its peak, the validated accruals included. Measured on the demo's
/// request: 12.4 per byte when the items were first parsed into a list of
/// JSON values, 3.6 once read straight into accruals.
const ALLOWED_PER_BODY_BYTE: usize = 5;

#[test]
fn a_full_request_is_read_without_holding_its_items_as_json() {
    let _heap = counting::shared();
    let campaign = Campaign {
        members: 25_000,
        point_types: 2,
        repeats: 1,
        seed: 7,
        chunk: 50_000,
    };
    let body = campaign.body(0).into_bytes();
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let prepared = parse_submission(&body, Some("memory-test-1"), 50_000);
    let peak = (PEAK.with(Cell::get) - start).max(0) as usize;
    let Ok(Prepared::Accruals(prepared)) = prepared else {
        panic!("the demo's request is valid: {prepared:?}")
    };
    assert_eq!(prepared.accruals.len(), 50_000);
    println!(
        "{} body bytes, {peak} heap bytes at peak ({:.1} per byte)",
        body.len(),
        peak as f64 / body.len() as f64
    );
    assert!(
        peak <= ALLOWED_PER_BODY_BYTE * body.len(),
        "{} body bytes took {peak} heap bytes at peak (allowed {})",
        body.len(),
        ALLOWED_PER_BODY_BYTE * body.len()
    );
}
