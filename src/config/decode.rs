//! Schema-driven decoding of one block: unknown attributes and blocks,
//! missing required attributes, reference checks with spans, evaluation and
//! type checking. The result is a `DBlock` of typed values with their places.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;

use hcl::edit::expr::{Expression, TraversalOperator};
use hcl::edit::structure::{Block, BlockLabel, Structure};
use hcl::edit::visit::{self, Visit};
use hcl::edit::Span;
use hcl::eval::{Context, Evaluate};
use hcl::Value;
use indexmap::IndexMap;

use super::eval::{as_ref, type_name};
use super::schema::{BlockSchema, Ty};
use crate::diag::{did_you_mean, Diagnostic, Diags, Loc, SourceFile};
use crate::model::{Address, FastHashSet, FastIndexMap, Kind};

/// A decoded, type-checked value.
#[derive(Debug, Clone)]
pub enum V {
    Str(String),
    Bool(bool),
    Int(i64),
    List(Vec<String>),
    Ref(Address),
    Refs(Vec<Address>),
    Any(Value),
}

#[derive(Debug, Clone)]
pub struct DBlock {
    pub header: Loc,
    pub labels: Vec<(String, Loc)>,
    /// The attributes written, in order, by their schema names (a block has
    /// a few: a list is cheaper than a map at thousands of blocks).
    pub attrs: Vec<(&'static str, (V, Loc))>,
    pub blocks: Vec<(String, DBlock)>,
}

impl DBlock {
    fn entry(&self, name: &str) -> Option<&(V, Loc)> {
        self.attrs.iter().find(|(k, _)| *k == name).map(|(_, e)| e)
    }
    pub fn get(&self, name: &str) -> Option<&V> {
        self.entry(name).map(|(v, _)| v)
    }
    pub fn str(&self, name: &str) -> Option<String> {
        match self.get(name) {
            Some(V::Str(s)) => Some(s.clone()),
            _ => None,
        }
    }
    pub fn bool(&self, name: &str) -> Option<bool> {
        match self.get(name) {
            Some(V::Bool(b)) => Some(*b),
            _ => None,
        }
    }
    pub fn int(&self, name: &str) -> Option<i64> {
        match self.get(name) {
            Some(V::Int(i)) => Some(*i),
            _ => None,
        }
    }
    pub fn list(&self, name: &str) -> Vec<String> {
        match self.get(name) {
            Some(V::List(l)) => l.clone(),
            _ => Vec::new(),
        }
    }
    pub fn reference(&self, name: &str) -> Option<Address> {
        match self.get(name) {
            Some(V::Ref(a)) => Some(a.clone()),
            _ => None,
        }
    }
    pub fn refs(&self, name: &str) -> Vec<Address> {
        match self.get(name) {
            Some(V::Refs(a)) => a.clone(),
            _ => Vec::new(),
        }
    }
    pub fn loc(&self, name: &str) -> Option<&Loc> {
        self.entry(name).map(|(_, l)| l)
    }
    pub fn block(&self, name: &str) -> Option<&DBlock> {
        self.blocks.iter().find(|(n, _)| n == name).map(|(_, b)| b)
    }
    pub fn blocks<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a DBlock> + 'a {
        self.blocks.iter().filter(move |(n, _)| n == name).map(|(_, b)| b)
    }
    pub fn label(&self) -> &str {
        self.labels.first().map_or("", |(s, _)| s.as_str())
    }
}

pub fn span_of(s: &impl Span) -> Range<usize> {
    s.span().unwrap_or(0..0)
}

pub fn label_span(l: &BlockLabel) -> Range<usize> {
    span_of(l)
}

/// The block's identifier and labels: what a diagnostic about the whole block points at.
pub fn header_span(b: &Block) -> Range<usize> {
    let start = span_of(&b.ident).start;
    let end = b.labels.last().map_or(span_of(&b.ident).end, |l| label_span(l).end);
    start..end
}

/// One `root.attr["key"]` reference as written.
#[derive(Debug)]
pub struct TravRef {
    pub root: String,
    pub attr: Option<String>,
    /// The index after the attribute, when it is a literal string.
    pub key: Option<String>,
    /// Whether an index follows the attribute at all.
    pub indexed: bool,
    pub span: Range<usize>,
}

