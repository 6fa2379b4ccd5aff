//! Eureka: a Spring Cloud Netflix client registers the pod, and callers find it through three
//! caches one after the other (seed 001; research/graceful-termination-landscape.md). The pod
//! needs the budget whether or not a Service selects it.

use std::borrow::Cow;
use std::time::Duration;

use quiesce_core::budget::Stack;

use super::spring::{Properties, Property};
use super::{Detection, Term};
use crate::index::Index;
use crate::workload::Workload;

/// Where the pod's Eureka client is pointed at a server: `eureka.client.service-url.<zone>`
/// (Spring Cloud Netflix `EurekaClientConfigBean.serviceUrl`).
const SERVICE_URL: &str = "EUREKACLIENTSERVICEURL";

/// Settings that switch registration off although a server URL is set (Spring Cloud Netflix
/// `eureka.client.enabled`, `eureka.client.register-with-eureka`; Spring Cloud Commons
/// `spring.cloud.discovery.enabled`).
const OFF_SWITCHES: &[&str] = &[
    "EUREKACLIENTENABLED",
    "EUREKACLIENTREGISTERWITHEUREKA",
    "SPRINGCLOUDDISCOVERYENABLED",
];

fn seconds_term(base: &Term, p: &Property, duration: Duration) -> Term {
    Term {
        what: base.what.clone(),
        duration,
        source: Cow::Owned(format!("{} = {}", p.origin, p.value)),
    }
}

/// Spring Boot's `StringToDurationConverter`: a bare number is milliseconds unless the field
/// says otherwise; `35s`, `1m` carry their unit.
fn spring_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    text.parse::<u64>()
        .map(Duration::from_millis)
        .ok()
        .or_else(|| humantime::parse_duration(text).ok())
}

/// The client-side cache terms with the pod's own settings where it sets them. They are
/// the pod's client settings, read as the settings of its callers: apps of one system share
/// their Spring Cloud configuration far more often than not.
fn terms(props: &Properties) -> Vec<Term> {
    let mut terms: Vec<Term> = Stack::Eureka.terms().iter().map(Term::from).collect();
    // [1]: eureka.client.registryFetchIntervalSeconds, in seconds (default 30).
    if let Some(p) = props.get("EUREKACLIENTREGISTRYFETCHINTERVALSECONDS")
        && let Ok(s) = p.value.trim().parse::<u64>()
    {
        terms[1] = seconds_term(&terms[1], p, Duration::from_secs(s));
    }
    // [2]: Spring Cloud LoadBalancer's cache (spring.cloud.loadbalancer.cache.ttl, default
    // 35s, or off with .cache.enabled=false; spring-cloud-commons LoadBalancerCacheProperties),
    // else Ribbon's <client>.ribbon.ServerListRefreshInterval in milliseconds.
    let sclb_off = props
        .get("SPRINGCLOUDLOADBALANCERCACHEENABLED")
        .filter(|p| p.value.eq_ignore_ascii_case("false"));
    if let Some(p) = sclb_off {
        terms[2] = seconds_term(&terms[2], p, Duration::ZERO);
    } else if let Some(p) = props.get("SPRINGCLOUDLOADBALANCERCACHETTL")
        && let Some(d) = spring_duration(&p.value)
    {
        terms[2] = seconds_term(&terms[2], p, d);
    } else if let Some(p) = props.find(|k| k.ends_with("RIBBONSERVERLISTREFRESHINTERVAL"))
        && let Ok(ms) = p.value.trim().parse::<u64>()
    {
        terms[2] = seconds_term(&terms[2], p, Duration::from_millis(ms));
    }
    terms
}

/// The Eureka detection of `w`, when its pods register with a Eureka server.
pub fn detect(w: &Workload<'_>, index: &Index<'_>) -> Option<Detection> {
    let props = Properties::of(w, index);
    let url = props.find(|k| k.starts_with(SERVICE_URL))?;
    let switched_off = OFF_SWITCHES.iter().any(|k| {
        props
            .get(k)
            .is_some_and(|p| p.value.eq_ignore_ascii_case("false"))
    });
    if switched_off {
        return None;
    }
    Some(Detection {
        stack: Stack::Eureka,
        evidence: format!(
            "eureka: {} of {} sets the Eureka server",
            url.origin, w.name
        ),
        terms: terms(&props),
        ip_targets: false,
    })
}
