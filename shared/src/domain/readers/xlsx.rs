//! Accruals from an Excel workbook (`.xlsx`): one sheet's rows, streamed cell
//! by cell from the workbook, each turned into the fields of a CSV row and
//! checked by the very same rules ([`crate::domain::row_rules`]).
//!
//! - The sheet: the one named (hidden or not), else the workbook's first
//!   visible worksheet (chart sheets and hidden sheets are passed over).
//! - The header: the sheet's first row holding any value; its cells name the
//!   columns as a CSV header does (same names, same rules). An empty header
//!   cell leaves its column unused: a value under it is a row error.
//! - Line numbers are the row numbers Excel shows (the header is usually
//!   row 1, so the first data row is 2). Rows without any value are skipped,
//!   as blank lines are in a CSV.
//! - Cells: text as is; a whole number (`1000` or `1000.0`) as its digits;
//!   a fraction as its shortest decimal (`1000.5`, which the amount rule
//!   then rejects); a date or date-time cell, which has no zone in Excel, as
//!   an RFC 3339 time in UTC (`apply_at`, `expires_at` only); an empty cell
//!   as absent. A TRUE/FALSE cell, an error cell (`#N/A`) or a date where
//!   no date belongs is a row error naming the row and the column.
//! - A merged range holds its value in its top-left cell only: the other
//!   rows of a vertically merged cell read as empty.
//!
//! Memory: the file's bytes and its shared-strings table (every distinct
//! text of the workbook) are held; cells are streamed, one row at a time.
//! Before anything is unzipped, the sizes the workbook's parts unzip to are
//! held to [`MAX_UNZIPPED_BYTES`] (time) and [`MAX_SHARED_STRINGS_BYTES`]
//! (memory), so a small file that unzips to gigabytes fails as a whole.

use std::io::Cursor;

use calamine::{DataRef, ExcelDateTime, Reader, SheetType, SheetVisible, Xlsx};
use time::format_description::well_known::Rfc3339;

use crate::domain::readers::csv::{reencode, CsvFileError, CsvRow, RowError};
use crate::domain::row_rules::{check_row, layout, Layout};
use crate::domain::submission::file_id_prefix;

/// Most bytes a workbook's parts may unzip to in all: the sheet is streamed,
/// so this bounds the time of a pass (a million rows of five columns unzip
/// to about 230 MB, read in about 7 s).
pub const MAX_UNZIPPED_BYTES: u64 = 1 << 30;
/// Most bytes the shared-strings part (`xl/sharedStrings.xml`, every
/// distinct text) may unzip to: it is held in memory whole.
pub const MAX_SHARED_STRINGS_BYTES: u64 = 256 << 20;

/// Holds the sizes the parts of the workbook in `bytes` unzip to (as its
/// zip directory states them) to `max_total` and, for the shared strings,
/// `max_strings`.
fn check_unzipped(bytes: &[u8], max_total: u64, max_strings: u64) -> Result<(), CsvFileError> {
    let not_workbook = |e: zip::result::ZipError| CsvFileError::NotWorkbook { detail: e.to_string() };
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(not_workbook)?;
    let mut total = 0u64;
    for i in 0..archive.len() {
        let part = archive.by_index_raw(i).map_err(not_workbook)?;
        let size = part.size();
        if part.name().eq_ignore_ascii_case("xl/sharedStrings.xml") && size > max_strings {
            return Err(CsvFileError::Sheet {
                reason: format!(
                    "the workbook's texts (xl/sharedStrings.xml) unzip to {size} bytes, over the {max_strings} one \
                     import holds: split its rows over several workbooks, or save the sheet as CSV; nothing was queued"
                ),
            });
        }
        total = total.saturating_add(size);
    }
    if total > max_total {
        return Err(CsvFileError::Sheet {
            reason: format!(
                "the workbook unzips to {total} bytes, over the {max_total} one import reads: split its rows over \
                 several workbooks, or save the sheet as CSV; nothing was queued"
            ),
        });
    }
    Ok(())
}

