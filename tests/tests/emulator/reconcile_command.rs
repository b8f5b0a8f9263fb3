//! `pointflow reconcile member --backend aws`: the command's own way to the
//! table (the SDK's configuration, no strict layer in between), its wait
//! for the history index, its report and its repair.

use pointflow::adapters::aws::dynamodb::{create_table, DynamoStore};
use pointflow::domain::lots::{BalanceSheet, Lot, LotKey};
use pointflow::domain::{Accrual, JobId, MessageRef};
use pointflow::ports::{Credits, LedgerReads, LedgerRepairs};
use pointflow_cli::reconcile::{
    exit_status, open_store, reconcile_members, ReconcileStore, AWS_SETTLE, EXIT_UNREPAIRED,
};
use pointflow_tests::backend::{emulator_config, unique_name};
use time::OffsetDateTime;

#[tokio::test]
async fn reconcile_on_dynamodb_reports_then_repairs_a_damaged_balance() {
    let Some(sdk) = emulator_config().await else {
        return;
    };
    let table = unique_name("reconcile");
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    create_table(&client, &table).await.unwrap();
    let store = DynamoStore::new(client, &table);
    let now = OffsetDateTime::now_utc();
    let credit = Accrual {
        accrual_id: "r-1".into(),
        member_id: "m-1".into(),
        point_type: "PT".into(),
        amount: 40,
        reason: None,
        apply_at: None,
        expires_at: None,
    };
    let by = MessageRef {
        job_id: JobId::random(),
        seq: 0,
    };
    store.apply_accruals(by, &[credit], now).await.unwrap();
    let read = store.balance_sheets("m-1").await.unwrap();
    let damaged = BalanceSheet {
        point_type: "PT".into(),
        lots: vec![Lot {
            key: LotKey::PLAIN,
            amount: 44,
        }],
        earned: 40,
        used: 0,
        expired: 0,
    };
    assert!(store
        .replace_balance_sheet("m-1", read.first(), &damaged, now)
        .await
        .unwrap());

    let opened = open_store(ReconcileStore::Aws { table: &table }).await.unwrap();
    let (ledger, settle) = (opened.ledger, opened.settle);
    assert_eq!(settle, AWS_SETTLE);
    let members = ["m-1".to_owned()];
    let found = reconcile_members(ledger.as_ref(), &members, false, settle)
        .await
        .unwrap();
    assert_eq!(exit_status(&found), EXIT_UNREPAIRED);
    let values: Vec<(String, i128, i128)> = found[0]
        .differences
        .iter()
        .map(|d| (d.field.to_string(), d.expected, d.stored))
        .collect();
    assert_eq!(values, [("balance".to_owned(), 40, 44)]);
    let repaired = reconcile_members(ledger.as_ref(), &members, true, settle)
        .await
        .unwrap();
    assert_eq!(exit_status(&repaired), 0);
    assert_eq!(ledger.balances("m-1").await.unwrap()[0].balance, 40);
}
