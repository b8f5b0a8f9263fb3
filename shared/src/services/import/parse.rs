//! The parsing half of one chunk: rows read and validated, ids derived for
//! rows without `accrual_id`, repeats collapsed within a packing window,
//! windows handed to the queueing side, bad rows written as report lines.
//! Pure over a reader and a sink, so [`crate::testkit::fuzzing`] runs it
//! without a bucket or a runtime.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use crate::domain::accrual_ids::ContentIds;
use crate::domain::readers::csv::{sniff_input, CsvFileError, CsvRow, Replayed, RowError};
use crate::domain::readers::{LineFormat, LineRows};
use crate::domain::text_encoding::FileEncoding;
use crate::domain::Accrual;
use crate::services::import::report;
use crate::services::import::service::{ImportSettings, REPORT_PART_BYTES, WINDOW_MESSAGES};

/// Accruals of one packing window, from the parsing thread.
pub(crate) struct Window {
    pub(crate) accruals: Vec<Accrual>,
    /// The file line of each accrual (same order), for errors naming it.
    pub(crate) lines: Vec<u64>,
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
    /// What the file was decoded from, and why; `None` for a workbook,
    /// whose text is not in a chosen encoding.
    pub(crate) encoding: Option<FileEncoding>,
    /// The sheet read, for a workbook.
    pub(crate) sheet: Option<String>,
}

/// How a chunk learns the file's encoding.
#[derive(Debug, Clone, Copy)]
pub(crate) enum EncodingChoice {
    /// The first chunk: from a byte-order mark, else the declared one (if
    /// any), else detected from the file's first bytes.
    Sniff(Option<FileEncoding>),
    /// A later chunk: the one the first chunk chose.
    Known(FileEncoding),
}

/// How a file is read: a CSV or NDJSON file (by chunks, in a text
/// encoding) or a workbook (whole, one sheet).
#[derive(Debug, Clone)]
pub(crate) enum Format {
    Lines(LineFormat, EncodingChoice),
    /// An `.xlsx` workbook: the sheet named, else the first visible one.
    #[cfg(feature = "xlsx")]
    Xlsx {
        sheet: Option<String>,
    },
}

/// Parses one chunk of a file in `format` ([`parse_lines`] for a CSV or
/// NDJSON file, [`parse_workbook`] for a workbook, which is one chunk).
#[allow(clippy::too_many_arguments)]
pub(crate) fn parse_file<R: std::io::Read>(
    reader: R,
    format: &Format,
    columns: Option<Vec<String>>,
    first_line: u64,
    offset: u64,
    size: u64,
    identity: &str,
    ids: Option<&mut ContentIds>,
    settings: &ImportSettings,
    send: impl FnMut(Window) -> bool,
) -> Result<Parsed, CsvFileError> {
    match format {
        Format::Lines(kind, encoding) => parse_lines(
            reader, *kind, columns, first_line, offset, size, identity, *encoding, ids, settings, send,
        ),
        #[cfg(feature = "xlsx")]
        Format::Xlsx { sheet } => parse_workbook(reader, sheet.as_deref(), identity, ids, settings, send),
    }
}

/// The file's encoding, and a reader giving `reader`'s bytes from the start.
fn choose_encoding<R: std::io::Read>(
    reader: R,
    choice: EncodingChoice,
) -> Result<(FileEncoding, Replayed<R>), CsvFileError> {
    match choice {
        EncodingChoice::Known(encoding) => {
            Ok((encoding, std::io::Read::chain(std::io::Cursor::new(Vec::new()), reader)))
        }
        EncodingChoice::Sniff(declared) => sniff_input(reader, declared),
    }
}

/// [`parse_lines`] of a CSV file (the tests' shorthand).
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn parse_chunk<R: std::io::Read>(
    reader: R,
    columns: Option<Vec<String>>,
    first_line: u64,
    offset: u64,
    size: u64,
    identity: &str,
    encoding: EncodingChoice,
    ids: Option<&mut ContentIds>,
    settings: &ImportSettings,
    send: impl FnMut(Window) -> bool,
) -> Result<Parsed, CsvFileError> {
    parse_lines(
        reader,
        LineFormat::Csv,
        columns,
        first_line,
        offset,
        size,
        identity,
        encoding,
        ids,
        settings,
        send,
    )
}

