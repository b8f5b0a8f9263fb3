//! How a message's accruals are credited in DynamoDB transactions: which
//! accruals go together into one all-or-nothing write, and the one summed
//! balance update each balance item gets in it. Pure, so the DynamoDB
//! adapter executes the plan and the write-unit model
//! ([`crate::adapters::metered`] when compiled) charges it alike.

use std::collections::{BTreeMap, HashSet};

use sha2::{Digest, Sha256};

use crate::domain::lots::{LotKey, UsePlan};
use crate::domain::{Accrual, MessageRef};

/// TransactWriteItems takes at most 100 actions (DynamoDB service quotas).
pub const MAX_TRANSACTION_ACTIONS: usize = 100;

/// The longest expression string DynamoDB accepts: 4 KB (DynamoDB
/// developer guide, "Constraints", expression parameters).
pub const MAX_EXPRESSION_BYTES: usize = 4096;

/// The most operators or functions one expression may hold: 300 (same
/// source).
pub const MAX_EXPRESSION_OPERATORS: usize = 300;

/// The expressions of a use's balance update, built here so that their size
/// is a pure function of the plan, tested against DynamoDB's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UseExpressions {
    /// `SET updated_at = :now ADD used :amount, <lot> :minus<i>… REMOVE <lot>…`:
    /// a lot taken whole is removed, not left at zero, so spent lots do not
    /// pile up on the item.
    pub update: String,
    /// Per lot `#t<i> >= :take<i>` (or `#t<i> = :take<i>` for a lot
    /// removed): the overdraft guard, and a removal only of what was planned;
    /// per expired lot pruned `#p<i> = :prune<i>` (removed, its points added
    /// to `expired`).
    pub condition: String,
    /// `#t<i>` (`#p<i>`) and the attribute it names (`balance` for the
    /// plain lot).
    pub names: Vec<(String, String)>,
    /// Placeholders and their numbers, as text (`:now` is the caller's).
    pub values: Vec<(String, String)>,
}

/// The balance update of a use of `amount` taking `plan`. The plain lot
/// (`balance`) is never removed, only brought to zero.
pub fn use_expressions(plan: &UsePlan, amount: u64) -> UseExpressions {
    let mut add = vec!["used :amount".to_owned()];
    let mut remove = Vec::new();
    let mut conditions = Vec::new();
    let mut names = Vec::new();
    let mut values = vec![(":amount".to_owned(), amount.to_string())];
    for (i, take) in plan.takes.iter().enumerate() {
        let name = if take.key.is_plain() {
            "balance".to_owned()
        } else {
            take.key.attribute()
        };
        names.push((format!("#t{i}"), name));
        values.push((format!(":take{i}"), take.amount.to_string()));
        if plan.empties(i) && !take.key.is_plain() {
            remove.push(format!("#t{i}"));
            conditions.push(format!("#t{i} = :take{i}"));
        } else {
            add.push(format!("#t{i} :minus{i}"));
            values.push((format!(":minus{i}"), format!("-{}", take.amount)));
            conditions.push(format!("#t{i} >= :take{i}"));
        }
    }
    // Expired lots pruned: removed only if they hold what the plan saw (a
    // late credit or a reversal may have added to one since), their points
    // moved to `expired`.
    for (i, lot) in plan.prunes.iter().enumerate() {
        names.push((format!("#p{i}"), lot.key.attribute()));
        values.push((format!(":prune{i}"), lot.amount.to_string()));
        remove.push(format!("#p{i}"));
        conditions.push(format!("#p{i} = :prune{i}"));
    }
    if !plan.prunes.is_empty() {
        let expired: u64 = plan.prunes.iter().map(|lot| lot.amount).sum();
        add.push("expired :expired".to_owned());
        values.push((":expired".to_owned(), expired.to_string()));
    }
    let mut update = format!("SET updated_at = :now ADD {}", add.join(", "));
    if !remove.is_empty() {
        update.push_str(&format!(" REMOVE {}", remove.join(", ")));
    }
    UseExpressions {
        update,
        condition: conditions.join(" AND "),
        names,
        values,
    }
}

