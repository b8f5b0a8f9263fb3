//! Entry points for fuzzing: each takes arbitrary bytes and runs them through
//! the very code production runs on untrusted input, then checks what must
//! hold of any input. A panic (or an `assert!` failing) is a finding.
//!
//! The cargo-fuzz targets in `fuzz/` call these, and so does the corpus
//! replay in the regular test suite (`tests/tests/memory/fuzz_corpus.rs`), so the
//! two can never drift apart. See `docs/fuzzing.md`.
//!
//! - [`api_body`]: request bodies of `POST /v1/jobs` (with and without an
//!   `Idempotency-Key`), `POST /v1/members/{id}/uses` and `POST
//!   /v1/reversals`, as the ingest API parses and validates them; accepted
//!   submissions are packed and their messages decoded back.
//! - [`csv_import`]: a CSV file read chunk by chunk by the importer's own
//!   chunk parser, at a chunk size and packing window the input chooses.
//! - [`ndjson_import`]: an NDJSON file, read as [`csv_import`] reads a CSV.
//! - [`csv_utf16_import`]: a CSV file in UTF-16LE (a byte-order mark put
//!   before the input), read as [`csv_import`] reads a CSV.
//! - [`xlsx_import`]: an Excel workbook read by the importer's workbook
//!   parser, at a packing window the input chooses.
//! - [`message_decode`]: a queue message body as the worker decodes it, and
//!   an import-queue body as the csv-import function reads it.

use crate::domain::message::QueueMessage;
use crate::domain::packing::{pack_accruals, pack_uses, PackingLimits, MIN_MESSAGE_BYTES};
use crate::domain::readers::csv::CsvRow;
use crate::domain::readers::{LineFormat, LineRows};
use crate::domain::text_encoding::FileEncoding;
use crate::domain::uses::Use;
use crate::domain::validation::check_idempotency_key;
use crate::domain::{Accrual, JobId};
use crate::services::api::{parse_reversal, parse_submission, parse_use, Prepared, DEFAULT_MAX_ITEMS, MAX_BODY_BYTES};
use crate::services::import::parse::{parse_lines, EncodingChoice};

use crate::services::import::service::{ImportSettings, DEFAULT_CHUNK_BYTES};
use crate::services::import::task::parse_tasks;

/// One workbook (`.xlsx`): the first byte picks the packing's accruals per
/// message (1–8), the rest is the file, read by the importer's workbook
/// parser with id scheme v2. What must hold: no panic; a file that fails,
/// fails as a whole with a permanent reason; a workbook is one chunk; every
/// row the row reader gives is counted once (accepted, collapsed or
/// rejected), and every accepted one keeps the line of its row.
pub fn xlsx_import(data: &[u8]) {
    use crate::domain::readers::xlsx::read_rows;
    use crate::services::import::parse::parse_workbook;
    let [packing_byte, file @ ..] = data else {
        return;
    };
    let settings = ImportSettings {
        packing: PackingLimits {
            max_accruals: 1 + usize::from(packing_byte % 8),
            ..PackingLimits::default()
        },
        ..ImportSettings::default()
    };
    let identity = "s3://fuzz-bucket/imports/fuzz.xlsx#etag";
    let mut ids = crate::domain::accrual_ids::ContentIds::new("fuzz");
    let mut lines = Vec::new();
    let send = |window: crate::services::import::parse::Window| {
        assert_eq!(window.accruals.len(), window.lines.len());
        lines.extend(window.lines);
        true
    };
    let parsed = match parse_workbook(file, None, identity, Some(&mut ids), &settings, send) {
        Ok(parsed) => parsed,
        Err(e) => {
            assert!(
                e.is_permanent(),
                "a workbook in memory failed as if a retry could help: {e}"
            );
            return;
        }
    };
    assert!(parsed.next.is_none(), "a workbook is read in one chunk");
    assert!(parsed.encoding.is_none(), "a workbook has no text encoding");
    let mut rows = Vec::new();
    let read = read_rows(file.to_vec(), None, identity, |row| {
        rows.push((row.line, matches!(row.row, CsvRow::Accrual(_))));
        true
    });
    assert!(read.is_ok(), "the row reader refuses a workbook the importer read");
    let handled = lines.len() as u64 + parsed.deduplicated + parsed.rejected;
    assert_eq!(handled, rows.len() as u64, "every row counted once");
    for line in &lines {
        assert!(
            rows.iter().any(|(l, _)| l == line),
            "an accrual of line {line}, which no row has"
        );
    }
}

