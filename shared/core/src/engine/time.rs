//! Instants the engine computes or reads, kept in a range every shell can store.
//!
//! Every instant the engine hands a shell (a deadline, a retry's start, the end
//! of a wait) is at most [`MAX_TIMESTAMP`], so converting it to a signed 64-bit
//! number, a date or RFC 3339 text never overflows or wraps. A `wait_until`
//! read from data must lie between the Unix epoch and [`MAX_WAIT_AHEAD_MS`]
//! after now; anything else fails the step with `InvalidWaitUntil`.

use serde_json::Value;

use crate::Timestamp;

/// The latest instant the engine produces: 9999-12-31T23:59:59.999Z, the last
/// one RFC 3339 can write. A duration that would end later ends here instead,
/// which for any workflow means never.
pub const MAX_TIMESTAMP: Timestamp = 253_402_300_799_999;

/// How far ahead a `wait_until` may be: ten years of 365.25 days.
pub const MAX_WAIT_AHEAD_MS: u64 = 3_652 * 86_400_000 + 43_200_000;

/// `now` plus `millis`, saturating at [`MAX_TIMESTAMP`] (or at `now`, if a
/// shell passed a time later than that).
pub(crate) fn later(now: Timestamp, millis: u64) -> Timestamp {
    let at = now.saturating_add(millis);
    if at > MAX_TIMESTAMP {
        MAX_TIMESTAMP.max(now)
    } else {
        at
    }
}

/// Reads a `wait_until` value at time `now`: RFC 3339 text or milliseconds
/// since the epoch, no earlier than 1970 and no later than
/// [`MAX_WAIT_AHEAD_MS`] after `now`. An instant that has passed is fine (the
/// wait ends at once). The error says what is wrong with the value.
pub fn wait_until_instant(value: &Value, now: Timestamp) -> Result<Timestamp, String> {
    let at = wait_until_literal(value)?;
    let horizon = now.saturating_add(MAX_WAIT_AHEAD_MS);
    if at > horizon {
        return Err(format!(
            "`wait_until` gave {}, more than ten years ahead",
            shown(value)
        ));
    }
    Ok(at)
}

/// Reads a `wait_until` value without a clock, as validation can for a
/// constant one: it must be a time (RFC 3339 text or epoch milliseconds)
/// between 1970 and [`MAX_TIMESTAMP`]. At run time [`wait_until_instant`]
/// also refuses one more than ten years ahead of the moment the step starts.
pub fn wait_until_literal(value: &Value) -> Result<Timestamp, String> {
    let out_of_range = || {
        format!(
            "`wait_until` gave {}, outside 1970 to 9999-12-31",
            shown(value)
        )
    };
    let millis: i128 = match value {
        Value::Number(n) => {
            if let Some(n) = n.as_u64() {
                i128::from(n)
            } else if let Some(n) = n.as_i64() {
                i128::from(n)
            } else {
                match n.as_f64() {
                    // Whole milliseconds; anything beyond i128 is out of range anyway.
                    Some(f) if f.is_finite() && f.abs() < 1e30 => f.floor() as i128,
                    _ => return Err(out_of_range()),
                }
            }
        }
        Value::String(text) => parse_rfc3339(text)
            .ok_or_else(|| format!("`wait_until` gave {}, not an RFC 3339 time", shown(value)))?,
        other => {
            return Err(format!(
                "`wait_until` gave {}, not a time",
                type_name(other)
            ));
        }
    };
    if millis < 0 || millis > i128::from(MAX_TIMESTAMP) {
        return Err(out_of_range());
    }
    Ok(millis as Timestamp)
}

/// Milliseconds since the epoch (negative before 1970) of RFC 3339 text with
/// any offset, or of the looser UTC forms (`2030-01-01 00:00:00`) that
/// `humantime` reads.
fn parse_rfc3339(text: &str) -> Option<i128> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text.trim()) {
        return Some(i128::from(t.timestamp_millis()));
    }
    let t = humantime::parse_rfc3339_weak(text.trim()).ok()?;
    let since = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    i128::try_from(since.as_millis()).ok()
}

