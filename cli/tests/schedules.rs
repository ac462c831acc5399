//! `baton schedules` lists fire times in the schedule's zone and in UTC;
//! `baton validate` names a bad schedule's field; `baton deploy` shows them.

mod common;

use common::{Sandbox, path_arg};

const DEFINITION: &str = r#"name: reports
steps:
  pause: { wait: 1h }
schedules:
  daily:
    cron: "0 0 * * *"
    timezone: America/New_York
  weekly: { cron: "0 9 * * MON", overlap: allow, enabled: false }
"#;

fn write(sb: &Sandbox, name: &str, text: &str) -> String {
    let path = sb.path().join(name);
    std::fs::write(&path, text).expect("write the definition");
    path_arg(&path)
}

#[test]
fn schedules_prints_fire_times_in_zone_and_utc() {
    let sb = Sandbox::new();
    let file = write(&sb, "reports.yaml", DEFINITION);
    let outcome = sb.baton(&[
        "schedules",
        &file,
        "--next",
        "3",
        "--after",
        "2026-03-07T12:00:00Z",
    ]);
    outcome.expect_code(0);
    let expected = "\
daily: `0 0 * * *` in America/New_York (EventBridge: cron(0 0 * * ? *)), overlap Skip, catch-up Latest
  2026-03-08T00:00:00-05:00  2026-03-08T05:00:00Z  reports-daily-2026-03-08T05:00:00Z
  2026-03-09T00:00:00-04:00  2026-03-09T04:00:00Z  reports-daily-2026-03-09T04:00:00Z
  2026-03-10T00:00:00-04:00  2026-03-10T04:00:00Z  reports-daily-2026-03-10T04:00:00Z

weekly: `0 9 * * MON` in UTC (EventBridge: cron(0 9 ? * MON *)), overlap Allow, catch-up Latest, disabled
  2026-03-09T09:00:00+00:00  2026-03-09T09:00:00Z  reports-weekly-2026-03-09T09:00:00Z
  2026-03-16T09:00:00+00:00  2026-03-16T09:00:00Z  reports-weekly-2026-03-16T09:00:00Z
  2026-03-23T09:00:00+00:00  2026-03-23T09:00:00Z  reports-weekly-2026-03-23T09:00:00Z
";
    assert_eq!(outcome.stdout, expected);

    let bad_time = sb.baton(&["schedules", &file, "--after", "yesterday"]);
    bad_time.expect_code(2);
    assert!(
        bad_time.stderr.contains("not an RFC 3339 time"),
        "{bad_time:?}"
    );
}

#[test]
fn validate_names_the_schedule_and_field() {
    let sb = Sandbox::new();
    let file = write(
        &sb,
        "bad.yaml",
        "name: reports\nsteps:\n  pause: { wait: 1h }\nschedules:\n  daily: { cron: '0 0 * *', timezone: Europe/Atlantis }\n",
    );
    let outcome = sb.baton(&["validate", &file]);
    outcome.expect_code(2);
    assert!(
        outcome.stderr.contains(
            "`schedules.daily.cron`: `0 0 * *` is not a valid cron expression: has 4 fields"
        ),
        "{outcome:?}"
    );
    assert!(
        outcome
            .stderr
            .contains("`schedules.daily.timezone`: `Europe/Atlantis` is not an IANA time zone"),
        "{outcome:?}"
    );
}

#[test]
fn deploy_lists_the_schedules() {
    let sb = Sandbox::new();
    let file = write(&sb, "reports.yaml", DEFINITION);
    let outcome = sb.baton(&["deploy", &file]);
    outcome.expect_code(0);
    assert_eq!(
        outcome.stdout,
        "workflow `reports` version 1\n  schedule `daily`: `0 0 * * *` in America/New_York\n  schedule `weekly`: `0 9 * * MON` in UTC (disabled)\n"
    );
}
