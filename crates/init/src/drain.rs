//! When a drain ends: after the fixed delay, or, draining until quiet, once the minimum has
//! passed and no new connection has come for the quiet period — at the latest at the maximum
//! (the drain delay). Each end is logged with what was seen, relative to the trigger.

use std::time::{Duration, Instant};

use crate::log;
use crate::quiet::{Seen, Watch};

/// A drain under way.
pub struct Drain {
    /// When the trigger came (the log reports times from it).
    triggered: Instant,
    /// When the drain's clock started (after the on-drain call).
    started: Instant,
    /// The fixed delay's end, or the maximum's with drain-until-quiet.
    until: Instant,
    /// Watching for quiet, when asked and possible.
    quiet: Option<Quiet>,
}

/// Drain-until-quiet's state.
pub struct Quiet {
    watch: Watch,
    period: Duration,
    min: Duration,
    trouble_logged: bool,
}

impl Quiet {
    /// Ends the drain after `period` without a new connection seen by `watch`, at least
    /// `min` after the drain's start.
    pub fn new(watch: Watch, period: Duration, min: Duration) -> Quiet {
        Quiet {
            watch,
            period,
            min,
            trouble_logged: false,
        }
    }

    /// When the drain may end given what has been seen.
    fn end(&self, started: Instant, seen: &Seen) -> Instant {
        let quiet_from = seen.last.map_or(started, |l| l.max(started));
        (started + self.min).max(quiet_from + self.period)
    }
}

/// Seconds with one decimal, as the drain's log lines report them.
fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

impl Drain {
    /// A drain starting now, lasting `delay` (the maximum, with `quiet`).
    pub fn new(triggered: Instant, delay: Duration, quiet: Option<Quiet>) -> Drain {
        let started = Instant::now();
        Drain {
            triggered,
            started,
            until: started + delay,
            quiet,
        }
    }

    /// When to look again: the earliest the drain can end from what is known now (new
    /// connections only move it later).
    pub fn next_check(&self) -> Instant {
        self.quiet.as_ref().map_or(self.until, |q| {
            q.end(self.started, &q.watch.seen()).min(self.until)
        })
    }

    /// Whether the drain is over at `now`, and the log line that says why.
    pub fn over(&mut self, now: Instant) -> Option<String> {
        let Some(q) = self.quiet.as_mut() else {
            return (now >= self.until).then(|| "drain delay over".to_string());
        };
        let seen = q.watch.seen();
        if let Some(t) = &seen.trouble
            && !q.trouble_logged
        {
            log::phase(&format!("{t}: counted as traffic"));
            q.trouble_logged = true;
        }
        let last = match seen.last {
            Some(l) => format!(
                "last new connection {} after the trigger ({} during the drain)",
                secs(l.saturating_duration_since(self.triggered)),
                seen.count
            ),
            None => "no new connection after the trigger".to_string(),
        };
        let at = secs(now.saturating_duration_since(self.triggered));
        if now >= q.end(self.started, &seen) {
            Some(format!(
                "{last}; quiet for {}; stop signal at {at}",
                humantime::format_duration(q.period)
            ))
        } else if now >= self.until {
            Some(format!(
                "maximum drain delay {} reached; {last}; stop signal at {at}",
                humantime::format_duration(self.until - self.started)
            ))
        } else {
            None
        }
    }
}
