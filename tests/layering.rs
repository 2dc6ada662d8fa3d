//! The crate's layering: no cycle among the top-level modules of `src/`
//! (`crate::X` paths outside comments), and `train/`, what every run shares,
//! never reaches into `engines/`, the engines built on it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`train` for src/train/x.rs, `run` for src/run.rs).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The top-level modules named by `crate::` paths in `text` (comments skipped),
/// including each item of `crate::{a, b::c}`.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            found.extend(group.split(',').map(ident).filter(|m| !m.is_empty()));
        } else {
            let m = ident(rest);
            if !m.is_empty() {
                found.insert(m);
            }
        }
    }
    found
}

fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let from = module_of(&src, &file);
        let text = std::fs::read_to_string(&file).unwrap();
        let to = crate_paths(&text);
        let edges = graph.entry(from.clone()).or_default();
        edges.extend(to.into_iter().filter(|m| *m != from));
    }
    graph
}

/// A cycle of `graph` when there is one (depth-first search).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(1) => {
                    let start = path.iter().position(|n| n == next).unwrap();
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(next, graph, state, path) {
                        return Some(c);
                    }
                }
            }
        }
        path.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if !state.contains_key(node.as_str()) {
            if let Some(c) = visit(node, graph, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn the_parser_sees_plain_and_grouped_paths_but_not_comments() {
    let found = crate_paths(
        "use crate::train::RunFolder;\n// crate::engines in a comment\nuse crate::{soft_labels, engines::X};\nlet x = crate::eval::run();",
    );
    let want: BTreeSet<String> = ["train", "soft_labels", "engines", "eval"]
        .map(String::from)
        .into();
    assert_eq!(found, want);
    let cyclic: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["a".to_string()])),
    ]
    .into();
    assert!(find_cycle(&cyclic).is_some());
}

#[test]
fn top_level_modules_form_no_cycle() {
    let graph = module_graph();
    assert!(graph.contains_key("train") && graph.contains_key("engines"));
    assert!(graph["engines"].contains("train"), "{graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!("module cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn train_never_imports_engines() {
    let graph = module_graph();
    assert!(
        !graph["train"].contains("engines"),
        "src/train/ names crate::engines: what runs share must not depend on an engine"
    );
}

#[test]
fn engines_use_train_through_its_root() {
    // `crate::train::X` is an item train re-exports; `crate::train::m::X`
    // would reach into one of its modules.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/engines");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (at, _) in line.match_indices("crate::train::") {
                let rest = &line[at + "crate::train::".len()..];
                let ident: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let into_module = ident.starts_with(|c: char| c.is_ascii_lowercase())
                    && rest[ident.len()..].starts_with("::");
                assert!(!into_module, "{}: {line}", file.display());
            }
        }
    }
}
