//! Cron schedules of DAGs (Dagu `schedule:`): parsing an expression with its time zone and
//! computing fire times.
//!
//! An expression has 5 fields (`min hour dom month dow`, as in Dagu and crontab) or 6 with a
//! leading seconds field, and may start with `CRON_TZ=<IANA zone>`. Its zone is, in order: its
//! own `CRON_TZ=`, the DAG's `timezone:`, the coordinator's default, UTC.

use std::str::FromStr;

use chrono::{TimeZone, Utc};
use chrono_tz::Tz;

/// One parsed cron expression of a DAG's `schedule:`.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    text: String,
    tz: Tz,
    schedule: cron::Schedule,
}

/// Parses an IANA time zone name (`Europe/Paris`, `UTC`).
///
/// # Errors
/// A message naming the zone and the fix, when it is not a known IANA zone.
pub fn parse_timezone(name: &str) -> Result<Tz, String> {
    Tz::from_str(name.trim()).map_err(|_| {
        format!("\"{name}\" is not an IANA time zone; use a name such as UTC or Europe/Paris")
    })
}

impl CronSchedule {
    /// Parses `text` (`[CRON_TZ=<zone>] <5 or 6 fields>`); `default_tz` applies when the
    /// expression names no zone (`None`: UTC).
    ///
    /// # Errors
    /// A message for people naming what is wrong and the fix.
    pub fn parse(text: &str, default_tz: Option<&str>) -> Result<Self, String> {
        let trimmed = text.trim();
        let (tz, expr) = match trimmed.strip_prefix("CRON_TZ=") {
            Some(rest) => {
                let (zone, expr) = rest.split_once(char::is_whitespace).ok_or_else(|| {
                    format!("\"{text}\" has CRON_TZ= but no cron fields after the zone")
                })?;
                (parse_timezone(zone)?, expr.trim())
            }
            None => (
                default_tz
                    .map(parse_timezone)
                    .transpose()?
                    .unwrap_or(Tz::UTC),
                trimmed,
            ),
        };
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let six = match fields.len() {
            5 => format!("0 {}", fields.join(" ")),
            6 => fields.join(" "),
            n => {
                return Err(format!(
                    "\"{text}\" has {n} fields; write 5 (minute hour day-of-month month \
                     day-of-week) or 6 with a leading seconds field"
                ))
            }
        };
        let schedule = cron::Schedule::from_str(&six)
            .map_err(|e| format!("\"{text}\" is not a valid cron expression: {e}"))?;
        Ok(Self {
            text: trimmed.to_string(),
            tz,
            schedule,
        })
    }

    /// The expression as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The time zone it fires in.
    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The first fire time strictly after `after_ms` (ms since the epoch), if any.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        let after = Utc
            .timestamp_millis_opt(after_ms as i64)
            .single()?
            .with_timezone(&self.tz);
        self.schedule
            .after(&after)
            .next()
            .map(|t| t.timestamp_millis().max(0) as u64)
    }
}
