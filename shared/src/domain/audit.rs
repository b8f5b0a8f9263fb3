//! The audit trail: who asked for a change, from which request, and why.
//!
//! Every job (API request or dropped file), single use, reversal and job
//! cancel records an [`Audit`] with the thing it changed; the time is the
//! record's own (`created_at`, `applied_at`, `reversed_at`,
//! `requested_at`). The caller is what the front door authenticated: API
//! Gateway's request context (an IAM principal or an API key), the S3
//! event of a dropped file, or the local server. Nothing here authorizes:
//! it records.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::validation::{check_reason, FieldError};

/// The most characters kept of any one identity field: an IAM role
/// session ARN is at most 2,048 characters; anything longer is cut
/// (marked by a trailing `…`) so a record stays small.
pub const MAX_FIELD_CHARS: usize = 2_048;

/// How the caller was identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallerKind {
    /// A SigV4-signed request: `id` is the IAM principal's ARN.
    Iam,
    /// A request carrying an API key: `id` is the key's id (never the key).
    ApiKey,
    /// `pointflow local serve` (or an operator's in-process command):
    /// `id` is `local`.
    Local,
    /// A file dropped in the import bucket: `id` is the S3 event's
    /// `userIdentity.principalId`.
    S3,
    /// The request context named no one (an unauthenticated route, or a
    /// caller that did not say).
    Unknown,
}

/// Who asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub kind: CallerKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The AWS account of an IAM caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// Where the request came from: the source IP (API Gateway, S3) or the
    /// peer address (local server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
}

/// Who asked, from which request, and why: kept with the record it made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Audit {
    pub caller: Caller,
    /// The request's id: API Gateway's `requestContext.requestId`, the S3
    /// request id of a dropped file, or one the local server generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The reason the caller gave (a reversal's or a cancel's `reason`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The identity fields of API Gateway's request context
/// (`requestContext.identity`) that say who called, as they arrive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayIdentity {
    pub user_arn: Option<String>,
    pub caller: Option<String>,
    pub account_id: Option<String>,
    pub api_key_id: Option<String>,
    pub source_ip: Option<String>,
}

impl Caller {
    /// The caller API Gateway authenticated: an IAM principal (its ARN, or
    /// `caller` when the ARN is absent) wins over an API key, which on an
    /// IAM-authorized route only meters usage. Empty fields count as absent.
    pub fn from_gateway(identity: &GatewayIdentity) -> Self {
        let present = |value: &Option<String>| value.as_deref().filter(|v| !v.is_empty()).map(bounded);
        let iam = present(&identity.user_arn).or_else(|| present(&identity.caller));
        let (kind, id) = match (iam, present(&identity.api_key_id)) {
            (Some(principal), _) => (CallerKind::Iam, Some(principal)),
            (None, Some(key_id)) => (CallerKind::ApiKey, Some(key_id)),
            (None, None) => (CallerKind::Unknown, None),
        };
        Caller {
            kind,
            id,
            account_id: if kind == CallerKind::Iam {
                present(&identity.account_id)
            } else {
                None
            },
            source_ip: present(&identity.source_ip),
        }
    }

    /// The local server's caller: `local`, from `peer` (its address).
    pub fn local(peer: Option<String>) -> Self {
        Caller {
            kind: CallerKind::Local,
            id: Some("local".to_owned()),
            account_id: None,
            source_ip: peer.map(|p| bounded(&p)),
        }
    }

    /// The uploader of a dropped file: the S3 event's principal and source IP.
    pub fn s3(principal_id: Option<&str>, source_ip: Option<&str>) -> Self {
        let present = |value: Option<&str>| value.filter(|v| !v.is_empty()).map(bounded);
        Caller {
            kind: CallerKind::S3,
            id: present(principal_id),
            account_id: None,
            source_ip: present(source_ip),
        }
    }

    /// A caller nobody named.
    pub fn unknown() -> Self {
        Caller {
            kind: CallerKind::Unknown,
            id: None,
            account_id: None,
            source_ip: None,
        }
    }
}

impl Audit {
    /// The record of `caller` asking in request `request_id`.
    pub fn new(caller: Caller, request_id: Option<&str>) -> Self {
        Audit {
            caller,
            request_id: request_id.filter(|id| !id.is_empty()).map(bounded),
            reason: None,
        }
    }

    /// A request to the local server from `peer`, or an operator's
    /// in-process command (`None`), under a fresh request id
    /// (`local-<uuid>`) to find it by.
    pub fn local(peer: Option<String>) -> Self {
        let request_id = format!("local-{}", uuid::Uuid::new_v4());
        Audit::new(Caller::local(peer), Some(&request_id))
    }

    /// The same, with the reason given.
    pub fn with_reason(mut self, reason: Option<&str>) -> Self {
        self.reason = reason.map(str::to_owned);
        self
    }

    /// The form stores keep (one JSON text: a SQLite column, a DynamoDB
    /// string attribute).
    pub fn to_json(&self) -> String {
        // A struct of strings and enums always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads what [`Audit::to_json`] wrote.
    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| format!("audit is not an audit record: {e}"))
    }
}