/// The operators and functions in `expression`, counted generously for
/// [`MAX_EXPRESSION_OPERATORS`]: every comparator, logical operator,
/// arithmetic sign and function call, and every action of an update
/// clause (AWS does not say whether those count; assuming they do errs
/// on the safe side).
pub fn expression_operators(expression: &str) -> usize {
    let mut count = 0;
    for token in expression.split(|c: char| c.is_whitespace() || c == ',') {
        let is_operator = matches!(
            token,
            "=" | "<>" | "<" | "<=" | ">" | ">=" | "+" | "-" | "AND" | "OR" | "NOT" | "BETWEEN" | "IN"
        );
        if is_operator || token.contains('(') {
            count += 1;
        }
    }
    let actions = expression.matches(',').count()
        + ["SET ", "ADD ", "REMOVE ", "DELETE "]
            .iter()
            .map(|clause| expression.matches(clause).count())
            .sum::<usize>();
    count + actions
}

/// Actions of a credit transaction that are not its accruals' puts or
/// balance updates: the check that the message's cancel has not begun.
pub const CREDIT_CHECK_ACTIONS: usize = 1;

/// Groups accruals into transactions of at most [`MAX_TRANSACTION_ACTIONS`]
/// actions: one put per accrual plus one update per distinct balance, plus
/// [`CREDIT_CHECK_ACTIONS`].
pub fn plan_transactions(accruals: &[Accrual]) -> Vec<Vec<&Accrual>> {
    plan_transactions_within(accruals, MAX_TRANSACTION_ACTIONS)
}

