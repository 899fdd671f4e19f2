#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

//! The daemon crate's dependency rule (docs/ARCHITECTURE.md): its top-level modules are layers, and a
//! module may only name (`crate::…`) modules of a lower layer. So imports point one way, there is no
//! circle between modules, and nothing imports `fronts` or `app`. This test reads the sources; it fails on
//! the first line that breaks the rule, naming it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Each top-level module of `pipeline/` and its layer: a module may use only modules of a lower layer.
const LAYERS: &[(&str, u8)] = &[
    // The configuration: read by every layer, reading none.
    ("config", 0),
    // Leaves every layer may use: the error type, tracing and Prometheus plumbing.
    ("error", 1),
    ("telemetry", 1),
    ("observe", 1),
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

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules a line names as `crate::<module>`, outside comments.
fn named(line: &str) -> Vec<&str> {
    let code = line.split("//").next().unwrap_or_default();
    code.match_indices("crate::")
        .filter(|(at, _)| !code[..*at].ends_with(|c: char| c.is_alphanumeric() || c == '_'))
        .map(|(at, _)| {
            let rest = &code[at + "crate::".len()..];
            let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

#[test]
fn imports_only_point_down() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipeline");
    let mut files = Vec::new();
    sources(&root, &mut files);
    files.sort();
    let mut edges: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut broken = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&root).unwrap();
        let top = relative.components().next().unwrap().as_os_str().to_str().unwrap().trim_end_matches(".rs");
        if top == "lib" || top == "main" {
            continue;
        }
        let Some(own) = layer(top) else {
            broken.push(format!("{}: the module `{top}` has no layer in tests/architecture.rs", relative.display()));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (number, line) in text.lines().enumerate() {
            for used in named(line) {
                if used == top || used.is_empty() {
                    continue;
                }
                let Some(theirs) = layer(used) else { continue };
                edges.entry((top.to_owned(), used.to_owned())).or_insert_with(|| relative.display().to_string());
                if theirs >= own {
                    broken.push(format!(
                        "{}:{}: `{top}` (layer {own}) uses `{used}` (layer {theirs}): {}",
                        relative.display(),
                        number + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(broken.is_empty(), "imports that do not point down:\n{}", broken.join("\n"));
    // The rule was applied to real edges: the wiring uses the fronts, the fronts the core, the core the store.
    for (from, to) in [("app", "fronts"), ("fronts", "ingest"), ("ingest", "store"), ("queue", "store")] {
        assert!(edges.contains_key(&(from.to_owned(), to.to_owned())), "no `{from}` → `{to}` edge was seen");
    }
}

#[test]
fn the_scanner_reads_paths_not_comments() {
    assert_eq!(named("use crate::store::logs::{LogStore, X};"), ["store"]);
    assert_eq!(named("let x = crate::fronts::http::timestamp(&t); // crate::app"), ["fronts"]);
    assert_eq!(named("/// see [`crate::app`]"), Vec::<&str>::new());
    assert_eq!(named("ledger_crate::x"), Vec::<&str>::new());
}
