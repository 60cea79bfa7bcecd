//! Retry backoff with jitter (omni-box's defaults).

use std::time::Duration;

use crate::error::ValidationError;

/// How randomness is added to the exponential delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// No randomness.
    None,
    /// Uniform in `[0, delay]`.
    Full,
    /// Uniform in `[delay/2, delay]` (omni-box's handler default).
    #[default]
    Equal,
}

/// Exponential backoff `min(cap, base · 2^attempt)` with jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    jitter: Jitter,
}

impl Default for Backoff {
    /// Base 10 s, cap 1 h, equal jitter: first failure 5–10 s, then 10–20 s, ...
    fn default() -> Self {
        Self {
            base: Duration::from_secs(10),
            cap: Duration::from_secs(3600),
            jitter: Jitter::Equal,
        }
    }
}

impl Backoff {
    /// A backoff with the given base and cap.
    pub fn new(base: Duration, cap: Duration, jitter: Jitter) -> Result<Self, ValidationError> {
        if cap.is_zero() {
            return Err(ValidationError::OutOfRange {
                field: "backoff cap",
                reason: "must be positive".into(),
            });
        }
        Ok(Self { base, cap, jitter })
    }

    /// A backoff that always retries at once (base 0).
    pub fn immediate() -> Self {
        Self {
            base: Duration::ZERO,
            cap: Duration::from_secs(1),
            jitter: Jitter::None,
        }
    }

    /// The un-jittered delay after `attempts` counted failures.
    pub fn ceiling(&self, attempts: u32) -> Duration {
        let factor = 2u32.checked_pow(attempts.min(31)).unwrap_or(u32::MAX);
        self.base
            .checked_mul(factor)
            .unwrap_or(self.cap)
            .min(self.cap)
    }

    /// The delay before the next try, given the attempts made before this failure.
    pub fn delay(&self, attempts: u32) -> Duration {
        let d = self.ceiling(attempts);
        match self.jitter {
            Jitter::None => d,
            Jitter::Full => d.mul_f64(fastrand::f64()),
            Jitter::Equal => d / 2 + (d / 2).mul_f64(fastrand::f64()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_jitter_stays_in_its_band() {
        let b = Backoff::default();
        for attempts in 0..8 {
            let hi = b.ceiling(attempts);
            for _ in 0..200 {
                let d = b.delay(attempts);
                assert!(
                    d >= hi / 2 && d <= hi,
                    "{d:?} not in [{:?}, {hi:?}]",
                    hi / 2
                );
            }
        }
        assert_eq!(b.ceiling(0), Duration::from_secs(10));
        assert_eq!(b.ceiling(3), Duration::from_secs(80));
        assert_eq!(b.ceiling(100), Duration::from_secs(3600));
    }

    #[test]
    fn immediate_is_zero() {
        assert_eq!(Backoff::immediate().delay(5), Duration::ZERO);
    }
}
