//! Schedules: the EventBridge translation, daylight-saving days, catch-up,
//! and how validation reports a bad schedule.

use baton_core::Workflow;
use baton_core::definition::Format;
use baton_core::schedule::{
    self, CatchUp, CronExpr, Schedule, eventbridge_expression, parse_scheduled_time,
};
use chrono_tz::Tz;

fn at(text: &str) -> u64 {
    parse_scheduled_time(text).unwrap_or_else(|| panic!("`{text}` is not RFC 3339"))
}

const MINUTE: u64 = 60_000;
const HOUR: u64 = 60 * MINUTE;

#[test]
fn cron_translates_to_eventbridge() {
    // (standard cron, EventBridge Scheduler's form)
    let table = [
        // `?` goes in whichever day field is unrestricted.
        ("0 0 * * *", "cron(0 0 * * ? *)"),
        ("0 9 * * 1", "cron(0 9 ? * MON *)"),
        ("0 12 1 * *", "cron(0 12 1 * ? *)"),
        ("0 12 1,15 * *", "cron(0 12 1,15 * ? *)"),
        // Day-of-week numbers: Unix 0-7 (0 and 7 Sunday), EventBridge 1-7 (1 Sunday).
        ("0 9 * * 0", "cron(0 9 ? * SUN *)"),
        ("0 9 * * 7", "cron(0 9 ? * SUN *)"),
        ("0 9 * * 6", "cron(0 9 ? * SAT *)"),
        ("0 9 * * 1-5", "cron(0 9 ? * MON-FRI *)"),
        ("0 9 * * 0,6", "cron(0 9 ? * SUN,SAT *)"),
        ("0 9 * * 5-7", "cron(0 9 ? * SUN,FRI,SAT *)"),
        ("0 9 * * 3-6", "cron(0 9 ? * WED-SAT *)"),
        // Day-of-week names, any case.
        ("0 9 * * MON", "cron(0 9 ? * MON *)"),
        ("0 9 * * mon-fri", "cron(0 9 ? * MON-FRI *)"),
        ("0 9 * * SAT,SUN", "cron(0 9 ? * SUN,SAT *)"),
        ("0 9 * * sun,Tue,THU", "cron(0 9 ? * SUN,TUE,THU *)"),
        // EventBridge has no step in day-of-week: the days are listed.
        ("0 9 * * */2", "cron(0 9 ? * SUN,TUE,THU,SAT *)"),
        ("0 9 * * 1-5/2", "cron(0 9 ? * MON,WED,FRI *)"),
        // Steps: `*/n` starts at the field's first value.
        ("*/15 * * * *", "cron(0/15 * * * ? *)"),
        ("0 */6 * * *", "cron(0 0/6 * * ? *)"),
        ("0 0 */2 * *", "cron(0 0 1/2 * ? *)"),
        ("0 0 1 */3 *", "cron(0 0 1 1/3 ? *)"),
        ("5-59/10 * * * *", "cron(5/10 * * * ? *)"),
        ("0-50/20 * * * *", "cron(0/20 * * * ? *)"),
        // A step that stops before the field's end is spelled out.
        ("0 8-18/2 * * *", "cron(0 8,10,12,14,16,18 * * ? *)"),
        ("1-40/20 * * * *", "cron(1,21 * * * ? *)"),
        // Ranges and lists.
        ("0 9-17 * * *", "cron(0 9-17 * * ? *)"),
        ("0,30 9,12-14 * * *", "cron(0,30 9,12-14 * * ? *)"),
        ("0 0 1 jan,jul *", "cron(0 0 1 1,7 ? *)"),
        ("0 0 1 JAN-MAR *", "cron(0 0 1 1-3 ? *)"),
        ("0 0 * 6 1", "cron(0 0 ? 6 MON *)"),
    ];
    for (cron, expected) in table {
        assert_eq!(
            eventbridge_expression(cron).as_deref(),
            Ok(expected),
            "`{cron}`"
        );
    }
}