#[derive(Default)]
struct TravCollector(Vec<TravRef>);

impl Visit for TravCollector {
    fn visit_traversal(&mut self, t: &hcl::edit::expr::Traversal) {
        if let Expression::Variable(v) = &t.expr {
            let mut ops = t.operators.iter().map(|o| o.value());
            let attr = match ops.next() {
                Some(TraversalOperator::GetAttr(i)) => Some(i.as_str().to_string()),
                _ => None,
            };
            let second = ops.next();
            let indexed = matches!(second, Some(TraversalOperator::Index(_) | TraversalOperator::LegacyIndex(_)));
            let key = match second {
                Some(TraversalOperator::Index(Expression::String(s))) => Some(s.as_str().to_string()),
                _ => None,
            };
            self.0.push(TravRef { root: v.as_str().to_string(), attr, key, indexed, span: span_of(t) });
        }
        visit::visit_traversal(self, t);
    }
}

/// Every traversal in an expression.
pub fn traversals(expr: &Expression) -> Vec<TravRef> {
    let mut c = TravCollector::default();
    c.visit_expr(expr);
    c.0
}

/// What names exist, for checking references before evaluating.
pub struct Scope<'a> {
    pub variables: &'a IndexMap<String, super::VarInfo>,
    pub locals: &'a FastHashSet<String>,
    /// Resource labels per kind, with the for_each keys where known.
    pub resources: &'a FastIndexMap<(Kind, String), Option<Vec<String>>>,
    /// Resources whose block has for_each.
    pub with_for_each: &'a FastHashSet<(Kind, String)>,
    /// Inside a for_each resource.
    pub each: bool,
    /// The instance's key there (`[each.key]` is then resolved without the evaluator).
    pub each_key: Option<&'a str>,
    /// In a `locals` or `for_each` expression: resources with for_each are not yet known.
    pub before_resources: bool,
}

/// Check every reference in `expr`; one diagnostic per bad reference.
pub fn check_refs(expr: &Expression, file: &Arc<SourceFile>, scope: &Scope) -> Vec<Diagnostic> {
    check_traversals(&traversals(expr), file, scope)
}

/// [`check_refs`] on traversals already collected.
fn check_traversals(travs: &[TravRef], file: &Arc<SourceFile>, scope: &Scope) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for t in travs {
        let loc = Loc::new(file, t.span.clone());
        let Some(attr) = t.attr.as_deref() else { continue };
        match t.root.as_str() {
            "var" if !scope.variables.contains_key(attr) => out.push(
                Diagnostic::error(format!("reference to undeclared variable `var.{attr}`"))
                    .at(&loc, "no variable block declares this")
                    .help(
                        did_you_mean(attr, scope.variables.keys().map(String::as_str))
                            .unwrap_or_else(|| format!("declare it: variable \"{attr}\" {{ default = ... }}")),
                    ),
            ),
            "local" if !scope.locals.contains(attr) => out.push(
                Diagnostic::error(format!("reference to undeclared local `local.{attr}`"))
                    .at(&loc, "no locals block sets this")
                    .help(
                        did_you_mean(attr, scope.locals.iter().map(String::as_str))
                            .unwrap_or_else(|| format!("set it in a locals block: locals {{ {attr} = ... }}")),
                    ),
            ),
            "each" if !scope.each => out.push(
                Diagnostic::error(format!("`each.{attr}` outside a block with for_each"))
                    .at(&loc, "each is only known in a block with for_each"),
            ),
            "each" if attr != "key" && attr != "value" => out.push(
                Diagnostic::error(format!("`each.{attr}` does not exist"))
                    .at(&loc, "each has only key and value")
                    .help(did_you_mean(attr, ["key", "value"]).unwrap_or_default()),
            ),
            root => {
                let Some(kind) = Kind::parse(root) else { continue };
                match scope.resources.get(&(kind, attr.to_string())) {
                    None => {
                        let same_kind = scope.resources.keys().filter(|(k, _)| *k == kind).map(|(_, n)| n.as_str());
                        let mut d = Diagnostic::error(format!("reference to undeclared resource `{root}.{attr}`"))
                            .at(&loc, format!("no {root} block is named \"{attr}\""));
                        if let Some(h) = did_you_mean(attr, same_kind) {
                            d = d.help(h);
                        } else if let Some((other, _)) = scope.resources.keys().find(|(k, n)| n == attr && *k != kind) {
                            d = d.help(format!(
                                "there is a {} named \"{attr}\": did you mean `{}.{attr}`?",
                                other.as_str(),
                                other.as_str()
                            ));
                        }
                        out.push(d);
                    }
                    Some(Some(keys)) => {
                        if let Some(key) = &t.key {
                            if !keys.contains(key) {
                                out.push(
                                    Diagnostic::error(format!("`{root}.{attr}` has no instance [\"{key}\"]"))
                                        .at(&loc, "not a key of its for_each")
                                        .help(format!("its keys are: {}", keys.join(", "))),
                                );
                            }
                        }
                    }
                    Some(None) if t.indexed && !scope.with_for_each.contains(&(kind, attr.to_string())) => out.push(
                        Diagnostic::error(format!("`{root}.{attr}` does not use for_each and cannot be indexed"))
                            .at(&loc, "a single resource, not a map of instances")
                            .help(format!("refer to it as {root}.{attr}, or give it for_each")),
                    ),
                    Some(None) if scope.before_resources && scope.with_for_each.contains(&(kind, attr.to_string())) => {
                        out.push(
                            Diagnostic::error(format!("`{root}.{attr}` uses for_each and cannot be referenced here"))
                                .at(&loc, "locals and for_each are evaluated before resources with for_each"),
                        )
                    }
                    Some(None) => {}
                }
            }
        }
    }
    out
}

