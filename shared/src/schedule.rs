//! Cron schedules of DAGs (Dagu `schedule:`): parsing an expression with its time zone
//! ([`CronSchedule::parse`]) and computing which slots a scheduler tick fires ([`due_slots`]),
//! for the coordinator's scheduler loop and the `dagrid dags` listing. The expression syntax,
//! time zones, daylight saving time and catch-up rules are in docs/dag-format.md ("Cron
//! expressions").

use std::str::FromStr;

use chrono::{DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Timelike};
use chrono_tz::Tz;

/// How late (ms) a tick of the scheduler may come and still fire a slot when the DAG has no
/// `catchupWindow:`: slots in `(now - DUE_GRACE_MS, now]` fire, older missed ones do not.
/// Ticks must come more often than this (every second or so) or slots are lost.
pub const DUE_GRACE_MS: u64 = 5_000;

/// One parsed cron expression of a DAG's `schedule:`.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    text: String,
    tz: Tz,
    spec: Spec,
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
    /// Parses `text` (`[CRON_TZ=<zone>] <5 or 6 fields or a macro>`, see the module doc);
    /// `default_tz` applies when the expression names no zone: the DAG's `timezone:`, else the
    /// coordinator's default zone (`None`: UTC).
    ///
    /// # Errors
    /// A message for people naming what is wrong and the fix: the field count, a value out of
    /// range, an unknown zone or name, a range that runs backwards, an expression that never
    /// fires.
    pub fn parse(text: &str, default_tz: Option<&str>) -> Result<Self, String> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err("the cron expression is empty; write 5 fields (minute hour \
                        day-of-month month day-of-week) such as \"0 9 * * 1-5\", or a macro \
                        such as @daily"
                .to_string());
        }
        let zone_prefix = trimmed
            .strip_prefix("CRON_TZ=")
            .or_else(|| trimmed.strip_prefix("TZ="));
        let (tz, expr) = match zone_prefix {
            Some(rest) => {
                let (zone, expr) = rest.split_once(char::is_whitespace).ok_or_else(|| {
                    format!("\"{trimmed}\" has CRON_TZ= but no cron fields after the zone")
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
        let spec = if expr.starts_with('@') {
            Spec::from_macro(expr).map_err(|e| format!("\"{trimmed}\": {e}"))?
        } else {
            Spec::from_fields(trimmed, expr)?
        };
        if !spec.can_fire() {
            return Err(format!(
                "\"{trimmed}\" never fires: its months have none of its days of month \
                 (February has at most 29 days; April, June, September and November 30); \
                 pick days that exist in those months"
            ));
        }
        Ok(Self {
            text: trimmed.to_string(),
            tz,
            spec,
        })
    }

    /// The expression as written (trimmed), with its `CRON_TZ=` if any.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The time zone it fires in.
    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The first fire time strictly after `after_ms` (ms since the Unix epoch), if any before
    /// the end of chrono's calendar. Fire times are whole seconds, placed by the DST rule of
    /// the module doc.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        let after = i64::try_from(after_ms).ok()?;
        let local = DateTime::from_timestamp_millis(after)?
            .with_timezone(&self.tz)
            .naive_local();
        // Wall-clock slots map to instants in non-decreasing order and every slot up to
        // `local` maps to `after` or earlier, so the answer is the first slot after `local`
        // that maps past `after`. Only in a repeated hour (fall back) do slots after `local`
        // map before `after`: their first occurrence has passed.
        let mut cursor = local;
        loop {
            let slot = self.spec.next_slot_after(cursor)?;
            let at = first_instant_at_or_after(&self.tz, slot)?;
            if at > after {
                return u64::try_from(at).ok();
            }
            cursor = slot;
        }
    }
}

/// The earliest fire time strictly after `after_ms` of any of `schedules` (a DAG's
/// `schedule:` list), if any.
pub fn next_fire(schedules: &[CronSchedule], after_ms: u64) -> Option<u64> {
    schedules
        .iter()
        .filter_map(|s| s.next_after(after_ms))
        .min()
}

/// The latest fire time strictly before `before_ms` of any of `schedules`, looking back at most
/// 400 days (Dagu's `computePrevExecTime`, for `skip_if_successful`); `None` when there is
/// none. The window doubles from one second, so a frequent schedule costs few steps.
pub fn prev_fire(schedules: &[CronSchedule], before_ms: u64) -> Option<u64> {
    const MAX_SPAN_MS: u64 = 400 * 24 * 3600 * 1000;
    let end = before_ms.checked_sub(1)?;
    let mut span = 1_000u64;
    loop {
        let start = end.saturating_sub(span);
        if let Some(last) = slots_between(schedules, start, end).pop() {
            return Some(last);
        }
        if start == 0 || span >= MAX_SPAN_MS {
            return None;
        }
        span = span.saturating_mul(2);
    }
}

/// The next `n` fire times strictly after `after_ms` of `schedules` together, ascending, a
/// slot that two expressions share counted once (for the `dagrid dags` listing). Fewer when
/// the schedules run out.
pub fn next_fires(schedules: &[CronSchedule], after_ms: u64, n: usize) -> Vec<u64> {
    let mut heads: Vec<Option<u64>> = schedules.iter().map(|s| s.next_after(after_ms)).collect();
    let mut out = Vec::with_capacity(n.min(1024));
    while out.len() < n {
        let Some(t) = heads.iter().flatten().copied().min() else {
            break;
        };
        out.push(t);
        for (head, schedule) in heads.iter_mut().zip(schedules) {
            if *head == Some(t) {
                *head = schedule.next_after(t);
            }
        }
    }
    out
}

/// The slot times (ms since the epoch, ascending, each once across `schedules`) that a tick
/// of the scheduler at `now_ms` should fire for one DAG.
///
/// These are the slots in `(max(last, now_ms - lookback), now_ms]`, where:
/// - `last` is `last_fired_ms`, the latest slot fired before (the slot time returned by an
///   earlier call, not when it was dispatched), so no slot fires twice; `None` (never fired)
///   counts as `now_ms - DUE_GRACE_MS`: no history is caught up;
/// - `lookback` is [`DUE_GRACE_MS`] without a catch-up window, so slots missed while the
///   scheduler was down do not fire, or Dagu's `catchupWindow:` (`catchup_window_ms`, taken
///   as at least the grace), so missed slots that recent do.
///
/// At most `max` slots are returned, the latest ones. The cost grows with the slots in the
/// window that holds those `max`, not with the whole catch-up window.
pub fn due_slots(
    schedules: &[CronSchedule],
    last_fired_ms: Option<u64>,
    now_ms: u64,
    catchup_window_ms: Option<u64>,
    max: usize,
) -> Vec<u64> {
    if max == 0 || schedules.is_empty() {
        return Vec::new();
    }
    let lookback = catchup_window_ms.map_or(DUE_GRACE_MS, |w| w.max(DUE_GRACE_MS));
    let from = last_fired_ms
        .unwrap_or(now_ms.saturating_sub(DUE_GRACE_MS))
        .max(now_ms.saturating_sub(lookback));
    if from >= now_ms {
        return Vec::new();
    }
    // Widen the window back from `now_ms` until it holds `max` slots or reaches `from`.
    let mut span = DUE_GRACE_MS;
    loop {
        let start = now_ms.saturating_sub(span).max(from);
        let mut slots = slots_between(schedules, start, now_ms);
        if slots.len() >= max || start == from {
            let excess = slots.len().saturating_sub(max);
            slots.drain(..excess);
            return slots;
        }
        span = span.saturating_mul(2);
    }
}

/// Every slot of `schedules` in `(start_ms, end_ms]`, ascending, each once.
fn slots_between(schedules: &[CronSchedule], start_ms: u64, end_ms: u64) -> Vec<u64> {
    let mut out = Vec::new();
    for schedule in schedules {
        let mut t = start_ms;
        while let Some(next) = schedule.next_after(t) {
            if next > end_ms {
                break;
            }
            out.push(next);
            t = next;
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The first instant (ms since the epoch) at which the wall clock of `tz` reads `local` or
/// later: `local` itself when it occurs once, its first occurrence when the clock is set back
/// over it, the end of the gap when the clock skips it.
fn first_instant_at_or_after(tz: &Tz, local: NaiveDateTime) -> Option<i64> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.timestamp_millis()),
        LocalResult::Ambiguous(a, b) => Some(a.min(b).timestamp_millis()),
        LocalResult::None => {
            // In a gap: binary search, in whole seconds (zone transitions are), for the first
            // instant whose wall clock reads `local` or later. UTC offsets lie within
            // -12h..+14h, so the clock reads before `local` at `lo` and after it at `hi`.
            const MARGIN_S: i64 = 15 * 3600;
            let guess = local.and_utc().timestamp();
            let (mut lo, mut hi) = (guess - MARGIN_S, guess + MARGIN_S);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                let wall = DateTime::from_timestamp(mid, 0)?
                    .with_timezone(tz)
                    .naive_local();
                if wall >= local {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            hi.checked_mul(1000)
        }
    }
}

/// The parsed fields as bit sets (bit `n` set: value `n` allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Spec {
    seconds: u64,
    minutes: u64,
    hours: u64,
    /// Bits 1..=31.
    days_of_month: u64,
    /// Bits 1..=12.
    months: u64,
    /// Bits 0..=6, 0 = Sunday (crontab's 7 folded onto 0).
    days_of_week: u64,
    /// Both day fields restricted: a day matches if either matches (crontab(5)).
    day_or: bool,
}

/// How one field is written and what it allows.
struct FieldKind {
    name: &'static str,
    /// Smallest and largest value written.
    min: u32,
    max: u32,
    /// Largest value of `*` and of `a/n` (day-of-week: 6, though 7 may be written).
    star_max: u32,
    /// Names of `min`, `min + 1`, … (three letters, matched in any case).
    names: &'static [&'static str],
    /// What to write, for messages.
    allowed: &'static str,
}

