//! Simulated time: scenario durations (startup delays, preStop sleeps, grace periods) are
//! divided by one factor so tests run fast while keeping every ordering intact.

use std::time::Duration;

/// How much faster than real time the simulated cluster runs.
///
/// A factor of 10 turns a 30 s grace period into 3 s of wall time. Timestamps the API writes
/// (creation, deletion) stay in real time; only the waits the simulation itself performs scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeScale {
    factor: f64,
}

impl TimeScale {
    /// Real time: every simulated second takes one second.
    pub const REAL: TimeScale = TimeScale { factor: 1.0 };

    /// A scale that runs `factor` times faster than real time; `factor` must be finite and > 0.
    pub fn new(factor: f64) -> Result<Self, String> {
        if factor.is_finite() && factor > 0.0 {
            Ok(TimeScale { factor })
        } else {
            Err(format!(
                "time scale must be a finite number > 0, got {factor}"
            ))
        }
    }

    /// The wall-clock wait for a simulated duration.
    pub fn real(self, simulated: Duration) -> Duration {
        simulated.div_f64(self.factor)
    }

    /// How many times faster than real time this scale runs.
    pub fn factor(self) -> f64 {
        self.factor
    }
}

impl Default for TimeScale {
    fn default() -> Self {
        TimeScale::REAL
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_durations_down() {
        let scale = TimeScale::new(10.0).unwrap();
        assert_eq!(scale.real(Duration::from_secs(30)), Duration::from_secs(3));
    }

    #[test]
    fn rejects_non_positive_factors() {
        assert!(TimeScale::new(0.0).is_err());
        assert!(TimeScale::new(f64::NAN).is_err());
    }
}