/// Parses one chunk of a CSV or NDJSON file on a blocking thread, handing
/// packing windows to `send` (false: the queueing side gave up) and
/// collecting everything else. `offset` and the `next` offset are bytes of
/// the file, always just past a line end (for UTF-16 too:
/// [`crate::domain::readers::source`]).
/// With `ids` (id scheme v2), rows without `accrual_id` get theirs from it,
/// which counts them, so that it goes on to the next chunk; without, they
/// keep the v1 ids derived from `identity` and the line (a file whose
/// import started before v2).
#[allow(clippy::too_many_arguments)]
pub(crate) fn parse_lines<R: std::io::Read>(
    reader: R,
    format: LineFormat,
    columns: Option<Vec<String>>,
    first_line: u64,
    offset: u64,
    size: u64,
    identity: &str,
    encoding: EncodingChoice,
    ids: Option<&mut ContentIds>,
    settings: &ImportSettings,
    send: impl FnMut(Window) -> bool,
) -> Result<Parsed, CsvFileError> {
    let (encoding, reader) = choose_encoding(reader, encoding)?;
    let resume = columns.as_deref().map(|columns| (columns, first_line));
    let mut rows = LineRows::open(format, reader, resume, identity, encoding.encoding)?;
    let mut sink = Sink::new(rows.columns().to_vec(), Some(encoding), ids, settings, send);
    let mut at_end = true;
    while let Some((line, row)) = rows.next_row()? {
        if !sink.push(line, row, rows.row_has_accrual_id(), || rows.raw_row()) {
            // The queueing side gave up; its error is what gets reported.
            return Ok(sink.parsed);
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
        if read >= settings.chunk_bytes
            || sink.parsed.report.len() as u64 >= settings.chunk_bytes.min(REPORT_PART_BYTES)
        {
            // At the end of the file if the object's size says so (a size of
            // 0 means unknown: the next chunk will find out).
            at_end = size > 0 && offset + read >= size;
            break;
        }
    }
    let Some(mut parsed) = sink.finish() else {
        return Ok(Parsed::gave_up());
    };
    if !at_end {
        let (read, next_line) = rows.consumed();
        parsed.next = Some((offset + read, next_line));
    }
    Ok(parsed)
}

/// Parses a whole workbook's sheet (`.xlsx`) in one go, as
/// [`parse_chunk`] parses a chunk: the same sink, so the same ids, the same
/// collapsing of repeats and the same report. A workbook is never resumed
/// ([`Parsed::next`] is `None`): its size is bounded instead
/// ([`ImportSettings::max_workbook_bytes`]).
#[cfg(feature = "xlsx")]
pub(crate) fn parse_workbook<R: std::io::Read>(
    mut reader: R,
    sheet: Option<&str>,
    identity: &str,
    ids: Option<&mut ContentIds>,
    settings: &ImportSettings,
    send: impl FnMut(Window) -> bool,
) -> Result<Parsed, CsvFileError> {
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).map_err(CsvFileError::Prefix)?;
    let mut sink = Sink::new(Vec::new(), None, ids, settings, send);
    let mut gave_up = false;
    let read = crate::domain::readers::xlsx::read_rows(bytes, sheet, identity, |row| {
        let raw = || row.raw();
        gave_up = !sink.push(row.line, row.row.clone(), row.has_accrual_id, raw);
        !gave_up
    })?;
    if gave_up {
        return Ok(sink.parsed);
    }
    sink.parsed.columns = read.columns;
    sink.parsed.sheet = Some(read.sheet);
    Ok(sink.finish().unwrap_or_else(Parsed::gave_up))
}

impl Parsed {
    /// What is returned when the queueing side gave up (its error is what
    /// gets reported).
    fn gave_up() -> Parsed {
        Parsed {
            deduplicated: 0,
            rejected: 0,
            report: Vec::new(),
            columns: Vec::new(),
            next: None,
            encoding: None,
            sheet: None,
        }
    }
}

