//! Reconciling a member's balances with the ledger (docs/operations.md,
//! "reconcile"): what each balance item must hold, recomputed from the
//! member's ledger entries alone, and where the stored item differs.
//!
//! The ledger is the record: every credit and use is an entry written in the
//! same atomic write as its balance change, and a reversal marks its entry.
//! So a balance item is a sum over the entries, and any difference between
//! the two is damage to the item (a write made outside the ports, a bug),
//! which `--repair` undoes by writing the sum.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::domain::history::{EntryKind, HistoryEntry};
use crate::domain::lots::{BalanceSheet, Lot, LotKey};
use crate::domain::MessageCounts;

/// A credited accrual as the ledger records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditEntry {
    pub accrual_id: String,
    pub point_type: String,
    pub amount: u64,
    /// The lot its points went to (its rounded `apply_at`/`expires_at`).
    pub lot: LotKey,
    /// Reversed since: its points left the lot again.
    pub reversed: bool,
}

/// An applied use as the ledger records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UseEntry {
    pub use_id: String,
    pub point_type: String,
    pub amount: u64,
    /// What it took from each lot.
    pub consumed: Vec<Lot>,
    /// Reversed since: what it took went back to the same lots.
    pub reversed: bool,
}

/// An expired lot a use pruned, as its expiry entry records it: the points
/// left the lot for the balance's `expired` count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiryEntry {
    pub point_type: String,
    pub lot: LotKey,
    pub amount: u64,
}

impl ExpiryEntry {
    /// The pruning a stored history entry records
    /// ([`crate::domain::history::pruned_expiry`]: kind `expiry`, id
    /// `<lot>@<use_id>`, a negative amount); `None` for any other entry.
    pub fn from_history(entry: &HistoryEntry) -> Option<Self> {
        if entry.kind != EntryKind::Expiry {
            return None;
        }
        let (lot, _use_id) = entry.id.split_once('@')?;
        Some(ExpiryEntry {
            point_type: entry.point_type.clone(),
            lot: LotKey::from_attribute(lot)?,
            amount: entry.amount.checked_neg().and_then(|a| u64::try_from(a).ok())?,
        })
    }
}

/// Every credit, use and pruned expiry of one member, in no particular order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberLedger {
    pub credits: Vec<CreditEntry>,
    pub uses: Vec<UseEntry>,
    pub expiries: Vec<ExpiryEntry>,
}

/// What part of a balance item a difference is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SheetField {
    /// The points a lot holds (a lot absent from the item holds 0).
    Lot(LotKey),
    /// Points ever credited (reversed credits excluded).
    Earned,
    /// Points ever used (reversed uses excluded).
    Used,
    /// Points of expired lots pruned by uses.
    Expired,
}

impl fmt::Display for SheetField {
    /// The name the DynamoDB item gives it: `balance` for the plain lot,
    /// `L#<from>#<until>` for another, `earned`, `used`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SheetField::Lot(key) if key.is_plain() => f.write_str("balance"),
            SheetField::Lot(key) => f.write_str(&key.attribute()),
            SheetField::Earned => f.write_str("earned"),
            SheetField::Used => f.write_str("used"),
            SheetField::Expired => f.write_str("expired"),
        }
    }
}

impl Serialize for SheetField {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One value of a balance item that is not what the ledger says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SheetDifference {
    pub point_type: String,
    pub field: SheetField,
    /// What the ledger says it must hold. Signed: a ledger whose entries
    /// take more out of a lot than went in is itself damaged, and is shown
    /// as it is rather than hidden by a clamp.
    pub expected: i128,
    pub stored: i128,
}

/// One balance item recomputed from the ledger, before it is known to be
/// writable: counts are signed, see [`SheetDifference::expected`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpectedSheet {
    pub point_type: String,
    /// Per lot; a lot every entry of which cancels out is present at 0.
    pub lots: BTreeMap<LotKey, i128>,
    pub earned: i128,
    pub used: i128,
    pub expired: i128,
}

