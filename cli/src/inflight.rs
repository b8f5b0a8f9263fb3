//! How much request body the local server works on at once.
//!
//! A request holds far more memory than its body while it is handled: a
//! 50,000-item submission of ~4.5 MB becomes validated accruals, packed
//! messages and their queued copies, until it is answered. Requests that
//! arrive together all wait for SQLite's single writer, so without a bound
//! the server's memory grows with the clients' parallelism instead of
//! with its own configuration. [`BodyBudget`] admits a request only once
//! its body fits beside the bodies already in flight, before the body is
//! read; waiting requests hold nothing but their headers.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Request body bytes the local server works on at once: two of the
/// demo's 50,000-item requests (~3.9 MB each), or one at API Gateway's
/// 10 MB payload limit. On the default demo (four requests sent at once)
/// it took 25–50 MiB off the peak RSS, throughput within the noise of a
/// loaded machine; 16 MiB, which admits all four, gave that back
/// (docs/performance.md).
pub const DEFAULT_BODY_BYTES_IN_FLIGHT: usize = 10 * 1024 * 1024;

/// Permits count KiB: a semaphore counts in `u32`.
const UNIT: usize = 1024;

/// Admits requests while their bodies, together, stay within a cap.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    permits: Arc<Semaphore>,
    /// The cap, in permits.
    cap: u32,
}

impl BodyBudget {
    /// At most `cap_bytes` of bodies at once (at least 1 KiB).
    pub fn new(cap_bytes: usize) -> Self {
        let cap = u32::try_from(cap_bytes.div_ceil(UNIT)).unwrap_or(u32::MAX).max(1);
        BodyBudget {
            permits: Arc::new(Semaphore::new(cap as usize)),
            cap,
        }
    }

    /// The cap, in bytes.
    pub fn cap_bytes(&self) -> usize {
        self.cap as usize * UNIT
    }

    /// Waits until a body of `len` bytes fits beside those in flight, and
    /// holds its room until the returned permit drops. A body over the cap
    /// takes the whole cap: it waits until nothing else is in flight, and
    /// is then admitted alone. Requests are admitted in arrival order, so
    /// a large body is not overtaken forever by small ones.
    pub async fn admit(&self, len: usize) -> BodyPermit {
        let wanted = u32::try_from(len.div_ceil(UNIT)).unwrap_or(u32::MAX).min(self.cap);
        // The semaphore is never closed, so acquiring cannot fail; if it
        // ever did, the request would go ahead unbounded rather than fail.
        BodyPermit(Arc::clone(&self.permits).acquire_many_owned(wanted).await.ok())
    }

    /// Bytes of room left now.
    pub fn available_bytes(&self) -> usize {
        self.permits.available_permits() * UNIT
    }
}

/// Room held for one request's body; released when dropped.
#[derive(Debug)]
pub struct BodyPermit(Option<OwnedSemaphorePermit>);

impl BodyPermit {
    /// Bytes of room this permit holds.
    pub fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |p| p.num_permits() * UNIT)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use futures::FutureExt;

    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn bodies_are_admitted_while_they_fit_and_wait_in_order_otherwise() {
        let budget = BodyBudget::new(10 * MIB);
        let first = budget.admit(4 * MIB).now_or_never().expect("fits");
        let second = budget.admit(4 * MIB).now_or_never().expect("fits beside the first");
        // 8 MiB held: a third of 4 MiB must wait, and so must a small one
        // behind it (arrival order).
        let mut third = Box::pin(budget.admit(4 * MIB));
        assert!((&mut third).now_or_never().is_none());
        let mut small = Box::pin(budget.admit(1));
        assert!(
            (&mut small).now_or_never().is_none(),
            "a later request overtook a waiting one"
        );
        drop(first);
        let third = (&mut third).now_or_never().expect("room freed");
        let small = (&mut small).now_or_never().expect("room left after the third");
        assert_eq!(budget.available_bytes(), 10 * MIB - 8 * MIB - UNIT);
        drop((second, third, small));
        assert_eq!(budget.available_bytes(), 10 * MIB);
    }

    #[test]
    fn a_body_over_the_cap_is_admitted_alone_and_an_empty_one_at_once() {
        let budget = BodyBudget::new(10 * MIB);
        let small = budget.admit(1).now_or_never().expect("fits");
        let mut huge = Box::pin(budget.admit(50 * MIB));
        assert!((&mut huge).now_or_never().is_none(), "waits for the small one");
        drop(small);
        let huge = (&mut huge).now_or_never().expect("admitted once alone");
        assert_eq!(huge.bytes(), 10 * MIB);
        // A GET has no body: it never waits, even behind a full budget.
        let get = budget.admit(0).now_or_never().expect("no body, no wait");
        assert_eq!(get.bytes(), 0);
    }

    /// Many requests contend at once (each yields while it holds its room,
    /// so the others run in between): the bodies admitted together never
    /// exceed the cap, and several are in flight at a time.
    #[tokio::test]
    async fn concurrent_requests_never_hold_more_than_the_cap() {
        let cap = 10 * MIB;
        let budget = BodyBudget::new(cap);
        let held = Rc::new(Cell::new(0usize));
        let peak = Rc::new(Cell::new(0usize));
        let most_at_once = Rc::new(Cell::new(0usize));
        let at_once = Rc::new(Cell::new(0usize));
        let local = tokio::task::LocalSet::new();
        for i in 0..64usize {
            let (budget, held, peak, at_once, most_at_once) = (
                budget.clone(),
                held.clone(),
                peak.clone(),
                at_once.clone(),
                most_at_once.clone(),
            );
            // Sizes from 1 KiB to 6 MiB, some over half the cap.
            let len = 1 + (i * 977 * 1024) % (6 * MIB);
            local.spawn_local(async move {
                let _permit = budget.admit(len).await;
                held.set(held.get() + len);
                peak.set(peak.get().max(held.get()));
                at_once.set(at_once.get() + 1);
                most_at_once.set(most_at_once.get().max(at_once.get()));
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                at_once.set(at_once.get() - 1);
                held.set(held.get() - len);
            });
        }
        local.await;
        assert!(peak.get() <= cap, "{} bytes in flight, cap {cap}", peak.get());
        assert!(most_at_once.get() >= 2, "the requests never overlapped");
        assert_eq!(budget.available_bytes(), cap);
    }
}
