//! HCL files → a checked `Config`, or diagnostics.
//!
//! Order of evaluation: variables (defaults, DBCTL_VAR_*, --var-file, --var),
//! locals (may use variables, other locals and resources without for_each),
//! for_each expressions (variables and locals), then every resource instance
//! with `each` bound. References are checked against what is declared before
//! anything is evaluated, so a typo points at the exact token.

pub mod build;
pub mod check;
pub mod decode;
pub mod eval;
pub mod jsonschema;
pub mod schema;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hcl::edit::parser::parse_body;
use hcl::edit::structure::{Attribute, Block, Structure};
use hcl::{Map, Value};
use indexmap::IndexMap;

use self::decode::{check_labels, check_refs, decode_block, evaluate, header_span, span_of, traversals, Scope};
use self::eval::{ref_marker, root_context};
use self::schema::BlockSchema;
use crate::diag::{did_you_mean, Diagnostic, Diags, Loc, SourceFile};
use crate::model::{Address, Config, FastHashSet, FastIndexMap, Kind};

#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The configuration directory (`-C`, default `.`).
    pub dir: PathBuf,
    /// Files named with `--config`; empty = every `*.hcl` in `dir`.
    pub files: Vec<PathBuf>,
    /// `--var NAME=VALUE`, in order.
    pub vars: Vec<(String, String)>,
    pub var_files: Vec<PathBuf>,
    /// Values recorded in a saved plan: below every other source, so a
    /// value given again wins (and the caller compares it with the plan's).
    pub preset: IndexMap<String, Value>,
    /// `validate`: an unset `env("NAME")` without a default is an unknown
    /// value (a warning), not an error; plan and apply need it set.
    pub env_unknown: bool,
}

#[derive(Debug, Clone)]
pub struct VarInfo {
    pub value: Value,
    pub sensitive: bool,
    /// Declared but given no value (already reported): expressions that use
    /// it are skipped rather than reported again.
    pub unset: bool,
}

#[derive(Debug)]
pub struct Loaded {
    pub config: Option<Config>,
    pub diags: Diags,
    pub files: Vec<Arc<SourceFile>>,
    pub variables: IndexMap<String, VarInfo>,
}

struct RawBlock {
    schema: &'static BlockSchema,
    block: Block,
    file: Arc<SourceFile>,
}

impl RawBlock {
    fn label(&self) -> &str {
        self.block.labels.first().map_or("", |l| l.as_str())
    }
    fn header(&self) -> Loc {
        Loc::new(&self.file, header_span(&self.block))
    }
}

/// The `*.hcl` files of a configuration, sorted by name.
pub fn config_files(opts: &LoadOptions) -> Result<Vec<PathBuf>, Diagnostic> {
    if !opts.files.is_empty() {
        return Ok(opts.files.iter().map(|f| if f.is_absolute() { f.clone() } else { opts.dir.join(f) }).collect());
    }
    let entries = std::fs::read_dir(&opts.dir).map_err(|e| {
        Diagnostic::error(format!("cannot read the configuration directory {}: {e}", opts.dir.display()))
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "hcl") && p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Diagnostic::error(format!("no *.hcl files in {}", opts.dir.display()))
            .help("run dbctl in a configuration directory, or name one with -C DIR or files with --config FILE"));
    }
    Ok(files)
}

fn display_name(path: &Path, dir: &Path) -> String {
    let rel = path.strip_prefix(dir).unwrap_or(path);
    let s = rel.to_string_lossy().to_string();
    s.strip_prefix("./").map(str::to_string).unwrap_or(s)
}

/// Read and parse every file; syntax errors become diagnostics.
pub fn parse_files(
    opts: &LoadOptions,
    diags: &mut Diags,
) -> Vec<(Arc<SourceFile>, Option<hcl::edit::structure::Body>)> {
    let paths = match config_files(opts) {
        Ok(p) => p,
        Err(d) => {
            diags.push(d);
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for path in paths {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                diags.push(Diagnostic::error(format!("cannot read {}: {e}", path.display())));
                continue;
            }
        };
        let file = Arc::new(SourceFile { name: display_name(&path, &opts.dir), text });
        match parse_large(&file.text) {
            Ok(body) => out.push((file, Some(body))),
            Err(e) => {
                let span = file.error_span(e.location().offset());
                diags.push(
                    Diagnostic::error(format!("syntax error: {}", e.message())).at(&Loc::new(&file, span), "here"),
                );
                out.push((file, None));
            }
        }
    }
    out
}

/// Configurations with this many resource blocks are decoded on two threads.
const PARALLEL_DECODE_BLOCKS: usize = 1000;

#[cfg(test)]
thread_local! {
    /// Tests: decode every block on the loading thread, to compare with two threads.
    static ONE_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(test)]
fn decode_on_one_thread() -> bool {
    ONE_THREAD.with(|o| o.get())
}

#[cfg(not(test))]
fn decode_on_one_thread() -> bool {
    false
}

/// Files this large are parsed in two halves on two threads (the parser
/// takes about 55 ms per MB on this project's machines).
const PARALLEL_PARSE_BYTES: usize = 256 * 1024;

/// `parse_body`, in two halves at once for a large file. The halves are cut
/// at a line that starts a top-level block right after a line holding only
/// `}`; the second half is parsed behind as many spaces as the first half has
/// bytes, so every span is still an offset into the whole file. A cut that
/// is not between two top-level structures leaves the first half unbalanced
/// (an unclosed block, bracket, string, heredoc or comment) and fails to
/// parse; then, as when either half has a syntax error, the whole file is
/// parsed again in one piece, so errors are reported exactly as before.
fn parse_large(text: &str) -> Result<hcl::edit::structure::Body, hcl::edit::parser::Error> {
    if text.len() >= PARALLEL_PARSE_BYTES {
        if let Some(cut) = top_level_cut(text) {
            let mut second = String::with_capacity(text.len());
            second.extend(std::iter::repeat_n(' ', cut));
            second.push_str(&text[cut..]);
            let behind = std::thread::spawn(move || parse_body(&second));
            let first = parse_body(&text[..cut]);
            if let (Ok(first), Ok(Ok(second))) = (first, behind.join()) {
                // One allocation for both halves (pushed one by one, the
                // first half's vector doubled, each time into fresh pages).
                return Ok(first.into_iter().chain(second).collect());
            }
        }
    }
    parse_body(text)
}

