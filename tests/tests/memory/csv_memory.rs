//! The CSV reader's memory does not grow with the file: 2,000,000 generated
//! rows stream through it while a counting allocator watches the heap.

use std::io::Read;
use std::sync::atomic::Ordering;
use std::time::Instant;

use pointflow::domain::csv_rows::{CsvAccruals, CsvRow};

use crate::counting::{self, LIVE, PEAK};

/// A CSV file of `rows` data rows, produced as it is read (never held whole).
struct Generated {
    rows: usize,
    next: usize,
    pending: Vec<u8>,
    offset: usize,
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.offset == self.pending.len() {
            self.pending.clear();
            self.offset = 0;
            if self.next == 0 {
                self.pending.extend_from_slice(b"member_id,point_type,amount,reason\n");
            } else if self.next <= self.rows {
                let n = self.next;
                let line = format!(
                    "m-{n:08},{},{},\"row {n}, generated\"\n",
                    ["WELCOME", "BONUS"][n % 2],
                    1 + n % 5000
                );
                self.pending.extend_from_slice(line.as_bytes());
            } else {
                return Ok(0);
            }
            self.next += 1;
        }
        let n = buf.len().min(self.pending.len() - self.offset);
        buf[..n].copy_from_slice(&self.pending[self.offset..self.offset + n]);
        self.offset += n;
        Ok(n)
    }
}

#[test]
fn two_million_rows_stream_in_bounded_memory() {
    // The process's heap is measured: no other test may run meanwhile.
    let _alone = counting::exclusive();
    const ROWS: usize = 2_000_000;
    let input = Generated {
        rows: ROWS,
        next: 0,
        pending: Vec::new(),
        offset: 0,
    };
    let baseline = LIVE.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    let started = Instant::now();
    let mut reader = CsvAccruals::new(input, "bucket/imports/big.csv#v1").unwrap();
    let (mut accepted, mut amount) = (0usize, 0u64);
    while let Some((_, row)) = reader.next_row().unwrap() {
        match row {
            CsvRow::Accrual(a) => {
                accepted += 1;
                amount += a.amount;
            }
            CsvRow::Rejected(errors) => panic!("unexpected rejection: {errors:?}"),
        }
    }
    let elapsed = started.elapsed();
    let peak = PEAK.load(Ordering::Relaxed) - baseline;
    println!(
        "{ROWS} rows in {:.2} s ({:.0} rows/s, {} build, one thread), heap peak above baseline {} KiB",
        elapsed.as_secs_f64(),
        ROWS as f64 / elapsed.as_secs_f64(),
        if cfg!(debug_assertions) { "debug" } else { "release" },
        peak / 1024
    );
    assert_eq!(accepted, ROWS);
    assert!(amount > 0);
    // The file is about 90 MB; the reader holds its buffer and one row.
    assert!(peak < 1024 * 1024, "heap peak {peak} bytes grew with the file");
}