const SECOND: FieldKind = FieldKind {
    name: "second",
    min: 0,
    max: 59,
    star_max: 59,
    names: &[],
    allowed: "0-59",
};
const MINUTE: FieldKind = FieldKind {
    name: "minute",
    allowed: "0-59",
    ..SECOND
};
const HOUR: FieldKind = FieldKind {
    name: "hour",
    max: 23,
    star_max: 23,
    allowed: "0-23",
    ..SECOND
};
const DAY_OF_MONTH: FieldKind = FieldKind {
    name: "day-of-month",
    min: 1,
    max: 31,
    star_max: 31,
    names: &[],
    allowed: "1-31",
};
const MONTH: FieldKind = FieldKind {
    name: "month",
    min: 1,
    max: 12,
    star_max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
    allowed: "1-12 or JAN-DEC",
};
const DAY_OF_WEEK: FieldKind = FieldKind {
    name: "day-of-week",
    min: 0,
    max: 7,
    star_max: 6,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
    allowed: "0-7 (0 and 7 are Sunday, 1 is Monday) or SUN-SAT",
};

const SYNTAX_HINT: &str = "a value, a range (1-5), a list (1,15), a step (*/5, 0-30/10) or *";

/// Bits `lo..=hi`.
const fn bits(lo: u32, hi: u32) -> u64 {
    (u64::MAX >> (63 - hi)) & (u64::MAX << lo)
}

/// The smallest set bit of `mask` at or above `from`.
fn next_bit(mask: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let masked = mask & (u64::MAX << from);
    (masked != 0).then(|| masked.trailing_zeros())
}

/// The set bits of `mask` at or above `from`, ascending.
fn bits_from(mask: u64, from: u32) -> impl Iterator<Item = u32> {
    let mut next = next_bit(mask, from);
    std::iter::from_fn(move || {
        let current = next?;
        next = next_bit(mask, current + 1);
        Some(current)
    })
}

fn days_in_month(year: i32, month: u32) -> u32 {
    let (y, m) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    NaiveDate::from_ymd_opt(y, m, 1)
        .and_then(|d| d.pred_opt())
        .map_or(31, |d| d.day())
}

