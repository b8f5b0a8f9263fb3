//! Excel workbooks (`.xlsx`) in the file import on the embedded backend,
//! through the real import and worker handlers: the workbooks are written by
//! a real writer (`pointflow_tests::workbooks`).

use pointflow::domain::{Balance, JobStatus};
use pointflow::services::import::ImportSettings;
use pointflow_tests::import::ImportRig;
use pointflow_tests::workbooks::{cells_of_csv, n, one_sheet, t, workbook, Cell, Sheet};

fn rig(settings: ImportSettings) -> ImportRig {
    ImportRig::sqlite(settings)
}

async fn balances(rig: &ImportRig, member: &str) -> Vec<(String, u64)> {
    rig.backend
        .ledger
        .balances(member)
        .await
        .unwrap()
        .into_iter()
        .map(|Balance { point_type, balance }| (point_type, balance))
        .collect()
}

/// Rows without accrual_id (ids from campaign and content), a repeat, and
/// an expiry the workbook holds as a date cell.
const CAMPAIGN: &str = "member_id,point_type,amount,reason,expires_at
m-1,WELCOME,1000,welcome,2030-01-31T00:00:00Z
m-2,WELCOME,250,,
m-1,BONUS,150,,
m-2,WELCOME,250,,
12345,WELCOME,7,numeric member id,
";

/// [`CAMPAIGN`] as Excel would hold it: numbers as number cells (1000.0),
/// the expiry as a date cell.
fn campaign_workbook() -> Vec<u8> {
    let mut rows = cells_of_csv(CAMPAIGN);
    rows[1][4] = Cell::Date(2030, 1, 31, 0, 0, 0);
    assert_eq!(rows[1][2], n(1000.0), "the amount is a number cell");
    one_sheet(rows)
}

#[tokio::test]
async fn a_workbook_credits_the_same_ids_as_its_csv_copy() {
    let rig = rig(ImportSettings::default());
    let book = rig
        .drop_file_in_campaign("imports/spring.xlsx", &campaign_workbook(), "spring")
        .await;
    rig.notify(&book).await;
    let quiet = rig.run_until_quiet().await;
    assert_eq!(quiet.import_failures, 0);
    let job = rig.job(&book).await;
    assert_eq!(job.status(), JobStatus::Completed, "{:?}", job.error);
    assert_eq!((job.total, job.applied, job.rejected), (5, 5, 0));
    assert_eq!(
        balances(&rig, "m-1").await,
        [("BONUS".into(), 150), ("WELCOME".into(), 1000)]
    );
    assert_eq!(balances(&rig, "m-2").await, [("WELCOME".into(), 500)]);
    assert_eq!(balances(&rig, "12345").await, [("WELCOME".into(), 7)]);
    assert_eq!(rig.report("imports/spring.xlsx").await, None);

    // The same rows as CSV in the same campaign: the same ids, so every
    // one is found credited already.
    let csv = rig
        .drop_file_in_campaign("imports/spring.csv", CAMPAIGN.as_bytes(), "spring")
        .await;
    rig.notify(&csv).await;
    rig.run_until_quiet().await;
    let job = rig.job(&csv).await;
    assert_eq!((job.total, job.applied, job.duplicate, job.rejected), (5, 0, 5, 0));
    assert_eq!(balances(&rig, "m-2").await, [("WELCOME".into(), 500)]);
}

#[tokio::test]
async fn bad_rows_are_reported_by_the_row_numbers_excel_shows() {
    let rig = rig(ImportSettings::default());
    let rows = vec![
        vec![t("member_id"), t("point_type"), t("amount")],
        vec![t("m-1"), t("P"), n(10.0)],
        // Row 3 is empty: skipped, and still counted as Excel counts it.
        vec![],
        vec![t("m-2"), t("P"), n(1000.5)],
        vec![t("m-3"), Cell::Bool(true), n(5.0)],
        vec![t("m-4"), t("P"), Cell::Date(2026, 1, 1, 0, 0, 0)],
        vec![t("m-5"), t("P"), n(3.0), t("stray")],
        vec![t("m-6"), t("P"), t(" 4 ")],
    ];
    let task = rig.drop_file("imports/bad.xlsx", &one_sheet(rows)).await;
    rig.notify(&task).await;
    rig.run_until_quiet().await;
    let job = rig.job(&task).await;
    assert_eq!((job.applied, job.rejected), (2, 4));
    assert_eq!(job.status(), JobStatus::CompletedWithErrors);
    let report = rig.report("imports/bad.xlsx").await.expect("a report");
    assert_eq!(
        report,
        "line,column,reason,raw
4,amount,\"must be a whole number from 1 to 1000000000, found \"\"1000.5\"\"\",\"m-2,P,1000.5\"
5,point_type,(cell B5) is a TRUE/FALSE cell (TRUE); expected text,\"m-3,,5\"
6,amount,(cell C6) is a date cell; expected a whole number,\"m-4,P,\"
7,(row),\"has a value in column D, which the header does not name\",\"m-5,P,3\"
"
    );
    assert_eq!(balances(&rig, "m-6").await, [("P".into(), 4)]);
}