/// Whether an expression uses a variable that has no value (reported once, at the variable).
fn uses_unset(travs: &[TravRef], scope: &Scope) -> bool {
    travs
        .iter()
        .any(|t| t.root == "var" && t.attr.as_ref().and_then(|a| scope.variables.get(a)).is_some_and(|v| v.unset))
}

/// How `rds_cluster.NAME.master_secret` ends, in a reference marker.
pub const MASTER_SECRET_SUFFIX: &str = ".master_secret";

/// A reference written plainly: the resource's address, or the cluster's
/// for `rds_cluster.NAME.master_secret`.
enum PlainRef {
    Resource(Address),
    MasterSecret(Address),
}

/// A reference written plainly (`server.main`, `database.app["users"]`),
/// resolved without hcl's evaluator: looking a name up there copies the
/// whole map of resources of that kind, which at thousands of resources
/// costs more than everything else together. Names were checked by
/// `check_refs` before this runs.
fn plain_reference(t: &hcl::edit::expr::Traversal, scope: &Scope) -> Option<PlainRef> {
    let Expression::Variable(root) = &t.expr else { return None };
    let kind = Kind::parse(root.as_str())?;
    let mut ops = t.operators.iter().map(|o| o.value());
    let Some(TraversalOperator::GetAttr(name)) = ops.next() else { return None };
    let key = match ops.next() {
        None => None,
        Some(TraversalOperator::Index(Expression::String(k))) => Some(k.as_str().to_string()),
        // `[each.key]`: the evaluator would copy every instance of the kind.
        Some(TraversalOperator::Index(Expression::Traversal(i))) if is_each_key(i) => {
            let k = scope.each_key?;
            match scope.resources.get(&(kind, name.as_str().to_string())) {
                Some(Some(keys)) if keys.iter().any(|x| x == k) => Some(k.to_string()),
                _ => return None,
            }
        }
        // `rds_cluster.NAME.master_secret`
        Some(TraversalOperator::GetAttr(a)) if kind == Kind::RdsCluster && a.as_str() == "master_secret" => {
            if ops.next().is_some() || !scope.resources.contains_key(&(kind, name.as_str().to_string())) {
                return None;
            }
            return Some(PlainRef::MasterSecret(Address::new(kind, name.as_str())));
        }
        Some(_) => return None,
    };
    if ops.next().is_some() {
        return None;
    }
    let has_for_each = scope.with_for_each.contains(&(kind, name.as_str().to_string()));
    match (key, has_for_each) {
        (None, false) => Some(PlainRef::Resource(Address::new(kind, name.as_str()))),
        (Some(k), true) => Some(PlainRef::Resource(Address::keyed(kind, name.as_str(), k))),
        _ => None, // the evaluator gives the precise error or the whole map
    }
}

