//! The job ceilings on a dropped file (issue 15, item 3): a file over a
//! ceiling fails as a whole, with the reason in its job and its
//! `job.json`, and nothing of it is queued; the first pass counts the whole
//! file before the first row is queued, however many chunks it spans.

use std::time::Duration;

use pointflow::domain::limits::Ceilings;
use pointflow::domain::packing::PackingLimits;
use pointflow::domain::{Job, JobStatus};
use pointflow::services::import::ImportSettings;
use pointflow_tests::import::ImportRig;

const SMALL: Ceilings = Ceilings {
    max_amount_per_accrual: 100,
    max_points_per_job: 250,
    max_accruals_per_job: 4,
};

fn rig(ceilings: Ceilings, chunk_bytes: u64) -> ImportRig {
    let settings = ImportSettings {
        chunk_bytes,
        packing: PackingLimits {
            max_accruals: 1,
            ..PackingLimits::default()
        },
        ceilings,
        ..ImportSettings::default()
    };
    ImportRig::sqlite(settings)
}

/// Runs the import function alone (no worker) until its queue is empty,
/// then says how many messages wait on the accrual queue.
async fn import_only(rig: &ImportRig) -> usize {
    let poll = Duration::from_millis(100);
    loop {
        let tasks = rig.tasks.receive_messages(1, poll).await.expect("receive task");
        if tasks.is_empty() {
            break;
        }
        assert_eq!(rig.invoke_import(&tasks).await, 0, "the import invocation failed");
    }
    let mut queued = 0;
    loop {
        let messages = rig.backend.queue.receive_messages(10, poll).await.expect("receive");
        if messages.is_empty() {
            return queued;
        }
        queued += messages.len();
        let receipts: Vec<String> = messages.into_iter().map(|m| m.receipt_handle).collect();
        rig.backend.queue.delete_messages(&receipts).await.expect("delete");
    }
}

fn csv(amounts: &[u64]) -> String {
    let mut file = String::from("member_id,point_type,amount\n");
    for (i, amount) in amounts.iter().enumerate() {
        file.push_str(&format!("m-{i},BONUS,{amount}\n"));
    }
    file
}

/// Drops `amounts` as a file and imports it without the worker: the job,
/// its `job.json` and how many messages were queued.
async fn import(rig: &ImportRig, key: &str, amounts: &[u64]) -> (Job, serde_json::Value, usize) {
    let task = rig.drop_file(key, csv(amounts).as_bytes()).await;
    rig.notify(&task).await;
    let queued = import_only(rig).await;
    let job = rig.job(&task).await;
    let pointer = rig
        .read(&format!("reports/{key}.job.json"))
        .await
        .expect("the job.json pointer");
    (job, serde_json::from_str(&pointer).expect("JSON"), queued)
}

fn assert_failed_whole(job: &Job, pointer: &serde_json::Value, queued: usize, reason: &str) {
    assert_eq!(queued, 0, "nothing of an over-ceiling file may be queued");
    assert_eq!(job.status(), JobStatus::Failed);
    assert_eq!((job.total, job.messages, job.applied), (0, 0, 0));
    assert_eq!(job.error.as_deref(), Some(reason));
    assert_eq!(pointer["error"].as_str(), Some(reason));
}

#[tokio::test]
async fn a_file_over_each_ceiling_fails_whole_and_queues_nothing() {
    let rig = rig(SMALL, 1 << 20);
    let (job, pointer, queued) = import(&rig, "imports/amount.csv", &[10, 101, 10]).await;
    assert_failed_whole(
        &job,
        &pointer,
        queued,
        "line 3: amount 101 is over the ceiling of 100 points per accrual; nothing was queued",
    );
    let (job, pointer, queued) = import(&rig, "imports/points.csv", &[100, 100, 51]).await;
    assert_failed_whole(
        &job,
        &pointer,
        queued,
        "the job credits 251 points in all, over the ceiling of 250 points per job; nothing was queued",
    );
    let (job, pointer, queued) = import(&rig, "imports/count.csv", &[1, 1, 1, 1, 1]).await;
    assert_failed_whole(
        &job,
        &pointer,
        queued,
        "the job holds 5 accruals, over the ceiling of 4 accruals per job; nothing was queued",
    );
    for member in ["m-0", "m-1", "m-2", "m-3", "m-4"] {
        assert_eq!(rig.backend.ledger.balances(member).await.unwrap(), []);
    }
}

#[tokio::test]
async fn a_file_just_under_every_ceiling_is_credited() {
    let rig = rig(SMALL, 1 << 20);
    let (job, pointer, queued) = import(&rig, "imports/under.csv", &[100, 100, 49, 1]).await;
    assert_eq!(queued, 4);
    assert_eq!((job.total, job.error.as_deref()), (4, None));
    assert!(pointer.get("error").is_none(), "{pointer}");
    // Bad rows are not accruals: they count toward no ceiling.
    let task = rig
        .drop_file(
            "imports/with-bad-rows.csv",
            b"member_id,point_type,amount\nm-1,BONUS,100\nbad id,BONUS,100\nm-2,BONUS,100\nm-3,BONUS,x\n",
        )
        .await;
    rig.notify(&task).await;
    assert_eq!(import_only(&rig).await, 2);
    assert_eq!(rig.job(&task).await.rejected, 2);
}

#[tokio::test]
async fn a_multi_chunk_file_over_the_points_ceiling_only_in_its_last_chunk_credits_nothing() {
    let ceilings = Ceilings {
        max_amount_per_accrual: 1_000,
        max_points_per_job: 10_000,
        max_accruals_per_job: 1_000,
    };
    // About 14 bytes a row: 40 rows per 512-byte chunk, 10 chunks; the
    // points pass 10,000 only at the last rows.
    let mut amounts = vec![25u64; 399];
    amounts.push(100);
    let rig = rig(ceilings, 512);
    let (job, pointer, queued) = import(&rig, "imports/late.csv", &amounts).await;
    assert_failed_whole(
        &job,
        &pointer,
        queued,
        "the job credits 10075 points in all, over the ceiling of 10000 points per job; nothing was queued",
    );
    rig.run_until_quiet().await;
    assert_eq!(rig.backend.ledger.balances("m-0").await.unwrap(), []);

    // The same file one point under is read in all its chunks and credited.
    amounts[399] = 25 - 1;
    let (job, _, queued) = import(&rig, "imports/late-under.csv", &amounts).await;
    assert_eq!((queued, job.total, job.error.as_deref()), (400, 400, None));
}
