//! The dependency graph: one node per resource, plus one node for the grants
//! of each user or role that has grant blocks (`user.app.grant`), so that a
//! user who owns a database and is granted on it is not a false cycle.
//! Edges point from a node to what it depends on, as in Terraform's graph.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};

use crate::diag::{Diagnostic, Diags, Loc};
use crate::model::{Address, Config, FastHashMap, Kind};

pub use crate::model::Node;

pub struct Graph {
    pub g: DiGraph<Node, Loc>,
    /// Node → its index (hashed: at thousands of resources the ordered map's
    /// string comparisons showed in every plan's profile).
    pub index: FastHashMap<Node, NodeIndex>,
}

impl Graph {
    pub fn build(cfg: &Config) -> Graph {
        let n = cfg.resources.len();
        let mut g = DiGraph::with_capacity(n * 2, n * 3);
        let mut index = FastHashMap::with_capacity_and_hasher(n * 2, Default::default());
        // Each resource's node and its grants' node, looked up by a borrowed
        // address: a lookup in `index` needs an owned node (a cloned address).
        let mut nodes: FastHashMap<&Address, (NodeIndex, Option<NodeIndex>)> =
            FastHashMap::with_capacity_and_hasher(n, Default::default());
        for r in cfg.resources.values() {
            let node = Node::Resource(r.addr.clone());
            let ri = g.add_node(node.clone());
            index.insert(node, ri);
            let gi = r.refs.iter().any(|x| x.attr.starts_with("grant.")).then(|| {
                let gn = Node::Grants(r.addr.clone());
                let gi = g.add_node(gn.clone());
                index.insert(gn, gi);
                gi
            });
            nodes.insert(&r.addr, (ri, gi));
        }
        for r in cfg.resources.values() {
            let (from_res, grants) = nodes[&r.addr];
            if let Some(gi) = grants {
                g.add_edge(gi, from_res, r.origin.header.clone());
            }
            for x in &r.refs {
                let Some(&(to, _)) = nodes.get(&x.to) else { continue };
                let from = match grants {
                    Some(gi) if x.attr.starts_with("grant.") => gi,
                    _ => from_res,
                };
                if !g.contains_edge(from, to) {
                    g.add_edge(from, to, x.loc.clone());
                }
            }
            // A route with `access = "owner"` makes the router's user the
            // database's owner: the database is created (or altered) after it.
            if let crate::model::Body::Router(rt) = &r.body {
                let Some(&(user, _)) = nodes.get(&rt.user) else { continue };
                for route in rt.routes.iter().filter(|x| x.access == crate::model::Access::Owner) {
                    let Some(&(db, _)) = nodes.get(&route.database) else { continue };
                    let loc = r
                        .refs
                        .iter()
                        .find(|x| x.to == route.database)
                        .map(|x| x.loc.clone())
                        .unwrap_or_else(|| r.origin.header.clone());
                    if !g.contains_edge(db, user) {
                        g.add_edge(db, user, loc);
                    }
                }
            }
        }
        // A router that makes its user a database's owner (an owner route,
        // or `migrates`): the database is created after that user.
        for r in cfg.resources.values() {
            let crate::model::Body::Router(rt) = &r.body else { continue };
            let mut owned: Vec<&Address> =
                rt.routes.iter().filter(|x| x.access == crate::model::Access::Owner).map(|x| &x.database).collect();
            for m in &rt.migrates {
                if let Some(crate::model::Body::Router(other)) = cfg.get(m).map(|x| &x.body) {
                    owned.extend(other.routes.iter().map(|x| &x.database));
                }
            }
            let Some(&user) = index.get(&Node::Resource(rt.user.clone())) else { continue };
            for db in owned {
                let Some(&from) = index.get(&Node::Resource(db.clone())) else { continue };
                if !g.contains_edge(from, user) {
                    g.add_edge(from, user, r.origin.header.clone());
                }
            }
        }
        migration_edges(cfg, &mut g, &index);
        Graph { g, index }
    }

    /// Nodes so that every node comes after what it depends on.
    pub fn order(&self) -> Result<Vec<Node>, Vec<Node>> {
        match toposort(&self.g, None) {
            Ok(mut v) => {
                v.reverse();
                Ok(v.into_iter().map(|i| self.g[i].clone()).collect())
            }
            Err(c) => Err(vec![self.g[c.node_id()].clone()]),
        }
    }

    /// Graphviz DOT, nodes and edges sorted so the output is stable.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph dbctl {\n  rankdir = \"RL\";\n  node [shape = box];\n");
        let mut nodes: Vec<&Node> = self.index.keys().collect();
        nodes.sort();
        for node in nodes {
            let shape = match node {
                Node::Grants(_) => " [shape = ellipse]",
                Node::Resource(a) if a.kind == Kind::Server => " [shape = box3d]",
                _ => "",
            };
            let _ = writeln!(out, "  {}{shape};", dot_id(&node.to_string()));
        }
        let mut edges: BTreeSet<(String, String)> = BTreeSet::new();
        for e in self.g.edge_indices() {
            let (a, b) = self.g.edge_endpoints(e).expect("edge exists");
            edges.insert((self.g[a].to_string(), self.g[b].to_string()));
        }
        for (a, b) in edges {
            let _ = writeln!(out, "  {} -> {};", dot_id(&a), dot_id(&b));
        }
        out.push_str("}\n");
        out
    }
}

