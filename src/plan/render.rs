//! Renderers of one `Plan`: human (as Terraform users read it), JSON (the
//! shape of Terraform's plan JSON where the concepts match) and markdown (a
//! pull-request comment). None of them can show a secret: values marked
//! sensitive print as `(sensitive)`, and steps never hold secret values.

use std::fmt::Write;

use serde_json::{json, Value};

use super::{Action, Plan, ResourceChange};
use crate::diag::Diagnostic;
use crate::model::Node;

fn fmt_value(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::String(s) => format!("\"{}\"", crate::model::escape_hcl_string(s)),
        Value::Array(a) => format!("[{}]", a.iter().map(fmt_value).collect::<Vec<_>>().join(", ")),
        Value::Object(_) => v.to_string(),
        other => other.to_string(),
    }
}

fn sensitive(c: &ResourceChange, name: &str) -> bool {
    c.after_sensitive.get(name).and_then(Value::as_bool).unwrap_or(false)
}

fn shown(c: &ResourceChange, name: &str, v: &Value) -> String {
    if sensitive(c, name) || name == "password" || name == "value" {
        "(sensitive)".into()
    } else if v.is_null() && c.after_unknown.get(name).and_then(Value::as_bool).unwrap_or(false) {
        "(known after apply)".into()
    } else {
        fmt_value(v)
    }
}

fn header(c: &ResourceChange) -> String {
    if c.only_forgets() {
        return format!("  # {} will be forgotten: dbctl stops managing it and leaves the server as it is", c.address);
    }
    let what = match c.action {
        Action::Create => "will be created",
        Action::Update => "will be updated in place",
        Action::Delete => "will be destroyed",
        Action::Replace => "must be replaced",
        Action::NoOp => "has no changes",
    };
    format!("  # {} {what}", c.address)
}

