//! A decoded protobuf message as Kubernetes JSON.
//!
//! Field names in the Kubernetes protos are the JSON names. The differences from a plain
//! proto-to-JSON mapping are the types with a custom JSON form in upstream Go
//! (`IntOrString`, `Quantity`, `Time`, `MicroTime`, `Duration`, the raw-JSON holders, the
//! string-list wrappers), Go's inlined embedded structs (found through the OpenAPI schema of
//! the enclosing type, [`crate::api::openapi::properties`]), and Go's `omitempty`: gogo-protobuf writes every non-pointer field,
//! so an empty singular string or an empty `Time` is the Go zero value and is left out, as the
//! JSON encoder would leave it out.

use base64::Engine;
use k8s_openapi::jiff::Timestamp;
use prost_reflect::{DynamicMessage, Kind, MapKey, ReflectMessage, Value as Pb};
use serde_json::{Map, Value, json};

/// Seconds of Go's zero `time.Time` (year 1), which upstream writes for an unset time.
const GO_ZERO_TIME: i64 = -62_135_596_800;

/// A message as JSON.
pub fn message(msg: &DynamicMessage) -> Value {
    let name = msg.descriptor().full_name().to_string();
    let int = |field: &str| {
        msg.get_field_by_name(field)
            .map(|v| v.as_i64().or(v.as_i32().map(i64::from)).unwrap_or(0))
            .unwrap_or(0)
    };
    let text = |field: &str| {
        msg.get_field_by_name(field)
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    match name.as_str() {
        "apimachinery.pkg.util.intstr.IntOrString" => {
            if int("type") == 1 {
                json!(text("strVal"))
            } else {
                json!(int("intVal"))
            }
        }
        "apimachinery.pkg.api.resource.Quantity" => json!(text("string")),
        "apimachinery.pkg.apis.meta.v1.Time" | "apimachinery.pkg.apis.meta.v1.MicroTime" => time(
            msg,
            int("seconds"),
            int("nanos"),
            name.ends_with("MicroTime"),
        ),
        "apimachinery.pkg.apis.meta.v1.Duration" => json!(go_duration(int("duration"))),
        "apimachinery.pkg.runtime.RawExtension" => raw_json(msg, "raw"),
        "apimachinery.pkg.apis.meta.v1.FieldsV1" => raw_json(msg, "Raw"),
        "apimachinery.pkg.apis.meta.v1.Verbs"
        | "api.authentication.v1.ExtraValue"
        | "api.authorization.v1.ExtraValue" => msg
            .get_field_by_name("items")
            .map_or_else(|| json!([]), |v| value(&v)),
        _ => {
            let mut out = Map::new();
            let json_fields = crate::api::openapi::properties(&format!("io.k8s.{name}"));
            for (field, v) in msg.fields() {
                if matches!(v, Pb::String(s) if s.is_empty()) {
                    continue;
                }
                if let Kind::Message(m) = field.kind()
                    && is_time(m.full_name())
                    && v.as_message().is_some_and(|t| t.fields().next().is_none())
                {
                    continue;
                }
                let converted = value(v);
                match converted {
                    Value::Null => {}
                    // A Go struct embedded inline: its fields are the parent's in JSON.
                    Value::Object(inner)
                        if json_fields.is_some_and(|f| !f.contains_key(field.name())) =>
                    {
                        out.extend(inner);
                    }
                    converted => {
                        out.insert(field.name().to_string(), converted);
                    }
                }
            }
            Value::Object(out)
        }
    }
}

fn is_time(name: &str) -> bool {
    matches!(
        name,
        "apimachinery.pkg.apis.meta.v1.Time" | "apimachinery.pkg.apis.meta.v1.MicroTime"
    )
}

/// One field value.
fn value(v: &Pb) -> Value {
    match v {
        Pb::Bool(b) => json!(b),
        Pb::I32(n) => json!(n),
        Pb::I64(n) => json!(n),
        Pb::U32(n) => json!(n),
        Pb::U64(n) => json!(n),
        Pb::F32(n) => json!(n),
        Pb::F64(n) => json!(n),
        Pb::EnumNumber(n) => json!(n),
        Pb::String(s) => json!(s),
        Pb::Bytes(b) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        Pb::Message(m) => message(m),
        Pb::List(items) => Value::Array(items.iter().map(value).collect()),
        Pb::Map(entries) => {
            let mut out = Map::new();
            for (k, v) in entries {
                let key = match k {
                    MapKey::String(s) => s.clone(),
                    MapKey::Bool(b) => b.to_string(),
                    MapKey::I32(n) => n.to_string(),
                    MapKey::I64(n) => n.to_string(),
                    MapKey::U32(n) => n.to_string(),
                    MapKey::U64(n) => n.to_string(),
                };
                out.insert(key, value(v));
            }
            Value::Object(out)
        }
    }
}

/// `metav1.Time` is RFC 3339 in seconds, `MicroTime` in microseconds; Go's zero time is null.
fn time(msg: &DynamicMessage, seconds: i64, nanos: i64, micro: bool) -> Value {
    if msg.fields().next().is_none() || seconds <= GO_ZERO_TIME {
        return Value::Null;
    }
    let Ok(ts) = Timestamp::new(seconds, i32::try_from(nanos).unwrap_or(0)) else {
        return Value::Null;
    };
    let whole = ts.strftime("%Y-%m-%dT%H:%M:%S");
    if micro {
        json!(format!("{whole}.{:06}Z", nanos / 1000))
    } else {
        json!(format!("{whole}Z"))
    }
}

/// The raw-JSON holders (`RawExtension`, `FieldsV1`) carry the JSON text itself.
fn raw_json(msg: &DynamicMessage, field: &str) -> Value {
    msg.get_field_by_name(field)
        .and_then(|v| v.as_bytes().and_then(|b| serde_json::from_slice(b).ok()))
        .unwrap_or(Value::Null)
}

/// A count of `unit` with Go's trimmed decimal fraction: `1.5` for 1,500 of 1,000.
fn decimal(n: u64, unit: u64, digits: usize) -> String {
    let (whole, frac) = (n / unit, n % unit);
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:0digits$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// Go's `time.Duration.String()` (`1h0m0s`, `1m30.5s`, `250ms`), which is what
/// `metav1.Duration` marshals to.
fn go_duration(nanos: i64) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    let text = match n {
        0 => "0s".to_string(),
        1..1_000 => format!("{n}ns"),
        1_000..1_000_000 => format!("{}µs", decimal(n, 1_000, 3)),
        1_000_000..1_000_000_000 => format!("{}ms", decimal(n, 1_000_000, 6)),
        _ => {
            let (h, m) = (n / 3_600_000_000_000, (n / 60_000_000_000) % 60);
            let secs = decimal(n % 60_000_000_000, 1_000_000_000, 9);
            match (h, m) {
                (0, 0) => format!("{secs}s"),
                (0, m) => format!("{m}m{secs}s"),
                (h, m) => format!("{h}h{m}m{secs}s"),
            }
        }
    };
    format!("{sign}{text}")
}

#[cfg(test)]
mod tests {
    use super::go_duration;

    #[test]
    fn durations_read_as_go_prints_them() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(30_000_000_000), "30s");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(90_500_000_000), "1m30.5s");
        assert_eq!(go_duration(250_000_000), "250ms");
        assert_eq!(go_duration(-1_500), "-1.5µs");
    }
}
