//! The rules one row of a file is held to, whatever its format: the
//! header's columns ([`layout`]) and a row's fields, as text, checked into an
//! accrual or the report lines naming each bad field ([`check_row`]). The CSV
//! reader ([`crate::domain::readers::csv`]), the NDJSON reader
//! ([`crate::domain::readers::ndjson`]) and the workbook reader
//! ([`crate::domain::readers::xlsx`]) all feed their rows through it, so a row
//! passes or fails alike in every format.

use crate::domain::lots::lot_times;
use crate::domain::readers::csv::{reencode, CsvFileError, CsvRow, RowError, COLUMNS};
use crate::domain::submission::derived_id;
use crate::domain::validation::{
    check_accrual_id, check_amount, check_lot_times, check_member_id, check_point_type, check_reason, parse_time,
};
use crate::domain::Accrual;

/// Where each column is in a row, by index.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    pub(crate) accrual_id: Option<usize>,
    member_id: usize,
    point_type: usize,
    amount: usize,
    reason: Option<usize>,
    apply_at: Option<usize>,
    expires_at: Option<usize>,
    width: usize,
}

/// Where each column is, from the header's names.
pub(crate) fn layout(names: &[String]) -> Result<Layout, CsvFileError> {
    let mut position = [None; COLUMNS.len()];
    for (i, name) in names.iter().enumerate() {
        let Some(c) = COLUMNS.iter().position(|c| c == name) else {
            return Err(CsvFileError::UnknownColumn { column: name.clone() });
        };
        if position[c].replace(i).is_some() {
            return Err(CsvFileError::RepeatedColumn { column: name.clone() });
        }
    }
    let required = |column: &'static str| {
        COLUMNS
            .iter()
            .position(|c| *c == column)
            .and_then(|c| position[c])
            .ok_or(CsvFileError::MissingColumn { column })
    };
    Ok(Layout {
        member_id: required("member_id")?,
        point_type: required("point_type")?,
        amount: required("amount")?,
        accrual_id: position[0],
        reason: position[4],
        apply_at: position[5],
        expires_at: position[6],
        width: names.len(),
    })
}

/// The layout of a row holding every column, in [`COLUMNS`] order (a
/// JSON item's fields, whatever order its keys came in).
pub(crate) fn all_columns() -> Layout {
    Layout {
        accrual_id: Some(0),
        member_id: 1,
        point_type: 2,
        amount: 3,
        reason: Some(4),
        apply_at: Some(5),
        expires_at: Some(6),
        width: COLUMNS.len(),
    }
}

/// Checks one data row (`line`: its number in the file, for the report),
/// `fields` in the header's order. A row without `accrual_id` gets the
/// scheme-v1 id of `id_prefix` and its line.
pub(crate) fn check_row(layout: &Layout, id_prefix: &str, line: u64, fields: &[&str]) -> CsvRow {
    let l = *layout;
    let mut errors = Vec::new();
    let mut fail = |column: &str, reason: String| {
        errors.push(RowError {
            line,
            column: column.to_owned(),
            reason,
            raw: String::new(),
        })
    };
    if fields.len() != l.width {
        fail(
            "(row)",
            format!("has {} fields; the header has {}", fields.len(), l.width),
        );
    }
    let get = |i: usize| fields.get(i).copied().unwrap_or("");
    let text = |column: &str, i: usize, check: fn(&str) -> Result<(), String>, fail: &mut dyn FnMut(&str, String)| {
        let value = get(i).trim();
        match check(value) {
            Ok(()) => Some(value.to_owned()),
            Err(reason) => {
                fail(column, reason);
                None
            }
        }
    };
    let accrual_id = match l.accrual_id.map(get).map(str::trim).filter(|v| !v.is_empty()) {
        Some(_) => l
            .accrual_id
            .and_then(|i| text("accrual_id", i, check_accrual_id, &mut fail)),
        None => Some(derived_id(id_prefix, usize::try_from(line).unwrap_or(usize::MAX))),
    };
    let member_id = text("member_id", l.member_id, check_member_id, &mut fail);
    let point_type = text("point_type", l.point_type, check_point_type, &mut fail);
    let raw_amount = get(l.amount).trim();
    let amount = match raw_amount.parse::<u64>() {
        Ok(n) => match check_amount(n) {
            Ok(()) => Some(n),
            Err(reason) => {
                fail("amount", reason);
                None
            }
        },
        Err(_) => {
            fail(
                "amount",
                format!(
                    "must be a whole number from 1 to {}, found {raw_amount:?}",
                    crate::domain::MAX_AMOUNT
                ),
            );
            None
        }
    };
    let reason = match l.reason.map(get).filter(|v| !v.is_empty()) {
        Some(value) => match check_reason(value) {
            Ok(()) => Some(value.to_owned()),
            Err(e) => {
                fail("reason", e);
                None
            }
        },
        None => None,
    };
    let mut time = |column: &str, at: Option<usize>| match at.map(get).map(str::trim).filter(|v| !v.is_empty()) {
        Some(value) => match parse_time(value) {
            Ok(t) => Some(t),
            Err(e) => {
                fail(column, e);
                None
            }
        },
        None => None,
    };
    let apply_at = time("apply_at", l.apply_at);
    let expires_at = time("expires_at", l.expires_at);
    if let Err(e) = check_lot_times(apply_at, expires_at) {
        fail("expires_at", e);
    }
    let (apply_at, expires_at) = lot_times(apply_at, expires_at);
    match (accrual_id, member_id, point_type, amount) {
        (Some(accrual_id), Some(member_id), Some(point_type), Some(amount)) if errors.is_empty() => {
            CsvRow::Accrual(Accrual {
                accrual_id,
                member_id,
                point_type,
                amount,
                reason,
                apply_at,
                expires_at,
            })
        }
        _ => {
            let raw = reencode(fields);
            for e in &mut errors {
                e.raw.clone_from(&raw);
            }
            CsvRow::Rejected(errors)
        }
    }
}
