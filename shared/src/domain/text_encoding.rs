//! Which text encoding an imported file is in, and why: declared by the
//! operator (object metadata `encoding`, `--encoding` locally), told by a
//! byte-order mark (UTF-8, UTF-16LE, UTF-16BE), detected from the file's first [`DETECT_BYTES`]
//! bytes with `chardetng` (Firefox's detector), or UTF-8 by default.
//!
//! Only ASCII-compatible encodings are read (UTF-8, EUC-KR/CP949,
//! Shift_JIS, EUC-JP, GB18030/GBK, Big5, the Windows and ISO 8859 code
//! pages): in each, the bytes of `,` `"` CR and LF never occur inside a
//! multi-byte character (their trail bytes are 0x30 and up), so the CSV
//! structure, line numbers and the byte offsets chunks resume at are those
//! of the original bytes, and each field is decoded on its own: a decoder
//! starts afresh at every field, with no state carried across a chunk
//! boundary. UTF-16 (every ASCII character carries a NUL byte) is read
//! only from a byte-order mark, decoded to UTF-8 as a stream before it is
//! parsed ([`crate::domain::readers::source`] says how chunks stay on
//! character boundaries). ISO-2022-JP (escape sequences switch state across
//! lines) is refused with a reason saying to save the file as UTF-8.

use encoding_rs::Encoding;
use serde::{Deserialize, Serialize};

/// How many leading bytes the detector reads: enough for a few hundred
/// rows of non-ASCII text, and a bounded cost whatever the file's size.
pub const DETECT_BYTES: usize = 64 * 1024;

/// Why an encoding was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EncodingSource {
    /// The operator named it (metadata `encoding`, `--encoding`).
    Declared,
    /// The file starts with a byte-order mark (UTF-8 or UTF-16).
    Bom,
    /// `chardetng` chose it from the file's first bytes.
    Detected,
    /// Nothing but ASCII (or nothing at all) in the first bytes: UTF-8.
    Default,
}

/// The encoding a file is read in, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileEncoding {
    pub encoding: &'static Encoding,
    pub source: EncodingSource,
}

impl FileEncoding {
    /// UTF-8, the default.
    pub fn utf8() -> Self {
        FileEncoding {
            encoding: encoding_rs::UTF_8,
            source: EncodingSource::Default,
        }
    }

    /// The encoding's WHATWG name (`UTF-8`, `EUC-KR`, `Shift_JIS`, `gb18030`, `windows-1252`).
    pub fn name(&self) -> &'static str {
        self.encoding.name()
    }

    /// What it was and why, as a record for the job's pointer and a continuation.
    pub fn record(&self) -> EncodingRecord {
        EncodingRecord {
            name: self.name().to_owned(),
            source: self.source,
        }
    }
}

/// A [`FileEncoding`] as JSON: `{"name": "EUC-KR", "source": "declared"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodingRecord {
    pub name: String,
    pub source: EncodingSource,
}

impl EncodingRecord {
    /// The encoding back; `None` for a name no decoder knows.
    pub fn encoding(&self) -> Option<FileEncoding> {
        let encoding = Encoding::for_label(self.name.as_bytes())?;
        Some(FileEncoding {
            encoding,
            source: self.source,
        })
    }
}

/// Why a file's encoding cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodingError {
    #[error(
        "unknown encoding {label:?}: use a WHATWG label such as utf-8, cp949 (or euc-kr), shift_jis, gb18030, \
         windows-1252"
    )]
    UnknownLabel { label: String },
    #[error("the file is in {name}, which the import does not read: save it as UTF-8 (\"CSV UTF-8\" in Excel)")]
    Unsupported { name: &'static str },
    #[error("the file is not text: {reason}")]
    NotText { reason: String },
}

/// The encoding a label names (`cp949`, `euc-kr`, `sjis`, `latin1`, …; the
/// labels of the WHATWG Encoding Standard, case and surrounding spaces
/// ignored). A label no decoder knows, or one of an encoding the import does
/// not read, is refused naming it.
pub fn declared(label: &str) -> Result<FileEncoding, EncodingError> {
    let trimmed = label.trim();
    let encoding = Encoding::for_label(trimmed.as_bytes())
        .or_else(|| windows_code_page(trimmed))
        .ok_or_else(|| EncodingError::UnknownLabel {
            label: label.to_owned(),
        })?;
    supported(encoding)?;
    Ok(FileEncoding {
        encoding,
        source: EncodingSource::Declared,
    })
}

