//! Files in legacy encodings through the real import and worker handlers on
//! the embedded backend: real bytes (encoded with `encoding_rs` here, never
//! ASCII re-labelled), declared and detected, in one chunk and in many.

use encoding_rs::Encoding;
use pointflow::domain::packing::PackingLimits;
use pointflow::domain::{Balance, JobStatus};
use pointflow::services::import::ImportSettings;
use pointflow_tests::import::ImportRig;

fn rig(settings: ImportSettings) -> ImportRig {
    ImportRig::sqlite(settings)
}

/// `text` in `encoding`, refusing a text the encoding cannot hold.
fn encode(text: &str, encoding: &'static Encoding) -> Vec<u8> {
    let (bytes, used, unmappable) = encoding.encode(text);
    assert!(used == encoding && !unmappable, "{text:?} in {}", encoding.name());
    bytes.into_owned()
}

/// A campaign file whose every row's reason is `reason` and a number.
fn campaign(reason: &str, rows: usize) -> String {
    let mut text = String::from("member_id,point_type,amount,reason\n");
    for i in 0..rows {
        text.push_str(&format!("m-{},WELCOME,{},{reason} {i}\n", i % 5, 10 + i));
    }
    text
}

/// The `encoding` the job's pointer names, as `(name, source)`.
async fn pointer_encoding(rig: &ImportRig, key: &str) -> (String, String) {
    let pointer = rig
        .read(&format!("reports/{key}.job.json"))
        .await
        .expect("the job pointer");
    let pointer: serde_json::Value = serde_json::from_str(&pointer).unwrap();
    let e = &pointer["encoding"];
    (
        e["name"].as_str().unwrap_or_default().to_owned(),
        e["source"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Each reason, in its encoding: whether to declare it, the label, the
/// name the pointer gives (chardetng calls a GB18030 file GBK, whose
/// decoder is GB18030's).
const CASES: [(&str, &Encoding, &str); 4] = [
    ("신규 가입 적립", encoding_rs::EUC_KR, "cp949"),
    ("新規入会ポイント", encoding_rs::SHIFT_JIS, "shift_jis"),
    ("新会员注册积分奖励", encoding_rs::GB18030, "gb18030"),
    ("Café Zoë", encoding_rs::WINDOWS_1252, "windows-1252"),
];

#[tokio::test]
async fn each_legacy_encoding_declared_and_detected_credits_its_rows_with_their_text() {
    let rig = rig(ImportSettings::default());
    for (reason, encoding, label) in CASES {
        for declare in [true, false] {
            let text = campaign(reason, 12);
            let bytes = encode(&text, encoding);
            assert_ne!(bytes, text.as_bytes(), "real {} bytes", encoding.name());
            let key = format!("imports/{label}-{declare}.csv");
            let task = if declare {
                rig.drop_file_with_metadata(&key, &bytes, &[("encoding", label), ("campaign", label)])
                    .await
            } else {
                rig.drop_file_with_metadata(&key, &bytes, &[("campaign", label)]).await
            };
            rig.notify(&task).await;
            rig.run_until_quiet().await;
            let job = rig.job(&task).await;
            assert_eq!(
                job.status(),
                JobStatus::Completed,
                "{label}, declared {declare}: {job:?}"
            );
            // The same rows in the same campaign: the second drop (detected)
            // credits nothing new, and finds every row a duplicate.
            let expected = if declare { (12, 0) } else { (0, 12) };
            assert_eq!((job.applied, job.duplicate), expected, "{label}, declared {declare}");
            let (name, source) = pointer_encoding(&rig, &key).await;
            let name = if name == "GBK" { "gb18030".to_owned() } else { name };
            assert_eq!(
                (name.as_str(), source.as_str()),
                (encoding.name(), if declare { "declared" } else { "detected" }),
                "{label}"
            );
        }
    }
}

#[tokio::test]
async fn a_utf8_and_a_cp949_copy_credit_the_same_ids_in_one_chunk_or_many() {
    let text = campaign("신규 가입 적립", 60);
    let cp949 = encode(&text, encoding_rs::EUC_KR);
    let small = ImportSettings {
        chunk_bytes: 97,
        packing: PackingLimits {
            max_accruals: 2,
            ..PackingLimits::default()
        },
        ..ImportSettings::default()
    };
    let rig = rig(small);
    let utf8 = rig
        .drop_file_with_metadata("imports/spring.csv", text.as_bytes(), &[("campaign", "spring")])
        .await;
    rig.notify(&utf8).await;
    rig.run_until_quiet().await;
    let first = rig.job(&utf8).await;
    assert_eq!((first.applied, first.duplicate, first.rejected), (60, 0, 0));
    let balances: Vec<Vec<Balance>> = {
        let mut all = Vec::new();
        for m in 0..5 {
            all.push(rig.backend.ledger.balances(&format!("m-{m}")).await.unwrap());
        }
        all
    };

    // The CP949 copy, read in chunks of 97 bytes (many invocations),
    // detected: every row is a duplicate of the UTF-8 copy's.
    let korean = rig
        .drop_file_with_metadata("imports/spring-cp949.csv", &cp949, &[("campaign", "spring")])
        .await;
    rig.notify(&korean).await;
    let quiet = rig.run_until_quiet().await;
    assert!(quiet.import_invocations > 10, "{quiet:?}");
    let second = rig.job(&korean).await;
    assert_eq!(
        (second.applied, second.duplicate, second.rejected),
        (0, 60, 0),
        "{second:?}"
    );
    assert_eq!(
        pointer_encoding(&rig, "imports/spring-cp949.csv").await,
        ("EUC-KR".to_owned(), "detected".to_owned())
    );
    for (m, before) in balances.iter().enumerate() {
        assert_eq!(&rig.backend.ledger.balances(&format!("m-{m}")).await.unwrap(), before);
    }
}

#[tokio::test]
async fn an_unknown_label_and_a_binary_file_fail_the_file_naming_why() {
    let rig = rig(ImportSettings::default());
    let task = rig
        .drop_file_with_metadata(
            "imports/klingon.csv",
            b"member_id,point_type,amount\nm-1,P,1\n",
            &[("encoding", "klingon-8")],
        )
        .await;
    rig.notify(&task).await;
    rig.run_until_quiet().await;
    let job = rig.job(&task).await;
    assert_eq!(job.status(), JobStatus::Failed);
    let error = job.error.unwrap_or_default();
    assert!(error.contains("unknown encoding \"klingon-8\""), "{error}");

    let mut xlsx = b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00".to_vec();
    xlsx.extend_from_slice(b"[Content_Types].xml");
    let task = rig.drop_file("imports/book.csv", &xlsx).await;
    rig.notify(&task).await;
    rig.run_until_quiet().await;
    let job = rig.job(&task).await;
    assert_eq!(job.status(), JobStatus::Failed);
    let error = job.error.unwrap_or_default();
    assert!(error.contains("zip archive"), "{error}");
}

#[tokio::test]
async fn an_undecodable_row_in_a_declared_encoding_is_a_row_error_naming_its_line() {
    let rig = rig(ImportSettings::default());
    let mut bytes = encode(
        "member_id,point_type,amount,reason\nm-1,P,1,新規入会ポイント\n",
        encoding_rs::SHIFT_JIS,
    );
    bytes.extend_from_slice(b"m-2,P,2,bad \x81\x20 text\nm-3,P,3,ok\n");
    let task = rig
        .drop_file_with_metadata("imports/sjis.csv", &bytes, &[("encoding", "sjis")])
        .await;
    rig.notify(&task).await;
    rig.run_until_quiet().await;
    let job = rig.job(&task).await;
    assert_eq!((job.applied, job.rejected), (2, 1));
    let report = rig.report("imports/sjis.csv").await.unwrap();
    assert!(report.contains("\n3,(row),is not Shift_JIS text,"), "{report}");
}
