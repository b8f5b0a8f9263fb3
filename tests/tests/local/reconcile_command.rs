//! `pointflow reconcile member` on the embedded backend: a database written
//! by the store, a balance damaged behind the ledger's back, then the
//! command's report, exit status and repair.

use pointflow::adapters::sqlite::SqliteStore;
use pointflow::domain::lots::{BalanceSheet, Lot, LotKey};
use pointflow::domain::{Accrual, JobId, MessageRef};
use pointflow::ports::{Credits, LedgerReads, LedgerRepairs};
use pointflow_cli::reconcile::{exit_status, human, open_ledger, reconcile_members, ReconcileStore, EXIT_UNREPAIRED};
use pointflow_tests::import::TempDir;
use time::OffsetDateTime;

fn credit(id: &str, member: &str, amount: u64) -> Accrual {
    Accrual {
        accrual_id: id.into(),
        member_id: member.into(),
        point_type: "PT".into(),
        amount,
        reason: None,
        apply_at: None,
        expires_at: None,
    }
}

#[tokio::test]
async fn reconcile_reports_a_damaged_balance_then_repairs_it() {
    let dir = TempDir::new("pointflow-reconcile");
    let db = dir.0.join("local.db");
    let now = OffsetDateTime::now_utc();
    {
        let store = SqliteStore::open(&db).unwrap();
        let by = MessageRef {
            job_id: JobId::random(),
            seq: 0,
        };
        store
            .apply_accruals(
                by,
                &[credit("a1", "m-1", 40), credit("a2", "m-1", 2), credit("a3", "m-2", 5)],
                now,
            )
            .await
            .unwrap();
        // Damage m-1's balance as a write outside the ports would.
        let read = store.balance_sheets("m-1").await.unwrap();
        let damaged = BalanceSheet {
            point_type: "PT".into(),
            lots: vec![Lot {
                key: LotKey::PLAIN,
                amount: 50,
            }],
            earned: 42,
            used: 0,
        };
        assert!(store
            .replace_balance_sheet("m-1", read.first(), &damaged, now)
            .await
            .unwrap());
    }
    let members = ["m-1".to_owned(), "m-2".to_owned()];
    let (ledger, settle) = open_ledger(ReconcileStore::Embedded { db: &db }).await.unwrap();
    assert_eq!(settle, std::time::Duration::ZERO);

    let found = reconcile_members(ledger.as_ref(), &members, false, settle)
        .await
        .unwrap();
    assert_eq!(exit_status(&found), EXIT_UNREPAIRED);
    assert_eq!(
        human(&found),
        "member m-1: 1 value(s) differ from the ledger (not repaired: run again with --repair to rewrite them)\n  \
         PT balance: ledger 42, stored 50\n\
         member m-2: balances match the ledger\n"
    );
    let json = serde_json::to_value(&found).unwrap();
    assert_eq!(
        json[0]["differences"][0],
        serde_json::json!({"point_type": "PT", "field": "balance", "expected": 42, "stored": 50})
    );
    assert_eq!(
        ledger.balances("m-1").await.unwrap()[0].balance,
        50,
        "a report repairs nothing"
    );

    let repaired = reconcile_members(ledger.as_ref(), &members, true, settle)
        .await
        .unwrap();
    assert_eq!(exit_status(&repaired), 0);
    assert!(human(&repaired).starts_with("member m-1: 1 value(s) differ from the ledger (repaired)\n"));
    assert_eq!(ledger.balances("m-1").await.unwrap()[0].balance, 42);
    let clean = reconcile_members(ledger.as_ref(), &members, false, settle)
        .await
        .unwrap();
    assert_eq!(exit_status(&clean), 0);
    assert!(clean.iter().all(|r| r.differences.is_empty()));

    let missing = open_ledger(ReconcileStore::Embedded {
        db: &dir.0.join("nothing.db"),
    })
    .await;
    assert!(missing.is_err_and(|e| e.to_string().starts_with("no embedded database at")));
}
