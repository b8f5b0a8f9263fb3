//! The job listing cases of the contract suite: every store lists jobs
//! newest first (creation time, then job id), pages through many of them
//! with a small limit, and filters by status, source and creation time;
//! the API refuses a bad parameter of the listing on every store.

use pointflow::domain::job_list::{JobQuery, JobRange, SourceFilter};
use pointflow::domain::{ChunkEnd, JobId, JobStatus, MessageCounts, NewJob};
use pointflow::services::api::{ApiRequest, ApiService, ApiSettings};
use pointflow::services::job_list::job_page;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::{chunk, new_job};
use crate::backend::Backend;

/// The clock the listing cases read at: after every job they create, which
/// spread over three years (so over DynamoDB's year buckets).
const LISTED_AT: OffsetDateTime = datetime!(2028-06-01 00:00:00 UTC);

/// A job created at `created_at`, with `id`.
fn job_at(id: JobId, created_at: OffsetDateTime) -> NewJob {
    NewJob {
        job_id: id,
        created_at,
        ..new_job(1, 1, "list")
    }
}

/// Every page of `query`, following cursors: the job ids in the order
/// listed, and the pages' sizes.
async fn every_page(b: &Backend, mut query: JobQuery) -> (Vec<JobId>, Vec<usize>) {
    let (mut ids, mut sizes) = (Vec::new(), Vec::new());
    loop {
        let page = job_page(b.jobs.as_ref(), &query, LISTED_AT).await.unwrap();
        sizes.push(page.jobs.len());
        ids.extend(page.jobs.iter().map(|j| j.job_id));
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => return (ids, sizes),
        }
        assert!(sizes.len() < 100, "the cursors go round in circles");
    }
}

/// 23 jobs over three years (one "before" Pointflow's first year, three
/// created in one millisecond) are listed newest first, ties by job id
/// descending, in pages of 4 that follow each other without a gap or a
/// repeat; the store's own range (below a key, after a time) agrees.
pub async fn jobs_are_listed_newest_first_in_pages(b: &Backend) {
    let base = datetime!(2026-03-01 10:00:00.250 UTC);
    let mut created: Vec<(OffsetDateTime, JobId)> = Vec::new();
    for i in 0..18 {
        // Every 40 days: 2026 into 2027.
        created.push((base + Duration::days(40 * i), JobId::random()));
    }
    // One millisecond, three jobs: the job id decides.
    let tie = base + Duration::days(100) + Duration::microseconds(300);
    for n in [7u128, 3, 11] {
        created.push((tie, JobId(Uuid::from_u128(n))));
    }
    created.push((datetime!(2025-12-31 23:59:59.999 UTC), JobId::random()));
    created.push((datetime!(2028-05-31 23:00:00 UTC), JobId::random()));
    // Created in no particular order.
    created.sort_by_key(|(_, id)| *id);
    for (at, id) in &created {
        b.jobs.create_job(&job_at(*id, *at)).await.unwrap();
    }
    let truncated = |t: OffsetDateTime| t.unix_timestamp_nanos() / 1_000_000;
    let mut expected = created.clone();
    expected.sort_by_key(|(at, id)| std::cmp::Reverse((truncated(*at), *id)));
    let expected: Vec<JobId> = expected.into_iter().map(|(_, id)| id).collect();

    let (listed, sizes) = every_page(
        b,
        JobQuery {
            limit: 4,
            ..JobQuery::default()
        },
    )
    .await;
    assert_eq!(listed, expected);
    assert_eq!(sizes, [4, 4, 4, 4, 4, 3]);

    let one_page = job_page(b.jobs.as_ref(), &JobQuery::default(), LISTED_AT)
        .await
        .unwrap();
    assert_eq!(one_page.jobs.iter().map(|j| j.job_id).collect::<Vec<_>>(), expected);
    assert_eq!(one_page.next_cursor, None, "the last page has no cursor");
    let view = one_page.jobs.iter().find(|j| j.job_id == created[0].1).unwrap();
    assert_eq!(view.created_at, created[0].0, "the job as stored");

    // The range itself: below the 5th job's key, created after the 12th's time.
    let keyed = job_page(
        b.jobs.as_ref(),
        &JobQuery {
            limit: 12,
            ..JobQuery::default()
        },
        LISTED_AT,
    )
    .await
    .unwrap();
    let range = JobRange {
        before: Some(pointflow::domain::job_list::JobListKey::of_job(&keyed.jobs[4])),
        created_after: Some(keyed.jobs[11].created_at),
    };
    let between: Vec<JobId> = b
        .jobs
        .list_jobs(&range, 100, LISTED_AT)
        .await
        .unwrap()
        .iter()
        .map(|j| j.job_id)
        .collect();
    assert_eq!(between, expected[5..11]);
    let first_two = b.jobs.list_jobs(&range, 2, LISTED_AT).await.unwrap();
    assert_eq!(first_two.iter().map(|j| j.job_id).collect::<Vec<_>>(), expected[5..7]);
}

