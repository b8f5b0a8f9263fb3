//! Ceilings that stop a mistake (an extra zero, a file sent twice as one)
//! from minting a fortune: the amount of one accrual, the points of one job
//! and the accruals of one job. Checked before anything of the job is
//! queued; the stack's parameters set them (docs/http-api.md, "Ceilings").

/// Default most points one accrual may credit.
pub const DEFAULT_MAX_AMOUNT_PER_ACCRUAL: u64 = 1_000_000;
/// Default most points one job may credit (the sum of its amounts).
pub const DEFAULT_MAX_POINTS_PER_JOB: u64 = 1_000_000_000;
/// Default most accruals one job may hold.
pub const DEFAULT_MAX_ACCRUALS_PER_JOB: u64 = 1_000_000;

/// The three ceilings of a job of accruals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ceilings {
    pub max_amount_per_accrual: u64,
    pub max_points_per_job: u64,
    pub max_accruals_per_job: u64,
}

impl Default for Ceilings {
    fn default() -> Self {
        Ceilings {
            max_amount_per_accrual: DEFAULT_MAX_AMOUNT_PER_ACCRUAL,
            max_points_per_job: DEFAULT_MAX_POINTS_PER_JOB,
            max_accruals_per_job: DEFAULT_MAX_ACCRUALS_PER_JOB,
        }
    }
}

/// A job that passes a ceiling; nothing of it may be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CeilingError {
    #[error("item {index}: {field} {value} is over the ceiling of {limit} points per accrual; nothing was queued")]
    AmountPerAccrual {
        /// The item's position in the request (or its line in a file).
        index: usize,
        field: &'static str,
        value: u64,
        limit: u64,
    },
    #[error("the job credits {value} points in all, over the ceiling of {limit} points per job; nothing was queued")]
    PointsPerJob { value: u64, limit: u64 },
    #[error("the job holds {value} accruals, over the ceiling of {limit} accruals per job; nothing was queued")]
    AccrualsPerJob { value: u64, limit: u64 },
}

impl CeilingError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            CeilingError::AmountPerAccrual { .. } => "amount_over_ceiling",
            CeilingError::PointsPerJob { .. } => "job_points_over_ceiling",
            CeilingError::AccrualsPerJob { .. } => "job_accruals_over_ceiling",
        }
    }

    /// The ceiling passed.
    pub fn limit(&self) -> u64 {
        match *self {
            CeilingError::AmountPerAccrual { limit, .. }
            | CeilingError::PointsPerJob { limit, .. }
            | CeilingError::AccrualsPerJob { limit, .. } => limit,
        }
    }

    /// The offending value: the amount, the job's points or its accruals.
    pub fn value(&self) -> u64 {
        match *self {
            CeilingError::AmountPerAccrual { value, .. }
            | CeilingError::PointsPerJob { value, .. }
            | CeilingError::AccrualsPerJob { value, .. } => value,
        }
    }
}

/// A job's accruals counted one by one against the ceilings, so that a
/// caller that sees them in pieces (a file read in chunks) can stop at the
/// first one that passes a ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JobTally {
    pub accruals: u64,
    pub points: u64,
}

impl JobTally {
    /// Counts one accrual of `amount` at `index`, or says which ceiling it passes.
    pub fn add(&mut self, ceilings: &Ceilings, index: usize, amount: u64) -> Result<(), CeilingError> {
        if amount > ceilings.max_amount_per_accrual {
            return Err(CeilingError::AmountPerAccrual {
                index,
                field: "amount",
                value: amount,
                limit: ceilings.max_amount_per_accrual,
            });
        }
        self.accruals += 1;
        // Saturating: amounts are at most MAX_AMOUNT, so a real sum stays far
        // below u64::MAX; saturation still lands over any ceiling.
        self.points = self.points.saturating_add(amount);
        if self.accruals > ceilings.max_accruals_per_job {
            return Err(CeilingError::AccrualsPerJob {
                value: self.accruals,
                limit: ceilings.max_accruals_per_job,
            });
        }
        if self.points > ceilings.max_points_per_job {
            return Err(CeilingError::PointsPerJob {
                value: self.points,
                limit: ceilings.max_points_per_job,
            });
        }
        Ok(())
    }
}

