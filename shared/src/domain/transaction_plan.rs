//! How a message's accruals are credited in DynamoDB transactions: which
//! accruals go together into one all-or-nothing write, and the one summed
//! balance update each balance item gets in it. Pure, so the DynamoDB
//! adapter executes the plan and the write-unit model
//! ([`crate::adapters::metered`] when compiled) charges it alike.

use std::collections::{BTreeMap, HashSet};

use crate::domain::lots::LotKey;
use crate::domain::Accrual;

/// TransactWriteItems takes at most 100 actions (DynamoDB service quotas).
pub const MAX_TRANSACTION_ACTIONS: usize = 100;

/// Actions of a credit transaction that are not its accruals' puts or
/// balance updates: the check that the message's cancel has not begun.
pub const CREDIT_CHECK_ACTIONS: usize = 1;

/// Groups accruals into transactions of at most [`MAX_TRANSACTION_ACTIONS`]
/// actions: one put per accrual plus one update per distinct balance, plus
/// [`CREDIT_CHECK_ACTIONS`].
pub fn plan_transactions(accruals: &[Accrual]) -> Vec<Vec<&Accrual>> {
    let mut chunks: Vec<Vec<&Accrual>> = Vec::new();
    let mut current: Vec<&Accrual> = Vec::new();
    let mut keys = HashSet::new();
    for accrual in accruals {
        let new_key = !keys.contains(&accrual.balance_key());
        let actions = current.len() + keys.len() + 1 + usize::from(new_key);
        if actions + CREDIT_CHECK_ACTIONS > MAX_TRANSACTION_ACTIONS {
            chunks.push(std::mem::take(&mut current));
            keys.clear();
        }
        keys.insert(accrual.balance_key());
        current.push(accrual);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// Sums accruals per balance item: DynamoDB refuses two actions on one item
/// in a transaction.
pub fn sum_by_balance<'a>(accruals: &[&'a Accrual]) -> BTreeMap<(&'a str, &'a str), u64> {
    let mut sums = BTreeMap::new();
    for a in accruals {
        *sums.entry((a.member_id.as_str(), a.point_type.as_str())).or_insert(0) += a.amount;
    }
    sums
}

/// Sums accruals per balance item and, within it, per lot.
pub fn sum_by_lot<'a>(accruals: &[&'a Accrual]) -> BTreeMap<(&'a str, &'a str), BTreeMap<LotKey, u64>> {
    let mut sums: BTreeMap<(&str, &str), BTreeMap<LotKey, u64>> = BTreeMap::new();
    for a in accruals {
        *sums
            .entry((a.member_id.as_str(), a.point_type.as_str()))
            .or_default()
            .entry(a.lot())
            .or_insert(0) += a.amount;
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::accrual::sample as accrual;

    #[test]
    fn distinct_members_take_two_actions_each() {
        let accruals: Vec<Accrual> = (0..120).map(|i| accrual(i, i, "P")).collect();
        let chunks = plan_transactions(&accruals);
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), [49, 49, 22]);
    }

    #[test]
    fn one_member_many_accruals_share_one_update() {
        let accruals: Vec<Accrual> = (0..150).map(|i| accrual(i, 1, "P")).collect();
        let chunks = plan_transactions(&accruals);
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), [98, 52]);
        let sums = sum_by_balance(&chunks[0]);
        assert_eq!(sums.len(), 1);
        assert_eq!(sums[&("m1", "P")], 980);
    }

    #[test]
    fn every_chunk_fits_a_transaction() {
        let accruals: Vec<Accrual> = (0..1000)
            .map(|i| accrual(i, i % 37, if i % 3 == 0 { "A" } else { "B" }))
            .collect();
        let chunks = plan_transactions(&accruals);
        assert_eq!(chunks.iter().map(Vec::len).sum::<usize>(), 1000);
        for chunk in chunks {
            let actions = chunk.len() + sum_by_balance(&chunk).len() + CREDIT_CHECK_ACTIONS;
            assert!(actions <= MAX_TRANSACTION_ACTIONS, "{actions}");
        }
    }
}
