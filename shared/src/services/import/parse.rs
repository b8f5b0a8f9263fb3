//! The parsing half of one chunk: rows read and validated, ids derived for
//! rows without `accrual_id`, repeats collapsed within a packing window,
//! windows handed to the queueing side, bad rows written as report lines.
//! Pure over a reader and a sink, so [`crate::testkit::fuzzing`] runs it
//! without a bucket or a runtime.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use crate::domain::accrual_ids::ContentIds;
use crate::domain::csv_rows::{CsvAccruals, CsvFileError, CsvRow, RowError};
use crate::domain::Accrual;
use crate::services::import::report;
use crate::services::import::service::{ImportSettings, REPORT_PART_BYTES, WINDOW_MESSAGES};

/// Accruals of one packing window, from the parsing thread.
pub(crate) struct Window {
    pub(crate) accruals: Vec<Accrual>,
}

/// What the parsing thread found, besides the windows it sent.
pub(crate) struct Parsed {
    pub(crate) deduplicated: u64,
    pub(crate) rejected: u64,
    /// Report lines (no header).
    pub(crate) report: Vec<u8>,
    pub(crate) columns: Vec<String>,
    /// `None` at the end of the file; else where the next chunk starts.
    pub(crate) next: Option<(u64, u64)>,
}

/// Parses one chunk on a blocking thread, handing packing windows to
/// `send` (false: the queueing side gave up) and collecting everything else.
/// With `ids` (id scheme v2), rows without `accrual_id` get theirs from it,
/// which counts them, so that it goes on to the next chunk; without, they
/// keep the v1 ids derived from `identity` and the line (a file whose
/// import started before v2).
#[allow(clippy::too_many_arguments)]
pub(crate) fn parse_chunk<R: std::io::Read>(
    reader: R,
    columns: Option<Vec<String>>,
    first_line: u64,
    offset: u64,
    size: u64,
    identity: &str,
    mut ids: Option<&mut ContentIds>,
    settings: &ImportSettings,
    mut send: impl FnMut(Window) -> bool,
) -> Result<Parsed, CsvFileError> {
    let mut rows = match &columns {
        None => CsvAccruals::new(reader, identity)?,
        Some(columns) => CsvAccruals::resume(reader, columns, first_line, identity)?,
    };
    let window_size = settings.packing.max_accruals.saturating_mul(WINDOW_MESSAGES).max(1);
    let mut parsed = Parsed {
        deduplicated: 0,
        rejected: 0,
        report: Vec::new(),
        columns: rows.columns().to_vec(),
        next: None,
    };
    let mut window: Vec<Accrual> = Vec::with_capacity(window_size);
    // accrual_id → (line, index in `window`), for this window only.
    let mut seen: HashMap<String, (u64, usize)> = HashMap::new();
    let mut at_end = true;
    while let Some((line, mut row)) = rows.next_row()? {
        if let Some(ids) = ids.as_deref_mut() {
            if !rows.row_has_accrual_id() {
                row = derive_id(row, line, ids, settings.max_derived_contents, || rows.raw_row());
            }
        }
        match row {
            CsvRow::Accrual(accrual) => match seen.entry(accrual.accrual_id.clone()) {
                Entry::Vacant(slot) => {
                    slot.insert((line, window.len()));
                    window.push(accrual);
                }
                Entry::Occupied(first) => {
                    let (first_line, index) = *first.get();
                    if window[index] == accrual {
                        parsed.deduplicated += 1;
                    } else {
                        // One message must not hold one id twice (a
                        // transaction may not touch an item twice).
                        parsed.rejected += 1;
                        report::write_errors(
                            &mut parsed.report,
                            &[RowError {
                                line,
                                column: "accrual_id".to_owned(),
                                reason: format!("repeats the accrual_id of line {first_line} with different content"),
                                raw: rows.raw_row(),
                            }],
                        );
                    }
                }
            },
            CsvRow::Rejected(errors) => {
                parsed.rejected += 1;
                report::write_errors(&mut parsed.report, &errors);
            }
        }
        if window.len() >= window_size {
            seen.clear();
            let full = std::mem::replace(&mut window, Vec::with_capacity(window_size));
            if !send(Window { accruals: full }) {
                // The queueing side gave up; its error is what gets reported.
                return Ok(parsed);
            }
        }
        if rows.stopped() {
            // Past a row over the bound (an unclosed quote) nothing tells
            // rows apart: the file ends here, with every earlier row kept.
            break;
        }
        let (read, _) = rows.consumed();
        // A chunk also ends when its report part is full: a short row whose
        // every field is bad gives several report lines, each repeating the
        // row, so a whole 64 MiB chunk of them would report gigabytes.
        if read >= settings.chunk_bytes || parsed.report.len() as u64 >= settings.chunk_bytes.min(REPORT_PART_BYTES) {
            // At the end of the file if the object's size says so (a size of
            // 0 means unknown: the next chunk will find out).
            at_end = size > 0 && offset + read >= size;
            break;
        }
    }
    if !window.is_empty() && !send(Window { accruals: window }) {
        return Ok(parsed);
    }
    if !at_end {
        let (read, next_line) = rows.consumed();
        parsed.next = Some((offset + read, next_line));
    }
    Ok(parsed)
}