#[tokio::test]
async fn a_file_named_xlsx_that_is_no_workbook_fails_as_a_whole() {
    let rig = rig(ImportSettings::default());
    let task = rig
        .drop_file("imports/fake.xlsx", b"member_id,point_type,amount\nm-1,P,1\n")
        .await;
    rig.notify(&task).await;
    let quiet = rig.run_until_quiet().await;
    assert_eq!(quiet.import_failures, 0, "a permanent failure, not retried");
    let job = rig.job(&task).await;
    assert_eq!(job.status(), JobStatus::Failed);
    assert_eq!(job.total, 0);
    let error = job.error.unwrap_or_default();
    assert!(
        error.starts_with("the file is not an Excel workbook (.xlsx): "),
        "{error}"
    );
    let report = rig.report("imports/fake.xlsx").await.expect("a report naming why");
    assert!(report.contains("not an Excel workbook"), "{report}");
    assert_eq!(balances(&rig, "m-1").await, []);
}

#[tokio::test]
async fn a_workbook_over_the_ceiling_fails_as_a_whole_before_any_row_is_read() {
    let book = campaign_workbook();
    let rig = rig(ImportSettings {
        max_workbook_bytes: book.len() as u64 - 1,
        ..ImportSettings::default()
    });
    let task = rig.drop_file("imports/large.xlsx", &book).await;
    rig.notify(&task).await;
    rig.run_until_quiet().await;
    let job = rig.job(&task).await;
    assert_eq!(job.status(), JobStatus::Failed);
    assert_eq!((job.total, job.applied), (0, 0));
    let error = job.error.unwrap_or_default();
    assert!(
        error.contains(&format!("over the {} bytes one import reads", book.len() - 1)),
        "{error}"
    );
    assert_eq!(balances(&rig, "m-1").await, []);
}