/// Where parsed rows go, whatever the file's format: ids derived for rows
/// without `accrual_id`, repeats collapsed within a packing window, windows
/// handed to `send`, bad rows written as report lines.
struct Sink<'a, F: FnMut(Window) -> bool> {
    parsed: Parsed,
    window_size: usize,
    window: Vec<Accrual>,
    lines: Vec<u64>,
    /// accrual_id → (line, index in `window`), for this window only.
    seen: HashMap<String, (u64, usize)>,
    ids: Option<&'a mut ContentIds>,
    settings: &'a ImportSettings,
    send: F,
}

impl<'a, F: FnMut(Window) -> bool> Sink<'a, F> {
    fn new(
        columns: Vec<String>,
        encoding: Option<FileEncoding>,
        ids: Option<&'a mut ContentIds>,
        settings: &'a ImportSettings,
        send: F,
    ) -> Self {
        let window_size = settings.packing.max_accruals.saturating_mul(WINDOW_MESSAGES).max(1);
        Sink {
            parsed: Parsed {
                deduplicated: 0,
                rejected: 0,
                report: Vec::new(),
                columns,
                next: None,
                encoding,
                sheet: None,
            },
            window_size,
            window: Vec::with_capacity(window_size),
            lines: Vec::with_capacity(window_size),
            seen: HashMap::new(),
            ids,
            settings,
            send,
        }
    }

    /// Takes one row (`line`: its number in the file); false when the
    /// queueing side gave up.
    fn push(&mut self, line: u64, mut row: CsvRow, has_accrual_id: bool, raw: impl Fn() -> String) -> bool {
        if let Some(ids) = self.ids.as_deref_mut() {
            if !has_accrual_id {
                row = derive_id(row, line, ids, self.settings.max_derived_contents, &raw);
            }
        }
        match row {
            CsvRow::Accrual(accrual) => match self.seen.entry(accrual.accrual_id.clone()) {
                Entry::Vacant(slot) => {
                    slot.insert((line, self.window.len()));
                    self.window.push(accrual);
                    self.lines.push(line);
                }
                Entry::Occupied(first) => {
                    let (first_line, index) = *first.get();
                    if self.window[index] == accrual {
                        self.parsed.deduplicated += 1;
                    } else {
                        // One message must not hold one id twice (a
                        // transaction may not touch an item twice).
                        self.parsed.rejected += 1;
                        report::write_errors(
                            &mut self.parsed.report,
                            &[RowError {
                                line,
                                column: "accrual_id".to_owned(),
                                reason: format!("repeats the accrual_id of line {first_line} with different content"),
                                raw: raw(),
                            }],
                        );
                    }
                }
            },
            CsvRow::Rejected(errors) => {
                self.parsed.rejected += 1;
                report::write_errors(&mut self.parsed.report, &errors);
            }
        }
        if self.window.len() >= self.window_size {
            self.seen.clear();
            let full = std::mem::replace(&mut self.window, Vec::with_capacity(self.window_size));
            let full_lines = std::mem::replace(&mut self.lines, Vec::with_capacity(self.window_size));
            return (self.send)(Window {
                accruals: full,
                lines: full_lines,
            });
        }
        true
    }

    /// Sends the last window; `None` when the queueing side gave up.
    fn finish(mut self) -> Option<Parsed> {
        if !self.window.is_empty()
            && !(self.send)(Window {
                accruals: std::mem::take(&mut self.window),
                lines: std::mem::take(&mut self.lines),
            })
        {
            return None;
        }
        Some(self.parsed)
    }
}

