//! The importer's tunables, and the object metadata and limits it reads
//! files by.

use crate::domain::limits::Ceilings;
use crate::domain::packing::PackingLimits;
use crate::domain::readers::{FileFormat, LineFormat};

/// Default chunk size: at the measured parse and queue rates one chunk takes
/// seconds, far inside the function's timeout, and memory stays bounded by
/// the packing window and the chunk's own error report.
pub const DEFAULT_CHUNK_BYTES: u64 = 64 * 1024 * 1024;
/// Largest error-report part one chunk holds (it is held in memory until
/// the chunk is done): a chunk ends early when its part reaches this size.
pub const REPORT_PART_BYTES: u64 = 8 * 1024 * 1024;
/// Messages packed together: a member's rows within this window share a
/// message, and exact repeats within it are collapsed.
pub const WINDOW_MESSAGES: usize = 10;
/// Most distinct contents among one file's rows without `accrual_id`: their
/// occurrence counts (id scheme v2) are held in memory, about 42 bytes each
/// (170 MB at the bound) plus 20 each while they are written for the next
/// chunk (80 MB). Past it, a row without `accrual_id` whose content is new
/// is rejected (and reported); rows with an id are not affected.
pub const MAX_DERIVED_CONTENTS: usize = 4_000_000;
/// The object metadata naming a dropped file's campaign (`x-amz-meta-campaign`).
pub const CAMPAIGN_METADATA: &str = "campaign";
/// The object metadata declaring a dropped file's text encoding
/// (`x-amz-meta-encoding`: `cp949`, `shift_jis`, …); without it the encoding
/// is detected.
pub const ENCODING_METADATA: &str = "encoding";

/// The object metadata naming the sheet of a workbook to read
/// (`x-amz-meta-sheet`); without it, the first visible worksheet.
pub const SHEET_METADATA: &str = "sheet";
/// Largest workbook (`.xlsx`) imported, in bytes: a workbook is read whole
/// in one invocation (its bytes held in memory with its shared strings), so
/// past this size it fails as a whole before any row is read. Excel's own
/// bound of 1,048,576 rows a sheet keeps a workbook of this size within the
/// function's memory and time (docs/file-import.md has the measurements).
pub const DEFAULT_MAX_WORKBOOK_BYTES: u64 = 64 * 1024 * 1024;

/// Whether the object is read as an Excel workbook: its key ends in
/// `.xlsx` (any case), and this build reads workbooks.
pub fn is_workbook(key: &str) -> bool {
    cfg!(feature = "xlsx") && key.to_ascii_lowercase().ends_with(".xlsx")
}

/// How an object that is not a workbook is read: NDJSON if its key ends in
/// `.ndjson` or `.jsonl` (any case), else CSV.
pub fn line_format(key: &str) -> LineFormat {
    match FileFormat::from_name(key) {
        FileFormat::Ndjson => LineFormat::Ndjson,
        _ => LineFormat::Csv,
    }
}

/// The format the object is read in, as `job.json` names it.
pub fn file_format(key: &str) -> FileFormat {
    if is_workbook(key) {
        FileFormat::Xlsx
    } else {
        match line_format(key) {
            LineFormat::Csv => FileFormat::Csv,
            LineFormat::Ndjson => FileFormat::Ndjson,
        }
    }
}

/// Tunables of the importer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSettings {
    /// A chunk ends at the first row boundary after this many bytes.
    pub chunk_bytes: u64,
    pub packing: PackingLimits,
    /// Where error reports go (`reports/` → `reports/<key>.errors.csv`).
    pub report_prefix: String,
    /// Most distinct rows without `accrual_id` in one file
    /// ([`MAX_DERIVED_CONTENTS`]).
    pub max_derived_contents: usize,
    /// The job ceilings a whole file is held to before anything of it is
    /// queued (the API's, `domain::limits`).
    pub ceilings: Ceilings,
    /// Largest workbook read ([`DEFAULT_MAX_WORKBOOK_BYTES`]).
    pub max_workbook_bytes: u64,
}

impl Default for ImportSettings {
    fn default() -> Self {
        ImportSettings {
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            packing: PackingLimits::default(),
            report_prefix: "reports/".to_owned(),
            max_derived_contents: MAX_DERIVED_CONTENTS,
            ceilings: Ceilings::default(),
            max_workbook_bytes: DEFAULT_MAX_WORKBOOK_BYTES,
        }
    }
}
