//! Limits on what Baton accepts, and the pure checks that enforce them.
//!
//! Every path that takes something from outside (a definition, an
//! execution's input, a signal's payload, an execution id) checks it here
//! before anything is stored, so bad input gets one clear error naming the
//! problem and the limit instead of crashing a process or creating an
//! execution that can never be read again. Each check returns a
//! [`LimitError`]; none of them recurses, so they are safe on any input.
//!
//! | limit | value | why |
//! |---|---|---|
//! | [`MAX_JSON_DEPTH`] | 64 | stored state wraps a value a few levels deeper, and JSON readers (serde_json) refuse more than 128 levels |
//! | [`MAX_EXECUTION_ID_LEN`] | 128 | ids appear in URLs, queue messages and storage keys |
//! | [`MAX_STEPS`] | 10,000 | a definition is compiled and held in memory whole |
//! | [`MAX_EXPRESSION_LEN`] | 4,096 bytes | the CEL parser's work grows with the text |
//! | [`MAX_EXPRESSION_DEPTH`] | 24 | the CEL parser and evaluator recurse once per level |
//! | [`MAX_FOR_EACH_ITEMS`] | 10,000 | each element is a unit of the execution's state, which a snapshot writes whole |

use serde_json::Value;
use thiserror::Error;

/// How deeply arrays and objects may nest in an execution's input, a signal's
/// payload, a definition, or a value an expression produces. `{}` and `[]`
/// are one level; a scalar is none.
pub const MAX_JSON_DEPTH: usize = 64;

/// The longest execution id, in characters (all ASCII).
pub const MAX_EXECUTION_ID_LEN: usize = 128;

/// The most steps one definition may have.
pub const MAX_STEPS: usize = 10_000;

/// The longest expression (the text inside one `${ }`), in bytes.
pub const MAX_EXPRESSION_LEN: usize = 4096;

/// How deeply one expression may nest.
///
/// Checked twice: on the text before the CEL parser sees it (brackets,
/// parentheses and braces, chains of `!` and `-`, and `?` conditionals),
/// and on the parsed expression, where every operator, call, member access,
/// index and literal is a level.
///
/// Measured with the `cel` crate in a debug build (the worst case; release
/// frames are far smaller): the parser survives only 12 nested parentheses
/// on a 2 MiB thread stack and 53 on the 8 MiB main thread, so expressions
/// are parsed on a thread of their own with a 64 MiB stack, where the
/// worst text within these limits needs under 8 MiB. The evaluator, which
/// runs on whatever thread applies the event (a Tokio worker has 2 MiB),
/// survives 53 nested operators on 2 MiB; at 24 levels it needs under 1 MiB
/// (32 would need 1.25 MiB). Expressions in real workflows nest about 5.
pub const MAX_EXPRESSION_DEPTH: usize = 24;

/// The most elements a `for_each` list may have, checked when the step
/// starts (the list is only known then); a longer one fails the step with
/// `ForEachTooLarge`.
///
/// The engine's work per event does not depend on the length, but the
/// execution's state holds the list and one unit per element, and a shell
/// stores that state: at 10,000 elements with small items and outputs it is
/// about 1 MB as JSON (2 MB once every element is compensated). That is what
/// a store that writes the state on every event, or every few events, can
/// still afford; a store with a smaller item limit (DynamoDB's 400 KB)
/// refuses a larger state with its own error. A larger job is split into
/// batches (a `for_each` over lists of items) or into child executions.
pub const MAX_FOR_EACH_ITEMS: usize = 10_000;

/// Signals one execution may take: the ids it remembers to recognise a
/// repeat stay within its state.
pub const MAX_SIGNALS: u32 = 1_000;