impl Spec {
    /// The fields of `expr` (5 or 6); `text` is the whole expression, for messages.
    fn from_fields(text: &str, expr: &str) -> Result<Self, String> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let (second, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                let year = if n == 7 {
                    " (a trailing year field is not supported)"
                } else {
                    ""
                };
                return Err(format!(
                    "\"{text}\" has {n} fields{year}; write 5 (minute hour day-of-month month \
                     day-of-week), 6 with a leading seconds field, or a macro such as @daily"
                ));
            }
        };
        let field = |value: &str, kind: &FieldKind| {
            parse_field(value, kind).map_err(|e| format!("\"{text}\": {e}"))
        };
        let (seconds, _) = field(second, &SECOND)?;
        let (minutes, _) = field(rest[0], &MINUTE)?;
        let (hours, _) = field(rest[1], &HOUR)?;
        let (days_of_month, dom_star) = field(rest[2], &DAY_OF_MONTH)?;
        let (months, _) = field(rest[3], &MONTH)?;
        let (dow, dow_star) = field(rest[4], &DAY_OF_WEEK)?;
        // crontab's 7 is Sunday, like 0.
        let days_of_week = (dow & bits(0, 6)) | ((dow >> 7) & 1);
        Ok(Self {
            seconds,
            minutes,
            hours,
            days_of_month,
            months,
            days_of_week,
            day_or: !dom_star && !dow_star,
        })
    }

    /// `@yearly` and friends.
    fn from_macro(expr: &str) -> Result<Self, String> {
        let daily = Self {
            seconds: 1,
            minutes: 1,
            hours: 1,
            days_of_month: bits(1, 31),
            months: bits(1, 12),
            days_of_week: bits(0, 6),
            day_or: false,
        };
        Ok(match expr.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => Self {
                days_of_month: 1 << 1,
                months: 1 << 1,
                ..daily
            },
            "@monthly" => Self {
                days_of_month: 1 << 1,
                ..daily
            },
            "@weekly" => Self {
                days_of_week: 1,
                ..daily
            },
            "@daily" | "@midnight" => daily,
            "@hourly" => Self {
                hours: bits(0, 23),
                ..daily
            },
            _ => {
                let every = if expr.to_ascii_lowercase().starts_with("@every") {
                    "; for @every write a step, such as */10 * * * * for every 10 minutes"
                } else {
                    ""
                };
                return Err(format!(
                    "{expr} is not a macro dagrid knows; use @yearly, @annually, @monthly, \
                     @weekly, @daily, @midnight or @hourly, or 5 fields{every}"
                ));
            }
        })
    }

    /// Whether some day of some year matches (`0 0 30 2 *` never does).
    fn can_fire(&self) -> bool {
        if self.day_or {
            return self.days_of_week != 0;
        }
        // Day-of-week is `*` or day-of-month is (then all 31 bits are set): a month in the
        // set needs a day in the set that it has (February: 29 in leap years).
        bits_from(self.months, 1).any(|m| {
            let longest = if m == 2 { 29 } else { days_in_month(2001, m) };
            next_bit(self.days_of_month, 1).is_some_and(|d| d <= longest)
        })
    }

    fn day_matches(&self, date: NaiveDate) -> bool {
        let dom = self.days_of_month >> date.day() & 1 == 1;
        let dow = self.days_of_week >> date.weekday().num_days_from_sunday() & 1 == 1;
        if self.day_or {
            dom || dow
        } else {
            dom && dow
        }
    }

    /// The first matching `(hour, minute, second)` of a day at or after `from`.
    fn first_time_from(&self, (h0, m0, s0): (u32, u32, u32)) -> Option<(u32, u32, u32)> {
        for h in bits_from(self.hours, h0) {
            let m_from = if h == h0 { m0 } else { 0 };
            for m in bits_from(self.minutes, m_from) {
                let s_from = if h == h0 && m == m0 { s0 } else { 0 };
                if let Some(s) = next_bit(self.seconds, s_from) {
                    return Some((h, m, s));
                }
            }
        }
        None
    }

    /// The first wall-clock slot strictly after `after`, ignoring time zones.
    fn next_slot_after(&self, after: NaiveDateTime) -> Option<NaiveDateTime> {
        let start = after
            .with_nanosecond(0)?
            .checked_add_signed(chrono::Duration::seconds(1))?;
        let mut date = start.date();
        let mut from = (start.hour(), start.minute(), start.second());
        // A day matches at least every 8 years (29 February around 2100), see `can_fire`.
        let limit = date.checked_add_days(chrono::Days::new(9 * 366))?;
        while date <= limit {
            if self.months >> date.month() & 1 == 0 {
                date = if date.month() == 12 {
                    NaiveDate::from_ymd_opt(date.year() + 1, 1, 1)?
                } else {
                    NaiveDate::from_ymd_opt(date.year(), date.month() + 1, 1)?
                };
                from = (0, 0, 0);
                continue;
            }
            if self.day_matches(date) {
                if let Some((h, m, s)) = self.first_time_from(from) {
                    return date.and_hms_opt(h, m, s);
                }
            }
            date = date.succ_opt()?;
            from = (0, 0, 0);
        }
        None
    }
}

/// One field: its bit set, and whether it is unrestricted (`*` or `?`, no step above 1).
fn parse_field(text: &str, kind: &FieldKind) -> Result<(u64, bool), String> {
    let mut set = 0u64;
    let mut star = false;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(format!(
                "{} \"{text}\" has an empty list item; separate values with single commas, as \
                 in 1,15",
                kind.name
            ));
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => match step.parse::<u32>() {
                Ok(n) if n >= 1 => (range, Some(n)),
                _ => {
                    return Err(format!(
                        "{} \"{item}\" has step \"{step}\"; a step is a whole number of 1 or \
                         more, as in */5",
                        kind.name
                    ))
                }
            },
            None => (item, None),
        };
        let (lo, hi) = if range == "*" || range == "?" {
            star |= step.unwrap_or(1) == 1;
            (kind.min, kind.star_max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (lo, hi) = (value(a, kind)?, value(b, kind)?);
            if lo > hi {
                return Err(format!(
                    "{} range {range} runs backwards; write the smaller bound first (1-5), or \
                     a list for a range that wraps around (5,6,0,1)",
                    kind.name
                ));
            }
            (lo, hi)
        } else {
            let v = value(range, kind)?;
            // `a/n` means `a-<max>/n`.
            (
                v,
                if step.is_some() {
                    kind.star_max.max(v)
                } else {
                    v
                },
            )
        };
        for v in (lo..=hi).step_by(step.unwrap_or(1) as usize) {
            set |= 1 << v;
        }
    }
    Ok((set, star))
}

