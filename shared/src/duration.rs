//! The durations dagrid accepts: humantime text (`30s`, `24h`) parsed to ms, and the one upper
//! bound every duration and future time shares.

/// The longest duration dagrid accepts anywhere a duration or a future time is written (a
/// submit's `delay` and `at`, dedup windows, `catchupWindow`): 3,650 days (about 10 years),
/// in ms. Longer ones would overflow the ms arithmetic or pass year 9999, which times cannot be
/// written in.
pub const MAX_DURATION_MS: u64 = 3650 * 24 * 3600 * 1000;

/// `MAX_DURATION_MS` as people read it.
pub const MAX_DURATION_TEXT: &str = "3650 days (about 10 years)";

/// Parses a humantime duration (`30s`, `5m`, `24h`) into ms, at most [`MAX_DURATION_MS`].
///
/// # Errors
/// A message for people (without the field name): not a duration, or too long.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        format!("\"{text}\" is not a duration ({e}); write for example 30s, 5m or 24h")
    })?;
    match u64::try_from(d.as_millis()) {
        Ok(ms) if ms <= MAX_DURATION_MS => Ok(ms),
        _ => Err(format!(
            "\"{text}\" is too long; a duration is at most {MAX_DURATION_TEXT}"
        )),
    }
}

/// `--lease-timeout` of workers and coordinators (`DAGRID_LEASE_TIMEOUT`): a humantime
/// duration of at least 1 s, so both read it by the same rule.
///
/// # Errors
/// A text that is not a duration, or one under 1 s; the message names the fix.
pub fn parse_lease_timeout(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e}; write a duration such as 10s or 1m"))?;
    if d < std::time::Duration::from_secs(1) {
        return Err(format!(
            "{s} is too short; use at least 1s (several worker heartbeat intervals; default 10s)"
        ));
    }
    Ok(d)
}
