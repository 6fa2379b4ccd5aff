//! Label and field selectors with the syntax and errors of `k8s.io/apimachinery/pkg/labels`
//! and `pkg/fields`.

use serde_json::Value;

use super::status::ApiError;

#[derive(Debug, Clone, PartialEq)]
enum Op {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

/// A parsed label selector: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<(String, Op)>);

impl LabelSelector {
    /// Parses `a=b,c!=d,e in (f,g),h notin (i),j,!k`.
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            reqs.push(parse_requirement(part)?);
        }
        Ok(LabelSelector(reqs))
    }

    /// Builds a selector from a `metav1.LabelSelector` object (matchLabels + matchExpressions).
    pub fn from_object(selector: &Value) -> Self {
        let mut reqs = Vec::new();
        if let Some(labels) = selector["matchLabels"].as_object() {
            for (k, v) in labels {
                reqs.push((
                    k.clone(),
                    Op::In(vec![v.as_str().unwrap_or_default().to_string()]),
                ));
            }
        }
        for expr in selector["matchExpressions"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let key = expr["key"].as_str().unwrap_or_default().to_string();
            let values: Vec<String> = expr["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(String::from))
                .collect();
            let op = match expr["operator"].as_str() {
                Some("In") => Op::In(values),
                Some("NotIn") => Op::NotIn(values),
                Some("Exists") => Op::Exists,
                _ => Op::DoesNotExist,
            };
            reqs.push((key, op));
        }
        LabelSelector(reqs)
    }

    /// Whether the selector selects nothing at all (an empty `metav1.LabelSelector` selects
    /// everything, but PDBs and Services treat a missing selector as selecting nothing).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether an object's labels satisfy every requirement.
    pub fn matches(&self, labels: &Value) -> bool {
        self.0.iter().all(|(key, op)| {
            let value = labels.get(key).and_then(Value::as_str);
            match op {
                Op::In(values) => value.is_some_and(|v| values.iter().any(|x| x == v)),
                Op::NotIn(values) => value.is_none_or(|v| !values.iter().any(|x| x == v)),
                Op::Exists => value.is_some(),
                Op::DoesNotExist => value.is_none(),
            }
        })
    }
}

/// The selector as a query string (`metav1.LabelSelector` → `labels.Selector.String()`),
/// sorted by key as upstream prints it; a Scale's `status.selector` carries it.
impl std::fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut reqs: Vec<&(String, Op)> = self.0.iter().collect();
        reqs.sort_by(|a, b| a.0.cmp(&b.0));
        let parts: Vec<String> = reqs
            .into_iter()
            .map(|(key, op)| match op {
                Op::In(values) if values.len() == 1 => format!("{key}={}", values[0]),
                Op::In(values) => format!("{key} in ({})", values.join(",")),
                Op::NotIn(values) if values.len() == 1 => format!("{key}!={}", values[0]),
                Op::NotIn(values) => format!("{key} notin ({})", values.join(",")),
                Op::Exists => key.clone(),
                Op::DoesNotExist => format!("!{key}"),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// Splits on commas outside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_requirement(part: &str) -> Result<(String, Op), ApiError> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok((valid_key(key.trim())?, Op::DoesNotExist));
    }
    for (sep, negate) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((k, v)) = part.split_once(sep) {
            let value = v.trim().to_string();
            let op = if negate {
                Op::NotIn(vec![value])
            } else {
                Op::In(vec![value])
            };
            return Ok((valid_key(k.trim())?, op));
        }
    }
    let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
    if words.len() == 2 {
        let rest = words[1].trim_start();
        let (negate, list) = if let Some(l) = rest.strip_prefix("notin") {
            (true, l)
        } else if let Some(l) = rest.strip_prefix("in") {
            (false, l)
        } else {
            return Err(ApiError::bad_request(format!(
                "unable to parse requirement: found '{rest}', expected: in, notin, =, ==, !=, gt, lt"
            )));
        };
        let list = list.trim();
        let inner = list
            .strip_prefix('(')
            .and_then(|l| l.strip_suffix(')'))
            .ok_or_else(|| {
                ApiError::bad_request("unable to parse requirement: found '', expected: ',' or ')'")
            })?;
        let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
        let op = if negate {
            Op::NotIn(values)
        } else {
            Op::In(values)
        };
        return Ok((valid_key(words[0])?, op));
    }
    Ok((valid_key(part)?, Op::Exists))
}

