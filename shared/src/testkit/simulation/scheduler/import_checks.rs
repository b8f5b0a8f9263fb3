//! What a run checks of its files once it has drained: every drop's job
//! read to the end with the counts its file implies, every message it
//! numbered queued, and its error report listing exactly the bad lines.

use crate::services::import::report;

use super::super::files::BUCKET;
use super::*;

/// Where the importer writes reports (`ImportSettings::default()`).
const REPORT_PREFIX: &str = "reports/";

impl Run {
    /// Each drop's job, with its file, its key and whether it is the second
    /// drop of that file.
    pub(super) fn file_jobs(&self) -> Vec<(JobId, usize, String)> {
        self.imports
            .dropped
            .iter()
            .map(|d| (d.object.job_id(), d.file, d.object.key.clone()))
            .collect()
    }

    /// After the first drain: every file dropped, the import queue empty
    /// (a chunk left in the import DLQ is redriven next), and a file read
    /// to its end settled no more than its total.
    pub(super) fn check_imports_settled(&mut self) {
        let left = self.sim.lock().queues[QueueId::Imports as usize].messages.len();
        if left > 0 || !self.imports.all_dropped() {
            self.violations.push(format!(
                "{left} messages still in the import queue after draining (all files dropped: {})",
                self.imports.all_dropped()
            ));
        }
        for (job_id, _, key) in self.file_jobs() {
            if let Some(job) = self.job(job_id) {
                // While a chunk is unrecorded (its task in the import DLQ)
                // the messages it queued may fold before its count is added.
                if !job.reading && job.settled() > job.total {
                    self.violations.push(format!(
                        "file job {} ({key}): settled {} > total {}",
                        short(job_id),
                        job.settled(),
                        job.total
                    ));
                }
            }
        }
    }

    /// After the redrive and the last drain: each file job read to its end,
    /// every row settled, its counts those of its file, its messages all
    /// queued, its report exact. Returns what the file jobs applied.
    pub(super) fn check_imports_final(&mut self) -> u64 {
        let left = self.sim.lock().queues[QueueId::ImportsDead as usize].messages.len();
        if left > 0 {
            self.violations
                .push(format!("after redrive: {left} messages in the import DLQ"));
        }
        let sent = self.sim.lock().queues[QueueId::Main as usize].sent.clone();
        let mut applied = 0;
        for (job_id, file, key) in self.file_jobs() {
            let spec = self.scenario.files.files[file].clone();
            let Some(job) = self.job(job_id) else {
                self.violations
                    .push(format!("file {key}: job {} missing", short(job_id)));
                continue;
            };
            applied += job.applied;
            let good = spec.good_rows();
            let bad = spec.bad_lines();
            let seqs: BTreeSet<u32> = sent.iter().filter(|(j, _)| *j == job_id).map(|(_, q)| *q).collect();
            let expected_seqs: BTreeSet<u32> = (0..job.messages as u32).collect();
            if job.error.is_some()
                || job.reading
                || job.completed_at.is_none()
                || job.failed != 0
                || job.applied + job.duplicate != job.total
                || job.total + job.deduplicated != good
                || job.rejected != bad.len() as u64
                || seqs != expected_seqs
            {
                self.violations.push(format!(
                    "file job {} ({key}) at the end: status {:?} error {:?} total {} deduplicated {} applied {} \
                     duplicate {} failed {} rejected {} messages {} (sent seqs {seqs:?}); the file has {good} \
                     good rows and {} bad",
                    short(job_id),
                    job.status(),
                    job.error,
                    job.total,
                    job.deduplicated,
                    job.applied,
                    job.duplicate,
                    job.failed,
                    job.rejected,
                    job.messages,
                    bad.len()
                ));
            }
            self.check_report(job_id, &key, &bad);
        }
        applied
    }

    /// The file's report lists each bad line once, and nothing else; a
    /// file without one has no report. Its pointer names its job.
    fn check_report(&mut self, job_id: JobId, key: &str, bad: &BTreeSet<u64>) {
        let report_key = report::report_key(REPORT_PREFIX, key, job_id);
        match self.imports.bucket.get(BUCKET, &report_key) {
            None if bad.is_empty() => {}
            None => self
                .violations
                .push(format!("file {key}: no report {report_key}; bad lines {bad:?}")),
            Some(body) => {
                let mut listed = Vec::new();
                for record in csv::Reader::from_reader(body.as_slice()).records() {
                    match record.ok().and_then(|r| r.get(0).and_then(|l| l.parse::<u64>().ok())) {
                        Some(line) => listed.push(line),
                        None => self
                            .violations
                            .push(format!("file {key}: the report {report_key} has an unreadable line")),
                    }
                }
                let listed_set: BTreeSet<u64> = listed.iter().copied().collect();
                if listed_set != *bad || listed.len() != bad.len() {
                    self.violations.push(format!(
                        "file {key}: the report lists lines {listed:?}; the bad lines are {bad:?}"
                    ));
                }
            }
        }
        let pointer = self
            .imports
            .bucket
            .get(BUCKET, &report::job_key(REPORT_PREFIX, key))
            .and_then(|body| serde_json::from_slice::<serde_json::Value>(&body).ok());
        let named = pointer.as_ref().and_then(|p| p["job_id"].as_str().map(str::to_owned));
        if named != Some(job_id.to_string()) {
            self.violations
                .push(format!("file {key}: its pointer names job {named:?}, not {job_id}"));
        }
    }
}
