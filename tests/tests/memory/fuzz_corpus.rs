//! The fuzz targets' corpus, replayed on stable Rust in the regular suite:
//! every file of `fuzz/corpus/<target>/` and a few thousand inputs mutated
//! from them (or made up) go through the same entry points the cargo-fuzz
//! targets call (`pointflow::testkit::fuzzing`), which must not panic, and must not
//! allocate more than a fixed multiple of the input's size plus a constant
//! (a counting allocator watches each input). Long fuzzing runs are in
//! `docs/fuzzing.md`.

use std::cell::Cell;
use std::path::PathBuf;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

// Each input is measured on the thread that parses it: tests run on
// several threads.
use crate::counting::{self, THREAD_LIVE as LIVE, THREAD_PEAK as PEAK};

/// Heap bytes at most `target` may use for one input of `len` bytes: a
/// multiple of the input (parsed JSON is bigger than its text: a value
/// takes 32 bytes, an object's first key a 632-byte tree node; a bad CSV
/// row's report lines repeat it) plus a constant (buffers, the CSV reader's
/// 8 KiB buffer, error texts). Before the fixes of `docs/fuzzing.md` a
/// 6 MB body took 85 bytes per byte and a CSV chunk of bad rows 55.
fn allowed(len: usize) -> usize {
    ALLOWED_PER_INPUT_BYTE * len + ALLOWED_BASE
}
const ALLOWED_PER_INPUT_BYTE: usize = 16;
const ALLOWED_BASE: usize = 256 * 1024;

/// Peak heap above the starting point while `f` runs, on this thread.
fn peak_of(f: impl FnOnce()) -> usize {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    f();
    (PEAK.with(Cell::get) - start).max(0) as usize
}

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 6] = [
    ("api_body", pointflow::testkit::fuzzing::api_body),
    ("csv_import", pointflow::testkit::fuzzing::csv_import),
    ("csv_utf16_import", pointflow::testkit::fuzzing::csv_utf16_import),
    ("message_decode", pointflow::testkit::fuzzing::message_decode),
    ("ndjson_import", pointflow::testkit::fuzzing::ndjson_import),
    ("xlsx_import", pointflow::testkit::fuzzing::xlsx_import),
];

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("directory entry").path();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            (path.display().to_string(), bytes)
        })
        .collect();
    files.sort();
    files
}

/// Runs one input, panicking with its name if it uses too much memory.
fn run(target: Target, name: &str, input: &[u8]) -> usize {
    let peak = peak_of(|| target(input));
    assert!(
        peak <= allowed(input.len()),
        "{name}: {} input bytes used {peak} heap bytes at peak (allowed {})",
        input.len(),
        allowed(input.len())
    );
    peak
}

#[test]
fn every_corpus_file_replays_without_panic_in_bounded_memory() {
    let _heap = counting::shared();
    for (target_name, target) in TARGETS {
        let files = corpus(target_name);
        assert!(files.len() >= 10, "{target_name}: a corpus of {} files", files.len());
        let (mut largest, mut of_len) = (0usize, 0usize);
        for (name, input) in &files {
            let peak = run(target, name, input);
            if peak > largest {
                (largest, of_len) = (peak, input.len());
            }
        }
        println!(
            "{target_name}: {} corpus files, largest peak heap {} KiB (an input of {of_len} bytes)",
            files.len(),
            largest >> 10
        );
    }
}

/// One change to an input, as a fuzzer's mutator would make it.
#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: usize,
        bit: u8,
    },
    Set {
        at: usize,
        byte: u8,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Remove {
        at: usize,
        len: usize,
    },
    /// Copies a piece of the input elsewhere (duplicated keys, rows, items).
    Repeat {
        from: usize,
        len: usize,
        to: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Bytes that matter to the parsers, more often than chance gives them.
    let interesting = prop::sample::select(b"{}[]\",:\\\r\n 0123456789-.eE#@\xef\xbb\xbf\xff\x00tfnu".to_vec());
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), interesting.clone()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        (any::<usize>(), prop::collection::vec(interesting, 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..16).prop_map(|(at, len)| Mutation::Remove { at, len }),
        (any::<usize>(), 1usize..64, any::<usize>()).prop_map(|(from, len, to)| Mutation::Repeat { from, len, to }),
    ]
}

fn apply(input: &mut Vec<u8>, m: &Mutation) {
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
    match m {
        Mutation::Flip { at: i, bit } if !input.is_empty() => {
            let i = at(*i, input.len());
            input[i] ^= 1 << bit;
        }
        Mutation::Set { at: i, byte } if !input.is_empty() => {
            let i = at(*i, input.len());
            input[i] = *byte;
        }
        Mutation::Insert { at: i, bytes } => {
            let i = at(*i, input.len() + 1);
            input.splice(i..i, bytes.iter().copied());
        }
        Mutation::Remove { at: i, len } if !input.is_empty() => {
            let i = at(*i, input.len());
            let end = (i + len).min(input.len());
            input.drain(i..end);
        }
        Mutation::Repeat { from, len, to } if !input.is_empty() => {
            let from = at(*from, input.len());
            let end = (from + len).min(input.len());
            let piece = input[from..end].to_vec();
            let to = at(*to, input.len() + 1);
            input.splice(to..to, piece);
        }
        _ => {}
    }
}

