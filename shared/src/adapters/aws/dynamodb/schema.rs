//! The table's schema: keys and the history index, as `template.yaml`
//! declares them.

use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType,
};
use aws_sdk_dynamodb::Client;

use super::errors::backend;
use crate::ports::StoreError;

/// The global secondary index of members' histories (`hist_pk`, `hist_sk`).
pub const HISTORY_INDEX: &str = "history";

/// The attributes the history index projects besides its keys: what a
/// history entry shows. Not `reversed_at`, so that marking an entry reversed
/// writes no index entry; not `consumed` nor `seq`, which it does not show.
pub const HISTORY_PROJECTION: [&str; 13] = [
    "accrual_id",
    "use_id",
    "target_id",
    "reverses",
    "member_id",
    "point_type",
    "amount",
    "job_id",
    "applied_at",
    "reason",
    "apply_at",
    "expires_at",
    "audit",
];

/// Creates the Pointflow table (as `template.yaml` declares it) unless it
/// exists. For tests and local runs against an emulator (which creates
/// tables active at once).
pub async fn create_table(client: &Client, table: &str) -> Result<(), StoreError> {
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| backend("CreateTable", e))
    };
    let key = |name: &str, key_type: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(key_type)
            .build()
            .map_err(|e| backend("CreateTable", e))
    };
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("pk")?)
        .attribute_definitions(attribute("sk")?)
        .attribute_definitions(attribute("hist_pk")?)
        .attribute_definitions(attribute("hist_sk")?)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(HISTORY_INDEX)
                .key_schema(key("hist_pk", KeyType::Hash)?)
                .key_schema(key("hist_sk", KeyType::Range)?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::Include)
                        .set_non_key_attributes(Some(HISTORY_PROJECTION.iter().map(|a| (*a).to_owned()).collect()))
                        .build(),
                )
                .build()
                .map_err(|e| backend("CreateTable", e))?,
        )
        .send()
        .await;
    match created {
        Ok(_) => Ok(()),
        // Already there (a second local run): use it.
        Err(e) if matches!(e.as_service_error(), Some(CreateTableError::ResourceInUseException(_))) => Ok(()),
        Err(e) => Err(backend("CreateTable", e)),
    }
}