#[tokio::test]
async fn the_first_visible_sheet_is_read_unless_metadata_names_one() {
    let header = || vec![t("member_id"), t("point_type"), t("amount")];
    let mut hidden = Sheet::new("Draft", vec![header(), vec![t("m-hidden"), t("P"), n(1.0)]]);
    hidden.hidden = true;
    let mut visible = Sheet::new("Final", vec![header(), vec![t("m-final"), t("P"), n(2.0)]]);
    // A merged title cell above nothing: only its top-left holds a value.
    visible.rows.push(vec![t("m-merged"), t("P"), n(3.0)]);
    visible.rows.push(vec![Cell::Empty, t("P"), n(4.0)]);
    visible.merged.push((2, 0, 3, 0));
    let other = Sheet::new("Other", vec![header(), vec![t("m-other"), t("P"), n(5.0)]]);
    let book = workbook(&[hidden, visible, other]);

    let rig = rig(ImportSettings::default());
    let first = rig.drop_file("imports/book.xlsx", &book).await;
    rig.notify(&first).await;
    rig.run_until_quiet().await;
    let job = rig.job(&first).await;
    assert_eq!((job.applied, job.rejected), (2, 1), "{:?}", job.error);
    assert_eq!(balances(&rig, "m-hidden").await, []);
    assert_eq!(balances(&rig, "m-final").await, [("P".into(), 2)]);
    assert_eq!(balances(&rig, "m-merged").await, [("P".into(), 3)]);
    let report = rig.report("imports/book.xlsx").await.unwrap();
    assert!(
        report.contains("\n4,member_id,"),
        "the merged cell's lower row: {report}"
    );

    let named = rig
        .drop_file_with_metadata("imports/hidden.xlsx", &book, &[("sheet", "Draft")])
        .await;
    rig.notify(&named).await;
    rig.run_until_quiet().await;
    assert_eq!(balances(&rig, "m-hidden").await, [("P".into(), 1)]);

    let missing = rig
        .drop_file_with_metadata("imports/missing.xlsx", &book, &[("sheet", "Summary")])
        .await;
    rig.notify(&missing).await;
    rig.run_until_quiet().await;
    let job = rig.job(&missing).await;
    assert_eq!(job.status(), JobStatus::Failed);
    let error = job.error.unwrap_or_default();
    assert!(
        error.contains(r#"no sheet "Summary"; its sheets are ["Draft", "Final", "Other"]"#),
        "{error}"
    );
}

/// Writes the workbooks the measurements in docs/file-import.md read:
/// `XLSX_ROWS` rows (default 100000) of five columns, at `XLSX_OUT`.
/// `cargo test -p pointflow-tests --test local write_measurement_workbook -- --ignored`
#[test]
#[ignore = "writes a file for a measurement"]
fn write_measurement_workbook() {
    let rows: usize = std::env::var("XLSX_ROWS").map_or(100_000, |v| v.parse().expect("XLSX_ROWS"));
    let out = std::env::var("XLSX_OUT").unwrap_or_else(|_| "/tmp/measure.xlsx".to_owned());
    let mut cells = vec![vec![
        t("member_id"),
        t("point_type"),
        t("amount"),
        t("reason"),
        t("expires_at"),
    ]];
    for i in 0..rows {
        cells.push(vec![
            t(&format!("m-{i}")),
            t(if i % 3 == 0 { "BONUS" } else { "WELCOME" }),
            n((100 + i % 900) as f64),
            t("spring campaign"),
            Cell::Date(2030, 1 + (i % 12) as u8, 1, 0, 0, 0),
        ]);
    }
    std::fs::write(&out, one_sheet(cells)).expect("write the workbook");
}

/// Writes the seed corpus of the `xlsx_import` fuzz target
/// (`fuzz/corpus/xlsx_import/`): a packing byte, then a workbook.
/// `cargo test -p pointflow-tests --test local write_xlsx_fuzz_corpus -- --ignored`
#[test]
#[ignore = "rewrites the fuzz corpus"]
fn write_xlsx_fuzz_corpus() {
    let header = || vec![t("member_id"), t("point_type"), t("amount")];
    let mut hidden = Sheet::new("Draft", vec![header(), vec![t("m-1"), t("P"), n(1.0)]]);
    hidden.hidden = true;
    let mut merged = Sheet::new(
        "Final",
        vec![header(), vec![t("m-2"), t("P"), n(2.0)], vec![t("m-3"), t("P"), n(3.0)]],
    );
    merged.rows.push(vec![Cell::Empty, t("P"), n(4.0)]);
    merged.merged.push((2, 0, 3, 0));
    let valid = campaign_workbook();
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("campaign", valid.clone()),
        (
            "bad-rows",
            one_sheet(vec![
                header(),
                vec![t("m-1"), t("P"), n(1000.5)],
                vec![],
                vec![t("m-2"), Cell::Bool(false), n(5.0)],
                vec![t("m-3"), t("P"), Cell::Date(2026, 1, 1, 12, 0, 0), t("stray")],
                vec![t("bad id"), t("P"), n(0.0)],
            ]),
        ),
        ("hidden-and-merged", workbook(&[hidden, merged])),
        ("no-rows", one_sheet(vec![])),
        ("header-only", one_sheet(vec![header()])),
        (
            "unknown-column",
            one_sheet(vec![vec![t("member"), t("points")], vec![t("m-1"), n(1.0)]]),
        ),
        (
            "dates",
            one_sheet(vec![
                vec![
                    t("member_id"),
                    t("point_type"),
                    t("amount"),
                    t("apply_at"),
                    t("expires_at"),
                ],
                vec![
                    t("m-1"),
                    t("P"),
                    n(1.0),
                    Cell::Date(2026, 6, 1, 9, 30, 0),
                    Cell::Date(2027, 6, 1, 0, 0, 0),
                ],
                vec![t("m-2"), t("P"), n(2.0), n(46000.5), t("2027-01-01T00:00:00+09:00")],
            ]),
        ),
        (
            "ids-and-repeats",
            one_sheet(vec![
                vec![
                    t("member_id"),
                    t("point_type"),
                    t("amount"),
                    t("accrual_id"),
                    t("reason"),
                ],
                vec![t("m-1"), t("P"), n(1.0), t("a-1"), t("first")],
                vec![t("m-1"), t("P"), n(1.0), t("a-1"), t("first")],
                vec![t("m-1"), t("P"), n(2.0), t("a-1"), t("other")],
                vec![n(12345.0), t("P"), n(3.0), n(77.0), Cell::Empty],
                vec![t("m-9"), t("P"), n(3.0), Cell::Empty, t("신규 가입 적립")],
            ]),
        ),
        ("not-a-zip", CAMPAIGN.as_bytes().to_vec()),
        ("truncated", valid[..valid.len() / 2].to_vec()),
        (
            "far-column",
            one_sheet(vec![header(), {
                let mut row = vec![t("m-1"), t("P"), n(1.0)];
                row.extend(std::iter::repeat_n(Cell::Empty, 60));
                row.push(t("far"));
                row
            }]),
        ),
    ];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/xlsx_import");
    std::fs::create_dir_all(&dir).expect("create the corpus folder");
    for (i, (name, book)) in seeds.into_iter().enumerate() {
        let mut input = vec![u8::try_from(i).expect("few seeds")];
        input.extend_from_slice(&book);
        std::fs::write(dir.join(format!("seed-{name}")), input).expect("write a seed");
    }
}

/// Reads the workbook at `XLSX_OUT` once, as one pass of the importer
/// does, and prints the rows and the time taken (run it under
/// `/usr/bin/time -v` for the peak RSS).
#[test]
#[ignore = "a measurement"]
fn measure_workbook_read() {
    let path = std::env::var("XLSX_OUT").unwrap_or_else(|_| "/tmp/measure.xlsx".to_owned());
    let bytes = std::fs::read(&path).expect("read the workbook");
    let started = std::time::Instant::now();
    let (mut rows, mut good) = (0u64, 0u64);
    pointflow::domain::xlsx_rows::read_rows(bytes, None, "measure", |row| {
        rows += 1;
        good += u64::from(matches!(row.row, pointflow::domain::csv_rows::CsvRow::Accrual(_)));
        true
    })
    .expect("a workbook");
    println!(
        "{path}: {rows} rows ({good} valid) read in {:.2} s",
        started.elapsed().as_secs_f64()
    );
}
