//! Micro-benchmarks of the per-accrual work on each side of the queue:
//! `cargo bench -p pointflow --all-features`. They print figures (criterion's
//! time per iteration and throughput); nothing here asserts a speed.
//!
//! - `ingest/parse_json`: a 10,000-item request body into JSON values (MB/s).
//! - `ingest/prepare_submission`: validate, derive ids, collapse duplicates
//!   (per accrual).
//! - `ingest/pack`: group by member and pack into messages (per accrual).
//! - `import/csv_rows`: parse and validate CSV rows (per row);
//!   `import/csv_rows_utf16` the same rows in UTF-16LE, `import/ndjson_rows`
//!   as NDJSON lines.
//! - `worker/plan_transactions`: split a 500-accrual message into DynamoDB
//!   transactions and sum balances (per accrual).
//! - `worker/process_message`: decode, apply and fold one 500-accrual
//!   message on the in-memory store (per accrual).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pointflow::adapters::memory::MemoryStore;
use pointflow::domain::message::{Payload, QueueMessage};
use pointflow::domain::packing::{pack_accruals, PackingLimits};
use pointflow::domain::readers::csv::{CsvAccruals, CsvRow};
use pointflow::domain::readers::ndjson::NdjsonAccruals;
use pointflow::domain::submission::prepare_submission;
use pointflow::domain::transaction_plan::{plan_transactions, sum_by_balance};
use pointflow::domain::{Accrual, JobId, NewJob};
use pointflow::ports::JobStore;
use pointflow::services::worker::{IncomingMessage, Worker, WorkerSettings};
use serde_json::Value;

const ITEMS: usize = 10_000;

/// A request body like a CRM's: members credited two point types each.
fn request_body(items: usize) -> String {
    let accruals: Vec<String> = (0..items)
        .map(|i| {
            format!(
                r#"{{"member_id":"m-{:07}","point_type":"{}","amount":{},"reason":"spring campaign"}}"#,
                i / 2,
                if i % 2 == 0 { "WELCOME" } else { "BONUS" },
                1 + i % 2000
            )
        })
        .collect();
    format!(r#"{{"accruals":[{}]}}"#, accruals.join(","))
}

fn accruals(items: usize) -> Vec<Accrual> {
    (0..items)
        .map(|i| Accrual {
            accrual_id: format!("6f1f4c4e-8a1d-4b5e-9f0a-3c2b7d61a001:{i:07}"),
            member_id: format!("m-{:07}", i / 2),
            point_type: if i % 2 == 0 { "WELCOME" } else { "BONUS" }.to_owned(),
            amount: 1 + (i % 2000) as u64,
            reason: Some("spring campaign".to_owned()),
            apply_at: None,
            expires_at: None,
        })
        .collect()
}

fn ingest(c: &mut Criterion) {
    let body = request_body(ITEMS);
    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("parse_json", |b| {
        b.iter(|| black_box(serde_json::from_str::<Value>(black_box(&body)).unwrap()))
    });
    let parsed: Value = serde_json::from_str(&body).unwrap();
    let items = parsed["accruals"].as_array().unwrap().clone();
    group.throughput(Throughput::Elements(ITEMS as u64));
    group.bench_function("prepare_submission", |b| {
        b.iter(|| black_box(prepare_submission(black_box(&items), Some("campaign-42-part-1"), ITEMS).unwrap()))
    });
    let prepared = accruals(ITEMS);
    group.bench_function("pack", |b| {
        b.iter_batched(
            || prepared.clone(),
            |a| black_box(pack_accruals(JobId::random(), a, PackingLimits::default())),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn import(c: &mut Criterion) {
    let mut csv = String::from("member_id,point_type,amount,reason\n");
    for i in 0..ITEMS {
        csv.push_str(&format!(
            "m-{:07},{},{},spring campaign\n",
            i / 2,
            if i % 2 == 0 { "WELCOME" } else { "BONUS" },
            1 + i % 2000
        ));
    }
    let mut group = c.benchmark_group("import");
    group.throughput(Throughput::Elements(ITEMS as u64));
    group.bench_function("csv_rows", |b| {
        b.iter(|| {
            let mut rows = CsvAccruals::new(csv.as_bytes(), "s3://bucket/imports/a.csv#etag").unwrap();
            let mut n = 0usize;
            while let Some((_, row)) = rows.next_row().unwrap() {
                if matches!(row, CsvRow::Accrual(_)) {
                    n += 1;
                }
            }
            black_box(n)
        })
    });
    // The same rows as UTF-16LE (decoded to UTF-8 first) and as NDJSON.
    let utf16 = pointflow::domain::readers::source::utf16_with_bom(&csv, false);
    group.bench_function("csv_rows_utf16", |b| {
        b.iter(|| {
            let mut rows =
                CsvAccruals::new_in(&utf16[..], "s3://bucket/imports/a.csv#etag", encoding_rs::UTF_16LE).unwrap();
            let mut n = 0usize;
            while let Some((_, row)) = rows.next_row().unwrap() {
                if matches!(row, CsvRow::Accrual(_)) {
                    n += 1;
                }
            }
            black_box(n)
        })
    });
    let mut ndjson = String::new();
    for i in 0..ITEMS {
        ndjson.push_str(&format!(
            "{{\"member_id\":\"m-{:07}\",\"point_type\":\"{}\",\"amount\":{},\"reason\":\"spring campaign\"}}\n",
            i / 2,
            if i % 2 == 0 { "WELCOME" } else { "BONUS" },
            1 + i % 2000
        ));
    }
    group.bench_function("ndjson_rows", |b| {
        b.iter(|| {
            let mut rows = NdjsonAccruals::new_in(
                ndjson.as_bytes(),
                "s3://bucket/imports/a.ndjson#etag",
                encoding_rs::UTF_8,
            );
            let mut n = 0usize;
            while let Some((_, row)) = rows.next_row().unwrap() {
                if matches!(row, CsvRow::Accrual(_)) {
                    n += 1;
                }
            }
            black_box(n)
        })
    });
    group.finish();
}

fn worker(c: &mut Criterion) {
    let message = accruals(500);
    let mut group = c.benchmark_group("worker");
    group.throughput(Throughput::Elements(message.len() as u64));
    group.bench_function("plan_transactions", |b| {
        b.iter(|| {
            let plan = plan_transactions(black_box(&message));
            let sums: usize = plan.iter().map(|t| sum_by_balance(t).len()).sum();
            black_box((plan.len(), sums))
        })
    });

    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    group.bench_function("process_message", |b| {
        b.iter_batched(
            || {
                // A fresh store each time: every accrual is new.
                let store = Arc::new(MemoryStore::new());
                let job_id = JobId::random();
                runtime
                    .block_on(store.create_job(&NewJob {
                        job_id,
                        request_hash: String::new(),
                        total: 500,
                        deduplicated: 0,
                        messages: 1,
                        source: None,
                        reading: false,
                        created_at: time::OffsetDateTime::now_utc(),
                        audit: None,
                    }))
                    .unwrap();
                let body = QueueMessage::new(job_id, 0, Payload::Accruals(message.clone())).encode();
                let worker = Worker::new(store.clone(), store, WorkerSettings::default());
                (worker, body)
            },
            |(worker, body)| {
                let incoming = IncomingMessage {
                    message_id: "m".into(),
                    body,
                    receive_count: 1,
                };
                black_box(runtime.block_on(worker.process_message(&incoming)).unwrap())
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, ingest, import, worker);
criterion_main!(benches);