/// Where to cut `text` in two for `parse_large`: the start of the first line
/// at or after the middle that begins with a letter and follows a line that
/// is only `}`.
fn top_level_cut(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut at = text.len() / 2;
    while at < bytes.len() {
        let nl = at + memchr_newline(&bytes[at..])?;
        let next = nl + 1;
        let line_start = bytes[..nl].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let closing = text[line_start..nl].trim_end_matches('\r') == "}";
        if closing {
            // Skip blank lines after the `}`: the cut goes at the next block's first line.
            let mut start = next;
            while start < bytes.len() && (bytes[start] == b'\n' || bytes[start] == b'\r') {
                start += 1;
            }
            if start < bytes.len() && bytes[start].is_ascii_alphabetic() {
                return Some(start);
            }
        }
        at = next;
    }
    None
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

pub fn load(opts: &LoadOptions) -> Loaded {
    load_seeing_servers(opts, &mut |_| {})
}

/// [`load`], showing `servers` the configuration's servers as soon as they
/// are decoded, before the other blocks are (at thousands of blocks, the
/// larger part of the load): a plan starts reading the servers meanwhile.
/// Not called when anything decoded so far is in error.
pub fn load_seeing_servers(opts: &LoadOptions, servers: &mut dyn FnMut(&Config)) -> Loaded {
    let mut diags = Diags::default();
    eval::set_base_dir(opts.dir.clone());
    eval::set_env_unknown(opts.env_unknown);
    let t = std::time::Instant::now();
    let parsed = parse_files(opts, &mut diags);
    tracing::debug!("configuration: parsed in {} ms", t.elapsed().as_millis());
    let files: Vec<Arc<SourceFile>> = parsed.iter().map(|(f, _)| f.clone()).collect();
    let mut loaded = Loaded { config: None, diags: Diags::default(), files, variables: IndexMap::new() };

    let raw = classify(parsed, &mut diags);
    let index = Index::of(&raw, &mut diags);
    let resource_blocks = &index.resource_blocks;
    let with_for_each: FastHashSet<(Kind, String)> = resource_blocks
        .iter()
        .filter(|(_, &i)| raw[i].block.body.has_attribute("for_each"))
        .map(|(k, _)| k.clone())
        .collect();
    let variables = variables(opts, &raw, &index.var_blocks, &with_for_each, &mut diags);
    let var_object = Value::Object(variables.iter().map(|(k, v)| (k.clone(), v.value.clone())).collect());
    // Names of every resource, with for_each keys once known.
    let mut resources: FastIndexMap<(Kind, String), Option<Vec<String>>> =
        resource_blocks.keys().map(|k| (k.clone(), None)).collect();
    let local_names: FastHashSet<String> = index.local_attrs.keys().cloned().collect();
    let local_values =
        locals(&raw, &index, &variables, &local_names, &resources, &with_for_each, &var_object, &mut diags);
    let local_object = Value::Object(local_values);
    let each_values = for_each_keys(
        &raw,
        resource_blocks,
        &variables,
        &local_names,
        &mut resources,
        &with_for_each,
        (&var_object, &local_object),
        &mut diags,
    );

    let ctx = decode::LazyContext::new(|| {
        let mut ctx = root_context();
        ctx.declare_var("var", var_object.clone());
        ctx.declare_var("local", local_object.clone());
        for kind in Kind::ALL {
            ctx.declare_var(kind.as_str(), resource_object(&raw, resource_blocks, &resources, kind));
        }
        ctx
    });
    let decode = |blocks: &indexmap::map::Slice<(Kind, String), usize>, diags: &mut Diags| {
        instances(&raw, blocks, &each_values, &variables, &local_names, &resources, &with_for_each, &ctx, diags)
    };
    if !diags.has_errors() {
        let server_blocks: FastIndexMap<(Kind, String), usize> =
            resource_blocks.iter().filter(|((k, _), _)| *k == Kind::Server).map(|(k, &i)| (k.clone(), i)).collect();
        // Decoded again below with the rest, where their diagnostics are reported.
        let mut scratch = Diags::default();
        let mut only_servers = Config::default();
        for d in decode(server_blocks.as_slice(), &mut scratch) {
            if let Some(r) = build::build(d, &mut scratch) {
                only_servers.resources.insert(r.addr.clone(), r);
            }
        }
        if !scratch.has_errors() {
            servers(&only_servers);
        }
    }
    tracing::debug!("configuration: servers seen at {} ms", t.elapsed().as_millis());

    let mut config = Config::default();
    // Blocks outside any resource: every name is known, no `each`.
    let top_scope = Scope {
        variables: &variables,
        locals: &local_names,
        resources: &resources,
        with_for_each: &with_for_each,
        each: false,
        each_key: None,
        before_resources: false,
    };
    // Thousands of blocks are decoded and built in two halves on two
    // threads. Not while validating: the unset `env()` variables it reports
    // are gathered by the thread that decodes. The diagnostics keep the
    // order one thread gives them: every block's decoding, the settings,
    // every block's building.
    let blocks = resource_blocks.as_slice();
    let one_thread = opts.env_unknown || blocks.len() < PARALLEL_DECODE_BLOCKS || decode_on_one_thread();
    let half = if one_thread { blocks.len() } else { blocks.len() / 2 };
    let (first, second) = blocks.split_at(half);
    let (mut settings_diags, mut built_diags) = (Diags::default(), Diags::default());
    let behind = std::thread::scope(|s| {
        let base_dir = opts.dir.clone();
        let behind = (!second.is_empty()).then(|| {
            s.spawn(|| {
                eval::set_base_dir(base_dir);
                let (mut decoded_diags, mut built_diags) = (Diags::default(), Diags::default());
                let decoded = decode(second, &mut decoded_diags);
                // Sized up front (a filtered collect grows by doubling, each time into fresh pages).
                let mut built: Vec<crate::model::Resource> = Vec::with_capacity(decoded.len());
                built.extend(decoded.into_iter().filter_map(|d| build::build(d, &mut built_diags)));
                (built, decoded_diags, built_diags)
            })
        });
        let decoded = decode(first, &mut diags);
        config.resources.reserve(blocks.len());
        settings(&raw, &index, &ctx, &top_scope, &mut config, &mut settings_diags);
        for d in decoded {
            if let Some(r) = build::build(d, &mut built_diags) {
                config.resources.insert(r.addr.clone(), r);
            }
        }
        behind.map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    });
    // The syntax trees and the evaluation context are not needed past here.
    // At thousands of blocks freeing them costs as much as building the
    // resources: it is done on another thread, after the checks (which use
    // both cores), while the plan waits for the state or the servers.
    let ctx = ctx.into_made();
    let leftovers = (raw, index, ctx, each_values, resources);
    let (built_behind, decoded_diags_behind, built_diags_behind) = behind.unwrap_or_default();
    diags.extend(decoded_diags_behind);
    diags.extend(settings_diags);
    diags.extend(built_diags);
    diags.extend(built_diags_behind);
    for r in built_behind {
        config.resources.insert(r.addr.clone(), r);
    }
    tracing::debug!("configuration: decoded and built at {} ms", t.elapsed().as_millis());
    check::check(&mut config, &mut diags);
    tracing::debug!("configuration: checked at {} ms", t.elapsed().as_millis());
    if leftovers.0.len() >= 1000 {
        std::thread::spawn(move || drop(leftovers));
    } else {
        drop(leftovers);
    }

    loaded.diags = diags;
    loaded.variables = variables;
    if !loaded.diags.has_errors() {
        loaded.config = Some(config);
    }
    loaded
}

/// The top-level blocks of the parsed files that the schema knows, with
/// their labels checked; attributes outside blocks and unknown block types
/// are reported.
fn classify(parsed: Vec<(Arc<SourceFile>, Option<hcl::edit::structure::Body>)>, diags: &mut Diags) -> Vec<RawBlock> {
    // Sized up front: a syntax tree's block is large, and doubling moved them all each time.
    let mut raw: Vec<RawBlock> =
        Vec::with_capacity(parsed.iter().filter_map(|(_, b)| b.as_ref()).map(|b| b.len()).sum());
    for (file, body) in parsed {
        let Some(body) = body else { continue };
        for structure in body.into_iter() {
            match structure {
                Structure::Attribute(a) => diags.push(
                    Diagnostic::error(format!("attribute `{}` outside any block", a.key.as_str()))
                        .at(&Loc::new(&file, span_of(&a.key)), "top-level attributes are not allowed")
                        .help(format!("put named values in a locals block: locals {{ {} = ... }}", a.key.as_str())),
                ),
                Structure::Block(block) => {
                    let name = block.ident.as_str();
                    let Some(schema) = schema::top_level(name) else {
                        let names = schema::TOP_LEVEL.iter().map(|b| b.name);
                        diags.push(
                            Diagnostic::error(format!("unknown block type `{name}`"))
                                .at(&Loc::new(&file, span_of(&block.ident)), "not a block type dbctl knows")
                                .help(did_you_mean(name, names).unwrap_or_else(|| {
                                    format!(
                                        "block types: {}",
                                        schema::TOP_LEVEL.iter().map(|b| b.name).collect::<Vec<_>>().join(", ")
                                    )
                                })),
                        );
                        continue;
                    };
                    if check_labels(schema, &block, &file, diags) {
                        raw.push(RawBlock { schema, block, file: file.clone() });
                    }
                }
            }
        }
    }

    raw
}

/// Where each kind of top-level block is in `raw`: variables, locals,
/// resources, providers and the `dbctl` block; duplicates are reported.
#[derive(Default)]
struct Index {
    var_blocks: IndexMap<String, usize>,
    local_attrs: IndexMap<String, (Attribute, Arc<SourceFile>)>,
    resource_blocks: FastIndexMap<(Kind, String), usize>,
    provider_blocks: IndexMap<String, usize>,
    dbctl_block: Option<usize>,
}

impl Index {
    fn of(raw: &[RawBlock], diags: &mut Diags) -> Index {
        let Index { mut var_blocks, mut local_attrs, mut resource_blocks, mut provider_blocks, mut dbctl_block } =
            Index::default();
        for (i, rb) in raw.iter().enumerate() {
            let dup = |first: &RawBlock, what: String| {
                Diagnostic::error(format!("duplicate {what}"))
                    .at(&rb.header(), "declared again here")
                    .also(&first.header(), "first declared here")
            };
            match rb.schema.name {
                "variable" => {
                    if let Some(&j) = var_blocks.get(rb.label()) {
                        diags.push(dup(&raw[j], format!("variable \"{}\"", rb.label())));
                    } else {
                        var_blocks.insert(rb.label().to_string(), i);
                    }
                }
                "locals" => {
                    for s in rb.block.body.iter() {
                        match s {
                            Structure::Attribute(a) => {
                                let key = a.key.as_str().to_string();
                                let loc = Loc::new(&rb.file, span_of(&a.key));
                                if let Some((first, f)) = local_attrs.get(&key) {
                                    diags.push(
                                        Diagnostic::error(format!("duplicate local `{key}`"))
                                            .at(&loc, "set again here")
                                            .also(&Loc::new(f, span_of(&first.key)), "first set here"),
                                    );
                                } else {
                                    local_attrs.insert(key, (a.clone(), rb.file.clone()));
                                }
                            }
                            Structure::Block(b) => diags.push(
                                Diagnostic::error("blocks are not allowed in locals")
                                    .at(&Loc::new(&rb.file, header_span(b)), "here"),
                            ),
                        }
                    }
                }
                "provider" => {
                    if rb.label() != "aws" {
                        diags.push(
                            Diagnostic::error(format!("unknown provider \"{}\"", rb.label()))
                                .at(&rb.header(), "dbctl knows only the aws provider")
                                .help(
                                    did_you_mean(rb.label(), ["aws"]).unwrap_or_else(|| "use provider \"aws\"".into()),
                                ),
                        );
                    } else if let Some(&j) = provider_blocks.get(rb.label()) {
                        diags.push(dup(&raw[j], format!("provider \"{}\"", rb.label())));
                    } else {
                        provider_blocks.insert(rb.label().to_string(), i);
                    }
                }
                "dbctl" => match dbctl_block {
                    Some(j) => diags.push(dup(&raw[j], "dbctl block".into())),
                    None => dbctl_block = Some(i),
                },
                kind_name => {
                    let kind = Kind::parse(kind_name).expect("resource schema names are kinds");
                    let label = rb.label();
                    let label_loc = Loc::new(&rb.file, span_of(&rb.block.labels[0]));
                    if label.is_empty()
                        || !label.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-')
                        || label.starts_with(|c: char| c.is_ascii_digit())
                    {
                        diags.push(
                            Diagnostic::error(format!("`{label}` cannot be a resource name"))
                                .at(&label_loc, "letters, digits, _ and - only, not starting with a digit")
                                .help(format!(
                                    "the label is how other blocks refer to it; set the name on the server with name = \"{}\"",
                                    crate::model::escape_hcl_string(label)
                                )),
                        );
                        continue;
                    }
                    if let Some(&j) = resource_blocks.get(&(kind, label.to_string())) {
                        diags.push(dup(&raw[j], format!("resource address {kind_name}.{label}")));
                    } else {
                        resource_blocks.insert((kind, label.to_string()), i);
                    }
                }
            }
        }
        Index { var_blocks, local_attrs, resource_blocks, provider_blocks, dbctl_block }
    }
}

/// Every declared variable's value: given from outside, else its default;
/// one with neither is reported.
fn variables(
    opts: &LoadOptions,
    raw: &[RawBlock],
    var_blocks: &IndexMap<String, usize>,
    with_for_each: &FastHashSet<(Kind, String)>,
    diags: &mut Diags,
) -> IndexMap<String, VarInfo> {
    let mut variables: IndexMap<String, VarInfo> = IndexMap::new();
    let (no_vars, no_locals, no_resources) = (IndexMap::new(), FastHashSet::default(), FastIndexMap::default());
    let scope = Scope {
        variables: &no_vars,
        locals: &no_locals,
        resources: &no_resources,
        with_for_each,
        each: false,
        each_key: None,
        before_resources: true,
    };
    let given = given_variables(opts, var_blocks, diags);
    for (name, &i) in var_blocks {
        let rb = &raw[i];
        let ctx = root_context();
        let d = decode_block(rb.schema, &rb.block, &rb.file, &ctx, &scope, diags);
        let sensitive = d.bool("sensitive").unwrap_or(false);
        let value = match (given.get(name), d.get("default")) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(decode::V::Any(v))) => Some(v.clone()),
            _ => None,
        };
        match value {
            Some(value) => {
                variables.insert(name.clone(), VarInfo { value, sensitive, unset: false });
            }
            None => {
                variables.insert(name.clone(), VarInfo { value: Value::Null, sensitive, unset: true });
                diags.push(
                    Diagnostic::error(format!("variable \"{name}\" has no value"))
                        .at(&rb.header(), "declared without a default")
                        .help(format!("set it with --var {name}=VALUE, in a --var-file, or with DBCTL_VAR_{name}")),
                );
            }
        }
    }
    variables
}

