//! The layers of the source tree hold: every module imports only what its row of the "module:
//! owns, may import" table in docs/architecture.md allows. The table is read from the doc
//! itself, so the doc and the code cannot drift apart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The table's rows: module -> the modules it may import.
fn allowed() -> BTreeMap<String, BTreeSet<String>> {
    let doc = std::fs::read_to_string("docs/architecture.md").expect("docs/architecture.md");
    let mut rows = BTreeMap::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | `module` | owns | may import |
        let [_, module, _, imports, _] = cells.as_slice() else { continue };
        let Some(module) = module.strip_prefix('`').and_then(|rest| rest.strip_suffix('`')) else { continue };
        if module.contains(' ') || module.contains('/') {
            continue;
        }
        let imports: BTreeSet<String> = imports
            .split(',')
            .filter_map(|name| name.trim().strip_prefix('`')?.strip_suffix('`').map(String::from))
            .collect();
        rows.insert(module.to_string(), imports);
    }
    rows
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// The crate modules a line of code names (`crate::name`), outside comments.
fn named_modules(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    code.match_indices("crate::")
        .map(|(at, _)| {
            code[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .collect()
}

/// No module imports outside its row; and every module of the tree has a row.
#[test]
fn modules_import_only_what_the_architecture_allows() {
    let rows = allowed();
    assert!(rows.len() >= 10, "the table was not found in docs/architecture.md: {rows:?}");
    let mut files = Vec::new();
    rust_files(Path::new("src"), &mut files);
    let mut breaches = Vec::new();
    for file in files {
        let relative = file.strip_prefix("src").unwrap();
        let first = relative.iter().next().unwrap().to_string_lossy().trim_end_matches(".rs").to_string();
        if first == "lib" || first == "bin" {
            continue;
        }
        let Some(may_import) = rows.get(&first) else {
            breaches.push(format!("src/{first} has no row in the table"));
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for (number, line) in text.lines().enumerate() {
            for module in named_modules(line) {
                if module != first && !may_import.contains(&module) {
                    breaches.push(format!("{}:{}: {first} imports {module}", file.display(), number + 1));
                }
            }
        }
    }
    breaches.sort();
    breaches.dedup();
    assert!(
        breaches.is_empty(),
        "imports outside the table in docs/architecture.md:\n{}",
        breaches.join("\n")
    );
}
