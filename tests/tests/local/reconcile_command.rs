//! `pointflow reconcile member` on the embedded backend: a database written
//! by the store, a balance damaged behind the ledger's back, then the
//! command's report, exit status and repair.

use pointflow::adapters::sqlite::SqliteStore;
use pointflow::domain::lots::{BalanceSheet, Lot, LotKey};
use pointflow::domain::{Accrual, JobId, MessageCounts, MessageRef, NewJob};
use pointflow::ports::{Credits, JobStore, LedgerReads, LedgerRepairs};
use pointflow_cli::reconcile::{
    exit_status, human, human_jobs, jobs_exit_status, open_store, reconcile_jobs, reconcile_members, ReconcileStore,
    EXIT_UNREPAIRED,
};
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
            expired: 0,
        };
        assert!(store
            .replace_balance_sheet("m-1", read.first(), &damaged, now)
            .await
            .unwrap());
    }
    let members = ["m-1".to_owned(), "m-2".to_owned()];
    let opened = open_store(ReconcileStore::Embedded { db: &db }).await.unwrap();
    let (ledger, settle) = (opened.ledger, opened.settle);
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

    let missing = open_store(ReconcileStore::Embedded {
        db: &dir.0.join("nothing.db"),
    })
    .await;
    assert!(missing.is_err_and(|e| e.to_string().starts_with("no embedded database at")));
}

#[tokio::test]
async fn reconcile_job_reports_damaged_counts_then_repairs_them() {
    let dir = TempDir::new("pointflow-reconcile-job");
    let db = dir.0.join("local.db");
    let now = OffsetDateTime::now_utc();
    let job = NewJob {
        job_id: JobId::random(),
        request_hash: "reconcile".into(),
        total: 3,
        deduplicated: 0,
        messages: 2,
        source: None,
        reading: false,
        created_at: now,
        audit: None,
    };
    {
        let store = SqliteStore::open(&db).unwrap();
        store.create_job(&job).await.unwrap();
        let applied = |n| MessageCounts {
            applied: n,
            ..MessageCounts::default()
        };
        store
            .fold_message(job.job_id, 0, applied(2), &["a".into(), "b".into()], now)
            .await
            .unwrap();
        let read = store.get_job(job.job_id).await.unwrap().unwrap().counts();
        assert!(store
            .replace_job_counts(job.job_id, read, applied(7), now)
            .await
            .unwrap());
    }
    let opened = open_store(ReconcileStore::Embedded { db: &db }).await.unwrap();
    let jobs = [job.job_id];
    let found = reconcile_jobs(opened.jobs.as_ref(), &jobs, false).await.unwrap();
    assert_eq!(jobs_exit_status(&found), EXIT_UNREPAIRED);
    assert_eq!(
        human_jobs(&found),
        format!(
            "job {}: 1 count(s) differ from its messages (1 of 2 messages folded) (not repaired: run again with \
             --repair to rewrite them)\n  applied: messages 2, stored 7\n",
            job.job_id
        )
    );
    let repaired = reconcile_jobs(opened.jobs.as_ref(), &jobs, true).await.unwrap();
    assert_eq!(jobs_exit_status(&repaired), 0);
    let clean = reconcile_jobs(opened.jobs.as_ref(), &jobs, false).await.unwrap();
    assert!(human_jobs(&clean).ends_with("counts match its messages (1 of 2 messages folded)\n"));
    assert!(reconcile_jobs(opened.jobs.as_ref(), &[JobId::random()], false)
        .await
        .is_err());
}