impl ExpectedSheet {
    /// The sheet to write, or `None` if a count is negative or beyond
    /// `u64` (the ledger itself is damaged: nothing sensible to write).
    /// Lots at 0 are left out, as the stores remove spent lots.
    pub fn to_sheet(&self) -> Option<BalanceSheet> {
        let count = |value: i128| u64::try_from(value).ok();
        let mut lots = Vec::new();
        for (key, amount) in &self.lots {
            let amount = count(*amount)?;
            if amount > 0 {
                lots.push(Lot { key: *key, amount });
            }
        }
        Some(BalanceSheet {
            point_type: self.point_type.clone(),
            lots,
            earned: count(self.earned)?,
            used: count(self.used)?,
            expired: count(self.expired)?,
        })
    }
}

/// What each of the member's balance items must hold, by point type
/// (sorted), from the ledger alone: a credit not reversed adds its amount to
/// its lot and to `earned`; a use not reversed takes what it `consumed` from
/// each lot and adds its amount to `used`; a reversed one did both and then
/// undid them, so it counts for nothing; a pruned expiry takes its points
/// out of its lot and adds them to `expired`.
///
/// The one place the rule lives: a change to what a balance item holds is
/// added here and in [`compare_sheet`].
pub fn expected_sheets(ledger: &MemberLedger) -> Vec<ExpectedSheet> {
    let mut sheets: BTreeMap<String, ExpectedSheet> = BTreeMap::new();
    fn sheet<'a>(sheets: &'a mut BTreeMap<String, ExpectedSheet>, point_type: &str) -> &'a mut ExpectedSheet {
        sheets.entry(point_type.to_owned()).or_insert_with(|| ExpectedSheet {
            point_type: point_type.to_owned(),
            ..ExpectedSheet::default()
        })
    }
    for credit in ledger.credits.iter().filter(|c| !c.reversed) {
        let s = sheet(&mut sheets, &credit.point_type);
        *s.lots.entry(credit.lot).or_default() += i128::from(credit.amount);
        s.earned += i128::from(credit.amount);
    }
    for u in ledger.uses.iter().filter(|u| !u.reversed) {
        let s = sheet(&mut sheets, &u.point_type);
        for take in &u.consumed {
            *s.lots.entry(take.key).or_default() -= i128::from(take.amount);
        }
        s.used += i128::from(u.amount);
    }
    for expiry in &ledger.expiries {
        let s = sheet(&mut sheets, &expiry.point_type);
        *s.lots.entry(expiry.lot).or_default() -= i128::from(expiry.amount);
        s.expired += i128::from(expiry.amount);
    }
    sheets.into_values().collect()
}

/// Every difference between a recomputed balance item and the stored one of
/// the same point type (`None`: no item stored): each lot (a lot missing on
/// either side holds 0: spent lots are removed), `earned` and `used`.
pub fn compare_sheet(expected: &ExpectedSheet, stored: Option<&BalanceSheet>) -> Vec<SheetDifference> {
    let empty = BalanceSheet::default();
    let stored = stored.unwrap_or(&empty);
    let stored_lots: BTreeMap<LotKey, i128> = stored
        .lots
        .iter()
        .map(|lot| (lot.key, i128::from(lot.amount)))
        .collect();
    let keys: BTreeSet<LotKey> = expected.lots.keys().chain(stored_lots.keys()).copied().collect();
    let mut fields: Vec<(SheetField, i128, i128)> = keys
        .into_iter()
        .map(|key| {
            (
                SheetField::Lot(key),
                expected.lots.get(&key).copied().unwrap_or(0),
                stored_lots.get(&key).copied().unwrap_or(0),
            )
        })
        .collect();
    fields.push((SheetField::Earned, expected.earned, i128::from(stored.earned)));
    fields.push((SheetField::Used, expected.used, i128::from(stored.used)));
    fields.push((SheetField::Expired, expected.expired, i128::from(stored.expired)));
    fields
        .into_iter()
        .filter(|(_, expected, stored)| expected != stored)
        .map(|(field, expected_value, stored_value)| SheetDifference {
            point_type: expected.point_type.clone(),
            field,
            expected: expected_value,
            stored: stored_value,
        })
        .collect()
}

