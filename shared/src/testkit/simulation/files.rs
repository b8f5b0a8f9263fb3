//! The CSV files a seed drops in the bucket, and what each must end as:
//! rows of pooled accruals (with their `accrual_id`, shared with the API's
//! submissions), rows without `accrual_id` whose content repeats (each
//! occurrence its own accrual, id scheme v2), and a bad line or two that
//! the error report must list. Drawn from a generator of their own, so the
//! rest of a seed's campaign stays what it was.

use std::collections::BTreeSet;

use time::OffsetDateTime;

use super::scenario::{credit, Credit};

/// The bucket files are dropped in.
pub(crate) const BUCKET: &str = "sim-imports";

/// One line of a generated file after its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileRow {
    /// Pool accrual `a<i>`, with its id and the pool's content.
    Pooled(usize),
    /// A row without `accrual_id`: every occurrence of its content is an
    /// accrual of its own.
    Derived(Credit),
    /// A line the import rejects.
    Bad(BadRow),
}

/// Why a bad line is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadRow {
    /// `amount` 0.
    ZeroAmount,
    /// A `member_id` with a space.
    BadMember,
    /// Seven fields where the header has six (each valid: one error).
    FieldCount,
}

/// One file of the campaign.
#[derive(Debug, Clone)]
pub(crate) struct FileSpec {
    /// Its key in the bucket.
    pub key: String,
    /// Its `campaign` metadata: what its derived ids are namespaced by.
    pub campaign: String,
    pub rows: Vec<FileRow>,
    /// When it is dropped (virtual ms).
    pub at: u64,
    /// The same bytes dropped again at another key of the same campaign,
    /// at this time: a new job that must credit nothing new.
    pub again: Option<(String, u64)>,
    /// S3 delivers its (first) notification twice.
    pub duplicate_event: bool,
}

const HEADER: &str = "accrual_id,member_id,point_type,amount,apply_at,expires_at\n";

fn rfc3339(seconds: Option<i64>) -> String {
    seconds
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .map(crate::services::api::rfc3339)
        .unwrap_or_default()
}

fn line(id: &str, c: &Credit) -> String {
    format!(
        "{id},{},{},{},{},{}\n",
        c.member_id,
        c.point_type,
        c.amount,
        rfc3339(c.apply_at),
        rfc3339(c.expires_at)
    )
}

impl FileSpec {
    /// The file's bytes.
    pub(crate) fn render(&self, pool: &[Credit]) -> Vec<u8> {
        let mut text = HEADER.to_owned();
        for row in &self.rows {
            text.push_str(&match row {
                FileRow::Pooled(i) => line(&format!("a{i}"), &pool[*i]),
                FileRow::Derived(c) => line("", c),
                FileRow::Bad(BadRow::ZeroAmount) => ",m0,WELCOME,0,,\n".to_owned(),
                FileRow::Bad(BadRow::BadMember) => ",bad member,WELCOME,5,,\n".to_owned(),
                FileRow::Bad(BadRow::FieldCount) => ",m0,WELCOME,5,,,7th\n".to_owned(),
            });
        }
        text.into_bytes()
    }

    /// Rows that are accruals (before repeats are collapsed).
    pub(crate) fn good_rows(&self) -> u64 {
        self.rows.iter().filter(|r| !matches!(r, FileRow::Bad(_))).count() as u64
    }

    /// The file's line numbers of its bad rows (the header is line 1).
    pub(crate) fn bad_lines(&self) -> BTreeSet<u64> {
        self.rows
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r, FileRow::Bad(_)))
            .map(|(i, _)| i as u64 + 2)
            .collect()
    }
}

/// A seed's files and how the import function reads them.
#[derive(Debug, Clone, Default)]
pub(crate) struct FileDrops {
    pub files: Vec<FileSpec>,
    /// `ImportSettings::chunk_bytes`: small, so a file spans several chunks.
    pub chunk_bytes: u64,
    /// Import invocations at once (`ImportMaximumConcurrency`).
    pub concurrency: usize,
}

/// Whether a seed drops a file: one in eight (a file costs a seed about as
/// much again as the rest of its campaign).
fn drops_a_file(rng: &mut fastrand::Rng) -> bool {
    rng.u8(..8) == 0
}

/// Whether `seed` drops a file, without drawing the rest.
pub(crate) fn seed_drops_a_file(seed: u64) -> bool {
    drops_a_file(&mut fastrand::Rng::with_seed(seed ^ 0x5eed_5ce4_a710_0003))
}

/// The files of `seed`: in an eighth of the seeds one file of 4–16 rows,
/// from a generator of its own.
pub(crate) fn draw(seed: u64, pool: &[Credit], members: usize, point_types: usize) -> FileDrops {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed_5ce4_a710_0003);
    if !drops_a_file(&mut rng) {
        return FileDrops::default();
    }
    // A few contents without id, each repeated: their occurrences are
    // numbered across chunks.
    let contents: Vec<Credit> = (0..rng.usize(1..=3))
        .map(|_| credit(&mut rng, members, point_types))
        .collect();
    let mut rows: Vec<FileRow> = (0..rng.usize(4..=16))
        .map(|_| match rng.u8(..5) {
            0 | 1 => FileRow::Pooled(rng.usize(..pool.len())),
            _ => FileRow::Derived(contents[rng.usize(..contents.len())].clone()),
        })
        .collect();
    for _ in 0..rng.usize(1..=2) {
        let bad = [BadRow::ZeroAmount, BadRow::BadMember, BadRow::FieldCount][rng.usize(..3)];
        rows.insert(rng.usize(..=rows.len()), FileRow::Bad(bad));
    }
    let at = rng.u64(0..=20_000);
    let again = (rng.u8(..3) == 0).then(|| (format!("imports/sim-{seed}-again.csv"), rng.u64(0..=40_000)));
    let file = FileSpec {
        key: format!("imports/sim-{seed}.csv"),
        campaign: format!("sim-{seed}-file"),
        rows,
        at,
        again,
        duplicate_event: rng.u8(..4) == 0,
    };
    FileDrops {
        files: vec![file],
        chunk_bytes: rng.u64(100..=300),
        concurrency: rng.usize(1..=2),
    }
}
