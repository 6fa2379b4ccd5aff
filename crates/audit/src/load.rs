//! Reading manifests: files, directories, stdin (`-`), multi-document streams, `kind: List`.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::Error;

/// Files above this size are refused: real manifests are kilobytes, and serde-saphyr's
/// default budget only caps reader input (its `Budget::max_reader_input_bytes` docs).
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// One Kubernetes object and the file it came from, so findings can point at it.
#[derive(Debug, Clone)]
pub struct Object {
    /// The file (or `-` for stdin).
    pub source: PathBuf,
    /// The object as written.
    pub doc: Value,
}

/// Loads every object under `paths`; directories are walked for `.yaml`, `.yml` and `.json`.
pub fn load_paths(paths: &[PathBuf]) -> Result<Vec<Object>, Error> {
    let mut out = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .take(MAX_FILE_BYTES + 1)
                .read_to_string(&mut text)
                .map_err(|source| Error::Read {
                    path: path.clone(),
                    source,
                })?;
            check_size(path, text.len() as u64)?;
            out.extend(parse(path, &text)?);
        } else {
            load_path(path, &mut out)?;
        }
    }
    Ok(out)
}

fn load_path(path: &Path, out: &mut Vec<Object>) -> Result<(), Error> {
    let read_err = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(read_err)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for entry in entries {
            let is_manifest = entry
                .extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json");
            if entry.is_dir() || is_manifest {
                load_path(&entry, out)?;
            }
        }
        return Ok(());
    }
    check_size(path, meta.len())?;
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    out.extend(parse(path, &text)?);
    Ok(())
}

fn check_size(path: &Path, size: u64) -> Result<(), Error> {
    if size > MAX_FILE_BYTES {
        return Err(Error::TooLarge {
            path: path.to_path_buf(),
            size,
            limit: MAX_FILE_BYTES,
        });
    }
    Ok(())
}

/// serde-saphyr's default budget (de/budget.rs) is sized for one config file: 1,024 documents
/// and 250,000 nodes. A rendered chart or a cluster dump is a stream of thousands of objects, so
/// the counting limits scale to what fits in `MAX_FILE_BYTES`; the alias limits (absolute cap
/// and alias/anchor ratio, the alias-bomb defence) and depth limit stay at their defaults.
fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_documents = 1_000_000;
    budget.max_nodes = 20_000_000;
    budget.max_events = 40_000_000;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

/// Parses a multi-document YAML (or JSON) stream under [`options`]'s budget, which refuses
/// alias bombs and absurd nesting with an error instead of exhausting memory.
pub fn parse(source: &Path, text: &str) -> Result<Vec<Object>, Error> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple_with_options(text, options()).map_err(|e| Error::Parse {
            path: source.to_path_buf(),
            line: e.location().map_or(0, |l| l.line()),
            message: e.to_string(),
        })?;
    let mut out = Vec::new();
    for doc in docs {
        flatten(source, doc, &mut out);
    }
    Ok(out)
}

fn flatten(source: &Path, doc: Value, out: &mut Vec<Object>) {
    if doc.get("kind").and_then(Value::as_str) == Some("List") {
        if let Some(Value::Array(items)) = doc.get("items").cloned() {
            for item in items {
                flatten(source, item, out);
            }
        }
    } else if doc.is_object() {
        out.push(Object {
            source: source.to_path_buf(),
            doc,
        });
    }
}