/// Gives `row`, which came without `accrual_id`, its scheme-v2 id; rejects
/// it when its content is new and `ids` already counts `limit` contents
/// (the bound on the importer's memory, [`ImportSettings::max_derived_contents`]).
fn derive_id(row: CsvRow, line: u64, ids: &mut ContentIds, limit: usize, raw: impl Fn() -> String) -> CsvRow {
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
    use crate::domain::readers::source::utf16_with_bom;
    use crate::domain::text_encoding::EncodingSource;
    use crate::domain::Accrual;

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
                EncodingChoice::Sniff(None),
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
                EncodingChoice::Sniff(None),
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
            EncodingChoice::Sniff(None),
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

    /// Reads `file` chunk after chunk as the importer does (the first chunk
    /// choosing the encoding, the later ones told it), with ids of scheme v2:
    /// every accrual, the report, and the encoding.
    fn import(file: &[u8], chunk_bytes: u64, declared: Option<FileEncoding>) -> (Vec<Accrual>, String, FileEncoding) {
        let settings = ImportSettings {
            chunk_bytes,
            ..ImportSettings::default()
        };
        let size = file.len() as u64;
        let (mut offset, mut line, mut columns) = (0u64, 1u64, None);
        let mut choice = EncodingChoice::Sniff(declared);
        let mut ids = ContentIds::new("spring");
        let (mut accepted, mut report) = (Vec::new(), Vec::new());
        loop {
            let parsed = parse_chunk(
                &file[offset as usize..],
                columns.take(),
                line,
                offset,
                size,
                "f",
                choice,
                Some(&mut ids),
                &settings,
                |w| {
                    accepted.extend(w.accruals);
                    true
                },
            )
            .unwrap();
            report.extend_from_slice(&parsed.report);
            choice = EncodingChoice::Known(parsed.encoding.unwrap());
            match parsed.next {
                Some((next, next_line)) => {
                    // A chunk starts at a line start of the original bytes:
                    // past a whole `\n` code unit in UTF-16.
                    let newline: &[u8] = match parsed.encoding.unwrap().name() {
                        "UTF-16LE" => b"\n\0",
                        "UTF-16BE" => b"\0\n",
                        _ => b"\n",
                    };
                    assert!(file[..next as usize].ends_with(newline), "chunk at {next}");
                    assert!(newline.len() == 1 || next % 2 == 0, "chunk at {next}");
                    (offset, line, columns) = (next, next_line, Some(parsed.columns));
                }
                None => return (accepted, String::from_utf8(report).unwrap(), parsed.encoding.unwrap()),
            }
        }
    }

    fn korean_file(rows: usize) -> String {
        let mut text = String::from("member_id,point_type,amount,reason\n");
        for i in 0..rows {
            text.push_str(&format!("m-{i},WELCOME,{},\"신규 가입 적립, 회원 {i}\"\n", 100 + i % 7));
        }
        text
    }

    #[test]
    fn a_cp949_file_credits_the_ids_of_its_utf8_copy_in_one_pass_or_in_chunks() {
        let text = korean_file(300);
        let (cp949, _, unmappable) = encoding_rs::EUC_KR.encode(&text);
        assert!(!unmappable);
        assert_ne!(cp949.as_ref(), text.as_bytes(), "real CP949 bytes, not ASCII");
        let (utf8, report, encoding) = import(text.as_bytes(), 1 << 20, None);
        assert_eq!((encoding.name(), report.as_str()), ("UTF-8", ""));
        assert_eq!(utf8.len(), 300);
        assert_eq!(utf8[7].reason.as_deref(), Some("신규 가입 적립, 회원 7"));
        for (chunk_bytes, declared) in [
            (1 << 20, None),
            (1 << 20, Some(crate::domain::text_encoding::declared("cp949").unwrap())),
            (97, None),
            (1, Some(crate::domain::text_encoding::declared("euc-kr").unwrap())),
        ] {
            let (korean, report, encoding) = import(&cp949, chunk_bytes, declared);
            assert_eq!(encoding.name(), "EUC-KR", "chunks of {chunk_bytes}");
            assert_eq!(report, "");
            assert_eq!(korean, utf8, "chunks of {chunk_bytes}, declared {declared:?}");
        }
    }

    /// Real UTF-16 bytes (Korean, and an emoji, which is a surrogate pair),
    /// both byte orders, read in one pass and resumed at every chunk size:
    /// the chunk boundaries fall after a whole `\n` code unit whatever the
    /// size (sizes that end inside a code unit, or between the halves of a
    /// surrogate pair, included), and the ids are those of the UTF-8 copy.
    #[test]
    fn a_utf16_file_credits_the_ids_of_its_utf8_copy_at_every_chunk_size() {
        let mut text = String::from("member_id,point_type,amount,reason\r\n");
        for i in 0..8 {
            text.push_str(&format!(
                "m-{i},WELCOME,{},\"신규 가입 적립 😀, 회원 {i}\"\r\n",
                100 + i
            ));
        }
        let (utf8, report, _) = import(text.as_bytes(), 1 << 20, None);
        assert_eq!((utf8.len(), report.as_str()), (8, ""));
        assert_eq!(utf8[3].reason.as_deref(), Some("신규 가입 적립 😀, 회원 3"));
        for big_endian in [false, true] {
            let bytes = utf16_with_bom(&text, big_endian);
            assert!(bytes.len() > 2 * text.chars().count());
            for chunk_bytes in 1..=bytes.len() as u64 {
                let (got, report, encoding) = import(&bytes, chunk_bytes, None);
                let name = if big_endian { "UTF-16BE" } else { "UTF-16LE" };
                assert_eq!((encoding.name(), encoding.source), (name, EncodingSource::Bom));
                assert_eq!(report, "", "chunks of {chunk_bytes}");
                assert_eq!(got, utf8, "{name} in chunks of {chunk_bytes}");
            }
        }
    }

    #[test]
    fn an_unpaired_surrogate_in_utf16_is_a_row_error_naming_its_line() {
        let mut bytes = utf16_with_bom("member_id,point_type,amount,reason\nm-1,P,1,적립\n", false);
        // m-2's reason: a high surrogate with no low one after it.
        bytes.extend_from_slice(&utf16_with_bom("m-2,P,2,x", false)[2..]);
        bytes.extend_from_slice(&[0x3D, 0xD8]);
        bytes.extend_from_slice(&utf16_with_bom("\nm-3,P,3,ok\n", false)[2..]);
        let (accepted, report, encoding) = import(&bytes, 1 << 20, None);
        assert_eq!(encoding.name(), "UTF-16LE");
        let members: Vec<&str> = accepted.iter().map(|a| a.member_id.as_str()).collect();
        assert_eq!(members, ["m-1", "m-3"]);
        assert!(report.starts_with("3,(row),is not UTF-16LE text,"), "{report}");
    }

    #[test]
    fn an_undecodable_row_in_a_declared_encoding_is_a_row_error_naming_its_line() {
        let (mut bytes, _, _) =
            encoding_rs::SHIFT_JIS.encode("member_id,point_type,amount,reason\nm-1,P,1,新規入会ポイント\n");
        let mut bytes = bytes.to_mut().clone();
        // 0x81 0x20: a lead byte without a valid trail byte.
        bytes.extend_from_slice(b"m-2,P,2,bad \x81\x20 text\nm-3,P,3,ok\n");
        let declared = crate::domain::text_encoding::declared("shift_jis").unwrap();
        let (accepted, report, encoding) = import(&bytes, 1 << 20, Some(declared));
        assert_eq!(encoding, declared);
        let members: Vec<&str> = accepted.iter().map(|a| a.member_id.as_str()).collect();
        assert_eq!(members, ["m-1", "m-3"]);
        assert_eq!(accepted[0].reason.as_deref(), Some("新規入会ポイント"));
        assert!(report.starts_with("3,(row),is not Shift_JIS text,"), "{report}");
    }

    #[test]
    fn a_binary_file_fails_as_a_whole_naming_why() {
        let settings = ImportSettings::default();
        let file = b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00[Content_Types].xml";
        let Err(e) = parse_chunk(
            &file[..],
            None,
            1,
            0,
            file.len() as u64,
            "f",
            EncodingChoice::Sniff(None),
            None,
            &settings,
            |_| true,
        ) else {
            panic!("a zip archive was read as CSV")
        };
        assert!(e.is_permanent());
        assert!(e.to_string().contains("zip archive"), "{e}");
    }
}
