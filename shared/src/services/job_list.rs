//! Paging through the jobs, newest first, with the status and source
//! filters applied to what the store reads, within a bound per page.

use time::OffsetDateTime;

use crate::domain::job_list::{JobCursor, JobListKey, JobQuery, MAX_JOBS_EXAMINED, MAX_JOB_PAGE};
use crate::domain::Job;
use crate::ports::{JobStore, StoreError};

/// Jobs read from the store at a time while a filter skips some: few
/// enough to stay near the page's need, enough to need few reads.
const READ_CHUNK: usize = 100;

/// One page, newest first; `next_cursor` is set when the listing goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    pub next_cursor: Option<JobCursor>,
}

/// Reads one page of the jobs `query` asks for. At most
/// [`MAX_JOBS_EXAMINED`] jobs are read from the store, matching or not:
/// when the filters skip that many before the page is full, the page is
/// short (possibly empty) and its cursor goes on from the last job read, so
/// following cursors still lists every matching job exactly once. `now`
/// tells the store where the newest jobs are.
pub async fn job_page<J: JobStore + ?Sized>(
    store: &J,
    query: &JobQuery,
    now: OffsetDateTime,
) -> Result<JobPage, StoreError> {
    let limit = query.limit.clamp(1, MAX_JOB_PAGE);
    let filtered = query.status.is_some() || query.source.is_some();
    let mut range = query.range();
    let mut jobs: Vec<Job> = Vec::new();
    let mut examined = 0;
    loop {
        // One more match than a page holds says whether another page follows.
        let wanted = limit + 1 - jobs.len();
        let chunk = if filtered { wanted.max(READ_CHUNK) } else { wanted };
        let ask = chunk.min(MAX_JOBS_EXAMINED - examined);
        let batch = store.list_jobs(&range, ask, now).await?;
        let exhausted = batch.len() < ask;
        for job in batch {
            examined += 1;
            let key = JobListKey::of_job(&job);
            range.before = Some(key);
            if !query.matches(&job) {
                continue;
            }
            if jobs.len() == limit {
                // A match beyond the page: the next page starts after this one's last.
                let next_cursor = jobs.last().map(|last| JobCursor::at(JobListKey::of_job(last)));
                return Ok(JobPage { jobs, next_cursor });
            }
            jobs.push(job);
        }
        if exhausted {
            return Ok(JobPage {
                jobs,
                next_cursor: None,
            });
        }
        if examined >= MAX_JOBS_EXAMINED {
            // Every job up to the last one read is accounted for.
            let next_cursor = range.before.map(JobCursor::at);
            return Ok(JobPage { jobs, next_cursor });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::memory::MemoryStore;
    use crate::domain::job_list::SourceFilter;
    use crate::domain::{JobId, JobStatus, NewJob};
    use crate::ports::JobStore;
    use time::macros::datetime;

    async fn store_of(sources: &[Option<&str>]) -> (MemoryStore, Vec<JobId>) {
        let store = MemoryStore::new();
        let mut ids = Vec::new();
        for (i, source) in sources.iter().enumerate() {
            let job = NewJob {
                job_id: JobId::random(),
                request_hash: String::new(),
                total: 1,
                deduplicated: 0,
                messages: 1,
                source: source.map(str::to_owned),
                reading: false,
                created_at: datetime!(2026-12-01 00:00:00 UTC) + time::Duration::seconds(i as i64),
                audit: None,
            };
            store.create_job(&job).await.unwrap();
            ids.push(job.job_id);
        }
        ids.reverse();
        (store, ids)
    }

    async fn all_pages(store: &MemoryStore, mut query: JobQuery) -> (Vec<JobId>, usize) {
        let (mut seen, mut pages) = (Vec::new(), 0);
        loop {
            let page = job_page(store, &query, datetime!(2026-12-07 00:00:00 UTC))
                .await
                .unwrap();
            pages += 1;
            assert!(page.jobs.len() <= query.limit);
            seen.extend(page.jobs.iter().map(|j| j.job_id));
            match page.next_cursor {
                Some(cursor) => query.cursor = Some(cursor),
                None => return (seen, pages),
            }
        }
    }

    #[tokio::test]
    async fn pages_follow_each_other_newest_first() {
        let (store, ids) = store_of(&[None; 7]).await;
        let (seen, pages) = all_pages(
            &store,
            JobQuery {
                limit: 3,
                ..JobQuery::default()
            },
        )
        .await;
        assert_eq!((seen, pages), (ids, 3));
    }

    /// A filter that matches only the oldest job among more than a page's
    /// bound of others: short pages, the cursor moving on, nothing skipped.
    #[tokio::test]
    async fn a_rare_match_is_reached_through_short_pages_within_the_bound() {
        let mut sources = vec![Some("s3://b/imports/rare.csv")];
        sources.extend(std::iter::repeat_n(None, MAX_JOBS_EXAMINED + 200));
        let (store, ids) = store_of(&sources).await;
        let query = JobQuery {
            source: Some(SourceFilter::File),
            limit: 5,
            ..JobQuery::default()
        };
        let first = job_page(&store, &query, datetime!(2026-12-07 00:00:00 UTC))
            .await
            .unwrap();
        assert!(first.jobs.is_empty(), "the bound stops the reading");
        assert!(first.next_cursor.is_some());
        let (seen, pages) = all_pages(&store, query).await;
        assert_eq!(seen, [*ids.last().unwrap()]);
        assert_eq!(pages, 2);
        let (queued, _) = all_pages(
            &store,
            JobQuery {
                status: Some(JobStatus::Queued),
                limit: 500,
                ..JobQuery::default()
            },
        )
        .await;
        assert_eq!(queued, ids, "every job, once, in order");
    }
}