/// Reads a body that may only give a reason, `{"reason"?}` (a job
/// cancel's): the reason by the accruals' rules, every problem naming its
/// field.
pub fn reason_from_json(body: &Value) -> Result<Option<String>, Vec<FieldError>> {
    let problem = |field: &str, reason: &str| FieldError {
        index: 0,
        field: field.to_owned(),
        reason: reason.to_owned(),
    };
    let Some(object) = body.as_object() else {
        return Err(vec![problem("body", "must be a JSON object")]);
    };
    let mut errors: Vec<FieldError> = object
        .keys()
        .filter(|key| key.as_str() != "reason")
        .map(|key| problem(key, "is not a field of a cancel (reason)"))
        .collect();
    let reason = match object.get("reason") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => match check_reason(text) {
            Ok(()) => Some(text.clone()),
            Err(e) => {
                errors.push(problem("reason", &e));
                None
            }
        },
        Some(_) => {
            errors.push(problem("reason", "must be a string"));
            None
        }
    };
    if errors.is_empty() {
        Ok(reason)
    } else {
        Err(errors)
    }
}

/// An IAM caller whose principal ARN has `arn_chars` characters, as
/// API Gateway passes it, with a request id.
#[cfg(test)]
pub(crate) fn iam_sample(arn_chars: usize) -> Audit {
    let prefix = "arn:aws:sts::123456789012:assumed-role/PointflowOperate/";
    let arn = format!("{prefix}{}", "s".repeat(arn_chars.saturating_sub(prefix.len())));
    let identity = GatewayIdentity {
        user_arn: Some(arn),
        account_id: Some("123456789012".into()),
        api_key_id: Some("k9x8w7v6u5".into()),
        source_ip: Some("203.0.113.10".into()),
        ..GatewayIdentity::default()
    };
    Audit::new(
        Caller::from_gateway(&identity),
        Some("c6af9ac6-7b61-11e6-9a41-93e8deadbeef"),
    )
}

/// `value`, cut to [`MAX_FIELD_CHARS`] characters.
fn bounded(value: &str) -> String {
    match value.char_indices().nth(MAX_FIELD_CHARS) {
        None => value.to_owned(),
        Some((end, _)) => format!("{}…", &value[..end]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> GatewayIdentity {
        GatewayIdentity {
            user_arn: Some("arn:aws:iam::123456789012:user/alice".into()),
            caller: Some("AIDAEXAMPLE".into()),
            account_id: Some("123456789012".into()),
            api_key_id: Some("k9x8w7v6u5".into()),
            source_ip: Some("203.0.113.10".into()),
        }
    }

    #[test]
    fn an_iam_principal_wins_over_the_usage_plan_key() {
        let caller = Caller::from_gateway(&identity());
        assert_eq!(caller.kind, CallerKind::Iam);
        assert_eq!(caller.id.as_deref(), Some("arn:aws:iam::123456789012:user/alice"));
        assert_eq!(caller.account_id.as_deref(), Some("123456789012"));
        assert_eq!(caller.source_ip.as_deref(), Some("203.0.113.10"));
        let no_arn = GatewayIdentity {
            user_arn: None,
            ..identity()
        };
        assert_eq!(Caller::from_gateway(&no_arn).id.as_deref(), Some("AIDAEXAMPLE"));
    }

    #[test]
    fn an_api_key_caller_is_named_by_the_key_id_and_empty_fields_are_absent() {
        let key_only = GatewayIdentity {
            user_arn: Some(String::new()),
            caller: None,
            account_id: Some("123456789012".into()),
            ..identity()
        };
        let caller = Caller::from_gateway(&key_only);
        assert_eq!(
            (caller.kind, caller.id.as_deref()),
            (CallerKind::ApiKey, Some("k9x8w7v6u5"))
        );
        assert_eq!(caller.account_id, None, "an account is an IAM caller's");
        let nobody = Caller::from_gateway(&GatewayIdentity::default());
        assert_eq!(nobody, Caller::unknown());
    }

    #[test]
    fn round_trips_through_its_stored_form_and_bounds_long_fields() {
        let audit = Audit::new(Caller::from_gateway(&identity()), Some("req-1")).with_reason(Some("refund"));
        assert_eq!(Audit::from_json(&audit.to_json()).unwrap(), audit);
        let long = "x".repeat(MAX_FIELD_CHARS + 10);
        let caller = Caller::local(Some(long));
        assert_eq!(
            caller.source_ip.as_ref().map(|ip| ip.chars().count()),
            Some(MAX_FIELD_CHARS + 1)
        );
        assert!(Audit::from_json("{").unwrap_err().contains("audit"));
    }

    #[test]
    fn a_cancel_body_gives_a_reason_or_nothing_and_names_a_bad_field() {
        use serde_json::json;
        assert_eq!(
            reason_from_json(&json!({"reason": "sent twice"})).unwrap().as_deref(),
            Some("sent twice")
        );
        assert_eq!(reason_from_json(&json!({})).unwrap(), None);
        let fields = |body: Value| {
            reason_from_json(&body)
                .unwrap_err()
                .into_iter()
                .map(|e| e.field)
                .collect::<Vec<_>>()
        };
        assert_eq!(fields(json!({"reason": 5, "why": "x"})), ["why", "reason"]);
        assert_eq!(fields(json!({"reason": "a\u{7}b"})), ["reason"]);
        assert_eq!(fields(json!([])), ["body"]);
    }
}
