//! Run ids: a UUIDv7 written in lowercase base32hex (RFC 4648's extended hex alphabet,
//! `0-9a-v`, no padding: `data_encoding::BASE32_DNSSEC`), 26 characters that sort as the UUIDs
//! do, so by creation time. Runs made by earlier versions keep their ids in the UUID's text form
//! (36 characters); everything but retention's time bounds ([`made_before`]) takes an id as an
//! opaque string. Why 26 characters: docs/architecture.md ("Redis keyspace").

use uuid::{NoContext, Timestamp, Uuid};

/// Characters of a run id made by this version.
pub const LEN: usize = 26;

/// A new run id: [`Uuid::now_v7`] (a millisecond time stamp, then a counter and random bits,
/// increasing within the process) in lowercase base32hex, [`LEN`] characters such as
/// `06h8m5q2c6a7g8s9vd0e4hbn1k`.
pub fn new() -> String {
    encode(&Uuid::now_v7())
}

fn encode(id: &Uuid) -> String {
    data_encoding::BASE32_DNSSEC.encode(id.as_bytes())
}

/// The first characters of every id made at `ms` (ms since the epoch) whatever its random
/// bits: its 48-bit time stamp and the version's first 2 bits (10 characters). Ids made
/// before `ms` sort below it, ids made at or after it above it.
fn time_prefix(ms: u64) -> String {
    let mut id = encode(&at(ms));
    id.truncate(10);
    id
}

/// The first 13 characters of the text form of a UUIDv7 made at `ms` (the form of runs made
/// by earlier versions): its 48-bit time stamp as `xxxxxxxx-xxxx` in lowercase hex.
fn legacy_time_prefix(ms: u64) -> String {
    let ms = ms & 0xffff_ffff_ffff;
    format!("{:08x}-{:04x}", ms >> 16, ms & 0xffff)
}

/// A UUIDv7 of `ms` (ms since the epoch).
fn at(ms: u64) -> Uuid {
    Uuid::new_v7(Timestamp::from_unix(
        NoContext,
        ms / 1000,
        (ms % 1000) as u32 * 1_000_000,
    ))
}

/// When the run `id` was made (ms since the epoch): the 48-bit time stamp of its UUIDv7, in
/// either form (this version's 26 characters of base32hex, or the UUID text form of earlier
/// versions). A run hash of this version has no `created` field: its id holds the time.
/// `None` for a string that is neither form.
pub fn created_ms(id: &str) -> Option<u64> {
    let bytes = match id.len() {
        LEN => {
            let raw = data_encoding::BASE32_DNSSEC.decode(id.as_bytes()).ok()?;
            <[u8; 16]>::try_from(raw.as_slice()).ok()?
        }
        36 => *Uuid::parse_str(id).ok()?.as_bytes(),
        _ => return None,
    };
    Some(
        bytes[..6]
            .iter()
            .fold(0u64, |ms, b| ms << 8 | u64::from(*b)),
    )
}

/// The lower bound of this version's ids: an id made since November 2004 (2^40 ms) sorts at
/// or above it; an id in the UUID text form made before September 2039 (2^41 ms) sorts below
/// it (it starts with `00` or `01`; this form's with `04` to `07`).
fn floor() -> String {
    time_prefix(1 << 40)
}

/// `ZRANGE … BYLEX` bounds (min, max) of the run ids made before `ms` (ms since the epoch), one
/// pair per form: the UUID text form of earlier versions, then this version's, which sorts
/// above it. Members of an index of run ids within these ranges are exactly the ids made
/// before `ms`.
pub fn made_before(ms: u64) -> [(String, String); 2] {
    [
        ("-".to_string(), format!("({}", legacy_time_prefix(ms))),
        (format!("[{}", floor()), format!("({}", time_prefix(ms))),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An id of this version made at `ms`.
    fn id_at(ms: u64) -> String {
        encode(&at(ms))
    }

    #[test]
    fn ids_are_26_characters_of_base32hex_and_increase() {
        let mut last = new();
        for _ in 0..10_000 {
            let id = new();
            assert_eq!(id.len(), LEN);
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b)),
                "{id}"
            );
            assert!(id > last, "{id} after {last}");
            last = id;
        }
    }

    #[test]
    fn the_time_prefix_orders_run_ids() {
        let ms = 1_780_000_123_456;
        let prefix = time_prefix(ms);
        assert!(id_at(ms).starts_with(&prefix), "{} {prefix}", id_at(ms));
        assert!(id_at(ms - 1) < prefix);
        assert!(id_at(ms) > prefix);
        assert!(id_at(ms + 1) > prefix);
        assert!(id_at(ms - 86_400_000) < prefix);
        let legacy = legacy_time_prefix(ms);
        assert!(at(ms).to_string().starts_with(&legacy));
        assert!(at(ms - 1).to_string() < legacy);
        assert!(at(ms + 1).to_string() > legacy);
    }

    #[test]
    fn the_creation_time_is_read_from_either_form() {
        for ms in [1_780_000_123_456, (1 << 40) + 7, 0xffff_ffff_ffff] {
            assert_eq!(created_ms(&id_at(ms)), Some(ms));
            assert_eq!(created_ms(&at(ms).to_string()), Some(ms));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let made = created_ms(&new()).unwrap();
        assert!(made.abs_diff(now) < 60_000, "{made} {now}");
        for bad in [
            "",
            "r1",
            "06h8m5q2c6a7g8s9vd0e4hbn1!",
            "zzzzzzzzzzzzzzzzzzzzzzzzzz",
        ] {
            assert_eq!(created_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn this_form_sorts_above_the_uuid_text_form() {
        let floor = floor();
        assert!(id_at(1 << 40) >= floor);
        assert!(id_at(1_780_000_123_456) > floor);
        assert!(at((1 << 41) - 1).to_string() < floor);
        // A run made by an earlier version sorts below one made by this version, however
        // close in time.
        assert!(at(1_780_000_123_456).to_string() < id_at(1_780_000_123_455));
    }

    #[test]
    fn the_bounds_select_the_ids_made_before() {
        let ms = 1_780_000_123_456;
        let [(lmin, lmax), (min, max)] = made_before(ms);
        let within = |id: &str, min: &str, max: &str| {
            let above = match min.as_bytes()[0] {
                b'-' => true,
                b'[' => id >= &min[1..],
                _ => id > &min[1..],
            };
            above && id < &max[1..]
        };
        for (made, before) in [
            (ms - 86_400_000, true),
            (ms - 1, true),
            (ms, false),
            (ms + 9, false),
        ] {
            let (new, old) = (id_at(made), at(made).to_string());
            assert_eq!(within(&new, &min, &max), before, "{new}");
            assert!(!within(&new, &lmin, &lmax), "{new}");
            assert_eq!(within(&old, &lmin, &lmax), before, "{old}");
            assert!(!within(&old, &min, &max), "{old}");
        }
    }
}
