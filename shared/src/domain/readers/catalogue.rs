//! The bad-input catalogue every reader is held to: the same bad rows, written
//! as a CSV (UTF-8 and UTF-16), an NDJSON file and a workbook, must give the
//! same report lines (line, field, message) from each reader. What only one
//! format can get wrong (a header, a key given twice, a JSON type) is checked
//! per format below the table.

use super::csv::{CsvFileError, CsvRow};
use super::source::utf16_with_bom;
use super::{read_file, FileFormat};

/// One data row, by column; `None` leaves the field out (an empty CSV
/// field, a missing key, an empty cell).
#[derive(Clone, Copy, Default)]
struct Row {
    accrual_id: Option<&'static str>,
    member_id: Option<&'static str>,
    point_type: Option<&'static str>,
    amount: Option<&'static str>,
    reason: Option<&'static str>,
    apply_at: Option<&'static str>,
    expires_at: Option<&'static str>,
}

const HEADER: [&str; 7] = [
    "accrual_id",
    "member_id",
    "point_type",
    "amount",
    "reason",
    "apply_at",
    "expires_at",
];

impl Row {
    fn good() -> Row {
        Row {
            member_id: Some("m-1"),
            point_type: Some("P"),
            amount: Some("10"),
            ..Row::default()
        }
    }

    fn values(&self) -> [Option<&'static str>; 7] {
        [
            self.accrual_id,
            self.member_id,
            self.point_type,
            self.amount,
            self.reason,
            self.apply_at,
            self.expires_at,
        ]
    }
}

fn long(n: usize) -> &'static str {
    Box::leak("x".repeat(n).into_boxed_str())
}

/// A case's name, its row, and the (field, message) of each report line.
type Case = (&'static str, Row, Vec<(&'static str, String)>);

/// Each bad row and the report lines every reader must give for it.
fn cases() -> Vec<Case> {
    let max = crate::domain::MAX_AMOUNT;
    vec![
        (
            "zero amount",
            Row {
                amount: Some("0"),
                ..Row::good()
            },
            vec![("amount", "must be at least 1".to_owned())],
        ),
        (
            "fractional amount",
            Row {
                amount: Some("1.5"),
                ..Row::good()
            },
            vec![(
                "amount",
                format!("must be a whole number from 1 to {max}, found \"1.5\""),
            )],
        ),
        (
            "amount over the bound",
            Row {
                amount: Some("2000000000"),
                ..Row::good()
            },
            vec![("amount", format!("must be at most {max}"))],
        ),
        (
            "missing member",
            Row {
                member_id: None,
                ..Row::good()
            },
            vec![("member_id", "must not be empty".to_owned())],
        ),
        (
            "bad member characters",
            Row {
                member_id: Some("m 1"),
                ..Row::good()
            },
            vec![(
                "member_id",
                "contains ' '; only ASCII letters, digits and - _ . : @ are allowed".to_owned(),
            )],
        ),
        (
            "over-long member",
            Row {
                member_id: Some(long(65)),
                ..Row::good()
            },
            vec![("member_id", "is 65 characters long; at most 64 allowed".to_owned())],
        ),
        (
            "bad point type",
            Row {
                point_type: Some("P.x"),
                ..Row::good()
            },
            vec![(
                "point_type",
                "contains '.'; only ASCII letters, digits, - and _ are allowed".to_owned(),
            )],
        ),
        (
            "bad accrual id",
            Row {
                accrual_id: Some("a/1"),
                ..Row::good()
            },
            vec![(
                "accrual_id",
                "contains '/'; only ASCII letters, digits and - _ . : @ are allowed".to_owned(),
            )],
        ),
        (
            "over-long reason",
            Row {
                reason: Some(long(257)),
                ..Row::good()
            },
            vec![("reason", "is 257 characters long; at most 256 allowed".to_owned())],
        ),
        (
            "bad apply_at",
            Row {
                apply_at: Some("soon"),
                ..Row::good()
            },
            vec![(
                "apply_at",
                "must be an RFC 3339 time such as 2026-12-01T00:00:00Z, found \"soon\"".to_owned(),
            )],
        ),
        (
            "expiry before apply_at",
            Row {
                apply_at: Some("2027-01-01T00:00:00Z"),
                expires_at: Some("2026-01-01T00:00:00Z"),
                ..Row::good()
            },
            vec![(
                "expires_at",
                "must be later than apply_at (the points would expire before they are available)".to_owned(),
            )],
        ),
        (
            "several bad fields",
            Row {
                member_id: None,
                amount: Some("0"),
                ..Row::good()
            },
            vec![
                ("member_id", "must not be empty".to_owned()),
                ("amount", "must be at least 1".to_owned()),
            ],
        ),
    ]
}

fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

fn csv_file(rows: &[Row]) -> String {
    let mut text = HEADER.join(",") + "\n";
    for row in rows {
        let fields: Vec<String> = row.values().iter().map(|v| csv_field(v.unwrap_or(""))).collect();
        text.push_str(&fields.join(","));
        text.push('\n');
    }
    text
}

fn ndjson_file(rows: &[Row]) -> String {
    let mut text = String::new();
    for row in rows {
        let mut object = serde_json::Map::new();
        for (name, value) in HEADER.iter().zip(row.values()) {
            let Some(value) = value else { continue };
            let json = match (*name, value.parse::<serde_json::Number>()) {
                ("amount", Ok(n)) => serde_json::Value::Number(n),
                _ => serde_json::Value::String(value.to_owned()),
            };
            object.insert((*name).to_owned(), json);
        }
        text.push_str(&serde_json::Value::Object(object).to_string());
        text.push('\n');
    }
    text
}