#[test]
fn what_eventbridge_cannot_express_is_an_error() {
    // (expression, part of the message)
    let table = [
        (
            "0 9 1 * MON",
            "restricts both day-of-month (`1`) and day-of-week (`MON`)",
        ),
        ("0 9 */2 * 1-5", "restricts both day-of-month"),
        ("0 9 ? * MON", "`?` is not a day-of-month"),
        ("0 9 L * *", "`L` is not a day-of-month"),
        ("0 9 * * MON#2", "`MON#2` is not a day-of-week"),
        ("0 9 * * 5L", "`5L` is not a day-of-week"),
        ("0 9 ? * MON *", "has 6 fields"),
        ("@daily", "nicknames like `@daily` are not supported"),
        ("0 25 * * *", "hour `25` is out of range (0-23)"),
        ("60 * * * *", "minute `60` is out of range (0-59)"),
        ("0 0 0 * *", "day-of-month `0` is out of range (1-31)"),
        ("0 0 * 13 *", "month `13` is out of range (1-12 or JAN-DEC)"),
        ("0 0 * * 8", "day-of-week `8` is out of range"),
        ("0 0 * * FUN", "`FUN` is not a day-of-week"),
        ("*/0 * * * *", "the step `0` must be a whole number above 0"),
        ("5/10 * * * *", "a step needs `*` or a range before it"),
        (
            "0 17-9 * * *",
            "hour range `17-9` runs backwards; to wrap around, list both parts: `17-23,0-9`",
        ),
        ("0 0 30 2 *", "never fires"),
        ("0 0 1,,2 * *", "has an empty list item"),
        ("", "has 0 fields"),
    ];
    for (cron, message) in table {
        match eventbridge_expression(cron) {
            Ok(expression) => panic!("`{cron}` translated to `{expression}`"),
            Err(e) => assert!(
                e.to_string().contains(message),
                "`{cron}`: `{e}` does not say `{message}`"
            ),
        }
    }
}

fn schedule(cron: &str, zone: &str) -> Schedule {
    Schedule {
        name: "s".into(),
        cron: CronExpr::parse(cron).expect("a valid expression"),
        timezone: zone.parse::<Tz>().expect("a known zone"),
        input: serde_json::json!({}),
        enabled: true,
        overlap: Default::default(),
        catch_up: CatchUp::Latest,
        max_catch_up: 100,
    }
}

/// Fire instants in `[start, end)`, as local times.
fn fires(s: &Schedule, start: &str, end: &str) -> Vec<String> {
    let (start, end) = (at(start), at(end));
    let mut out = Vec::new();
    let mut cursor = start - 1;
    while let Some(next) = s.next_after(cursor).filter(|n| *n < end) {
        out.push(s.local_time(next));
        cursor = next;
    }
    out
}

#[test]
fn spring_forward_skips_the_missing_time() {
    // 8 March 2026, New York: 02:00 EST becomes 03:00 EDT.
    let day = ("2026-03-08T00:00:00-05:00", "2026-03-09T00:00:00-04:00");
    let s = schedule("30 2 * * *", "America/New_York");
    assert_eq!(fires(&s, day.0, day.1), Vec::<String>::new());
    // The day before and after it runs as usual.
    assert_eq!(
        fires(&s, "2026-03-07T00:00:00-05:00", "2026-03-10T00:00:00-04:00"),
        ["2026-03-07T02:30:00-05:00", "2026-03-09T02:30:00-04:00"]
    );
    let hourly = fires(&schedule("0 * * * *", "America/New_York"), day.0, day.1);
    assert_eq!(hourly.len(), 23);
    assert_eq!(
        &hourly[..3],
        [
            "2026-03-08T00:00:00-05:00",
            "2026-03-08T01:00:00-05:00",
            "2026-03-08T03:00:00-04:00"
        ]
    );
    // Times around the gap are untouched.
    assert_eq!(
        fires(&schedule("30 1,3 * * *", "America/New_York"), day.0, day.1),
        ["2026-03-08T01:30:00-05:00", "2026-03-08T03:30:00-04:00"]
    );
}

#[test]
fn fall_back_runs_the_repeated_time_once() {
    // 1 November 2026, New York: 02:00 EDT becomes 01:00 EST; 01:00-01:59 comes twice.
    let day = ("2026-11-01T00:00:00-04:00", "2026-11-02T00:00:00-05:00");
    let s = schedule("30 1 * * *", "America/New_York");
    assert_eq!(fires(&s, day.0, day.1), ["2026-11-01T01:30:00-04:00"]);
    // Asked from inside the repeated hour, the next firing is the next day's.
    assert_eq!(
        s.next_after(at("2026-11-01T01:10:00-05:00")),
        Some(at("2026-11-02T01:30:00-05:00"))
    );
    let hourly = fires(&schedule("0 * * * *", "America/New_York"), day.0, day.1);
    // 25 hours long, 24 firings: 01:00 runs at its first occurrence only.
    assert_eq!(hourly.len(), 24);
    assert_eq!(
        &hourly[..3],
        [
            "2026-11-01T00:00:00-04:00",
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T02:00:00-05:00"
        ]
    );
    // In UTC an hourly job keeps its hour.
    let utc = fires(
        &schedule("0 * * * *", "UTC"),
        "2026-11-01T04:00:00Z",
        "2026-11-02T05:00:00Z",
    );
    assert_eq!(utc.len(), 25);
}

