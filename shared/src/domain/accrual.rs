//! What an accrual and a balance are, and the limits that bound them. Every
//! constant here is part of the public contract (docs/http-api.md,
//! "Accrual rules").

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::domain::lots::LotKey;

/// Largest `amount` one accrual may credit. Keeps any realistic balance far
/// inside DynamoDB's 38-digit numbers and SQLite's `i64`.
pub const MAX_AMOUNT: u64 = 1_000_000_000;
/// Longest `accrual_id` (characters). A derived id (UUID) is 36.
pub const MAX_ACCRUAL_ID_LEN: usize = 128;
/// Longest `member_id` (characters).
pub const MAX_MEMBER_ID_LEN: usize = 64;
/// Longest `point_type` (characters).
pub const MAX_POINT_TYPE_LEN: usize = 32;
/// Longest `reason` (characters).
pub const MAX_REASON_LEN: usize = 256;

/// Whether `c` may appear in an `accrual_id` or `member_id`.
///
/// ASCII letters, digits and `- _ . : @`. `#` is excluded because the stores
/// use it as a key separator; whitespace and control characters because ids
/// end up in logs, URLs and CSV files.
pub fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@')
}

/// Whether `c` may appear in a `point_type`: ASCII letters, digits, `-` and `_`.
pub fn is_point_type_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_')
}

/// One credit of points to one member: the unit Pointflow applies exactly once.
///
/// Construct it through [`crate::domain::validation`], which enforces the rules above;
/// the stores trust that an `Accrual` they receive is valid.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Accrual {
    /// Idempotency key of this credit: never applied twice, whatever happens.
    pub accrual_id: String,
    pub member_id: String,
    pub point_type: String,
    pub amount: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The points become available at this time, pending until then
    /// (`None`: at once).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub apply_at: Option<OffsetDateTime>,
    /// The points expire unused at this time (`None`: never).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub expires_at: Option<OffsetDateTime>,
}

impl Accrual {
    /// The balance this accrual credits.
    pub fn balance_key(&self) -> BalanceKey<'_> {
        BalanceKey {
            member_id: &self.member_id,
            point_type: &self.point_type,
        }
    }

    /// The lot of the balance this accrual credits.
    pub fn lot(&self) -> LotKey {
        LotKey::new(self.apply_at, self.expires_at)
    }
}

/// Identifies one balance: a member's points of one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BalanceKey<'a> {
    pub member_id: &'a str,
    pub point_type: &'a str,
}

/// A member's balance of one point type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub point_type: String,
    pub balance: u64,
}

/// Accrual `a<id>` of 10 points of `point_type` to member `m<member>`, for
/// the unit tests of whatever groups or stores accruals.
#[cfg(test)]
pub(crate) fn sample(id: usize, member: usize, point_type: &str) -> Accrual {
    Accrual {
        accrual_id: format!("a{id}"),
        member_id: format!("m{member}"),
        point_type: point_type.into(),
        amount: 10,
        reason: None,
        apply_at: None,
        expires_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_charset_excludes_key_separator_and_whitespace() {
        assert!("m-1001_a.b:c@d".chars().all(is_id_char));
        assert!(!is_id_char('#'));
        assert!(!is_id_char(' '));
        assert!(!is_id_char('é'));
        assert!(!is_point_type_char('.'));
    }
}
