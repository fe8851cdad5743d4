//! Expression evaluation: the functions of the language, and how references
//! to resources are represented while evaluating.
//!
//! A reference such as `server.main` evaluates to a marker object
//! `{ "__dbctl_ref" = "server.main" }`, so references keep working inside
//! lists, conditionals and `for` expressions; the decoder turns markers back
//! into addresses and checks their kind.

use std::cell::RefCell;
use std::path::PathBuf;

use hcl::eval::{Context, FuncArgs, FuncDef, ParamType};
use hcl::{Map, Value};

pub const REF_KEY: &str = "__dbctl_ref";

pub fn ref_marker(addr: &str) -> Value {
    let mut m = Map::new();
    m.insert(REF_KEY.to_string(), Value::String(addr.to_string()));
    Value::Object(m)
}

/// The address inside a reference marker.
pub fn as_ref(v: &Value) -> Option<&str> {
    match v {
        // An rds_cluster's marker also carries its `master_secret`.
        Value::Object(m) if m.len() <= 2 => m.get(REF_KEY).and_then(Value::as_str),
        _ => None,
    }
}

thread_local! {
    /// Directory `file()` resolves relative paths against (function pointers
    /// cannot capture it).
    static BASE_DIR: RefCell<PathBuf> = RefCell::new(PathBuf::from("."));
}

thread_local! {
    /// While validating: the names of unset environment variables that
    /// `env()` (without a default) was asked for. `None`: an unset
    /// variable is an error (plan, apply).
    static UNKNOWN_ENV: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

/// `validate` needs no environment: from now on, `env("NAME")` of an unset
/// variable is an unknown value (a placeholder string), not an error.
pub fn set_env_unknown(on: bool) {
    UNKNOWN_ENV.with(|u| *u.borrow_mut() = on.then(Vec::new));
}

/// How many unknown `env()` values were made so far.
pub fn unknown_env_count() -> usize {
    UNKNOWN_ENV.with(|u| u.borrow().as_ref().map_or(0, Vec::len))
}

/// The variables of the unknown `env()` values made after the first `from`.
pub fn unknown_env_since(from: usize) -> Vec<String> {
    UNKNOWN_ENV.with(|u| u.borrow().as_ref().map(|v| v.get(from..).unwrap_or_default().to_vec()).unwrap_or_default())
}

/// The value of an unset `env("NAME")` while validating.
pub fn unknown_env_value(name: &str) -> String {
    format!("${{env.{name}}}")
}

pub fn set_base_dir(dir: PathBuf) {
    BASE_DIR.with(|b| *b.borrow_mut() = dir);
}

/// A root context with every function of the language.
pub fn root_context<'a>() -> Context<'a> {
    let mut ctx = Context::new();
    let s = || ParamType::String;
    ctx.declare_func("env", FuncDef::builder().param(s()).variadic_param(s()).build(f_env));
    ctx.declare_func("file", FuncDef::builder().param(s()).build(f_file));
    ctx.declare_func("lower", FuncDef::builder().param(s()).build(f_lower));
    ctx.declare_func("upper", FuncDef::builder().param(s()).build(f_upper));
    ctx.declare_func("format", FuncDef::builder().param(s()).variadic_param(ParamType::Any).build(f_format));
    ctx.declare_func("join", FuncDef::builder().param(s()).param(ParamType::array_of(ParamType::Any)).build(f_join));
    ctx.declare_func("concat", FuncDef::builder().variadic_param(ParamType::array_of(ParamType::Any)).build(f_concat));
    ctx.declare_func("toset", FuncDef::builder().param(ParamType::array_of(ParamType::Any)).build(f_toset));
    ctx.declare_func("length", FuncDef::builder().param(ParamType::Any).build(f_length));
    ctx.declare_func("keys", FuncDef::builder().param(ParamType::object_of(ParamType::Any)).build(f_keys));
    ctx.declare_func("values", FuncDef::builder().param(ParamType::object_of(ParamType::Any)).build(f_values));
    ctx.declare_func("merge", FuncDef::builder().variadic_param(ParamType::object_of(ParamType::Any)).build(f_merge));
    ctx.declare_func("tostring", FuncDef::builder().param(ParamType::Any).build(f_tostring));
    ctx
}

/// Names of the functions, for "did you mean" on an unknown function.
pub const FUNCTIONS: &[&str] = &[
    "env", "file", "lower", "upper", "format", "join", "concat", "toset", "length", "keys", "values", "merge",
    "tostring",
];

fn str_arg(args: &FuncArgs, i: usize) -> &str {
    args[i].as_str().unwrap_or_default()
}

/// How an unset `env()` error starts (the evaluator wraps it; `evaluate`
/// unwraps it into one sentence).
pub const ENV_UNSET_PREFIX: &str = "environment variable ";

fn f_env(args: FuncArgs) -> Result<Value, String> {
    let name = str_arg(&args, 0).to_string();
    let default = args.variadic_args().next().and_then(Value::as_str).map(str::to_string);
    if args.variadic_args().count() > 1 {
        return Err("env takes a name and at most one default".into());
    }
    match std::env::var(&name) {
        Ok(v) => Ok(Value::String(v)),
        Err(_) => match default {
            Some(d) => Ok(Value::String(d)),
            None if UNKNOWN_ENV.with(|u| u.borrow().is_some()) => {
                UNKNOWN_ENV.with(|u| u.borrow_mut().as_mut().map(|v| v.push(name.clone())));
                Ok(Value::String(unknown_env_value(&name)))
            }
            None => Err(format!("{ENV_UNSET_PREFIX}{name} is not set")),
        },
    }
}

/// The largest file `file()` reads: it is for a certificate or a small text,
/// and reading a device or a huge file would hang or exhaust memory.
pub const FILE_MAX_BYTES: u64 = 1024 * 1024;

fn f_file(args: FuncArgs) -> Result<Value, String> {
    use std::io::Read;
    let rel = str_arg(&args, 0);
    let path = BASE_DIR.with(|b| b.borrow().join(rel));
    let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let meta = std::fs::metadata(&path).map_err(cannot)?;
    if !meta.is_file() {
        return Err(format!("not a regular file: {}", path.display()));
    }
    if meta.len() > FILE_MAX_BYTES {
        return Err(format!(
            "{} is {} bytes; file() reads files of at most {FILE_MAX_BYTES} bytes (1 MiB)",
            path.display(),
            meta.len()
        ));
    }
    // Read at most one byte more than the limit, in case the file grew.
    let mut text = String::new();
    std::fs::File::open(&path).map_err(cannot)?.take(FILE_MAX_BYTES + 1).read_to_string(&mut text).map_err(cannot)?;
    if text.len() as u64 > FILE_MAX_BYTES {
        return Err(format!("{} is over {FILE_MAX_BYTES} bytes (1 MiB)", path.display()));
    }
    Ok(Value::String(text))
}

fn f_lower(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::String(str_arg(&args, 0).to_lowercase()))
}