/// One data row of the sheet, as the importer and the client take it.
pub struct SheetRow<'a> {
    /// The row number Excel shows.
    pub line: u64,
    pub row: CsvRow,
    /// Whether the row gave its own `accrual_id` (else its id was derived
    /// from the file and line, and scheme v2 replaces it).
    pub has_accrual_id: bool,
    fields: &'a [String],
}

impl SheetRow<'_> {
    /// The row's fields (in the header's order) as one CSV line, for the
    /// error report.
    pub fn raw(&self) -> String {
        let refs: Vec<&str> = self.fields.iter().map(String::as_str).collect();
        reencode(&refs)
    }
}

/// The sheet read, and its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SheetRead {
    pub sheet: String,
    pub columns: Vec<String>,
}

/// What a column's cells are converted for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Amount,
    Time,
}

fn kind(column: &str) -> Kind {
    match column {
        "amount" => Kind::Amount,
        "apply_at" | "expires_at" => Kind::Time,
        _ => Kind::Text,
    }
}

/// Excel's name of a 0-based column index (`0` → `A`, `26` → `AA`).
pub fn column_letters(index: u32) -> String {
    let mut n = u64::from(index) + 1;
    let mut letters = Vec::new();
    while n > 0 {
        let rem = (n - 1) % 26;
        // `rem` < 26: a letter.
        letters.push(char::from(b'A' + rem as u8));
        n = (n - 1) / 26;
    }
    letters.iter().rev().collect()
}

