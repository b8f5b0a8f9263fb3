//! One reader per file format, each turning its input into the same rows:
//! the fields of a row, as text, checked by [`crate::domain::row_rules`]
//! into an accrual or the report lines naming each bad field
//! ([`csv::CsvRow`]). Whatever the format, a row then gets the same id
//! derivation, packing and report from the bucket import
//! (`services::import::parse`), `pointflow local import` (the same
//! importer) and `pointflow submit` (the client's chunker).
//!
//! - [`csv`]: a CSV file, in any encoding of [`crate::domain::text_encoding`];
//!   read in chunks, resumed at a line start.
//! - [`ndjson`]: one JSON object per line, with the API's field names; read
//!   in chunks like a CSV.
//! - [`xlsx`]: one sheet of an Excel workbook; read whole.
//! - [`source`]: what the line readers parse: the file's bytes, or a UTF-16
//!   file decoded to UTF-8, with the file offsets of its line ends.
//!
//! They live in the domain, not in the import service: they are pure over
//! a `Read` (no bucket, queue or runtime), the client links them without the
//! service's ports, and the fuzz targets drive them directly. What depends
//! on where a file comes from (metadata, chunk hand-over, report parts)
//! stays in `services::import`.

use std::io::Read;

use encoding_rs::Encoding;

use crate::domain::text_encoding::FileEncoding;

pub mod csv;
pub mod ndjson;
pub mod source;
#[cfg(feature = "xlsx")]
pub mod xlsx;

#[cfg(all(test, feature = "xlsx"))]
mod catalogue;

use self::csv::{sniff_input, CsvAccruals, CsvFileError, CsvRow};
use self::ndjson::NdjsonAccruals;

/// A file's format, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Csv,
    Ndjson,
    Xlsx,
}

impl FileFormat {
    /// The format of a file or object key: `.ndjson` or `.jsonl` is NDJSON,
    /// `.xlsx` a workbook, anything else CSV (any case).
    pub fn from_name(name: &str) -> FileFormat {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".ndjson") || lower.ends_with(".jsonl") {
            FileFormat::Ndjson
        } else if lower.ends_with(".xlsx") {
            FileFormat::Xlsx
        } else {
            FileFormat::Csv
        }
    }

    /// As `job.json` names it: `csv`, `ndjson`, `xlsx`.
    pub fn name(self) -> &'static str {
        match self {
            FileFormat::Csv => "csv",
            FileFormat::Ndjson => "ndjson",
            FileFormat::Xlsx => "xlsx",
        }
    }
}

/// The line-oriented formats, which are read in chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFormat {
    Csv,
    Ndjson,
}

/// A reader of a line-oriented file, from its start or from a line start.
pub enum LineRows<R: Read> {
    /// Boxed, as the other: each reader holds its buffers' state inline.
    Csv(Box<CsvAccruals<R>>),
    Ndjson(Box<NdjsonAccruals<R>>),
}

impl<R: Read> LineRows<R> {
    /// Reads `input` in `format` and `encoding`: from the file's start
    /// (`resume` `None`: a CSV's header is read), or from a line start,
    /// with the header's columns (a CSV's) and the number of that line.
    pub fn open(
        format: LineFormat,
        input: R,
        resume: Option<(&[String], u64)>,
        file_identity: &str,
        encoding: &'static Encoding,
    ) -> Result<Self, CsvFileError> {
        Ok(match (format, resume) {
            (LineFormat::Csv, None) => LineRows::Csv(Box::new(CsvAccruals::new_in(input, file_identity, encoding)?)),
            (LineFormat::Csv, Some((columns, line))) => LineRows::Csv(Box::new(CsvAccruals::resume_in(
                input,
                columns,
                line,
                file_identity,
                encoding,
            )?)),
            (LineFormat::Ndjson, None) => {
                LineRows::Ndjson(Box::new(NdjsonAccruals::new_in(input, file_identity, encoding)))
            }
            (LineFormat::Ndjson, Some((_, line))) => LineRows::Ndjson(Box::new(NdjsonAccruals::resume_in(
                input,
                line,
                file_identity,
                encoding,
            ))),
        })
    }