/// Every difference between the member's balance items as stored and as
/// recomputed from `ledger`, by point type then field. A stored item no
/// entry explains is compared with an empty one (it must hold nothing).
pub fn compare_member(ledger: &MemberLedger, stored: &[BalanceSheet]) -> Vec<SheetDifference> {
    let mut expected = expected_sheets(ledger);
    for sheet in stored {
        if !expected.iter().any(|e| e.point_type == sheet.point_type) {
            expected.push(ExpectedSheet {
                point_type: sheet.point_type.clone(),
                ..ExpectedSheet::default()
            });
        }
    }
    expected.sort_by(|a, b| a.point_type.cmp(&b.point_type));
    expected
        .iter()
        .flat_map(|e| compare_sheet(e, stored.iter().find(|s| s.point_type == e.point_type)))
        .collect()
}

/// One count of a job that is not what its messages' markers add up to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CountDifference {
    /// `applied`, `duplicate`, `failed` or `refused`.
    pub field: &'static str,
    /// The sum over the job's folded messages.
    pub expected: u64,
    pub stored: u64,
}

/// A job's counts recomputed from what each of its folded messages
/// recorded: every fold adds its message's counts to the job in the same
/// atomic write as its marker, and a redriven message's move from `failed`
/// rewrites the marker and the job together, so each count of the job is
/// the sum of its markers'.
pub fn expected_job_counts(folded: &[(u32, MessageCounts)]) -> MessageCounts {
    folded
        .iter()
        .fold(MessageCounts::default(), |sum, (_, c)| MessageCounts {
            applied: sum.applied + c.applied,
            duplicate: sum.duplicate + c.duplicate,
            failed: sum.failed + c.failed,
            refused: sum.refused + c.refused,
        })
}

