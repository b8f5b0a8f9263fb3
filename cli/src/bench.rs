//! `pointflow bench csv FILE`: how fast one core turns a CSV file into
//! validated accruals with their ids (id scheme v2 for rows without
//! `accrual_id`, as the importer derives them), and how much memory that
//! takes (the import's parsing half, without queueing or storage).

use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use pointflow::domain::accrual_ids::{campaign_of_object, ContentIds};
use pointflow::domain::readers::csv::{CsvAccruals, CsvRow};
use pointflow::services::import::service::MAX_DERIVED_CONTENTS;

use crate::demo::peak_rss_kib;

/// What parsing a file measured.
#[derive(Debug, Clone, Copy)]
pub struct CsvParseReport {
    pub bytes: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub elapsed: Duration,
    pub peak_rss_kib: Option<u64>,
}

/// Parses `file` on the calling thread, as one import chunk would.
pub fn bench_csv_parse(file: &Path) -> anyhow::Result<CsvParseReport> {
    let bytes = std::fs::metadata(file)
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    let input = BufReader::with_capacity(1 << 16, File::open(file)?);
    let started = Instant::now();
    let name = file.display().to_string();
    let mut rows = CsvAccruals::new(input, &format!("file://{name}"))?;
    let mut ids = ContentIds::new(&campaign_of_object(&name, None));
    let (mut accepted, mut rejected) = (0u64, 0u64);
    while let Some((_, row)) = rows.next_row()? {
        match row {
            CsvRow::Accrual(accrual) if !rows.row_has_accrual_id() => {
                match ids.next_id_within(&accrual, MAX_DERIVED_CONTENTS) {
                    Some(_) => accepted += 1,
                    None => rejected += 1,
                }
            }
            CsvRow::Accrual(_) => accepted += 1,
            CsvRow::Rejected(_) => rejected += 1,
        }
    }
    Ok(CsvParseReport {
        bytes,
        accepted,
        rejected,
        elapsed: started.elapsed(),
        peak_rss_kib: peak_rss_kib(),
    })
}

impl fmt::Display for CsvParseReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(f64::EPSILON);
        let rows = self.accepted + self.rejected;
        writeln!(
            f,
            "rows        {rows} ({} accepted, {} rejected)",
            self.accepted, self.rejected
        )?;
        writeln!(f, "file        {:.1} MB", self.bytes as f64 / 1e6)?;
        writeln!(f, "time        {secs:.2} s on one thread")?;
        writeln!(
            f,
            "throughput  {:.0} rows/s, {:.1} MB/s",
            rows as f64 / secs,
            self.bytes as f64 / 1e6 / secs
        )?;
        match self.peak_rss_kib {
            Some(kib) => write!(f, "peak RSS    {:.1} MiB", kib as f64 / 1024.0),
            None => write!(f, "peak RSS    unknown (no /proc)"),
        }
    }
}
