//! Accruals from an NDJSON file (`.ndjson`, `.jsonl`): one JSON object per
//! line, with the API's field names, each turned into the fields of a CSV
//! row and checked by the very same rules ([`crate::domain::row_rules`]).
//!
//! - Lines are numbered from 1 (there is no header); blank lines are
//!   skipped but counted; LF or CRLF; the last line needs no newline; a
//!   UTF-8 byte-order mark before the first line is skipped.
//! - A line is read as JSON strictly ([`crate::domain::strict_json`]): a
//!   line that is not JSON, an object repeating a key, a field the API does
//!   not know, or a value of the wrong JSON type is a row error naming the
//!   line (and the field), as the API refuses such an item; the rest of the
//!   file goes on.
//! - Values: text fields are JSON strings, `amount` a JSON number (written
//!   as its digits and checked as a CSV amount: `1.5` or `-3` is refused);
//!   `null` is absent, as in the API; values are trimmed as in a CSV.
//! - A line longer than [`MAX_ROW_BYTES`] is a row error; unlike a CSV's
//!   unclosed quote it cannot swallow the next line (JSON strings hold no
//!   raw line end), so reading goes on at the next line.
//!
//! A file may be read in chunks exactly as a CSV is: [`NdjsonAccruals::consumed`]
//! is always just past a line end, and [`NdjsonAccruals::resume_in`] reads
//! on from there with the line count carried over.

use std::io::{BufRead, BufReader, Read};

use encoding_rs::Encoding;
use serde_json::Value;

use crate::domain::readers::csv::{CsvFileError, CsvRow, RowError, COLUMNS, MAX_ROW_BYTES};
use crate::domain::readers::source::Source;
use crate::domain::row_rules::{all_columns, check_row};
use crate::domain::submission::file_id_prefix;
use crate::domain::validation::json_kind;

/// Reads accruals line by line from an NDJSON stream.
pub struct NdjsonAccruals<R: Read> {
    input: BufReader<Source<R>>,
    id_prefix: String,
    /// What each line is decoded from (UTF-8 for a UTF-16 file).
    encoding: &'static Encoding,
    /// The file's encoding, as errors name it.
    named: &'static Encoding,
    /// Parsed bytes up to the end of the last line read.
    parsed: u64,
    /// The number of the last line read.
    line: u64,
    /// The next line is the file's first (a byte-order mark is skipped).
    at_start: bool,
    /// The last line read, as text, and whether it gave an `accrual_id`.
    text: String,
    has_id: bool,
    bytes: Vec<u8>,
}

impl<R: Read> NdjsonAccruals<R> {
    /// Reads from the start of a file in `encoding`. `file_identity` seeds
    /// the scheme-v1 ids of rows without `accrual_id`, as for a CSV.
    pub fn new_in(input: R, file_identity: &str, encoding: &'static Encoding) -> Self {
        Self::open(input, 1, file_identity, encoding, true)
    }

    /// Reads on from a line start: `first_line` is the number of the line
    /// `input` starts at.
    pub fn resume_in(input: R, first_line: u64, file_identity: &str, encoding: &'static Encoding) -> Self {
        Self::open(input, first_line, file_identity, encoding, false)
    }

    fn open(input: R, first_line: u64, file_identity: &str, encoding: &'static Encoding, at_start: bool) -> Self {
        let (source, decode_as) = Source::new(input, encoding, at_start);
        NdjsonAccruals {
            input: BufReader::with_capacity(8 * 1024, source),
            id_prefix: file_id_prefix(file_identity),
            encoding: decode_as,
            named: encoding,
            parsed: 0,
            line: first_line.saturating_sub(1),
            at_start,
            text: String::new(),
            has_id: false,
            bytes: Vec::new(),
        }
    }

    /// Bytes of `input` read up to the end of the last line returned, and
    /// the number of the next line: where [`NdjsonAccruals::resume_in`]
    /// picks up (for a UTF-16 file, bytes of the file).
    pub fn consumed(&self) -> (u64, u64) {
        (self.input.get_ref().source_offset(self.parsed), self.line + 1)
    }

