//! Lots: the parts of a balance that share when their points become
//! available and when they expire (docs/ledger-model.md). Whether a lot is
//! pending, available or expired is computed from the time, never moved by a
//! scheduled job, so two million scheduled accruals become available at
//! their time with no write at all.

use serde::Serialize;
use time::OffsetDateTime;

/// When a lot's points may be used: from `from` (unix seconds; 0 = at once)
/// until `until` (unix seconds, exclusive; `None` = never expires).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LotKey {
    pub from: i64,
    pub until: Option<i64>,
}

/// Where a lot stands at some time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LotState {
    Pending,
    Available,
    Expired,
}

impl LotKey {
    /// Points with neither a start nor an expiry: every balance's main lot.
    pub const PLAIN: LotKey = LotKey { from: 0, until: None };

    /// The lot of points applied at `apply_at` (at once if `None`) that
    /// expire at `expires_at` (never if `None`), to the second. Accruals
    /// arrive with their times already rounded by [`lot_times`], so lots
    /// number about one per day; a lot stored before that rounding keeps
    /// its exact key, which this still names.
    pub fn new(apply_at: Option<OffsetDateTime>, expires_at: Option<OffsetDateTime>) -> Self {
        LotKey {
            from: apply_at.map_or(0, |t| t.unix_timestamp().max(0)),
            until: expires_at.map(|t| t.unix_timestamp()),
        }
    }

    pub fn is_plain(self) -> bool {
        self == Self::PLAIN
    }

    pub fn state_at(self, now: OffsetDateTime) -> LotState {
        let now = now.unix_timestamp();
        if self.until.is_some_and(|until| until <= now) {
            LotState::Expired
        } else if self.from > now {
            LotState::Pending
        } else {
            LotState::Available
        }
    }

    /// The attribute (DynamoDB) or key (SQLite) naming a non-plain lot:
    /// `L#<from>#<until or ->`.
    pub fn attribute(self) -> String {
        match self.until {
            Some(until) => format!("L#{}#{until}", self.from),
            None => format!("L#{}#-", self.from),
        }
    }

    /// The lot an [`LotKey::attribute`] names.
    pub fn from_attribute(name: &str) -> Option<Self> {
        let rest = name.strip_prefix("L#")?;
        let (from, until) = rest.split_once('#')?;
        Some(LotKey {
            from: from.parse().ok()?,
            until: if until == "-" { None } else { Some(until.parse().ok()?) },
        })
    }

    /// The order uses consume lots in: soonest expiry first, never-expiring
    /// last, then earliest start.
    fn use_order(self) -> (i64, i64) {
        (self.until.unwrap_or(i64::MAX), self.from)
    }
}

/// Granularities lot times are rounded up to, coarsest first: a day, then
/// an hour (when a day would leave no time between start and expiry).
const LOT_GRANULARITIES: [i64; 2] = [86_400, 3_600];

/// The times an accrual's points are credited with, in UTC: `apply_at` and
/// `expires_at` rounded **up** to the next midnight of the offset they were
/// written in (unchanged when they are one), so one member's lots number
/// about one per day instead of one per second, and a campaign written as
/// `2026-12-01T00:00:00+09:00` keeps its time. Up on both ends, so points
/// never become available earlier than promised and never expire earlier
/// than promised (they last until the end of that day). When both fall on the
/// same day, so that rounding to the day would leave no time between them,
/// they are rounded up to the hour instead, and kept exact if that leaves
/// none either. `apply_at` must be earlier than `expires_at`
/// ([`crate::domain::validation::check_lot_times`]).
pub fn lot_times(
    apply_at: Option<OffsetDateTime>,
    expires_at: Option<OffsetDateTime>,
) -> (Option<OffsetDateTime>, Option<OffsetDateTime>) {
    let utc = |t: Option<OffsetDateTime>| t.map(|t| t.to_offset(time::UtcOffset::UTC));
    for step in LOT_GRANULARITIES {
        // `None` when a time is past the last representable one: keep what
        // was asked.
        let rounded = |t: Option<OffsetDateTime>| match t {
            Some(t) => round_up(t, step).map(Some),
            None => Some(None),
        };
        let (Some(from), Some(until)) = (rounded(apply_at), rounded(expires_at)) else {
            break;
        };
        let empty = matches!((from, until), (Some(f), Some(u)) if u <= f);
        if !empty {
            return (from, until);
        }
    }
    (utc(apply_at), utc(expires_at))
}

