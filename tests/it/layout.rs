//! The layout rule, checked from the code's own imports: every `crate::NAME` a top-level module
//! uses names a module listed BELOW it in the table that opens `src/lib.rs`, so no import cycle
//! between top-level modules can exist and the table stays true.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

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

/// The top-level modules in the order of the table in `lib.rs` (highest first).
fn documented_order() -> Vec<String> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| l.strip_prefix("//! | [`"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect()
}

/// Code without comments (doc links such as [`crate::retry`] are not imports).
fn code_of(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every top-level module named after `crate::` in `code`, including grouped imports
/// (`use crate::{a::X, b}`).
fn crate_refs(code: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if known.contains(&name) {
                    out.insert(name);
                }
            }
        } else {
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if known.contains(&name) {
                out.insert(name);
            }
        }
        rest = after;
    }
    out
}

/// top-level module -> the top-level modules its files import.
fn import_graph(known: &BTreeSet<String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(src()).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let top = first.trim_end_matches(".rs").to_string();
        if !known.contains(&top) {
            continue; // lib.rs, main.rs
        }
        let code = code_of(&std::fs::read_to_string(&f).unwrap());
        let refs = crate_refs(&code, known);
        let entry = graph.entry(top.clone()).or_default();
        entry.extend(refs.into_iter().filter(|r| *r != top));
    }
    graph
}

#[test]
fn every_import_points_down_the_lib_rs_table() {
    let order = documented_order();
    assert!(
        order.len() > 10,
        "the module table in lib.rs was not found: {order:?}"
    );
    let known: BTreeSet<String> = order.iter().cloned().collect();
    // Every top-level module is in the table.
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    for f in &files {
        let rel = f.strip_prefix(src()).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let top = first.trim_end_matches(".rs");
        if top != "lib" && top != "main" {
            assert!(
                known.contains(top),
                "src/{} is not listed in the module table of src/lib.rs",
                rel.display()
            );
        }
    }
    let rank: BTreeMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i))
        .collect();
    let mut upward = Vec::new();
    for (from, tos) in import_graph(&known) {
        for to in tos {
            if rank[to.as_str()] < rank[from.as_str()] {
                upward.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that point up the table in src/lib.rs (an import cycle, or the table is out of date): {upward:?}"
    );
}

#[test]
fn the_reference_scanner_sees_grouped_and_nested_paths() {
    let known: BTreeSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let code = code_of(
        "use crate::a::X;\nuse crate::{b::Y, c};\nfn f() { crate::zz::q(); } // crate::c::Doc",
    );
    let refs = crate_refs(&code, &known);
    assert_eq!(refs, known);
    let only = crate_refs(&code_of("// see crate::a\nuse crate::b;"), &known);
    assert_eq!(only.into_iter().collect::<Vec<_>>(), ["b"]);
}