/// Every count of `stored` that is not `expected`.
pub fn compare_job_counts(expected: MessageCounts, stored: MessageCounts) -> Vec<CountDifference> {
    [
        ("applied", expected.applied, stored.applied),
        ("duplicate", expected.duplicate, stored.duplicate),
        ("failed", expected.failed, stored.failed),
        ("refused", expected.refused, stored.refused),
    ]
    .into_iter()
    .filter(|(_, expected, stored)| expected != stored)
    .map(|(field, expected, stored)| CountDifference {
        field,
        expected,
        stored,
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOT: LotKey = LotKey {
        from: 0,
        until: Some(1_800_000_000),
    };

    fn credit(id: &str, amount: u64, lot: LotKey, reversed: bool) -> CreditEntry {
        CreditEntry {
            accrual_id: id.into(),
            point_type: "PT".into(),
            amount,
            lot,
            reversed,
        }
    }

    fn use_of(id: &str, consumed: &[(LotKey, u64)], reversed: bool) -> UseEntry {
        UseEntry {
            use_id: id.into(),
            point_type: "PT".into(),
            amount: consumed.iter().map(|(_, a)| a).sum(),
            consumed: consumed
                .iter()
                .map(|(key, amount)| Lot {
                    key: *key,
                    amount: *amount,
                })
                .collect(),
            reversed,
        }
    }

    fn sheet(lots: &[(LotKey, u64)], earned: u64, used: u64) -> BalanceSheet {
        BalanceSheet {
            point_type: "PT".into(),
            lots: lots
                .iter()
                .map(|(key, amount)| Lot {
                    key: *key,
                    amount: *amount,
                })
                .collect(),
            earned,
            used,
            expired: 0,
        }
    }

    fn ledger() -> MemberLedger {
        MemberLedger {
            credits: vec![
                credit("a", 100, LotKey::PLAIN, false),
                credit("b", 50, LOT, false),
                credit("c", 7, LOT, true),
            ],
            uses: vec![
                use_of("u", &[(LOT, 50), (LotKey::PLAIN, 10)], false),
                use_of("v", &[(LotKey::PLAIN, 30)], true),
            ],
            expiries: vec![],
        }
    }

    #[test]
    fn a_pruned_expiry_moves_its_points_from_the_lot_to_expired() {
        let lot = LotKey {
            from: 0,
            until: Some(86_400),
        };
        let entry = crate::domain::history::pruned_expiry("PT", lot, 30, "u-9").unwrap();
        let expiry = ExpiryEntry::from_history(&entry).unwrap();
        assert_eq!(
            expiry,
            ExpiryEntry {
                point_type: "PT".into(),
                lot,
                amount: 30
            }
        );
        let ledger = MemberLedger {
            credits: vec![CreditEntry {
                accrual_id: "a".into(),
                point_type: "PT".into(),
                amount: 50,
                lot,
                reversed: false,
            }],
            uses: vec![],
            expiries: vec![expiry],
        };
        let mut stored = sheet(&[(lot, 20)], 50, 0);
        assert_eq!(compare_member(&ledger, std::slice::from_ref(&stored)).len(), 1);
        stored.expired = 30;
        assert_eq!(compare_member(&ledger, &[stored]), []);
    }

    #[test]
    fn a_sheet_matching_its_ledger_has_no_difference() {
        // The use took lot LOT whole: the store removed it, which is 0.
        let stored = sheet(&[(LotKey::PLAIN, 90)], 150, 60);
        assert_eq!(compare_member(&ledger(), std::slice::from_ref(&stored)), []);
        assert_eq!(expected_sheets(&ledger())[0].to_sheet(), Some(stored));
    }

    #[test]
    fn a_zero_plain_lot_equals_an_absent_one() {
        let ledger = MemberLedger {
            credits: vec![credit("a", 5, LotKey::PLAIN, false)],
            uses: vec![use_of("u", &[(LotKey::PLAIN, 5)], false)],
            expiries: vec![],
        };
        assert_eq!(compare_member(&ledger, &[sheet(&[], 5, 5)]), []);
        assert_eq!(compare_member(&ledger, &[sheet(&[(LotKey::PLAIN, 0)], 5, 5)]), []);
    }

    #[test]
    fn each_tampered_value_is_one_difference() {
        let stored = sheet(&[(LotKey::PLAIN, 95), (LOT, 3)], 150, 61);
        let differences = compare_member(&ledger(), &[stored]);
        let fields: Vec<(String, i128, i128)> = differences
            .iter()
            .map(|d| (d.field.to_string(), d.expected, d.stored))
            .collect();
        assert_eq!(
            fields,
            [
                ("balance".to_owned(), 90, 95),
                (LOT.attribute(), 0, 3),
                ("used".to_owned(), 60, 61)
            ]
        );
    }

    #[test]
    fn a_missing_item_and_an_unexplained_item_both_differ() {
        let ledger = MemberLedger {
            credits: vec![credit("a", 5, LotKey::PLAIN, false)],
            uses: vec![],
            expiries: vec![],
        };
        let mut other = sheet(&[(LotKey::PLAIN, 4)], 4, 0);
        other.point_type = "ZZ".into();
        let differences = compare_member(&ledger, &[other]);
        let got: Vec<(&str, String, i128, i128)> = differences
            .iter()
            .map(|d| (d.point_type.as_str(), d.field.to_string(), d.expected, d.stored))
            .collect();
        assert_eq!(
            got,
            [
                ("PT", "balance".to_owned(), 5, 0),
                ("PT", "earned".to_owned(), 5, 0),
                ("ZZ", "balance".to_owned(), 0, 4),
                ("ZZ", "earned".to_owned(), 0, 4),
            ]
        );
    }

    #[test]
    fn a_ledger_taking_more_than_it_gave_is_shown_not_written() {
        let ledger = MemberLedger {
            credits: vec![],
            uses: vec![use_of("u", &[(LotKey::PLAIN, 5)], false)],
            expiries: vec![],
        };
        let expected = expected_sheets(&ledger);
        assert_eq!(expected[0].lots[&LotKey::PLAIN], -5);
        assert_eq!(expected[0].to_sheet(), None);
        assert_eq!(compare_member(&ledger, &[])[0].expected, -5);
    }

    #[test]
    fn a_job_counts_what_its_markers_add_up_to() {
        let marker = |applied, duplicate, failed| MessageCounts {
            applied,
            duplicate,
            failed,
            refused: 0,
        };
        let folded = [(0, marker(3, 1, 0)), (2, marker(0, 0, 4)), (1, marker(2, 0, 0))];
        let expected = expected_job_counts(&folded);
        assert_eq!(expected, marker(5, 1, 4));
        assert_eq!(compare_job_counts(expected, marker(5, 1, 4)), []);
        assert_eq!(
            compare_job_counts(expected, marker(9, 1, 0)),
            [
                CountDifference {
                    field: "applied",
                    expected: 5,
                    stored: 9
                },
                CountDifference {
                    field: "failed",
                    expected: 4,
                    stored: 0
                }
            ]
        );
    }
}