impl Ceilings {
    /// Checks a whole job given as `(index, amount)` pairs. Every amount is
    /// checked first, so an oversized accrual is named even when the job's
    /// totals are over too; the totals are reported in full, not where they
    /// first passed the ceiling.
    pub fn check(&self, items: impl Iterator<Item = (usize, u64)> + Clone) -> Result<JobTally, CeilingError> {
        for (index, amount) in items.clone() {
            if amount > self.max_amount_per_accrual {
                return Err(CeilingError::AmountPerAccrual {
                    index,
                    field: "amount",
                    value: amount,
                    limit: self.max_amount_per_accrual,
                });
            }
        }
        let tally = items.fold(JobTally::default(), |t, (_, amount)| JobTally {
            accruals: t.accruals + 1,
            points: t.points.saturating_add(amount),
        });
        if tally.accruals > self.max_accruals_per_job {
            return Err(CeilingError::AccrualsPerJob {
                value: tally.accruals,
                limit: self.max_accruals_per_job,
            });
        }
        if tally.points > self.max_points_per_job {
            return Err(CeilingError::PointsPerJob {
                value: tally.points,
                limit: self.max_points_per_job,
            });
        }
        Ok(tally)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Ceilings = Ceilings {
        max_amount_per_accrual: 100,
        max_points_per_job: 250,
        max_accruals_per_job: 3,
    };

    fn check(amounts: &[u64]) -> Result<JobTally, CeilingError> {
        SMALL.check(amounts.iter().copied().enumerate())
    }

    #[test]
    fn a_job_at_every_ceiling_passes() {
        assert_eq!(
            check(&[100, 100, 50]),
            Ok(JobTally {
                accruals: 3,
                points: 250
            })
        );
    }

    #[test]
    fn an_amount_over_its_ceiling_is_named_by_index_and_field() {
        let e = check(&[1, 101, 1]).unwrap_err();
        assert_eq!(
            e,
            CeilingError::AmountPerAccrual {
                index: 1,
                field: "amount",
                value: 101,
                limit: 100
            }
        );
        assert_eq!((e.code(), e.value(), e.limit()), ("amount_over_ceiling", 101, 100));
        assert!(e.to_string().contains("item 1: amount 101"), "{e}");
    }

    #[test]
    fn an_oversized_amount_is_named_before_the_totals() {
        // Over every ceiling: the single accrual is the precise reason.
        let e = check(&[100, 100, 100, 100, 101]).unwrap_err();
        assert_eq!(e.code(), "amount_over_ceiling");
    }

    #[test]
    fn a_job_over_its_points_reports_its_total() {
        let e = check(&[100, 100, 51]).unwrap_err();
        assert_eq!(e, CeilingError::PointsPerJob { value: 251, limit: 250 });
        assert_eq!(e.code(), "job_points_over_ceiling");
    }

    #[test]
    fn a_job_over_its_accruals_reports_its_count() {
        let e = check(&[1, 1, 1, 1]).unwrap_err();
        assert_eq!(e, CeilingError::AccrualsPerJob { value: 4, limit: 3 });
        assert_eq!(e.code(), "job_accruals_over_ceiling");
    }

    #[test]
    fn a_tally_stops_at_the_accrual_that_passes_a_ceiling() {
        let mut tally = JobTally::default();
        tally.add(&SMALL, 0, 100).unwrap();
        tally.add(&SMALL, 1, 100).unwrap();
        assert_eq!(
            tally.add(&SMALL, 2, 51),
            Err(CeilingError::PointsPerJob { value: 251, limit: 250 })
        );
        let mut tally = JobTally::default();
        assert_eq!(tally.add(&SMALL, 7, 101).unwrap_err().code(), "amount_over_ceiling");
        let mut tally = JobTally::default();
        for i in 0..3 {
            tally.add(&SMALL, i, 1).unwrap();
        }
        assert_eq!(tally.add(&SMALL, 3, 1).unwrap_err().code(), "job_accruals_over_ceiling");
    }
}
