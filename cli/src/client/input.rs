//! Reading a campaign file (JSON array, NDJSON, CSV or an Excel workbook) into request-sized
//! chunks, streaming: read by the file import's own readers and checked by
//! its row rules ([`pointflow::domain::readers`]) on the way, so bad lines
//! are reported here, as the import reports them, and never stop the good
//! ones. An accrual without
//! `accrual_id` gets one here, from its campaign and content
//! ([`pointflow::domain::accrual_ids`], scheme v2), so its id never depends
//! on the chunk it lands in; each chunk carries an `Idempotency-Key` derived
//! from its body (ids included) and position.

use std::io::{BufReader, Read};

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use pointflow::domain::accrual_ids::ContentIds;
use pointflow::domain::readers::csv::CsvRow;
use pointflow::domain::readers::ndjson::check_object;
use pointflow::domain::readers::{read_file, FileFormat};
use pointflow::domain::text_encoding::FileEncoding;
use pointflow::domain::Accrual;

/// What the file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `[{...}, {...}]`, or `{"accruals": [...]}` as the API takes it.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// The file-drop CSV format (header row, then one accrual per row).
    Csv,
    /// An Excel workbook (`.xlsx`): one sheet, read as the importer reads
    /// it (header row, then one accrual per row; lines are Excel's rows).
    Xlsx,
}

impl Format {
    /// From a file name's extension (`.json`, `.ndjson`/`.jsonl`, `.csv`,
    /// `.xlsx`).
    pub fn from_name(name: &str) -> Option<Format> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".csv") {
            Some(Format::Csv)
        } else if lower.ends_with(".xlsx") {
            Some(Format::Xlsx)
        } else if lower.ends_with(".ndjson") || lower.ends_with(".jsonl") {
            Some(Format::Ndjson)
        } else if lower.ends_with(".json") {
            Some(Format::Json)
        } else {
            None
        }
    }
}

/// How big a chunk may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLimits {
    pub max_items: usize,
    /// Request body bytes; the API takes at most 6,000,000.
    pub max_bytes: usize,
}

impl Default for ChunkLimits {
    fn default() -> Self {
        ChunkLimits {
            max_items: 20_000,
            max_bytes: 5_000_000,
        }
    }
}

/// One request's worth of accruals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// 0-based position in the file.
    pub index: u32,
    /// `Idempotency-Key`: the same file (and `--campaign`) always gives
    /// the same keys, so a re-run replays instead of crediting again.
    pub key: String,
    /// The request body, `{"accruals":[...]}`.
    pub body: Vec<u8>,
    pub items: usize,
    /// Source line (or array item) of each accrual, for mapping errors back.
    pub lines: Vec<u64>,
    /// Bytes of input read up to the end of this chunk (for progress).
    pub input_bytes: u64,
}

/// A line of the input that is not a valid accrual.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineError {
    /// 1-based line number (JSON array input: 1-based item number).
    pub line: u64,
    pub field: String,
    pub reason: String,
}

/// The item as sent: an [`Accrual`] with its given or derived id.
#[derive(Serialize)]
struct Item<'a> {
    accrual_id: &'a str,
    member_id: &'a str,
    point_type: &'a str,
    amount: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    apply_at: Option<time::OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    expires_at: Option<time::OffsetDateTime>,
}

/// Groups validated accruals into chunks, derives the ids they lack and
/// the chunks' keys.
pub struct Chunker {
    limits: ChunkLimits,
    campaign: String,
    ids: ContentIds,
    next_index: u32,
    body: Vec<u8>,
    items: usize,
    lines: Vec<u64>,
}

impl Chunker {
    /// `campaign` names the submission: the same lines under another
    /// campaign name are other accruals (and are credited again).
    pub fn new(limits: ChunkLimits, campaign: &str) -> Self {
        Chunker {
            limits,
            campaign: campaign.to_owned(),
            ids: ContentIds::new(campaign),
            next_index: 0,
            body: Vec::new(),
            items: 0,
            lines: Vec::new(),
        }
    }