/// A whole number as its digits, else the shortest decimal.
fn number_text(f: f64) -> String {
    // Below 2^53 every whole f64 is exactly an i64.
    if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

/// An Excel date-time (no zone) as RFC 3339 in UTC.
fn date_text(value: &ExcelDateTime) -> Result<String, String> {
    if value.is_duration() {
        return Err("is a duration cell, not a date".to_owned());
    }
    let (y, mo, d, h, mi, s, ms) = value.to_ymd_hms_milli();
    let not_a_date = || {
        format!(
            "is a date cell Excel numbers {}, which is not a calendar date",
            value.as_f64()
        )
    };
    let month = time::Month::try_from(mo).map_err(|_| not_a_date())?;
    let date = time::Date::from_calendar_date(i32::from(y), month, d).map_err(|_| not_a_date())?;
    let clock = time::Time::from_hms_milli(h, mi, s, ms).map_err(|_| not_a_date())?;
    time::PrimitiveDateTime::new(date, clock)
        .assume_utc()
        .format(&Rfc3339)
        .map_err(|_| not_a_date())
}

/// One cell as a field's text, by the column's kind; `Err`: why the cell
/// cannot stand for that column.
fn cell_text(cell: &DataRef<'_>, kind: Kind) -> Result<String, String> {
    let what = match kind {
        Kind::Text => "text",
        Kind::Amount => "a whole number",
        Kind::Time => "a date or an RFC 3339 time",
    };
    match cell {
        DataRef::String(s) | DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => Ok(s.clone()),
        DataRef::SharedString(s) => Ok((*s).to_owned()),
        DataRef::Empty => Ok(String::new()),
        DataRef::Int(n) if kind != Kind::Time => Ok(n.to_string()),
        DataRef::Float(f) if kind != Kind::Time => Ok(number_text(*f)),
        DataRef::Int(_) | DataRef::Float(_) => Err(format!(
            "is a number cell, not a date: format the cell as a date, or type {what}"
        )),
        DataRef::DateTime(value) if kind == Kind::Time => date_text(value),
        DataRef::DateTime(_) => Err(format!("is a date cell; expected {what}")),
        DataRef::Bool(b) => Err(format!(
            "is a TRUE/FALSE cell ({}); expected {what}",
            if *b { "TRUE" } else { "FALSE" }
        )),
        DataRef::Error(e) => Err(format!("is an error cell ({e}); expected {what}")),
    }
}

/// The header's columns: each named cell's sheet column and name.
#[derive(Debug)]
struct Header {
    /// (sheet column, index in `names`), by sheet column.
    at: Vec<(u32, usize)>,
    names: Vec<String>,
    layout: Layout,
}

fn header(row: u64, cells: &[(u32, DataRef<'_>)]) -> Result<Header, CsvFileError> {
    let mut at = Vec::new();
    let mut names = Vec::new();
    for (col, cell) in cells {
        let name = match cell_text(cell, Kind::Text) {
            Ok(name) => name.trim().to_owned(),
            Err(reason) => {
                return Err(CsvFileError::Sheet {
                    reason: format!("the header cell {}{row} {reason}", column_letters(*col)),
                })
            }
        };
        if name.is_empty() {
            continue;
        }
        at.push((*col, names.len()));
        names.push(name);
    }
    let layout = layout(&names)?;
    Ok(Header { at, names, layout })
}

/// A workbook read from memory.
type Book = Xlsx<Cursor<Vec<u8>>>;

/// Opens the workbook in `bytes` and picks the sheet: `sheet` if given, else
/// the first visible worksheet.
fn open(bytes: Vec<u8>, sheet: Option<&str>) -> Result<(Book, String), CsvFileError> {
    check_unzipped(&bytes, MAX_UNZIPPED_BYTES, MAX_SHARED_STRINGS_BYTES)?;
    let workbook: Xlsx<_> = calamine::open_workbook_from_rs(Cursor::new(bytes))
        .map_err(|e: calamine::XlsxError| CsvFileError::NotWorkbook { detail: e.to_string() })?;
    let sheets = workbook.sheets_metadata();
    let name = match sheet {
        Some(wanted) => match sheets.iter().find(|s| s.name == wanted) {
            Some(s) => s.name.clone(),
            None => {
                let names: Vec<&str> = sheets.iter().map(|s| s.name.as_str()).collect();
                return Err(CsvFileError::Sheet {
                    reason: format!("the workbook has no sheet {wanted:?}; its sheets are {names:?}"),
                });
            }
        },
        None => match sheets
            .iter()
            .find(|s| s.typ == SheetType::WorkSheet && s.visible == SheetVisible::Visible)
        {
            Some(s) => s.name.clone(),
            None => {
                return Err(CsvFileError::Sheet {
                    reason: "the workbook has no visible worksheet: name the sheet to read".to_owned(),
                })
            }
        },
    };
    Ok((workbook, name))
}

/// Reads the sheet (see the module's rules), handing each data row to
/// `each` until it answers false. `file_identity` seeds the scheme-v1 ids
/// of rows without `accrual_id`, as [`crate::domain::readers::csv::CsvAccruals`]
/// does. A file that is no workbook, a missing sheet or a bad header fails
/// as a whole.
pub fn read_rows(
    bytes: Vec<u8>,
    sheet: Option<&str>,
    file_identity: &str,
    mut each: impl FnMut(SheetRow<'_>) -> bool,
) -> Result<SheetRead, CsvFileError> {
    let (mut workbook, name) = open(bytes, sheet)?;
    let sheet_error = |e: calamine::XlsxError| CsvFileError::Sheet {
        reason: format!("reading the sheet {name:?} failed: {e}"),
    };
    let mut cells = workbook.worksheet_cells_reader(&name).map_err(sheet_error)?;
    let id_prefix = file_id_prefix(file_identity);
    let mut head: Option<Header> = None;
    let mut current: Option<u32> = None;
    let mut row: Vec<(u32, DataRef<'_>)> = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    loop {
        let next = cells.next_cell().map_err(sheet_error)?;
        let next_row = next.as_ref().map(|c| c.get_position().0);
        if current.is_some() && (next_row != current || next.is_none()) {
            // `current` is set: the row just completed.
            let line = u64::from(current.unwrap_or_default()) + 1;
            match &head {
                None => head = Some(header(line, &row)?),
                Some(h) => {
                    let row_taken = convert(h, line, &row, &id_prefix, &mut fields);
                    if !each(SheetRow {
                        line,
                        row: row_taken.0,
                        has_accrual_id: row_taken.1,
                        fields: &fields,
                    }) {
                        break;
                    }
                }
            }
            row.clear();
            current = None;
        }
        let Some(cell) = next else { break };
        if matches!(cell.get_value(), DataRef::Empty) || matches!(cell.get_value(), DataRef::String(s) if s.is_empty())
        {
            continue;
        }
        let (r, c) = cell.get_position();
        current = Some(r);
        row.push((c, cell.get_value().clone()));
    }
    match head {
        Some(h) => Ok(SheetRead {
            sheet: name,
            columns: h.names,
        }),
        None => Err(CsvFileError::NoHeader),
    }
}

/// One data row's cells as fields, checked; and whether it gave an
/// `accrual_id`.
fn convert(
    h: &Header,
    line: u64,
    cells: &[(u32, DataRef<'_>)],
    id_prefix: &str,
    fields: &mut Vec<String>,
) -> (CsvRow, bool) {
    fields.clear();
    fields.resize(h.names.len(), String::new());
    let mut errors: Vec<RowError> = Vec::new();
    let mut bad_columns: Vec<usize> = Vec::new();
    for (col, cell) in cells {
        match h.at.binary_search_by_key(col, |(c, _)| *c) {
            Ok(i) => {
                let index = h.at[i].1;
                let name = &h.names[index];
                match cell_text(cell, kind(name)) {
                    Ok(text) => fields[index] = text,
                    Err(reason) => {
                        bad_columns.push(index);
                        errors.push(RowError {
                            line,
                            column: name.clone(),
                            reason: format!("(cell {}{line}) {reason}", column_letters(*col)),
                            raw: String::new(),
                        });
                    }
                }
            }
            Err(_) => errors.push(RowError {
                line,
                column: "(row)".to_owned(),
                reason: format!(
                    "has a value in column {}, which the header does not name",
                    column_letters(*col)
                ),
                raw: String::new(),
            }),
        }
    }
    let has_id = h
        .layout
        .accrual_id
        .is_some_and(|i| !fields[i].trim().is_empty() || bad_columns.contains(&i));
    let refs: Vec<&str> = fields.iter().map(String::as_str).collect();
    let checked = check_row(&h.layout, id_prefix, line, &refs);
    if errors.is_empty() {
        return (checked, has_id);
    }
    // A cell that could not be read is reported once, by what it held, not
    // again as the empty field it left.
    if let CsvRow::Rejected(more) = checked {
        errors.extend(
            more.into_iter()
                .filter(|e| !bad_columns.iter().any(|&i| h.names[i] == e.column)),
        );
    }
    let raw = reencode(&refs);
    for e in &mut errors {
        e.raw.clone_from(&raw);
    }
    (CsvRow::Rejected(errors), has_id)
}

/// A cell value as calamine's owned type reads it, for tests of the
/// conversion rules.
#[cfg(test)]
fn owned(cell: calamine::Data) -> DataRef<'static> {
    use calamine::Data;
    match cell {
        Data::Int(n) => DataRef::Int(n),
        Data::Float(f) => DataRef::Float(f),
        Data::String(s) => DataRef::String(s),
        Data::Bool(b) => DataRef::Bool(b),
        Data::DateTime(d) => DataRef::DateTime(d),
        Data::DateTimeIso(s) => DataRef::DateTimeIso(s),
        Data::DurationIso(s) => DataRef::DurationIso(s),
        Data::Error(e) => DataRef::Error(e),
        Data::Empty => DataRef::Empty,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calamine::{CellErrorType, Data, ExcelDateTimeType};

    fn date(serial: f64) -> DataRef<'static> {
        owned(Data::DateTime(ExcelDateTime::new(
            serial,
            ExcelDateTimeType::DateTime,
            false,
        )))
    }

    #[test]
    fn amounts_whole_numbers_only() {
        assert_eq!(cell_text(&DataRef::Float(1000.0), Kind::Amount).unwrap(), "1000");
        assert_eq!(cell_text(&DataRef::Int(7), Kind::Amount).unwrap(), "7");
        assert_eq!(cell_text(&DataRef::Float(1000.5), Kind::Amount).unwrap(), "1000.5");
        assert_eq!(cell_text(&DataRef::SharedString(" 12 "), Kind::Amount).unwrap(), " 12 ");
        let e = cell_text(&DataRef::Bool(true), Kind::Amount).unwrap_err();
        assert!(e.contains("TRUE/FALSE"), "{e}");
        let e = cell_text(&date(46000.0), Kind::Amount).unwrap_err();
        assert!(e.contains("date cell"), "{e}");
        let e = cell_text(&DataRef::Error(CellErrorType::NA), Kind::Amount).unwrap_err();
        assert!(e.contains("error cell (#N/A)"), "{e}");
    }

    #[test]
    fn dates_and_datetimes_become_rfc3339_in_utc() {
        // 2025-10-13 is serial 45943; .5 is noon.
        assert_eq!(cell_text(&date(45943.0), Kind::Time).unwrap(), "2025-10-13T00:00:00Z");
        assert_eq!(cell_text(&date(45943.5), Kind::Time).unwrap(), "2025-10-13T12:00:00Z");
        let e = cell_text(&DataRef::Float(45943.5), Kind::Time).unwrap_err();
        assert!(e.contains("number cell, not a date"), "{e}");
        let duration = owned(Data::DateTime(ExcelDateTime::new(
            1.5,
            ExcelDateTimeType::TimeDelta,
            false,
        )));
        assert!(cell_text(&duration, Kind::Time).unwrap_err().contains("duration"));
        // Serial 60 is Excel's 1900-02-29, which never was.
        assert!(cell_text(&date(60.0), Kind::Time)
            .unwrap_err()
            .contains("not a calendar date"));
        // Text is left to the RFC 3339 rule, as in a CSV.
        assert_eq!(
            cell_text(&DataRef::SharedString("2026-01-01T09:00:00+09:00"), Kind::Time).unwrap(),
            "2026-01-01T09:00:00+09:00"
        );
    }

    #[test]
    fn text_columns_take_numbers_as_digits() {
        assert_eq!(cell_text(&DataRef::Float(12345.0), Kind::Text).unwrap(), "12345");
        assert_eq!(cell_text(&DataRef::Float(1.25), Kind::Text).unwrap(), "1.25");
        assert_eq!(cell_text(&DataRef::Empty, Kind::Text).unwrap(), "");
        assert!(cell_text(&DataRef::Bool(false), Kind::Text)
            .unwrap_err()
            .contains("FALSE"));
        assert!(cell_text(&date(45943.0), Kind::Text).unwrap_err().contains("date cell"));
    }

    #[test]
    fn parts_that_unzip_past_the_bounds_fail_the_file() {
        let mut book = rust_xlsxwriter::Workbook::new();
        let sheet = book.add_worksheet();
        for r in 0..200u32 {
            sheet.write_string(r, 0, format!("member-{r}")).unwrap();
        }
        let bytes = book.save_to_buffer().unwrap();
        assert!(check_unzipped(&bytes, MAX_UNZIPPED_BYTES, MAX_SHARED_STRINGS_BYTES).is_ok());
        let e = check_unzipped(&bytes, MAX_UNZIPPED_BYTES, 1000)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("the workbook's texts (xl/sharedStrings.xml) unzip to "),
            "{e}"
        );
        assert!(e.contains("over the 1000 one import holds"), "{e}");
        let e = check_unzipped(&bytes, 5000, MAX_SHARED_STRINGS_BYTES)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("the workbook unzips to ") && e.contains("over the 5000 one import reads"),
            "{e}"
        );
        let e = check_unzipped(b"member_id,point_type,amount\n", 1 << 30, 1 << 30).unwrap_err();
        assert!(matches!(e, CsvFileError::NotWorkbook { .. }), "{e}");
    }

    #[test]
    fn column_letters_as_excel_names_them() {
        assert_eq!(column_letters(0), "A");
        assert_eq!(column_letters(25), "Z");
        assert_eq!(column_letters(26), "AA");
        assert_eq!(column_letters(16383), "XFD");
    }

    fn cells(values: Vec<(u32, Data)>) -> Vec<(u32, DataRef<'static>)> {
        values.into_iter().map(|(c, d)| (c, owned(d))).collect()
    }

    #[test]
    fn headers_follow_the_csv_rules_with_empty_cells_unused() {
        let h = header(
            1,
            &cells(vec![
                (0, Data::String(" member_id ".into())),
                (2, Data::String("point_type".into())),
                (3, Data::String("amount".into())),
            ]),
        )
        .unwrap();
        assert_eq!(h.names, ["member_id", "point_type", "amount"]);
        let unknown = header(1, &cells(vec![(0, Data::String("member".into()))])).unwrap_err();
        assert!(matches!(unknown, CsvFileError::UnknownColumn { .. }), "{unknown}");
        let missing = header(1, &cells(vec![(0, Data::String("member_id".into()))])).unwrap_err();
        assert!(
            matches!(missing, CsvFileError::MissingColumn { column: "point_type" }),
            "{missing}"
        );
        let twice = header(
            1,
            &cells(vec![
                (0, Data::String("amount".into())),
                (1, Data::String("amount".into())),
            ]),
        )
        .unwrap_err();
        assert!(matches!(twice, CsvFileError::RepeatedColumn { .. }), "{twice}");
        let boolean = header(3, &cells(vec![(1, Data::Bool(true))])).unwrap_err();
        assert!(boolean.to_string().contains("header cell B3"), "{boolean}");
    }

    fn head() -> Header {
        header(
            1,
            &cells(vec![
                (0, Data::String("member_id".into())),
                (1, Data::String("point_type".into())),
                (2, Data::String("amount".into())),
                (4, Data::String("apply_at".into())),
            ]),
        )
        .unwrap()
    }

    #[test]
    fn a_row_is_checked_by_the_csv_rules_and_bad_cells_are_named_once() {
        let mut fields = Vec::new();
        let (row, has_id) = convert(
            &head(),
            7,
            &cells(vec![
                (0, Data::Float(42.0)),
                (1, Data::String("P".into())),
                (2, Data::Float(1000.0)),
                (
                    4,
                    Data::DateTime(ExcelDateTime::new(46023.0, ExcelDateTimeType::DateTime, false)),
                ),
            ]),
            "f",
            &mut fields,
        );
        let CsvRow::Accrual(a) = row else { panic!("{row:?}") };
        assert!(!has_id);
        assert_eq!((a.member_id.as_str(), a.amount), ("42", 1000));
        assert_eq!(a.apply_at.unwrap().to_string(), "2026-01-01 0:00:00.0 +00:00:00");
        let (row, _) = convert(
            &head(),
            9,
            &cells(vec![
                (0, Data::String("m-1".into())),
                (1, Data::Bool(true)),
                (2, Data::Float(1000.5)),
                (3, Data::String("stray".into())),
            ]),
            "f",
            &mut fields,
        );
        let CsvRow::Rejected(errors) = row else {
            panic!("{row:?}")
        };
        let named: Vec<(u64, &str)> = errors.iter().map(|e| (e.line, e.column.as_str())).collect();
        assert_eq!(named, [(9, "point_type"), (9, "(row)"), (9, "amount")], "{errors:?}");
        assert!(errors[0].reason.contains("cell B9"), "{errors:?}");
        assert!(errors[1].reason.contains("column D"), "{errors:?}");
        assert!(errors[2].reason.contains("\"1000.5\""), "{errors:?}");
        assert_eq!(errors[2].raw, "m-1,,1000.5,");
    }
}
