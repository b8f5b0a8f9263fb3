//! The strict AWS layer over the wire: for each rule, the real SDK client
//! talks through the layer to moto and meets AWS's documented behaviour
//! (`docs/strict-aws-layer.md` names each source).

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, PutRequest, TransactWriteItem, Update, WriteRequest};
use aws_sdk_dynamodb::Client;
use pointflow::adapters::aws::dynamodb::create_table;
use pointflow_tests::backend;
use pointflow_tests::strict::tokens::{ManualClock, TOKEN_WINDOW};
use pointflow_tests::strict::StrictProxy;

/// A new table, a direct client to check it and one through a new layer.
struct Rig {
    table: String,
    direct: Client,
    strict: Client,
    layer: StrictProxy,
}

async fn rig_with(clock: Option<Arc<ManualClock>>) -> Option<Rig> {
    let sdk = backend::emulator_config().await?;
    let direct = Client::new(&sdk);
    let table = backend::unique_name("strict");
    create_table(&direct, &table).await.expect("create table");
    let endpoint = std::env::var("AWS_ENDPOINT_URL").expect("set");
    let layer = match clock {
        Some(clock) => StrictProxy::start_with_clock(&endpoint, clock),
        None => StrictProxy::start(&endpoint),
    };
    let strict = layer.dynamodb_client(&sdk);
    Some(Rig {
        table,
        direct,
        strict,
        layer,
    })
}

async fn rig() -> Option<Rig> {
    rig_with(None).await
}

fn s(text: &str) -> AttributeValue {
    AttributeValue::S(text.to_owned())
}

fn n(number: u64) -> AttributeValue {
    AttributeValue::N(number.to_string())
}

impl Rig {
    fn key(&self, pk: &str) -> std::collections::HashMap<String, AttributeValue> {
        [("pk".to_owned(), s(pk)), ("sk".to_owned(), s("x"))].into()
    }

    /// `ADD n :by` on item `pk`, as one transaction action.
    fn add(&self, pk: &str, by: u64) -> TransactWriteItem {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(self.key(pk)))
            .update_expression("ADD n :by")
            .expression_attribute_values(":by", n(by))
            .build()
            .unwrap();
        TransactWriteItem::builder().update(update).build()
    }

    fn put(&self, pk: &str, filler: usize) -> Put {
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(self.item(pk, filler)))
            .build()
            .unwrap()
    }

    /// An item of exactly `bytes` bytes by AWS's rules.
    fn item(&self, pk: &str, bytes: usize) -> std::collections::HashMap<String, AttributeValue> {
        let mut item = self.key(pk);
        let fixed = 2 + pk.len() + 2 + 1 + 4;
        item.insert("fill".into(), s(&"f".repeat(bytes - fixed)));
        item
    }

    async fn n_of(&self, pk: &str) -> Option<String> {
        let got = self
            .direct
            .get_item()
            .table_name(&self.table)
            .set_key(Some(self.key(pk)))
            .consistent_read(true)
            .send()
            .await
            .unwrap();
        got.item().and_then(|i| i.get("n")).and_then(|v| v.as_n().ok()).cloned()
    }

    async fn transact(
        &self,
        actions: Vec<TransactWriteItem>,
        token: Option<&str>,
    ) -> Result<
        (),
        aws_sdk_dynamodb::error::SdkError<TransactWriteItemsError, aws_sdk_dynamodb::config::http::HttpResponse>,
    > {
        self.strict
            .transact_write_items()
            .set_transact_items(Some(actions))
            .set_client_request_token(token.map(str::to_owned))
            .send()
            .await
            .map(|_| ())
    }
}