/// One value of a field: a number or a name, within the field's range.
fn value(text: &str, kind: &FieldKind) -> Result<u32, String> {
    if let Ok(v) = text.parse::<u32>() {
        if v < kind.min || v > kind.max {
            return Err(format!(
                "{} {v} is out of range; use {}",
                kind.name, kind.allowed
            ));
        }
        return Ok(v);
    }
    if let Some(i) = kind.names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
        return Ok(kind.min + i as u32);
    }
    let what = if kind.names.is_empty() {
        "a number"
    } else {
        "a number or a three-letter name"
    };
    Err(format!(
        "{} \"{text}\" is not {what}; write {SYNTAX_HINT}, with values {} (Quartz's L, W and # \
         are not supported)",
        kind.name, kind.allowed
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Timelike, Utc, Weekday};
    use proptest::prelude::*;

    /// ms since the epoch of a UTC date and time.
    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> u64 {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .unwrap()
            .timestamp_millis() as u64
    }

    fn parse(text: &str) -> CronSchedule {
        CronSchedule::parse(text, None).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn err(text: &str) -> String {
        CronSchedule::parse(text, None).expect_err(text)
    }

    /// The wall-clock times in `tz` of the next `n` fires after `after`.
    fn wall(s: &CronSchedule, tz: Tz, after: u64, n: usize) -> Vec<String> {
        next_fires(std::slice::from_ref(s), after, n)
            .into_iter()
            .map(|t| {
                DateTime::from_timestamp_millis(t as i64)
                    .unwrap()
                    .with_timezone(&tz)
                    .format("%a %Y-%m-%d %H:%M:%S %Z")
                    .to_string()
            })
            .collect()
    }

    fn weekdays(s: &CronSchedule, after: u64, n: usize) -> Vec<Weekday> {
        next_fires(std::slice::from_ref(s), after, n)
            .into_iter()
            .map(|t| DateTime::from_timestamp_millis(t as i64).unwrap().weekday())
            .collect()
    }

    // 2026-06-01 is a Monday.
    const MONDAY: (i32, u32, u32) = (2026, 6, 1);

    fn monday_midnight() -> u64 {
        utc(MONDAY.0, MONDAY.1, MONDAY.2, 0, 0, 0)
    }

    #[test]
    fn weekdays_are_numbered_as_in_crontab() {
        use Weekday::*;
        let s = parse("0 9 * * 1-5");
        assert_eq!(
            weekdays(&s, monday_midnight(), 6),
            [Mon, Tue, Wed, Thu, Fri, Mon]
        );
        assert_eq!(
            s.next_after(monday_midnight()),
            Some(utc(2026, 6, 1, 9, 0, 0))
        );
        for sunday in ["0 0 * * 0", "0 0 * * 7", "0 0 * * SUN", "0 0 * * sun"] {
            assert_eq!(weekdays(&parse(sunday), monday_midnight(), 2), [Sun, Sun]);
        }
        assert_eq!(
            weekdays(&parse("0 0 * * MON-FRI"), monday_midnight(), 5),
            [Tue, Wed, Thu, Fri, Mon]
        );
        assert_eq!(
            weekdays(&parse("0 0 * * 1,3,5"), monday_midnight(), 3),
            [Wed, Fri, Mon]
        );
        // */2 over 0-6: Sunday, Tuesday, Thursday, Saturday.
        assert_eq!(
            weekdays(&parse("0 0 * * */2"), monday_midnight(), 4),
            [Tue, Thu, Sat, Sun]
        );
        assert_eq!(
            weekdays(&parse("0 0 * * 1-5/2"), monday_midnight(), 3),
            [Wed, Fri, Mon]
        );
        // a/n runs to Saturday; 7 in a range is Sunday.
        assert_eq!(
            weekdays(&parse("0 0 * * 4/2"), monday_midnight(), 3),
            [Thu, Sat, Thu]
        );
        assert_eq!(
            weekdays(&parse("0 0 * * 5-7"), monday_midnight(), 3),
            [Fri, Sat, Sun]
        );
        assert_eq!(
            weekdays(&parse("0 0 * * FRI,sat,Sun"), monday_midnight(), 3),
            [Fri, Sat, Sun]
        );
        assert_eq!(
            weekdays(&parse("0 0 * * 0-7"), monday_midnight(), 7).len(),
            7
        );
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_are_restricted() {
        // The 1st and 15th, and every Monday.
        let s = parse("0 0 1,15 * MON");
        let fires = next_fires(std::slice::from_ref(&s), utc(2026, 6, 1, 12, 0, 0), 5);
        assert_eq!(
            fires,
            [
                utc(2026, 6, 8, 0, 0, 0),
                utc(2026, 6, 15, 0, 0, 0),
                utc(2026, 6, 22, 0, 0, 0),
                utc(2026, 6, 29, 0, 0, 0),
                utc(2026, 7, 1, 0, 0, 0),
            ]
        );
        // */2 restricts day-of-month (as in robfig/cron): odd days or Sundays.
        let s = parse("0 0 */2 * 0");
        let fires = next_fires(std::slice::from_ref(&s), utc(2026, 6, 1, 12, 0, 0), 3);
        assert_eq!(
            fires,
            [
                utc(2026, 6, 3, 0, 0, 0),
                utc(2026, 6, 5, 0, 0, 0),
                utc(2026, 6, 7, 0, 0, 0), // an odd day and a Sunday, once
            ]
        );
        // With one of them *, only the other counts.
        let s = parse("0 0 13 * *");
        assert_eq!(
            s.next_after(utc(2026, 6, 1, 0, 0, 0)),
            Some(utc(2026, 6, 13, 0, 0, 0))
        );
        let s = parse("0 0 ? * FRI");
        assert_eq!(
            s.next_after(utc(2026, 6, 1, 0, 0, 0)),
            Some(utc(2026, 6, 5, 0, 0, 0))
        );
    }

    #[test]
    fn months_names_steps_and_rare_days() {
        let s = parse("0 12 1 JAN,jul *");
        assert_eq!(
            next_fires(std::slice::from_ref(&s), utc(2026, 3, 1, 0, 0, 0), 2),
            [utc(2026, 7, 1, 12, 0, 0), utc(2027, 1, 1, 12, 0, 0)]
        );
        // 29 February: the next is 8 years away across 2100.
        let s = parse("0 0 29 2 *");
        assert_eq!(
            s.next_after(utc(2096, 3, 1, 0, 0, 0)),
            Some(utc(2104, 2, 29, 0, 0, 0))
        );
        // 31st: months without one are skipped.
        let s = parse("0 0 31 * *");
        assert_eq!(
            next_fires(std::slice::from_ref(&s), utc(2026, 4, 1, 0, 0, 0), 2),
            [utc(2026, 5, 31, 0, 0, 0), utc(2026, 7, 31, 0, 0, 0)]
        );
        let s = parse("10/20 8-9 * * *");
        assert_eq!(
            wall(&s, Tz::UTC, utc(2026, 6, 1, 0, 0, 0), 4),
            [
                "Mon 2026-06-01 08:10:00 UTC",
                "Mon 2026-06-01 08:30:00 UTC",
                "Mon 2026-06-01 08:50:00 UTC",
                "Mon 2026-06-01 09:10:00 UTC",
            ]
        );
    }

    #[test]
    fn six_fields_lead_with_seconds() {
        let s = parse("*/5 * * * * *");
        let start = utc(2026, 6, 1, 10, 0, 0) + 1_500;
        assert_eq!(
            next_fires(std::slice::from_ref(&s), start, 3),
            [
                utc(2026, 6, 1, 10, 0, 5),
                utc(2026, 6, 1, 10, 0, 10),
                utc(2026, 6, 1, 10, 0, 15)
            ]
        );
        let s = parse("30 0 9 * * 1-5");
        assert_eq!(
            s.next_after(monday_midnight()),
            Some(utc(2026, 6, 1, 9, 0, 30))
        );
        // 5 fields fire at second 0, strictly after `after`, whatever its milliseconds.
        let s = parse("* * * * *");
        let t = utc(2026, 6, 1, 10, 0, 0);
        assert_eq!(s.next_after(t - 1), Some(t));
        assert_eq!(s.next_after(t), Some(t + 60_000));
        assert_eq!(s.next_after(t + 999), Some(t + 60_000));
    }

    #[test]
    fn macros() {
        let after = utc(2026, 6, 3, 10, 30, 0); // a Wednesday
        let cases = [
            ("@hourly", utc(2026, 6, 3, 11, 0, 0)),
            ("@daily", utc(2026, 6, 4, 0, 0, 0)),
            ("@midnight", utc(2026, 6, 4, 0, 0, 0)),
            ("@weekly", utc(2026, 6, 7, 0, 0, 0)),
            ("@monthly", utc(2026, 7, 1, 0, 0, 0)),
            ("@yearly", utc(2027, 1, 1, 0, 0, 0)),
            ("@annually", utc(2027, 1, 1, 0, 0, 0)),
            ("CRON_TZ=Asia/Tokyo @daily", utc(2026, 6, 3, 15, 0, 0)),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text).next_after(after), Some(want), "{text}");
        }
        assert!(err("@reboot").contains("@reboot is not a macro"));
        assert!(err("@every 5m").contains("*/10 * * * *"));
    }

    #[test]
    fn zones_cron_tz_then_default_then_utc() {
        let after = utc(2026, 1, 15, 0, 0, 0); // winter: Paris is UTC+1, Tokyo UTC+9
        let own =
            CronSchedule::parse("CRON_TZ=Asia/Tokyo 0 9 * * *", Some("Europe/Paris")).unwrap();
        assert_eq!(own.timezone(), Tz::Asia__Tokyo);
        assert_eq!(own.text(), "CRON_TZ=Asia/Tokyo 0 9 * * *");
        assert_eq!(
            own.next_after(after),
            Some(utc(2026, 1, 15, 0, 0, 0) + 86_400_000)
        );
        let tz_alias = CronSchedule::parse("TZ=Asia/Tokyo 0 9 * * *", None).unwrap();
        assert_eq!(tz_alias.timezone(), Tz::Asia__Tokyo);

        let default = CronSchedule::parse("0 9 * * *", Some("Europe/Paris")).unwrap();
        assert_eq!(default.timezone(), Tz::Europe__Paris);
        assert_eq!(default.next_after(after), Some(utc(2026, 1, 15, 8, 0, 0)));

        let plain = parse("  0 9 * * *  ");
        assert_eq!(plain.timezone(), Tz::UTC);
        assert_eq!(plain.text(), "0 9 * * *");
        assert_eq!(plain.next_after(after), Some(utc(2026, 1, 15, 9, 0, 0)));
    }

    #[test]
    fn bad_input_names_the_problem_and_the_fix() {
        let cases = [
            ("", "is empty"),
            ("0 9 * *", "has 4 fields; write 5"),
            ("0 0 9 * * * 2026", "a trailing year field is not supported"),
            ("61 9 * * *", "minute 61 is out of range; use 0-59"),
            ("0 61 * * *", "hour 61 is out of range; use 0-23"),
            ("61 * * * * *", "second 61 is out of range; use 0-59"),
            ("0 24 * * *", "hour 24 is out of range; use 0-23"),
            ("0 0 0 * *", "day-of-month 0 is out of range; use 1-31"),
            (
                "0 0 * 13 *",
                "month 13 is out of range; use 1-12 or JAN-DEC",
            ),
            (
                "0 0 * * 8",
                "day-of-week 8 is out of range; use 0-7 (0 and 7 are Sunday",
            ),
            (
                "0 0 * * MOM",
                "day-of-week \"MOM\" is not a number or a three-letter name",
            ),
            ("0 0 * * MONDAY", "not a number or a three-letter name"),
            (
                "x 9 * * *",
                "minute \"x\" is not a number; write a value, a range",
            ),
            ("0 0 L * *", "Quartz's L, W and # are not supported"),
            ("0 9 * * 5-1", "day-of-week range 5-1 runs backwards"),
            (
                "*/0 * * * *",
                "has step \"0\"; a step is a whole number of 1 or more",
            ),
            ("1,,2 * * * *", "has an empty list item"),
            ("0 0 30 2 *", "never fires"),
            ("0 0 31 4,6 *", "never fires"),
            (
                "CRON_TZ=Mars/Base 0 9 * * *",
                "\"Mars/Base\" is not an IANA time zone",
            ),
            ("CRON_TZ=Europe/Paris", "no cron fields after the zone"),
        ];
        for (text, want) in cases {
            let e = err(text);
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let e = CronSchedule::parse("0 9 * * *", Some("Nowhere")).unwrap_err();
        assert!(e.contains("\"Nowhere\" is not an IANA time zone; use a name such as UTC"));
        // The expression is quoted, so a message in a list of schedules says which one.
        assert!(err("0 61 * * *").starts_with("\"0 61 * * *\": "));
        // Both restricted days fire even on a short month: the OR rule.
        assert!(CronSchedule::parse("0 0 30 2 MON", None).is_ok());
    }

    const BERLIN: Tz = Tz::Europe__Berlin;

    #[test]
    fn spring_forward_slot_fires_once_when_the_hour_is_skipped() {
        // 2026-03-29: 02:00 CET (01:00 UTC) becomes 03:00 CEST.
        let s = CronSchedule::parse("30 2 * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            wall(&s, BERLIN, utc(2026, 3, 27, 12, 0, 0), 3),
            [
                "Sat 2026-03-28 02:30:00 CET",
                "Sun 2026-03-29 03:00:00 CEST",
                "Mon 2026-03-30 02:30:00 CEST",
            ]
        );
        assert_eq!(
            s.next_after(utc(2026, 3, 28, 12, 0, 0)),
            Some(utc(2026, 3, 29, 1, 0, 0))
        );
        // Every 15 minutes: the skipped 02:00-02:45 and 03:00 fire once, at 03:00 CEST.
        let s = CronSchedule::parse("*/15 * * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            wall(&s, BERLIN, utc(2026, 3, 29, 0, 30, 0), 4),
            [
                "Sun 2026-03-29 01:45:00 CET",
                "Sun 2026-03-29 03:00:00 CEST",
                "Sun 2026-03-29 03:15:00 CEST",
                "Sun 2026-03-29 03:30:00 CEST",
            ]
        );
        // Asked from inside the gap's instant, nothing fires twice.
        let at_gap = utc(2026, 3, 29, 1, 0, 0);
        assert_eq!(s.next_after(at_gap), Some(at_gap + 15 * 60_000));
    }

    #[test]
    fn fall_back_slot_fires_once_at_its_first_occurrence() {
        // 2026-10-25: 03:00 CEST (01:00 UTC) becomes 02:00 CET.
        let s = CronSchedule::parse("30 2 * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            wall(&s, BERLIN, utc(2026, 10, 24, 12, 0, 0), 2),
            [
                "Sun 2026-10-25 02:30:00 CEST",
                "Mon 2026-10-26 02:30:00 CET"
            ]
        );
        assert_eq!(
            s.next_after(utc(2026, 10, 24, 12, 0, 0)),
            Some(utc(2026, 10, 25, 0, 30, 0))
        );
        // Every 15 minutes: the second pass of 02:00-02:59 (CET) fires nothing.
        let s = CronSchedule::parse("*/15 * * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            wall(&s, BERLIN, utc(2026, 10, 25, 0, 40, 0), 3),
            [
                "Sun 2026-10-25 02:45:00 CEST",
                "Sun 2026-10-25 03:00:00 CET",
                "Sun 2026-10-25 03:15:00 CET",
            ]
        );
        // Asked from inside the second pass (02:10 CET).
        assert_eq!(
            s.next_after(utc(2026, 10, 25, 1, 10, 0)),
            Some(utc(2026, 10, 25, 2, 0, 0))
        );
    }

    #[test]
    fn dst_in_new_york_too() {
        // 2026-03-08 02:00 EST → 03:00 EDT; 2026-11-01 02:00 EDT → 01:00 EST.
        let ny = Tz::America__New_York;
        let s = CronSchedule::parse("CRON_TZ=America/New_York 30 2 * * *", None).unwrap();
        assert_eq!(
            wall(&s, ny, utc(2026, 3, 7, 12, 0, 0), 2),
            ["Sun 2026-03-08 03:00:00 EDT", "Mon 2026-03-09 02:30:00 EDT"]
        );
        let s = CronSchedule::parse("CRON_TZ=America/New_York 30 1 * * *", None).unwrap();
        assert_eq!(
            wall(&s, ny, utc(2026, 10, 31, 12, 0, 0), 2),
            ["Sun 2026-11-01 01:30:00 EDT", "Mon 2026-11-02 01:30:00 EST"]
        );
    }

    #[test]
    fn a_whole_skipped_day_and_the_ends_of_time() {
        // Samoa skipped 2011-12-30: UTC-10 until 23:59:59 on the 29th, then UTC+14.
        let apia = Tz::Pacific__Apia;
        let s = CronSchedule::parse("CRON_TZ=Pacific/Apia 0 12 * * *", None).unwrap();
        assert_eq!(
            wall(&s, apia, utc(2011, 12, 29, 0, 0, 0), 3),
            [
                "Thu 2011-12-29 12:00:00 -10",
                "Sat 2011-12-31 00:00:00 +14",
                "Sat 2011-12-31 12:00:00 +14",
            ]
        );
        // No panic nor endless search at the edges of the calendar.
        for tz in [None, Some("Pacific/Kiritimati"), Some("Etc/GMT+12")] {
            let s = CronSchedule::parse("* * * * * *", tz).unwrap();
            assert_eq!(s.next_after(u64::MAX), None);
            assert_eq!(s.next_after(i64::MAX as u64), None);
            assert!(s.next_after(0).is_some());
        }
        assert!(next_fires(&[parse("@yearly")], u64::MAX - 1, 3).is_empty());
        assert!(due_slots(&[parse("* * * * * *")], None, u64::MAX, Some(u64::MAX), 3).is_empty());
    }

    #[test]
    fn due_slots_without_catchup_fire_only_recent_slots() {
        let every_day = [parse("0 9 * * *")];
        let slot = utc(2026, 6, 2, 9, 0, 0);
        let yesterday = Some(utc(2026, 6, 1, 9, 0, 0));
        // On time, or a little late.
        assert_eq!(due_slots(&every_day, yesterday, slot, None, 10), [slot]);
        assert_eq!(
            due_slots(&every_day, yesterday, slot + 4_999, None, 10),
            [slot]
        );
        // Too late: after downtime, missed slots do not fire.
        assert!(due_slots(&every_day, yesterday, slot + DUE_GRACE_MS, None, 10).is_empty());
        let three_days_ago = Some(utc(2026, 5, 30, 9, 0, 0));
        assert!(due_slots(&every_day, three_days_ago, slot + 60_000, None, 10).is_empty());
        // Early, or already fired.
        assert!(due_slots(&every_day, yesterday, slot - 1, None, 10).is_empty());
        assert!(due_slots(&every_day, Some(slot), slot + 1_000, None, 10).is_empty());
        // Never fired: only a slot within the grace.
        assert_eq!(due_slots(&every_day, None, slot + 1_000, None, 10), [slot]);
        assert!(due_slots(&every_day, None, slot + 3_600_000, None, 10).is_empty());
        // Every second: each tick fires what came since the last.
        let every_second = [parse("* * * * * *")];
        assert_eq!(
            due_slots(&every_second, Some(slot), slot + 3_500, None, 10),
            [slot + 1_000, slot + 2_000, slot + 3_000]
        );
        assert_eq!(
            due_slots(&every_second, None, slot + 60_000, None, 100).len(),
            5,
            "never fired: the grace only"
        );
        assert!(due_slots(&[], None, slot, None, 10).is_empty());
        assert!(due_slots(&every_day, yesterday, slot, None, 0).is_empty());
    }

    #[test]
    fn due_slots_with_catchup_window_and_cap() {
        let hourly = [parse("0 * * * *")];
        let now = utc(2026, 6, 2, 12, 0, 30);
        let ten_hours_ago = Some(utc(2026, 6, 2, 2, 0, 0));
        let six_hours = Some(6 * 3_600_000);
        let hours = |hs: &[u32]| {
            hs.iter()
                .map(|&h| utc(2026, 6, 2, h, 0, 0))
                .collect::<Vec<_>>()
        };
        // (now - 6h, now]: 07:00 to 12:00.
        assert_eq!(
            due_slots(&hourly, ten_hours_ago, now, six_hours, 100),
            hours(&[7, 8, 9, 10, 11, 12])
        );
        // The last fired slot bounds it too.
        assert_eq!(
            due_slots(
                &hourly,
                Some(utc(2026, 6, 2, 10, 0, 0)),
                now,
                six_hours,
                100
            ),
            hours(&[11, 12])
        );
        // Capped: the latest.
        assert_eq!(
            due_slots(&hourly, ten_hours_ago, now, six_hours, 2),
            hours(&[11, 12])
        );
        // Never fired: no history, even with a window; only a slot within the grace.
        assert!(due_slots(&hourly, None, now, six_hours, 100).is_empty());
        assert_eq!(
            due_slots(&hourly, None, utc(2026, 6, 2, 12, 0, 4), six_hours, 100),
            hours(&[12])
        );
        // A window shorter than the grace acts as the grace.
        assert_eq!(
            due_slots(&hourly, ten_hours_ago, now, Some(1), 100),
            Vec::<u64>::new()
        );
        assert_eq!(
            due_slots(
                &hourly,
                ten_hours_ago,
                utc(2026, 6, 2, 12, 0, 1),
                Some(1),
                100
            ),
            hours(&[12])
        );
        // A dense schedule over a long window, capped: the latest `max`.
        let every_second = [parse("* * * * * *")];
        let got = due_slots(
            &every_second,
            Some(now - 30 * 86_400_000),
            now,
            Some(30 * 86_400_000),
            3,
        );
        assert_eq!(got, [now - 2_000, now - 1_000, now]);
    }

    #[test]
    fn several_expressions_merge_without_duplicates() {
        let schedules = [
            parse("0 9 * * *"),
            parse("0 9 * * 1-5"),
            parse("30 9 * * MON"),
            CronSchedule::parse("CRON_TZ=Europe/Berlin 0 11 * * *", None).unwrap(), // 09:00 UTC
        ];
        let monday = monday_midnight();
        assert_eq!(
            next_fire(&schedules, monday),
            Some(utc(2026, 6, 1, 9, 0, 0))
        );
        assert_eq!(
            next_fires(&schedules, monday, 4),
            [
                utc(2026, 6, 1, 9, 0, 0),
                utc(2026, 6, 1, 9, 30, 0),
                utc(2026, 6, 2, 9, 0, 0),
                utc(2026, 6, 3, 9, 0, 0),
            ]
        );
        assert_eq!(
            due_slots(
                &schedules,
                Some(monday),
                utc(2026, 6, 1, 9, 30, 0),
                Some(86_400_000),
                10
            ),
            [utc(2026, 6, 1, 9, 0, 0), utc(2026, 6, 1, 9, 30, 0)]
        );
        assert_eq!(next_fire(&[], monday), None);
        assert!(next_fires(&schedules, monday, 0).is_empty());
    }

    /// A cron field from values within `lo..=hi`: `*`, `*/n`, `a`, `a-b`, `a-b/n`, `a/n`, lists.
    fn field(lo: u32, hi: u32) -> impl Strategy<Value = String> {
        let item = prop_oneof![
            Just("*".to_string()),
            (1..=hi).prop_map(|n| format!("*/{n}")),
            (lo..=hi).prop_map(|a| a.to_string()),
            (lo..=hi, lo..=hi).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
            (lo..=hi, lo..=hi, 1..=hi).prop_map(|(a, b, n)| format!(
                "{}-{}/{n}",
                a.min(b),
                a.max(b)
            )),
            (lo..=hi, 1..=hi).prop_map(|(a, n)| format!("{a}/{n}")),
        ];
        prop::collection::vec(item, 1..3).prop_map(|items| items.join(","))
    }

    /// A 6-field expression where day-of-month or day-of-week is `*`, in dagrid's syntax and
    /// in the `cron` crate's (day-of-week 1-7 = Sunday-Saturday), which then agree.
    fn expression() -> impl Strategy<Value = (String, String)> {
        let days = prop::collection::btree_set(0..=7u32, 1..4);
        (
            field(0, 59),
            field(0, 59),
            field(0, 23),
            field(1, 31),
            field(1, 12),
            days,
            any::<bool>(),
        )
            .prop_map(|(s, m, h, dom, mon, days, by_week)| {
                let ours_dow: Vec<String> = days.iter().map(u32::to_string).collect();
                let theirs_dow: Vec<String> =
                    days.iter().map(|d| (d % 7 + 1).to_string()).collect();
                if by_week {
                    (
                        format!("{s} {m} {h} * {mon} {}", ours_dow.join(",")),
                        format!("{s} {m} {h} * {mon} {}", theirs_dow.join(",")),
                    )
                } else {
                    let e = format!("{s} {m} {h} {dom} {mon} *");
                    (e.clone(), e)
                }
            })
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in "\\PC{0,40}") {
            let _ = CronSchedule::parse(&text, None);
        }

        #[test]
        fn parse_never_panics_on_cron_like_text(
            text in "(CRON_TZ=[A-Za-z/]{0,12} )?[0-9*/,?@A-Za-z-]{0,8}( [0-9*/,?A-Za-z-]{0,8}){0,6}"
        ) {
            let _ = CronSchedule::parse(&text, None);
        }

        /// In UTC (no DST), the fire times agree with the `cron` crate, an independent
        /// implementation, wherever its semantics are crontab's.
        #[test]
        fn agrees_with_the_cron_crate_in_utc(
            (ours, theirs) in expression(),
            after_s in 946_684_800i64..3_471_292_800, // 2000..2080 (the crate stops at 2100)
        ) {
            let Ok(s) = CronSchedule::parse(&ours, None) else {
                // Only expressions that never fire are refused.
                prop_assert!(CronSchedule::parse(&ours, None).unwrap_err().contains("never fires"));
                return Ok(());
            };
            let oracle = cron::Schedule::from_str(&theirs).unwrap();
            let after = DateTime::from_timestamp(after_s, 0).unwrap();
            let mut want = oracle.after(&after);
            let mut t = after_s as u64 * 1000;
            for _ in 0..3 {
                let expected = want.next().map(|w| w.timestamp_millis() as u64);
                let got = s.next_after(t);
                prop_assert_eq!(got, expected, "{} after {}", ours, t);
                match got { Some(g) => t = g, None => break }
            }
        }

        /// In a zone with DST, every fire is a slot of the expression on the wall clock, or the
        /// end of a skipped hour; fires increase; and no wall-clock slot fires twice.
        #[test]
        fn berlin_fires_are_wall_clock_slots_once(
            minute in prop_oneof![Just("*/15".to_string()), Just("30".to_string()), field(0, 59)],
            hour in prop_oneof![Just("*".to_string()), Just("1-3".to_string()), field(0, 23)],
            day in 20..=31u32,
            month in prop_oneof![Just(3u32), Just(10u32)],
        ) {
            let s = CronSchedule::parse(&format!("{minute} {hour} * * *"), Some("Europe/Berlin"))
                .unwrap();
            let start = utc(2026, month, day, 0, 0, 0) - 86_400_000;
            // Up to 200 fires within 20 days: this year's transition only.
            let fires: Vec<u64> = next_fires(std::slice::from_ref(&s), start, 200)
                .into_iter()
                .take_while(|&t| t < start + 20 * 86_400_000)
                .collect();
            let mut seen = std::collections::BTreeSet::new();
            let mut prev = start;
            for t in fires {
                prop_assert!(t > prev);
                prev = t;
                let local = DateTime::from_timestamp_millis(t as i64).unwrap()
                    .with_timezone(&BERLIN).naive_local();
                let on_slot = s.spec.minutes >> local.minute() & 1 == 1
                    && s.spec.hours >> local.hour() & 1 == 1
                    && local.second() == 0;
                // Else the end of the spring gap, 03:00 CEST, for a slot in 02:00-02:59.
                let gap_end = t == utc(2026, 3, 29, 1, 0, 0) && s.spec.hours >> 2 & 1 == 1;
                prop_assert!(on_slot || gap_end, "{} at {}", s.text(), local);
                if on_slot {
                    prop_assert!(seen.insert(local), "{} twice at {}", s.text(), local);
                }
            }
        }

        /// `due_slots` is the tail of every slot in its window, however the window is searched.
        #[test]
        fn due_slots_is_the_tail_of_the_window(
            (ours, _) in expression(),
            now_s in 1_700_000_000u64..1_800_000_000,
            last_back_s in prop::option::of(0u64..3_000),
            window_s in prop::option::of(0u64..3_000),
            max in 0usize..20,
        ) {
            let Ok(s) = CronSchedule::parse(&ours, None) else { return Ok(()); };
            let schedules = [s, parse("0 */7 * * *")];
            let now = now_s * 1000 + 123;
            let last = last_back_s.map(|b| now - b * 1000);
            let window = window_s.map(|w| w * 1000);
            let got = due_slots(&schedules, last, now, window, max);
            let lookback = window.map_or(DUE_GRACE_MS, |w| w.max(DUE_GRACE_MS));
            let from = last.unwrap_or(now - DUE_GRACE_MS).max(now - lookback);
            let mut all = Vec::new();
            let mut t = from;
            while let Some(next) = next_fire(&schedules, t).filter(|&n| n <= now) {
                all.push(next);
                t = next;
            }
            let want = &all[all.len().saturating_sub(max)..];
            prop_assert_eq!(&got[..], want);
        }
    }
}