/// [`plan_transactions`] with at most `max_actions` actions a transaction
/// (at least 3: one put, one update and the check), so that the simulation
/// splits its few-accrual messages the way DynamoDB splits 500.
pub fn plan_transactions_within(accruals: &[Accrual], max_actions: usize) -> Vec<Vec<&Accrual>> {
    let max_actions = max_actions.max(2 + CREDIT_CHECK_ACTIONS);
    let mut chunks: Vec<Vec<&Accrual>> = Vec::new();
    let mut current: Vec<&Accrual> = Vec::new();
    let mut keys = HashSet::new();
    for accrual in accruals {
        let new_key = !keys.contains(&accrual.balance_key());
        let actions = current.len() + keys.len() + 1 + usize::from(new_key);
        if actions + CREDIT_CHECK_ACTIONS > max_actions && !current.is_empty() {
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

/// The `ClientRequestToken` of the transaction crediting `accruals` for
/// message `by`, written at `now` (RFC 3339): the same content gives the
/// same token, so DynamoDB answers a resend within 10 minutes as the first
/// send without applying it again. The token binds everything the items are
/// built from (the message, its accruals, the time written), so that it
/// never names two different contents: DynamoDB would refuse the second with
/// `IdempotentParameterMismatch`, which no retry mends. The worker writes a
/// message's own `queued_at`, so a redelivery resends the same token and
/// content; a message without one (an earlier release's) is written at the
/// worker's clock, so each delivery is a transaction of its own. Pure, so
/// the DynamoDB adapter sends it and the simulation's token model
/// (`testkit::simulation`) computes the very same.
pub fn request_token(by: MessageRef, accruals: &[&Accrual], now: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(format!("{}#{}#{now}", by.job_id, by.seq).as_bytes());
    // The simulation's deliberate defect: a token naming the message only.
    let per_message = crate::flaws::active(crate::flaws::Flaw::TokenPerMessage);
    for a in accruals.iter().filter(|_| !per_message) {
        hasher.update(b"\n");
        hasher.update(a.accrual_id.as_bytes());
    }
    // Tokens are at most 36 characters (TransactWriteItems API Reference).
    hex::encode(hasher.finalize())[..36].to_owned()
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
    fn request_token_is_short_and_content_bound() {
        let a = accrual(1, 1, "P");
        let b = accrual(2, 1, "P");
        let by = MessageRef {
            job_id: crate::domain::JobId::random(),
            seq: 3,
        };
        let now = "2026-11-29T17:00:00Z";
        let t1 = request_token(by, &[&a, &b], now);
        assert_eq!(t1.len(), 36);
        assert_eq!(t1, request_token(by, &[&a, &b], now));
        assert_ne!(t1, request_token(by, &[&a], now));
        assert_ne!(t1, request_token(MessageRef { seq: 4, ..by }, &[&a, &b], now));
        assert_ne!(t1, request_token(by, &[&a, &b], "2026-11-29T17:06:00Z"));
    }

    /// The simulation's scaled-down split: a few accruals already span
    /// several transactions, each within its actions.
    #[test]
    fn a_smaller_limit_splits_alike() {
        let accruals: Vec<Accrual> = (0..6).map(|i| accrual(i, i % 2, "P")).collect();
        for max_actions in 3..=8 {
            let chunks = plan_transactions_within(&accruals, max_actions);
            assert_eq!(chunks.iter().map(Vec::len).sum::<usize>(), 6);
            for chunk in &chunks {
                let actions = chunk.len() + sum_by_balance(chunk).len() + CREDIT_CHECK_ACTIONS;
                assert!(actions <= max_actions, "{actions} > {max_actions}");
            }
        }
        assert_eq!(plan_transactions_within(&accruals, 3).len(), 6);
    }

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

    /// A use of as many lots as it may take stays far within DynamoDB's
    /// expression limits, with the longest lot names there are; pruning as
    /// many expired lots as it may in the same write keeps it within them.
    #[test]
    fn the_largest_use_fits_the_expression_limits() {
        use crate::domain::lots::{Lot, MAX_PRUNE_LOTS, MAX_USE_LOTS};
        for last_empties in [false, true] {
            let plan = UsePlan {
                takes: (0..MAX_USE_LOTS as i64)
                    .map(|i| Lot {
                        key: LotKey {
                            from: 253_402_300_799 - i,
                            until: Some(253_402_300_799),
                        },
                        amount: 1_000_000_000,
                    })
                    .collect(),
                last_empties,
                prunes: Vec::new(),
            };
            let e = use_expressions(&plan, u64::MAX);
            for expression in [&e.update, &e.condition] {
                assert!(expression.len() <= MAX_EXPRESSION_BYTES / 2, "{}", expression.len());
                assert!(
                    expression_operators(expression) <= MAX_EXPRESSION_OPERATORS / 2,
                    "{}",
                    expression_operators(expression)
                );
            }
            assert!(e.names.iter().all(|(_, name)| name.len() <= 255));
            let pruning = UsePlan {
                prunes: (0..MAX_PRUNE_LOTS as i64)
                    .map(|i| Lot {
                        key: LotKey {
                            from: -253_402_300_799 + i,
                            until: Some(-253_402_300_799 + i + 1),
                        },
                        amount: 1_000_000_000_000,
                    })
                    .collect(),
                ..plan
            };
            let e = use_expressions(&pruning, u64::MAX);
            for expression in [&e.update, &e.condition] {
                assert!(expression.len() <= MAX_EXPRESSION_BYTES, "{}", expression.len());
                let operators = expression_operators(expression);
                assert!(operators <= MAX_EXPRESSION_OPERATORS, "{operators}");
            }
        }
    }

    #[test]
    fn a_lot_taken_whole_is_removed_under_an_exact_condition() {
        use crate::domain::lots::Lot;
        let lot = |until, amount| Lot {
            key: LotKey { from: 0, until },
            amount,
        };
        let plan = UsePlan {
            takes: vec![lot(Some(5), 10), lot(None, 4)],
            last_empties: true,
            prunes: Vec::new(),
        };
        let e = use_expressions(&plan, 14);
        assert_eq!(
            e.update,
            "SET updated_at = :now ADD used :amount, #t1 :minus1 REMOVE #t0"
        );
        assert_eq!(e.condition, "#t0 = :take0 AND #t1 >= :take1");
        assert_eq!(e.names[1], ("#t1".to_owned(), "balance".to_owned()));
        assert_eq!(expression_operators(&e.condition), 3);
        assert_eq!(expression_operators(&e.update), 5);
        let pruning = UsePlan {
            prunes: vec![lot(Some(2), 7), lot(Some(3), 1)],
            ..plan
        };
        let e = use_expressions(&pruning, 14);
        assert_eq!(
            e.update,
            "SET updated_at = :now ADD used :amount, #t1 :minus1, expired :expired REMOVE #t0, #p0, #p1"
        );
        assert_eq!(
            e.condition,
            "#t0 = :take0 AND #t1 >= :take1 AND #p0 = :prune0 AND #p1 = :prune1"
        );
        assert_eq!(e.names[2], ("#p0".to_owned(), "L#0#2".to_owned()));
        assert!(e.values.contains(&(":expired".to_owned(), "8".to_owned())));
    }
}