fn code<E: ProvideErrorMetadata>(
    error: &aws_sdk_dynamodb::error::SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> String {
    error
        .as_service_error()
        .and_then(|e| e.code())
        .unwrap_or("(not a service error)")
        .to_owned()
}

fn message<E: ProvideErrorMetadata>(
    error: &aws_sdk_dynamodb::error::SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> String {
    error
        .as_service_error()
        .and_then(|e| e.message())
        .unwrap_or("")
        .to_owned()
}

fn reasons(
    error: &aws_sdk_dynamodb::error::SdkError<TransactWriteItemsError, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> Vec<String> {
    match error.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(e)) => e
            .cancellation_reasons()
            .iter()
            .map(|r| r.code().unwrap_or("").to_owned())
            .collect(),
        other => panic!("expected a cancellation, got {other:?}"),
    }
}

#[tokio::test]
async fn client_request_token_replay_within_ten_minutes_succeeds_without_applying_again() {
    let Some(rig) = rig().await else { return };
    rig.transact(vec![rig.add("t1", 1)], Some("token-1")).await.unwrap();
    rig.transact(vec![rig.add("t1", 1)], Some("token-1")).await.unwrap();
    assert_eq!(rig.n_of("t1").await.as_deref(), Some("1"), "applied once");
    assert_eq!(rig.layer.stats().replays, 1);
}

#[tokio::test]
async fn client_request_token_with_other_parameters_is_refused_with_idempotent_parameter_mismatch() {
    let Some(rig) = rig().await else { return };
    rig.transact(vec![rig.add("t2", 1)], Some("token-2")).await.unwrap();
    let error = rig.transact(vec![rig.add("t2", 2)], Some("token-2")).await.unwrap_err();
    assert!(
        matches!(
            error.as_service_error(),
            Some(TransactWriteItemsError::IdempotentParameterMismatchException(_))
        ),
        "{error:?}"
    );
    assert_eq!(rig.n_of("t2").await.as_deref(), Some("1"));
}

#[tokio::test]
async fn client_request_token_is_forgotten_ten_minutes_after_its_transaction() {
    let clock = ManualClock::new();
    let Some(rig) = rig_with(Some(clock.clone())).await else {
        return;
    };
    rig.transact(vec![rig.add("t3", 1)], Some("token-3")).await.unwrap();
    clock.advance(TOKEN_WINDOW - Duration::from_secs(1));
    assert_eq!(
        code(&rig.transact(vec![rig.add("t3", 2)], Some("token-3")).await.unwrap_err()),
        "IdempotentParameterMismatchException"
    );
    clock.advance(Duration::from_secs(1));
    rig.transact(vec![rig.add("t3", 2)], Some("token-3")).await.unwrap();
    assert_eq!(rig.n_of("t3").await.as_deref(), Some("3"), "a new transaction");
}

/// An item whose size by AWS's rules is its key and a list of `entries`
/// empty lists: 3 bytes for the list and 4 per element (1 as an element, 3
/// as a list). moto counts 0 per element, so it would take any number.
fn list_item(rig: &Rig, pk: &str, entries: usize) -> std::collections::HashMap<String, AttributeValue> {
    let mut item = rig.key(pk);
    item.insert(
        "l".into(),
        AttributeValue::L(vec![AttributeValue::L(Vec::new()); entries]),
    );
    item
}

#[tokio::test]
async fn an_item_over_400_kb_is_a_validation_exception_even_where_the_emulator_would_take_it() {
    let Some(rig) = rig().await else { return };
    // 105,000 elements: 420,003 bytes by AWS's rules, 0 by moto's.
    let error = rig
        .strict
        .put_item()
        .table_name(&rig.table)
        .set_item(Some(list_item(&rig, "bigger", 105_000)))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&error), "ValidationException");
    assert!(message(&error).contains("Item size has exceeded"));
    assert_eq!(rig.layer.stats().violations, 1, "refused by the layer, not by moto");
    // Within the limit by AWS's rules: written.
    rig.strict
        .put_item()
        .table_name(&rig.table)
        .set_item(Some(list_item(&rig, "fits", 100_000)))
        .send()
        .await
        .unwrap();
    // In a transaction: cancelled, the reason on that action.
    let put = Put::builder()
        .table_name(&rig.table)
        .set_item(Some(list_item(&rig, "bigger", 105_000)))
        .build()
        .unwrap();
    let error = rig
        .transact(
            vec![rig.add("small", 1), TransactWriteItem::builder().put(put).build()],
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(reasons(&error), ["None", "ValidationError"]);
    assert_eq!(rig.n_of("small").await, None, "nothing written");
}

#[tokio::test]
async fn an_update_that_would_grow_an_item_past_400_kb_is_a_validation_exception() {
    let Some(rig) = rig().await else { return };
    // 400,003 bytes of list, and its key: within 400 KB (409,600 bytes).
    rig.strict
        .put_item()
        .table_name(&rig.table)
        .set_item(Some(list_item(&rig, "grow", 100_000)))
        .send()
        .await
        .unwrap();
    let error = rig
        .strict
        .update_item()
        .table_name(&rig.table)
        .set_key(Some(rig.key("grow")))
        .update_expression("SET more = :more")
        .expression_attribute_values(":more", s(&"m".repeat(10_000)))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&error), "ValidationException");
    assert_eq!(rig.layer.stats().violations, 1, "refused by the layer, not by moto");
}

#[tokio::test]
async fn an_expression_over_4_kb_is_a_validation_exception() {
    let Some(rig) = rig().await else { return };
    let error = rig
        .strict
        .update_item()
        .table_name(&rig.table)
        .set_key(Some(rig.key("e")))
        .update_expression(format!("SET #{} = :v", "a".repeat(4096)))
        .expression_attribute_names(format!("#{}", "a".repeat(4096)), "a")
        .expression_attribute_values(":v", n(1))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&error), "ValidationException");
    assert!(message(&error).contains("Expression size has exceeded"));
}