/// `t` rounded up to a multiple of `step` seconds of its own offset's clock,
/// in UTC; `None` past the last representable time.
fn round_up(t: OffsetDateTime, step: i64) -> Option<OffsetDateTime> {
    let offset = i64::from(t.offset().whole_seconds());
    let local = t.unix_timestamp().checked_add(offset)?;
    let whole = local.rem_euclid(step) == 0 && t.nanosecond() == 0;
    let rounded = if whole {
        local
    } else {
        local.div_euclid(step).checked_add(1)?.checked_mul(step)?
    };
    OffsetDateTime::from_unix_timestamp(rounded.checked_sub(offset)?).ok()
}

/// Points held in one lot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lot {
    pub key: LotKey,
    pub amount: u64,
}

/// A member's balance of one point type as stored: its lots and lifetime
/// counters. What is available, pending or expired depends on the time
/// ([`BalanceSheet::view`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BalanceSheet {
    pub point_type: String,
    /// Lots holding points (the plain lot included), in key order.
    pub lots: Vec<Lot>,
    /// Points ever credited, pending ones included.
    pub earned: u64,
    /// Points ever deducted by uses.
    pub used: u64,
    /// Points of expired lots that a use's write pruned from `lots`
    /// ([`UsePlan::prunes`]): still counted as expired, no longer a lot.
    pub expired: u64,
}

/// How far ahead "expiring soon" looks.
pub const EXPIRING_SOON: time::Duration = time::Duration::days(30);

/// A balance at one time, as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BalanceView {
    pub available: u64,
    pub pending: u64,
    /// Of `available`, points that expire within [`EXPIRING_SOON`].
    pub expiring_soon: u64,
    /// Points that expired unused.
    pub expired: u64,
    /// Points credited and available by now (pending ones not yet).
    pub lifetime_earned: u64,
    pub lifetime_used: u64,
}

impl BalanceSheet {
    fn sum(&self, now: OffsetDateTime, state: LotState) -> u64 {
        self.lots
            .iter()
            .filter(|lot| lot.key.state_at(now) == state)
            .map(|lot| lot.amount)
            .sum()
    }

    pub fn available(&self, now: OffsetDateTime) -> u64 {
        self.sum(now, LotState::Available)
    }

    pub fn view(&self, now: OffsetDateTime) -> BalanceView {
        let soon = (now + EXPIRING_SOON).unix_timestamp();
        let pending = self.sum(now, LotState::Pending);
        BalanceView {
            available: self.available(now),
            pending,
            expiring_soon: self
                .lots
                .iter()
                .filter(|lot| lot.key.state_at(now) == LotState::Available)
                .filter(|lot| lot.key.until.is_some_and(|until| until <= soon))
                .map(|lot| lot.amount)
                .sum(),
            expired: self.sum(now, LotState::Expired) + self.expired,
            lifetime_earned: self.earned.saturating_sub(pending),
            lifetime_used: self.used,
        }
    }