/// [`plain_reference`] as the value hcl's evaluator would give (a reference
/// marker), or a list of them.
fn fast_reference(expr: &Expression, scope: &Scope) -> Option<Value> {
    match expr {
        Expression::Traversal(t) => match plain_reference(t, scope)? {
            PlainRef::Resource(addr) => Some(super::eval::ref_marker(&addr.to_string())),
            PlainRef::MasterSecret(addr) => Some(super::eval::ref_marker(&format!("{addr}{MASTER_SECRET_SUFFIX}"))),
        },
        Expression::Array(items) => {
            let values: Option<Vec<Value>> = items.iter().map(|i| fast_reference(i, scope)).collect();
            values.map(Value::Array)
        }
        _ => None,
    }
}

/// The decoded value of an attribute written plainly — a reference of a
/// kind the attribute takes, a list of them, or a literal of its type —
/// without a reference marker or hcl's evaluator (at 10,000 blocks these
/// were a third of decoding). `None` for anything else, and for anything
/// wrong: the general path then decodes it, or words the error.
fn direct_value(expr: &Expression, ty: Ty, scope: &Scope) -> Option<V> {
    let resource = |e: &Expression, kinds: &[Kind]| match e {
        Expression::Traversal(t) => match plain_reference(t, scope)? {
            PlainRef::Resource(a) if kinds.contains(&a.kind) => Some(a),
            _ => None,
        },
        _ => None,
    };
    match (ty, expr) {
        (Ty::Ref(kinds), e) => resource(e, kinds).map(V::Ref),
        (Ty::RefList(kinds), Expression::Array(items)) => {
            items.iter().map(|i| resource(i, kinds)).collect::<Option<Vec<_>>>().map(V::Refs)
        }
        (Ty::AdminSecret, Expression::Traversal(t)) => match plain_reference(t, scope)? {
            PlainRef::MasterSecret(cluster) => Some(V::Ref(cluster)),
            PlainRef::Resource(a) if a.kind == Kind::Secret => Some(V::Ref(a)),
            PlainRef::Resource(_) => None,
        },
        (Ty::String, Expression::String(s)) => Some(V::Str(s.as_str().to_string())),
        (Ty::Enum(options), Expression::String(s)) if options.contains(&s.as_str()) => {
            Some(V::Str(s.as_str().to_string()))
        }
        (Ty::Bool, Expression::Bool(b)) => Some(V::Bool(*b.value())),
        (Ty::StringList, Expression::Array(items)) => items
            .iter()
            .map(|i| match i {
                Expression::String(s) => Some(s.as_str().to_string()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .map(V::List),
        _ => None,
    }
}

#[cfg(test)]
thread_local! {
    /// Tests: decode every attribute the general way, to compare with [`direct_value`].
    pub(crate) static GENERAL_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(test)]
fn general_only() -> bool {
    GENERAL_ONLY.with(|g| g.get())
}

#[cfg(not(test))]
fn general_only() -> bool {
    false
}

/// `each.key`, written plainly.
fn is_each_key(t: &hcl::edit::expr::Traversal) -> bool {
    let Expression::Variable(root) = &t.expr else { return false };
    root.as_str() == "each"
        && t.operators.len() == 1
        && matches!(t.operators[0].value(), TraversalOperator::GetAttr(a) if a.as_str() == "key")
}

/// Every `/` and `%` whose right side evaluates to zero: hcl's evaluator
/// panics on an integer `%` by zero and makes an infinite number of `/`.
struct DivisorCheck<'a, 'c> {
    ctx: &'a Context<'c>,
    zero: Option<(Range<usize>, &'static str)>,
}

impl Visit for DivisorCheck<'_, '_> {
    fn visit_binary_op(&mut self, node: &hcl::edit::expr::BinaryOp) {
        use hcl::edit::expr::BinaryOperator;
        visit::visit_binary_op(self, node);
        let what = match node.operator.value() {
            BinaryOperator::Div => "division",
            BinaryOperator::Mod => "remainder",
            _ => return,
        };
        if self.zero.is_some() {
            return;
        }
        // The right side is checked first (the visit above), so evaluating it
        // cannot reach a zero divisor of its own. A right side that needs a
        // `for` variable cannot be evaluated here: the guard in `evaluate` catches it.
        let rhs: hcl::Expression = node.rhs_expr.clone().into();
        if let Ok(Value::Number(n)) = rhs.evaluate(self.ctx) {
            if n.as_f64() == Some(0.0) {
                self.zero = Some((span_of(&node.rhs_expr), what));
            }
        }
    }
}

/// A number the evaluator made that is not finite (from a division by zero
/// it could not see coming).
fn has_non_finite(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.as_f64().is_some_and(|f| !f.is_finite()),
        Value::Array(a) => a.iter().any(has_non_finite),
        Value::Object(o) => o.values().any(has_non_finite),
        _ => false,
    }
}

thread_local! {
    static QUIET_PANICS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run hcl's evaluator, turning a panic inside it into an error (it panics on
/// arithmetic it cannot do, such as an integer `%` by zero inside a `for`).
fn evaluate_guarded(e: &hcl::Expression, ctx: &Context) -> Result<Result<Value, hcl::eval::Error>, ()> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET_PANICS.with(|q| q.get()) {
                previous(info);
            }
        }));
    });
    QUIET_PANICS.with(|q| q.set(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| e.evaluate(ctx)));
    QUIET_PANICS.with(|q| q.set(false));
    r.map_err(|_| ())
}