    /// Whether the row last returned gave its own `accrual_id`.
    pub fn row_has_accrual_id(&self) -> bool {
        self.has_id
    }

    /// The line last returned, as text (for the error report).
    pub fn raw_row(&self) -> String {
        self.text.clone()
    }

    /// Reads one line into `bytes` (without its end), at most
    /// [`MAX_ROW_BYTES`] of it; `None` at the end of the input, else
    /// whether the line was longer.
    fn read_line(&mut self) -> Result<Option<bool>, CsvFileError> {
        self.bytes.clear();
        let mut any = false;
        let mut long = false;
        loop {
            let available = match self.input.fill_buf() {
                Ok(available) => available,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(CsvFileError::Io {
                        line: self.line + 1,
                        source,
                    })
                }
            };
            if available.is_empty() {
                return Ok(any.then_some(long));
            }
            any = true;
            let (piece, end) = match available.iter().position(|&b| b == b'\n') {
                Some(at) => (&available[..at], Some(at + 1)),
                None => (available, None),
            };
            if self.bytes.len() + piece.len() > MAX_ROW_BYTES as usize {
                long = true;
            } else {
                self.bytes.extend_from_slice(piece);
            }
            let used = end.unwrap_or(available.len());
            self.input.consume(used);
            self.parsed += used as u64;
            if end.is_some() {
                return Ok(Some(long));
            }
        }
    }

    /// The next row, or `None` at the end of the file.
    pub fn next_row(&mut self) -> Result<Option<(u64, CsvRow)>, CsvFileError> {
        loop {
            let Some(long) = self.read_line()? else {
                return Ok(None);
            };
            self.input.get_mut().passed(self.parsed);
            self.line += 1;
            let line = self.line;
            let first = std::mem::replace(&mut self.at_start, false);
            self.has_id = false;
            if long {
                self.text.clear();
                return Ok(Some((line, rejected(line, "(row)", too_long(), String::new()))));
            }
            let bytes = self.bytes.strip_suffix(b"\r").unwrap_or(&self.bytes);
            let Some(text) = self.encoding.decode_without_bom_handling_and_without_replacement(bytes) else {
                self.text = self.encoding.decode_without_bom_handling(bytes).0.into_owned();
                let reason = format!("is not {} text", self.named.name());
                return Ok(Some((line, rejected(line, "(row)", reason, self.text.clone()))));
            };
            let text = if first {
                text.trim_start_matches('\u{feff}')
            } else {
                &text
            };
            let text = text.trim_matches([' ', '\t', '\r']);
            if text.is_empty() {
                continue;
            }
            self.text = text.to_owned();
            let row = match crate::domain::strict_json::from_str(text) {
                Ok(value) => {
                    let (row, has_id) = check_object(&self.id_prefix, line, &value, text);
                    self.has_id = has_id;
                    row
                }
                Err(e) => rejected(line, "(row)", not_json(&e), self.text.clone()),
            };
            return Ok(Some((line, row)));
        }
    }
}

fn too_long() -> String {
    format!("is longer than {MAX_ROW_BYTES} bytes; the line was not read (the next line is)")
}

/// Why a line is not JSON, placed by its column (the line is always 1).
fn not_json(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    let what = text.strip_suffix(&position).unwrap_or(&text);
    format!("is not a JSON object: {what} (column {})", e.column())
}

fn rejected(line: u64, column: &str, reason: String, raw: String) -> CsvRow {
    CsvRow::Rejected(vec![RowError {
        line,
        column: column.to_owned(),
        reason,
        raw,
    }])
}