/// The grants of a grant set or router, one line per target.
fn grant_lines(c: &ResourceChange, out: &mut String) {
    let list = |v: &Option<Value>| -> Vec<(String, Value)> {
        v.as_ref()
            .and_then(|v| v["grants"].as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .map(|g| {
                let target = match (g["on"].as_str().unwrap_or(""), g["schema"].as_str()) {
                    ("database", _) => format!("database \"{}\"", g["database"].as_str().unwrap_or("")),
                    (on, Some(s)) => format!("{on} in \"{}\".\"{s}\"", g["database"].as_str().unwrap_or("")),
                    (on, None) => format!("{on} in \"{}\"", g["database"].as_str().unwrap_or("")),
                };
                (target, g["privileges"].clone())
            })
            .collect()
    };
    let before = list(&c.before);
    let after = list(&c.after);
    let empty = json!([]);
    let mut targets: Vec<&String> = before.iter().chain(after.iter()).map(|(t, _)| t).collect();
    targets.sort();
    targets.dedup();
    let width = targets.iter().map(|t| t.chars().count()).max().unwrap_or(0);
    for t in targets {
        let b = before.iter().find(|(x, _)| x == t).map_or(&empty, |(_, p)| p);
        let a = after.iter().find(|(x, _)| x == t).map_or(&empty, |(_, p)| p);
        let pad = " ".repeat(width - t.chars().count());
        let (sym, text) = match (b.as_array().is_none_or(|x| x.is_empty()), a.as_array().is_none_or(|x| x.is_empty())) {
            (true, false) => ("+", fmt_value(a)),
            (false, true) => ("-", format!("{} -> []", fmt_value(b))),
            _ if a == b => (" ", fmt_value(a)),
            _ => ("~", format!("{} -> {}", fmt_value(b), fmt_value(a))),
        };
        let _ = writeln!(out, "      {sym} {t}{pad} = {text}");
    }
}

/// A multi-line value (a published document) as a unified diff.
fn document_diff(a: &super::AttrChange, out: &mut String) {
    let before = a.before.as_str().unwrap_or("");
    let after = a.after.as_str().unwrap_or("");
    let sym = if a.before.is_null() { "+" } else { "~" };
    let _ = writeln!(out, "      {sym} {}:", a.name);
    let diff = similar::TextDiff::from_lines(before, after);
    for line in diff.unified_diff().context_radius(3).to_string().lines() {
        let _ = writeln!(out, "          {line}");
    }
}

fn resource(c: &ResourceChange, verbose: bool, out: &mut String) {
    let _ = writeln!(out, "{}", header(c));
    let sym = c.action.symbol();
    let lead = if sym.len() == 3 { sym.to_string() } else { format!("  {sym}") };
    let _ = writeln!(out, "{lead} {} \"{}\" {{", c.kind, c.name);
    if c.kind == "grant" || c.kind == "router" {
        if let Some(a) = &c.after {
            if let (Some(s), Some(routes)) = (a["service"].as_str(), a["routes"].as_object()) {
                let _ = writeln!(out, "        service = \"{s}\"");
                for (app, r) in routes {
                    let _ = writeln!(
                        out,
                        "        route \"{app}\" -> database \"{}\" ({})",
                        r["database"].as_str().unwrap_or(""),
                        r["access"].as_str().unwrap_or("")
                    );
                }
            }
        }
        grant_lines(c, out);
        for a in c.attributes.iter().filter(|a| a.name.starts_with("document ")) {
            document_diff(a, out);
        }
    } else {
        match c.action {
            Action::Create | Action::Delete => {
                let (v, s) = if c.action == Action::Create { (&c.after, "+") } else { (&c.before, "-") };
                let hidden: Vec<&str> = c
                    .attributes
                    .iter()
                    .filter(|a| a.sensitive && v.as_ref().is_none_or(|v| v.get(&a.name).is_none()))
                    .map(|a| a.name.as_str())
                    .collect();
                let keys = v.as_ref().and_then(Value::as_object).into_iter().flat_map(|m| m.keys());
                // One column for the values, the sensitive attributes' too.
                let w = keys.map(String::len).chain(hidden.iter().map(|n| n.len())).max().unwrap_or(0);
                if let Some(Value::Object(m)) = v {
                    for (k, val) in m {
                        let _ = writeln!(out, "      {s} {k:<w$} = {}", shown(c, k, val));
                    }
                }
                for name in hidden {
                    let _ = writeln!(out, "      {s} {name:<w$} = (sensitive)");
                }
            }
            Action::Update | Action::Replace | Action::NoOp => {
                let w = c.attributes.iter().map(|a| a.name.len()).max().unwrap_or(0);
                for a in &c.attributes {
                    let text = if a.sensitive {
                        "(sensitive)".to_string()
                    } else {
                        format!("{} -> {}", shown(c, &a.name, &a.before), shown(c, &a.name, &a.after))
                    };
                    let force = if a.forces_replacement { " # forces replacement" } else { "" };
                    let _ = writeln!(out, "      ~ {:<w$} = {text}{force}", a.name);
                }
                let total = c.after.as_ref().and_then(Value::as_object).map_or(0, |m| m.len());
                let hidden = total.saturating_sub(c.attributes.iter().filter(|a| !a.sensitive).count());
                if hidden > 0 {
                    let _ = writeln!(out, "        # ({hidden} unchanged attributes hidden)");
                }
            }
        }
    }
    for n in &c.notes {
        let _ = writeln!(out, "        # {n}");
    }
    if verbose && !c.steps.is_empty() {
        let _ = writeln!(out, "        # steps:");
        for s in &c.steps {
            let _ = writeln!(out, "        #   {}", s.describe().replace('\n', "\n        #     "));
        }
    }
    let _ = writeln!(out, "    }}");
}

pub fn human(plan: &Plan, verbose: bool) -> String {
    let mut out = String::new();
    if let Some(n) = plan.not_refreshed_note() {
        let _ = writeln!(out, "Note: {n}.\n");
    }
    if plan.data_loss().next().is_some() && !plan.refresh_only {
        out.push_str("Warning: this plan drops databases that hold data, and their data is lost:\n\n");
        for (c, d) in plan.data_loss() {
            let _ = writeln!(out, "  # {}", d.describe(&c.address));
        }
        out.push('\n');
    }
    if !plan.drift.is_empty() {
        out.push_str("Note: Objects have changed outside of dbctl\n\n");
        for d in &plan.drift {
            if d.attribute == "(exists)" {
                let _ = writeln!(out, "  # {} was deleted outside of dbctl", d.address);
            } else {
                let _ = writeln!(
                    out,
                    "  # {}: {} changed from {} to {}",
                    d.address,
                    d.attribute,
                    fmt_value(&d.recorded),
                    fmt_value(&d.live)
                );
            }
        }
        out.push('\n');
    }
    for n in &plan.notes {
        if n.starts_with("Warning: ") {
            let _ = writeln!(out, "{n}");
        } else {
            let _ = writeln!(out, "Note: {n}");
        }
    }
    if !plan.notes.is_empty() {
        out.push('\n');
    }
    if plan.refresh_only {
        let _ = writeln!(
            out,
            "{}",
            if plan.drift.is_empty() {
                "No drift: the servers match the state."
            } else {
                "Refresh only: nothing will be changed."
            }
        );
        return out;
    }
    let changed: Vec<&ResourceChange> = plan.changes.iter().filter(|c| c.action != Action::NoOp).collect();
    if !changed.is_empty() {
        out.push_str("dbctl will perform the following actions:\n\n");
        for c in changed {
            resource(c, verbose, &mut out);
            out.push('\n');
        }
    }
    let _ = writeln!(out, "{}", plan.summary());
    out
}

/// Attribute names whose value is a secret wherever they appear.
fn always_sensitive(name: &str) -> bool {
    name == "password" || name == "value"
}

/// Terraform's `name` (the block label) and `index` (the `for_each` key) of
/// an address; a user's or role's grant set (`user.app.grant`) takes its
/// owner's label.
fn label_and_index(c: &ResourceChange) -> (String, Option<String>) {
    match crate::model::Address::parse(Node::base(&c.address)) {
        Ok(a) => (a.name, a.key),
        Err(_) => (c.name.clone(), None),
    }
}

/// A before/after value with every sensitive attribute replaced by
/// "(sensitive)" (the diff already leaves secrets out; this holds even if
/// a later change forgets to).
fn masked(v: &Option<Value>, sens: &Value) -> Value {
    match v {
        None => Value::Null,
        Some(Value::Object(m)) => Value::Object(
            m.iter()
                .map(|(k, x)| {
                    let hide = always_sensitive(k) || sens.get(k).and_then(Value::as_bool).unwrap_or(false);
                    (k.clone(), if hide && !x.is_null() { json!("(sensitive)") } else { x.clone() })
                })
                .collect(),
        ),
        Some(other) => other.clone(),
    }
}

/// Terraform's `before_sensitive` / `after_sensitive`: `false` when there is
/// no value, else an object with `true` for each sensitive attribute.
fn sensitivity(v: &Option<Value>, sens: &Value) -> Value {
    let Some(v) = v else { return Value::Bool(false) };
    let mut o = serde_json::Map::new();
    for (k, b) in sens.as_object().into_iter().flatten() {
        if b.as_bool() == Some(true) {
            o.insert(k.clone(), Value::Bool(true));
        }
    }
    for k in v.as_object().into_iter().flat_map(|m| m.keys()) {
        if always_sensitive(k) {
            o.insert(k.clone(), Value::Bool(true));
        }
    }
    Value::Object(o)
}

/// `address`, `mode`, `type`, `name` and (under `for_each`) `index`, as
/// Terraform writes them, plus `provider_name`.
fn identity(c: &ResourceChange) -> serde_json::Map<String, Value> {
    let (label, index) = label_and_index(c);
    let mut o = serde_json::Map::new();
    o.insert("address".into(), json!(c.address));
    o.insert("mode".into(), json!("managed"));
    o.insert("type".into(), json!(c.kind));
    o.insert("name".into(), json!(label));
    if let Some(i) = index {
        o.insert("index".into(), json!(i));
    }
    o.insert("provider_name".into(), json!("dbctl"));
    o
}

fn resource_change_json(c: &ResourceChange) -> Value {
    let mut o = identity(c);
    let actions = if c.only_forgets() { vec!["forget"] } else { c.action.actions() };
    o.insert(
        "change".into(),
        json!({
            "actions": actions,
            "before": masked(&c.before, &c.after_sensitive),
            "after": masked(&c.after, &c.after_sensitive),
            "after_unknown": if !c.after_unknown.is_null() { c.after_unknown.clone() } else if c.after.is_some() { json!({}) } else { json!(false) },
            "before_sensitive": sensitivity(&c.before, &c.after_sensitive),
            "after_sensitive": sensitivity(&c.after, &c.after_sensitive),
            "replace_paths": c.attributes.iter().filter(|a| a.forces_replacement).map(|a| vec![a.name.clone()]).collect::<Vec<_>>(),
        }),
    );
    if c.action == Action::Replace {
        o.insert("action_reason".into(), json!("replace_because_cannot_update"));
    }
    o.insert("object_name".into(), json!(c.name));
    o.insert("server".into(), json!(c.server));
    o.insert("notes".into(), json!(c.notes));
    Value::Object(o)
}

/// Drift in Terraform's `resource_drift` shape: one entry per resource,
/// `["update"]` with the drifted attributes as recorded (before) and as
/// found (after), or `["delete"]` for an object deleted outside dbctl.
fn drift_json(plan: &Plan) -> Vec<Value> {
    let mut order: Vec<&str> = Vec::new();
    let mut by: std::collections::BTreeMap<&str, Vec<&super::Drift>> = Default::default();
    for d in &plan.drift {
        if !by.contains_key(d.address.as_str()) {
            order.push(&d.address);
        }
        by.entry(&d.address).or_default().push(d);
    }
    order
        .into_iter()
        .map(|addr| {
            let ds = &by[addr];
            let known = plan.changes.iter().find(|c| c.address == addr);
            let parsed = crate::model::Address::parse(Node::base(addr)).ok();
            let kind = match (known, Node::is_grants(addr), &parsed) {
                (Some(c), _, _) => c.kind.clone(),
                (None, true, _) => "grant".into(),
                (None, false, Some(a)) => a.kind.as_str().to_string(),
                (None, false, None) => String::new(),
            };
            let mut o = serde_json::Map::new();
            o.insert("address".into(), json!(addr));
            o.insert("mode".into(), json!("managed"));
            o.insert("type".into(), json!(kind));
            o.insert("name".into(), json!(parsed.as_ref().map_or(Node::base(addr).to_string(), |a| a.name.clone())));
            if let Some(k) = parsed.as_ref().and_then(|a| a.key.clone()) {
                o.insert("index".into(), json!(k));
            }
            o.insert("provider_name".into(), json!("dbctl"));
            let deleted = ds.iter().any(|d| d.attribute == "(exists)");
            let mut before = serde_json::Map::new();
            let mut after = serde_json::Map::new();
            for d in ds.iter().filter(|d| d.attribute != "(exists)") {
                let hide = always_sensitive(&d.attribute);
                before.insert(d.attribute.clone(), if hide { json!("(sensitive)") } else { d.recorded.clone() });
                after.insert(d.attribute.clone(), if hide { json!("(sensitive)") } else { d.live.clone() });
            }
            o.insert(
                "change".into(),
                if deleted {
                    json!({
                        "actions": ["delete"], "before": before, "after": null, "after_unknown": {},
                        "before_sensitive": {}, "after_sensitive": false, "replace_paths": [],
                    })
                } else {
                    json!({
                        "actions": ["update"], "before": before, "after": after, "after_unknown": {},
                        "before_sensitive": {}, "after_sensitive": {}, "replace_paths": [],
                    })
                },
            );
            o.insert("drifted_attributes".into(), json!(ds.iter().map(|d| d.attribute.as_str()).collect::<Vec<_>>()));
            Value::Object(o)
        })
        .collect()
}

/// Resources of the state (`before`) or of the planned result (`after`),
/// in Terraform's `values.root_module.resources` shape.
fn module_values(plan: &Plan, after: bool) -> Value {
    let resources: Vec<Value> = plan
        .changes
        .iter()
        .filter_map(|c| {
            let v = if after { &c.after } else { &c.before };
            v.as_ref()?;
            let mut o = identity(c);
            o.insert("values".into(), masked(v, &c.after_sensitive));
            o.insert("sensitive_values".into(), sensitivity(v, &c.after_sensitive));
            Some(Value::Object(o))
        })
        .collect();
    json!({ "root_module": { "resources": resources } })
}

/// Terraform's `configuration`: each configured resource once (a resource
/// with `for_each` once, without its keys), with the values it sets as
/// constant expressions (secret values masked).
fn configuration_json(plan: &Plan) -> Value {
    let mut seen = std::collections::BTreeSet::new();
    let mut resources = Vec::new();
    for c in plan.changes.iter().filter(|c| c.after.is_some()) {
        let (label, index) = label_and_index(c);
        let base = if Node::is_grants(&c.address) {
            c.address.clone()
        } else {
            format!("{}.{label}", c.address.split('.').next().unwrap_or(""))
        };
        if !seen.insert(base.clone()) {
            continue;
        }
        let expressions: serde_json::Map<String, Value> = match (index.is_none(), masked(&c.after, &c.after_sensitive))
        {
            (true, Value::Object(m)) => m.into_iter().map(|(k, v)| (k, json!({ "constant_value": v }))).collect(),
            _ => Default::default(),
        };
        resources.push(json!({
            "address": base,
            "mode": "managed",
            "type": c.kind,
            "name": label,
            "provider_config_key": "dbctl",
            "expressions": expressions,
            "schema_version": 0,
        }));
    }
    json!({ "provider_config": {}, "root_module": { "resources": resources } })
}

/// A configuration warning as the JSON documents carry it.
fn config_warning_json(w: &super::ConfigWarning) -> Value {
    json!({ "severity": "warning", "message": w.message, "file": w.file, "line": w.line, "column": w.column, "help": w.help })
}

/// The plan as JSON, shaped like Terraform's `show -json` of a plan:
/// `format_version`, `resource_changes[]`, `resource_drift[]`,
/// `prior_state`, `planned_values`, `configuration`, `variables`; plus
/// dbctl's own `steps[]` in apply order, `warnings[]`, `notes[]` and `summary`.
pub fn json(plan: &Plan) -> Value {
    let changes: Vec<Value> = plan.changes.iter().map(resource_change_json).collect();
    let steps: Vec<Value> = plan
        .steps()
        .map(|s| {
            json!({
                "address": s.address,
                "server": s.server.as_ref().map(|a| a.to_string()),
                "database": s.database,
                "op": serde_json::to_value(&s.op).ok().and_then(|v| v.get("op").cloned()),
                "description": s.describe(),
            })
        })
        .collect();
    let data_loss: Vec<Value> = plan
        .data_loss()
        .map(|(c, d)| json!({ "address": c.address, "database": d.database, "tables": d.tables }))
        .collect();
    let variables: serde_json::Map<String, Value> =
        plan.variables.iter().map(|(k, v)| (k.clone(), json!({ "value": v }))).collect();
    let warnings: Vec<Value> = plan
        .config_warnings
        .iter()
        .map(config_warning_json)
        .chain(plan.warning_notes().map(|n| json!({ "severity": "warning", "message": n })))
        .collect();
    let (add, change, destroy) = plan.counts();
    let mut doc = json!({
        "format_version": plan.format_version,
        "dbctl_version": env!("CARGO_PKG_VERSION"),
        "errored": false,
        "complete": plan.targets.is_empty(),
        "applyable": plan.has_changes() && !plan.refresh_only,
        "refresh_only": plan.refresh_only,
        "refreshed": plan.live_read_at.is_none(),
        "variables": variables,
        "resource_drift": drift_json(plan),
        "resource_changes": changes,
        "prior_state": {
            "format_version": plan.format_version,
            "lineage": plan.state_lineage,
            "serial": plan.state_serial,
            "values": module_values(plan, false),
        },
        "planned_values": module_values(plan, true),
        "configuration": configuration_json(plan),
        "steps": steps,
        "warnings": warnings,
        "notes": plan.notes,
        "summary": { "add": add, "change": change, "destroy": destroy, "forget": plan.forgotten() },
    });
    if !data_loss.is_empty() {
        doc["data_loss"] = json!(data_loss);
    }
    if let Some(at) = &plan.live_read_at {
        doc["live_read_at"] = json!(at);
    }
    doc
}

/// A configuration diagnostic or another error, for the JSON and markdown
/// error reports.
fn diag_json(d: &Diagnostic, place: Option<(String, usize, usize)>) -> Value {
    let (file, line, column) = match place {
        Some((f, l, c)) => (Some(f), Some(l), Some(c)),
        None => (None, None, None),
    };
    json!({
        "severity": if d.is_error() { "error" } else { "warning" },
        "message": d.message,
        "file": file, "line": line, "column": column,
        "label": if d.label.is_empty() { None } else { Some(d.label.to_string()) },
        "help": d.help.as_deref(),
    })
}

/// What `plan --format json` prints instead of a plan when none could be
/// made: every diagnostic, errors (with file and line where they point into
/// the configuration) and warnings apart.
pub fn json_errors(diags: &[Diagnostic]) -> Value {
    let places = crate::diag::locate(diags);
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    for (d, p) in diags.iter().zip(places) {
        if d.is_error() {
            errors.push(diag_json(d, p));
        } else {
            warnings.push(diag_json(d, p));
        }
    }
    json!({
        "format_version": super::FORMAT_VERSION,
        "dbctl_version": env!("CARGO_PKG_VERSION"),
        "errored": true,
        "errors": errors,
        "warnings": warnings,
    })
}

/// The largest comment markdown makes: GitHub holds 65,536 characters in
/// one comment; the rest is margin for what a CI step adds around it.
pub const MARKDOWN_LIMIT: usize = 60_000;

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// Text inside a fenced block must not close the fence.
fn fenced(s: &str) -> String {
    s.replace("```", "`\u{200b}``")
}

/// Text inline in markdown (a list item): no HTML, no stray emphasis.
fn inline(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\\' | '`' | '*' | '[' | ']' | '|' | '#' => {
                out.push('\\');
                out.push(ch);
            }
            '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// How to see what a truncated comment leaves out.
const SEE_ALL: &str = "run `dbctl plan` (or `dbctl show PLANFILE` for a saved plan) to see all of it, \
                       or `--format json` for the whole plan as data";

/// As many of `items` as fit in `budget` characters, then a line saying how
/// many were left out (the line fits in the budget too).
fn take_fitting(items: &[String], budget: usize, more: impl Fn(usize) -> String) -> (String, usize) {
    let mut out = String::new();
    let mut used = 0;
    for (i, it) in items.iter().enumerate() {
        let n = chars(it);
        let rest = items.len() - i - 1;
        let tail = if rest > 0 { chars(&more(rest)) } else { 0 };
        if used + n + tail > budget {
            let left = items.len() - i;
            out.push_str(&more(left));
            return (out, i);
        }
        out.push_str(it);
        used += n;
    }
    (out, items.len())
}

/// One resource of the human plan, made for a ```diff block: the change
/// symbol moves to the first column so GitHub colours the line (`+` green,
/// `-` red, `!` for `~`, in place).
fn diff_block(c: &ResourceChange) -> String {
    let mut human = String::new();
    resource(c, false, &mut human);
    let mut out = String::new();
    for line in human.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let moved = if let Some(rest) = trimmed.strip_prefix("-/+ ") {
            format!("-/+{}{rest}", " ".repeat(indent + 1))
        } else {
            match trimmed.chars().next() {
                Some(sym @ ('+' | '-' | '~')) if !trimmed.starts_with("+++") && !trimmed.starts_with("---") => {
                    let sym = if sym == '~' { '!' } else { sym };
                    format!("{sym}{}{}", " ".repeat(indent), &trimmed[1..])
                }
                _ => line.to_string(),
            }
        };
        out.push_str(&fenced(&moved));
        out.push('\n');
    }
    out.push('\n');
    out
}

/// Configuration warnings that say the same thing about different
/// resources, as groups in the order their first member appears (as the
/// terminal shows them).
fn grouped(ws: &[super::ConfigWarning]) -> Vec<Vec<&super::ConfigWarning>> {
    let mut groups: Vec<Vec<&super::ConfigWarning>> = Vec::new();
    let mut index: std::collections::HashMap<(String, Option<&str>), usize> = Default::default();
    for w in ws {
        let message = match &w.subject {
            Some(s) => w.message.replace(s.as_str(), "\u{0}"),
            None => w.message.clone(),
        };
        let key = (message, w.help.as_deref());
        match index.get(&key) {
            Some(&i) => groups[i].push(w),
            None => {
                index.insert(key, groups.len());
                groups.push(vec![w]);
            }
        }
    }
    groups
}

/// The plan as a pull-request comment: the summary first; what is destroyed
/// or replaced, every warning and every note above the fold; the changes in
/// a ```diff block and the steps' SQL in collapsed sections. Never longer
/// than `MARKDOWN_LIMIT` characters: what does not fit is left out with a
/// note that says how to see it.
pub fn markdown(plan: &Plan, _verbose: bool) -> String {
    let mut head = String::new();
    let _ = writeln!(head, "### {}\n", plan.summary());
    if let Some(n) = plan.not_refreshed_note() {
        let _ =
            writeln!(head, "> [!NOTE]\n> **Not refreshed:** {}.\n", inline(n.trim_start_matches("not refreshed: ")));
    }
    if plan.refresh_only {
        let _ = writeln!(
            head,
            "{}\n",
            if plan.drift.is_empty() {
                "No drift: the servers match the state."
            } else {
                "Refresh only: nothing will be changed."
            }
        );
    }
    // Above the fold, each list bounded so that the rest keeps some room.
    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    let loss: Vec<String> = if plan.refresh_only {
        Vec::new()
    } else {
        plan.data_loss().map(|(c, d)| format!("- {}\n", inline(&d.describe(&c.address)))).collect()
    };
    if !loss.is_empty() {
        sections.push((
            "> [!CAUTION]\n> **This plan drops databases that hold data, and their data is lost:**\n\n".into(),
            loss,
        ));
    }
    let destroys: Vec<String> = plan
        .changes
        .iter()
        .filter(|c| !plan.refresh_only && matches!(c.action, Action::Delete | Action::Replace) && !c.only_forgets())
        .map(|c| {
            let why: Vec<&str> =
                c.attributes.iter().filter(|a| a.forces_replacement).map(|a| a.name.as_str()).collect();
            match c.action {
                Action::Replace if !why.is_empty() => {
                    format!(
                        "- `{}` must be replaced ({} forces replacement)\n",
                        fenced(&c.address),
                        inline(&why.join(", "))
                    )
                }
                Action::Replace => format!("- `{}` must be replaced\n", fenced(&c.address)),
                _ => format!("- `{}` will be destroyed\n", fenced(&c.address)),
            }
        })
        .collect();
    if !destroys.is_empty() {
        sections.push(("**Destroyed or replaced:**\n\n".into(), destroys));
    }
    let warnings: Vec<String> = grouped(&plan.config_warnings)
        .into_iter()
        .map(|g| {
            let w = g[0];
            let at = w.place().map(|p| format!(" (`{}`)", fenced(&p))).unwrap_or_default();
            let help = w.help.as_deref().map(|h| format!(" — {}", inline(h))).unwrap_or_default();
            let mut s = format!("- :warning: {}{at}{help}", inline(&w.message));
            if g.len() > 1 {
                let named: Vec<String> = g[1..]
                    .iter()
                    .take(5)
                    .map(|o| match (&o.subject, o.place()) {
                        (Some(a), _) => format!("`{}`", fenced(a)),
                        (None, Some(p)) => format!("`{}`", fenced(&p)),
                        (None, None) => "elsewhere".into(),
                    })
                    .collect();
                let more = if g.len() - 1 > named.len() {
                    format!(" and {} more", g.len() - 1 - named.len())
                } else {
                    String::new()
                };
                let _ = write!(s, " — the same warning applies to {} more: {}{more}", g.len() - 1, named.join(", "));
            }
            s.push('\n');
            s
        })
        .chain(plan.warning_notes().map(|n| {
            let text = n.strip_prefix("Warning: ").unwrap_or(n);
            format!("- :warning: {}\n", inline(text))
        }))
        .chain(plan.changes.iter().flat_map(|c| {
            c.notes.iter().filter(|n| super::is_warning(n)).map(move |n| {
                format!("- :warning: `{}`: {}\n", fenced(&c.address), inline(n.strip_prefix("Warning: ").unwrap_or(n)))
            })
        }))
        .collect();
    if !warnings.is_empty() {
        sections.push(("**Warnings:**\n\n".into(), warnings));
    }
    let notes: Vec<String> = plan.plain_notes().map(|n| format!("- {}\n", inline(n))).collect();
    if !notes.is_empty() {
        sections.push(("**Notes:**\n\n".into(), notes));
    }
    let drift: Vec<String> = plan
        .drift
        .iter()
        .map(|d| {
            if d.attribute == "(exists)" {
                format!("- `{}` was deleted outside of dbctl\n", fenced(&d.address))
            } else {
                let hide = always_sensitive(&d.attribute);
                let v = |x: &Value| if hide { "(sensitive)".to_string() } else { fmt_value(x) };
                format!(
                    "- `{}`: {} changed from `{}` to `{}`\n",
                    fenced(&d.address),
                    inline(&d.attribute),
                    fenced(&v(&d.recorded)),
                    fenced(&v(&d.live))
                )
            }
        })
        .collect();
    if !drift.is_empty() {
        sections.push(("**Changed outside of dbctl** (found on refresh):\n\n".into(), drift));
    }

    let changed: Vec<&ResourceChange> =
        if plan.refresh_only { Vec::new() } else { plan.changes.iter().filter(|c| c.action != Action::NoOp).collect() };
    let blocks: Vec<String> = changed.iter().map(|c| diff_block(c)).collect();
    let sql: Vec<String> = changed
        .iter()
        .filter(|c| !c.steps.is_empty())
        .map(|c| {
            let mut s = format!("-- {}\n", c.address.replace('\n', " "));
            for st in &c.steps {
                let d = st.describe();
                if matches!(
                    st.op,
                    super::Op::Sql { .. } | super::Op::SetPassword { .. } | super::Op::DropDatabase { .. }
                ) {
                    let on = st.database.as_ref().map(|db| format!(" -- in database {db}")).unwrap_or_default();
                    let stmt = d.strip_suffix(on.as_str()).unwrap_or(&d).trim_end().trim_end_matches(';');
                    let _ = writeln!(s, "{stmt};{on}");
                } else if let super::Op::Migrate(m) = &st.op {
                    // The file's own SQL, under a comment naming it.
                    let _ = writeln!(s, "{}", d.lines().next().unwrap_or_default());
                    let _ = writeln!(s, "{}", m.sql.trim_end());
                } else {
                    let _ = writeln!(s, "-- {}", d.replace('\n', " "));
                }
            }
            s.push('\n');
            fenced(&s)
        })
        .collect();

    // The budget: what is above the fold first (each list at most half of
    // what is left, so that one long list cannot push out the others), then
    // the changes, then the SQL.
    let diff_open = format!("<details><summary>Changes ({} resources)</summary>\n\n```diff\n", blocks.len());
    let diff_close = "```\n\n</details>\n\n";
    let sql_open = "<details><summary>SQL and steps, in apply order</summary>\n\n```sql\n";
    let sql_close = "```\n\n</details>\n";
    let frame = chars(&diff_open) + chars(diff_close) + chars(sql_open) + chars(sql_close) + 600;
    let mut out = head;
    let mut truncated = false;
    let n_sections = sections.len();
    for (i, (title, items)) in sections.into_iter().enumerate() {
        let left = MARKDOWN_LIMIT.saturating_sub(chars(&out) + frame);
        // Later sections keep a share; warnings are never cut while room remains.
        let share = left / (n_sections - i).max(1);
        let budget = if i + 1 == n_sections { left } else { share.max(left / 2) };
        let (text, shown) = take_fitting(&items, budget.saturating_sub(chars(&title) + 2), |n| {
            format!("- … and {n} more: {SEE_ALL}\n")
        });
        truncated |= shown < items.len();
        out.push_str(&title);
        out.push_str(&text);
        out.push('\n');
    }
    if !blocks.is_empty() {
        let left = MARKDOWN_LIMIT.saturating_sub(chars(&out) + frame);
        let sql_len: usize = sql.iter().map(|s| chars(s)).sum();
        let budget = left.saturating_sub(sql_len.min(left / 4));
        let (text, shown) = take_fitting(&blocks, budget, |n| {
            format!("# … {n} more resource(s) not shown: the comment would be too long\n")
        });
        truncated |= shown < blocks.len();
        out.push_str(&diff_open);
        out.push_str(&text);
        out.push_str(diff_close);
    }
    if !sql.is_empty() {
        let left = MARKDOWN_LIMIT.saturating_sub(chars(&out) + chars(sql_open) + chars(sql_close) + 600);
        let (text, shown) = take_fitting(&sql, left, |n| format!("-- … the steps of {n} more resource(s) not shown\n"));
        truncated |= shown < sql.len();
        out.push_str(sql_open);
        out.push_str(&text);
        out.push_str(sql_close);
    }
    if truncated {
        let _ = writeln!(out, "\n> [!NOTE]\n> This comment is shortened to fit a pull-request comment: {SEE_ALL}.");
    }
    out
}

/// What `plan --format markdown` prints when no plan could be made: the
/// diagnostics as a comment CI can post (and the command exits 1).
pub fn markdown_errors(diags: &[Diagnostic]) -> String {
    let places = crate::diag::locate(diags);
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let mut out = format!(
        "### :x: dbctl could not make the plan ({errors} error{})\n\nNothing was changed.\n\n",
        if errors == 1 { "" } else { "s" }
    );
    let mut items = Vec::new();
    for (d, p) in diags.iter().zip(places) {
        let what = if d.is_error() { "**Error:**" } else { ":warning: **Warning:**" };
        let at = p.map(|(f, l, c)| format!(" (`{}`)", fenced(&format!("{f}:{l}:{c}")))).unwrap_or_default();
        let mut s = format!("- {what} {}{at}\n", inline(&d.message));
        if let Some(h) = &d.help {
            let _ = writeln!(s, "  {}", inline(h));
        }
        items.push(s);
    }
    let rendered = fenced(&crate::diag::render(diags, false));
    let open = "\n<details><summary>Diagnostics, as the terminal shows them</summary>\n\n```text\n";
    let close = "```\n\n</details>\n";
    let budget = MARKDOWN_LIMIT.saturating_sub(chars(&out) + 200);
    let (text, _) =
        take_fitting(&items, budget / 2, |n| format!("- … and {n} more: run `dbctl validate` to see all of them\n"));
    out.push_str(&text);
    let left = MARKDOWN_LIMIT.saturating_sub(chars(&out) + chars(open) + chars(close) + 200);
    if chars(&rendered) <= left {
        out.push_str(open);
        out.push_str(&rendered);
        out.push_str(close);
    }
    out
}
