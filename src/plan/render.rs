//! Renderers of one `Plan`: human (as Terraform users read it), JSON (the
//! shape of Terraform's plan JSON where the concepts match) and markdown (a
//! pull-request comment). None of them can show a secret: values marked
//! sensitive print as `(sensitive)`, and steps never hold secret values.

use std::fmt::Write;

use serde_json::{json, Value};

use super::{Action, Plan, ResourceChange};

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
                if let Some(Value::Object(m)) = v {
                    let w = m.keys().map(|k| k.len()).max().unwrap_or(0);
                    for (k, val) in m {
                        let _ = writeln!(out, "      {s} {k:<w$} = {}", shown(c, k, val));
                    }
                }
                for a in
                    c.attributes.iter().filter(|a| a.sensitive && v.as_ref().is_none_or(|v| v.get(&a.name).is_none()))
                {
                    let _ = writeln!(out, "      {s} {:<w$} = (sensitive)", a.name, w = a.name.len());
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
            let _ = writeln!(out, "        #   {}", s.describe());
        }
    }
    let _ = writeln!(out, "    }}");
}

pub fn human(plan: &Plan, verbose: bool) -> String {
    let mut out = String::new();
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

/// The plan as JSON: `format_version`, `resource_changes[]`,
/// `resource_drift[]`, `steps[]` in apply order, `notes[]`.
pub fn json(plan: &Plan) -> Value {
    let changes: Vec<Value> = plan
        .changes
        .iter()
        .map(|c| {
            json!({
                "address": c.address,
                "type": c.kind,
                "name": c.name,
                "server": c.server,
                "change": {
                    "actions": if c.only_forgets() { vec!["forget"] } else { c.action.actions() },
                    "before": c.before,
                    "after": c.after,
                    "after_sensitive": c.after_sensitive,
                    "replace_paths": c.attributes.iter().filter(|a| a.forces_replacement).map(|a| vec![a.name.clone()]).collect::<Vec<_>>(),
                },
                "notes": c.notes,
            })
        })
        .collect();
    let drift: Vec<Value> = plan
        .drift
        .iter()
        .map(|d| json!({ "address": d.address, "attribute": d.attribute, "recorded": d.recorded, "live": d.live }))
        .collect();
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
    let (add, change, destroy) = plan.counts();
    let mut doc = json!({
        "format_version": plan.format_version,
        "dbctl_version": env!("CARGO_PKG_VERSION"),
        "refresh_only": plan.refresh_only,
        "resource_drift": drift,
        "resource_changes": changes,
        "steps": steps,
        "notes": plan.notes,
        "summary": { "add": add, "change": change, "destroy": destroy },
    });
    if !data_loss.is_empty() {
        doc["data_loss"] = json!(data_loss);
    }
    doc
}

pub fn markdown(plan: &Plan, verbose: bool) -> String {
    let body = human(plan, verbose);
    format!(
        "### {}\n\n<details><summary>Show plan</summary>\n\n```\n{}```\n\n</details>\n",
        plan.summary(),
        body.replace("```", "`\u{200b}``")
    )
}