/// Something over a limit, named with the limit.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LimitError {
    #[error("{what} nests arrays and objects deeper than the limit of {limit} levels")]
    JsonTooDeep { what: String, limit: usize },
    /// A signal id breaks the id rule; `problem` says how, as for an execution id.
    #[error("signal id `{shown}` is not valid: {problem}", shown = truncate(.id, 32))]
    BadSignalId { id: String, problem: String },
    #[error(
        "the execution id is empty: use 1 to {MAX_EXECUTION_ID_LEN} ASCII letters, digits, `-`, `_`, `.` or `:`"
    )]
    EmptyExecutionId,
    #[error(
        "execution id `{shown}` is {length} characters long, more than the limit of {limit}",
        shown = truncate(.id, 32)
    )]
    ExecutionIdTooLong {
        id: String,
        length: usize,
        limit: usize,
    },
    #[error(
        "execution id `{shown}` {problem}: use 1 to {MAX_EXECUTION_ID_LEN} ASCII letters, digits, `-`, `_`, `.` or `:`",
        shown = truncate(.id, 64)
    )]
    BadExecutionId { id: String, problem: String },
    #[error("the workflow has {steps} steps, more than the limit of {limit}")]
    TooManySteps { steps: usize, limit: usize },
    #[error(
        "expression `{shown}` is {length} bytes long, more than the limit of {limit}",
        shown = truncate(.text, 40)
    )]
    ExpressionTooLong {
        text: String,
        length: usize,
        limit: usize,
    },
    #[error(
        "expression `{shown}` nests deeper than the limit of {limit} levels (brackets, operators, calls and member accesses each count)",
        shown = truncate(.text, 60)
    )]
    ExpressionTooDeep { text: String, limit: usize },
    #[error("`for_each` of step `{step}` gave {length} elements, more than the limit of {limit}")]
    ForEachTooLarge {
        step: String,
        length: usize,
        limit: usize,
    },
}

impl LimitError {
    /// The limit that was exceeded, where it is a number.
    pub fn limit(&self) -> Option<usize> {
        match self {
            LimitError::JsonTooDeep { limit, .. }
            | LimitError::ExecutionIdTooLong { limit, .. }
            | LimitError::TooManySteps { limit, .. }
            | LimitError::ExpressionTooLong { limit, .. }
            | LimitError::ExpressionTooDeep { limit, .. }
            | LimitError::ForEachTooLarge { limit, .. } => Some(*limit),
            LimitError::EmptyExecutionId => Some(MAX_EXECUTION_ID_LEN),
            LimitError::BadExecutionId { .. } | LimitError::BadSignalId { .. } => None,
        }
    }
}

/// At most `max` characters of `text`, with `…` when cut.
fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// Checks that `value` nests arrays and objects at most [`MAX_JSON_DEPTH`]
/// levels deep; `what` names it in the error ("the execution input").
pub fn check_json_depth(value: &Value, what: &str) -> Result<(), LimitError> {
    if json_depth(value, MAX_JSON_DEPTH + 1) > MAX_JSON_DEPTH {
        return Err(LimitError::JsonTooDeep {
            what: what.to_string(),
            limit: MAX_JSON_DEPTH,
        });
    }
    Ok(())
}

/// How deeply `value` nests arrays and objects, counting no further than
/// `stop` (so a huge value costs no more than it must). Iterative.
pub fn json_depth(value: &Value, stop: usize) -> usize {
    let mut deepest = 0;
    let mut pending: Vec<(&Value, usize)> = vec![(value, 0)];
    while let Some((value, depth)) = pending.pop() {
        let depth = depth + 1;
        match value {
            Value::Array(items) => pending.extend(items.iter().map(|child| (child, depth))),
            Value::Object(map) => pending.extend(map.values().map(|child| (child, depth))),
            _ => continue,
        }
        deepest = deepest.max(depth);
        if deepest >= stop {
            return deepest;
        }
    }
    deepest
}

/// Checks the nesting of JSON *text* before it is parsed: `[` and `{`
/// outside strings, at most [`MAX_JSON_DEPTH`] deep. Text that is not JSON
/// is left to the parser; this only guarantees the parser is not asked to
/// go deeper than the limit (serde_json itself stops at 128 with a message
/// that does not name Baton's limit).
pub fn check_json_text_depth(text: &[u8], what: &str) -> Result<(), LimitError> {
    if json_text_depth(text, MAX_JSON_DEPTH + 1) > MAX_JSON_DEPTH {
        return Err(LimitError::JsonTooDeep {
            what: what.to_string(),
            limit: MAX_JSON_DEPTH,
        });
    }
    Ok(())
}

