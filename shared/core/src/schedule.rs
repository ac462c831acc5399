//! Schedules: when a cron expression read in a time zone fires, which fired
//! instants are due after a pause, the execution id of each firing, and the
//! same expression in EventBridge Scheduler's form.
//!
//! # Expressions
//!
//! Standard 5-field cron: minute (0-59), hour (0-23), day of month (1-31),
//! month (1-12 or `JAN`-`DEC`), day of week (0-7, 0 and 7 are Sunday, or
//! `SUN`-`SAT`); each field `*`, a value, a range `a-b`, a step `*/n` or
//! `a-b/n`, or a comma-separated list of those. Day of month and day of week
//! may not both be restricted: cron then fires on days matching either, which
//! EventBridge Scheduler cannot express, so such an expression is rejected on
//! both backends alike.
//!
//! # Daylight saving
//!
//! An expression names wall-clock times in its zone. A wall-clock time that
//! does not exist (skipped by a spring-forward change) does not fire; one
//! that exists twice (repeated by a fall-back change) fires once, at its first
//! occurrence. That is EventBridge Scheduler's rule, so both backends fire at
//! the same instants and derive the same execution ids. In America/New_York,
//! `30 2 * * *` does not fire on 8 March 2026, `30 1 * * *` fires once on
//! 1 November 2026, and `0 * * * *` fires 23 times on the first day and 24 on
//! the second (01:00 comes twice but runs once). A job that must keep a steady
//! interval across such changes should use `UTC`, which has none.
//!
//! Everything here is pure: instants come in as [`Timestamp`]s.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde_json::Value;
use thiserror::Error;

use crate::Timestamp;
pub use crate::definition::{CatchUp, Overlap};

/// Default bound of `catch_up: all`.
pub const DEFAULT_MAX_CATCH_UP: u32 = 100;
/// Largest `max_catch_up` accepted.
pub const MAX_CATCH_UP_CAP: u32 = 10_000;
/// How late an instant may be and still count as on time (`catch_up: none`);
/// workers look every second, so one later than this came while none ran.
pub const ON_TIME_GRACE_MS: u64 = 15_000;
/// How far [`Schedule::recent`] looks back.
pub const LOOK_BACK_MS: u64 = 400 * 24 * 3_600_000;
/// EventBridge Scheduler's limit on a schedule expression.
pub const EVENTBRIDGE_EXPRESSION_LIMIT: usize = 256;

/// Why an expression was rejected, in words that name the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct CronError(String);

impl CronError {
    fn new(message: impl Into<String>) -> CronError {
        CronError(message.into())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldKind {
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl FieldKind {
    const ALL: [FieldKind; 5] = [
        FieldKind::Minute,
        FieldKind::Hour,
        FieldKind::DayOfMonth,
        FieldKind::Month,
        FieldKind::DayOfWeek,
    ];

    fn label(self) -> &'static str {
        match self {
            FieldKind::Minute => "minute",
            FieldKind::Hour => "hour",
            FieldKind::DayOfMonth => "day-of-month",
            FieldKind::Month => "month",
            FieldKind::DayOfWeek => "day-of-week",
        }
    }

    fn bounds(self) -> (u32, u32) {
        match self {
            FieldKind::Minute => (0, 59),
            FieldKind::Hour => (0, 23),
            FieldKind::DayOfMonth => (1, 31),
            FieldKind::Month => (1, 12),
            // 7 is Sunday as well as 0.
            FieldKind::DayOfWeek => (0, 7),
        }
    }

    fn allowed(self) -> &'static str {
        match self {
            FieldKind::Minute => "0-59",
            FieldKind::Hour => "0-23",
            FieldKind::DayOfMonth => "1-31",
            FieldKind::Month => "1-12 or JAN-DEC",
            FieldKind::DayOfWeek => "0-7 (0 and 7 are Sunday) or SUN-SAT",
        }
    }

    fn names(self) -> &'static [&'static str] {
        match self {
            FieldKind::Month => &MONTHS,
            FieldKind::DayOfWeek => &DAYS,
            _ => &[],
        }
    }