    /// Adds one accrual (from `line`); `derived`: it came without an id,
    /// which is derived from its content. Returns a chunk when one is full.
    pub fn push(&mut self, line: u64, accrual: &Accrual, derived: bool, input_bytes: u64) -> Option<Chunk> {
        let derived_id = derived.then(|| self.ids.next_id(accrual));
        let item = Item {
            accrual_id: derived_id.as_deref().unwrap_or(&accrual.accrual_id),
            member_id: &accrual.member_id,
            point_type: &accrual.point_type,
            amount: accrual.amount,
            reason: accrual.reason.as_deref(),
            apply_at: accrual.apply_at,
            expires_at: accrual.expires_at,
        };
        // Serialising plain strings, integers and valid times cannot fail.
        let encoded = serde_json::to_vec(&item).unwrap_or_default();
        let full = self.items > 0
            && (self.items >= self.limits.max_items || self.body.len() + encoded.len() + 20 > self.limits.max_bytes);
        let done = if full { self.take(input_bytes) } else { None };
        self.body.push(if self.items == 0 { b'[' } else { b',' });
        self.body.extend_from_slice(&encoded);
        self.items += 1;
        self.lines.push(line);
        done
    }

    /// The last, partial chunk.
    pub fn finish(&mut self, input_bytes: u64) -> Option<Chunk> {
        self.take(input_bytes)
    }

    fn take(&mut self, input_bytes: u64) -> Option<Chunk> {
        if self.items == 0 {
            return None;
        }
        let mut body = Vec::with_capacity(self.body.len() + 16);
        body.extend_from_slice(b"{\"accruals\":");
        body.append(&mut self.body);
        body.extend_from_slice(b"]}");
        let index = self.next_index;
        self.next_index += 1;
        let key = chunk_key(&self.campaign, index, &body);
        let chunk = Chunk {
            index,
            key,
            body,
            items: std::mem::take(&mut self.items),
            lines: std::mem::take(&mut self.lines),
            input_bytes,
        };
        Some(chunk)
    }
}

/// `pointflow-<campaign hash>-<content hash>-<index>`: depends on the chunk's
/// accruals, its position and the campaign name only.
pub fn chunk_key(campaign: &str, index: u32, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(campaign.as_bytes());
    hasher.update([0]);
    hasher.update(index.to_be_bytes());
    hasher.update(body);
    let digest = hex::encode(hasher.finalize());
    format!("pointflow-{}-{index:06}", &digest[..40])
}

