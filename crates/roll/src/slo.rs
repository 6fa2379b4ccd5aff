//! The SLO gate's input: `--slo 'QUERY < N'` evaluated through Prometheus's HTTP API
//! (`GET /api/v1/query`, <https://prometheus.io/docs/prometheus/latest/querying/api/>), or any
//! other source of one number behind [`Slo`] (the lab's live failure count).

use std::future::Future;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;

/// One Prometheus query takes at most this long, connection included.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// How the value must compare with the threshold for the SLO to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Op {
    /// `<`
    #[serde(rename = "<")]
    Lt,
    /// `<=`
    #[serde(rename = "<=")]
    Le,
    /// `>`
    #[serde(rename = ">")]
    Gt,
    /// `>=`
    #[serde(rename = ">=")]
    Ge,
}

impl Op {
    fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

/// `QUERY OP NUMBER`, e.g. `sum(rate(http_requests_total{code=~"5.."}[1m])) < 0.5`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Objective {
    /// The PromQL query; it must give one number (a scalar, or a vector whose first sample
    /// is taken; an empty vector is 0, as `sum(rate(errors))` is when nothing failed).
    pub query: String,
    /// The comparison that must hold.
    pub op: Op,
    /// The threshold.
    pub threshold: f64,
}

/// Why an `--slo` text is no objective.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "--slo {0:?}: expected `QUERY < N` (or <=, >, >=) with a number on the right, e.g. 'sum(rate(http_requests_total{{code=~\"5..\"}}[1m])) < 0.5'"
)]
pub struct ObjectiveError(pub String);

impl std::str::FromStr for Objective {
    type Err = ObjectiveError;

    /// The last comparison whose right side is a number splits query and threshold, so
    /// comparisons and `=~` inside the query stay in it.
    fn from_str(text: &str) -> Result<Objective, ObjectiveError> {
        let bad = || ObjectiveError(text.to_string());
        let at = text.rfind(['<', '>']).ok_or_else(bad)?;
        let (op, rest) = match text[at + 1..].strip_prefix('=') {
            Some(rest) if text.as_bytes()[at] == b'<' => (Op::Le, rest),
            Some(rest) => (Op::Ge, rest),
            None if text.as_bytes()[at] == b'<' => (Op::Lt, &text[at + 1..]),
            None => (Op::Gt, &text[at + 1..]),
        };
        let threshold: f64 = rest.trim().parse().map_err(|_| bad())?;
        let query = text[..at].trim();
        if query.is_empty() || !threshold.is_finite() {
            return Err(bad());
        }
        Ok(Objective {
            query: query.to_string(),
            op,
            threshold,
        })
    }
}

impl std::fmt::Display for Objective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.query, self.op.as_str(), self.threshold)
    }
}

/// One evaluation of the gate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reading {
    /// What was evaluated (`query < threshold`).
    pub objective: String,
    /// The value found.
    pub value: f64,
    /// Whether the objective holds.
    pub ok: bool,
}

impl Reading {
    /// The reading of `value` against `objective`.
    pub fn of(objective: &Objective, value: f64) -> Reading {
        Reading {
            objective: objective.to_string(),
            value,
            ok: objective.op.holds(value, objective.threshold),
        }
    }
}

/// Why a gate could not be evaluated: the roll treats it as a breach (an SLO that cannot be
/// read is not known to hold).
#[derive(Debug, thiserror::Error)]
#[error("evaluating the SLO {objective}: {message}")]
pub struct SloError {
    /// The objective.
    pub objective: String,
    /// What went wrong.
    pub message: String,
}

/// A source of the gate's verdict.
pub trait Slo: Send + Sync {
    /// Evaluates the objective now.
    fn evaluate(&self) -> impl Future<Output = Result<Reading, SloError>> + Send;
}

/// An objective over Prometheus's HTTP API.
#[derive(Clone)]
pub struct Prometheus {
    base: String,
    objective: Objective,
    http: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<bytes::Bytes>>,
}

