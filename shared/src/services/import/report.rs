//! The error report: one CSV line per problem, `line,column,reason,raw`,
//! written to `reports/<key>.<job id>.errors.csv` (the job id follows the
//! file's identity, so a file dropped again under a reused name gets its own
//! report); and `reports/<key>.job.json`, which names the key's latest job
//! and its report as soon as its import starts.

use crate::domain::readers::csv::{reencode, RowError};

/// The report's header row.
pub const HEADER: &[u8] = b"line,column,reason,raw\n";

/// Where the report of the file `key` imported as job `job` goes.
pub fn report_key(prefix: &str, key: &str, job: impl std::fmt::Display) -> String {
    format!("{prefix}{key}.{job}.errors.csv")
}

/// Where the job id of the file `key` is written when its import starts.
pub fn job_key(prefix: &str, key: &str) -> String {
    format!("{prefix}{key}.job.json")
}

/// Where chunk `chunk` of job `job` keeps its part of the report until the
/// last chunk assembles them (a lifecycle rule expires parts after 30 days,
/// longer than a continuation can wait in the import queue and its DLQ).
pub fn part_key(prefix: &str, job: impl std::fmt::Display, chunk: u32) -> String {
    format!("{prefix}.parts/{job}/{chunk:06}.csv")
}

/// Where chunk `chunk` of a job finds the occurrence counts of the chunks
/// before it (id scheme v2), next to the report parts and removed with them.
pub fn occurrences_key(prefix: &str, job: impl std::fmt::Display, chunk: u32) -> String {
    format!("{prefix}.parts/{job}/{chunk:06}.occurrences")
}

/// Appends one report line per error.
pub fn write_errors(out: &mut Vec<u8>, errors: &[RowError]) {
    for e in errors {
        let line = e.line.to_string();
        out.extend_from_slice(reencode(&[&line, &e.column, &e.reason, &e.raw]).as_bytes());
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_quote_what_needs_quoting() {
        let mut out = HEADER.to_vec();
        write_errors(
            &mut out,
            &[RowError {
                line: 7,
                column: "amount".into(),
                reason: "must be a whole number from 1 to 1000000000, found \"1,5\"".into(),
                raw: "m-1,P,\"1,5\"".into(),
            }],
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "line,column,reason,raw\n7,amount,\"must be a whole number from 1 to 1000000000, found \"\"1,5\"\"\",\"m-1,P,\"\"1,5\"\"\"\n"
        );
        assert_eq!(
            report_key("reports/", "imports/a.csv", "j-1"),
            "reports/imports/a.csv.j-1.errors.csv"
        );
    }
}
