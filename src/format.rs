//! Terminal formatting shared by the client verbs: durations and ages for people ("4m 12s"),
//! countdowns ("in 4m 10s"), wall-clock times in the local zone, and priority labels. Pure
//! functions of their arguments (the time zone and "now" are passed in), so they are tested
//! without touching the clock or the environment.

use chrono::{TimeZone, Utc};

/// A duration in ms for people: its two most significant units (`3d 4h`, `4h 12m`, `4m 12s`,
/// `12s`), a single unit when the second is zero (`4m`), `<1s` under a second.
pub(crate) fn human_ms(ms: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let secs = ms / 1000;
    if secs == 0 {
        return "<1s".into();
    }
    let Some(i) = UNITS.iter().position(|(size, _)| secs >= *size) else {
        return "<1s".into();
    };
    let (size, unit) = UNITS[i];
    let (major, rest) = (secs / size, secs % size);
    match UNITS.get(i + 1) {
        Some((next, next_unit)) if rest / next > 0 => {
            format!("{major}{unit} {}{next_unit}", rest / next)
        }
        _ => format!("{major}{unit}"),
    }
}

/// How far `target_ms` is from `now_ms` (both ms since the epoch): `in 4m 10s`, `now` within a
/// second, `4m ago` in the past.
pub(crate) fn countdown(target_ms: u64, now_ms: u64) -> String {
    if target_ms >= now_ms {
        let ahead = target_ms - now_ms;
        if ahead < 1000 {
            "now".into()
        } else {
            format!("in {}", human_ms(ahead))
        }
    } else {
        let behind = now_ms - target_ms;
        if behind < 1000 {
            "now".into()
        } else {
            format!("{} ago", human_ms(behind))
        }
    }
}

/// `ms` since the epoch as a wall-clock time in `tz`, to the minute (`2026-11-21 11:05`), or
/// to the second with the zone's offset when `precise` (`2026-11-21 11:05:00 +01:00`).
pub(crate) fn wall_clock<Tz>(ms: u64, tz: &Tz, precise: bool) -> String
where
    Tz: TimeZone,
    Tz::Offset: std::fmt::Display,
{
    let Some(utc) = i64::try_from(ms)
        .ok()
        .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
    else {
        return format!("{ms}ms");
    };
    let local = utc.with_timezone(tz);
    if precise {
        local.format("%Y-%m-%d %H:%M:%S %:z").to_string()
    } else {
        local.format("%Y-%m-%d %H:%M").to_string()
    }
}

/// A time for people: the wall clock in `tz` and the countdown from `now_ms`, e.g.
/// `2026-11-21 11:05 (in 4m 10s)`.
pub(crate) fn when<Tz>(ms: u64, now_ms: u64, tz: &Tz, precise: bool) -> String
where
    Tz: TimeZone,
    Tz::Offset: std::fmt::Display,
{
    format!(
        "{} ({})",
        wall_clock(ms, tz, precise),
        countdown(ms, now_ms)
    )
}

/// A priority level with its name when it has one: `8 (high)`, `5 (normal)`, `2 (low)`, `7`.
pub(crate) fn priority_label(level: u64) -> String {
    use dagrid_shared::dag::Priority;
    let name = [
        (Priority::HIGH, "high"),
        (Priority::NORMAL, "normal"),
        (Priority::LOW, "low"),
    ]
    .into_iter()
    .find(|(p, _)| u64::from(p.get()) == level)
    .map(|(_, name)| name);
    match name {
        Some(name) => format!("{level} ({name})"),
        None => level.to_string(),
    }
}

/// Now, in ms since the epoch, from the system clock.
pub(crate) fn now_ms() -> u64 {
    dagrid_shared::model::now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;

    #[test]
    fn durations_keep_two_units_and_drop_a_zero_one() {
        assert_eq!(human_ms(0), "<1s");
        assert_eq!(human_ms(999), "<1s");
        assert_eq!(human_ms(1_000), "1s");
        assert_eq!(human_ms(59_999), "59s");
        assert_eq!(human_ms(240_000), "4m");
        assert_eq!(human_ms(252_500), "4m 12s");
        assert_eq!(human_ms(3_600_000 + 12 * 60_000 + 5_000), "1h 12m");
        assert_eq!(human_ms(3 * 86_400_000 + 4 * 3_600_000), "3d 4h");
        assert_eq!(human_ms(86_400_000 + 59_000), "1d");
    }

    #[test]
    fn countdowns_say_in_now_or_ago() {
        assert_eq!(countdown(10_000 + 250_000, 10_000), "in 4m 10s");
        assert_eq!(countdown(10_500, 10_000), "now");
        assert_eq!(countdown(9_500, 10_000), "now");
        assert_eq!(countdown(10_000, 250_000), "4m ago");
    }

    #[test]
    fn wall_clock_uses_the_given_zone() {
        // 2026-11-21T10:00:00Z
        let ms = 1_795_255_200_000;
        assert_eq!(wall_clock(ms, &Utc, false), "2026-11-21 10:00");
        let paris = FixedOffset::east_opt(3600).unwrap();
        assert_eq!(wall_clock(ms, &paris, false), "2026-11-21 11:00");
        assert_eq!(wall_clock(ms, &paris, true), "2026-11-21 11:00:00 +01:00");
        assert_eq!(
            when(ms, ms - 240_000, &paris, false),
            "2026-11-21 11:00 (in 4m)"
        );
        assert_eq!(wall_clock(u64::MAX, &Utc, false), format!("{}ms", u64::MAX));
    }

    #[test]
    fn priorities_are_named_where_they_have_a_name() {
        assert_eq!(priority_label(8), "8 (high)");
        assert_eq!(priority_label(5), "5 (normal)");
        assert_eq!(priority_label(2), "2 (low)");
        assert_eq!(priority_label(9), "9");
        assert_eq!(priority_label(0), "0");
    }
}