/// The Windows code page names operators know that the WHATWG labels lack
/// (`cp949` is Excel's "CSV" on Korean Windows; WHATWG's EUC-KR decoder is
/// Windows' code page 949, as its Shift_JIS is 932 and GBK is 936).
fn windows_code_page(label: &str) -> Option<&'static Encoding> {
    match label.to_ascii_lowercase().as_str() {
        "cp949" | "ms949" | "uhc" => Some(encoding_rs::EUC_KR),
        "cp932" => Some(encoding_rs::SHIFT_JIS),
        "cp936" => Some(encoding_rs::GBK),
        _ => None,
    }
}

/// Whether a file in `encoding` can be read: its CSV structure on its
/// bytes, or (UTF-16) on the text decoded from them.
fn supported(encoding: &'static Encoding) -> Result<(), EncodingError> {
    // `is_ascii_compatible` is false for UTF-16, ISO-2022-JP and the
    // replacement encoding.
    if encoding.is_ascii_compatible() || crate::domain::readers::source::is_utf16(encoding) {
        Ok(())
    } else {
        Err(EncodingError::Unsupported { name: encoding.name() })
    }
}

/// The encoding of a file starting with `prefix` (its first
/// [`DETECT_BYTES`] bytes, or all of a shorter file). A byte-order mark
/// wins over a declared encoding (as browsers do); a file that is not text
/// (a zip archive such as an `.xlsx` workbook, a NUL byte) is refused.
pub fn sniff(prefix: &[u8], declared: Option<FileEncoding>) -> Result<FileEncoding, EncodingError> {
    let prefix = &prefix[..prefix.len().min(DETECT_BYTES)];
    if prefix.starts_with(b"PK\x03\x04") {
        return Err(EncodingError::NotText {
            reason: "it is a zip archive (an Excel .xlsx workbook?): save it as CSV".to_owned(),
        });
    }
    if let Some((encoding, _)) = Encoding::for_bom(prefix) {
        supported(encoding)?;
        return Ok(FileEncoding {
            encoding,
            source: EncodingSource::Bom,
        });
    }
    if let Some(at) = prefix.iter().position(|&b| b == 0) {
        return Err(EncodingError::NotText {
            reason: format!(
                "byte {at} is NUL, which no text file holds (a binary file, or UTF-16 without byte-order mark?)"
            ),
        });
    }
    // C0 controls but TAB, LF, FF, CR, SUB (an old DOS end of file) and
    // ESC: what images and other binary files are full of.
    if let Some(at) = prefix
        .iter()
        .position(|&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | 0x0c | b'\r' | 0x1a | 0x1b))
    {
        return Err(EncodingError::NotText {
            reason: format!(
                "byte {at} is the control character {:#04x}, which no CSV text holds",
                prefix[at]
            ),
        });
    }
    if let Some(declared) = declared {
        return Ok(declared);
    }
    if prefix.is_ascii() {
        return Ok(FileEncoding::utf8());
    }
    let mut detector = chardetng::EncodingDetector::new(chardetng::Iso2022JpDetection::Deny);
    // The prefix is the whole file only if it is shorter than the bound.
    detector.feed(prefix, prefix.len() < DETECT_BYTES);
    let encoding = detector.guess(None, chardetng::Utf8Detection::Allow);
    supported(encoding)?;
    Ok(FileEncoding {
        encoding,
        source: EncodingSource::Detected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(text: &str, encoding: &'static Encoding) -> Vec<u8> {
        let (bytes, used, unmappable) = encoding.encode(text);
        assert_eq!(used, encoding, "{text:?} has no {} form", encoding.name());
        assert!(!unmappable, "{text:?} is not all {}", encoding.name());
        bytes.into_owned()
    }

    const HEADER: &str = "member_id,point_type,amount,reason\n";

    fn file(reason: &str, rows: usize) -> String {
        let mut text = HEADER.to_owned();
        for i in 0..rows {
            text.push_str(&format!("m-{i},WELCOME,100,{reason} {i}\n"));
        }
        text
    }

    #[test]
    fn each_legacy_encoding_is_detected_from_real_bytes() {
        for (text, encoding) in [
            ("신규 가입 적립", encoding_rs::EUC_KR),
            ("新規入会ポイント", encoding_rs::SHIFT_JIS),
            ("新会员注册积分奖励", encoding_rs::GB18030),
            ("Café Zoë à la crème brûlée", encoding_rs::WINDOWS_1252),
            ("신규 가입 적립", encoding_rs::UTF_8),
        ] {
            let bytes = encode(&file(text, 20), encoding);
            let found = sniff(&bytes, None).unwrap();
            // chardetng names GB18030 files GBK, a subset decoded the same.
            let name = if found.encoding == encoding_rs::GBK {
                "gb18030"
            } else {
                found.name()
            };
            assert_eq!(
                (name, found.source),
                (encoding.name(), EncodingSource::Detected),
                "{text}"
            );
        }
    }

    #[test]
    fn a_declared_encoding_is_used_and_a_bom_wins_over_it() {
        let cp949 = declared(" CP949 ").unwrap();
        assert_eq!(cp949.name(), "EUC-KR");
        let bytes = encode(&file("Café", 3), encoding_rs::WINDOWS_1252);
        assert_eq!(sniff(&bytes, Some(cp949)).unwrap(), cp949);
        let mut bom = b"\xEF\xBB\xBF".to_vec();
        bom.extend_from_slice(file("신규", 2).as_bytes());
        let found = sniff(&bom, Some(cp949)).unwrap();
        assert_eq!((found.name(), found.source), ("UTF-8", EncodingSource::Bom));
    }

    #[test]
    fn ascii_is_utf8_by_default() {
        let found = sniff(file("plain", 3).as_bytes(), None).unwrap();
        assert_eq!(found, FileEncoding::utf8());
        assert_eq!(sniff(b"", None).unwrap(), FileEncoding::utf8());
    }

    #[test]
    fn unknown_and_unsupported_labels_are_refused_naming_them() {
        let e = declared("klingon-8").unwrap_err();
        assert!(e.to_string().contains("\"klingon-8\""), "{e}");
        assert_eq!(
            declared("iso-2022-jp").unwrap_err(),
            EncodingError::Unsupported { name: "ISO-2022-JP" }
        );
    }

    #[test]
    fn binary_files_and_utf16_without_a_byte_order_mark_are_refused_as_a_whole() {
        let e = sniff(b"PK\x03\x04\x14\x00\x06\x00", None).unwrap_err();
        assert!(e.to_string().contains(".xlsx"), "{e}");
        let e = sniff(b"member_id\0,point_type", None).unwrap_err();
        assert!(e.to_string().contains("byte 9 is NUL"), "{e}");
        let e = sniff(&[0xff, 0xd8, 0xff, 0xe0, b'\n', 1, 2], None).unwrap_err();
        assert!(e.to_string().contains("byte 5 is the control character 0x01"), "{e}");
        let (utf16, _, _) = encoding_rs::UTF_16LE.encode(HEADER);
        // `encode` never writes UTF-16 (it encodes to UTF-8): build it by hand.
        assert_eq!(utf16.as_ref(), HEADER.as_bytes());
        let bytes = crate::domain::readers::source::utf16_with_bom(HEADER, false);
        let found = sniff(&bytes, None).unwrap();
        assert_eq!((found.name(), found.source), ("UTF-16LE", EncodingSource::Bom));
        let e = sniff(&bytes[2..], Some(declared("utf-16le").unwrap())).unwrap_err();
        assert!(e.to_string().contains("UTF-16 without byte-order mark?"), "{e}");
        let big = crate::domain::readers::source::utf16_with_bom(HEADER, true);
        assert_eq!(sniff(&big, None).unwrap().name(), "UTF-16BE");
    }
}