/// Where an attribute that is not written plainly finds its evaluation
/// context: one made beforehand, or one made when the first such attribute
/// needs it ([`LazyContext`]).
pub trait EvalContext: Sync {
    fn get(&self) -> &Context<'static>;
}

impl EvalContext for Context<'static> {
    fn get(&self) -> &Context<'static> {
        self
    }
}

/// A context made by `make` the first time it is asked for, on whichever
/// thread asks. At thousands of resources making it (an object of every
/// resource name, per kind) costs as much as decoding a tenth of the
/// blocks, and a configuration written plainly never asks.
pub struct LazyContext<F> {
    made: std::sync::OnceLock<Context<'static>>,
    make: F,
}

impl<F: Fn() -> Context<'static> + Sync> LazyContext<F> {
    pub fn new(make: F) -> Self {
        LazyContext { made: std::sync::OnceLock::new(), make }
    }

    /// The context, if something asked for it.
    pub fn into_made(self) -> Option<Context<'static>> {
        self.made.into_inner()
    }
}

impl<F: Fn() -> Context<'static> + Sync> EvalContext for LazyContext<F> {
    fn get(&self) -> &Context<'static> {
        self.made.get_or_init(&self.make)
    }
}

/// Evaluate an expression; errors carry the expression's span.
pub fn evaluate(expr: &Expression, file: &Arc<SourceFile>, ctx: &Context) -> Result<Value, Diagnostic> {
    let loc = Loc::new(file, span_of(expr));
    let mut divisors = DivisorCheck { ctx, zero: None };
    divisors.visit_expr(expr);
    if let Some((span, what)) = divisors.zero {
        return Err(Diagnostic::error(format!("cannot evaluate this expression: {what} by zero"))
            .at(&Loc::new(file, span), "this is zero"));
    }
    let e: hcl::Expression = expr.clone().into();
    let arithmetic = || {
        Diagnostic::error("cannot evaluate this expression: a division by zero or a number too large")
            .at(&loc, "while evaluating this")
    };
    let value = evaluate_guarded(&e, ctx).map_err(|()| arithmetic())?;
    if matches!(&value, Ok(v) if has_non_finite(v)) {
        return Err(arithmetic());
    }
    value.map_err(|err| {
        if let hcl::eval::ErrorKind::FuncCall(name, msg) = err.kind() {
            if name.to_string() == "env" {
                if let Some(var) =
                    msg.strip_prefix(super::eval::ENV_UNSET_PREFIX).and_then(|m| m.strip_suffix(" is not set"))
                {
                    return Diagnostic::error(format!("the environment variable {var} is not set"))
                        .at(&loc, "needs it")
                        .help(format!("set {var}, or give env(\"{var}\", \"default\") a default to allow it unset"));
                }
            }
        }
        let mut d = Diagnostic::error(format!("cannot evaluate this expression: {}", err.kind()))
            .at(&loc, "while evaluating this");
        if let hcl::eval::ErrorKind::UndefinedFunc(f) = err.kind() {
            let name = f.to_string();
            d = d.help(
                did_you_mean(&name, super::eval::FUNCTIONS.iter().copied())
                    .unwrap_or_else(|| format!("functions: {}", super::eval::FUNCTIONS.join(", "))),
            );
        }
        d
    })
}