/// How deeply JSON text nests `[` and `{` outside strings, counting no
/// further than `stop`. For valid JSON this is [`json_depth`] of its value.
pub fn json_text_depth(text: &[u8], stop: usize) -> usize {
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in text {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
                if deepest >= stop {
                    break;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// The one rule for execution ids, on every path that creates an execution
/// (the API, the CLI, the coordinator's start, schedules): 1 to
/// [`MAX_EXECUTION_ID_LEN`] ASCII letters, digits, `-`, `_`, `.` or `:`, and
/// not `.` or `..` (ids appear in URL paths, queue messages and storage
/// keys). Schedule ids such as `reports-daily-2026-03-08T05:00:00Z` and ids
/// such as `order-1001` are valid.
/// A signal id follows the execution id's rule (1 to 128 of
/// `A-Z a-z 0-9 . _ : -`): it comes from the same kinds of clients.
pub fn check_signal_id(id: &str) -> Result<(), LimitError> {
    check_execution_id(id).map_err(|e| LimitError::BadSignalId {
        id: id.to_string(),
        problem: e.to_string(),
    })
}

pub fn check_execution_id(id: &str) -> Result<(), LimitError> {
    if id.is_empty() {
        return Err(LimitError::EmptyExecutionId);
    }
    let length = id.chars().count();
    if length > MAX_EXECUTION_ID_LEN {
        return Err(LimitError::ExecutionIdTooLong {
            id: id.to_string(),
            length,
            limit: MAX_EXECUTION_ID_LEN,
        });
    }
    let bad = |problem: String| LimitError::BadExecutionId {
        id: id.to_string(),
        problem,
    };
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
    {
        let shown = if c.is_control() || c.is_whitespace() {
            format!("{:?}", c)
        } else {
            format!("`{c}`")
        };
        return Err(bad(format!("contains {shown}")));
    }
    if id == "." || id == ".." {
        return Err(bad("is a path segment".into()));
    }
    Ok(())
}

/// Checks the number of steps of a definition against [`MAX_STEPS`].
pub fn check_step_count(steps: usize) -> Result<(), LimitError> {
    if steps > MAX_STEPS {
        return Err(LimitError::TooManySteps {
            steps,
            limit: MAX_STEPS,
        });
    }
    Ok(())
}

/// Checks the length of the list a `for_each` step `step` iterates over
/// against [`MAX_FOR_EACH_ITEMS`].
pub fn check_for_each_len(step: &str, length: usize) -> Result<(), LimitError> {
    if length > MAX_FOR_EACH_ITEMS {
        return Err(LimitError::ForEachTooLarge {
            step: step.to_string(),
            length,
            limit: MAX_FOR_EACH_ITEMS,
        });
    }
    Ok(())
}

/// Checks an expression's text (what is inside `${ }`) before it is parsed:
/// at most [`MAX_EXPRESSION_LEN`] bytes, nested at most
/// [`MAX_EXPRESSION_DEPTH`] levels. Brackets inside string literals and
/// comments do not count; string literals are read as CEL's lexer reads
/// them, so the parser can never see more nesting than counted here.
pub fn check_expression_text(text: &str) -> Result<(), LimitError> {
    // Nesting first: it is the likelier reason a very long expression is refused.
    if expression_nesting(text) > MAX_EXPRESSION_DEPTH {
        return Err(LimitError::ExpressionTooDeep {
            text: text.to_string(),
            limit: MAX_EXPRESSION_DEPTH,
        });
    }
    if text.len() > MAX_EXPRESSION_LEN {
        return Err(LimitError::ExpressionTooLong {
            text: text.to_string(),
            length: text.len(),
            limit: MAX_EXPRESSION_LEN,
        });
    }
    Ok(())
}

/// The deepest nesting in CEL text: open brackets, plus `?` conditionals
/// open at their bracket level, plus the run of prefix `!` / `-` at that
/// point. An upper bound on the parser's recursion, not the exact depth.
pub fn expression_nesting(text: &str) -> usize {
    let bytes = text.as_bytes();
    // One entry per open bracket: the `?` conditionals seen at that level.
    let mut levels: Vec<usize> = vec![0];
    let mut conditionals = 0usize;
    let mut unary_run = 0usize;
    let mut deepest = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if byte == b'/' && bytes.get(i + 1) == Some(&b'/') {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if let Some(end) = string_literal_end(bytes, i) {
            unary_run = 0;
            i = end;
            continue;
        }
        match byte {
            b'(' | b'[' | b'{' => {
                levels.push(0);
                unary_run = 0;
            }
            b')' | b']' | b'}' => {
                if levels.len() > 1 {
                    conditionals -= levels.pop().unwrap_or(0);
                }
                unary_run = 0;
            }
            b'?' => {
                if let Some(level) = levels.last_mut() {
                    *level += 1;
                }
                conditionals += 1;
                unary_run = 0;
            }
            b'!' if bytes.get(i + 1) != Some(&b'=') => unary_run += 1,
            b'-' => unary_run += 1,
            _ => unary_run = 0,
        }
        deepest = deepest.max(levels.len() - 1 + conditionals + unary_run);
        i += 1;
    }
    deepest
}

/// If a CEL string or bytes literal starts at `start` (with its `r`, `b` or
/// `br` prefix), the index just past it. Follows CEL's lexer: a literal
/// that does not close (or has a bad escape) is not one, and the lexer
/// reads on from the next character.
fn string_literal_end(bytes: &[u8], start: usize) -> Option<usize> {
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    // A prefix letter continuing an identifier is part of that identifier.
    if matches!(bytes.get(start), Some(b'b' | b'B' | b'r' | b'R'))
        && start > 0
        && is_ident(bytes[start - 1])
    {
        return None;
    }
    let mut at = start;
    if matches!(bytes.get(at), Some(b'b' | b'B')) {
        at += 1;
    }
    let raw = matches!(bytes.get(at), Some(b'r' | b'R'));
    if raw {
        at += 1;
    }
    let quote = *bytes.get(at)?;
    if quote != b'\'' && quote != b'"' {
        return None;
    }
    let triple = [quote; 3];
    if bytes[at..].starts_with(&triple) {
        let mut j = at + 3;
        while j < bytes.len() {
            if bytes[j..].starts_with(&triple) {
                return Some(j + 3);
            }
            if !raw && bytes[j] == b'\\' {
                match escape_len(&bytes[j..]) {
                    Some(n) => j += n,
                    None => break,
                }
            } else {
                j += 1;
            }
        }
        // Unclosed as a triple: the lexer tries the single-quoted form.
    }
    let mut j = at + 1;
    while j < bytes.len() {
        match bytes[j] {
            b'\n' | b'\r' => return None,
            b if b == quote => return Some(j + 1),
            b'\\' if !raw => j += escape_len(&bytes[j..])?,
            _ => j += 1,
        }
    }
    None
}

/// Length of the escape sequence at the start of `bytes` (which begins with
/// a backslash), if it is a valid CEL escape.
fn escape_len(bytes: &[u8]) -> Option<usize> {
    let all = |range: std::ops::Range<usize>, ok: fn(&u8) -> bool| {
        bytes.get(range).is_some_and(|s| s.iter().all(ok))
    };
    match bytes.get(1)? {
        b'a' | b'b' | b'f' | b'n' | b'r' | b't' | b'v' | b'"' | b'\'' | b'\\' | b'?' | b'`' => {
            Some(2)
        }
        b'0'..=b'3' if all(2..4, |b| (b'0'..=b'7').contains(b)) => Some(4),
        b'x' | b'X' if all(2..4, u8::is_ascii_hexdigit) => Some(4),
        b'u' if all(2..6, u8::is_ascii_hexdigit) => Some(6),
        b'U' if all(2..10, u8::is_ascii_hexdigit) => Some(10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested_arrays(depth: usize) -> Value {
        let mut value = json!(1);
        for _ in 0..depth {
            value = Value::Array(vec![value]);
        }
        value
    }

    #[test]
    fn json_depth_counts_arrays_and_objects() {
        assert_eq!(json_depth(&json!(1), 100), 0);
        assert_eq!(json_depth(&json!({}), 100), 1);
        assert_eq!(json_depth(&json!({"a": [1, {"b": []}]}), 100), 4);
        assert_eq!(json_depth(&nested_arrays(10), 100), 10);
        assert_eq!(json_depth(&nested_arrays(10), 4), 4);
    }

    #[test]
    fn json_depth_limit_names_what_and_the_limit() {
        assert!(check_json_depth(&nested_arrays(MAX_JSON_DEPTH), "the input").is_ok());
        let error = check_json_depth(&nested_arrays(MAX_JSON_DEPTH + 1), "the input").unwrap_err();
        assert_eq!(
            error,
            LimitError::JsonTooDeep {
                what: "the input".into(),
                limit: MAX_JSON_DEPTH
            }
        );
        assert_eq!(
            error.to_string(),
            "the input nests arrays and objects deeper than the limit of 64 levels"
        );
        assert_eq!(error.limit(), Some(64));
    }

    #[test]
    fn json_depth_check_does_not_recurse() {
        // Built and dropped iteratively: a recursive walk or drop would
        // overflow the test thread's stack.
        let mut value = json!(1);
        for _ in 0..200_000 {
            value = Value::Array(vec![value]);
        }
        assert!(check_json_depth(&value, "it").is_err());
        let mut pending = vec![value];
        while let Some(mut v) = pending.pop() {
            if let Value::Array(items) = &mut v {
                pending.append(items);
            }
        }
    }

    #[test]
    fn json_text_depth_ignores_brackets_in_strings() {
        let deep = format!("{}1{}", "[".repeat(65), "]".repeat(65));
        assert!(check_json_text_depth(deep.as_bytes(), "the body").is_err());
        let ok = format!("{}1{}", "[".repeat(64), "]".repeat(64));
        assert!(check_json_text_depth(ok.as_bytes(), "the body").is_ok());
        let in_string = format!(r#"{{"a": "{}\"{}"}}"#, "[".repeat(100), "{".repeat(100));
        assert!(check_json_text_depth(in_string.as_bytes(), "the body").is_ok());
        let siblings = "[[1],[2],[3]]".repeat(1000);
        assert!(check_json_text_depth(siblings.as_bytes(), "the body").is_ok());
        let value = json!({"a": [1, {"b": "]]}}", "c": [[]]}], "d": {}});
        let text = value.to_string();
        assert_eq!(
            json_text_depth(text.as_bytes(), 100),
            json_depth(&value, 100)
        );
        assert_eq!(json_text_depth(text.as_bytes(), 100), 5);
    }

    #[test]
    fn execution_ids() {
        for ok in [
            "order-1001",
            "reports-daily-report-2026-03-08T05:00:00Z",
            "order-1:retry_2.a",
            "0195a1b2c3d-1a2b3c4d-0001",
            "a..b",
            "...",
            &"x".repeat(MAX_EXECUTION_ID_LEN),
        ] {
            assert_eq!(check_execution_id(ok), Ok(()), "{ok}");
        }
        assert_eq!(check_execution_id(""), Err(LimitError::EmptyExecutionId));
        assert!(matches!(
            check_execution_id(&"x".repeat(MAX_EXECUTION_ID_LEN + 1)),
            Err(LimitError::ExecutionIdTooLong {
                length: 129,
                limit: 128,
                ..
            })
        ));
        for bad in ["a/b", "../etc", "a b", "é", "a\nb", ".", "..", "a%2F"] {
            assert!(
                matches!(
                    check_execution_id(bad),
                    Err(LimitError::BadExecutionId { .. })
                ),
                "{bad}"
            );
        }
        let long = format!("{}../x", "a".repeat(306));
        let message = check_execution_id(&long).unwrap_err().to_string();
        assert!(
            message.contains("310 characters long, more than the limit of 128"),
            "{message}"
        );
        let message = check_execution_id("a/b").unwrap_err().to_string();
        assert!(message.contains("contains `/`"), "{message}");
    }

    #[test]
    fn step_count() {
        assert!(check_step_count(MAX_STEPS).is_ok());
        assert_eq!(
            check_step_count(MAX_STEPS + 1).unwrap_err().to_string(),
            "the workflow has 10001 steps, more than the limit of 10000"
        );
    }

    #[test]
    fn for_each_length() {
        assert!(check_for_each_len("each", MAX_FOR_EACH_ITEMS).is_ok());
        let error = check_for_each_len("each", MAX_FOR_EACH_ITEMS + 1).unwrap_err();
        assert_eq!(
            error.to_string(),
            "`for_each` of step `each` gave 10001 elements, more than the limit of 10000"
        );
        assert_eq!(error.limit(), Some(MAX_FOR_EACH_ITEMS));
    }

    #[test]
    fn expression_nesting_counts_brackets_conditionals_and_unary_chains() {
        assert_eq!(expression_nesting("input.a + 1"), 0);
        assert_eq!(expression_nesting("f(g(x), [1, {'a': 2}])"), 3);
        assert_eq!(expression_nesting("((((1))))"), 4);
        assert_eq!(expression_nesting("!!!!true"), 4);
        assert_eq!(expression_nesting("- - -1"), 3);
        assert_eq!(expression_nesting("a != b"), 0);
        assert_eq!(expression_nesting("a ? b : c ? d : e"), 2);
        assert_eq!(expression_nesting("(a ? b : c) + (d ? e : f)"), 2);
        assert_eq!(expression_nesting("x.map(i, i + 1)"), 1);
    }

    #[test]
    fn expression_nesting_skips_strings_and_comments() {
        assert_eq!(expression_nesting("'((((' + \"[[[[\" + x"), 0);
        assert_eq!(expression_nesting(r"'it\'s (' + x"), 0);
        assert_eq!(expression_nesting(r"r'\' + (x)"), 1);
        assert_eq!(expression_nesting(r"b'\x00(' + br'(('"), 0);
        assert_eq!(expression_nesting("'''a ' ( ''' + x"), 0);
        assert_eq!(expression_nesting("x // it's ((((\n + (1)"), 1);
    }

    #[test]
    fn expression_nesting_counts_what_the_lexer_reads_as_code() {
        // A quote that never closes (or holds a bad escape) starts no string:
        // the lexer reads on, so the brackets after it are code.
        assert_eq!(expression_nesting("'x ((((("), 5);
        assert_eq!(expression_nesting(r"'\q ((((' "), 4);
        assert_eq!(expression_nesting("'a\n((((1))))'"), 4);
        // An identifier ending in `r` is not a raw-string prefix.
        assert_eq!(expression_nesting(r"xr'\'' + ((1))"), 2);
    }

    #[test]
    fn expression_text_limits() {
        assert!(check_expression_text("input.a > 1").is_ok());
        let over = MAX_EXPRESSION_DEPTH + 1;
        let deep = format!("{}1{}", "(".repeat(over), ")".repeat(over));
        let error = check_expression_text(&deep).unwrap_err();
        assert!(matches!(
            error,
            LimitError::ExpressionTooDeep { limit: 24, .. }
        ));
        assert!(
            error
                .to_string()
                .contains("deeper than the limit of 24 levels"),
            "{error}"
        );
        let at = MAX_EXPRESSION_DEPTH;
        let ok = format!("{}1{}", "(".repeat(at), ")".repeat(at));
        assert!(check_expression_text(&ok).is_ok());
        let long = format!("1{}", " + 1".repeat(1200));
        assert!(matches!(
            check_expression_text(&long),
            Err(LimitError::ExpressionTooLong { limit: 4096, .. })
        ));
    }
}
