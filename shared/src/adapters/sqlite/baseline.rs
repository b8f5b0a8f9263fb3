//! The naive baseline's single writes on SQLite (feature `testkit`).

use async_trait::async_trait;
use rusqlite::params;
use time::OffsetDateTime;

use super::ledger::{lot_column, INSERT_LEDGER_ENTRY};
use super::{to_i64, unix_millis, SqliteStore};
use crate::domain::{Accrual, MessageRef};
use crate::ports::StoreError;
use crate::testkit::baseline::SingleWrites;

/// The naive baseline's writes: each its own SQLite transaction (autocommit),
/// as a conditional `PutItem` and an `UpdateItem` are on DynamoDB.
#[async_trait]
impl SingleWrites for SqliteStore {
    async fn put_entry(&self, by: MessageRef, accrual: &Accrual, now: OffsetDateTime) -> Result<bool, StoreError> {
        let a = accrual.clone();
        self.run("put_entry", move |conn| {
            let amount = to_i64(a.amount, "amount")?;
            let inserted = conn.prepare_cached(INSERT_LEDGER_ENTRY)?.execute(params![
                a.accrual_id,
                by.job_id.to_string(),
                i64::from(by.seq),
                a.member_id,
                a.point_type,
                amount,
                a.reason,
                unix_millis(now),
                lot_column(&a)
            ])?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn add_to_balance(&self, accrual: &Accrual, now: OffsetDateTime) -> Result<(), StoreError> {
        let (member_id, point_type, amount) = (accrual.member_id.clone(), accrual.point_type.clone(), accrual.amount);
        self.run("add_to_balance", move |conn| {
            conn.prepare_cached(
                "INSERT INTO balances (member_id, point_type, balance, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (member_id, point_type)
                 DO UPDATE SET balance = balance + excluded.balance, updated_at = excluded.updated_at",
            )?
            .execute(params![
                member_id,
                point_type,
                to_i64(amount, "amount")?,
                unix_millis(now)
            ])?;
            Ok(())
        })
        .await
    }
}
