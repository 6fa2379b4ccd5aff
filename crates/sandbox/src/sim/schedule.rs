//! CronJob schedules and the clock they run on.
//!
//! Schedules are parsed by the `croner` crate rather than our own parser: it reads the five
//! fields of Vixie cron that Kubernetes accepts (upstream parses with robfig/cron's
//! `ParseStandard`), ranges, steps, names (`JAN`, `MON`) and the `@hourly`-style macros, with
//! day-of-month and day-of-week OR-ed as Vixie cron does, and it works on `jiff` times, which
//! the rest of the sandbox already uses. Seconds and years are refused, as upstream refuses
//! them.
//!
//! The clock is the simulation's: with a [`TimeScale`] of 60 a simulated minute passes in a
//! wall-clock second from the moment the controller starts, so `*/1 * * * *` fires every
//! second; with the default real scale it is the wall clock. The schedule check itself
//! ([`most_recent`]) takes the instant to check at, so a test drives it without waiting.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{SignedDuration, Timestamp, Zoned};

use crate::time::TimeScale;

/// Why a schedule cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("not a five-field cron expression: {reason}")]
pub struct ScheduleError {
    reason: String,
}

/// A parsed `spec.schedule`.
pub struct Schedule(Cron);

impl Schedule {
    /// Parses a schedule as upstream accepts it (five fields or a macro; `TZ=` prefixes and
    /// `spec.timeZone` other than UTC are not supported).
    pub fn parse(schedule: &str) -> Result<Schedule, ScheduleError> {
        let fail = |reason: String| ScheduleError { reason };
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        parser
            .parse(schedule)
            .map(Schedule)
            .map_err(|e| fail(e.to_string()))
    }

    /// The latest scheduled time after `earliest` and at or before `now`: the run that is due
    /// (upstream's `mostRecentScheduleTime`; missed earlier runs are skipped, as upstream skips
    /// them once it has found the latest).
    pub fn most_recent(&self, earliest: Timestamp, now: Timestamp) -> Option<Timestamp> {
        let at = self
            .0
            .find_previous_occurrence(&Zoned::new(now, TimeZone::UTC), true)
            .ok()?
            .timestamp();
        (at > earliest).then_some(at)
    }

    /// The first scheduled time after `now`.
    pub fn next(&self, now: Timestamp) -> Option<Timestamp> {
        self.0
            .find_next_occurrence(&Zoned::new(now, TimeZone::UTC), false)
            .ok()
            .map(|z| z.timestamp())
    }
}

/// The simulation's clock: real time until `origin`, then `scale` times faster.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Timestamp,
    scale: TimeScale,
}

impl Clock {
    /// A clock that starts running at the scale's speed now.
    pub fn start(scale: TimeScale) -> Clock {
        Clock {
            origin: Timestamp::now(),
            scale,
        }
    }

    /// The simulated instant of the real instant `real`.
    pub fn at(&self, real: Timestamp) -> Timestamp {
        let elapsed = real.duration_since(self.origin);
        if elapsed <= SignedDuration::ZERO {
            return real;
        }
        let scaled = SignedDuration::try_from_secs_f64(elapsed.as_secs_f64() * self.scale.factor())
            .unwrap_or(SignedDuration::MAX);
        self.origin.checked_add(scaled).unwrap_or(Timestamp::MAX)
    }

    /// The simulated instant now.
    pub fn now(&self) -> Timestamp {
        self.at(Timestamp::now())
    }

    /// The wall-clock wait until the simulated instant `when`.
    pub fn wait_until(&self, when: Timestamp) -> std::time::Duration {
        let simulated = when.duration_since(self.now());
        let simulated = std::time::Duration::try_from(simulated).unwrap_or_default();
        self.scale.real(simulated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn the_due_run_is_the_latest_since_the_last_one() {
        let every_minute = Schedule::parse("*/1 * * * *").unwrap();
        let due = every_minute.most_recent(at("2026-12-01T10:00:30Z"), at("2026-12-01T10:02:10Z"));
        assert_eq!(due, Some(at("2026-12-01T10:02:00Z")));
        let none = every_minute.most_recent(at("2026-12-01T10:02:00Z"), at("2026-12-01T10:02:59Z"));
        assert_eq!(none, None, "the 10:02 run already happened");
        assert_eq!(
            every_minute.next(at("2026-12-01T10:02:00Z")),
            Some(at("2026-12-01T10:03:00Z"))
        );
        let nightly = Schedule::parse("@daily").unwrap();
        assert_eq!(
            nightly.most_recent(at("2026-11-30T00:00:00Z"), at("2026-12-01T10:00:00Z")),
            Some(at("2026-12-01T00:00:00Z"))
        );
    }

    #[test]
    fn seconds_and_nonsense_are_refused() {
        assert!(Schedule::parse("* * * * * *").is_err());
        let err = Schedule::parse("every minute").err().unwrap().to_string();
        assert!(
            err.starts_with("not a five-field cron expression: "),
            "{err}"
        );
    }

    #[test]
    fn a_scaled_clock_runs_ahead_from_its_origin() {
        let clock = Clock {
            origin: at("2026-12-01T10:00:00Z"),
            scale: TimeScale::new(60.0).unwrap(),
        };
        assert_eq!(
            clock.at(at("2026-12-01T10:00:02Z")),
            at("2026-12-01T10:02:00Z")
        );
        assert_eq!(
            clock.at(at("2026-12-01T09:00:00Z")),
            at("2026-12-01T09:00:00Z")
        );
    }
}
