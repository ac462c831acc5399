//! Human-readable durations in definitions (`200ms`, `30s`, `1m`, `24h`).

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("`{text}` is not a duration (use forms like 200ms, 30s, 5m, 24h)")]
pub struct DurationError {
    pub text: String,
}

/// Parses a duration into milliseconds.
pub fn parse_millis(text: &str) -> Result<u64, DurationError> {
    let err = || DurationError {
        text: text.to_string(),
    };
    let parsed = humantime::parse_duration(text.trim()).map_err(|_| err())?;
    u64::try_from(parsed.as_millis()).map_err(|_| err())
}

/// Formats milliseconds the way definitions write them (for messages and graphs).
pub fn format_millis(ms: u64) -> String {
    humantime::format_duration(std::time::Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse_millis("200ms"), Ok(200));
        assert_eq!(parse_millis("30s"), Ok(30_000));
        assert_eq!(parse_millis("1m"), Ok(60_000));
        assert_eq!(parse_millis("24h"), Ok(86_400_000));
        assert_eq!(parse_millis("1m 30s"), Ok(90_000));
    }

    #[test]
    fn rejects_nonsense() {
        assert!(parse_millis("soon").is_err());
        assert!(parse_millis("10").is_err());
        assert!(parse_millis("").is_err());
    }
}