fn describe_found(v: &Value) -> String {
    match (v, as_ref(v)) {
        (_, Some(a)) => format!("a reference to {a}"),
        (Value::String(s), _) => format!("the string \"{s}\""),
        (Value::Object(m), _) if !m.is_empty() && m.values().all(|x| as_ref(x).is_some()) => {
            "all instances of a resource with for_each (index it with [\"key\"])".to_string()
        }
        (other, _) => type_name(other).to_string(),
    }
}

fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Check a value against a type; `Err` is the message for the diagnostic.
pub fn typecheck(v: &Value, ty: Ty) -> Result<V, (String, Option<String>)> {
    let wrong = || (format!("expected {}, found {}", ty.describe(), describe_found(v)), None);
    let to_ref = |v: &Value, kinds: &[Kind]| -> Result<Address, (String, Option<String>)> {
        let Some(a) = as_ref(v) else {
            let help = match (v, kinds.first()) {
                (Value::String(s), Some(k)) => Some(format!("refer to the resource itself: {}.{s}", k.as_str())),
                _ => None,
            };
            return Err((format!("expected {}, found {}", ty.describe(), describe_found(v)), help));
        };
        let addr = Address::parse(a).map_err(|e| (e, None))?;
        if !kinds.contains(&addr.kind) {
            return Err((format!("expected {}, found a reference to {addr}", ty.describe()), None));
        }
        Ok(addr)
    };
    match ty {
        Ty::Any | Ty::ForEach => Ok(V::Any(v.clone())),
        Ty::String => match (as_ref(v), as_string(v)) {
            (None, Some(s)) => Ok(V::Str(s)),
            _ => Err(wrong()),
        },
        Ty::Bool => match v {
            Value::Bool(b) => Ok(V::Bool(*b)),
            Value::String(s) if s == "true" || s == "false" => Ok(V::Bool(s == "true")),
            _ => Err(wrong()),
        },
        Ty::Int => match v {
            Value::Number(n) => n.as_i64().map(V::Int).ok_or_else(wrong),
            Value::String(s) => s.trim().parse().map(V::Int).map_err(|_| wrong()),
            _ => Err(wrong()),
        },
        Ty::StringList => match v {
            Value::Array(items) => items
                .iter()
                .map(|i| if as_ref(i).is_some() { None } else { as_string(i) })
                .collect::<Option<Vec<_>>>()
                .map(V::List)
                .ok_or_else(wrong),
            _ => Err(wrong()),
        },
        Ty::Enum(options) => match v {
            Value::String(s) if options.contains(&s.as_str()) => Ok(V::Str(s.clone())),
            Value::String(s) => {
                Err((format!("expected {}, found \"{s}\"", ty.describe()), did_you_mean(s, options.iter().copied())))
            }
            _ => Err(wrong()),
        },
        Ty::Ref(kinds) => to_ref(v, kinds).map(V::Ref),
        // `rds_cluster.NAME.master_secret` decodes to the cluster's address.
        Ty::AdminSecret => match as_ref(v).and_then(|a| a.strip_suffix(MASTER_SECRET_SUFFIX)) {
            Some(cluster) => Address::parse(cluster).map(V::Ref).map_err(|e| (e, None)),
            None => to_ref(v, &[Kind::Secret]).map(V::Ref),
        },
        Ty::RefList(kinds) => match v {
            Value::Array(items) => items.iter().map(|i| to_ref(i, kinds)).collect::<Result<_, _>>().map(V::Refs),
            _ => Err(wrong()),
        },
        Ty::Duration => match v {
            Value::String(s) => humantime::parse_duration(s)
                .map(|_| V::Str(s.clone()))
                .map_err(|e| (format!("expected {}, found \"{s}\" ({e})", ty.describe()), None)),
            _ => Err(wrong()),
        },
        Ty::Cron => {
            match v {
                Value::String(s) => {
                    if s.split_whitespace().count() != 5 {
                        return Err((
                        format!("expected {}, found \"{s}\": a schedule has five fields (minute hour day month weekday)", ty.describe()),
                        None,
                    ));
                    }
                    s.parse::<croner::Cron>()
                        .map(|_| V::Str(s.clone()))
                        .map_err(|e| (format!("expected {}, found \"{s}\" ({e})", ty.describe()), None))
                }
                _ => Err(wrong()),
            }
        }
        Ty::Timestamp => match v {
            Value::String(s) => time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map(|_| V::Str(s.clone()))
                .map_err(|_| wrong()),
            _ => Err(wrong()),
        },
    }
}