/// What `KIND.NAME` evaluates to for every resource of `kind`: a reference
/// marker, or one per for_each key once the keys are known.
fn resource_object(
    raw: &[RawBlock],
    resource_blocks: &FastIndexMap<(Kind, String), usize>,
    resources: &FastIndexMap<(Kind, String), Option<Vec<String>>>,
    kind: Kind,
) -> Value {
    let mut m = Map::new();
    for ((k, name), keys) in resources {
        if *k != kind {
            continue;
        }
        let v = match keys {
            None if raw[resource_blocks[&(*k, name.clone())]].block.body.has_attribute("for_each") => continue,
            None if kind == Kind::RdsCluster => {
                // `rds_cluster.NAME.master_secret` through the evaluator (inside a conditional, say).
                let addr = Address::new(kind, name).to_string();
                let mut m = ref_marker(&addr);
                if let Value::Object(o) = &mut m {
                    o.insert("master_secret".into(), ref_marker(&format!("{addr}{}", decode::MASTER_SECRET_SUFFIX)));
                }
                m
            }
            None => ref_marker(&Address::new(kind, name).to_string()),
            Some(keys) => Value::Object(
                keys.iter()
                    .map(|key| (key.clone(), ref_marker(&Address::keyed(kind, name, key).to_string())))
                    .collect(),
            ),
        };
        m.insert(name.clone(), v);
    }
    Value::Object(m)
}