#[test]
fn the_seed_schedules_fire_where_expected() {
    let daily = schedule("0 0 * * *", "America/New_York");
    assert_eq!(
        daily.upcoming(at("2026-03-07T12:00:00Z"), 3),
        [
            at("2026-03-08T05:00:00Z"),
            at("2026-03-09T04:00:00Z"),
            at("2026-03-10T04:00:00Z")
        ]
    );
    let weekly = schedule("0 9 * * 1", "UTC");
    assert_eq!(
        weekly.upcoming(at("2026-01-01T00:00:00Z"), 2),
        [at("2026-01-05T09:00:00Z"), at("2026-01-12T09:00:00Z")]
    );
    assert_eq!(
        weekly.execution_id("cleanup", at("2026-01-05T09:00:00Z")),
        "cleanup-s-2026-01-05T09:00:00Z"
    );
}

#[test]
fn catch_up_policies() {
    let mut s = schedule("0 * * * *", "UTC");
    let last = at("2026-01-01T00:00:00Z");
    // On time: the one instant that came due.
    let due = s.due(last, last + HOUR + 500);
    assert_eq!(due.fire, [last + HOUR]);
    assert!(!due.dropped);
    // Nothing due yet.
    assert_eq!(s.due(last, last + HOUR - 1).fire, Vec::<u64>::new());
    assert_eq!(s.due(last, last + HOUR - 1).through, None);

    // Down for 10 hours and 30 minutes.
    let now = last + 10 * HOUR + 30 * MINUTE;
    let latest = s.due(last, now);
    assert_eq!(latest.fire, [last + 10 * HOUR]);
    assert_eq!(latest.through, Some(last + 10 * HOUR));
    assert!(latest.dropped);

    s.catch_up = CatchUp::None;
    let none = s.due(last, now);
    assert_eq!(none.fire, Vec::<u64>::new());
    assert_eq!(none.through, Some(last + 10 * HOUR));
    // Less than the grace late still counts as on time.
    assert_eq!(
        s.due(last, last + 10 * HOUR + 10_000).fire,
        [last + 10 * HOUR]
    );

    s.catch_up = CatchUp::All;
    let all = s.due(last, now);
    assert_eq!(
        all.fire,
        (1..=10).map(|h| last + h * HOUR).collect::<Vec<_>>()
    );
    assert!(!all.dropped);
    s.max_catch_up = 3;
    let bounded = s.due(last, now);
    assert_eq!(bounded.fire, [8, 9, 10].map(|h| last + h * HOUR));
    assert!(bounded.dropped);

    // The instants before a given one, newest first.
    s.catch_up = CatchUp::Latest;
    assert_eq!(
        s.recent(last + 3 * HOUR, 5),
        [2, 1, 0]
            .map(|h| last + h * HOUR)
            .into_iter()
            .chain([last - HOUR, last - 2 * HOUR])
            .collect::<Vec<_>>()
    );

    // A year away costs the instants kept, not every minute since.
    let mut minutely = schedule("* * * * *", "UTC");
    minutely.catch_up = CatchUp::All;
    minutely.max_catch_up = 2;
    let year = 365 * 24 * HOUR;
    let due = minutely.due(last, last + year);
    assert_eq!(due.fire, [last + year - MINUTE, last + year]);
    assert!(due.dropped);
}

fn problems(text: &str) -> Vec<String> {
    match Workflow::from_text(text, Format::Yaml) {
        Ok(_) => panic!("should not validate:\n{text}"),
        Err(errors) => errors.problems.iter().map(|p| p.to_string()).collect(),
    }
}

const STEPS: &str = "steps:\n  a: { function: f, mutates: false, retry: { max_attempts: 1 } }\n";

