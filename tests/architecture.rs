#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

//! The daemon crate's dependency rule (docs/ARCHITECTURE.md), read from the sources as Rust (syn), not as
//! lines:
//!
//! 1. Its top-level modules are layers: a module may only name modules of a lower layer, so nothing imports
//!    `fronts` or `app`.
//! 2. No circle at any depth: the children of any module (each child standing for itself and everything
//!    under it) use one another without a circle. A parent's own file is the vocabulary its children share
//!    (`store/mod.rs`'s `StoreError`) and the place that composes them, so a use between a module and its
//!    own ancestor is not part of a circle. A `pub use` is followed to the module that defines the item:
//!    a facade re-exporting a sibling's type does not hide a circle between the two siblings.
//!
//! Every `use` (grouped, nested, multi-line, `super::super::…`, `self::…`, or a child's name) and every path
//! in code, macro arguments included, is resolved to the module it names. Test modules (`#[cfg(test)]`)
//! are left out. A broken rule is reported with the file, the line and the offending path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::spanned::Spanned;
use syn::visit::Visit;

/// Each top-level module of `pipeline/` and its layer: a module may use only modules of a lower layer.
const LAYERS: &[(&str, u8)] = &[
    // The configuration: read by every layer, reading none.
    ("config", 0),
    // Leaves every layer may use: the error type, tracing and Prometheus plumbing.
    ("error", 1),
    ("telemetry", 1),
    ("metrics", 1),
    // Ports and their implementations.
    ("store", 2),
    // The durable queue and its workers; the periodic jobs. Both write and read through the store.
    ("queue", 3),
    ("jobs", 3),
    // The typed core: one type per question, answered by one function.
    ("ingest", 4),
    ("query", 4),
    ("accounts", 4),
    // Built on the core: alert rules watch the analytics and the logs (a query_count rule is a query).
    ("alerts", 5),
    // The protocols.
    ("fronts", 6),
    // Wiring and the command line.
    ("app", 7),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(name, _)| *name == module).map(|(_, layer)| *layer)
}

type Module = Vec<String>;

/// One use of another module: who, where, what path.
#[derive(Clone, Debug)]
struct Use {
    from: Module,
    to: Module,
    at: String,
    path: String,
}

/// A module's source as the test reads it.
struct Source {
    file: String,
    text: String,
}

/// One `use` leaf or code path before resolution.
struct Raw {
    segments: Vec<String>,
    line: usize,
    /// `pub use` (any visibility but private): a re-export.
    export: bool,
}

fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs
        .iter()
        .any(|a| a.path().is_ident("cfg") && a.meta.require_list().is_ok_and(|l| l.tokens.to_string() == "test"))
}

/// The leaves of a use tree, as paths (a group expands to each of its members; `self` in a group is the
/// group's own path; a glob is the path it globs).
fn use_leaves(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            use_leaves(&p.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) if n.ident == "self" => out.push(prefix.clone()),
        syn::UseTree::Name(n) => out.push([prefix.clone(), vec![n.ident.to_string()]].concat()),
        syn::UseTree::Rename(r) if r.ident == "self" => out.push(prefix.clone()),
        syn::UseTree::Rename(r) => out.push([prefix.clone(), vec![r.ident.to_string()]].concat()),
        syn::UseTree::Glob(_) => out.push(prefix.clone()),
        syn::UseTree::Group(g) => g.items.iter().for_each(|item| use_leaves(item, prefix, out)),
    }
}

/// Collects a module's uses and paths, and its inline modules as modules of their own.
struct Collector<'a> {
    module: Module,
    raws: &'a mut BTreeMap<Module, Vec<Raw>>,
    inline: &'a mut Vec<Module>,
}

impl Collector<'_> {
    fn push(&mut self, segments: Vec<String>, line: usize, export: bool) {
        self.raws.entry(self.module.clone()).or_default().push(Raw { segments, line, export });
    }
}

