//! NDJSON files and UTF-16 CSV files through the real import and worker
//! handlers on the embedded backend, in one chunk and in many, and what the
//! job's pointer (`reports/<key>.job.json`) says of a file's format,
//! encoding and sheet.

use pointflow::domain::packing::PackingLimits;
use pointflow::domain::readers::source::utf16_with_bom;
use pointflow::domain::JobStatus;
use pointflow::services::import::ImportSettings;
use pointflow_tests::import::ImportRig;

/// Small chunks and windows: a file of a few rows takes many invocations.
fn small() -> ImportSettings {
    ImportSettings {
        chunk_bytes: 90,
        packing: PackingLimits {
            max_accruals: 2,
            ..PackingLimits::default()
        },
        ..ImportSettings::default()
    }
}

async fn pointer(rig: &ImportRig, key: &str) -> serde_json::Value {
    let text = rig
        .read(&format!("reports/{key}.job.json"))
        .await
        .expect("the job pointer");
    serde_json::from_str(&text).unwrap()
}

const CSV: &str = "member_id,point_type,amount,reason\n\
                   m-1,WELCOME,100,신규 가입 적립 😀\n\
                   m-2,WELCOME,200,\"신규, 가입\"\n\
                   m-1,WELCOME,100,신규 가입 적립 😀\n\
                   m-3,BONUS,0,zero\n\
                   m-4,BONUS,40,\n";

/// The rows of [`CSV`] as NDJSON, with a blank line and a bad line more.
const NDJSON: &str = "{\"member_id\":\"m-1\",\"point_type\":\"WELCOME\",\"amount\":100,\"reason\":\"신규 가입 적립 😀\"}\n\
                      {\"member_id\":\"m-2\",\"point_type\":\"WELCOME\",\"amount\":200,\"reason\":\"신규, 가입\"}\r\n\
                      \n\
                      {\"member_id\":\"m-1\",\"point_type\":\"WELCOME\",\"amount\":100,\"reason\":\"신규 가입 적립 😀\"}\n\
                      {\"member_id\":\"m-3\",\"point_type\":\"BONUS\",\"amount\":0,\"reason\":\"zero\"}\n\
                      {\"member_id\":\"m-5\",\"point_type\":\"BONUS\",\"amount\":5,\"amount\":5000}\n\
                      {\"member_id\":\"m-4\",\"point_type\":\"BONUS\",\"amount\":40}";

#[tokio::test]
async fn an_ndjson_file_in_chunks_credits_the_ids_of_its_csv_copy_and_reports_bad_lines() {
    let rig = ImportRig::sqlite(small());
    let csv = rig
        .drop_file_with_metadata("imports/spring.csv", CSV.as_bytes(), &[("campaign", "spring")])
        .await;
    rig.notify(&csv).await;
    rig.run_until_quiet().await;
    let first = rig.job(&csv).await;
    assert_eq!((first.applied, first.rejected), (4, 1), "{first:?}");

    let ndjson = rig
        .drop_file_with_metadata("imports/spring.ndjson", NDJSON.as_bytes(), &[("campaign", "spring")])
        .await;
    rig.notify(&ndjson).await;
    let quiet = rig.run_until_quiet().await;
    assert!(quiet.import_invocations > 3, "read in many chunks: {quiet:?}");
    let job = rig.job(&ndjson).await;
    assert_eq!(job.status(), JobStatus::CompletedWithErrors);
    // The same content in the same campaign: the same ids, nothing new.
    assert_eq!((job.applied, job.duplicate, job.rejected), (0, 4, 2), "{job:?}");
    let report = rig.report("imports/spring.ndjson").await.expect("a report");
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines[0], "line,column,reason,raw");
    assert!(lines[1].starts_with("5,amount,must be at least 1,"), "{report}");
    assert!(
        lines[2].starts_with("6,(row),\"is not a JSON object: key \"\"amount\"\" appears twice"),
        "{report}"
    );
    let pointer = pointer(&rig, "imports/spring.ndjson").await;
    assert_eq!(pointer["format"], "ndjson");
    assert_eq!(pointer["encoding"]["name"], "UTF-8");
}

