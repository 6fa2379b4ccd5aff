//! Sets of field paths, the unit of ownership in server-side apply, and their two spellings:
//! the `FieldsV1` trie stored in `metadata.managedFields` and the dotted form conflict messages
//! print.
//!
//! A path is a list of elements, each already in its `FieldsV1` spelling (structured-merge-diff's
//! `fieldpath` package, `serialize-pe.go`): `f:<field>`, `k:<key fields as JSON>` for an item of
//! an associative list, `v:<value as JSON>` for an item of a set. `FieldsV1` nests one JSON
//! object per element; `".": {}` marks a path that is itself in the set and has members below
//! it (a list item that is owned as a whole and field by field), `{}` a leaf.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

/// One path from the object's root.
pub type Path = Vec<String>;

/// A set of paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet(BTreeSet<Path>);

impl FieldSet {
    /// Adds a path.
    pub fn insert(&mut self, path: Path) {
        self.0.insert(path);
    }

    /// Whether the set holds `path`.
    pub fn contains(&self, path: &Path) -> bool {
        self.0.contains(path)
    }

    /// Whether nothing is in the set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The paths, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &Path> {
        self.0.iter()
    }

    /// The paths of `self` that are in `other` too.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.intersection(&other.0).cloned().collect())
    }

    /// Adds every path of `other`.
    pub fn extend(&mut self, other: &FieldSet) {
        self.0.extend(other.0.iter().cloned());
    }

    /// Removes every path of `other`.
    pub fn remove_all(&mut self, other: &FieldSet) {
        self.0.retain(|p| !other.0.contains(p));
    }

    /// The `FieldsV1` object for `metadata.managedFields[].fieldsV1`.
    pub fn to_fields_v1(&self) -> Value {
        #[derive(Default)]
        struct Node {
            member: bool,
            children: BTreeMap<String, Node>,
        }
        fn encode(node: &Node) -> Value {
            let mut out: Map<String, Value> = node
                .children
                .iter()
                .map(|(k, child)| (k.clone(), encode(child)))
                .collect();
            if node.member && !out.is_empty() {
                out.insert(".".into(), Value::Object(Map::new()));
            }
            Value::Object(out)
        }
        let mut root = Node::default();
        for path in &self.0 {
            let mut node = &mut root;
            for element in path {
                node = node.children.entry(element.clone()).or_default();
            }
            node.member = true;
        }
        encode(&root)
    }

    /// Reads a `FieldsV1` object; None when it is not one.
    pub fn from_fields_v1(value: &Value) -> Option<FieldSet> {
        fn decode(value: &Value, prefix: &mut Path, out: &mut FieldSet) -> Option<()> {
            let map = value.as_object()?;
            if map.is_empty() && !prefix.is_empty() {
                out.insert(prefix.clone());
            }
            for (key, child) in map {
                if key == "." {
                    out.insert(prefix.clone());
                    continue;
                }
                if !["f:", "k:", "v:", "i:"].iter().any(|p| key.starts_with(p)) {
                    return None;
                }
                prefix.push(key.clone());
                decode(child, prefix, out)?;
                prefix.pop();
            }
            Some(())
        }
        let mut out = FieldSet::default();
        decode(value, &mut Vec::new(), &mut out)?;
        Some(out)
    }

    /// The paths in structured-merge-diff's iteration order (`Set.Iterate`): at each level the
    /// members first, then the children's subtrees, each in sorted order. Conflict causes are
    /// listed in this order.
    pub fn in_iteration_order(&self) -> Vec<Path> {
        let mut out = Vec::new();
        let mut prefix = Vec::new();
        self.visit(&mut prefix, &mut out);
        out
    }

    fn visit(&self, prefix: &mut Path, out: &mut Vec<Path>) {
        let depth = prefix.len();
        let below: Vec<&Path> = self
            .0
            .iter()
            .filter(|p| p.len() > depth && p[..depth] == prefix[..])
            .collect();
        out.extend(
            below
                .iter()
                .filter(|p| p.len() == depth + 1)
                .map(|p| (*p).clone()),
        );
        let heads: BTreeSet<&String> = below
            .iter()
            .filter(|p| p.len() > depth + 1)
            .map(|p| &p[depth])
            .collect();
        for head in heads {
            prefix.push(head.clone());
            self.visit(prefix, out);
            prefix.pop();
        }
    }
}

/// A path as structured-merge-diff's `Path.String()` prints it: `.spec.replicas`,
/// `.spec.containers[name="app"].image`, `.metadata.finalizers[="x"]`.
pub fn display(path: &Path) -> String {
    let mut out = String::new();
    for element in path {
        let (kind, rest) = element.split_at(2.min(element.len()));
        match kind {
            "f:" => {
                out.push('.');
                out.push_str(rest);
            }
            "k:" => {
                let fields: Map<String, Value> = serde_json::from_str(rest).unwrap_or_default();
                let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push_str(&format!("[{}]", parts.join(",")));
            }
            "v:" => out.push_str(&format!("[={rest}]")),
            _ => out.push_str(&format!("[{rest}]")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(elements: &[&str]) -> Path {
        elements.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn fields_v1_round_trips_and_marks_owned_parents_with_a_dot() {
        let mut set = FieldSet::default();
        set.insert(path(&["f:spec", "f:replicas"]));
        let item = r#"k:{"name":"app"}"#;
        set.insert(path(&["f:spec", "f:containers", item]));
        set.insert(path(&["f:spec", "f:containers", item, "f:image"]));
        let v1 = set.to_fields_v1();
        assert_eq!(
            v1,
            json!({"f:spec": {"f:replicas": {}, "f:containers": {item: {".": {}, "f:image": {}}}}})
        );
        assert_eq!(FieldSet::from_fields_v1(&v1), Some(set));
        assert_eq!(FieldSet::from_fields_v1(&json!({"spec": {}})), None);
    }

    #[test]
    fn paths_print_as_structured_merge_diff_does() {
        let p = path(&[
            "f:spec",
            "f:ports",
            r#"k:{"port":80,"protocol":"TCP"}"#,
            "f:targetPort",
        ]);
        assert_eq!(
            display(&p),
            r#".spec.ports[port=80,protocol="TCP"].targetPort"#
        );
        assert_eq!(
            display(&path(&["f:metadata", "f:finalizers", r#"v:"x""#])),
            r#".metadata.finalizers[="x"]"#
        );
    }

    #[test]
    fn iteration_lists_members_before_subtrees() {
        let mut set = FieldSet::default();
        set.insert(path(&["f:spec", "f:template", "f:x"]));
        set.insert(path(&["f:spec", "f:replicas"]));
        set.insert(path(&["f:data"]));
        assert_eq!(
            set.in_iteration_order(),
            vec![
                path(&["f:data"]),
                path(&["f:spec", "f:replicas"]),
                path(&["f:spec", "f:template", "f:x"])
            ]
        );
    }
}