/// Gives `row`, which came without `accrual_id`, its scheme-v2 id; rejects
/// it when its content is new and `ids` already counts `limit` contents
/// (the bound on the importer's memory, [`ImportSettings::max_derived_contents`]).
fn derive_id(row: CsvRow, line: u64, ids: &mut ContentIds, limit: usize, raw: impl FnOnce() -> String) -> CsvRow {
    let CsvRow::Accrual(mut accrual) = row else {
        return row;
    };
    match ids.next_id_within(&accrual, limit) {
        Some(id) => {
            accrual.accrual_id = id;
            CsvRow::Accrual(accrual)
        }
        None => CsvRow::Rejected(vec![RowError {
            line,
            column: "accrual_id".to_owned(),
            reason: format!(
                "is empty, and the file already has {limit} distinct rows without accrual_id, the most one \
                 file may have: give this row an accrual_id, or drop the rows this report lists as a file \
                 of their own in the same campaign"
            ),
            raw: raw(),
        }]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row over the bound (an unclosed quote) ends the file in the chunk
    /// that meets it, whatever the chunk size: no continuation resumes
    /// inside the quoted field, and the rows before it are all sent.
    #[test]
    fn an_unclosed_quote_ends_the_file_with_every_earlier_row_sent() {
        let mut file = b"member_id,point_type,amount\n".to_vec();
        for i in 0..500 {
            file.extend_from_slice(format!("m-{i},P,1\n").as_bytes());
        }
        file.extend_from_slice(b"m-x,P,\"1\n");
        for i in 0..20_000 {
            file.extend_from_slice(format!("m-{i},P,1\n").as_bytes());
        }
        let settings = ImportSettings {
            chunk_bytes: 4096,
            ..ImportSettings::default()
        };
        let size = file.len() as u64;
        let (mut offset, mut line, mut columns) = (0u64, 1u64, None);
        let (mut sent, mut rejected, mut report) = (0usize, 0u64, Vec::new());
        loop {
            let parsed = parse_chunk(
                &file[offset as usize..],
                columns.take(),
                line,
                offset,
                size,
                "f",
                None,
                &settings,
                |window| {
                    sent += window.accruals.len();
                    true
                },
            )
            .unwrap();
            rejected += parsed.rejected;
            report.extend_from_slice(&parsed.report);
            match parsed.next {
                Some((next_offset, next_line)) => {
                    (offset, line, columns) = (next_offset, next_line, Some(parsed.columns));
                }
                None => break,
            }
        }
        assert_eq!((sent, rejected), (500, 1));
        let report = String::from_utf8(report).unwrap();
        assert!(report.starts_with("502,(row),"), "{report}");
        assert!(offset < 64 * 1024, "the file ended near the quote, at byte {offset}");
    }

    /// A chunk whose report part fills up ends there, and the next chunk
    /// picks up at the next row: the report held in memory stays bounded
    /// whatever the chunk size.
    #[test]
    fn a_chunk_ends_when_its_report_part_is_full() {
        let mut file = b"member_id,point_type,amount\n".to_vec();
        for _ in 0..1000 {
            file.extend_from_slice(b"bad id,P,0\n");
        }
        let settings = ImportSettings {
            chunk_bytes: 4096,
            ..ImportSettings::default()
        };
        let size = file.len() as u64;
        let (mut offset, mut line, mut columns, mut rejected, mut chunks) = (0u64, 1u64, None, 0u64, 0);
        loop {
            let parsed = parse_chunk(
                &file[offset as usize..],
                columns.take(),
                line,
                offset,
                size,
                "f",
                None,
                &settings,
                |_| true,
            )
            .unwrap();
            chunks += 1;
            rejected += parsed.rejected;
            assert!(parsed.report.len() < 4096 + 200, "{} report bytes", parsed.report.len());
            match parsed.next {
                Some((next_offset, next_line)) => {
                    assert!(next_offset > offset);
                    (offset, line, columns) = (next_offset, next_line, Some(parsed.columns));
                }
                None => break,
            }
        }
        assert_eq!(rejected, 1000);
        // 11 bytes of input a row, about 160 bytes of report: the report,
        // not the bytes read, ends these chunks.
        assert!(chunks > size / 4096 * 10, "{chunks} chunks");
    }

    /// Past the bound on distinct contents, a row without `accrual_id` whose
    /// content is new is rejected, naming its line and column; repeats of
    /// contents already counted, and rows with their own id, still pass.
    #[test]
    fn past_the_bound_new_contents_without_id_are_rejected() {
        let file = b"member_id,point_type,amount,accrual_id\nm-1,P,1,\nm-2,P,1,\nm-3,P,1,\nm-1,P,1,\nm-4,P,1,own-4\n";
        let settings = ImportSettings {
            max_derived_contents: 2,
            ..ImportSettings::default()
        };
        let mut ids = ContentIds::new("c");
        let mut accepted = Vec::new();
        let parsed = parse_chunk(
            &file[..],
            None,
            1,
            0,
            file.len() as u64,
            "f",
            Some(&mut ids),
            &settings,
            |w| {
                accepted.extend(w.accruals);
                true
            },
        )
        .unwrap();
        let members: Vec<&str> = accepted.iter().map(|a| a.member_id.as_str()).collect();
        assert_eq!(members, ["m-1", "m-2", "m-1", "m-4"]);
        assert_ne!(accepted[0].accrual_id, accepted[2].accrual_id, "occurrences 1 and 2");
        assert_eq!(accepted[3].accrual_id, "own-4");
        assert_eq!(parsed.rejected, 1);
        let report = String::from_utf8(parsed.report).unwrap();
        assert!(
            report.starts_with("4,accrual_id,\"is empty, and the file already has 2 distinct rows"),
            "{report}"
        );
        assert_eq!(ids.distinct(), 2);
    }
}
