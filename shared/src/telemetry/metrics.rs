//! CloudWatch metrics as Embedded Metric Format (EMF) lines: a function
//! prints one JSON line per batch to stdout, and CloudWatch Logs turns it into
//! metrics — no `PutMetricData` call, no extra latency, no IAM permission.
//! The template's alarms watch these metrics and the queues' own.

use serde_json::json;

/// Namespace of Pointflow's metrics.
pub const NAMESPACE: &str = "Pointflow";

/// What one worker batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BatchMetrics {
    pub messages: u64,
    pub failed_messages: u64,
    pub applied: u64,
    pub duplicate: u64,
    /// Time spent on the batch.
    pub duration_ms: f64,
    /// Age of the batch's oldest message when the batch ended: how long its
    /// accruals waited between being queued and being applied (SQS's
    /// `SentTimestamp`; `None` when the event carried none).
    pub enqueue_to_apply_ms: Option<f64>,
}

impl BatchMetrics {
    /// The EMF line for these metrics, dimensioned by `function`.
    pub fn to_emf(&self, function: &str, timestamp_ms: i64) -> String {
        let mut metrics = vec![
            json!({"Name": "Messages", "Unit": "Count"}),
            json!({"Name": "MessagesFailed", "Unit": "Count"}),
            json!({"Name": "AccrualsApplied", "Unit": "Count"}),
            json!({"Name": "AccrualsDuplicate", "Unit": "Count"}),
            json!({"Name": "BatchDuration", "Unit": "Milliseconds"}),
        ];
        let mut line = json!({
            "Function": function,
            "Messages": self.messages,
            "MessagesFailed": self.failed_messages,
            "AccrualsApplied": self.applied,
            "AccrualsDuplicate": self.duplicate,
            "BatchDuration": self.duration_ms,
        });
        if let Some(age) = self.enqueue_to_apply_ms {
            metrics.push(json!({"Name": "EnqueueToApplyAge", "Unit": "Milliseconds"}));
            line["EnqueueToApplyAge"] = json!(age);
        }
        line["_aws"] = json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Function"]],
                "Metrics": metrics,
            }],
        });
        line.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emf_line_declares_every_value_it_carries() {
        let m = BatchMetrics {
            messages: 10,
            failed_messages: 1,
            applied: 4500,
            duplicate: 3,
            duration_ms: 812.5,
            enqueue_to_apply_ms: Some(2300.0),
        };
        let line: serde_json::Value = serde_json::from_str(&m.to_emf("worker", 1_764_123_456_789)).unwrap();
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        assert_eq!(directive["Dimensions"], json!([["Function"]]));
        assert_eq!(line["_aws"]["Timestamp"], 1_764_123_456_789i64);
        assert_eq!(line["Function"], "worker");
        for metric in directive["Metrics"].as_array().unwrap() {
            let name = metric["Name"].as_str().unwrap();
            assert!(line[name].is_number(), "{name} has no value");
        }
        assert_eq!(line["AccrualsApplied"], 4500);
        assert_eq!(line["EnqueueToApplyAge"], 2300.0);
        let without_age: serde_json::Value = serde_json::from_str(
            &BatchMetrics {
                enqueue_to_apply_ms: None,
                ..m
            }
            .to_emf("worker", 0),
        )
        .unwrap();
        assert!(without_age.get("EnqueueToApplyAge").is_none());
        assert_eq!(
            without_age["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .unwrap()
                .len(),
            5
        );
    }
}
