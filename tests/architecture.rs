//! The shape of the code, checked: the modules of `src/` form layers whose
//! imports only point down (the README's "Layout" draws them), no
//! modules import each other in a circle, and no file under `src/` is over 600 lines.
//!
//! A module is a top-level name under `src/` (`src/engine/authn.rs` is part
//! of `engine`). An import is a `crate::name` in code (not in a comment),
//! or `keyward::name` in the binaries.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, bottom first. A module may import its own layer and those
/// below it, never one above.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "vocabulary",
        &[
            "pb",
            "clock",
            "error",
            "model",
            "token",
            "logs",
            "metrics",
            "net",
            "heap",
            "ratelimit",
        ],
    ),
    ("state", &["index", "store"]),
    (
        "shapes",
        &[
            "wire",
            "feed",
            "upstream",
            "credential",
            "routes",
            "leak_report",
        ],
    ),
    ("rules", &["authz", "access"]),
    ("engine", &["engine"]),
    ("operations", &["admin", "replication", "tls"]),
    ("surfaces", &["service", "rest", "http", "admission"]),
    ("wiring", &["config", "server", "seed", "storemove", "cli"]),
];

/// Longest file under `src/`, in lines.
const FILE_LINES_MAX: usize = 600;

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`None` for the crate
/// root and the binaries).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).expect("under src/");
    let first = rel.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "main.rs" | "bin" => None,
        name => Some(name.trim_end_matches(".rs").to_string()),
    }
}

/// The `crate::x` names a file's code uses (comments left out).
fn imports(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let name: String = rest[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `crate::{a, b}` groups are not used in this code base; a
            // name is what follows `crate::`.
            if !name.is_empty() {
                out.insert(name);
            }
            rest = &rest[at + "crate::".len()..];
        }
    }
    out
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every module's imports of other modules.
fn graph() -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for file in files {
        let Some(module) = module_of(&src, &file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("read a source file");
        for import in imports(&text) {
            if import != module {
                let shown = file.strip_prefix(&src).expect("under src/").display();
                graph
                    .entry(module.clone())
                    .or_default()
                    .entry(import)
                    .or_default()
                    .push(shown.to_string());
            }
        }
    }
    graph
}

#[test]
fn every_module_has_a_layer() {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let unplaced: BTreeSet<String> = files
        .iter()
        .filter_map(|f| module_of(&src, f))
        .filter(|m| layer_of(m).is_none())
        .collect();
    assert!(
        unplaced.is_empty(),
        "modules with no layer in LAYERS (add them, and to the README's Layout): {unplaced:?}"
    );
}

#[test]
fn imports_only_point_down() {
    let mut upward = Vec::new();
    for (module, imports) in graph() {
        let Some(own) = layer_of(&module) else {
            continue;
        };
        for (import, files) in imports {
            if layer_of(&import).is_some_and(|l| l > own) {
                upward.push(format!(
                    "{module} ({}) imports {import} ({}) in {}",
                    LAYERS[own].0,
                    LAYERS[layer_of(&import).unwrap_or(0)].0,
                    files.join(", ")
                ));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that point up:\n{}",
        upward.join("\n")
    );
}

#[test]
fn no_modules_import_each_other_in_a_circle() {
    // Peel off modules that import no module left; whatever remains sits
    // on a circle (within a layer: across layers, `imports_only_point_down`
    // rules circles out already).
    let graph = graph();
    let mut left: BTreeMap<&str, BTreeSet<&str>> = graph
        .iter()
        .map(|(m, imports)| (m.as_str(), imports.keys().map(String::as_str).collect()))
        .collect();
    loop {
        let leaves: Vec<&str> = left
            .iter()
            .filter(|(_, imports)| imports.iter().all(|i| !left.contains_key(i)))
            .map(|(m, _)| *m)
            .collect();
        if leaves.is_empty() {
            break;
        }
        for m in leaves {
            left.remove(m);
        }
    }
    assert!(left.is_empty(), "modules on an import circle: {left:?}");
}

#[test]
fn no_file_under_src_is_over_600_lines() {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).ok()?.lines().count();
            (lines > FILE_LINES_MAX).then(|| format!("{} ({lines})", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over {FILE_LINES_MAX} lines: {long:?}"
    );
}

#[test]
fn the_checks_see_imports() {
    // The parser the tests above rely on: code imports count, comments do not.
    let found = imports("use crate::engine::Engine; // see crate::server\n/// [`crate::http`]\n");
    assert_eq!(found, BTreeSet::from(["engine".to_string()]));
}
