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
    /// expire at `expires_at` (never if `None`), to the second.
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
            expired: self.sum(now, LotState::Expired),
            lifetime_earned: self.earned.saturating_sub(pending),
            lifetime_used: self.used,
        }
    }

    /// What a use of `amount` takes from which lot at `now`: available lots,
    /// soonest expiry first. `Err(available)` when they hold too little.
    pub fn plan_use(&self, amount: u64, now: OffsetDateTime) -> Result<Vec<Lot>, u64> {
        let mut available: Vec<&Lot> = self
            .lots
            .iter()
            .filter(|lot| lot.amount > 0 && lot.key.state_at(now) == LotState::Available)
            .collect();
        available.sort_by_key(|lot| lot.key.use_order());
        let total: u64 = available.iter().map(|lot| lot.amount).sum();
        if total < amount {
            return Err(total);
        }
        let mut left = amount;
        let mut plan = Vec::new();
        for lot in available {
            if left == 0 {
                break;
            }
            let take = lot.amount.min(left);
            plan.push(Lot {
                key: lot.key,
                amount: take,
            });
            left -= take;
        }
        Ok(plan)
    }
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
        };
        // At 350 the lot ending at 300 has expired and the one from 400 is pending.
        assert_eq!(
            sheet.plan_use(60, at(350)).unwrap(),
            vec![lot(0, Some(500), 30), lot(0, None, 30)]
        );
        assert_eq!(
            sheet.plan_use(60, at(100)).unwrap(),
            vec![lot(0, Some(300), 20), lot(0, Some(500), 30), lot(0, None, 10)]
        );
        assert_eq!(sheet.plan_use(131, at(350)), Err(130));
    }
}