/// Inputs mutated from the corpus, and made-up ones, per target.
const MUTATED_CASES: u32 = 1500;
const RANDOM_CASES: u32 = 300;

#[test]
fn mutated_and_random_inputs_never_panic_and_stay_in_bounded_memory() {
    let _heap = counting::shared();
    for (target_name, target) in TARGETS {
        let seeds: Vec<Vec<u8>> = corpus(target_name).into_iter().map(|(_, bytes)| bytes).collect();
        let mutated = (prop::sample::select(seeds), prop::collection::vec(mutation(), 1..6)).prop_map(
            |(mut input, mutations)| {
                for m in &mutations {
                    apply(&mut input, m);
                }
                input
            },
        );
        // A fixed seed: the same inputs on every run, so a failure reproduces.
        let mut runner = TestRunner::new_with_rng(
            Config {
                cases: MUTATED_CASES,
                failure_persistence: None,
                ..Config::default()
            },
            proptest::test_runner::TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha),
        );
        runner
            .run(&mutated, |input| {
                run(target, target_name, &input);
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{target_name}: {e}"));
        let mut runner = TestRunner::new_with_rng(
            Config {
                cases: RANDOM_CASES,
                failure_persistence: None,
                ..Config::default()
            },
            proptest::test_runner::TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha),
        );
        runner
            .run(&prop::collection::vec(any::<u8>(), 0..512), |input| {
                run(target, target_name, &input);
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{target_name}: {e}"));
    }
}

/// The largest body the API reads (6,000,000 bytes), made of the JSON that
/// costs the most memory per byte: tiny objects, each a tree node once
/// parsed. Before the API bounded what it reads, this body took about
/// 0.6 GB, more than the function's 512 MB.
#[test]
fn a_maximal_body_of_tiny_objects_stays_in_bounded_memory() {
    let _heap = counting::shared();
    let shapes: [(&str, &str, &str); 3] = [
        // As many items as fit: the item limit must stop reading them.
        ("{\"accruals\":[", "{\"a\":0},", "{\"a\":0}]}"),
        // One item hiding them inside a field.
        ("{\"accruals\":[{\"x\":[", "{\"a\":0},", "{\"a\":0}]}]}"),
        // A use body likewise.
        ("{\"use_id\":[", "{\"a\":0},", "{\"a\":0}]}"),
    ];
    for (selector, (head, repeated, tail)) in [0u8, 0, 2].into_iter().zip(shapes) {
        let mut body = vec![selector];
        body.extend_from_slice(head.as_bytes());
        while body.len() + repeated.len() + tail.len() < pointflow::services::api::MAX_BODY_BYTES {
            body.extend_from_slice(repeated.as_bytes());
        }
        body.extend_from_slice(tail.as_bytes());
        let peak = run(pointflow::testkit::fuzzing::api_body, head, &body);
        println!(
            "{head}…: {} bytes, peak heap {} MiB ({:.1} per input byte)",
            body.len(),
            peak >> 20,
            peak as f64 / body.len() as f64
        );
    }
}

/// The CSV rows that cost the importer the most memory per byte: short rows
/// whose every field is bad, so each gives several report lines that each
/// repeat the whole row, quoted twice. Read in chunks of about 64 KiB, the
/// importer's memory follows the chunk, not the file.
#[test]
fn a_file_of_worst_rows_stays_in_bounded_memory() {
    let _heap = counting::shared();
    let mut file = vec![0x92, 0]; // chunks of 1 + 146 * 7 = 1,023 bytes
    file.extend_from_slice(b"accrual_id,member_id,point_type,amount,reason,apply_at,expires_at\n");
    let row: &[u8] = b"\"\"\"\",\"\"\"\",\"\"\"\",\"\"\"\",\"\x01\",\"\"\"\",\"\"\"\"\n";
    while file.len() < 100_000 {
        file.extend_from_slice(row);
    }
    let peak = run(pointflow::testkit::fuzzing::csv_import, "worst rows", &file);
    println!(
        "worst rows: {} bytes, peak heap {} KiB ({:.1} per input byte)",
        file.len(),
        peak >> 10,
        peak as f64 / file.len() as f64
    );
    // A larger file read with the production's 64 MiB chunks: the report
    // part (8 MiB), not the chunk, bounds it.
    file[0] = 0xff;
    while file.len() < 1_000_000 {
        file.extend_from_slice(row);
    }
    let whole = run(
        pointflow::testkit::fuzzing::csv_import,
        "worst rows, 64 MiB chunks",
        &file,
    );
    println!(
        "with 64 MiB chunks: peak heap {} KiB ({:.1} per input byte)",
        whole >> 10,
        whole as f64 / file.len() as f64
    );
}