fn workbook(rows: &[Row]) -> Vec<u8> {
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    for (c, name) in HEADER.iter().enumerate() {
        sheet.write_string(0, c as u16, *name).unwrap();
    }
    for (r, row) in rows.iter().enumerate() {
        let r = r as u32 + 1;
        for (c, (name, value)) in HEADER.iter().zip(row.values()).enumerate() {
            let Some(value) = value else { continue };
            match (*name, value.parse::<f64>()) {
                ("amount", Ok(n)) => sheet.write_number(r, c as u16, n).unwrap(),
                _ => sheet.write_string(r, c as u16, value).unwrap(),
            };
        }
    }
    book.save_to_buffer().unwrap()
}

type Lines = Vec<(u64, String, String)>;

/// Every report line of a file, and the lines of its accepted rows.
fn read(bytes: &[u8], format: FileFormat) -> Result<(Lines, Vec<u64>), CsvFileError> {
    let (mut errors, mut accepted) = (Vec::new(), Vec::new());
    read_file(bytes, format, None, None, "f", |row| {
        match row.row {
            CsvRow::Accrual(_) => accepted.push(row.line),
            CsvRow::Rejected(e) => errors.extend(e.into_iter().map(|e| (e.line, e.column, e.reason))),
        }
        true
    })?;
    Ok((errors, accepted))
}

/// The catalogue's file in each format, and the line of its first data row.
fn files(rows: &[Row]) -> Vec<(&'static str, Vec<u8>, FileFormat, u64)> {
    let csv = csv_file(rows);
    vec![
        ("CSV", csv.clone().into_bytes(), FileFormat::Csv, 2),
        ("UTF-16LE CSV", utf16_with_bom(&csv, false), FileFormat::Csv, 2),
        ("NDJSON", ndjson_file(rows).into_bytes(), FileFormat::Ndjson, 1),
        (
            "UTF-16LE NDJSON",
            utf16_with_bom(&ndjson_file(rows), false),
            FileFormat::Ndjson,
            1,
        ),
        ("XLSX", workbook(rows), FileFormat::Xlsx, 2),
    ]
}

#[test]
fn every_reader_gives_the_same_report_lines_for_the_same_bad_rows() {
    let cases = cases();
    // Each bad row between two good ones: a bad row never stops the next.
    let mut rows = vec![Row::good()];
    for (_, row, _) in &cases {
        rows.push(*row);
        rows.push(Row::good());
    }
    for (name, bytes, format, first) in files(&rows) {
        let (errors, accepted) = read(&bytes, format).unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected_accepted: Vec<u64> = (0..=cases.len() as u64).map(|i| first + 2 * i).collect();
        assert_eq!(accepted, expected_accepted, "{name}: the good rows");
        let mut expected = Vec::new();
        for (i, (_, _, lines)) in cases.iter().enumerate() {
            let line = first + 1 + 2 * i as u64;
            expected.extend(lines.iter().map(|(f, m)| (line, (*f).to_owned(), m.clone())));
        }
        for (i, (case, _, _)) in cases.iter().enumerate() {
            let line = first + 1 + 2 * i as u64;
            let got: Vec<_> = errors.iter().filter(|e| e.0 == line).collect();
            let want: Vec<_> = expected.iter().filter(|e| e.0 == line).collect();
            assert_eq!(got, want, "{name}: {case}");
        }
        assert_eq!(errors, expected, "{name}");
    }
}

#[test]
fn a_header_or_key_only_one_format_can_get_wrong_is_refused_as_that_format_refuses_it() {
    // An unknown or repeated column fails a CSV or a workbook as a whole
    // (its header); an NDJSON line names its own keys, so only that line is
    // rejected, as the API rejects such an item.
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    for (c, name) in ["member_id", "point_type", "amount", "colour"].iter().enumerate() {
        sheet.write_string(0, c as u16, *name).unwrap();
    }
    let xlsx = book.save_to_buffer().unwrap();
    for (bytes, format) in [
        (b"member_id,point_type,amount,colour\n".to_vec(), FileFormat::Csv),
        (xlsx, FileFormat::Xlsx),
    ] {
        match read(&bytes, format) {
            Err(CsvFileError::UnknownColumn { column }) => assert_eq!(column, "colour"),
            other => panic!("{format:?}: {other:?}"),
        }
    }
    match read(b"member_id,amount,point_type,amount\n", FileFormat::Csv) {
        Err(CsvFileError::RepeatedColumn { column }) => assert_eq!(column, "amount"),
        other => panic!("{other:?}"),
    }
    let ndjson = concat!(
        "{\"member_id\":\"m-1\",\"point_type\":\"P\",\"amount\":1,\"colour\":\"red\"}\n",
        "{\"member_id\":\"m-1\",\"point_type\":\"P\",\"amount\":1,\"amount\":1000000}\n",
        "{\"member_id\":\"m-1\",\"point_type\":\"P\",\"amount\":\"10\"}\n",
        "{\"member_id\":\"m-1\",\"point_type\":\"P\",\"amount\":10}\n",
    );
    let (errors, accepted) = read(ndjson.as_bytes(), FileFormat::Ndjson).unwrap();
    assert_eq!(accepted, [4]);
    assert_eq!((errors[0].0, errors[0].1.as_str()), (1, "colour"));
    assert!(
        errors[0].2.starts_with("unknown field; expected accrual_id"),
        "{errors:?}"
    );
    assert_eq!((errors[1].0, errors[1].1.as_str()), (2, "(row)"));
    assert!(errors[1].2.contains("\"amount\" appears twice"), "{errors:?}");
    assert_eq!(
        (errors[2].0, errors[2].1.as_str(), errors[2].2.as_str()),
        (3, "amount", "must be a number, found a string")
    );
}