    /// The value of a name: months count from 1, days from 0 (Sunday).
    fn name_value(self, token: &str) -> Option<u32> {
        let offset = if self == FieldKind::Month { 1 } else { 0 };
        self.names()
            .iter()
            .position(|n| n.eq_ignore_ascii_case(token))
            .map(|i| i as u32 + offset)
    }
}

/// One comma-separated item of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    /// `*`
    Any,
    /// `*/step`
    AnyStep(u32),
    /// `v`
    Value(u32),
    /// `a-b`
    Range(u32, u32),
    /// `a-b/step`
    RangeStep(u32, u32, u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    kind: FieldKind,
    items: Vec<Item>,
}

impl Field {
    fn parse(kind: FieldKind, text: &str) -> Result<Field, CronError> {
        let label = kind.label();
        let mut items = Vec::new();
        for part in text.split(',') {
            if part.is_empty() {
                return Err(CronError::new(format!(
                    "{label} field `{text}` has an empty list item"
                )));
            }
            let (base, step) = match part.split_once('/') {
                Some((base, step)) => {
                    let step = step.parse::<u32>().ok().filter(|s| *s > 0).ok_or_else(|| {
                        CronError::new(format!(
                            "{label} `{part}`: the step `{step}` must be a whole number above 0"
                        ))
                    })?;
                    (base, Some(step))
                }
                None => (part, None),
            };
            let item = if base == "*" {
                match step {
                    Some(step) => Item::AnyStep(step),
                    None => Item::Any,
                }
            } else if let Some((a, b)) = base.split_once('-') {
                let (a, b) = (Self::value(kind, a)?, Self::value(kind, b)?);
                if a > b {
                    let (min, max) = kind.bounds();
                    let tail = if b == min {
                        b.to_string()
                    } else {
                        format!("{min}-{b}")
                    };
                    return Err(CronError::new(format!(
                        "{label} range `{base}` runs backwards; to wrap around, list both parts: `{a}-{max},{tail}`"
                    )));
                }
                match step {
                    Some(step) => Item::RangeStep(a, b, step),
                    None => Item::Range(a, b),
                }
            } else {
                let v = Self::value(kind, base)?;
                if step.is_some() {
                    return Err(CronError::new(format!(
                        "{label} `{part}`: a step needs `*` or a range before it, e.g. `{v}-{}/{}`",
                        kind.bounds().1,
                        step.unwrap_or(1)
                    )));
                }
                Item::Value(v)
            };
            items.push(item);
        }
        Ok(Field { kind, items })
    }