fn valid_key(key: &str) -> Result<String, ApiError> {
    let ok = !key.is_empty()
        && key.len() <= 317
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if ok {
        Ok(key.to_string())
    } else {
        Err(ApiError::bad_request(format!(
            "unable to parse requirement: invalid label key \"{key}\": name part must consist of alphanumeric characters, '-', '_' or '.'"
        )))
    }
}

/// A parsed field selector: `field=value` / `field!=value`, AND-ed.
#[derive(Debug, Clone, Default)]
pub struct FieldSelector(Vec<(String, String, bool)>);

/// Fields every resource can be selected by; pods add their own (upstream
/// `pkg/registry/core/pod/strategy.go` ToSelectableFields).
const COMMON_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];
const POD_FIELDS: &[&str] = &[
    "spec.nodeName",
    "status.phase",
    "spec.schedulerName",
    "spec.restartPolicy",
    "status.podIP",
];
const NODE_FIELDS: &[&str] = &["spec.unschedulable"];

impl FieldSelector {
    /// Parses a selector for `plural`, rejecting fields the real server would reject.
    pub fn parse(text: &str, plural: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, value, negate) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, v, false)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{part}'; can't understand '{part}'"
                )));
            };
            let field = field.trim();
            let extra: &[&str] = match plural {
                "pods" => POD_FIELDS,
                "nodes" => NODE_FIELDS,
                _ => &[],
            };
            if !COMMON_FIELDS.contains(&field) && !extra.contains(&field) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            reqs.push((field.to_string(), value.trim().to_string(), negate));
        }
        Ok(FieldSelector(reqs))
    }

    /// The node an equality requirement on `spec.nodeName` pins, so the store can use its
    /// index; the full selector is still checked on every candidate. `spec.nodeName=` (the
    /// scheduler's "unbound pods") pins none.
    pub fn node_name(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|(field, value, negate)| field == "spec.nodeName" && !negate && !value.is_empty())
            .map(|(_, value, _)| value.as_str())
    }

    /// Whether an object satisfies every requirement; a missing field reads as "".
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, value, negate)| {
            let mut cur = obj;
            for part in field.split('.') {
                cur = &cur[part];
            }
            let actual = match cur {
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (actual == *value) != *negate
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selector_syntax() {
        let labels = json!({"app": "web", "tier": "front"});
        let sel = |s: &str| LabelSelector::parse(s).unwrap().matches(&labels);
        assert!(sel("app=web,tier==front"));
        assert!(sel("app in (web, api),!missing"));
        assert!(!sel("app notin (web)"));
        assert!(!sel("app!=web"));
        assert!(sel("tier"));
        assert!(sel(""));
    }

    #[test]
    fn selectors_print_as_they_parse() {
        let text = "app=web,tier in (a,b),!gone,zone";
        let sel = LabelSelector::parse(text).unwrap();
        assert_eq!(sel.to_string(), "app=web,!gone,tier in (a,b),zone");
        assert_eq!(
            LabelSelector::parse(&sel.to_string()).unwrap().to_string(),
            sel.to_string()
        );
    }

    #[test]
    fn bad_label_selector_is_a_bad_request() {
        let err = LabelSelector::parse("a in (b").unwrap_err();
        assert_eq!(err.code, 400);
        assert_eq!(
            err.message,
            "unable to parse requirement: found '', expected: ',' or ')'"
        );
    }

    #[test]
    fn field_selectors_for_pods() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        assert!(
            FieldSelector::parse("spec.nodeName=n1,status.phase!=Failed", "pods")
                .unwrap()
                .matches(&pod)
        );
        assert!(
            !FieldSelector::parse("spec.nodeName=n2", "pods")
                .unwrap()
                .matches(&pod)
        );
        let err = FieldSelector::parse("spec.bogus=x", "pods").unwrap_err();
        assert_eq!(err.message, "field label not supported: spec.bogus");
    }
}
