//! The 409 an apply gets when it would change fields other managers own, worded as upstream's
//! `fieldmanager/internal/conflict.go` (`NewConflictError`, `getConflictMessage`,
//! `printManager`) words it: one cause per field, of type `FieldManagerConflict`, naming the
//! field and the manager (an updater with the apiVersion it wrote), and a message listing them
//! by manager.

use serde_json::json;

use super::Entry;
use super::set::{FieldSet, display};
use crate::api::status::ApiError;

/// How a conflict names a manager: `"name"` for an applier, `"name" using apps/v1` for an
/// updater, with ` with subresource "status"` after the name for a subresource's manager.
fn manager(entry: &Entry) -> String {
    let mut out = format!("{:?}", entry.manager);
    if let Some(sub) = &entry.subresource {
        out.push_str(&format!(" with subresource {sub:?}"));
    }
    if entry.operation == "Update" {
        out.push_str(&format!(" using {}", entry.api_version));
    }
    out
}

/// The conflict error for the fields each manager owns that the apply would change.
pub(super) fn error(conflicts: &[(Entry, FieldSet)]) -> ApiError {
    let mut by_manager: Vec<(String, Vec<String>)> = conflicts
        .iter()
        .map(|(entry, fields)| {
            let paths = fields.in_iteration_order().iter().map(display).collect();
            (manager(entry), paths)
        })
        .collect();
    by_manager.sort();
    let count: usize = by_manager.iter().map(|(_, p)| p.len()).sum();
    let causes: Vec<_> = by_manager
        .iter()
        .flat_map(|(m, paths)| {
            paths.iter().map(move |p| {
                json!({"reason": "FieldManagerConflict", "message": format!("conflict with {m}"),
                    "field": p})
            })
        })
        .collect();
    let message = if count == 1 {
        let (m, paths) = &by_manager[0];
        format!(
            "Apply failed with 1 conflict: conflict with {m}: {}",
            paths[0]
        )
    } else {
        let lines: Vec<String> = by_manager
            .iter()
            .flat_map(|(m, paths)| {
                std::iter::once(format!("conflicts with {m}:"))
                    .chain(paths.iter().map(|p| format!("- {p}")))
            })
            .collect();
        format!("Apply failed with {count} conflicts: {}", lines.join("\n"))
    };
    ApiError::apply_conflict(message, json!({"causes": causes}))
}
