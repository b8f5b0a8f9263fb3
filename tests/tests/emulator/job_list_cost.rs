//! What a page of `GET /v1/jobs` costs on DynamoDB, counted over the wire
//! (through the strict AWS layer to moto): the requests docs/data-model.md
//! states.

use std::time::Duration;

use pointflow::domain::job_list::{JobQuery, SourceFilter};
use pointflow::domain::{JobId, NewJob};
use pointflow::services::job_list::job_page;
use pointflow_tests::backend;
use time::macros::datetime;

/// 60 jobs: a page of 50 without filters is one `Query` of the index and
/// one `BatchGetItem` (51 keys: one more says a page follows); a filter
/// that matches none reads the 60 in one `Query` and one `BatchGetItem` too
/// (100 asked, 60 there) and ends the listing.
#[tokio::test]
async fn a_page_of_fifty_jobs_is_two_requests() {
    let Some(b) = backend::aws(Duration::from_secs(30), 3).await else {
        return;
    };
    // Mid-year: the walk starts and ends in one year bucket (on 31 December
    // it would also ask next year's, one more Query).
    let now = datetime!(2026-06-02 00:00:00 UTC);
    for i in 0..60 {
        let job = NewJob {
            job_id: JobId::random(),
            request_hash: String::new(),
            total: 1,
            deduplicated: 0,
            messages: 1,
            source: None,
            reading: false,
            created_at: now - Duration::from_secs(60 * i),
            audit: None,
        };
        b.jobs.create_job(&job).await.unwrap();
    }
    let requests = || (b.store_requests)();

    let before = requests();
    let page = job_page(b.jobs.as_ref(), &JobQuery::default(), now).await.unwrap();
    assert_eq!((page.jobs.len(), page.next_cursor.is_some()), (50, true));
    assert_eq!(requests() - before, 2, "one Query and one BatchGetItem");

    let before = requests();
    let files = JobQuery {
        source: Some(SourceFilter::File),
        ..JobQuery::default()
    };
    let page = job_page(b.jobs.as_ref(), &files, now).await.unwrap();
    assert_eq!((page.jobs.len(), page.next_cursor), (0, None));
    assert_eq!(
        requests() - before,
        2,
        "every job read once, in one Query and one BatchGetItem"
    );
}