/// Counts bytes read through it, for progress.
pub struct Counting<R> {
    inner: R,
    pub read: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R: Read> Counting<R> {
    pub fn new(inner: R) -> Self {
        Counting {
            inner,
            read: Default::default(),
        }
    }
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// Why the input could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("reading the input failed")]
    Io(#[from] std::io::Error),
    #[error("line {line}: not valid JSON: {detail}")]
    Json { line: u64, detail: String },
    #[error(transparent)]
    Csv(#[from] pointflow::domain::readers::csv::CsvFileError),
    #[error("the JSON input must be an array of accruals or {{\"accruals\": [...]}}")]
    NotAnArray,
}

/// Reads `input` in `format`, calling `chunk` for each full chunk and `bad`
/// for each invalid line; returns the final partial chunk. Memory holds one
/// chunk and one item (JSON array input: the whole array is parsed item by
/// item from the stream).
pub fn read_chunks(
    input: impl Read,
    format: Format,
    chunker: &mut Chunker,
    bytes_read: impl Fn() -> u64,
    chunk: impl FnMut(Chunk) -> bool,
    bad: impl FnMut(LineError),
) -> Result<Option<Chunk>, InputError> {
    read_chunks_of_sheet(input, format, ReadAs::default(), chunker, bytes_read, chunk, bad)
}

/// What the operator said about a file: which sheet of a workbook, which
/// text encoding of a CSV or NDJSON file.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadAs<'a> {
    /// The sheet to read (default: the first visible worksheet).
    pub sheet: Option<&'a str>,
    /// The text encoding (default: detected; a byte-order mark wins over it).
    pub encoding: Option<FileEncoding>,
}

/// [`read_chunks`], reading the file as the operator said ([`ReadAs`]). A
/// workbook is read whole into memory first.
/// CSV, NDJSON and workbooks are read by the importer's own readers
/// ([`pointflow::domain::readers`]), with the same encoding choice (a
/// byte-order mark, else detected); the items of a JSON array are checked
/// by the same row rules as an NDJSON line.
pub fn read_chunks_of_sheet(
    input: impl Read,
    format: Format,
    read_as: ReadAs<'_>,
    chunker: &mut Chunker,
    bytes_read: impl Fn() -> u64,
    mut chunk: impl FnMut(Chunk) -> bool,
    mut bad: impl FnMut(LineError),
) -> Result<Option<Chunk>, InputError> {
    // Takes one checked row: false when `chunk` said to stop.
    let mut emit = |line: u64, row: CsvRow, has_accrual_id: bool, chunker: &mut Chunker| -> bool {
        match row {
            CsvRow::Accrual(accrual) => match chunker.push(line, &accrual, !has_accrual_id, bytes_read()) {
                Some(done) => chunk(done),
                None => true,
            },
            CsvRow::Rejected(errors) => {
                for e in errors {
                    bad(LineError {
                        line: e.line,
                        field: e.column,
                        reason: e.reason,
                    });
                }
                true
            }
        }
    };
    let file_format = match format {
        Format::Json => {
            let mut stopped = false;
            let mut visit = |number: u64, value: Value| {
                let (row, has_accrual_id) = check_object("", number, &value, "");
                let go = emit(number, row, has_accrual_id, chunker);
                stopped |= !go;
                go
            };
            let mut deserializer = serde_json::Deserializer::from_reader(BufReader::with_capacity(1 << 16, input));
            let result = serde::Deserializer::deserialize_any(&mut deserializer, Items { visit: &mut visit });
            if stopped {
                return Ok(None);
            }
            match result {
                Ok(true) => deserializer.end().map_err(|e| json_error(&e))?,
                Ok(false) => return Err(InputError::NotAnArray),
                Err(e) => return Err(json_error(&e)),
            }
            return Ok(chunker.finish(bytes_read()));
        }
        Format::Ndjson => FileFormat::Ndjson,
        Format::Csv => FileFormat::Csv,
        Format::Xlsx => FileFormat::Xlsx,
    };
    let mut stopped = false;
    read_file(input, file_format, read_as.encoding, read_as.sheet, "", |row| {
        stopped = !emit(row.line, row.row, row.has_accrual_id, chunker);
        !stopped
    })?;
    if stopped {
        return Ok(None);
    }
    Ok(chunker.finish(bytes_read()))
}

fn json_error(e: &serde_json::Error) -> InputError {
    InputError::Json {
        line: e.line() as u64,
        detail: e.to_string(),
    }
}

/// Visits a top-level array of items, or the `accruals` array of an object,
/// one item at a time: the array is never held whole. Yields whether an
/// array was found.
struct Items<'a, F: FnMut(u64, Value) -> bool> {
    visit: &'a mut F,
}

impl<'de, F: FnMut(u64, Value) -> bool> serde::de::Visitor<'de> for Items<'_, F> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of accruals or {\"accruals\": [...]}")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let mut number = 0u64;
        while let Some(pointflow::domain::strict_json::StrictValue(value)) = seq.next_element()? {
            number += 1;
            if !(self.visit)(number, value) {
                return Err(serde::de::Error::custom("stopped"));
            }
        }
        Ok(true)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut found = false;
        while let Some(key) = map.next_key::<String>()? {
            if key == "accruals" && !found {
                found = map.next_value_seed(ItemsSeed {
                    visit: &mut *self.visit,
                })?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

struct ItemsSeed<'a, F: FnMut(u64, Value) -> bool> {
    visit: &'a mut F,
}

impl<'de, F: FnMut(u64, Value) -> bool> serde::de::DeserializeSeed<'de> for ItemsSeed<'_, F> {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_seq(Items { visit: self.visit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, format: Format, limits: ChunkLimits) -> (Vec<Chunk>, Vec<LineError>) {
        read_bytes(text.as_bytes(), format, ReadAs::default(), limits)
    }

    /// Every chunk and every line error of `bytes` read as `read_as` says.
    fn read_bytes(
        bytes: &[u8],
        format: Format,
        read_as: ReadAs<'_>,
        limits: ChunkLimits,
    ) -> (Vec<Chunk>, Vec<LineError>) {
        let mut chunks = Vec::new();
        let mut errors = Vec::new();
        let mut chunker = Chunker::new(limits, "test");
        let last = read_chunks_of_sheet(
            bytes,
            format,
            read_as,
            &mut chunker,
            || 0,
            |c| {
                chunks.push(c);
                true
            },
            |e| errors.push(e),
        )
        .unwrap();
        chunks.extend(last);
        (chunks, errors)
    }

