//! The Spring properties a pod sees, from every place a manifest can set them: container env
//! (literal or from a ConfigMap key), `envFrom` ConfigMaps, `--key=value` arguments, and
//! `application*.properties` / `.yml` files in mounted ConfigMaps.
//!
//! Keys are compared in Spring Boot's relaxed form (docs.spring.io/spring-boot reference,
//! "Relaxed Binding": `eureka.client.service-url.defaultZone`, `EUREKA_CLIENT_SERVICEURL_DEFAULTZONE`
//! and `EUREKA_CLIENT_SERVICE_URL_DEFAULTZONE` name one property), reduced here to upper-case
//! letters and digits.

use serde_json::Value;

use crate::index::Index;
use crate::workload::Workload;

/// One property value and where the manifest sets it, for the evidence line.
#[derive(Debug, Clone)]
pub struct Property {
    /// The key in its relaxed form.
    pub key: String,
    /// The value as written.
    pub value: String,
    /// Where it was found, e.g. `env EUREKA_CLIENT_SERVICE_URL_DEFAULTZONE`.
    pub origin: String,
}

/// Reduces a property name to Spring's relaxed form, without separators.
pub fn relaxed(key: &str) -> String {
    key.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Every property the pod's containers see. Where a key is set twice the first one found
/// answers: Spring's precedence between env, arguments and files is not modelled, since
/// manifests that set a discovery key twice are rare.
#[derive(Debug, Default)]
pub struct Properties(Vec<Property>);

impl Properties {
    /// The first property whose relaxed key satisfies `want`.
    pub fn find(&self, want: impl Fn(&str) -> bool) -> Option<&Property> {
        self.0.iter().find(|p| want(&p.key))
    }

    /// The property with exactly this relaxed key.
    pub fn get(&self, key: &str) -> Option<&Property> {
        self.find(|k| k == key)
    }

    fn push(&mut self, key: &str, value: &str, origin: String) {
        self.0.push(Property {
            key: relaxed(key),
            value: value.to_string(),
            origin,
        });
    }

    /// Collects the properties of every container of `w`, following ConfigMap references
    /// that the input holds.
    pub fn of(w: &Workload<'_>, index: &Index<'_>) -> Self {
        let mut props = Self::default();
        let config_map = |name: &str| {
            index
                .get(w.namespace, "ConfigMap", name)
                .and_then(|cm| cm.doc.get("data"))
        };
        let containers = w
            .pod_spec
            .get("containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        for c in containers {
            for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
                let Some(name) = e.get("name").and_then(Value::as_str) else {
                    continue;
                };
                if let Some(v) = e.get("value").and_then(Value::as_str) {
                    props.push(name, v, format!("env {name}"));
                } else if let Some(r) = e.pointer("/valueFrom/configMapKeyRef") {
                    let cm = r.get("name").and_then(Value::as_str).unwrap_or_default();
                    let key = r.get("key").and_then(Value::as_str).unwrap_or_default();
                    if let Some(v) = config_map(cm).and_then(|d| d.get(key)?.as_str()) {
                        props.push(name, v, format!("env {name} from ConfigMap {cm} key {key}"));
                    }
                }
            }
            for source in c
                .get("envFrom")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(cm) = source.pointer("/configMapRef/name").and_then(Value::as_str) else {
                    continue;
                };
                let prefix = source.get("prefix").and_then(Value::as_str).unwrap_or("");
                if let Some(Value::Object(data)) = config_map(cm) {
                    for (k, v) in data {
                        if let Some(v) = v.as_str() {
                            let name = format!("{prefix}{k}");
                            props.push(&name, v, format!("envFrom ConfigMap {cm} key {k}"));
                        }
                    }
                }
            }
            let words = ["command", "args"]
                .iter()
                .filter_map(|k| c.get(*k).and_then(Value::as_array))
                .flatten()
                .filter_map(Value::as_str);
            for word in words {
                if let Some((k, v)) = word.strip_prefix("--").and_then(|w| w.split_once('=')) {
                    props.push(k, v, format!("argument --{k}"));
                }
            }
        }
        let volumes = w
            .pod_spec
            .get("volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        for v in volumes {
            let Some(cm) = v.pointer("/configMap/name").and_then(Value::as_str) else {
                continue;
            };
            let Some(Value::Object(data)) = config_map(cm) else {
                continue;
            };
            for (file, text) in data {
                if let Some(text) = text.as_str() {
                    props.read_file(cm, file, text);
                }
            }
        }
        props
    }

    /// Reads a Spring config file mounted from ConfigMap `cm`.
    fn read_file(&mut self, cm: &str, file: &str, text: &str) {
        let origin = |key: &str| format!("ConfigMap {cm} file {file}: {key}");
        if file.ends_with(".properties") {
            for line in text.lines().map(str::trim) {
                if line.starts_with('#') || line.starts_with('!') {
                    continue;
                }
                if let Some((k, v)) = line.split_once(['=', ':']) {
                    let (k, v) = (k.trim(), v.trim());
                    self.push(k, v, origin(k));
                }
            }
        } else if file.ends_with(".yml") || file.ends_with(".yaml") {
            // A file that does not parse is the app's problem at start-up, not ours: it
            // simply contributes no properties.
            let docs: Vec<Value> = serde_saphyr::from_multiple(text).unwrap_or_default();
            for doc in &docs {
                let mut flat = Vec::new();
                flatten("", doc, &mut flat);
                for (k, v) in flat {
                    self.push(&k, &v, origin(&k));
                }
            }
        }
    }
}

/// Flattens nested YAML maps into dotted keys, as Spring does.
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, child, out);
            }
        }
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        Value::Number(n) => out.push((prefix.to_string(), n.to_string())),
        Value::Bool(b) => out.push((prefix.to_string(), b.to_string())),
        Value::Array(_) | Value::Null => {}
    }
}
