//! Paginated lists (`limit` and `continue`), as the real API server serves them, so a client
//! that reads a large cluster a page at a time (kube-runtime's watcher, the drain engine) gets
//! pages here too and a test can see it does.
//!
//! Upstream (`k8s.io/apiserver/pkg/storage/etcd3/store.go` `GetList`, with
//! `storage.EncodeContinue`) orders by key, returns at most `limit` items, and puts an opaque
//! `metadata.continue` token and `metadata.remainingItemCount` on a page that is not the last;
//! a later page is read at the first page's resourceVersion, and a token that does not decode
//! is a 400. The sandbox keeps no old versions: a later page is read from the current state
//! after the last key served (what upstream falls back to, with a warning, once the version
//! was compacted), and carries the first page's resourceVersion.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::status::ApiError;

/// One page of a list.
pub(crate) struct Page {
    /// The items of this page, in key order.
    pub items: Vec<Arc<Value>>,
    /// The list's resourceVersion (the first page's, for a continued list).
    pub rv: u64,
    /// The token for the next page, if there is one.
    pub next: Option<String>,
    /// Items after this page.
    pub remaining: usize,
}

/// The page `limit` and `continue` ask for out of `items` (in key order) read at `rv`.
pub(crate) fn page(
    items: Vec<Arc<Value>>,
    rv: u64,
    limit: Option<&str>,
    token: Option<&str>,
) -> Result<Page, ApiError> {
    let limit = match limit.filter(|l| !l.is_empty()) {
        None => 0,
        Some(l) => l.parse::<usize>().map_err(|_| {
            ApiError::bad_request(format!(
                "limit: Invalid value: {l:?}: must be a whole number"
            ))
        })?,
    };
    let (rv, start) = match token.filter(|t| !t.is_empty()) {
        None => (rv, None),
        Some(t) => decode(t)?,
    };
    let mut items: Vec<Arc<Value>> = match &start {
        None => items,
        Some(start) => items.into_iter().filter(|o| key(o) > *start).collect(),
    };
    if limit == 0 || items.len() <= limit {
        return Ok(Page {
            items,
            rv,
            next: None,
            remaining: 0,
        });
    }
    let remaining = items.len() - limit;
    items.truncate(limit);
    let last = items.last().map(|o| key(o)).unwrap_or_default();
    Ok(Page {
        items,
        rv,
        next: Some(encode(rv, &last)),
        remaining,
    })
}

fn key(obj: &Value) -> (String, String) {
    let meta = &obj["metadata"];
    (
        meta["namespace"].as_str().unwrap_or_default().to_string(),
        meta["name"].as_str().unwrap_or_default().to_string(),
    )
}

fn encode(rv: u64, (namespace, name): &(String, String)) -> String {
    let token = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": [namespace, name]});
    STANDARD.encode(token.to_string())
}

fn decode(token: &str) -> Result<(u64, Option<(String, String)>), ApiError> {
    let invalid = || ApiError::bad_request(format!("continue key is not valid: {token:?}"));
    let bytes = STANDARD.decode(token).map_err(|_| invalid())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    let rv = value["rv"].as_u64().ok_or_else(invalid)?;
    let start = value["start"].as_array().ok_or_else(invalid)?;
    match start.as_slice() {
        [Value::String(ns), Value::String(name)] => Ok((rv, Some((ns.clone(), name.clone())))),
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods(n: usize) -> Vec<Arc<Value>> {
        (0..n)
            .map(|i| {
                Arc::new(json!({"metadata": {"namespace": "default", "name": format!("p{i:03}")}}))
            })
            .collect()
    }

    #[test]
    fn pages_follow_one_another_to_the_end_at_the_first_pages_version() {
        let first = page(pods(5), 7, Some("2"), None).unwrap();
        assert_eq!(first.items.len(), 2);
        assert_eq!(first.remaining, 3);
        let token = first.next.unwrap();
        // The store moved on meanwhile; the list keeps the version it started at.
        let second = page(pods(5), 9, Some("2"), Some(&token)).unwrap();
        assert_eq!(second.items[0]["metadata"]["name"], "p002");
        assert_eq!(second.rv, 7);
        let third = page(pods(5), 9, Some("2"), second.next.as_deref()).unwrap();
        assert_eq!(third.items.len(), 1);
        assert_eq!(third.next, None);
        assert_eq!(page(pods(5), 7, None, None).unwrap().items.len(), 5);
        assert_eq!(
            page(pods(5), 7, Some("2"), Some("garbage"))
                .err()
                .map(|e| e.code),
            Some(400)
        );
    }
}