    #[test]
    fn a_cp949_csv_submits_the_bodies_of_its_utf8_copy() {
        let text = "member_id,point_type,amount,reason\nm-1,WELCOME,100,신규 가입 적립\nm-2,WELCOME,200,\"신규, 가입\"\nm-3,P,3,적립\n";
        let (cp949, _, unmappable) = encoding_rs::EUC_KR.encode(text);
        assert!(!unmappable && cp949.as_ref() != text.as_bytes());
        let (chunks, errors) = read_bytes(cp949.as_ref(), Format::Csv, ReadAs::default(), LIMITS);
        assert!(errors.is_empty(), "{errors:?}");
        let (utf8, errors) = read(text, Format::Csv, LIMITS);
        assert!(errors.is_empty());
        assert_eq!(bodies(&chunks), bodies(&utf8));
        assert!(String::from_utf8_lossy(&chunks[0].body).contains("신규 가입 적립"));
    }

    /// `--encoding` is what the file is decoded from: the CP949 file
    /// declared as EUC-KR (CP949's label) reads as its UTF-8 copy, and
    /// declared as Shift_JIS it does not.
    #[test]
    fn a_declared_encoding_is_the_one_read() {
        let text = "member_id,point_type,amount,reason\nm-1,WELCOME,100,신규 가입 적립\nm-2,WELCOME,200,적립\n";
        let (cp949, _, _) = encoding_rs::EUC_KR.encode(text);
        let read_as = |label: &str| {
            let declared = pointflow::domain::text_encoding::declared(label).unwrap();
            let read_as = ReadAs {
                sheet: None,
                encoding: Some(declared),
            };
            bodies(&read_bytes(cp949.as_ref(), Format::Csv, read_as, LIMITS).0)
        };
        let (utf8, _) = read(text, Format::Csv, LIMITS);
        assert_eq!(read_as("cp949"), bodies(&utf8));
        assert_ne!(read_as("shift_jis"), bodies(&utf8));
    }

    #[test]
    fn a_utf16_csv_and_a_jsonl_file_submit_the_bodies_of_their_utf8_csv_copy() {
        let text = "member_id,point_type,amount,reason\r\nm-1,WELCOME,100,신규 가입 적립 😀\r\nm-2,WELCOME,200,\"신규, 가입\"\r\n";
        let utf16 = pointflow::domain::readers::source::utf16_with_bom(text, false);
        let (chunks, errors) = read_bytes(&utf16, Format::Csv, ReadAs::default(), LIMITS);
        assert!(errors.is_empty(), "{errors:?}");
        let (utf8, errors) = read(text, Format::Csv, LIMITS);
        assert!(errors.is_empty());
        assert_eq!(bodies(&chunks), bodies(&utf8));
        let ndjson =
            "{\"member_id\":\"m-1\",\"point_type\":\"WELCOME\",\"amount\":100,\"reason\":\"신규 가입 적립 😀\"}\n\
                      {\"member_id\":\"m-2\",\"point_type\":\"WELCOME\",\"amount\":200,\"reason\":\"신규, 가입\"}\n";
        let (lines, errors) = read(ndjson, Format::Ndjson, LIMITS);
        assert!(errors.is_empty());
        assert_eq!(bodies(&lines), bodies(&utf8));
    }

    fn bodies(chunks: &[Chunk]) -> Vec<Value> {
        chunks
            .iter()
            .map(|c| serde_json::from_slice(&c.body).unwrap())
            .collect()
    }

    const LIMITS: ChunkLimits = ChunkLimits {
        max_items: 2,
        max_bytes: 5_000_000,
    };