fn f_upper(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::String(str_arg(&args, 0).to_uppercase()))
}

/// Plain text of a value, as string templates show it.
pub fn display(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Ok(String::new()),
        other => match as_ref(other) {
            Some(a) => Err(format!("{a} is a resource and has no text form")),
            None => Err(format!("cannot use {} as text", type_name(other))),
        },
    }
}

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) if as_ref(v).is_some() => "a reference",
        Value::Object(_) => "an object",
    }
}

fn f_format(args: FuncArgs) -> Result<Value, String> {
    let fmt = str_arg(&args, 0).to_string();
    let mut rest = args.variadic_args();
    let mut out = String::new();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(verb @ ('s' | 'd' | 'v' | 'q')) => {
                let v = rest.next().ok_or_else(|| "not enough arguments for the format".to_string())?;
                match verb {
                    'd' => match v {
                        Value::Number(n) => out.push_str(&n.to_string()),
                        other => return Err(format!("%d needs a number, got {}", type_name(other))),
                    },
                    'q' => out.push_str(&format!("\"{}\"", crate::model::escape_hcl_string(&display(v)?))),
                    _ => out.push_str(&display(v)?),
                }
            }
            Some(o) => return Err(format!("unsupported format verb %{o} (use %s, %d, %q, %v or %%)")),
            None => return Err("format string ends with %".into()),
        }
    }
    if rest.next().is_some() {
        return Err("too many arguments for the format".into());
    }
    Ok(Value::String(out))
}

fn f_join(args: FuncArgs) -> Result<Value, String> {
    let sep = str_arg(&args, 0);
    let list = args[1].as_array().cloned().unwrap_or_default();
    let parts = list.iter().map(display).collect::<Result<Vec<_>, _>>()?;
    Ok(Value::String(parts.join(sep)))
}

fn f_concat(args: FuncArgs) -> Result<Value, String> {
    let mut out = Vec::new();
    for v in args.variadic_args() {
        out.extend(v.as_array().cloned().unwrap_or_default());
    }
    Ok(Value::Array(out))
}