impl<'ast> Visit<'ast> for Collector<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs: &[syn::Attribute] = match item {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Use(u) => &u.attrs,
            _ => &[],
        };
        if is_test(attrs) {
            return;
        }
        match item {
            syn::Item::Use(u) => {
                let mut leaves = Vec::new();
                use_leaves(&u.tree, &mut Vec::new(), &mut leaves);
                let export = !matches!(u.vis, syn::Visibility::Inherited);
                for leaf in leaves {
                    self.push(leaf, u.span().start().line, export);
                }
            }
            syn::Item::Mod(m) if m.content.is_some() => {
                let inner = [self.module.clone(), vec![m.ident.to_string()]].concat();
                self.inline.push(inner.clone());
                let outer = std::mem::replace(&mut self.module, inner);
                for item in &m.content.as_ref().unwrap().1 {
                    self.visit_item(item);
                }
                self.module = outer;
            }
            other => syn::visit::visit_item(self, other),
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        // One segment is a local name (a variable may share a module's name); two or more are a path.
        if segments.len() >= 2 {
            self.push(segments, path.span().start().line, false);
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        syn::visit::visit_macro(self, mac);
        // Macro arguments are tokens to syn: read them as expressions where they are (format!, vec!, …).
        use syn::parse::Parser;
        let parser = syn::punctuated::Punctuated::<syn::Expr, syn::Token![,]>::parse_terminated;
        if let Ok(exprs) = parser.parse2(mac.tokens.clone()) {
            for expr in &exprs {
                self.visit_expr(expr);
            }
        }
    }
}

/// The crate's modules and every use between them, from sources keyed by module path.
fn graph(sources: &BTreeMap<Module, Source>) -> Result<Vec<Use>, String> {
    let mut raws: BTreeMap<Module, Vec<Raw>> = BTreeMap::new();
    let mut modules: BTreeSet<Module> = sources.keys().cloned().collect();
    for (module, source) in sources {
        let file = syn::parse_file(&source.text).map_err(|e| format!("{}: {e}", source.file))?;
        let mut inline = Vec::new();
        let mut collector = Collector { module: module.clone(), raws: &mut raws, inline: &mut inline };
        for item in &file.items {
            collector.visit_item(item);
        }
        modules.extend(inline);
    }
    let file_of = |module: &Module| {
        let mut m = module.clone();
        loop {
            if let Some(source) = sources.get(&m) {
                return source.file.clone();
            }
            m.pop();
        }
    };
    // An absolute path (from the crate root) for a path written in `module`, if it names this crate.
    let absolute = |module: &Module, segments: &[String]| -> Option<Vec<String>> {
        let first = segments.first()?;
        let mut base = module.clone();
        let mut rest = segments;
        match first.as_str() {
            "crate" => {
                base.clear();
                rest = &segments[1..];
            }
            "self" => rest = &segments[1..],
            "super" => {
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop()?;
                    rest = &rest[1..];
                }
            }
            // A child module's name, as a path's first segment.
            name if modules.contains(&[module.clone(), vec![name.to_owned()]].concat()) => {}
            _ => return None,
        }
        Some([base, rest.to_vec()].concat())
    };
    // Re-exports: (module, name) → the absolute path it stands for.
    let mut exports: BTreeMap<(Module, String), Vec<String>> = BTreeMap::new();
    for (module, list) in &raws {
        for raw in list.iter().filter(|r| r.export) {
            if let (Some(path), Some(name)) = (absolute(module, &raw.segments), raw.segments.last()) {
                exports.insert((module.clone(), name.clone()), path);
            }
        }
    }
    // The module a path names: its longest prefix that is a module, through re-exports to the definition.
    let target = |path: &[String]| -> Option<Module> {
        let mut path = path.to_vec();
        for _ in 0..8 {
            let len = (0..=path.len()).rev().find(|n| modules.contains(&path[..*n]))?;
            let module = path[..len].to_vec();
            match path.get(len).and_then(|name| exports.get(&(module.clone(), name.clone()))) {
                Some(through) if through != &path[..=len] => {
                    path = [through.clone(), path[len + 1..].to_vec()].concat();
                }
                _ => return Some(module),
            }
        }
        None
    };
    let mut uses = Vec::new();
    for (module, list) in &raws {
        for raw in list {
            let Some(path) = absolute(module, &raw.segments) else { continue };
            let Some(to) = target(&path) else { continue };
            let descendant = to.len() > module.len() && to.starts_with(module);
            if to == *module || to.is_empty() || (raw.export && descendant) {
                continue;
            }
            uses.push(Use {
                from: module.clone(),
                to,
                at: format!("{}:{}", file_of(module), raw.line),
                path: raw.segments.join("::"),
            });
        }
    }
    Ok(uses)
}