    #[test]
    fn every_format_gives_the_same_chunks_and_keys() {
        let json = r#"[{"member_id":"m-1","point_type":"P","amount":10},
            {"accrual_id":"a-2","member_id":"m-2","point_type":"P","amount":20,"reason":"r"},
            {"member_id":"m-3","point_type":"P","amount":30}]"#;
        let wrapped = format!("{{\"accruals\": {json}}}");
        let ndjson = "{\"member_id\":\"m-1\",\"point_type\":\"P\",\"amount\":10}\n\n{\"accrual_id\":\"a-2\",\"member_id\":\"m-2\",\"point_type\":\"P\",\"amount\":20,\"reason\":\"r\"}\n{\"member_id\":\"m-3\",\"point_type\":\"P\",\"amount\":30}";
        let csv = "member_id,point_type,amount,accrual_id,reason\nm-1,P,10,,\nm-2,P,20,a-2,r\nm-3,P,30,,\n";
        let (a, _) = read(json, Format::Json, LIMITS);
        let (b, _) = read(&wrapped, Format::Json, LIMITS);
        let (c, _) = read(ndjson, Format::Ndjson, LIMITS);
        let (d, _) = read(csv, Format::Csv, LIMITS);
        assert_eq!(a.len(), 2);
        let mut first = bodies(&a)[0].clone();
        let derived = first["accruals"][0]["accrual_id"].as_str().unwrap().to_owned();
        assert_eq!(
            derived,
            ContentIds::new("test").id(
                &Accrual {
                    accrual_id: String::new(),
                    member_id: "m-1".into(),
                    point_type: "P".into(),
                    amount: 10,
                    reason: None,
                    apply_at: None,
                    expires_at: None,
                },
                1
            )
        );
        first["accruals"][0].as_object_mut().unwrap().remove("accrual_id");
        assert_eq!(
            first,
            serde_json::json!({"accruals": [
                {"member_id": "m-1", "point_type": "P", "amount": 10},
                {"accrual_id": "a-2", "member_id": "m-2", "point_type": "P", "amount": 20, "reason": "r"}
            ]})
        );
        for other in [&b, &c, &d] {
            assert_eq!(bodies(other), bodies(&a));
            let keys: Vec<&str> = other.iter().map(|c| c.key.as_str()).collect();
            assert_eq!(keys, a.iter().map(|c| c.key.as_str()).collect::<Vec<_>>());
        }
        // The same rows in a workbook: numbers as number cells, an empty
        // row 4, so m-3 is Excel's row 5.
        let mut book = rust_xlsxwriter::Workbook::new();
        let sheet = book.add_worksheet();
        for (c, name) in ["member_id", "point_type", "amount", "accrual_id", "reason"]
            .iter()
            .enumerate()
        {
            sheet.write_string(0, c as u16, *name).unwrap();
        }
        sheet
            .write_string(1, 0, "m-1")
            .unwrap()
            .write_string(1, 1, "P")
            .unwrap();
        sheet.write_number(1, 2, 10.0).unwrap();
        sheet
            .write_string(2, 0, "m-2")
            .unwrap()
            .write_string(2, 1, "P")
            .unwrap();
        sheet.write_number(2, 2, 20.0).unwrap();
        sheet
            .write_string(2, 3, "a-2")
            .unwrap()
            .write_string(2, 4, "r")
            .unwrap();
        sheet
            .write_string(4, 0, "m-3")
            .unwrap()
            .write_string(4, 1, "P")
            .unwrap();
        sheet.write_number(4, 2, 30.0).unwrap();
        let bytes = book.save_to_buffer().unwrap();
        let (e, errors) = read_bytes(&bytes, Format::Xlsx, ReadAs::default(), LIMITS);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(bodies(&e), bodies(&a), "a workbook gives the bodies of its CSV copy");
        let keys: Vec<&str> = e.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, a.iter().map(|c| c.key.as_str()).collect::<Vec<_>>());
        assert_eq!(e[1].lines, [5], "workbook lines are Excel's rows");
        assert_eq!(c[0].lines, [1, 3], "NDJSON lines count blank ones");
        assert_eq!(d[1].lines, [4], "CSV lines count the header");
    }

    /// The id each accrual gets: its own, or the one the API derives from
    /// the chunk's `Idempotency-Key` and the item's position.
    fn effective_ids(chunks: &[Chunk]) -> std::collections::BTreeSet<String> {
        let mut ids = std::collections::BTreeSet::new();
        for chunk in chunks {
            let body: Value = serde_json::from_slice(&chunk.body).unwrap();
            for (index, item) in body["accruals"].as_array().unwrap().iter().enumerate() {
                let id = match item.get("accrual_id").and_then(Value::as_str) {
                    Some(id) => id.to_owned(),
                    None => pointflow::domain::submission::derive_accrual_id(&chunk.key, index),
                };
                assert!(ids.insert(id), "one id twice in one run");
            }
        }
        ids
    }

    fn campaign_csv(rows: &[&str]) -> String {
        let mut text = String::from("member_id,point_type,amount,reason\n");
        for row in rows {
            text.push_str(row);
            text.push('\n');
        }
        text
    }

    const ROWS: [&str; 7] = [
        "m-1,P,10,spring",
        "m-2,P,0,spring",
        "m-3,P,30,spring",
        "m-1,P,10,spring",
        "m-4,P,40,spring",
        "m-5,P,50,spring",
        "m-6,P,60,spring",
    ];

    #[test]
    fn a_rerun_after_fixing_a_bad_line_credits_only_that_line() {
        let (before, errors) = read(&campaign_csv(&ROWS), Format::Csv, LIMITS);
        assert_eq!(errors.len(), 1, "{errors:?}");
        let mut fixed = ROWS;
        fixed[1] = "m-2,P,20,spring";
        let (after, errors) = read(&campaign_csv(&fixed), Format::Csv, LIMITS);
        assert!(errors.is_empty());
        let (before, after) = (effective_ids(&before), effective_ids(&after));
        let new: Vec<&String> = after.difference(&before).collect();
        assert_eq!(new.len(), 1, "only the fixed line is a new accrual: {new:?}");
        assert_eq!(before.len(), 6, "the two identical m-1 lines are two accruals");
    }

    #[test]
    fn rechunking_credits_nothing_twice() {
        let text = campaign_csv(&ROWS);
        let (small, _) = read(&text, Format::Csv, LIMITS);
        let (large, _) = read(&text, Format::Csv, ChunkLimits { max_items: 3, ..LIMITS });
        assert_ne!(small.len(), large.len());
        assert_eq!(effective_ids(&small), effective_ids(&large));
    }

    #[test]
    fn keys_follow_content_position_and_campaign() {
        let body = b"{\"accruals\":[]}";
        assert_eq!(chunk_key("c", 0, body), chunk_key("c", 0, body));
        assert_ne!(chunk_key("c", 0, body), chunk_key("c", 1, body));
        assert_ne!(chunk_key("c", 0, body), chunk_key("d", 0, body));
        assert!(pointflow::domain::validation::check_idempotency_key(&chunk_key("c", 7, body)).is_ok());
    }

    #[test]
    fn bad_lines_are_reported_by_line_and_field_and_the_rest_goes_on() {
        let ndjson = "{\"member_id\":\"m-1\",\"point_type\":\"P\",\"amount\":0}\nnot json\n{\"member_id\":\"m 2\",\"point_type\":\"P\",\"amount\":1.5}\n{\"member_id\":\"m-4\",\"point_type\":\"P\",\"amount\":4}\n";
        let (chunks, errors) = read(ndjson, Format::Ndjson, LIMITS);
        let got: Vec<(u64, &str)> = errors.iter().map(|e| (e.line, e.field.as_str())).collect();
        assert_eq!(got, [(1, "amount"), (2, "(row)"), (3, "member_id"), (3, "amount")]);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].lines, [4]);
    }

    #[test]
    fn a_key_given_twice_is_a_bad_line_not_the_last_value() {
        let ndjson = "{\"member_id\":\"m-1\",\"point_type\":\"P\",\"amount\":1,\"amount\":1000000}\n\
                      {\"member_id\":\"m-2\",\"point_type\":\"P\",\"amount\":2}\n";
        let (chunks, errors) = read(ndjson, Format::Ndjson, LIMITS);
        assert_eq!(
            (errors.len(), errors[0].line, errors[0].field.as_str()),
            (1, 1, "(row)")
        );
        assert!(errors[0].reason.contains("appears twice"), "{}", errors[0].reason);
        assert_eq!(chunks[0].lines, [2]);
        let mut chunker = Chunker::new(LIMITS, "t");
        let result = read_chunks(
            "[{\"member_id\":\"m\",\"member_id\":\"n\",\"point_type\":\"P\",\"amount\":1}]".as_bytes(),
            Format::Json,
            &mut chunker,
            || 0,
            |_| true,
            |_| {},
        );
        assert!(matches!(result, Err(InputError::Json { .. })));
    }

    #[test]
    fn chunks_stay_under_the_byte_limit() {
        let line = "{\"member_id\":\"m-1\",\"point_type\":\"P\",\"amount\":10}\n";
        let text = line.repeat(100);
        let limits = ChunkLimits {
            max_items: 1000,
            max_bytes: 500,
        };
        let (chunks, _) = read(&text, Format::Ndjson, limits);
        assert!(chunks.len() > 5);
        assert!(chunks.iter().all(|c| c.body.len() <= 500));
        assert_eq!(chunks.iter().map(|c| c.items).sum::<usize>(), 100);
    }

    #[test]
    fn json_that_is_not_an_array_is_refused() {
        let mut chunker = Chunker::new(LIMITS, "t");
        let result = read_chunks(
            "{\"items\": []}".as_bytes(),
            Format::Json,
            &mut chunker,
            || 0,
            |_| true,
            |_| {},
        );
        assert!(matches!(result, Err(InputError::NotAnArray)));
        let result = read_chunks(
            "[{\"a\": 1},".as_bytes(),
            Format::Json,
            &mut chunker,
            || 0,
            |_| true,
            |_| {},
        );
        assert!(matches!(result, Err(InputError::Json { .. })));
    }
}