/// The value for a message, cut short if long.
fn shown(value: &Value) -> String {
    let text = match value {
        Value::String(s) => format!("`{s}`"),
        other => other.to_string(),
    };
    if text.chars().count() > 60 {
        let cut: String = text.chars().take(57).collect();
        format!("{cut}...")
    } else {
        text
    }
}

pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: Timestamp = 1_700_000_000_000;

    #[test]
    fn later_saturates_below_the_last_instant() {
        assert_eq!(later(NOW, 5), NOW + 5);
        assert_eq!(later(NOW, u64::MAX), MAX_TIMESTAMP);
        assert_eq!(later(u64::MAX, 0), u64::MAX);
        assert_eq!(later(MAX_TIMESTAMP, 1), MAX_TIMESTAMP);
    }

    #[test]
    fn wait_until_accepts_times_within_ten_years() {
        let ok = |v: Value| wait_until_instant(&v, NOW);
        assert_eq!(ok(json!(NOW + 5)), Ok(NOW + 5));
        assert_eq!(ok(json!(0)), Ok(0));
        assert_eq!(ok(json!(NOW - 1)), Ok(NOW - 1), "a passed time is fine");
        assert_eq!(ok(json!(NOW as f64 + 0.7)), Ok(NOW));
        assert_eq!(
            ok(json!(NOW + MAX_WAIT_AHEAD_MS)),
            Ok(NOW + MAX_WAIT_AHEAD_MS)
        );
        assert_eq!(ok(json!("2030-01-01T00:00:00Z")), Ok(1_893_456_000_000));
        assert_eq!(
            ok(json!("2030-01-01T02:00:00+02:00")),
            Ok(1_893_456_000_000)
        );
        assert_eq!(ok(json!("2030-01-01 00:00:00")), Ok(1_893_456_000_000));
    }

    #[test]
    fn wait_until_refuses_what_is_out_of_range_or_not_a_time() {
        for value in [
            json!(NOW + MAX_WAIT_AHEAD_MS + 1),
            json!(u64::MAX),
            json!(u64::MAX - 1),
            json!(i64::MAX),
            json!(-1),
            json!(i64::MIN),
            json!(-0.5),
            json!(1e300),
            json!(-1e300),
            json!("275000-01-01T00:00:00Z"),
            json!("+275000-01-01T00:00:00Z"),
            json!("9999-12-31T23:59:59Z"),
            json!("1969-12-31T23:59:59Z"),
            json!("0000-01-01T00:00:00Z"),
            json!("tomorrow"),
            json!("2030-13-01T00:00:00Z"),
            json!("ÿÿÿÿ-ÿÿ-ÿÿTÿÿ:ÿÿ:ÿÿ"),
            json!(""),
            json!(null),
            json!(true),
            json!([NOW]),
            json!({ "at": NOW }),
        ] {
            let got = wait_until_instant(&value, NOW);
            assert!(got.is_err(), "{value} gave {got:?}");
        }
        // With a time far in the future, the horizon saturates instead of wrapping.
        assert_eq!(wait_until_instant(&json!(5), u64::MAX), Ok(5));
    }

    #[test]
    fn a_literal_is_checked_without_a_clock() {
        assert_eq!(
            wait_until_literal(&json!("9999-12-31T23:59:59.999Z")),
            Ok(MAX_TIMESTAMP)
        );
        assert!(wait_until_literal(&json!(MAX_TIMESTAMP + 1)).is_err());
        assert!(wait_until_literal(&json!("275000-01-01T00:00:00Z")).is_err());
        assert!(wait_until_literal(&json!(-1)).is_err());
        let long = "x".repeat(500);
        let message = wait_until_literal(&json!(long)).unwrap_err();
        assert!(message.len() < 150, "{message}");
    }
}
