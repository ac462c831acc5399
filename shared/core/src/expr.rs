//! Expressions and templates: CEL inside `${ ... }`.
//!
//! A string that is exactly one `${ expr }` takes the expression's value with
//! its type (a list stays a list); a string mixing text and `${ }` becomes
//! text. Expressions are compiled once, when a definition is validated, and
//! know which `steps.NAME` they read so evaluation converts only those
//! outputs. In scope: `input`, `steps.NAME.output`, `steps.NAME.status`,
//! `execution.id`, `execution.workflow`, and in `for_each` steps `item` and
//! `index`.
//!
//! Expressions cannot exhaust the stack: their text is checked against
//! [`limits::MAX_EXPRESSION_LEN`] and [`limits::MAX_EXPRESSION_DEPTH`] before
//! the CEL parser sees it, the parser runs on a thread with a stack sized
//! for those limits, and the parsed expression must nest no deeper than the
//! limit either, so evaluating it fits on any thread. Values an expression
//! produces are refused beyond [`limits::MAX_JSON_DEPTH`].

use std::cell::Cell;
use std::sync::{Arc, LazyLock, Mutex};

use cel::common::ast::{EntryExpr, Expr as Ast, IdedExpr};
use cel::{Context, Env, Program};
use serde_json::Value;
use thiserror::Error;

use crate::limits::{self, LimitError, MAX_EXPRESSION_DEPTH};

