//! Istio and Linkerd: a sidecar proxy sits in front of the pod when its injector is switched on
//! for the pod or for its namespace.

use quiesce_core::budget::Stack;
use serde_json::Value;

use super::Detection;
use crate::index::Index;
use crate::workload::Workload;

fn meta<'a>(doc: &'a Value, field: &str, key: &str) -> Option<&'a str> {
    doc.pointer(&format!("/metadata/{field}"))?
        .get(key)?
        .as_str()
}

/// Istio's injector (istio.io docs, "Installing the Sidecar" / "Automatic sidecar
/// injection"): the pod label `sidecar.istio.io/inject` (the older annotation of the same
/// name is still honoured) wins over the namespace label `istio-injection=enabled|disabled`
/// or `istio.io/rev=<revision>` (a revision-tagged control plane).
fn istio(w: &Workload<'_>, index: &Index<'_>) -> Option<Detection> {
    let pod = w.pod_label_or_annotation("sidecar.istio.io/inject");
    if pod == Some("false") {
        return None;
    }
    let evidence = if pod == Some("true") {
        format!(
            "istio: pod template of {}, sidecar.istio.io/inject=true",
            w.name
        )
    } else {
        let ns = index.namespace(w.namespace)?;
        match (
            meta(&ns.doc, "labels", "istio-injection"),
            meta(&ns.doc, "labels", "istio.io/rev"),
        ) {
            (Some("enabled"), _) => format!(
                "istio: Namespace {}, label istio-injection=enabled",
                w.namespace
            ),
            (Some(_), _) | (None, None) => return None,
            (None, Some(rev)) => {
                format!("istio: Namespace {}, label istio.io/rev={rev}", w.namespace)
            }
        }
    };
    Some(Detection::with_default_terms(Stack::Istio, evidence))
}

/// Linkerd's proxy injector (linkerd.io/2/features/proxy-injection): the annotation
/// `linkerd.io/inject: enabled` on a namespace or a workload; `disabled` on the pod opts out.
/// A namespace label of the same name is accepted too, since people write either.
fn linkerd(w: &Workload<'_>, index: &Index<'_>) -> Option<Detection> {
    match w.annotation("linkerd.io/inject") {
        Some("disabled") => return None,
        Some("enabled") => {
            return Some(Detection::with_default_terms(
                Stack::Linkerd,
                format!("linkerd: {}, annotation linkerd.io/inject=enabled", w.name),
            ));
        }
        _ => {}
    }
    let ns = index.namespace(w.namespace)?;
    let field = ["annotations", "labels"]
        .into_iter()
        .find(|f| meta(&ns.doc, f, "linkerd.io/inject") == Some("enabled"))?;
    Some(Detection::with_default_terms(
        Stack::Linkerd,
        format!(
            "linkerd: Namespace {}, {} linkerd.io/inject=enabled",
            w.namespace,
            field.trim_end_matches('s')
        ),
    ))
}

/// The meshes injected into `w`'s pods.
pub fn detect(w: &Workload<'_>, index: &Index<'_>) -> Vec<Detection> {
    istio(w, index)
        .into_iter()
        .chain(linkerd(w, index))
        .collect()
}