/// A set, as a list without duplicates, sorted so results never depend on
/// the order things were written in.
fn f_toset(args: FuncArgs) -> Result<Value, String> {
    let list = args[0].as_array().cloned().unwrap_or_default();
    let mut strings = Vec::with_capacity(list.len());
    for v in &list {
        match v {
            Value::String(s) => strings.push(s.clone()),
            Value::Number(n) => strings.push(n.to_string()),
            other => return Err(format!("toset takes strings, got {}", type_name(other))),
        }
    }
    strings.sort();
    strings.dedup();
    Ok(Value::Array(strings.into_iter().map(Value::String).collect()))
}

fn f_length(args: FuncArgs) -> Result<Value, String> {
    let n = match &args[0] {
        Value::Array(a) => a.len(),
        Value::Object(o) => o.len(),
        Value::String(s) => s.chars().count(),
        other => return Err(format!("length takes a list, map or string, got {}", type_name(other))),
    };
    Ok(Value::from(n as u64))
}

fn f_keys(args: FuncArgs) -> Result<Value, String> {
    let m = args[0].as_object().cloned().unwrap_or_default();
    let mut k: Vec<_> = m.keys().cloned().collect();
    k.sort();
    Ok(Value::Array(k.into_iter().map(Value::String).collect()))
}

fn f_values(args: FuncArgs) -> Result<Value, String> {
    let m = args[0].as_object().cloned().unwrap_or_default();
    let mut kv: Vec<_> = m.into_iter().collect();
    kv.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Value::Array(kv.into_iter().map(|(_, v)| v).collect()))
}

fn f_merge(args: FuncArgs) -> Result<Value, String> {
    let mut out = Map::new();
    for m in args.variadic_args() {
        for (k, v) in m.as_object().cloned().unwrap_or_default() {
            out.insert(k, v);
        }
    }
    Ok(Value::Object(out))
}

fn f_tostring(args: FuncArgs) -> Result<Value, String> {
    display(&args[0]).map(Value::String)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hcl::eval::Evaluate;

    fn eval(src: &str) -> Result<Value, String> {
        let expr: hcl::Expression = hcl::edit::parser::parse_expr(src).map_err(|e| e.to_string())?.into();
        expr.evaluate(&root_context()).map_err(|e| e.kind().to_string())
    }

    #[test]
    fn functions() {
        assert_eq!(eval(r#"lower("AbC")"#).unwrap(), Value::from("abc"));
        assert_eq!(eval(r#"upper("abc")"#).unwrap(), Value::from("ABC"));
        assert_eq!(eval(r#"format("%s-%d-%q %%", "a", 3, "x")"#).unwrap(), Value::from("a-3-\"x\" %"));
        assert_eq!(eval(r#"join(",", ["a", "b"])"#).unwrap(), Value::from("a,b"));
        assert_eq!(eval(r#"concat(["a"], ["b", "c"])"#).unwrap(), eval(r#"["a", "b", "c"]"#).unwrap());
        assert_eq!(eval(r#"toset(["b", "a", "b"])"#).unwrap(), eval(r#"["a", "b"]"#).unwrap());
        assert_eq!(eval(r#"length(["a", "b"])"#).unwrap(), Value::from(2u64));
        assert_eq!(eval(r#"keys({b = 1, a = 2})"#).unwrap(), eval(r#"["a", "b"]"#).unwrap());
        assert_eq!(eval(r#"env("DBCTL_TEST_SURELY_UNSET", "d")"#).unwrap(), Value::from("d"));
        assert!(eval(r#"env("DBCTL_TEST_SURELY_UNSET")"#).unwrap_err().contains("is not set"));
        // While validating, an unset variable is unknown: a placeholder, recorded.
        set_env_unknown(true);
        assert_eq!(eval(r#"env("DBCTL_TEST_SURELY_UNSET")"#).unwrap(), Value::from("${env.DBCTL_TEST_SURELY_UNSET}"));
        assert_eq!(eval(r#"env("DBCTL_TEST_SURELY_UNSET", "d")"#).unwrap(), Value::from("d"));
        assert_eq!(unknown_env_since(0), ["DBCTL_TEST_SURELY_UNSET"]);
        set_env_unknown(false);
        assert!(eval(r#"env("DBCTL_TEST_SURELY_UNSET")"#).is_err());
        assert!(eval(r#"format("%s")"#).unwrap_err().contains("not enough"));
        assert!(eval(r#"format("%x", 1)"#).unwrap_err().contains("unsupported"));
    }

    #[test]
    fn refs_are_markers() {
        let m = ref_marker("server.main");
        assert_eq!(as_ref(&m), Some("server.main"));
        assert!(display(&m).is_err());
    }
}
