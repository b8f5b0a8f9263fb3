//! Excel workbooks (`.xlsx`) written for the tests by a real writer
//! (`rust_xlsxwriter`), so the import reads what Excel-made files hold:
//! shared strings, number cells, date cells with a number format, hidden
//! sheets and merged ranges.

use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};

/// One cell as a test writes it.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(String),
    Number(f64),
    Bool(bool),
    /// A date-time cell (year, month, day, hour, minute, second), formatted
    /// as a date as Excel shows it.
    Date(u16, u8, u8, u16, u8, u8),
    Empty,
}

/// Text cell.
pub fn t(text: &str) -> Cell {
    Cell::Text(text.to_owned())
}

/// Number cell.
pub fn n(value: f64) -> Cell {
    Cell::Number(value)
}

/// One sheet: its name, whether it is hidden, its rows from row 1, and
/// merged ranges (first row, first column, last row, last column; 0-based),
/// whose value is the top-left cell's.
pub struct Sheet {
    pub name: String,
    pub hidden: bool,
    pub rows: Vec<Vec<Cell>>,
    pub merged: Vec<(u32, u16, u32, u16)>,
}

impl Sheet {
    pub fn new(name: &str, rows: Vec<Vec<Cell>>) -> Sheet {
        Sheet {
            name: name.to_owned(),
            hidden: false,
            rows,
            merged: Vec::new(),
        }
    }
}

/// A workbook of `sheets`, as the bytes of an `.xlsx` file.
pub fn workbook(sheets: &[Sheet]) -> Vec<u8> {
    let mut book = Workbook::new();
    let date = Format::new().set_num_format("yyyy-mm-dd hh:mm:ss");
    // The active sheet cannot be hidden: the first visible one is active.
    let active = sheets.iter().position(|s| !s.hidden);
    for (index, sheet) in sheets.iter().enumerate() {
        let ws = book.add_worksheet();
        ws.set_name(&sheet.name).expect("a valid sheet name");
        for (r, row) in sheet.rows.iter().enumerate() {
            let r = u32::try_from(r).expect("rows fit a sheet");
            for (c, cell) in row.iter().enumerate() {
                let c = u16::try_from(c).expect("columns fit a sheet");
                if sheet.merged.iter().any(|m| m.0 == r && m.1 == c) {
                    continue;
                }
                match cell {
                    Cell::Text(s) => ws.write_string(r, c, s).map(|_| ()),
                    Cell::Number(v) => ws.write_number(r, c, *v).map(|_| ()),
                    Cell::Bool(b) => ws.write_boolean(r, c, *b).map(|_| ()),
                    Cell::Date(y, mo, d, h, mi, s) => {
                        let at = ExcelDateTime::from_ymd(*y, *mo, *d)
                            .and_then(|day| day.and_hms(*h, *mi, *s))
                            .expect("a valid date");
                        ws.write_datetime_with_format(r, c, &at, &date).map(|_| ())
                    }
                    Cell::Empty => Ok(()),
                }
                .expect("write a cell");
            }
        }
        for &(r1, c1, r2, c2) in &sheet.merged {
            let top_left = match sheet.rows.get(r1 as usize).and_then(|row| row.get(usize::from(c1))) {
                Some(Cell::Text(s)) => s.clone(),
                _ => String::new(),
            };
            ws.merge_range(r1, c1, r2, c2, &top_left, &Format::new())
                .expect("merge a range");
        }
        if Some(index) == active {
            ws.set_active(true);
        }
        if sheet.hidden {
            ws.set_hidden(true);
        }
    }
    book.save_to_buffer().expect("save the workbook")
}

/// A workbook of one visible sheet, `Sheet1`.
pub fn one_sheet(rows: Vec<Vec<Cell>>) -> Vec<u8> {
    workbook(&[Sheet::new("Sheet1", rows)])
}

/// The rows of a CSV text (no quoting) as cells: whole numbers and
/// fractions as number cells, as Excel would type them, the rest as text,
/// empty fields as empty cells.
pub fn cells_of_csv(text: &str) -> Vec<Vec<Cell>> {
    text.lines()
        .map(|line| {
            line.split(',')
                .map(|field| {
                    if field.is_empty() {
                        Cell::Empty
                    } else {
                        match field.parse::<f64>() {
                            Ok(v) if field.chars().all(|c| c.is_ascii_digit() || c == '.') => Cell::Number(v),
                            _ => t(field),
                        }
                    }
                })
                .collect()
        })
        .collect()
}