#[tokio::test]
async fn a_utf16_csv_in_chunks_credits_the_ids_of_its_utf8_copy_and_names_its_encoding() {
    let rig = ImportRig::sqlite(small());
    let utf8 = rig
        .drop_file_with_metadata("imports/spring.csv", CSV.as_bytes(), &[("campaign", "spring")])
        .await;
    rig.notify(&utf8).await;
    rig.run_until_quiet().await;
    assert_eq!(rig.job(&utf8).await.applied, 4);
    for (key, big_endian, name) in [
        ("imports/spring-le.csv", false, "UTF-16LE"),
        ("imports/spring-be.csv", true, "UTF-16BE"),
    ] {
        let bytes = utf16_with_bom(CSV, big_endian);
        let task = rig
            .drop_file_with_metadata(key, &bytes, &[("campaign", "spring")])
            .await;
        rig.notify(&task).await;
        let quiet = rig.run_until_quiet().await;
        assert!(quiet.import_invocations >= 3, "read in many chunks: {quiet:?}");
        let job = rig.job(&task).await;
        assert_eq!((job.applied, job.duplicate, job.rejected), (0, 4, 1), "{name}: {job:?}");
        let report = rig.report(key).await.expect("a report");
        assert!(report.contains("\n5,amount,must be at least 1,"), "{report}");
        let pointer = pointer(&rig, key).await;
        assert_eq!(pointer["format"], "csv");
        assert_eq!(pointer["encoding"], serde_json::json!({"name": name, "source": "bom"}));
    }
}

#[tokio::test]
async fn a_workbooks_pointer_names_its_format_and_the_sheet_read() {
    let rig = ImportRig::sqlite(ImportSettings::default());
    let mut book = rust_xlsxwriter::Workbook::new();
    book.add_worksheet().set_name("Draft").unwrap();
    let sheet = book.add_worksheet().set_name("Final").unwrap();
    for (c, name) in ["member_id", "point_type", "amount"].iter().enumerate() {
        sheet.write_string(0, c as u16, *name).unwrap();
    }
    sheet
        .write_string(1, 0, "m-1")
        .unwrap()
        .write_string(1, 1, "P")
        .unwrap();
    sheet.write_number(1, 2, 10.0).unwrap();
    let bytes = book.save_to_buffer().unwrap();
    let task = rig
        .drop_file_with_metadata("imports/book.xlsx", &bytes, &[("sheet", "Final")])
        .await;
    rig.notify(&task).await;
    rig.run_until_quiet().await;
    assert_eq!(rig.job(&task).await.applied, 1);
    let pointer = pointer(&rig, "imports/book.xlsx").await;
    assert_eq!(
        (&pointer["format"], &pointer["sheet"]),
        (&"xlsx".into(), &"Final".into())
    );
    assert!(pointer.get("encoding").is_none(), "{pointer}");
}

/// An NDJSON file without a line (or only blank ones) ends like a CSV of a
/// header alone: a completed job that credits nothing.
#[tokio::test]
async fn an_ndjson_file_of_blank_lines_completes_crediting_nothing() {
    let rig = ImportRig::sqlite(ImportSettings::default());
    for (key, content) in [
        ("imports/empty.ndjson", &b""[..]),
        ("imports/blank.jsonl", &b"\n \r\n\n"[..]),
    ] {
        let task = rig.drop_file(key, content).await;
        rig.notify(&task).await;
        rig.run_until_quiet().await;
        let job = rig.job(&task).await;
        assert_eq!(
            (job.status(), job.total, job.rejected),
            (JobStatus::Completed, 0, 0),
            "{key}: {job:?}"
        );
    }
}