/// The locals' values, in dependency order; a cycle or a bad reference is reported.
#[allow(clippy::too_many_arguments)]
fn locals(
    raw: &[RawBlock],
    index: &Index,
    variables: &IndexMap<String, VarInfo>,
    local_names: &FastHashSet<String>,
    resources: &FastIndexMap<(Kind, String), Option<Vec<String>>>,
    with_for_each: &FastHashSet<(Kind, String)>,
    var_object: &Value,
    diags: &mut Diags,
) -> Map<String, Value> {
    let local_attrs = &index.local_attrs;
    let mut local_values: Map<String, Value> = Map::new();
    let scope = Scope {
        variables,
        locals: local_names,
        resources,
        with_for_each,
        each: false,
        each_key: None,
        before_resources: true,
    };
    let mut pending: Vec<&String> = local_attrs.keys().collect();
    let mut bad: HashSet<String> = HashSet::new();
    for name in &pending {
        let (a, f) = &local_attrs[*name];
        let errs = check_refs(&a.value, f, &scope);
        if !errs.is_empty() {
            diags.0.extend(errs);
            bad.insert((*name).clone());
        }
    }
    pending.retain(|n| !bad.contains(*n));
    let mut local_ctx: Option<hcl::eval::Context> = None;
    loop {
        let before = pending.len();
        let mut still = Vec::new();
        for name in pending {
            let (a, f) = &local_attrs[name];
            let deps: Vec<String> =
                traversals(&a.value).into_iter().filter(|t| t.root == "local").filter_map(|t| t.attr).collect();
            if deps.iter().any(|d| bad.contains(d)) {
                bad.insert(name.clone());
                continue;
            }
            if deps.iter().any(|d| !local_values.contains_key(d)) {
                still.push(name);
                continue;
            }
            // One context for every local; only `local` changes between them.
            let ctx = local_ctx.get_or_insert_with(|| {
                let mut ctx = root_context();
                ctx.declare_var("var", var_object.clone());
                for kind in Kind::ALL {
                    ctx.declare_var(kind.as_str(), resource_object(raw, &index.resource_blocks, resources, kind));
                }
                ctx
            });
            ctx.declare_var("local", Value::Object(local_values.clone()));
            match evaluate(&a.value, f, ctx) {
                Ok(v) => {
                    local_values.insert(name.clone(), v);
                }
                Err(d) => {
                    diags.push(d);
                    bad.insert(name.clone());
                }
            }
        }
        pending = still;
        if pending.is_empty() || pending.len() == before {
            break;
        }
    }
    if !pending.is_empty() {
        let (a, f) = &local_attrs[pending[0]];
        diags.push(
            Diagnostic::error(format!(
                "locals refer to each other in a cycle: {}",
                pending.iter().map(|n| format!("local.{n}")).collect::<Vec<_>>().join(", ")
            ))
            .at(&Loc::new(f, span_of(&a.key)), "part of the cycle"),
        );
    }
    local_values
}