    /// The next row and its line, or `None` at the end of the file.
    pub fn next_row(&mut self) -> Result<Option<(u64, CsvRow)>, CsvFileError> {
        match self {
            LineRows::Csv(r) => r.next_row(),
            LineRows::Ndjson(r) => r.next_row(),
        }
    }

    /// Whether the row last returned gave its own `accrual_id`.
    pub fn row_has_accrual_id(&self) -> bool {
        match self {
            LineRows::Csv(r) => r.row_has_accrual_id(),
            LineRows::Ndjson(r) => r.row_has_accrual_id(),
        }
    }

    /// The row last returned, as the error report shows it.
    pub fn raw_row(&self) -> String {
        match self {
            LineRows::Csv(r) => r.raw_row(),
            LineRows::Ndjson(r) => r.raw_row(),
        }
    }

    /// Bytes of the file read up to the end of the last row returned (just
    /// past a line end, or the end), and the number of the next line.
    pub fn consumed(&self) -> (u64, u64) {
        match self {
            LineRows::Csv(r) => r.consumed(),
            LineRows::Ndjson(r) => r.consumed(),
        }
    }

    /// Whether reading stopped early (a CSV's unclosed quote).
    pub fn stopped(&self) -> bool {
        match self {
            LineRows::Csv(r) => r.stopped(),
            LineRows::Ndjson(_) => false,
        }
    }

    /// The header's columns (a CSV's; none for NDJSON, whose lines name
    /// their fields).
    pub fn columns(&self) -> &[String] {
        match self {
            LineRows::Csv(r) => r.columns(),
            LineRows::Ndjson(_) => &[],
        }
    }
}

/// One row of a whole file, as [`read_file`] gives it.
pub struct FileRow {
    /// The line (a workbook's: the row Excel shows).
    pub line: u64,
    pub row: CsvRow,
    /// Whether it gave its own `accrual_id` (else one is derived).
    pub has_accrual_id: bool,
}

/// What [`read_file`] read besides the rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRead {
    /// The text encoding, and why (none for a workbook).
    pub encoding: Option<FileEncoding>,
    /// The sheet read (a workbook's).
    pub sheet: Option<String>,
}

/// Reads a whole file in `format` from its start, handing each row to
/// `each` until it answers false: the encoding chosen as the importer
/// chooses it (a byte-order mark, else `declared`, else detected), the
/// sheet as it does (`sheet`, else the first visible worksheet). A
/// workbook is read into memory first. Row ids of scheme v1 come from
/// `file_identity`.
pub fn read_file(
    mut input: impl Read,
    format: FileFormat,
    declared: Option<FileEncoding>,
    sheet: Option<&str>,
    file_identity: &str,
    mut each: impl FnMut(FileRow) -> bool,
) -> Result<FileRead, CsvFileError> {
    let line_format = match format {
        FileFormat::Csv => LineFormat::Csv,
        FileFormat::Ndjson => LineFormat::Ndjson,
        #[cfg(feature = "xlsx")]
        FileFormat::Xlsx => {
            let mut bytes = Vec::new();
            input.read_to_end(&mut bytes).map_err(CsvFileError::Prefix)?;
            let read = xlsx::read_rows(bytes, sheet, file_identity, |row| {
                each(FileRow {
                    line: row.line,
                    row: row.row,
                    has_accrual_id: row.has_accrual_id,
                })
            })?;
            return Ok(FileRead {
                encoding: None,
                sheet: Some(read.sheet),
            });
        }
        #[cfg(not(feature = "xlsx"))]
        FileFormat::Xlsx => {
            return Err(CsvFileError::NotWorkbook {
                detail: "this build does not read workbooks".to_owned(),
            })
        }
    };
    let _ = sheet;
    let (encoding, input) = sniff_input(input, declared)?;
    let mut rows = LineRows::open(line_format, input, None, file_identity, encoding.encoding)?;
    while let Some((line, row)) = rows.next_row()? {
        let has_accrual_id = rows.row_has_accrual_id();
        if !each(FileRow {
            line,
            row,
            has_accrual_id,
        }) {
            break;
        }
    }
    Ok(FileRead {
        encoding: Some(encoding),
        sheet: None,
    })
}
