//! The naive baseline on DynamoDB (feature `testkit`), to compare the
//! transactional writes against.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use time::OffsetDateTime;

use super::errors::single_call_error;
use super::items::{item_bytes, ledger_entry, rfc3339};
use super::ledger::balance_update;
use super::transaction::index_units;
use super::DynamoStore;
use crate::domain::capacity::{write_units, WriteKind, SMALL_WRITE_UNITS};
use crate::domain::history;
use crate::domain::{Accrual, MessageRef};
use crate::ports::StoreError;
use crate::testkit::baseline::SingleWrites;

/// The naive baseline's writes: a conditional `PutItem` of the ledger entry
/// and a separate `UpdateItem` of the balance, each its own request.
#[async_trait]
impl SingleWrites for DynamoStore {
    async fn put_entry(&self, by: MessageRef, accrual: &Accrual, now: OffsetDateTime) -> Result<bool, StoreError> {
        let item = ledger_entry(by, accrual, &rfc3339(now), &history::key_time(now));
        self.count();
        self.write_units
            .charge_ledger(1, write_units(item_bytes(&item), WriteKind::Standard));
        let indexed = index_units([&item], WriteKind::Standard);
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => {
                self.write_units.charge_ledger(0, indexed);
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(PutItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(single_call_error("PutItem", e)),
        }
    }

    async fn add_to_balance(&self, accrual: &Accrual, now: OffsetDateTime) -> Result<(), StoreError> {
        let update = balance_update(
            &self.table,
            &accrual.member_id,
            &accrual.point_type,
            &BTreeMap::from([(accrual.lot(), accrual.amount)]),
            &rfc3339(now),
        )?;
        self.count();
        self.write_units.charge_ledger(1, SMALL_WRITE_UNITS);
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(update.key().clone()))
            .update_expression(update.update_expression())
            .set_expression_attribute_names(update.expression_attribute_names().cloned())
            .set_expression_attribute_values(update.expression_attribute_values().cloned())
            .send()
            .await
            .map_err(|e| single_call_error("UpdateItem", e))?;
        Ok(())
    }
}
