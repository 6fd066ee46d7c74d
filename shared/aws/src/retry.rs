//! The read–modify–conditional-write retry loop every store-backed service uses: attempts
//! (read, change, write with a condition on what was read) run until one is done, backing off
//! between attempts that lost a race with another writer.

use crate::dynamo::{backoff, DynamoError};

/// Counts the attempts of a read–modify–conditional-write loop and backs off between them:
///
/// ```ignore
/// let mut attempts = Attempts::new(MAX_ATTEMPTS);
/// while attempts.begin().await {
///     let item = read().await?;
///     if lost_race(write(changed(item)).await)? {
///         continue;
///     }
///     return Ok(());
/// }
/// Err(too_busy())
/// ```
#[derive(Debug)]
pub struct Attempts {
    max: usize,
    started: usize,
}

impl Attempts {
    pub fn new(max: usize) -> Self {
        Attempts { max, started: 0 }
    }

    /// Whether another attempt may run; waits a [`backoff`] first unless it is the first.
    pub async fn begin(&mut self) -> bool {
        if self.started >= self.max {
            return false;
        }
        if self.started > 0 {
            backoff(self.started).await;
        }
        self.started += 1;
        true
    }
}

/// Whether a conditional write lost a race (its condition failed or its transaction
/// conflicted with another): the caller retries. Other errors stay errors.
pub fn lost_race(result: Result<(), DynamoError>) -> Result<bool, DynamoError> {
    match result {
        Ok(()) => Ok(false),
        Err(DynamoError::ConditionFailed | DynamoError::Conflict) => Ok(true),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_at_most_max_attempts() {
        let mut attempts = Attempts::new(3);
        let mut runs = 0;
        while attempts.begin().await {
            runs += 1;
        }
        assert_eq!(runs, 3);
        assert!(!attempts.begin().await);
    }

    #[test]
    fn only_condition_failures_and_conflicts_are_lost_races() {
        assert!(matches!(lost_race(Ok(())), Ok(false)));
        assert!(matches!(
            lost_race(Err(DynamoError::ConditionFailed)),
            Ok(true)
        ));
        assert!(matches!(lost_race(Err(DynamoError::Conflict)), Ok(true)));
        assert!(lost_race(Err(DynamoError::Other("x".into()))).is_err());
    }
}
