//! The bytes a line-oriented reader (CSV, NDJSON) parses, and where in the
//! file each of its line ends is.
//!
//! A file in an ASCII-compatible encoding is parsed on its own bytes
//! ([`Source::Bytes`]): line ends, separators and quotes are the same bytes
//! in every such encoding, and each field is decoded on its own.
//!
//! A UTF-16 file ([`Source::Utf16`], read only from a byte-order mark) is
//! not: every ASCII character there is two bytes, one of them NUL. It is
//! decoded as a stream to UTF-8 with `encoding_rs` before anything is
//! parsed or numbered, and the reader remembers, for each line end it
//! decodes, the offset of the UTF-8 byte after it and of the source byte
//! after it. A chunk of the file only ever ends right after a line end, so
//! the offset a continuation resumes at is a source offset just past a
//! `\n` code unit (`0A 00` little-endian, `00 0A` big-endian): two bytes at
//! an even offset, never a half of a code unit, and never between the two
//! halves of a surrogate pair (a surrogate is `D800`–`DFFF`, never `000A`).
//! The decoder, fed up to and including that unit, holds nothing back, so
//! a fresh decoder at the continuation decodes what one pass would.
//!
//! A code unit sequence that is not UTF-16 (an unpaired surrogate, an odd
//! last byte) becomes the byte `0xFF`, which no UTF-8 text holds: the row
//! it is in is then rejected as "not UTF-16LE text", as a row that is not
//! text in a legacy encoding is, and the rows around it are read as usual.

use std::collections::VecDeque;
use std::io::Read;

use encoding_rs::{DecoderResult, Encoding};

/// Source bytes decoded per refill.
const READ_BYTES: usize = 8 * 1024;

/// Whether a file in `encoding` is parsed through the UTF-16 decoder.
pub fn is_utf16(encoding: &'static Encoding) -> bool {
    encoding == encoding_rs::UTF_16LE || encoding == encoding_rs::UTF_16BE
}

/// What a line reader parses: the file's bytes, or a UTF-16 file decoded
/// to UTF-8.
pub enum Source<R> {
    Bytes(R),
    Utf16(Utf16Lines<R>),
}

impl<R: Read> Source<R> {
    /// The input of a file in `encoding`, read from its start (`at_start`,
    /// where a UTF-16 byte-order mark is dropped) or from a line start, and
    /// the encoding the parsed bytes' fields are in (UTF-8 for UTF-16).
    pub fn new(input: R, encoding: &'static Encoding, at_start: bool) -> (Self, &'static Encoding) {
        if is_utf16(encoding) {
            (
                Source::Utf16(Utf16Lines::new(input, encoding, at_start)),
                encoding_rs::UTF_8,
            )
        } else {
            (Source::Bytes(input), encoding)
        }
    }
}

impl<R> Source<R> {
    /// The source offset of `parsed`, an offset of the parsed bytes that is
    /// 0, just past a line end, or the end of the input.
    pub fn source_offset(&self, parsed: u64) -> u64 {
        match self {
            Source::Bytes(_) => parsed,
            Source::Utf16(lines) => lines.source_offset(parsed),
        }
    }

    /// Forgets the line ends before `parsed`, which the reader has passed.
    pub fn passed(&mut self, parsed: u64) {
        if let Source::Utf16(lines) = self {
            while lines.marks.front().is_some_and(|&(at, _)| at < parsed) {
                lines.marks.pop_front();
            }
        }
    }
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Source::Bytes(input) => input.read(buf),
            Source::Utf16(lines) => lines.read(buf),
        }
    }
}

/// A UTF-16 stream decoded to UTF-8, with the offsets of its line ends.
pub struct Utf16Lines<R> {
    inner: R,
    decoder: encoding_rs::Decoder,
    big_endian: bool,
    /// Source bytes read but not decoded (at most one: an odd byte).
    carry: Option<u8>,
    /// Decoded bytes not given out yet, from `given`.
    out: Vec<u8>,
    given: usize,
    /// Source bytes decoded, and UTF-8 bytes produced, so far.
    source: u64,
    produced: u64,
    /// (UTF-8 offset, source offset) just past each line end not passed
    /// yet, and of the end of the input once reached.
    marks: VecDeque<(u64, u64)>,
    ended: bool,
}

impl<R: Read> Utf16Lines<R> {
    fn new(inner: R, encoding: &'static Encoding, at_start: bool) -> Self {
        Utf16Lines {
            inner,
            decoder: if at_start {
                encoding.new_decoder_with_bom_removal()
            } else {
                encoding.new_decoder_without_bom_handling()
            },
            big_endian: encoding == encoding_rs::UTF_16BE,
            carry: None,
            out: Vec::new(),
            given: 0,
            source: 0,
            produced: 0,
            marks: VecDeque::new(),
            ended: false,
        }
    }

    /// Decodes `bytes` (`last`: the end of the input), appending to `out`.
    fn decode(&mut self, bytes: &[u8], last: bool) {
        let mut rest = bytes;
        let mut buffer = [0u8; 4 * 1024];
        loop {
            let (result, read, written) = self.decoder.decode_to_utf8_without_replacement(rest, &mut buffer, last);
            self.out.extend_from_slice(&buffer[..written]);
            self.produced += written as u64;
            rest = &rest[read..];
            match result {
                DecoderResult::InputEmpty => break,
                DecoderResult::OutputFull => {}
                DecoderResult::Malformed(..) => {
                    // Not UTF-8: the row holding it is rejected by the parser.
                    self.out.push(0xFF);
                    self.produced += 1;
                }
            }
        }
        self.source += bytes.len() as u64;
    }