#[tokio::test]
async fn an_expression_of_more_than_300_operators_is_a_validation_exception() {
    let Some(rig) = rig().await else { return };
    // 151 comparisons and 150 ANDs: 301 operators in 2.6 KB.
    let condition = (0..151).map(|_| "n = :v").collect::<Vec<_>>().join(" AND ");
    assert!(condition.len() < 4096);
    let error = rig
        .strict
        .update_item()
        .table_name(&rig.table)
        .set_key(Some(rig.key("o")))
        .update_expression("SET n = :v")
        .condition_expression(condition)
        .expression_attribute_values(":v", n(1))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&error), "ValidationException");
    assert!(message(&error).contains("too many operators"));
}

#[tokio::test]
async fn a_transaction_of_more_than_100_actions_is_a_validation_exception() {
    let Some(rig) = rig().await else { return };
    let actions = (0..101).map(|i| rig.add(&format!("a{i}"), 1)).collect();
    let error = rig.transact(actions, None).await.unwrap_err();
    assert_eq!(code(&error), "ValidationException");
    assert_eq!(rig.n_of("a0").await, None);
}

#[tokio::test]
async fn a_transaction_over_4_mb_is_a_validation_exception() {
    let Some(rig) = rig().await else { return };
    // Eleven items of 390 KB: each within 400 KB, 4.2 MB together.
    let actions = (0..11)
        .map(|i| {
            TransactWriteItem::builder()
                .put(rig.put(&format!("m{i}"), 390 * 1024))
                .build()
        })
        .collect();
    let error = rig.transact(actions, None).await.unwrap_err();
    assert_eq!(code(&error), "ValidationException");
    assert!(message(&error).contains("4 MB"));
}

#[tokio::test]
async fn a_batch_write_of_more_than_25_items_is_a_validation_exception() {
    let Some(rig) = rig().await else { return };
    let writes = |count: usize| -> Vec<WriteRequest> {
        (0..count)
            .map(|i| {
                let put = PutRequest::builder()
                    .set_item(Some(rig.item(&format!("b{i}"), 100)))
                    .build()
                    .unwrap();
                WriteRequest::builder().put_request(put).build()
            })
            .collect()
    };
    rig.strict
        .batch_write_item()
        .request_items(&rig.table, writes(25))
        .send()
        .await
        .unwrap();
    let error = rig
        .strict
        .batch_write_item()
        .request_items(&rig.table, writes(26))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&error), "ValidationException");
    assert!(message(&error).contains("Too many items"));
}

#[tokio::test]
async fn concurrent_transactions_on_one_item_get_transaction_conflict_not_corruption() {
    let Some(rig) = rig().await else { return };
    let rig = Arc::new(rig);
    // The first transaction to arrive is held until the other meets it.
    rig.layer.hold_transactions(1);
    let race = |own: &'static str| {
        let rig = rig.clone();
        tokio::spawn(async move { rig.transact(vec![rig.add(own, 1), rig.add("shared", 1)], None).await })
    };
    let (a, b) = (race("own-a"), race("own-b"));
    let results = [a.await.unwrap(), b.await.unwrap()];
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(failed.len(), 1, "{results:?}");
    assert_eq!(reasons(failed[0]), ["None", "TransactionConflict"]);
    assert_eq!(rig.n_of("shared").await.as_deref(), Some("1"));
    let stats = rig.layer.stats();
    assert_eq!((stats.overlaps, stats.conflicts), (1, 1));
}

#[tokio::test]
async fn a_single_write_to_an_item_in_a_transaction_gets_transaction_conflict_exception() {
    let Some(rig) = rig().await else { return };
    let rig = Arc::new(rig);
    rig.layer.hold_transactions(1);
    let held = {
        let rig = rig.clone();
        tokio::spawn(async move { rig.transact(vec![rig.add("hot", 1)], None).await })
    };
    // Wait (bounded) until the transaction holds its item.
    for _ in 0..2000 {
        if rig.layer.transactions_in_flight() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(rig.layer.transactions_in_flight(), 1);
    let error = rig
        .strict
        .put_item()
        .table_name(&rig.table)
        .set_item(Some(rig.item("hot", 100)))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&error), "TransactionConflictException");
    held.await.unwrap().unwrap();
    assert_eq!(
        rig.n_of("hot").await.as_deref(),
        Some("1"),
        "the transaction, not the put"
    );
}