    /// What a use of `amount` takes from which lot at `now`: available lots,
    /// soonest expiry first, at most [`MAX_USE_LOTS`] of them (one use is
    /// one conditional write, and its expressions must stay within
    /// DynamoDB's limits).
    pub fn plan_use(&self, amount: u64, now: OffsetDateTime) -> Result<UsePlan, UseShortfall> {
        let mut available: Vec<&Lot> = self
            .lots
            .iter()
            .filter(|lot| lot.amount > 0 && lot.key.state_at(now) == LotState::Available)
            .collect();
        available.sort_by_key(|lot| lot.key.use_order());
        let total: u64 = available.iter().map(|lot| lot.amount).sum();
        if total < amount {
            return Err(UseShortfall::Insufficient { available: total });
        }
        let mut left = amount;
        let mut plan = UsePlan::default();
        for lot in available {
            if left == 0 {
                break;
            }
            if plan.takes.len() == MAX_USE_LOTS {
                return Err(UseShortfall::TooManyLots { at_most: amount - left });
            }
            let take = lot.amount.min(left);
            plan.takes.push(Lot {
                key: lot.key,
                amount: take,
            });
            plan.last_empties = take == lot.amount;
            left -= take;
        }
        plan.prunes = self.expired_lots(now);
        Ok(plan)
    }

    /// The expired lots still holding points at `now`, soonest expiry first,
    /// at most [`MAX_PRUNE_LOTS`]: what a use's write prunes.
    pub fn expired_lots(&self, now: OffsetDateTime) -> Vec<Lot> {
        let mut expired: Vec<Lot> = self
            .lots
            .iter()
            .filter(|lot| lot.amount > 0 && lot.key.state_at(now) == LotState::Expired)
            .copied()
            .collect();
        expired.sort_by_key(|lot| lot.key.use_order());
        expired.truncate(MAX_PRUNE_LOTS);
        expired
    }
}

/// At most this many lots one use takes points from: its write carries a
/// condition and an action per lot, and DynamoDB allows 300 operators and
/// 4 KB per expression ([`crate::domain::transaction_plan::use_expressions`]
/// stays far below with 50; docs/capacity-model.md).
pub const MAX_USE_LOTS: usize = 50;

/// At most this many expired lots one use prunes in its write: each is one
/// more condition and removal in its balance update and one more history
/// entry in its transaction, so with [`MAX_USE_LOTS`] the expressions and
/// the transaction stay within DynamoDB's limits
/// ([`crate::domain::transaction_plan::use_expressions`]). Lots expire at
/// most one a day, so uses catch up with any backlog.
pub const MAX_PRUNE_LOTS: usize = 25;

/// What a use takes, lot by lot.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UsePlan {
    /// Points taken per lot, in the order taken. Every lot but the last is
    /// taken whole.
    pub takes: Vec<Lot>,
    /// Whether the last lot is taken whole too.
    pub last_empties: bool,
    /// Expired lots the same write removes, moving what they hold to the
    /// balance's `expired` counter, each under the condition that it holds
    /// exactly that, with an expiry history entry each
    /// ([`BalanceSheet::expired_lots`]). Nothing a use takes.
    pub prunes: Vec<Lot>,
}

impl UsePlan {
    /// Whether take `index` leaves its lot empty, so the store removes the
    /// lot in the same write instead of keeping a zero.
    pub fn empties(&self, index: usize) -> bool {
        index + 1 < self.takes.len() || (index + 1 == self.takes.len() && self.last_empties)
    }
}