/// The plan as a graph: one node per change (labelled with its action),
/// edges where the configuration orders them.
pub fn plan_dot(cfg: &Config, plan: &crate::plan::Plan) -> String {
    let graph = Graph::build(cfg);
    let changed: BTreeMap<String, &crate::plan::ResourceChange> =
        plan.changes.iter().filter(|c| c.action != crate::plan::Action::NoOp).map(|c| (c.address.clone(), c)).collect();
    let mut out = String::from("digraph plan {\n  rankdir = \"RL\";\n  node [shape = box];\n");
    for (addr, c) in &changed {
        let label = format!(
            "{} {addr} ({} step{})",
            c.action.symbol(),
            c.steps.len(),
            if c.steps.len() == 1 { "" } else { "s" }
        );
        let _ = writeln!(out, "  {} [label = {}];", dot_id(addr), dot_id(&label));
    }
    let mut edges: BTreeSet<(String, String)> = BTreeSet::new();
    for e in graph.g.edge_indices() {
        let (a, b) = graph.g.edge_endpoints(e).expect("edge exists");
        let (a, b) = (graph.g[a].to_string(), graph.g[b].to_string());
        if changed.contains_key(&a) && changed.contains_key(&b) {
            edges.insert((a, b));
        }
    }
    for (a, b) in edges {
        let _ = writeln!(out, "  {} -> {};", dot_id(&a), dot_id(&b));
    }
    out.push_str("}\n");
    out
}

fn dot_id(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A reference cycle is an error naming every member, pointing at the
/// reference that closes each step.
/// Reports every reference cycle; without one, the dependency order.
pub fn check_cycles(cfg: &Config, diags: &mut Diags) -> Vec<Node> {
    let graph = Graph::build(cfg);
    let mut cyclic = false;
    for scc in tarjan_scc(&graph.g) {
        let is_cycle = scc.len() > 1 || graph.g.contains_edge(scc[0], scc[0]);
        if !is_cycle {
            continue;
        }
        cyclic = true;
        let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
        let start = *members.iter().min_by_key(|i| graph.g[**i].clone()).expect("non-empty");
        // Walk a path through the component back to the start.
        let path = cycle_path(&graph, start, &members);
        let names: Vec<String> = path.iter().map(|i| graph.g[*i].to_string()).collect();
        let first_edge = graph.g.find_edge(path[0], path[1 % path.len()]).expect("edge on the cycle");
        let mut d = Diagnostic::error(format!("reference cycle: {} -> {}", names.join(" -> "), names[0]))
            .at(&graph.g[first_edge], format!("{} refers to {}", names[0], names[1 % names.len()]));
        for w in 1..path.len() {
            let (a, b) = (path[w], path[(w + 1) % path.len()]);
            if let Some(e) = graph.g.find_edge(a, b) {
                d = d.also(&graph.g[e], format!("{} refers to {}", graph.g[a], graph.g[b]));
            }
        }
        diags.push(d.help("dbctl cannot order these: remove one of the references"));
    }
    if cyclic {
        Vec::new()
    } else {
        graph.order().unwrap_or_default()
    }
}

fn cycle_path(graph: &Graph, start: NodeIndex, members: &BTreeSet<NodeIndex>) -> Vec<NodeIndex> {
    // Depth-first search for a path start -> ... -> start inside the component.
    fn dfs(
        g: &Graph,
        at: NodeIndex,
        start: NodeIndex,
        members: &BTreeSet<NodeIndex>,
        path: &mut Vec<NodeIndex>,
        seen: &mut BTreeSet<NodeIndex>,
    ) -> bool {
        let mut next: Vec<NodeIndex> = g.g.neighbors(at).filter(|n| members.contains(n)).collect();
        next.sort_by_key(|n| g.g[*n].clone());
        for n in next {
            if n == start {
                return true;
            }
            if seen.insert(n) {
                path.push(n);
                if dfs(g, n, start, members, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start];
    let mut seen = BTreeSet::from([start]);
    dfs(graph, start, start, members, &mut path, &mut seen);
    path
}

/// A `migrations` block runs after the users and roles of its server (its
/// SQL may grant to them), and before the grants and routers on its database
/// (their `tables = "*"` covers the tables it creates). An edge that would
/// close a cycle is left out.
fn migration_edges(cfg: &Config, g: &mut DiGraph<Node, Loc>, index: &FastHashMap<Node, NodeIndex>) {
    use crate::model::Body;
    for r in cfg.of_kind(Kind::Migrations) {
        let Body::Migrations(m) = &r.body else { continue };
        let Some(Body::Database(db)) = cfg.get(&m.database).map(|x| &x.body) else { continue };
        let Some(&mig) = index.get(&Node::Resource(r.addr.clone())) else { continue };
        let add = |g: &mut DiGraph<Node, Loc>, from: NodeIndex, to: NodeIndex| {
            if from != to && !g.contains_edge(from, to) && !petgraph::algo::has_path_connecting(&*g, to, from, None) {
                g.add_edge(from, to, r.origin.header.clone());
            }
        };
        for other in cfg.resources.values() {
            let on_server = match &other.body {
                Body::User(u) => u.server == db.server,
                Body::Role(x) => x.server == db.server,
                _ => false,
            };
            if on_server {
                if let Some(&u) = index.get(&Node::Resource(other.addr.clone())) {
                    add(g, mig, u);
                }
            }
            // Grant blocks naming the database, and routers routing to it.
            if other.refs.iter().any(|x| x.to == m.database && x.attr.starts_with("grant.")) {
                if let Some(&gr) = index.get(&Node::Grants(other.addr.clone())) {
                    add(g, gr, mig);
                }
            }
            if let Body::Router(rt) = &other.body {
                if rt.routes.iter().any(|x| x.database == m.database) {
                    if let Some(&ro) = index.get(&Node::Resource(other.addr.clone())) {
                        add(g, ro, mig);
                    }
                }
            }
        }
    }
}