/// The `Idempotency-Key` the submission selector sends.
const FUZZ_KEY: &str = "fuzz-campaign-2026:batch-1";

/// One request body. The first byte chooses the route and settings, the rest
/// is the body:
///
/// - `selector % 4`: 0 a submission without key, 1 with a key, 2 a use for
///   member `m-1`, 3 a reversal;
/// - submissions: bit 2 lowers the item limit to 4 (so small inputs reach
///   the 413 path); bits 4–7 pick the packing's accruals per message (1–16),
///   at the smallest message size, so packing splits often.
///
/// What must hold: no panic; an accepted submission packs into messages
/// within the limits that decode back to exactly the accepted accruals.
pub fn api_body(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    // The API refuses a larger body before reading it.
    if body.len() > MAX_BODY_BYTES {
        return;
    }
    match selector % 4 {
        0 | 1 => {
            let key = (selector % 4 == 1).then_some(FUZZ_KEY);
            if let Some(key) = key {
                assert!(check_idempotency_key(key).is_ok());
            }
            let max_items = if selector & 4 != 0 { 4 } else { DEFAULT_MAX_ITEMS };
            let limits = PackingLimits {
                max_accruals: 1 + usize::from(selector >> 4),
                max_bytes: MIN_MESSAGE_BYTES,
            };
            match parse_submission(body, key, max_items) {
                Ok(Prepared::Accruals(prepared)) => {
                    assert!(!prepared.accruals.is_empty() && prepared.accruals.len() <= max_items);
                    check_packing(prepared.accruals, limits);
                }
                Ok(Prepared::Uses(prepared)) => {
                    assert!(!prepared.uses.is_empty() && prepared.uses.len() <= max_items);
                    check_use_packing(prepared.uses, limits);
                }
                Err(_) => {}
            }
        }
        2 => {
            if let Ok(u) = parse_use("m-1", body) {
                assert!(u.amount >= 1);
            }
        }
        _ => {
            let _ = parse_reversal(body);
        }
    }
}

/// Packs `accruals` and checks every message: within `limits`, and decoding
/// back (as the worker will) to the very accruals packed, none lost or added.
fn check_packing(accruals: Vec<Accrual>, limits: PackingLimits) {
    let job_id = JobId(uuid::Uuid::nil());
    let mut expected: Vec<Accrual> = accruals.clone();
    let messages = pack_accruals(job_id, accruals, limits);
    let mut unpacked = Vec::with_capacity(expected.len());
    for message in messages {
        assert!(!message.accruals().is_empty() && message.accruals().len() <= limits.max_accruals);
        let body = message.encode();
        assert!(
            body.len() <= limits.max_bytes,
            "a message of {} bytes exceeds the limit of {}",
            body.len(),
            limits.max_bytes
        );
        match QueueMessage::decode(&body) {
            Ok(decoded) => assert_eq!(decoded, message, "a packed message decodes to itself"),
            Err(e) => panic!("the worker cannot decode a message the API queued: {e}"),
        }
        unpacked.extend(message.accruals().iter().cloned());
    }
    let key = |a: &Accrual| a.accrual_id.clone();
    expected.sort_by_key(key);
    unpacked.sort_by_key(key);
    assert_eq!(unpacked, expected, "packing keeps every accrual once");
}

/// Packs a bulk-use job's `uses` and checks every message as
/// [`check_packing`] does: within the limits, decoding to itself, the uses
/// kept once each and in submission order.
fn check_use_packing(uses: Vec<Use>, limits: PackingLimits) {
    let expected = uses.clone();
    let mut unpacked = Vec::with_capacity(expected.len());
    for message in pack_uses(JobId(uuid::Uuid::nil()), uses, limits) {
        assert!(!message.uses().is_empty() && message.accruals().is_empty());
        let body = message.encode();
        assert!(body.len() <= limits.max_bytes, "a message of {} bytes", body.len());
        match QueueMessage::decode(&body) {
            Ok(decoded) => assert_eq!(decoded, message, "a packed message decodes to itself"),
            Err(e) => panic!("the worker cannot decode a message the API queued: {e}"),
        }
        unpacked.extend(message.uses().iter().cloned());
    }
    assert_eq!(unpacked, expected, "packing keeps every use once, in order");
}