static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// Variables an expression may name at its root.
pub const ROOT_VARIABLES: &[&str] = &["input", "steps", "execution", "item", "index"];

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CompileError {
    #[error("expression `{text}` does not compile: {message}")]
    Syntax { text: String, message: String },
    #[error("unclosed `${{` in `{0}`")]
    Unclosed(String),
    #[error(transparent)]
    Limit(#[from] LimitError),
}

/// The stack of the thread expressions are parsed on. The `cel` parser
/// recurses deeply per nesting level (about 170 KiB per parenthesis in a
/// debug build); the worst text within [`MAX_EXPRESSION_DEPTH`] and
/// [`limits::MAX_EXPRESSION_LEN`] needs under 8 MiB. Only the pages used
/// are ever touched.
const COMPILE_STACK_BYTES: usize = 64 * 1024 * 1024;

thread_local! {
    static ON_COMPILE_STACK: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` on a thread with a [`COMPILE_STACK_BYTES`] stack, or right here
/// if this already is one. Validation runs whole on one such thread, so
/// compiling its expressions spawns no more.
pub(crate) fn on_compile_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if ON_COMPILE_STACK.get() {
        return f();
    }
    let slot = Mutex::new(Some(f));
    let take = || slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    let outcome = std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("baton-compile".into())
            .stack_size(COMPILE_STACK_BYTES)
            .spawn_scoped(scope, || {
                ON_COMPILE_STACK.set(true);
                take().map(|f| f())
            });
        spawned.map(|handle| handle.join())
    });
    match outcome {
        Ok(Ok(Some(value))) => value,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        // No thread could be started (the process is out of threads or
        // memory): parse here, where the text limits still bound the depth.
        Ok(Ok(None)) | Err(_) => match take() {
            Some(f) => f(),
            None => unreachable!("the closure runs once, on the thread or here"),
        },
    }
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("`{text}`: {message}")]
pub struct EvalError {
    pub text: String,
    pub message: String,
}

/// A compiled CEL expression and what it reads.
#[derive(Debug)]
pub struct Expr {
    source: String,
    program: Program,
    variables: Vec<String>,
    steps: StepRefs,
    /// `(step, field)` for every `steps.NAME.FIELD` it reads.
    step_fields: Vec<(String, String)>,
    /// Identifiers it names at its root that no comprehension binds.
    free: Vec<String>,
}

/// Which step outputs an expression reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepRefs {
    Named(Vec<String>),
    /// `steps` used other than as `steps.NAME` (e.g. `steps[x]`): give it every step.
    All,
}

impl Expr {
    /// Compiles one expression (the text inside `${ }`).
    pub fn compile(source: &str) -> Result<Expr, CompileError> {
        limits::check_expression_text(source)?;
        on_compile_stack(|| Expr::parse(source))
    }

    fn parse(source: &str) -> Result<Expr, CompileError> {
        let program = ENV.compile(source).map_err(|e| CompileError::Syntax {
            text: source.to_string(),
            message: e.to_string().replace("ERROR: <input>:", "at "),
        })?;
        if ast_depth(program.expression(), MAX_EXPRESSION_DEPTH + 1) > MAX_EXPRESSION_DEPTH {
            return Err(LimitError::ExpressionTooDeep {
                text: source.to_string(),
                limit: MAX_EXPRESSION_DEPTH,
            }
            .into());
        }
        let mut variables: Vec<String> = program
            .references()
            .variables()
            .into_iter()
            .map(str::to_string)
            .collect();
        variables.sort();
        let mut names = Names::default();
        names.walk(program.expression(), &mut Vec::new());
        names.free.sort();
        names.free.dedup();
        names.steps.sort();
        names.steps.dedup();
        let steps = if names.dynamic {
            StepRefs::All
        } else {
            StepRefs::Named(names.steps)
        };
        Ok(Expr {
            source: source.to_string(),
            program,
            variables,
            steps,
            step_fields: names.step_fields,
            free: names.free,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Root variables the expression names (including comprehension variables).
    pub fn variables(&self) -> &[String] {
        &self.variables
    }

    pub fn step_refs(&self) -> &StepRefs {
        &self.steps
    }

    /// `(step, field)` for every `steps.NAME.FIELD` the expression reads.
    pub fn step_fields(&self) -> &[(String, String)] {
        &self.step_fields
    }

    /// Identifiers at the root the expression names that no comprehension
    /// within it binds: each must be one of [`ROOT_VARIABLES`].
    pub fn free_variables(&self) -> &[String] {
        &self.free
    }

    pub fn eval(&self, scope: &Scope<'_>) -> Result<Value, EvalError> {
        let err = |message: String| EvalError {
            text: self.source.clone(),
            message,
        };
        let mut context = Context::with_env(ENV.clone());
        let uses = |name: &str| self.variables.iter().any(|v| v == name);
        if uses("input") {
            context.add_variable_from_value("input", to_cel(scope.input).map_err(err)?);
        }
        if uses("execution") {
            let execution = serde_json::json!({
                "id": scope.execution_id,
                "workflow": scope.workflow,
            });
            context.add_variable_from_value("execution", to_cel(&execution).map_err(err)?);
        }
        if uses("steps") {
            let mut steps = serde_json::Map::new();
            let mut add = |name: &str| {
                if let Some(view) = scope.steps.view(name) {
                    steps.insert(
                        name.to_string(),
                        serde_json::json!({ "status": view.status, "output": view.output }),
                    );
                }
            };
            match &self.steps {
                StepRefs::Named(names) => names.iter().for_each(|n| add(n)),
                StepRefs::All => scope.steps.names().iter().for_each(|n| add(n)),
            }
            context.add_variable_from_value("steps", to_cel(&Value::Object(steps)).map_err(err)?);
        }
        if let Some(item) = scope.item {
            context.add_variable_from_value("item", to_cel(item).map_err(err)?);
        }
        if let Some(index) = scope.index {
            context.add_variable_from_value("index", i64::from(index));
        }
        let value = self
            .program
            .execute(&context)
            .map_err(|e| err(e.to_string()))?;
        let value = value.json().map_err(|e| err(e.to_string()))?;
        check_value_depth(&value).map_err(err)?;
        Ok(value)
    }
}

impl Expr {
    /// Evaluates with only `variables` bound at the root: for expressions
    /// read outside an execution, such as a trigger's input over `event`.
    pub fn eval_with(&self, variables: &[(&str, &Value)]) -> Result<Value, EvalError> {
        let err = |message: String| EvalError {
            text: self.source.clone(),
            message,
        };
        let mut context = Context::with_env(ENV.clone());
        for (name, value) in variables {
            if self.variables.iter().any(|v| v == name) {
                context.add_variable_from_value(*name, to_cel(value).map_err(err)?);
            }
        }
        let value = self
            .program
            .execute(&context)
            .map_err(|e| err(e.to_string()))?;
        let value = value.json().map_err(|e| err(e.to_string()))?;
        check_value_depth(&value).map_err(err)?;
        Ok(value)
    }
}

/// Refuses a value nested deeper than [`limits::MAX_JSON_DEPTH`]: stored, it could
/// not be read back.
fn check_value_depth(value: &Value) -> Result<(), String> {
    limits::check_json_depth(value, "its value").map_err(|e| e.to_string())
}

/// How deeply an expression nests (a leaf is 1), counting no further than
/// `stop`. Iterative, so any parsed expression can be measured.
fn ast_depth<'a>(root: &'a IdedExpr, stop: usize) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(root, 1usize)];
    while let Some((node, depth)) = pending.pop() {
        deepest = deepest.max(depth);
        if deepest >= stop {
            break;
        }
        let mut push = |child: &'a IdedExpr| pending.push((child, depth + 1));
        match &node.expr {
            Ast::Select(select) => push(&select.operand),
            Ast::Call(call) => {
                if let Some(target) = &call.target {
                    push(target);
                }
                call.args.iter().for_each(&mut push);
            }
            Ast::Comprehension(c) => {
                for part in [
                    &c.iter_range,
                    &c.accu_init,
                    &c.loop_cond,
                    &c.loop_step,
                    &c.result,
                ] {
                    push(part);
                }
            }
            Ast::List(list) => list.elements.iter().for_each(&mut push),
            Ast::Map(map) => {
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(e) = &entry.expr {
                        push(&e.key);
                        push(&e.value);
                    }
                }
            }
            Ast::Struct(s) => {
                for entry in &s.entries {
                    if let EntryExpr::StructField(f) = &entry.expr {
                        push(&f.value);
                    }
                }
            }
            Ast::Ident(_) | Ast::Literal(_) | Ast::Unspecified => {}
        }
    }
    deepest
}

fn to_cel(value: &Value) -> Result<cel::Value, String> {
    cel::to_value(value).map_err(|e| e.to_string())
}

/// The names an expression uses, found in one walk: free root identifiers,
/// the steps it reads as `steps.NAME`, the fields of `steps.NAME` it
/// selects, and whether it uses `steps` otherwise (`steps[x]`).
#[derive(Default)]
struct Names {
    free: Vec<String>,
    steps: Vec<String>,
    step_fields: Vec<(String, String)>,
    dynamic: bool,
}

impl Names {
    fn walk(&mut self, node: &IdedExpr, bound: &mut Vec<String>) {
        let is_steps = |e: &IdedExpr| matches!(&e.expr, Ast::Ident(root) if root == "steps");
        match &node.expr {
            Ast::Select(select) => {
                if let Ast::Select(inner) = &select.operand.expr
                    && is_steps(&inner.operand)
                    && !bound.iter().any(|b| b == "steps")
                {
                    self.step_fields
                        .push((inner.field.clone(), select.field.clone()));
                }
                if is_steps(&select.operand) {
                    self.steps.push(select.field.clone());
                    if !bound.iter().any(|b| b == "steps") {
                        self.free.push("steps".into());
                    }
                    return;
                }
                self.walk(&select.operand, bound);
            }
            Ast::Ident(name) => {
                if name == "steps" {
                    self.dynamic = true;
                }
                if !bound.contains(name) {
                    self.free.push(name.clone());
                }
            }
            Ast::Call(call) => {
                if let Some(target) = &call.target {
                    self.walk(target, bound);
                }
                for arg in &call.args {
                    self.walk(arg, bound);
                }
            }
            Ast::Comprehension(c) => {
                self.walk(&c.iter_range, bound);
                self.walk(&c.accu_init, bound);
                let before = bound.len();
                bound.push(c.iter_var.clone());
                bound.extend(c.iter_var2.clone());
                bound.push(c.accu_var.clone());
                for part in [&c.loop_cond, &c.loop_step, &c.result] {
                    self.walk(part, bound);
                }
                bound.truncate(before);
            }
            Ast::List(list) => {
                for element in &list.elements {
                    self.walk(element, bound);
                }
            }
            Ast::Map(map) => {
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(e) = &entry.expr {
                        self.walk(&e.key, bound);
                        self.walk(&e.value, bound);
                    }
                }
            }
            Ast::Struct(s) => {
                for entry in &s.entries {
                    if let EntryExpr::StructField(f) = &entry.expr {
                        self.walk(&f.value, bound);
                    }
                }
            }
            Ast::Literal(_) | Ast::Unspecified => {}
        }
    }
}

/// What an expression can see of one step.
pub struct StepView<'a> {
    pub status: &'a str,
    pub output: &'a Value,
}

/// Gives expressions read access to steps without copying the whole execution.
pub trait StepLookup {
    fn view(&self, name: &str) -> Option<StepView<'_>>;
    fn names(&self) -> Vec<String>;
}

/// Everything an expression can read while it is evaluated.
pub struct Scope<'a> {
    pub input: &'a Value,
    pub execution_id: &'a str,
    pub workflow: &'a str,
    pub steps: &'a dyn StepLookup,
    pub item: Option<&'a Value>,
    pub index: Option<u32>,
}

/// A JSON value with `${ }` expressions compiled in place.
#[derive(Debug)]
pub enum Template {
    /// No expression inside: used as is.
    Literal(Value),
    Expr(Box<Expr>),
    Text(Vec<TextPart>),
    Array(Vec<Template>),
    Object(Vec<(String, Template)>),
}

#[derive(Debug)]
pub enum TextPart {
    Text(String),
    Expr(Box<Expr>),
}

impl Template {
    /// Compiles a template, returning every expression error found in it.
    pub fn compile(value: &Value) -> Result<Template, Vec<CompileError>> {
        let mut errors = Vec::new();
        let template = compile_value(value, &mut errors);
        if errors.is_empty() {
            Ok(template)
        } else {
            Err(errors)
        }
    }

    pub fn null() -> Template {
        Template::Literal(Value::Null)
    }

    pub fn eval(&self, scope: &Scope<'_>) -> Result<Value, EvalError> {
        let value = self.eval_value(scope)?;
        if matches!(self, Template::Array(_) | Template::Object(_)) {
            // Each expression's value is checked; nesting them in arrays or
            // objects makes the whole deeper still.
            check_value_depth(&value).map_err(|message| EvalError {
                text: "the template".into(),
                message,
            })?;
        }
        Ok(value)
    }

    fn eval_value(&self, scope: &Scope<'_>) -> Result<Value, EvalError> {
        match self {
            Template::Literal(value) => Ok(value.clone()),
            Template::Expr(expr) => expr.eval(scope),
            Template::Text(parts) => {
                let mut out = String::new();
                for part in parts {
                    match part {
                        TextPart::Text(text) => out.push_str(text),
                        TextPart::Expr(expr) => match expr.eval(scope)? {
                            Value::String(s) => out.push_str(&s),
                            other => out.push_str(&other.to_string()),
                        },
                    }
                }
                Ok(Value::String(out))
            }
            Template::Array(items) => items
                .iter()
                .map(|t| t.eval_value(scope))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            Template::Object(fields) => {
                let mut map = serde_json::Map::with_capacity(fields.len());
                for (key, template) in fields {
                    map.insert(key.clone(), template.eval_value(scope)?);
                }
                Ok(Value::Object(map))
            }
        }
    }

    /// Every expression in the template, in order.
    pub fn exprs(&self) -> Vec<&Expr> {
        let mut out = Vec::new();
        self.collect_exprs(&mut out);
        out
    }

    fn collect_exprs<'a>(&'a self, out: &mut Vec<&'a Expr>) {
        match self {
            Template::Literal(_) => {}
            Template::Expr(e) => out.push(e),
            Template::Text(parts) => out.extend(parts.iter().filter_map(|p| match p {
                TextPart::Expr(e) => Some(e.as_ref()),
                TextPart::Text(_) => None,
            })),
            Template::Array(items) => items.iter().for_each(|t| t.collect_exprs(out)),
            Template::Object(fields) => fields.iter().for_each(|(_, t)| t.collect_exprs(out)),
        }
    }
}

fn compile_value(value: &Value, errors: &mut Vec<CompileError>) -> Template {
    match value {
        Value::String(text) if text.contains("${") => match split_text(text) {
            Ok(parts) => {
                let mut compiled = Vec::with_capacity(parts.len());
                for part in parts {
                    match part {
                        Piece::Text(t) => compiled.push(TextPart::Text(t.to_string())),
                        Piece::Expr(src) => match Expr::compile(src) {
                            Ok(e) => compiled.push(TextPart::Expr(Box::new(e))),
                            Err(e) => errors.push(e),
                        },
                    }
                }
                match compiled.as_slice() {
                    [TextPart::Expr(_)] => match compiled.pop() {
                        Some(TextPart::Expr(e)) => Template::Expr(e),
                        _ => unreachable!("matched a single expression part"),
                    },
                    _ => Template::Text(compiled),
                }
            }
            Err(e) => {
                errors.push(e);
                Template::null()
            }
        },
        Value::Array(items) if contains_expr(value) => Template::Array(
            items
                .iter()
                .map(|item| compile_value(item, errors))
                .collect(),
        ),
        Value::Object(map) if contains_expr(value) => Template::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), compile_value(v, errors)))
                .collect(),
        ),
        other => Template::Literal(other.clone()),
    }
}

fn contains_expr(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains("${"),
        Value::Array(items) => items.iter().any(contains_expr),
        Value::Object(map) => map.values().any(contains_expr),
        _ => false,
    }
}

enum Piece<'a> {
    Text(&'a str),
    Expr(&'a str),
}

/// Splits `a ${ x } b` into text and expression pieces. Braces inside an
/// expression (CEL map literals) are balanced so `${ {'a': 1} }` works.
fn split_text(text: &str) -> Result<Vec<Piece<'_>>, CompileError> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        if start > 0 {
            pieces.push(Piece::Text(&rest[..start]));
        }
        let body = &rest[start + 2..];
        let mut depth = 0usize;
        let mut end = None;
        let mut quote: Option<char> = None;
        for (i, c) in body.char_indices() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '\'' | '"') => quote = Some(c),
                (None, '{') => depth += 1,
                (None, '}') if depth == 0 => {
                    end = Some(i);
                    break;
                }
                (None, '}') => depth -= 1,
                _ => {}
            }
        }
        let end = end.ok_or_else(|| CompileError::Unclosed(text.to_string()))?;
        pieces.push(Piece::Expr(body[..end].trim()));
        rest = &body[end + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    Ok(pieces)
}

/// Compiles a field that must be exactly one `${ expression }` (`if`, `for_each`, `wait_until`).
pub fn compile_single(text: &str) -> Result<Expr, CompileError> {
    let trimmed = text.trim();
    match split_text(trimmed)?.as_slice() {
        [Piece::Expr(src)] => Expr::compile(src),
        _ => Expr::compile(trimmed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct NoSteps;
    impl StepLookup for NoSteps {
        fn view(&self, _: &str) -> Option<StepView<'_>> {
            None
        }
        fn names(&self) -> Vec<String> {
            vec![]
        }
    }

    struct OneStep(Value);
    impl StepLookup for OneStep {
        fn view(&self, name: &str) -> Option<StepView<'_>> {
            (name == "a").then_some(StepView {
                status: "succeeded",
                output: &self.0,
            })
        }
        fn names(&self) -> Vec<String> {
            vec!["a".into()]
        }
    }

    fn scope<'a>(input: &'a Value, steps: &'a dyn StepLookup) -> Scope<'a> {
        Scope {
            input,
            execution_id: "ex-1",
            workflow: "wf",
            steps,
            item: None,
            index: None,
        }
    }

    #[test]
    fn whole_string_expression_keeps_its_type() {
        let t = Template::compile(&json!({"items": "${ input.items }", "n": 3})).unwrap();
        let input = json!({"items": [1, 2]});
        assert_eq!(
            t.eval(&scope(&input, &NoSteps)).unwrap(),
            json!({"items": [1, 2], "n": 3})
        );
    }

    #[test]
    fn text_with_expressions_becomes_text() {
        let t = Template::compile(&json!("order ${ input.id } for ${execution.id}")).unwrap();
        let input = json!({"id": "o-7"});
        assert_eq!(
            t.eval(&scope(&input, &NoSteps)).unwrap(),
            json!("order o-7 for ex-1")
        );
    }

    #[test]
    fn step_outputs_are_read_by_name() {
        let e =
            compile_single("${ steps.a.output.valid && steps.a.status == 'succeeded' }").unwrap();
        assert_eq!(e.step_refs(), &StepRefs::Named(vec!["a".into()]));
        let steps = OneStep(json!({"valid": true}));
        assert_eq!(e.eval(&scope(&Value::Null, &steps)).unwrap(), json!(true));
    }

    #[test]
    fn dynamic_step_access_reads_all_steps() {
        let e = compile_single("${ steps['a'].output }").unwrap();
        assert_eq!(e.step_refs(), &StepRefs::All);
    }

    #[test]
    fn map_literals_inside_braces() {
        let t = Template::compile(&json!("${ {'k': input.v} }")).unwrap();
        let input = json!({"v": 1});
        assert_eq!(t.eval(&scope(&input, &NoSteps)).unwrap(), json!({"k": 1}));
    }

    #[test]
    fn syntax_errors_name_the_expression() {
        let errors = Template::compile(&json!({"a": "${ input. }", "b": "${ 1 + }"})).unwrap_err();
        assert_eq!(errors.len(), 2);
        assert!(errors[0].to_string().contains("input."));
    }

    #[test]
    fn unclosed_is_reported() {
        assert!(matches!(
            Template::compile(&json!("${ input.x")).unwrap_err()[0],
            CompileError::Unclosed(_)
        ));
    }

    #[test]
    fn runtime_errors_are_values_not_panics() {
        let e = compile_single("${ input.missing.deeper }").unwrap();
        assert!(e.eval(&scope(&json!({}), &NoSteps)).is_err());
    }
}