#[test]
fn validation_names_the_schedule_and_field() {
    let text = format!(
        "name: report\n{STEPS}schedules:\n  daily: {{ cron: '0 25 * * *', timezone: America/New_York }}\n  weekly: {{ cron: '0 9 * * MON', timezone: Mars/Olympus_Mons }}\n  typo: {{ cron: '0 9 * * *', timezone: america/new_york }}\n"
    );
    let found = problems(&text);
    assert_eq!(
        found,
        [
            "`schedules.daily.cron`: `0 25 * * *` is not a valid cron expression: hour `25` is out of range (0-23)",
            "`schedules.weekly.timezone`: `Mars/Olympus_Mons` is not an IANA time zone (for example `America/New_York`, `Europe/Paris` or `UTC`)",
            "`schedules.typo.timezone`: `america/new_york` is not an IANA time zone (did you mean `America/New_York`?)",
        ]
    );
}

#[test]
fn schedule_problems_come_with_every_other_problem() {
    let text = "name: report\nsteps:\n  a: { function: f, needs: [b], mutates: false, retry: { max_attempts: 1 } }\nschedules:\n  - { name: nightly, cron: '0 0 1 * MON' }\n  - { cron: '0 0 * * *' }\n  - { name: nightly, cron: '0 0 * * *', catch_up: latest, max_catch_up: 5 }\n  - { name: 'no spaces', cron: '0 0 * * *' }\n";
    let found = problems(text);
    let expected = [
        "step `a`, `needs`: unknown step `b`",
        "`schedules.nightly.cron`: `0 0 1 * MON` is not a valid cron expression: restricts both day-of-month (`1`) and day-of-week (`MON`)",
        "`schedules[1].name`: a schedule in the list form needs a `name`",
        "`schedules.nightly`: duplicate schedule name",
        "`schedules.nightly.max_catch_up`: only applies to `catch_up: all`",
        "`schedules.no spaces`: schedule names use 1 to 64 letters, digits, `-` and `_`",
    ];
    for e in expected {
        assert!(
            found.iter().any(|f| f.contains(e)),
            "no `{e}` in {found:#?}"
        );
    }
    assert_eq!(found.len(), expected.len(), "{found:#?}");
}

#[test]
fn both_forms_read_the_same_and_defaults_apply() {
    let map = format!(
        "name: report\n{STEPS}schedules:\n  daily:\n    cron: '0 0 * * *'\n    timezone: America/New_York\n    input: {{ kind: daily }}\n  hourly: {{ cron: '0 * * * *', overlap: allow, catch_up: all, max_catch_up: 5, enabled: false }}\n"
    );
    let list = format!(
        "name: report\n{STEPS}schedules:\n  - name: daily\n    cron: '0 0 * * *'\n    timezone: America/New_York\n    input: {{ kind: daily }}\n  - {{ name: hourly, cron: '0 * * * *', overlap: allow, catch_up: all, max_catch_up: 5, enabled: false }}\n"
    );
    let a = Workflow::from_text(&map, Format::Yaml).expect("valid");
    let b = Workflow::from_text(&list, Format::Yaml).expect("valid");
    assert_eq!(a.definition, b.definition);
    assert_eq!(a.schedules, b.schedules);
    let daily = &a.schedules[0];
    assert_eq!(&*daily.name, "daily");
    assert_eq!(daily.timezone, Tz::America__New_York);
    assert_eq!(daily.input, serde_json::json!({ "kind": "daily" }));
    assert!(daily.enabled);
    assert_eq!(daily.overlap, schedule::Overlap::Skip);
    assert_eq!(daily.catch_up, CatchUp::Latest);
    let hourly = &a.schedules[1];
    assert_eq!(hourly.timezone, Tz::UTC);
    assert_eq!(hourly.input, serde_json::json!({}));
    assert!(!hourly.enabled);
    assert_eq!(hourly.overlap, schedule::Overlap::Allow);
    assert_eq!((hourly.catch_up, hourly.max_catch_up), (CatchUp::All, 5));
    // Stored as JSON, a definition keeps the map form and reads back the same.
    let json = serde_json::to_string(&a.definition).expect("serialises");
    assert!(json.contains(r#""schedules":{"daily":"#), "{json}");
    let again = Workflow::from_text(&json, Format::Json).expect("valid");
    assert_eq!(again.definition, a.definition);
}