/// The keys and values of every `for_each`, recorded in `resources` as
/// the instance names; a bad `for_each` is reported.
#[allow(clippy::too_many_arguments)]
fn for_each_keys(
    raw: &[RawBlock],
    resource_blocks: &FastIndexMap<(Kind, String), usize>,
    variables: &IndexMap<String, VarInfo>,
    local_names: &FastHashSet<String>,
    resources: &mut FastIndexMap<(Kind, String), Option<Vec<String>>>,
    with_for_each: &FastHashSet<(Kind, String)>,
    (var_object, local_object): (&Value, &Value),
    diags: &mut Diags,
) -> FastIndexMap<(Kind, String), Vec<(String, Value)>> {
    let mut each_values: FastIndexMap<(Kind, String), Vec<(String, Value)>> = FastIndexMap::default();
    for (key, &i) in resource_blocks {
        let rb = &raw[i];
        let Some(fe) = rb.block.body.get_attribute("for_each") else { continue };
        let loc = Loc::new(&rb.file, span_of(&fe.value));
        if !key.0.has_for_each() {
            diags.push(
                Diagnostic::error(format!("for_each is not supported on {} blocks", key.0.as_str()))
                    .at(&Loc::new(&rb.file, span_of(&fe.key)), "only database, user, role and secret take for_each"),
            );
            continue;
        }
        let scope = Scope {
            variables,
            locals: local_names,
            resources,
            with_for_each,
            each: false,
            each_key: None,
            before_resources: true,
        };
        let errs = check_refs(&fe.value, &rb.file, &scope);
        if !errs.is_empty() {
            diags.0.extend(errs);
            continue;
        }
        let mut ctx = root_context();
        ctx.declare_var("var", var_object.clone());
        ctx.declare_var("local", local_object.clone());
        let v = match evaluate(&fe.value, &rb.file, &ctx) {
            Ok(v) => v,
            Err(d) => {
                diags.push(d);
                continue;
            }
        };
        let pairs: Option<Vec<(String, Value)>> = match &v {
            Value::Array(items) => {
                items.iter().map(|i| i.as_str().map(|s| (s.to_string(), Value::String(s.to_string())))).collect()
            }
            Value::Object(m) if eval::as_ref(&v).is_none() => {
                Some(m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            }
            _ => None,
        };
        match pairs {
            Some(pairs) => {
                let mut seen = HashSet::new();
                let dups: Vec<&String> = pairs.iter().map(|(k, _)| k).filter(|k| !seen.insert(*k)).collect();
                if !dups.is_empty() {
                    diags.push(
                        Diagnostic::error(format!(
                            "for_each has duplicate keys: {}",
                            dups.iter().map(|d| format!("\"{d}\"")).collect::<Vec<_>>().join(", ")
                        ))
                        .at(&loc, "keys must be unique")
                        .help("wrap the list in toset([...])"),
                    );
                    continue;
                }
                resources.insert(key.clone(), Some(pairs.iter().map(|(k, _)| k.clone()).collect()));
                each_values.insert(key.clone(), pairs);
            }
            None => diags.push(
                Diagnostic::error(format!(
                    "wrong type for `for_each`: expected {}, found {}",
                    schema::Ty::ForEach.describe(),
                    eval::type_name(&v)
                ))
                .at(&loc, "expected a set of strings or a map"),
            ),
        }
    }

    each_values
}

/// Every resource instance decoded against the schema (for_each blocks
/// once per key, with `each` bound); blocks that did not decode are left out.
#[allow(clippy::too_many_arguments)]
fn instances(
    raw: &[RawBlock],
    resource_blocks: &indexmap::map::Slice<(Kind, String), usize>,
    each_values: &FastIndexMap<(Kind, String), Vec<(String, Value)>>,
    variables: &IndexMap<String, VarInfo>,
    local_names: &FastHashSet<String>,
    resources: &FastIndexMap<(Kind, String), Option<Vec<String>>>,
    with_for_each: &FastHashSet<(Kind, String)>,
    ctx: &dyn decode::EvalContext,
    diags: &mut Diags,
) -> Vec<build::Decoded> {
    // `each` is rebound per instance: building a context per instance
    // would copy every resource name each time (quadratic). Made only when a
    // block has for_each (a copy of every resource name).
    let mut each_ctx: Option<hcl::eval::Context<'static>> = None;
    // Sized for one instance per block up front: a decoded block is large,
    // and growing by doubling moved every one decoded so far each time.
    let mut decoded = Vec::with_capacity(resource_blocks.len());
    for (key, &i) in resource_blocks {
        let rb = &raw[i];
        let instances: Vec<(Option<String>, Option<Value>)> = match each_values.get(key) {
            Some(pairs) => pairs.iter().map(|(k, v)| (Some(k.clone()), Some(v.clone()))).collect(),
            None if rb.block.body.has_attribute("for_each") => continue, // for_each failed: reported
            None => vec![(None, None)],
        };
        for (each_key, each_value) in instances {
            let scope = Scope {
                variables,
                locals: local_names,
                resources,
                with_for_each,
                each: each_key.is_some(),
                each_key: each_key.as_deref(),
                before_resources: false,
            };
            let inner_ctx = if let (Some(k), Some(v)) = (&each_key, &each_value) {
                let mut each = Map::new();
                each.insert("key".to_string(), Value::String(k.clone()));
                each.insert("value".to_string(), v.clone());
                let each_ctx = each_ctx.get_or_insert_with(|| ctx.get().clone());
                each_ctx.declare_var("each", Value::Object(each));
                &*each_ctx as &dyn decode::EvalContext
            } else {
                ctx
            };
            let diags_before = diags.0.len();
            let d = decode_block(rb.schema, &rb.block, &rb.file, inner_ctx, &scope, diags);
            // A block that did not decode is left out, so checks that follow
            // do not report consequences of an error already reported.
            let failed = diags.0[diags_before..].iter().any(|d| d.is_error());
            let addr = match &each_key {
                Some(k) => Address::keyed(key.0, &key.1, k),
                None => Address::new(key.0, &key.1),
            };
            let sensitive_value = rb
                .block
                .body
                .get_attribute("value")
                .map(|a| {
                    traversals(&a.value).iter().any(|t| {
                        t.root == "var" && t.attr.as_ref().and_then(|n| variables.get(n)).is_some_and(|v| v.sensitive)
                    })
                })
                .unwrap_or(false);
            if !failed {
                decoded.push(build::Decoded { addr, block: d, value_from_sensitive_var: sensitive_value });
            }
        }
    }

    decoded
}

/// The blocks outside any resource: `provider "aws"` and `dbctl { state }`.
fn settings(
    raw: &[RawBlock],
    index: &Index,
    ctx: &dyn decode::EvalContext,
    top_scope: &Scope,
    config: &mut Config,
    diags: &mut Diags,
) {
    if let Some(&i) = index.provider_blocks.get("aws") {
        let rb = &raw[i];
        let d = decode_block(rb.schema, &rb.block, &rb.file, ctx, top_scope, diags);
        config.aws = Some(crate::model::AwsProvider {
            region: d.str("region"),
            endpoint: d.str("endpoint").filter(|s| !s.is_empty()),
            profile: d.str("profile"),
        });
    }
    config.state = crate::model::StateSettings { backend: "local".into(), ..Default::default() };
    if let Some(i) = index.dbctl_block {
        let rb = &raw[i];
        let errors_before = diags.0.iter().filter(|d| d.is_error()).count();
        let d = decode_block(rb.schema, &rb.block, &rb.file, ctx, top_scope, diags);
        // A url that could not be evaluated is reported already.
        let reported = diags.0.iter().filter(|d| d.is_error()).count() > errors_before;
        if let Some(st) = d.block("state") {
            config.state.backend = st.str("backend").unwrap_or_else(|| "local".into());
            config.state.url = st.str("url");
            config.state.schema = st.str("schema");
            config.state.key = st.str("key");
            for name in ["schema", "key"] {
                if let (Some(loc), Some("")) = (st.loc(name), st.str(name).as_deref()) {
                    diags.push(Diagnostic::error(format!("the state {name} must not be empty")).at(loc, "empty"));
                }
            }
            if config.state.backend == "postgres" && config.state.url.is_none() && !reported {
                diags.push(
                    Diagnostic::error("the postgres state backend needs a url")
                        .at(&st.header, "no url")
                        .help("url = env(\"DBCTL_STATE_URL\")"),
                );
            }
        }
    }
}

/// Variable values given from outside: DBCTL_VAR_*, --var-file, --var (later wins).
fn given_variables(
    opts: &LoadOptions,
    declared: &IndexMap<String, usize>,
    diags: &mut Diags,
) -> IndexMap<String, Value> {
    let mut out = IndexMap::new();
    for (name, v) in &opts.preset {
        if declared.contains_key(name) {
            out.insert(name.clone(), v.clone());
        }
    }
    for name in declared.keys() {
        if let Ok(v) = std::env::var(format!("DBCTL_VAR_{name}")) {
            out.insert(name.clone(), Value::String(v));
        }
    }
    for path in &opts.var_files {
        let path = if path.is_absolute() { path.clone() } else { opts.dir.join(path) };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                diags.push(Diagnostic::error(format!("cannot read var file {}: {e}", path.display())));
                continue;
            }
        };
        let file = Arc::new(SourceFile { name: display_name(&path, &opts.dir), text });
        let body = match parse_body(&file.text) {
            Ok(b) => b,
            Err(e) => {
                let span = file.error_span(e.location().offset());
                diags.push(
                    Diagnostic::error(format!("syntax error: {}", e.message())).at(&Loc::new(&file, span), "here"),
                );
                continue;
            }
        };
        let ctx = root_context();
        for s in body.iter() {
            let Some(a) = s.as_attribute() else {
                diags.push(
                    Diagnostic::error("a var file holds only NAME = VALUE lines")
                        .at(&Loc::new(&file, span_of(s)), "here"),
                );
                continue;
            };
            let name = a.key.as_str();
            if !declared.contains_key(name) {
                diags.push(
                    Diagnostic::warning(format!("var file sets undeclared variable \"{name}\""))
                        .at(&Loc::new(&file, span_of(&a.key)), "no variable block declares this"),
                );
                continue;
            }
            match evaluate(&a.value, &file, &ctx) {
                Ok(v) => {
                    out.insert(name.to_string(), v);
                }
                Err(d) => diags.push(d),
            }
        }
    }
    for (name, value) in &opts.vars {
        if !declared.contains_key(name) {
            let mut d = Diagnostic::error(format!("--var {name}: no variable \"{name}\" is declared"));
            if let Some(h) = did_you_mean(name, declared.keys().map(String::as_str)) {
                d = d.help(h);
            }
            diags.push(d);
            continue;
        }
        out.insert(name.clone(), Value::String(value.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use hcl::edit::Span;

    use super::*;
    use std::fmt::Write as _;

    /// Every configuration loaded with attributes written plainly decoded
    /// directly (`decode::direct_value`) and loaded with all of them through
    /// hcl's evaluator gives the same resources, places and diagnostics.
    #[test]
    fn direct_decoding_agrees_with_the_evaluator() {
        let valid = r#"
server "main" {
  engine   = "postgres"
  embedded = true
}
secret "pw" {
  store = "local"
}
role "r1" {
  server = server.main
}
role "r2" {
  server    = server.main
  member_of = [role.r1]
}
database "app" {
  for_each = toset(["a", "b"])
  server   = server.main
  owner    = role.r1
}
user "u" {
  for_each  = toset(["x", "y"])
  server    = server.main
  createdb  = "true"
  inherit   = true
  member_of = [role.r1, role.r2]
  grant {
    database   = database.app[each.key == "x" ? "a" : "b"]
    privileges = ["CONNECT", lower("TEMP")]
  }
  grant {
    database   = database.other
    privileges = ["CONNECT"]
  }
}
database "other" {
  server = server.main
}
user "w" {
  server   = server.main
  password = secret.pw
}
"#;
        let invalid = r#"
server "main" {
  engine   = "postgres"
  embedded = true
}
role "r1" {
  server = server.main
}
database "app" {
  for_each = toset(["a"])
  server   = server.main
}
user "v" {
  server    = role.r1
  member_of = [database.app["a"], "r1"]
  grant {
    database   = server.main
    privileges = "CONNECT"
  }
}
"#;
        let (valid_dir, invalid_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::write(valid_dir.path().join("main.hcl"), valid).unwrap();
        std::fs::write(invalid_dir.path().join("main.hcl"), invalid).unwrap();
        let mut dirs = vec![valid_dir.path().to_path_buf(), invalid_dir.path().to_path_buf()];
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        for e in std::fs::read_dir(&examples).unwrap() {
            let e = e.unwrap().path();
            if e.is_dir() {
                dirs.push(e);
            }
        }
        let outcome = |dir: &Path, general: bool| {
            decode::GENERAL_ONLY.with(|g| g.set(general));
            let loaded = load(&LoadOptions { dir: dir.to_path_buf(), env_unknown: true, ..Default::default() });
            decode::GENERAL_ONLY.with(|g| g.set(false));
            let messages: Vec<String> = loaded.diags.0.iter().map(|d| format!("{d:?}")).collect();
            (loaded.config.map(|c| format!("{:?}", c.resources)), messages)
        };
        for d in &dirs {
            let (direct, general) = (outcome(d, false), outcome(d, true));
            assert_eq!(direct, general, "{}", d.display());
        }
        assert!(outcome(valid_dir.path(), false).0.is_some(), "{:?}", outcome(valid_dir.path(), false).1);
        // Wrong in four places, each reported the same way (compared above).
        assert!(outcome(invalid_dir.path(), false).1.len() >= 4, "{:?}", outcome(invalid_dir.path(), false).1);
    }

    /// A required attribute that is not written is reported at its block,
    /// also when the block has other attributes and an unknown one (each
    /// block keeps a list of the attributes it has seen). An attribute
    /// written twice is the parser's syntax error.
    #[test]
    fn a_missing_required_attribute_points_at_its_block() {
        let hcl = "server \"main\" {\n  engine   = \"postgres\"\n  embedded = true\n}\n\nmigrations \"m\" {\n  dir    = \"db\"\n  colour = \"red\"\n  lint   = \"warn\"\n}\n";
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main.hcl"), hcl).unwrap();
        let loaded = load(&LoadOptions { dir: dir.path().to_path_buf(), ..Default::default() });
        let messages: Vec<(&str, usize)> =
            loaded.diags.0.iter().map(|d| (d.message.as_str(), d.loc.as_ref().unwrap().span.start)).collect();
        assert_eq!(
            messages,
            [
                ("unknown attribute `colour` in a migrations block", hcl.find("colour").unwrap()),
                ("missing required attribute `database` in a migrations block", hcl.find("migrations").unwrap()),
            ]
        );
        std::fs::write(dir.path().join("main.hcl"), hcl.replace("lint   = \"warn\"", "dir = \"other\"")).unwrap();
        let loaded = load(&LoadOptions { dir: dir.path().to_path_buf(), ..Default::default() });
        assert!(loaded.diags.0.iter().any(|d| d.message.starts_with("syntax error")), "{:?}", loaded.diags.0);
    }

    /// A configuration of thousands of blocks is decoded and built on two
    /// threads: the resources, their order and every diagnostic (errors and
    /// warnings in both halves, and in a setting block) are those one thread
    /// gives.
    #[test]
    fn two_threads_decode_as_one_does() {
        let mut hcl = String::from(
            "server \"main\" {\n  engine   = \"postgres\"\n  embedded = true\n}\n\ndbctl {\n  state {\n    backend = \"local\"\n    bogus   = 1\n  }\n}\n",
        );
        for i in 0..1500 {
            match i {
                // A literal secret value (a warning when built) and a value
                // with a generate block (an error when built): in both halves.
                30 | 1300 => {
                    let _ = write!(hcl, "\nsecret \"s{i}\" {{\n  store = \"local\"\n  value = \"x\"\n}}\n");
                    continue;
                }
                // `file()` reads relative to the configuration, on either thread.
                1450 => {
                    hcl.push_str("\nsecret \"f\" {\n  store = \"local\"\n  value = file(\"value.txt\")\n}\n");
                    continue;
                }
                40 | 1400 => {
                    let _ = write!(
                        hcl,
                        "\nsecret \"s{i}\" {{\n  store = \"local\"\n  value = \"x\"\n  generate {{\n    length = 8\n  }}\n}}\n"
                    );
                    continue;
                }
                _ => {}
            }
            let _ = write!(hcl, "\nuser \"u{i}\" {{\n  server = server.main\n");
            match i {
                // An unknown attribute and a reference to nothing (when decoded): in both halves.
                10 | 1100 => hcl.push_str("  colour = \"red\"\n"),
                20 | 1200 => hcl.push_str("  member_of = [role.nobody]\n"),
                _ => {}
            }
            hcl.push_str("}\n");
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main.hcl"), &hcl).unwrap();
        std::fs::write(dir.path().join("value.txt"), "from a file").unwrap();
        let outcome = |one: bool| {
            ONE_THREAD.with(|o| o.set(one));
            let loaded = load(&LoadOptions { dir: dir.path().to_path_buf(), ..Default::default() });
            ONE_THREAD.with(|o| o.set(false));
            let messages: Vec<String> = loaded
                .diags
                .0
                .iter()
                .map(|d| format!("{:?} {} {:?} {}", d.severity, d.message, d.loc.as_ref().map(|l| &l.span), d.label))
                .collect();
            (loaded.config.map(|c| format!("{:?}", c.resources)), messages)
        };
        let (two, one) = (outcome(false), outcome(true));
        assert_eq!(two, one);
        assert_eq!(two.1.len(), 12, "every wrong block is reported: {:#?}", two.1);
        // Without the errors: the same resources, in the same order.
        let valid = hcl
            .replace("    bogus   = 1\n", "")
            .replace("  colour = \"red\"\n", "")
            .replace("  member_of = [role.nobody]\n", "")
            .replace("  generate {\n    length = 8\n  }\n", "");
        std::fs::write(dir.path().join("main.hcl"), &valid).unwrap();
        let (two, one) = (outcome(false), outcome(true));
        assert!(two.0.is_some(), "{:#?}", two.1);
        assert_eq!(two.1.len(), 5, "the literal secret values: {:#?}", two.1);
        assert_eq!(two, one);
    }

    /// Each top-level structure as (span, key or identifier and labels).
    fn outline(body: &hcl::edit::structure::Body) -> Vec<(std::ops::Range<usize>, String)> {
        body.iter()
            .map(|s| {
                let what = match s {
                    Structure::Attribute(a) => a.key.as_str().to_string(),
                    Structure::Block(b) => format!(
                        "{} {:?} {}",
                        b.ident.as_str(),
                        b.labels.iter().map(|l| l.as_str().to_string()).collect::<Vec<_>>(),
                        b.body.len()
                    ),
                };
                (s.span().unwrap_or(0..0), what)
            })
            .collect()
    }

    #[test]
    fn a_large_file_parses_in_two_halves_as_in_one_piece() {
        let mut text = String::from("# a comment\nserver \"main\" {\n  engine = \"postgres\"\n}\n");
        let mut i = 0;
        while text.len() < PARALLEL_PARSE_BYTES + 1000 {
            text.push_str(&format!(
                "\nuser \"u{i}\" {{\n  server = server.main\n  name   = \"ü {i}; \\\"q\\\"\"\n  grant {{\n    database   = database.d\n    privileges = [\"CONNECT\"]\n  }}\n}}\n"
            ));
            i += 1;
        }
        let cut = top_level_cut(&text).expect("a cut");
        assert!(text[cut..].starts_with("user \""), "{}", &text[cut..cut + 20]);
        assert!(text[..cut].ends_with("}\n\n"));
        let whole = parse_body(&text).unwrap();
        let halves = parse_large(&text).unwrap();
        assert_eq!(whole.len(), i + 1);
        assert_eq!(outline(&halves), outline(&whole));
        // The attributes' spans and values too, in the second half.
        let last = |b: &hcl::edit::structure::Body| {
            let u = b.iter().last().unwrap().as_block().unwrap().clone();
            let a = u.body.get_attribute("name").unwrap().clone();
            (a.span(), a.value.span(), a.value.to_string())
        };
        assert_eq!(last(&halves), last(&whole));
    }

    #[test]
    fn a_cut_inside_a_heredoc_falls_back_to_one_piece() {
        // The middle of the file is a heredoc whose lines look like blocks.
        let filler = "}\n\nuser \"x\" {\n".repeat(PARALLEL_PARSE_BYTES / 12);
        let text = format!("locals {{\n  doc = <<EOT\n{filler}EOT\n}}\n\nuser \"after\" {{\n  name = \"a\"\n}}\n");
        assert!(top_level_cut(&text).is_some());
        let whole = parse_body(&text).unwrap();
        let parsed = parse_large(&text).unwrap();
        assert_eq!(outline(&parsed), outline(&whole));
        assert_eq!(parsed.len(), 2);
        // A syntax error in the second half is the whole file's error.
        let broken = format!("{text}\nuser \"bad\" {{\n  name = \n}}\n");
        let big = format!("{}{broken}", "\nrole \"r\" {\n}\n".repeat(PARALLEL_PARSE_BYTES / 14));
        let a = parse_large(&big).unwrap_err();
        let b = parse_body(&big).unwrap_err();
        assert_eq!((a.message(), a.location().offset()), (b.message(), b.location().offset()));
    }
}