/// One CSV file. The first byte picks the chunk size (`1 + byte * 7` bytes,
/// or the production's 64 MiB when it is 255) and the second the
/// accruals per message (1–8, so packing windows of 10–80 accruals); the
/// rest is the file.
///
/// The file is read the way the importer reads it: its chunk parser on the
/// first chunk, then on each next chunk from the offset and line the last
/// one handed on, until the end. What must hold: no panic; every chunk moves
/// forward (else a file would be imported forever); the rows the row reader
/// gives read in these chunks are the rows of one pass, line numbers and
/// ids included; and every row is counted once (accepted, collapsed or
/// rejected).
pub fn csv_import(data: &[u8]) {
    let [size_byte, packing_byte, file @ ..] = data else {
        return;
    };
    lines_import(LineFormat::Csv, *size_byte, *packing_byte, file);
}

/// One NDJSON file, read as [`csv_import`] reads a CSV (the same bytes
/// before the file, the same loop and the same checks): one strict JSON
/// object a line, chunks resumed at line ends.
pub fn ndjson_import(data: &[u8]) {
    let [size_byte, packing_byte, file @ ..] = data else {
        return;
    };
    lines_import(LineFormat::Ndjson, *size_byte, *packing_byte, file);
}

/// One CSV file in UTF-16LE: the bytes after the first two (as for
/// [`csv_import`]) are its code units, after a byte-order mark this target
/// puts first, so every input is decoded from UTF-16 (odd lengths, unpaired
/// surrogates and all) and its chunks resume at file offsets of the
/// decoded line ends.
pub fn csv_utf16_import(data: &[u8]) {
    let [size_byte, packing_byte, units @ ..] = data else {
        return;
    };
    let mut file = Vec::with_capacity(units.len() + 2);
    file.extend_from_slice(&[0xFF, 0xFE]);
    file.extend_from_slice(units);
    lines_import(LineFormat::Csv, *size_byte, *packing_byte, &file);
}

/// The importer's chunk loop over `file` in `format`; see [`csv_import`].
fn lines_import(format: LineFormat, size_byte: u8, packing_byte: u8, file: &[u8]) {
    let chunk_bytes = if size_byte == 255 {
        DEFAULT_CHUNK_BYTES
    } else {
        1 + u64::from(size_byte) * 7
    };
    let settings = ImportSettings {
        chunk_bytes,
        packing: PackingLimits {
            max_accruals: 1 + usize::from(packing_byte % 8),
            ..PackingLimits::default()
        },
        ..ImportSettings::default()
    };
    let identity = "s3://fuzz-bucket/imports/fuzz.csv#etag";
    let size = file.len() as u64;

    // The importer's loop (`Importer::run_chunk`), without bucket or queues.
    let (mut offset, mut line, mut columns) = (0u64, 1u64, None::<Vec<String>>);
    let (mut accepted, mut handled) = (0u64, 0u64);
    // Id scheme v2, its counts carried from chunk to chunk as the importer does.
    let mut ids = crate::domain::accrual_ids::ContentIds::new("fuzz");
    // The first chunk detects the file's encoding; the later ones are told it.
    let mut encoding = EncodingChoice::Sniff(None);
    let mut chosen: FileEncoding;
    loop {
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(file.len());
        let mut windows = 0u64;
        let send = |window: crate::services::import::parse::Window| {
            windows += window.accruals.len() as u64;
            true
        };
        let parsed = match parse_lines(
            &file[start..],
            format,
            columns.clone(),
            line,
            offset,
            size,
            identity,
            encoding,
            Some(&mut ids),
            &settings,
            send,
        ) {
            Ok(parsed) => parsed,
            // The file fails (header) or reading stops: the job ends there.
            Err(_) => return,
        };
        let Some(found) = parsed.encoding else {
            panic!("a chunk of a line-oriented file names no encoding");
        };
        chosen = found;
        encoding = EncodingChoice::Known(found);
        accepted += windows;
        handled += windows + parsed.deduplicated + parsed.rejected;
        match parsed.next {
            Some((next_offset, next_line)) => {
                assert!(
                    next_offset > offset && next_offset <= size,
                    "a chunk at {offset} hands on {next_offset} (file of {size} bytes)"
                );
                assert!(next_line >= line);
                // A chunk resumes just past a line end of the file's own
                // bytes: a whole `\n` code unit in UTF-16.
                let newline: &[u8] = match found.name() {
                    "UTF-16LE" => b"\n\0",
                    "UTF-16BE" => b"\0\n",
                    _ => b"\n",
                };
                let before = usize::try_from(next_offset).unwrap_or(usize::MAX);
                assert!(
                    file[..before].ends_with(newline),
                    "a chunk hands on {next_offset}, not just past a line end"
                );
                offset = next_offset;
                line = next_line;
                columns = Some(parsed.columns);
                // The next chunk starts from the table as written and read back.
                let mut next_ids = crate::domain::accrual_ids::ContentIds::new("fuzz");
                if let Err(e) = next_ids.add_counts(&ids.encode_counts()) {
                    panic!("an occurrence table does not read back: {e}");
                }
                ids = next_ids;
            }
            None => break,
        }
    }

    // The row reader alone, in one pass, must see every row the chunks did,
    // and read resumed at every chunk boundary it must give the same rows.
    // Compared row by row, so that this check holds no more than a row.
    let Ok(mut reader) = LineRows::open(format, file, None, identity, chosen.encoding) else {
        panic!("the chunk parser read a header the row reader refuses");
    };
    let mut chunked =
        (chunk_bytes != DEFAULT_CHUNK_BYTES).then(|| ChunkedRows::new(format, file, identity, chunk_bytes, chosen));
    let (mut rows, mut good) = (0u64, 0u64);
    while let Ok(Some(row)) = reader.next_row() {
        rows += 1;
        good += u64::from(matches!(row.1, CsvRow::Accrual(_)));
        if let Some(chunked) = &mut chunked {
            assert_eq!(
                chunked.next(),
                Some(row),
                "row {rows} read in chunks of {chunk_bytes} bytes"
            );
        }
    }
    if let Some(chunked) = &mut chunked {
        assert_eq!(chunked.next(), None, "no more rows in chunks than in one pass");
    }
    assert_eq!(handled, rows, "every row is counted once");
    assert!(accepted <= good);
}