    /// Reads and decodes the next piece of the source; false at its end.
    fn refill(&mut self) -> std::io::Result<bool> {
        if self.ended {
            return Ok(false);
        }
        self.out.clear();
        self.given = 0;
        let mut raw = Vec::with_capacity(READ_BYTES + 1);
        raw.extend(self.carry.take());
        let mut chunk = [0u8; READ_BYTES];
        let n = loop {
            match self.inner.read(&mut chunk) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        raw.extend_from_slice(&chunk[..n]);
        if n == 0 {
            self.decode(&raw, true);
            self.marks.push_back((self.produced, self.source));
            self.ended = true;
            return Ok(!self.out.is_empty());
        }
        if raw.len() % 2 == 1 {
            self.carry = raw.pop();
        }
        let newline: [u8; 2] = if self.big_endian { [0, b'\n'] } else { [b'\n', 0] };
        let mut from = 0;
        for at in (0..raw.len()).step_by(2) {
            if raw[at..at + 2] == newline {
                self.decode(&raw[from..at + 2], false);
                self.marks.push_back((self.produced, self.source));
                from = at + 2;
            }
        }
        self.decode(&raw[from..], false);
        Ok(true)
    }
}

impl<R> Utf16Lines<R> {
    fn source_offset(&self, parsed: u64) -> u64 {
        if parsed == 0 {
            return 0;
        }
        match self.marks.binary_search_by_key(&parsed, |&(at, _)| at) {
            Ok(i) => self.marks[i].1,
            // Parsers stop only at line ends and at the end of the input,
            // each of which is marked; were that broken, the nearest line
            // end before would re-read a row rather than skip one.
            Err(i) => {
                debug_assert!(false, "no line end at parsed offset {parsed}");
                i.checked_sub(1).map_or(0, |i| self.marks[i].1)
            }
        }
    }
}

impl<R: Read> Read for Utf16Lines<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.given >= self.out.len() {
            if !self.refill()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.out.len() - self.given);
        buf[..n].copy_from_slice(&self.out[self.given..self.given + n]);
        self.given += n;
        Ok(n)
    }
}

/// `text` as the bytes of a UTF-16 file with its byte-order mark
/// (big-endian `FE FF`, else little-endian `FF FE`), as Excel's "Unicode
/// Text" and Notepad write one: the fixture of every UTF-16 test and bench.
#[cfg(any(test, feature = "testkit"))]
pub fn utf16_with_bom(text: &str, big_endian: bool) -> Vec<u8> {
    let mut bytes = if big_endian { vec![0xFE, 0xFF] } else { vec![0xFF, 0xFE] };
    for unit in text.encode_utf16() {
        bytes.extend_from_slice(&if big_endian {
            unit.to_be_bytes()
        } else {
            unit.to_le_bytes()
        });
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads in pieces of `piece` bytes, as a parser with a small buffer
    /// would.
    fn decode_all(mut source: Source<&[u8]>, piece: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; piece];
        loop {
            let n = source.read(&mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn decodes_both_byte_orders_and_marks_every_line_end() {
        let text = "a,신규\n😀,b\r\nlast";
        for big_endian in [false, true] {
            let bytes = utf16_with_bom(text, big_endian);
            let encoding = if big_endian {
                encoding_rs::UTF_16BE
            } else {
                encoding_rs::UTF_16LE
            };
            let (mut source, fields) = Source::new(&bytes[..], encoding, true);
            assert_eq!(fields, encoding_rs::UTF_8);
            let mut out = Vec::new();
            source.read_to_end(&mut out).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), text);
            // Past "a,신규\n": 2 (BOM) + 5 units; in UTF-8 2 + 6 + 1 bytes.
            assert_eq!(source.source_offset(9), 12);
            // Past "😀,b\r\n": a surrogate pair and 4 units more.
            assert_eq!(source.source_offset(9 + 8), 12 + 12);
            assert_eq!(source.source_offset(text.len() as u64), bytes.len() as u64);
        }
    }

    #[test]
    fn an_unpaired_surrogate_and_an_odd_byte_become_a_byte_no_utf8_holds() {
        let mut bytes = utf16_with_bom("a\n", false);
        bytes.extend_from_slice(&[0x00, 0xD8, b'b', 0, b'\n', 0, b'c']);
        let (source, _) = Source::new(&bytes[..], encoding_rs::UTF_16LE, true);
        let out = decode_all(source, 3);
        assert_eq!(out, b"a\n\xFFb\n\xFF");
    }

    #[test]
    fn a_resumed_source_keeps_a_byte_order_mark_as_text() {
        let bytes = utf16_with_bom("\u{feff}x\n", false);
        let (source, _) = Source::new(&bytes[2..], encoding_rs::UTF_16LE, false);
        assert_eq!(decode_all(source, 1), "\u{feff}x\n".as_bytes());
    }
}
