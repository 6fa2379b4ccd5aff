//! The Helm chart rendered and linted by the real Helm engine, offline.
//!
//! Reading a chart's templates as text tests our idea of what Helm does with them, not what it
//! does. PyPI's `helm-python-sdk` (pinned by hash in `tests/requirements-hashed.txt`) bundles
//! Helm v4's Go library as a shared object, so `helm template` and `helm lint` run without a
//! helm binary, a cluster or the network. It is called through the venv's Python, the same
//! interpreter that serves moto.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::Error;

/// Renders (`render`) or lints (`lint`) the chart named on stdin and prints the answer as
/// JSON. Helm's own errors (a template that fails, malformed values) end up on stderr.
const SCRIPT: &str = r#"
import json, sys
import helm_python as helm
req = json.load(sys.stdin)
if req["op"] == "render":
    with helm.Chart.load(req["chart"]) as chart:
        out = chart.render(values=req["values"], name=req["release"],
                           namespace=req["namespace"], is_install=True)
else:
    out = helm.lint(req["chart"], values=req["values"], strict=True,
                    namespace=req["namespace"])
json.dump(out, sys.stdout)
"#;

/// The venv's interpreter: `$QUIESCE_VENV/bin/python3` when `scripts/test` exported it, else
/// the `python3` on PATH (which `scripts/test` also points at the venv).
fn python() -> PathBuf {
    std::env::var_os("QUIESCE_VENV")
        .map(|venv| Path::new(&venv).join("bin/python3"))
        .unwrap_or_else(|| "python3".into())
}

/// The repository's chart, found from this crate's source directory so tests work from any cwd.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/helm/quiesce")
}

/// Runs [`SCRIPT`] with one request and decodes its JSON answer.
fn call(
    op: &str,
    chart: &Path,
    namespace: &str,
    release: &str,
    values: &Value,
) -> Result<Value, Error> {
    let request = json!({
        "op": op,
        "chart": chart,
        "namespace": namespace,
        "release": release,
        "values": values,
    });
    let what = format!("helm {op} {}", chart.display());
    let failed = |detail: String| Error::Process {
        what: what.clone(),
        detail,
    };
    let mut child = Command::new(python())
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            failed(format!(
                "starting {} (is the venv from scripts/test --setup there?): {e}",
                python().display()
            ))
        })?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(request.to_string().as_bytes())?;
    // The engine renders in well under a second; no network, so no timeout beyond the child's end.
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(failed(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| failed(format!("its answer is not JSON: {e}")))
}

/// What `helm template` made of a chart: each template's output by its path in the chart.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Template path (`quiesce/templates/role.yaml`) to its rendered text.
    pub manifests: BTreeMap<String, String>,
}

impl Rendered {
    /// Every Kubernetes object rendered, in template order (NOTES.txt is not a manifest).
    pub fn objects(&self) -> Result<Vec<Value>, Error> {
        let mut out = Vec::new();
        for (path, text) in &self.manifests {
            if !path.ends_with(".yaml") && !path.ends_with(".yml") {
                continue;
            }
            let docs: Vec<Value> =
                serde_saphyr::from_multiple(text).map_err(|e| Error::Process {
                    what: format!("parsing the rendered {path}"),
                    detail: e.to_string(),
                })?;
            out.extend(docs.into_iter().filter(Value::is_object));
        }
        Ok(out)
    }

    /// The objects as one YAML stream, the way `helm template` prints them, for tools that
    /// read manifests from files.
    pub fn stream(&self) -> Result<String, Error> {
        let objects = self.objects()?;
        Ok(objects
            .iter()
            .map(|o| format!("---\n{}\n", serde_json::to_string(o).expect("a JSON value")))
            .collect())
    }
}

/// `helm template RELEASE CHART --namespace NAMESPACE` with `values` (a JSON object of
/// overrides, `null` for the defaults).
pub fn template(
    chart: &Path,
    release: &str,
    namespace: &str,
    values: &Value,
) -> Result<Rendered, Error> {
    let answer = call("render", chart, namespace, release, values)?;
    let manifests = serde_json::from_value(answer).map_err(|e| Error::Process {
        what: format!("helm template {}", chart.display()),
        detail: format!("not a map of template to text: {e}"),
    })?;
    Ok(Rendered { manifests })
}

/// `helm lint --strict`: every message it has (info included), as `SEVERITY path: text`.
pub fn lint(chart: &Path, namespace: &str, values: &Value) -> Result<Vec<String>, Error> {
    let answer = call("lint", chart, namespace, "", values)?;
    let severity = |n: u64| match n {
        1 => "info",
        2 => "warning",
        3 => "error",
        _ => "unknown",
    };
    let mut out: Vec<String> = answer["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            format!(
                "{} {}: {}",
                severity(m["severity"].as_u64().unwrap_or(0)),
                m["path"].as_str().unwrap_or(""),
                m["error"].as_str().unwrap_or("")
            )
        })
        .collect();
    out.extend(
        answer["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| format!("error: {}", e.as_str().unwrap_or(""))),
    );
    Ok(out)
}