/// Why a use cannot be applied as asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseShortfall {
    /// The available lots hold only `available` points.
    Insufficient { available: u64 },
    /// Enough points, but spread over more than [`MAX_USE_LOTS`] lots: one use
    /// can take at most `at_most` points now (the rest in another use).
    TooManyLots { at_most: u64 },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(seconds).unwrap()
    }

    fn lot(from: i64, until: Option<i64>, amount: u64) -> Lot {
        Lot {
            key: LotKey { from, until },
            amount,
        }
    }

    #[test]
    fn attributes_round_trip() {
        for key in [
            LotKey::PLAIN,
            LotKey {
                from: 5,
                until: Some(9),
            },
            LotKey {
                from: 0,
                until: Some(-3),
            },
        ] {
            assert_eq!(LotKey::from_attribute(&key.attribute()), Some(key));
        }
        assert_eq!(LotKey::from_attribute("balance"), None);
        assert_eq!(LotKey::from_attribute("L#x#-"), None);
    }

    #[test]
    fn a_lot_is_pending_then_available_then_expired() {
        let key = LotKey::new(Some(at(100)), Some(at(200)));
        assert_eq!(key.state_at(at(99)), LotState::Pending);
        assert_eq!(key.state_at(at(100)), LotState::Available);
        assert_eq!(key.state_at(at(199)), LotState::Available);
        assert_eq!(key.state_at(at(200)), LotState::Expired);
        assert!(LotKey::new(None, None).is_plain());
    }

    #[test]
    fn the_view_splits_by_time() {
        let day = 86_400;
        let sheet = BalanceSheet {
            point_type: "PT".into(),
            lots: vec![
                lot(0, None, 100),
                lot(0, Some(10 * day), 30),
                lot(0, Some(100 * day), 20),
                lot(5 * day, None, 7),
                lot(0, Some(day), 4),
            ],
            earned: 161,
            used: 0,
            expired: 0,
        };
        let view = sheet.view(at(2 * day));
        assert_eq!(
            view,
            BalanceView {
                available: 150,
                pending: 7,
                expiring_soon: 30,
                expired: 4,
                lifetime_earned: 154,
                lifetime_used: 0,
            }
        );
        assert_eq!(sheet.view(at(6 * day)).available, 157);
    }

    #[test]
    fn uses_take_the_soonest_expiring_points_first() {
        let sheet = BalanceSheet {
            point_type: "PT".into(),
            lots: vec![
                lot(0, None, 100),
                lot(0, Some(500), 30),
                lot(0, Some(300), 20),
                lot(400, Some(450), 50),
            ],
            earned: 200,
            used: 0,
            expired: 0,
        };
        // At 350 the lot ending at 300 has expired and the one from 400 is pending.
        assert_eq!(
            sheet.plan_use(60, at(350)).unwrap().takes,
            vec![lot(0, Some(500), 30), lot(0, None, 30)]
        );
        let plan = sheet.plan_use(60, at(100)).unwrap();
        assert_eq!(
            plan.takes,
            vec![lot(0, Some(300), 20), lot(0, Some(500), 30), lot(0, None, 10)]
        );
        assert_eq!((plan.empties(0), plan.empties(1), plan.empties(2)), (true, true, false));
        assert!(sheet.plan_use(50, at(100)).unwrap().last_empties);
        assert_eq!(
            sheet.plan_use(131, at(350)),
            Err(UseShortfall::Insufficient { available: 130 })
        );
    }

    /// A use prunes the expired lots that still hold points, soonest first
    /// and at most MAX_PRUNE_LOTS, and never takes from them; pruned points
    /// still count as expired.
    #[test]
    fn a_use_prunes_expired_lots_it_never_takes_from() {
        let mut lots: Vec<Lot> = (1..=(MAX_PRUNE_LOTS as i64 + 3)).map(|i| lot(0, Some(i), 2)).collect();
        lots.push(lot(0, Some(1_000), 5));
        lots.push(lot(0, None, 4));
        lots.push(lot(0, Some(0), 0));
        let sheet = BalanceSheet {
            point_type: "PT".into(),
            earned: 2 * (MAX_PRUNE_LOTS as u64 + 3) + 9,
            lots,
            used: 0,
            expired: 0,
        };
        let plan = sheet.plan_use(6, at(500)).unwrap();
        assert_eq!(plan.takes, vec![lot(0, Some(1_000), 5), lot(0, None, 1)]);
        assert_eq!(plan.prunes.len(), MAX_PRUNE_LOTS);
        assert_eq!(plan.prunes[0], lot(0, Some(1), 2));
        assert_eq!(plan.prunes[MAX_PRUNE_LOTS - 1], lot(0, Some(MAX_PRUNE_LOTS as i64), 2));
        assert_eq!(
            sheet.plan_use(10, at(500)),
            Err(UseShortfall::Insufficient { available: 9 })
        );
        assert!(sheet.plan_use(1, at(0)).unwrap().prunes.is_empty());
        let pruned = BalanceSheet {
            lots: vec![lot(0, None, 4)],
            expired: 70,
            ..sheet
        };
        assert_eq!(pruned.view(at(500)).expired, 70);
    }

    #[test]
    fn lot_times_round_up_to_the_day_then_the_hour() {
        let day = 86_400;
        let secs = |t: Option<OffsetDateTime>| t.map(|t| t.unix_timestamp());
        // Both up to the next UTC midnight; a midnight stays.
        let (from, until) = lot_times(Some(at(10 * day + 5)), Some(at(400 * day + 52_330)));
        assert_eq!((secs(from), secs(until)), (Some(11 * day), Some(401 * day)));
        assert_eq!(lot_times(Some(at(10 * day)), None), (Some(at(10 * day)), None));
        // Never earlier than asked, on either end.
        let (_, until) = lot_times(None, Some(at(3 * day + 1)));
        assert_eq!(secs(until), Some(4 * day));
        // The same day: to the hour, then exact.
        let (from, until) = lot_times(Some(at(day + 3_000)), Some(at(day + 30_000)));
        assert_eq!((secs(from), secs(until)), (Some(day + 3_600), Some(day + 32_400)));
        let (from, until) = lot_times(Some(at(day + 100)), Some(at(day + 200)));
        assert_eq!((secs(from), secs(until)), (Some(day + 100), Some(day + 200)));
        assert_eq!(lot_times(None, None), (None, None));
        // In the offset written: a Tokyo midnight stays, a Tokyo afternoon
        // goes to the next Tokyo midnight (15:00 UTC).
        let tokyo = time::UtcOffset::from_hms(9, 0, 0).unwrap();
        let (from, until) = lot_times(
            Some(at(10 * day - 9 * 3_600).to_offset(tokyo)),
            Some(at(20 * day + 5 * 3_600).to_offset(tokyo)),
        );
        assert_eq!(
            (secs(from), secs(until)),
            (Some(10 * day - 9 * 3_600), Some(21 * day - 9 * 3_600))
        );
        assert_eq!(from.unwrap().offset(), time::UtcOffset::UTC);
    }

    /// 20,000 purchases over 400 days, each expiring 12 months after it to
    /// the second: the balance holds one lot per day, not one per purchase.
    #[test]
    fn a_year_of_expiring_purchases_makes_a_lot_per_day() {
        let day = 86_400;
        let year = 365 * day;
        let keys: std::collections::BTreeSet<LotKey> = (0..20_000i64)
            .map(|i| {
                let bought = 1_700_000_000 + i * (400 * day / 20_000) + i % 7;
                let (from, until) = lot_times(None, Some(at(bought + year)));
                LotKey::new(from, until)
            })
            .collect();
        assert!(keys.len() <= 401, "{} lots", keys.len());
    }

    #[test]
    fn a_use_takes_at_most_the_lot_limit() {
        let lots: Vec<Lot> = (1..=(MAX_USE_LOTS as i64 + 10))
            .map(|i| lot(0, Some(1_000 + i), 10))
            .collect();
        let sheet = BalanceSheet {
            point_type: "PT".into(),
            earned: 10 * lots.len() as u64,
            lots,
            used: 0,
            expired: 0,
        };
        let plan = sheet.plan_use(10 * MAX_USE_LOTS as u64, at(0)).unwrap();
        assert_eq!(plan.takes.len(), MAX_USE_LOTS);
        assert!(plan.empties(MAX_USE_LOTS - 1));
        assert_eq!(
            sheet.plan_use(10 * MAX_USE_LOTS as u64 + 1, at(0)),
            Err(UseShortfall::TooManyLots {
                at_most: 10 * MAX_USE_LOTS as u64
            })
        );
        assert_eq!(
            sheet.plan_use(10_000, at(0)),
            Err(UseShortfall::Insufficient { available: 600 })
        );
    }
}
