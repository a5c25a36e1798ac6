//! The house's layout: dependencies point down. The route table (`crate::app`)
//! imports every handler, so nothing below it may import it (only `cli`, which
//! runs it, and `lib.rs`, which declares it); otherwise every handler and the
//! table would form one import circle again.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Whether `code` names the module `path` (`crate::app`, not `crate::approvals`).
fn names_app(code: &str, path: &str) -> bool {
    code.match_indices(path)
        .any(|(at, _)| code[at + path.len()..].chars().next().is_none_or(|c| !(c.is_alphanumeric() || c == '_')))
}

#[test]
fn no_module_below_the_route_table_imports_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 40, "found the sources");
    let mut offenders = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap().to_string_lossy().to_string();
        if rel == "app.rs" || rel == "lib.rs" || rel == "main.rs" || rel.starts_with("cli/") {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        let imports_app = text.lines().any(|line| {
            let code = line.split("//").next().unwrap_or("");
            names_app(code, "crate::app") || names_app(code, "super::app") || code.trim_start().starts_with("app::")
        });
        if imports_app {
            offenders.push(rel);
        }
    }
    assert!(offenders.is_empty(), "these modules below the route table import it: {offenders:?}");
}

#[test]
fn the_route_table_is_not_in_the_module_that_handlers_import() {
    let http = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http/mod.rs")).unwrap();
    for handlers in ["files::handlers", "directory::handlers", "admin::", "web::documents"] {
        assert!(!http.contains(handlers), "src/http/mod.rs names {handlers}");
    }
}