/// One JSON item as the fields of a row (in [`COLUMNS`] order), checked by
/// the row rules; and whether it gave an `accrual_id` (else its id is the
/// scheme-v1 id of `id_prefix`, from [`file_id_prefix`], and its line).
/// `raw` is what the report shows of it. Used for NDJSON lines and for the
/// items of a JSON array the client reads.
pub fn check_object(id_prefix: &str, line: u64, value: &Value, raw: &str) -> (CsvRow, bool) {
    let Some(object) = value.as_object() else {
        let reason = format!("must be a JSON object, found {}", json_kind(value));
        return (rejected(line, "(row)", reason, raw.to_owned()), false);
    };
    let mut fields: Vec<String> = vec![String::new(); COLUMNS.len()];
    let mut errors: Vec<RowError> = Vec::new();
    let mut bad: Vec<&str> = Vec::new();
    for (key, value) in object {
        let Some(index) = COLUMNS.iter().position(|c| c == key) else {
            errors.push(RowError {
                line,
                column: key.clone(),
                reason: format!("unknown field; expected {}", COLUMNS.join(", ")),
                raw: String::new(),
            });
            continue;
        };
        let amount = COLUMNS[index] == "amount";
        match value {
            Value::Null => {}
            Value::String(s) if !amount => fields[index].clone_from(s),
            Value::Number(n) if amount => fields[index] = n.to_string(),
            other => {
                bad.push(COLUMNS[index]);
                errors.push(RowError {
                    line,
                    column: key.clone(),
                    reason: format!(
                        "must be {}, found {}",
                        if amount { "a number" } else { "a string" },
                        json_kind(other)
                    ),
                    raw: String::new(),
                });
            }
        }
    }
    let has_id = !fields[0].trim().is_empty() || bad.contains(&"accrual_id");
    let refs: Vec<&str> = fields.iter().map(String::as_str).collect();
    let checked = check_row(&all_columns(), id_prefix, line, &refs);
    if let CsvRow::Rejected(more) = checked {
        // A value of the wrong type is reported once, by what it held, not
        // again as the empty field it left.
        errors.extend(more.into_iter().filter(|e| !bad.contains(&e.column.as_str())));
    } else if errors.is_empty() {
        return (checked, has_id);
    }
    for e in &mut errors {
        e.raw = raw.to_owned();
    }
    (CsvRow::Rejected(errors), has_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(text: &[u8], encoding: &'static Encoding) -> Vec<(u64, CsvRow)> {
        let mut reader = NdjsonAccruals::new_in(text, "f", encoding);
        let mut out = Vec::new();
        while let Some(row) = reader.next_row().unwrap() {
            out.push(row);
        }
        out
    }

    fn errors(row: &CsvRow) -> Vec<(u64, &str, &str)> {
        match row {
            CsvRow::Rejected(e) => e
                .iter()
                .map(|e| (e.line, e.column.as_str(), e.reason.as_str()))
                .collect(),
            CsvRow::Accrual(a) => panic!("expected a rejection, got {a:?}"),
        }
    }

    #[test]
    fn lines_are_objects_numbered_from_one_with_blank_lines_counted() {
        let text = "\u{feff}{\"member_id\":\"m-1\",\"point_type\":\"P\",\"amount\":10}\r\n\n  \n{\"member_id\":\"m-2\",\"point_type\":\"P\",\"amount\":2,\"reason\":\" kept \",\"accrual_id\":null}";
        let got = rows(text.as_bytes(), encoding_rs::UTF_8);
        let lines: Vec<u64> = got.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, [1, 4]);
        let CsvRow::Accrual(second) = &got[1].1 else {
            panic!("{got:?}")
        };
        assert_eq!((second.member_id.as_str(), second.amount), ("m-2", 2));
        assert_eq!(second.reason.as_deref(), Some(" kept "));
    }

    #[test]
    fn bad_lines_are_row_errors_and_the_rest_goes_on() {
        let text = concat!(
            "not json\n",
            "{\"member_id\":\"m-1\",\"point_type\":\"P\",\"amount\":1,\"amount\":1000000}\n",
            "{\"member_id\":\"m-1\",\"point_type\":\"P\",\"amount\":\"10\",\"colour\":\"red\"}\n",
            "[1]\n",
            "{\"member_id\":7,\"point_type\":\"P\",\"amount\":1.5}\n",
            "{\"member_id\":\"m-9\",\"point_type\":\"P\",\"amount\":9}\n",
        );
        let got = rows(text.as_bytes(), encoding_rs::UTF_8);
        assert_eq!(got.len(), 6);
        assert_eq!(errors(&got[0].1)[0].1, "(row)");
        assert!(errors(&got[0].1)[0].2.contains("(column 2)"), "{:?}", errors(&got[0].1));
        assert!(
            errors(&got[1].1)[0].2.contains("\"amount\" appears twice"),
            "{:?}",
            got[1]
        );
        assert_eq!(
            errors(&got[2].1),
            [
                (3, "amount", "must be a number, found a string"),
                (
                    3,
                    "colour",
                    "unknown field; expected accrual_id, member_id, point_type, amount, reason, apply_at, expires_at"
                ),
            ]
        );
        assert_eq!(
            errors(&got[3].1),
            [(4, "(row)", "must be a JSON object, found an array")]
        );
        assert_eq!(
            errors(&got[4].1),
            [
                (5, "member_id", "must be a string, found a number"),
                (
                    5,
                    "amount",
                    "must be a whole number from 1 to 1000000000, found \"1.5\""
                ),
            ]
        );
        let CsvRow::Rejected(e) = &got[4].1 else { panic!() };
        assert_eq!(e[0].raw, "{\"member_id\":7,\"point_type\":\"P\",\"amount\":1.5}");
        assert!(matches!(&got[5], (6, CsvRow::Accrual(a)) if a.member_id == "m-9"));
    }

    #[test]
    fn an_over_long_line_is_a_row_error_and_the_next_line_is_read() {
        let mut text = format!(
            "{{\"member_id\":\"m-1\",\"point_type\":\"P\",\"amount\":1,\"reason\":\"{}\"}}\n",
            "x".repeat(70_000)
        );
        text.push_str("{\"member_id\":\"m-2\",\"point_type\":\"P\",\"amount\":2}\n");
        let got = rows(text.as_bytes(), encoding_rs::UTF_8);
        assert_eq!(errors(&got[0].1)[0].1, "(row)");
        assert!(matches!(&got[1], (2, CsvRow::Accrual(a)) if a.member_id == "m-2"));
    }

    /// Reads in chunks, resuming each time where the last stopped.
    fn rows_in_chunks(bytes: &[u8], chunk: u64, encoding: &'static Encoding) -> Vec<(u64, CsvRow)> {
        let mut reader = NdjsonAccruals::new_in(bytes, "f", encoding);
        let mut out = Vec::new();
        let mut offset = 0u64;
        loop {
            while let Some(row) = reader.next_row().unwrap() {
                out.push(row);
                if reader.consumed().0 >= chunk {
                    break;
                }
            }
            let (read, next_line) = reader.consumed();
            offset += read;
            if offset as usize >= bytes.len() {
                return out;
            }
            assert_eq!(bytes[offset as usize - 1], b'\n');
            reader = NdjsonAccruals::resume_in(&bytes[offset as usize..], next_line, "f", encoding);
        }
    }

    #[test]
    fn reading_in_chunks_gives_the_same_rows_as_one_pass() {
        let text = "{\"member_id\":\"m-1\",\"point_type\":\"P\",\"amount\":10}\r\n\nbad\n{\"member_id\":\"m-2\",\"point_type\":\"P\",\"amount\":0}\n\u{feff}{\"member_id\":\"m-3\",\"point_type\":\"P\",\"amount\":3}";
        let whole = rows(text.as_bytes(), encoding_rs::UTF_8);
        assert_eq!(whole.len(), 4);
        for chunk in [1, 10, 60, 1000] {
            assert_eq!(
                rows_in_chunks(text.as_bytes(), chunk, encoding_rs::UTF_8),
                whole,
                "chunks of {chunk}"
            );
        }
    }
}