/// Every rule the uses break, each naming the use.
fn broken(uses: &[Use]) -> Vec<String> {
    let mut broken = Vec::new();
    for u in uses {
        let (Some(from), Some(to)) = (u.from.first(), u.to.first()) else { continue };
        if from == to {
            continue;
        }
        match (layer(from), layer(to)) {
            (Some(own), Some(theirs)) if theirs >= own => {
                broken.push(format!("{}: `{from}` (layer {own}) uses `{to}` (layer {theirs}): `{}`", u.at, u.path))
            }
            (None, _) => broken.push(format!("{}: the module `{from}` has no layer in tests/architecture.rs", u.at)),
            _ => {}
        }
    }
    broken.sort();
    broken.dedup();
    broken.extend(circles(uses));
    broken
}

/// The circles among sibling modules, at every depth: each strongly connected set of two or more children of
/// one module, with the uses that close it.
fn circles(uses: &[Use]) -> Vec<String> {
    // Each use between two different subtrees of a common parent, as a use between those two children.
    let mut edges: BTreeMap<Module, BTreeMap<Module, &Use>> = BTreeMap::new();
    for u in uses {
        let common = u.from.iter().zip(&u.to).take_while(|(a, b)| a == b).count();
        if common == u.from.len() || common == u.to.len() {
            continue;
        }
        let (from, to) = (u.from[..=common].to_vec(), u.to[..=common].to_vec());
        edges.entry(from).or_default().entry(to).or_insert(u);
    }
    let nodes: BTreeSet<Module> =
        edges.iter().flat_map(|(f, e)| std::iter::once(f.clone()).chain(e.keys().cloned())).collect();
    let reach = |start: &Module| {
        let mut seen: BTreeSet<Module> = BTreeSet::new();
        let mut stack = vec![start.clone()];
        while let Some(n) = stack.pop() {
            for next in edges.get(&n).into_iter().flat_map(|e| e.keys()) {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&Module, BTreeSet<Module>> = nodes.iter().map(|n| (n, reach(n))).collect();
    let mut done: BTreeSet<&Module> = BTreeSet::new();
    let mut found = Vec::new();
    for node in &nodes {
        if done.contains(node) || !reachable[node].contains(node) {
            continue;
        }
        let members: BTreeSet<&Module> =
            nodes.iter().filter(|m| reachable[node].contains(*m) && reachable[*m].contains(node)).collect();
        done.extend(members.iter().copied());
        let closing: Vec<String> = members
            .iter()
            .flat_map(|m| edges.get(*m).into_iter().flat_map(|e| e.iter()))
            .filter(|(to, _)| members.contains(to))
            .map(|(_, u)| format!("    {}: `{}` uses `{}` (`{}`)", u.at, u.from.join("::"), u.to.join("::"), u.path))
            .collect();
        let names: Vec<String> = members.iter().map(|m| m.join("::")).collect();
        found.push(format!("a circle among {}:\n{}", names.join(", "), closing.join("\n")));
    }
    found
}

fn sources_in(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources_in(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The sources of the crate rooted at `root`: `lib.rs` is the root module (its re-exports are followed),
/// `main.rs` another crate, left out.
fn crate_sources(root: &Path) -> BTreeMap<Module, Source> {
    let mut files = Vec::new();
    sources_in(root, &mut files);
    let mut sources = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(root).unwrap();
        let mut module: Module =
            relative.components().map(|c| c.as_os_str().to_str().unwrap().trim_end_matches(".rs").to_owned()).collect();
        if module.last().is_some_and(|m| m == "mod") {
            module.pop();
        }
        if module == ["main"] {
            continue;
        }
        if module == ["lib"] {
            module.clear();
        }
        let text = std::fs::read_to_string(&file).unwrap();
        sources.insert(module, Source { file: format!("{}", relative.display()), text });
    }
    sources
}

#[test]
fn imports_only_point_down_and_close_no_circle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipeline");
    let uses = graph(&crate_sources(&root)).unwrap();
    let problems = broken(&uses);
    assert!(problems.is_empty(), "the dependency rule is broken:\n{}", problems.join("\n"));
    // The rule was applied to real edges: the wiring uses the fronts, the fronts the core, the core the store.
    let edge = |from: &str, to: &str| uses.iter().any(|u| u.from[0] == from && u.to[0] == to);
    for (from, to) in [("app", "fronts"), ("fronts", "ingest"), ("ingest", "store"), ("queue", "store")] {
        assert!(edge(from, to), "no `{from}` → `{to}` edge was seen");
    }
}

#[test]
fn the_stages_crate_closes_no_circle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("stages/src");
    let uses = graph(&crate_sources(&root)).unwrap();
    let found = circles(&uses);
    assert!(found.is_empty(), "circles in ledger-stages:\n{}", found.join("\n"));
}

/// A crate of the given files, for the test of the test.
fn check(files: &[(&str, &str)]) -> Vec<String> {
    let sources = files
        .iter()
        .map(|(module, text)| {
            let path: Module = module.split("::").map(str::to_owned).collect();
            (path, Source { file: format!("{module}.rs"), text: (*text).to_owned() })
        })
        .collect();
    broken(&graph(&sources).unwrap())
}

#[test]
fn every_evasion_of_the_line_scanner_is_caught() {
    let store = ("store", "pub struct S;");
    let fronts = ("fronts", "pub struct F;");
    let cases: &[(&str, &[(&str, &str)])] = &[
        ("a grouped import", &[store, fronts, ("store::x", "use crate::{fronts::F, store::S};")]),
        ("a multi-line group", &[store, fronts, ("store::x", "use crate::{\n    store::S,\n    fronts::F,\n};")]),
        ("super::super", &[store, fronts, ("store::a::b", "use super::super::super::fronts::F;")]),
        (
            "`//` in a string first",
            &[store, fronts, ("store::x", r#"fn f() { let _ = "//"; let _ = crate::fronts::F; }"#)],
        ),
        ("a path in a macro", &[store, fronts, ("store::x", r#"fn f() { println!("{:?}", crate::fronts::F); }"#)]),
        ("a glob", &[store, fronts, ("store::x", "use crate::fronts::*;")]),
    ];
    for (evasion, files) in cases {
        let problems = check(files);
        assert!(
            problems.iter().any(|p| p.contains("`store` (layer 2) uses `fronts` (layer 6)")),
            "{evasion} slipped through: {problems:?}"
        );
    }
}

#[test]
fn circles_are_caught_at_every_depth() {
    // Two siblings deep inside one top-level module.
    let siblings = check(&[
        ("store", ""),
        ("store::redis", "use super::setup::Plan; pub struct Conn;"),
        ("store::setup", "pub struct Plan; fn f(_: super::redis::Conn) {}"),
    ]);
    assert!(siblings.iter().any(|p| p.contains("a circle among store::redis, store::setup")), "{siblings:?}");
    // Deeper: two subtrees meet through their children.
    let deep = check(&[
        ("store", ""),
        ("store::logs", ""),
        ("store::logs::search", "pub struct Index; fn f(_: crate::store::sql::Db) {}"),
        ("store::sql", "pub enum Db {} fn f(_: crate::store::logs::search::Index) {}"),
    ]);
    assert!(deep.iter().any(|p| p.contains("a circle among store::logs, store::sql")), "{deep:?}");
    // A parent's own items are its children's vocabulary: a child may use them while the parent uses it.
    let parent = check(&[
        ("app", "mod tls; pub struct Config; fn f() { tls::load(); }"),
        ("app::tls", "use super::Config; pub fn load() {}"),
    ]);
    assert!(parent.is_empty(), "{parent:?}");
    // Through a re-export the user names its definition: a facade is not a circle.
    let facade = check(&[
        ("fronts", "pub mod base; pub mod http;"),
        ("fronts::base", "mod state; pub use state::AppState;"),
        ("fronts::base::state", "pub struct AppState; fn f(_: super::operator::Token) {}"),
        ("fronts::base::operator", "use super::AppState; pub struct Token;"),
    ]);
    assert!(facade.iter().any(|p| p.contains("fronts::base::operator, fronts::base::state")), "{facade:?}");
    let clean = check(&[
        ("fronts", "pub mod base; pub mod http;"),
        ("fronts::base", "mod state; pub use state::AppState;"),
        ("fronts::base::state", "pub struct AppState;"),
        ("fronts::http", "use crate::fronts::base::AppState; fn f(_: AppState) {}"),
    ]);
    assert!(clean.is_empty(), "{clean:?}");
    // Test modules are not part of the graph.
    let tests = check(&[("store", "#[cfg(test)]\nmod tests { use crate::fronts::F; }"), ("fronts", "pub struct F;")]);
    assert!(tests.is_empty(), "{tests:?}");
}