impl Prometheus {
    /// `objective` against the Prometheus at `base` (`http://prometheus:9090`).
    pub fn new(base: &str, objective: Objective) -> Result<Prometheus, SloError> {
        let fail = |message: String| SloError {
            objective: objective.to_string(),
            message,
        };
        let uri: http::Uri = base
            .parse()
            .map_err(|e| fail(format!("--slo-prometheus {base:?} is no URL: {e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(fail(format!(
                "--slo-prometheus {base:?}: expected an http:// or https:// URL"
            )));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(QUERY_TIMEOUT));
        connector.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| fail(format!("loading the system's root certificates: {e}")))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        Ok(Prometheus {
            base: base.trim_end_matches('/').to_string(),
            objective,
            http: Client::builder(TokioExecutor::new()).build(https),
        })
    }

    async fn query(&self) -> Result<f64, String> {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("query", &self.objective.query)
            .finish();
        let url = format!("{}/api/v1/query?{query}", self.base);
        let request = http::Request::get(url.as_str())
            .body(Full::default())
            .map_err(|e| e.to_string())?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("HTTP {status}, not the API's JSON: {e}"))?;
        if json["status"] != "success" {
            return Err(format!(
                "HTTP {status}: {} {}",
                json["errorType"].as_str().unwrap_or("error"),
                json["error"].as_str().unwrap_or("")
            ));
        }
        value_of(&json["data"])
    }
}

/// The number in a query's `data`: a scalar `[t, "v"]`, or the first sample of a vector
/// (`[{"value": [t, "v"]}]`; none is 0).
fn value_of(data: &serde_json::Value) -> Result<f64, String> {
    let sample = match data["resultType"].as_str() {
        Some("scalar") => &data["result"],
        Some("vector") => match data["result"].as_array().and_then(|r| r.first()) {
            Some(first) => &first["value"],
            None => return Ok(0.0),
        },
        other => {
            return Err(format!(
                "the query gives a {}, expected a scalar or a vector",
                other.unwrap_or("nothing")
            ));
        }
    };
    let text = sample[1]
        .as_str()
        .ok_or_else(|| format!("no sample value in {sample}"))?;
    text.parse::<f64>()
        .map_err(|e| format!("sample value {text:?}: {e}"))
}

impl Slo for Prometheus {
    async fn evaluate(&self) -> Result<Reading, SloError> {
        let fail = |message: String| SloError {
            objective: self.objective.to_string(),
            message,
        };
        match tokio::time::timeout(QUERY_TIMEOUT, self.query()).await {
            Ok(Ok(value)) => Ok(Reading::of(&self.objective, value)),
            Ok(Err(message)) => Err(fail(message)),
            Err(_) => Err(fail(format!("no answer within {QUERY_TIMEOUT:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_last_comparison_with_a_number() {
        let o: Objective = r#"sum(rate(http_requests_total{code=~"5.."}[1m])) < 0.5"#
            .parse()
            .unwrap();
        assert_eq!(
            o.query,
            r#"sum(rate(http_requests_total{code=~"5.."}[1m]))"#
        );
        assert_eq!((o.op, o.threshold), (Op::Lt, 0.5));
        let o: Objective = "up{job=\"a\"} > 0 >= 1".parse().unwrap();
        assert_eq!(
            (o.query.as_str(), o.op, o.threshold),
            ("up{job=\"a\"} > 0", Op::Ge, 1.0)
        );
        assert!("errors".parse::<Objective>().is_err());
        assert!("errors < lots".parse::<Objective>().is_err());
        assert!(" < 3".parse::<Objective>().is_err());
        let err = "x".parse::<Objective>().unwrap_err().to_string();
        assert!(err.contains("--slo") && err.contains("QUERY < N"), "{err}");
    }

    #[test]
    fn readings_compare() {
        let o: Objective = "e <= 2".parse().unwrap();
        assert!(Reading::of(&o, 2.0).ok);
        assert!(!Reading::of(&o, 2.1).ok);
    }

    #[test]
    fn values_from_the_api_shapes() {
        let v = serde_json::json!({"resultType": "vector", "result": [{"metric": {}, "value": [1.0, "0.25"]}]});
        assert_eq!(value_of(&v), Ok(0.25));
        let empty = serde_json::json!({"resultType": "vector", "result": []});
        assert_eq!(value_of(&empty), Ok(0.0));
        let scalar = serde_json::json!({"resultType": "scalar", "result": [1.0, "3"]});
        assert_eq!(value_of(&scalar), Ok(3.0));
        let matrix = serde_json::json!({"resultType": "matrix", "result": []});
        assert!(value_of(&matrix).unwrap_err().contains("matrix"));
    }
}