/// Each filter lists exactly its jobs, newest first, and paging a filtered
/// listing with a small limit lists each exactly once.
pub async fn job_listing_filters_by_status_source_and_creation_time(b: &Backend) {
    let at = |minutes: i64| datetime!(2027-02-01 00:00:00 UTC) + Duration::minutes(minutes);
    let api = |minutes, total| NewJob {
        created_at: at(minutes),
        ..new_job(total, 1, "api")
    };
    let file = |minutes, key: &str| NewJob {
        created_at: at(minutes),
        source: Some(format!("s3://bucket/imports/{key}")),
        reading: true,
        ..new_job(0, 0, "file")
    };
    let counts = |applied, failed| MessageCounts {
        applied,
        failed,
        ..MessageCounts::default()
    };
    let queued = api(0, 2);
    let running = api(1, 2);
    let completed = api(2, 2);
    let with_errors = api(3, 2);
    let importing = file(4, "2027/a.csv");
    let failed = file(5, "2027/b.csv");
    let imported = file(6, "2026/c.csv");
    for job in [
        &queued,
        &running,
        &completed,
        &with_errors,
        &importing,
        &failed,
        &imported,
    ] {
        b.jobs.create_job(job).await.unwrap();
    }
    let fold = |job: &NewJob, counts| {
        let id = job.job_id;
        async move { b.jobs.fold_message(id, 0, counts, &[], super::now()).await.unwrap() }
    };
    fold(&running, counts(1, 0)).await;
    fold(&completed, counts(2, 0)).await;
    fold(&with_errors, counts(1, 1)).await;
    let end = ChunkEnd::Failed {
        reason: "no header".into(),
    };
    b.jobs
        .record_chunk(failed.job_id, &chunk(0, 0, 1, end), super::now())
        .await
        .unwrap();
    b.jobs
        .record_chunk(imported.job_id, &chunk(0, 1, 0, ChunkEnd::Last), super::now())
        .await
        .unwrap();
    fold(&imported, counts(1, 0)).await;

    let ids = |jobs: &[&NewJob]| jobs.iter().map(|j| j.job_id).collect::<Vec<_>>();
    let status = |status| JobQuery {
        status: Some(status),
        ..JobQuery::default()
    };
    let source = |source| JobQuery {
        source: Some(source),
        ..JobQuery::default()
    };
    let cases = [
        (status(JobStatus::Queued), ids(&[&queued])),
        (status(JobStatus::Running), ids(&[&running])),
        (status(JobStatus::Completed), ids(&[&imported, &completed])),
        (status(JobStatus::CompletedWithErrors), ids(&[&with_errors])),
        (status(JobStatus::Importing), ids(&[&importing])),
        (status(JobStatus::Failed), ids(&[&failed])),
        (
            source(SourceFilter::Api),
            ids(&[&with_errors, &completed, &running, &queued]),
        ),
        (source(SourceFilter::File), ids(&[&imported, &failed, &importing])),
        (
            source(SourceFilter::Prefix("s3://bucket/imports/2027/".into())),
            ids(&[&failed, &importing]),
        ),
        (source(SourceFilter::Prefix("s3://other/".into())), ids(&[])),
        (
            JobQuery {
                created_after: Some(at(3)),
                ..JobQuery::default()
            },
            ids(&[&imported, &failed, &importing]),
        ),
        (
            JobQuery {
                created_after: Some(at(1)),
                source: Some(SourceFilter::Api),
                status: Some(JobStatus::Completed),
                ..JobQuery::default()
            },
            ids(&[&completed]),
        ),
    ];
    for (query, expected) in cases {
        let (listed, _) = every_page(b, query.clone()).await;
        assert_eq!(listed, expected, "{query:?}");
        // One at a time: the filter still pages, each job once.
        let (paged, _) = every_page(
            b,
            JobQuery {
                limit: 1,
                ..query.clone()
            },
        )
        .await;
        assert_eq!(paged, expected, "{query:?} one per page");
    }
}

/// `GET /v1/jobs` with an unknown, repeated or bad parameter is `400
/// invalid_query_parameter` naming it, on every store; a good one is `200`.
pub async fn a_bad_job_list_parameter_is_refused_naming_it(b: &Backend) {
    let api = ApiService::new(
        b.jobs.clone(),
        b.ledger.clone(),
        b.queue.clone(),
        ApiSettings::default(),
    );
    let get = |query: &[(&str, &str)]| ApiRequest {
        method: "GET".into(),
        path: "/v1/jobs".into(),
        query: query.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        ..ApiRequest::default()
    };
    for (query, name) in [
        (vec![("limit", "0")], "limit"),
        (vec![("status", "done")], "status"),
        (vec![("source", "ftp://x")], "source"),
        (vec![("created_after", "2026-13-01")], "created_after"),
        (vec![("cursor", "not-a-cursor")], "cursor"),
        (vec![("statuses", "queued")], "statuses"),
        (vec![("limit", "5"), ("limit", "6")], "limit"),
    ] {
        let response = api.handle(&get(&query)).await;
        assert_eq!(response.status, 400, "{query:?}: {}", response.body);
        assert_eq!(response.body["error"]["code"], "invalid_query_parameter");
        let message = response.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(name), "{query:?}: {message}");
    }
    let response = api.handle(&get(&[("status", "queued"), ("limit", "5")])).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body["jobs"], serde_json::json!([]));
    assert!(response.body.get("next_cursor").is_none(), "{}", response.body);
}