/// Decode a block's body against its schema. `skip` names attributes that the
/// caller evaluates itself (`for_each`).
pub fn decode_block(
    schema: &'static BlockSchema,
    block: &Block,
    file: &Arc<SourceFile>,
    ctx: &dyn EvalContext,
    scope: &Scope,
    diags: &mut Diags,
) -> DBlock {
    let labels = block.labels.iter().map(|l| (l.as_str().to_string(), Loc::new(file, label_span(l)))).collect();
    let header = Loc::new(file, header_span(block));
    let mut out =
        DBlock { header: header.clone(), labels, attrs: Vec::with_capacity(block.body.len()), blocks: Vec::new() };
    // A block has a few attributes: a list is cheaper than a map (thousands of blocks).
    let mut seen_attrs: Vec<(&str, Range<usize>)> = Vec::with_capacity(block.body.len());
    let mut seen_blocks: HashSet<&str> = HashSet::new();

    for structure in block.body.iter() {
        match structure {
            Structure::Attribute(attr) => {
                let key = attr.key.as_str();
                let key_loc = Loc::new(file, span_of(&attr.key));
                if let Some((_, first)) = seen_attrs.iter().find(|(k, _)| *k == key) {
                    diags.push(
                        Diagnostic::error(format!("attribute `{key}` is set twice"))
                            .at(&key_loc, "set again here")
                            .also(&Loc::new(file, first.clone()), "first set here"),
                    );
                    continue;
                }
                seen_attrs.push((key, key_loc.span.clone()));
                let Some(spec) = schema.attr(key) else {
                    let help = if schema.nested(key).is_some() {
                        Some(format!("`{key}` is a block: write {key} {{ ... }}"))
                    } else {
                        did_you_mean(key, schema.attrs.iter().map(|a| a.name))
                    };
                    let mut d = Diagnostic::error(format!("unknown attribute `{key}` in a {} block", schema.name))
                        .at(&key_loc, "not an attribute of this block");
                    d = d.help(help.unwrap_or_else(|| {
                        format!("attributes: {}", schema.attrs.iter().map(|a| a.name).collect::<Vec<_>>().join(", "))
                    }));
                    diags.push(d);
                    continue;
                };
                if spec.ty == Ty::ForEach {
                    continue;
                }
                let value_loc = Loc::new(file, span_of(&attr.value));
                // One walk of the expression serves both checks (at thousands
                // of blocks each walk shows in the profile).
                let travs = traversals(&attr.value);
                if uses_unset(&travs, scope) {
                    continue;
                }
                let ref_errors = check_traversals(&travs, file, scope);
                if !ref_errors.is_empty() {
                    diags.0.extend(ref_errors);
                    continue;
                }
                if !scope.before_resources && !general_only() {
                    if let Some(v) = direct_value(&attr.value, spec.ty, scope) {
                        out.attrs.push((spec.name, (v, value_loc)));
                        continue;
                    }
                }
                let fast = if scope.before_resources { None } else { fast_reference(&attr.value, scope) };
                let unknown_before = super::eval::unknown_env_count();
                let value = match fast.map(Ok).unwrap_or_else(|| evaluate(&attr.value, file, ctx.get())) {
                    Ok(v) => v,
                    Err(d) => {
                        diags.push(d);
                        continue;
                    }
                };
                let unknown = super::eval::unknown_env_since(unknown_before);
                if !unknown.is_empty() {
                    for name in &unknown {
                        diags.push(
                            Diagnostic::warning(format!(
                                "environment variable {name} is not set: `{key}` is unknown until plan"
                            ))
                            .at(&value_loc, "known at plan time")
                            .help(format!("`dbctl plan` and `dbctl apply` need {name} set")),
                        );
                    }
                    // Only a string can stand for an unknown string; anything
                    // else is left out, as if not written.
                    if !matches!(spec.ty, Ty::String) {
                        continue;
                    }
                }
                if value.is_null() && !spec.required {
                    continue;
                }
                match typecheck(&value, spec.ty) {
                    Ok(v) => {
                        out.attrs.push((spec.name, (v, value_loc)));
                    }
                    Err((msg, help)) => {
                        let mut d = Diagnostic::error(format!("wrong type for `{key}`: {msg}"))
                            .at(&value_loc, format!("expected {}", spec.ty.describe()));
                        if let Some(h) = help {
                            d = d.help(h);
                        }
                        diags.push(d);
                    }
                }
            }
            Structure::Block(inner) => {
                let name = inner.ident.as_str();
                let loc = Loc::new(file, header_span(inner));
                let Some(nested) = schema.nested(name) else {
                    let help = if schema.attr(name).is_some() {
                        Some(format!("`{name}` is an attribute: write {name} = ..."))
                    } else {
                        did_you_mean(name, schema.blocks.iter().map(|b| b.schema.name))
                    };
                    let mut d = Diagnostic::error(format!("unknown block `{name}` in a {} block", schema.name))
                        .at(&loc, "not a block this one can contain");
                    if let Some(h) = help {
                        d = d.help(h);
                    }
                    diags.push(d);
                    continue;
                };
                if !nested.multiple && !seen_blocks.insert(nested.schema.name) {
                    diags.push(
                        Diagnostic::error(format!("only one `{name}` block is allowed in a {} block", schema.name))
                            .at(&loc, "a second one"),
                    );
                    continue;
                }
                if !check_labels(nested.schema, inner, file, diags) {
                    continue;
                }
                let d = decode_block(nested.schema, inner, file, ctx, scope, diags);
                out.blocks.push((name.to_string(), d));
            }
        }
    }
    for spec in schema.attrs.iter().filter(|a| a.required) {
        if !seen_attrs.iter().any(|(k, _)| *k == spec.name) {
            diags.push(
                Diagnostic::error(format!("missing required attribute `{}` in a {} block", spec.name, schema.name))
                    .at(&header, format!("needs `{}`", spec.name))
                    .help(format!("{} = ...  # {}", spec.name, spec.doc)),
            );
        }
    }
    out
}

/// Check the number of labels of a block; false (with a diagnostic) if wrong.
pub fn check_labels(schema: &BlockSchema, block: &Block, file: &Arc<SourceFile>, diags: &mut Diags) -> bool {
    let want = schema.labels.len();
    let got = block.labels.len();
    if want == got {
        return true;
    }
    let example = if want == 0 {
        format!("{} {{ ... }}", schema.name)
    } else {
        format!(
            "{} {} {{ ... }}",
            schema.name,
            schema.labels.iter().map(|l| format!("\"{}\"", l.to_uppercase())).collect::<Vec<_>>().join(" ")
        )
    };
    let msg = match want {
        0 => format!("a `{}` block takes no labels", schema.name),
        1 => format!("a `{}` block takes one label ({}), found {got}", schema.name, schema.labels[0]),
        n => format!("a `{}` block takes {n} labels, found {got}", schema.name),
    };
    diags.push(
        Diagnostic::error(msg).at(&Loc::new(file, header_span(block)), "here").help(format!("write it as: {example}")),
    );
    false
}