/// The row reader resumed every `chunk` bytes, as `LineRows::open` with a
/// line to resume at promises to give the rows of one pass.
struct ChunkedRows<'f> {
    format: LineFormat,
    file: &'f [u8],
    identity: &'f str,
    chunk: u64,
    encoding: FileEncoding,
    columns: Vec<String>,
    /// Where the current reader started.
    offset: usize,
    reader: Option<LineRows<&'f [u8]>>,
}

impl<'f> ChunkedRows<'f> {
    fn new(format: LineFormat, file: &'f [u8], identity: &'f str, chunk: u64, encoding: FileEncoding) -> Self {
        let reader = LineRows::open(format, file, None, identity, encoding.encoding).ok();
        let columns = reader.as_ref().map(|r| r.columns().to_vec()).unwrap_or_default();
        ChunkedRows {
            format,
            file,
            identity,
            chunk,
            encoding,
            columns,
            offset: 0,
            reader,
        }
    }

    fn next(&mut self) -> Option<(u64, CsvRow)> {
        let reader = self.reader.as_mut()?;
        if reader.stopped() {
            return None;
        }
        if reader.consumed().0 >= self.chunk {
            let (read, next_line) = reader.consumed();
            self.offset += usize::try_from(read).unwrap_or(usize::MAX);
            if self.offset >= self.file.len() {
                self.reader = None;
                return None;
            }
            match LineRows::open(
                self.format,
                &self.file[self.offset..],
                Some((&self.columns, next_line)),
                self.identity,
                self.encoding.encoding,
            ) {
                Ok(next) => self.reader = Some(next),
                Err(e) => panic!("resuming with the header's own columns failed: {e}"),
            }
        }
        self.reader.as_mut()?.next_row().ok().flatten()
    }
}

/// One queue message body. SQS bodies are Unicode text, so bytes that are
/// not UTF-8 are no input. The body goes through the worker's decoder and
/// the csv-import function's task parser. What must hold: no panic, and what
/// decodes encodes and decodes back to itself (a message the worker accepts,
/// a task the importer would hand on as a continuation).
pub fn message_decode(data: &[u8]) {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(message) = QueueMessage::decode(body) {
        assert!(!message.accruals().is_empty());
        let again = QueueMessage::decode(&message.encode());
        assert!(
            matches!(&again, Ok(m) if *m == message),
            "a decoded message re-encodes to itself: {again:?}"
        );
    }
    if let Ok(tasks) = parse_tasks(body) {
        for task in tasks {
            let again = parse_tasks(&task.encode());
            assert!(
                matches!(&again, Ok(t) if t.len() == 1 && t[0] == task),
                "a continuation reads back as its task: {again:?}"
            );
        }
    }
}