    fn value(kind: FieldKind, token: &str) -> Result<u32, CronError> {
        let (min, max) = kind.bounds();
        let label = kind.label();
        if !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
            return match token.parse::<u32>() {
                Ok(v) if (min..=max).contains(&v) => Ok(v),
                _ => Err(CronError::new(format!(
                    "{label} `{token}` is out of range ({})",
                    kind.allowed()
                ))),
            };
        }
        if let Some(v) = kind.name_value(token) {
            return Ok(v);
        }
        let hint = if ["L", "W", "#", "?"].iter().any(|s| token.contains(s)) {
            "; Baton takes standard cron (values, names, `*`, `,`, `-` and `/`) and writes EventBridge's `?` itself"
        } else {
            ""
        };
        Err(CronError::new(format!(
            "`{token}` is not a {label} ({}){hint}",
            kind.allowed()
        )))
    }

    fn is_any(&self) -> bool {
        self.items == [Item::Any]
    }

    /// Every value the field matches, day 7 folded onto 0.
    fn values(&self) -> BTreeSet<u32> {
        let (min, max) = self.kind.bounds();
        let mut set = BTreeSet::new();
        for item in &self.items {
            let (a, b, step) = match *item {
                Item::Any => (min, max, 1),
                Item::AnyStep(step) => (min, max, step),
                Item::Value(v) => (v, v, 1),
                Item::Range(a, b) => (a, b, 1),
                Item::RangeStep(a, b, step) => (a, b, step),
            };
            set.extend((a..=b).step_by(step as usize));
        }
        if self.kind == FieldKind::DayOfWeek && set.remove(&7) {
            set.insert(0);
        }
        set
    }

    /// The field in EventBridge's syntax (any field but the day of week).
    fn eventbridge(&self) -> String {
        let (min, max) = self.kind.bounds();
        if let [item] = self.items.as_slice() {
            match *item {
                Item::Any => return "*".into(),
                Item::AnyStep(step) => return format!("{min}/{step}"),
                Item::Value(v) => return v.to_string(),
                Item::Range(a, b) => return format!("{a}-{b}"),
                // `a/n` runs from `a` to the end of the field: the same values
                // when the range's last one is also the field's.
                Item::RangeStep(a, b, step) if a + (b - a) / step * step + step > max => {
                    return format!("{a}/{step}");
                }
                Item::RangeStep(..) => {}
            }
        }
        if self.items.contains(&Item::Any) {
            return "*".into();
        }
        // Lists, and steps that stop early: spell out the values.
        runs(&self.values())
            .into_iter()
            .map(|(a, b)| match b - a {
                0 => a.to_string(),
                1 => format!("{a},{b}"),
                _ => format!("{a}-{b}"),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The day of week in EventBridge's syntax: names, which mean the same
    /// on both sides (Unix numbers Sunday 0, EventBridge 1).
    fn eventbridge_days(&self) -> String {
        // EventBridge numbering: SUN=1 .. SAT=7.
        let numbers: BTreeSet<u32> = self.values().into_iter().map(|d| d + 1).collect();
        let name = |n: u32| DAYS[(n - 1) as usize];
        runs(&numbers)
            .into_iter()
            .map(|(a, b)| match b - a {
                0 => name(a).to_string(),
                1 => format!("{},{}", name(a), name(b)),
                _ => format!("{}-{}", name(a), name(b)),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Consecutive runs `(first, last)` of a set of numbers.
fn runs(values: &BTreeSet<u32>) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &v in values {
        match out.last_mut() {
            Some((_, last)) if *last + 1 == v => *last = v,
            _ => out.push((v, v)),
        }
    }
    out
}

/// A parsed, checked 5-field cron expression.
#[derive(Debug, Clone)]
pub struct CronExpr {
    source: String,
    fields: Vec<Field>,
    matcher: Cron,
}

impl PartialEq for CronExpr {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl CronExpr {
    pub fn parse(text: &str) -> Result<CronExpr, CronError> {
        let source = text.trim();
        if source.starts_with('@') {
            return Err(CronError::new(format!(
                "nicknames like `{source}` are not supported: write the five fields, e.g. `0 0 * * *` for daily"
            )));
        }
        let parts: Vec<&str> = source.split_whitespace().collect();
        if parts.len() != 5 {
            let six = if parts.len() == 6 {
                " (without EventBridge's year field: Baton adds it)"
            } else {
                ""
            };
            return Err(CronError::new(format!(
                "has {} fields; write the five fields minute hour day-of-month month day-of-week, e.g. `0 9 * * MON`{six}",
                parts.len()
            )));
        }
        let fields = FieldKind::ALL
            .iter()
            .zip(&parts)
            .map(|(kind, text)| Field::parse(*kind, text))
            .collect::<Result<Vec<_>, _>>()?;
        if !fields[2].is_any() && !fields[4].is_any() {
            return Err(CronError::new(format!(
                "restricts both day-of-month (`{}`) and day-of-week (`{}`): cron would fire on days matching either, which EventBridge Scheduler cannot express; put `*` in one of them, or use two schedules",
                parts[2], parts[4]
            )));
        }
        let matcher = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(source)
            .map_err(|e| CronError::new(e.to_string()))?;
        let expr = CronExpr {
            source: source.to_string(),
            fields,
            matcher,
        };
        // `0 0 30 2 *` parses but names no date at all.
        let start = DateTime::<Utc>::UNIX_EPOCH.naive_utc();
        if expr.next_wall_clock(start).is_none() {
            return Err(CronError::new(
                "never fires: no date has that day of month in those months",
            ));
        }
        Ok(expr)
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The first matching wall-clock time strictly after `after`.
    fn next_wall_clock(&self, after: NaiveDateTime) -> Option<NaiveDateTime> {
        self.matcher.find_next_occurrence(&after, false).ok()
    }

    /// The expression in EventBridge Scheduler's 6-field form, e.g.
    /// `0 9 * * 1` as `cron(0 9 ? * MON *)`.
    pub fn eventbridge(&self) -> Result<String, CronError> {
        let [minute, hour, dom, month, dow] = self.fields.as_slice() else {
            return Err(CronError::new("has not five fields"));
        };
        // EventBridge needs `?` in exactly one of the two day fields.
        let (dom, dow) = match (dom.is_any(), dow.is_any()) {
            (_, true) => (dom.eventbridge(), "?".to_string()),
            (true, false) => ("?".to_string(), dow.eventbridge_days()),
            (false, false) => {
                return Err(CronError::new(
                    "restricts both day-of-month and day-of-week, which EventBridge Scheduler cannot express",
                ));
            }
        };
        let expression = format!(
            "cron({} {} {dom} {} {dow} *)",
            minute.eventbridge(),
            hour.eventbridge(),
            month.eventbridge()
        );
        if expression.len() > EVENTBRIDGE_EXPRESSION_LIMIT {
            return Err(CronError::new(format!(
                "is {} characters in EventBridge's form, more than its limit of {EVENTBRIDGE_EXPRESSION_LIMIT}",
                expression.len()
            )));
        }
        Ok(expression)
    }
}

/// `cron` in EventBridge Scheduler's form; an error for what it cannot express.
pub fn eventbridge_expression(cron: &str) -> Result<String, CronError> {
    CronExpr::parse(cron)?.eventbridge()
}

/// An IANA time zone by name; `None` if unknown.
pub fn parse_timezone(name: &str) -> Option<Tz> {
    name.parse::<Tz>().ok()
}

/// The spelling of a zone name that differs from `name` only in case, if any.
pub fn timezone_suggestion(name: &str) -> Option<&'static str> {
    chrono_tz::TZ_VARIANTS
        .iter()
        .map(|tz| tz.name())
        .find(|candidate| candidate.eq_ignore_ascii_case(name))
}

fn to_utc(instant: Timestamp) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_millis(i64::try_from(instant).ok()?)
}

fn to_timestamp(time: DateTime<Utc>) -> Option<Timestamp> {
    Timestamp::try_from(time.timestamp_millis()).ok()
}

/// The instant a wall-clock time names in `zone` under the daylight-saving
/// rule: none if it does not exist, the first if it exists twice.
fn resolve(zone: Tz, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
    match zone.from_local_datetime(&wall) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
        LocalResult::None => None,
    }
}

/// The first instant after `after` at which `cron` fires in `zone`.
pub fn next_fire(cron: &CronExpr, zone: Tz, after: Timestamp) -> Option<Timestamp> {
    let after_utc = to_utc(after)?;
    let mut wall = after_utc
        .with_timezone(&zone)
        .naive_local()
        .with_nanosecond(0)?;
    // Each turn passes one wall-clock match; only matches inside a daylight-
    // saving change are passed over, so a handful of turns always suffices.
    for _ in 0..10_000 {
        wall = cron.next_wall_clock(wall)?;
        match resolve(zone, wall) {
            Some(t) if t > after_utc => return to_timestamp(t),
            _ => continue,
        }
    }
    None
}

/// A schedule, validated: what the embedded worker fires and what is
/// registered with EventBridge Scheduler.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub name: Arc<str>,
    pub cron: CronExpr,
    pub timezone: Tz,
    pub input: Value,
    pub enabled: bool,
    pub overlap: Overlap,
    pub catch_up: CatchUp,
    /// Bound of `catch_up: all`.
    pub max_catch_up: u32,
}

/// The instants a schedule should start now, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub fire: Vec<Timestamp>,
    /// The latest instant that came due; the schedule's position moves here.
    pub through: Option<Timestamp>,
    /// Whether instants that came due were dropped by the catch-up policy.
    pub dropped: bool,
}

impl Schedule {
    /// The first instant after `after` at which it fires.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        next_fire(&self.cron, self.timezone, after)
    }

    /// The next `count` instants after `after`.
    pub fn upcoming(&self, after: Timestamp, count: usize) -> Vec<Timestamp> {
        let mut out = Vec::with_capacity(count);
        let mut at = after;
        while out.len() < count {
            match self.next_after(at) {
                Some(next) => {
                    out.push(next);
                    at = next;
                }
                None => break,
            }
        }
        out
    }

    /// Up to `count` instants before `before`, newest first, looking back at
    /// most [`LOOK_BACK_MS`].
    pub fn recent(&self, before: Timestamp, count: usize) -> Vec<Timestamp> {
        let until = before.saturating_sub(1);
        let floor = before.saturating_sub(LOOK_BACK_MS);
        let mut window: u64 = 3_600_000;
        loop {
            let from = until.saturating_sub(window).max(floor);
            let (mut found, _) = self.between(from, until, count);
            if found.len() >= count || from == floor {
                found.reverse();
                return found;
            }
            window = window.saturating_mul(4);
        }
    }

    /// Instants in `(after, until]`, at most the last `keep` of them, and
    /// whether there were more.
    fn between(&self, after: Timestamp, until: Timestamp, keep: usize) -> (Vec<Timestamp>, bool) {
        let mut found = std::collections::VecDeque::with_capacity(keep.min(1024));
        let mut more = false;
        let mut at = after;
        while let Some(next) = self.next_after(at).filter(|n| *n <= until) {
            if found.len() == keep {
                found.pop_front();
                more = true;
            }
            found.push_back(next);
            at = next;
        }
        (found.into(), more)
    }

    /// What to start at `now` when it last moved through `last`: every
    /// instant in `(last, now]`, thinned by the catch-up policy.
    pub fn due(&self, last: Timestamp, now: Timestamp) -> Due {
        if now <= last {
            return Due {
                fire: Vec::new(),
                through: None,
                dropped: false,
            };
        }
        let keep = match self.catch_up {
            CatchUp::None | CatchUp::Latest => 1,
            CatchUp::All => self.max_catch_up.max(1) as usize,
        };
        // Look back from `now` in growing windows, so that a long pause costs
        // the instants kept, not every instant since `last`.
        let mut window: u64 = 3_600_000;
        let (found, more) = loop {
            let from = now.saturating_sub(window).max(last);
            let (found, more) = self.between(from, now, keep);
            if from == last {
                break (found, more);
            }
            if found.len() == keep {
                // Something before `from` came due too, unless nothing does.
                let earlier = self.next_after(last).is_some_and(|n| n <= from);
                break (found, more || earlier);
            }
            window = window.saturating_mul(4);
        };
        let through = found.last().copied();
        let (fire, dropped) = match self.catch_up {
            CatchUp::None => {
                let on_time: Vec<Timestamp> = found
                    .iter()
                    .copied()
                    .filter(|t| now - t <= ON_TIME_GRACE_MS)
                    .collect();
                let dropped = more || on_time.len() < found.len();
                (on_time, dropped)
            }
            CatchUp::Latest | CatchUp::All => (found, more),
        };
        Due {
            fire,
            through,
            dropped,
        }
    }

    /// The id of the execution this schedule starts for `instant`.
    pub fn execution_id(&self, workflow: &str, instant: Timestamp) -> String {
        execution_id(workflow, &self.name, instant)
    }

    /// The instant as wall-clock time in the schedule's zone, RFC 3339 with its offset.
    pub fn local_time(&self, instant: Timestamp) -> String {
        to_utc(instant)
            .map(|t| {
                t.with_timezone(&self.timezone)
                    .format("%Y-%m-%dT%H:%M:%S%:z")
                    .to_string()
            })
            .unwrap_or_default()
    }

    /// The expression in EventBridge Scheduler's form.
    pub fn eventbridge_expression(&self) -> Result<String, CronError> {
        self.cron.eventbridge()
    }
}

/// An instant as EventBridge Scheduler writes `<aws.scheduler.scheduled-time>`:
/// UTC to the second, e.g. `2026-03-08T14:00:00Z`.
pub fn scheduled_time(instant: Timestamp) -> String {
    to_utc(instant)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// Reads an RFC 3339 time (any offset, any fraction) as an instant.
pub fn parse_scheduled_time(text: &str) -> Option<Timestamp> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .and_then(|t| to_timestamp(t.with_timezone(&Utc)))
}

/// The execution id of a schedule's firing:
/// `{workflow}-{schedule}-{scheduled time}`, e.g.
/// `nightly-report-daily-2026-03-08T05:00:00Z`. The time is written as
/// EventBridge Scheduler writes its scheduled time, so a start it sends and
/// one the embedded worker makes for the same instant share an id, and the
/// second starts nothing.
pub fn execution_id(workflow: &str, schedule: &str, instant: Timestamp) -> String {
    format!("{workflow}-{schedule}-{}", scheduled_time(instant))
}

/// Splits a scheduled execution id `{workflow}-{schedule}-{time}` into the
/// schedule's name and the instant; the time may be written in any RFC 3339
/// form (another offset, a fraction of a second). `None` for any other id.
pub fn split_execution_id<'a>(workflow: &str, id: &'a str) -> Option<(&'a str, Timestamp)> {
    let rest = id.strip_prefix(workflow)?.strip_prefix('-')?;
    // The time holds dashes too: the first split whose tail reads as a time wins.
    rest.match_indices('-').find_map(|(i, _)| {
        let schedule = &rest[..i];
        let instant = parse_scheduled_time(&rest[i + 1..])?;
        (!schedule.is_empty()).then_some((schedule, instant))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> Timestamp {
        parse_scheduled_time(text).expect("an RFC 3339 time")
    }

    #[test]
    fn ids_use_the_scheduled_time_to_the_second() {
        let t = ms("2026-03-08T14:00:00Z");
        assert_eq!(
            execution_id("report", "daily", t),
            "report-daily-2026-03-08T14:00:00Z"
        );
        assert_eq!(
            split_execution_id("report", "report-daily-2026-03-08T09:00:00.000-05:00"),
            Some(("daily", t))
        );
        assert_eq!(
            split_execution_id("report", "report-end-of-day-2026-03-08T14:00:00Z"),
            Some(("end-of-day", t))
        );
        assert_eq!(split_execution_id("report", "report-daily-soon"), None);
        assert_eq!(
            split_execution_id("report", "other-daily-2026-03-08T14:00:00Z"),
            None
        );
        assert_eq!(
            split_execution_id("report", "report-2026-03-08T14:00:00Z"),
            None
        );
    }

    #[test]
    fn next_fire_is_strictly_after() {
        let cron = CronExpr::parse("0 * * * *").unwrap();
        let t = ms("2026-01-01T10:00:00Z");
        assert_eq!(next_fire(&cron, Tz::UTC, t - 1), Some(t));
        assert_eq!(next_fire(&cron, Tz::UTC, t), Some(t + 3_600_000));
        assert_eq!(next_fire(&cron, Tz::UTC, t + 500), Some(t + 3_600_000));
    }
}
