//! Which service-discovery stacks sit in front of a workload, read from the manifests, each
//! with the evidence that put it there and the timing terms it adds to the preStop budget.
//!
//! Stacks run side by side (a pod can be behind a Service, an NLB and Eureka at once), so
//! the slowest one sets the budget; every detection is still reported so a reader can see
//! what was found and why.

mod eureka;
mod lb;
mod mesh;
mod spring;

use std::borrow::Cow;
use std::time::Duration;

use quiesce_core::budget::{self, Stack};

use serde_json::Value;

use crate::index::{self, Index};
use crate::load::Object;
use crate::workload::Workload;

/// One line of a budget, with where its number comes from. Unlike the core's fixed
/// [`budget::Term`], the number and its source may come from the manifest (an annotation, an
/// env var), so the texts are owned when they have to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// What this time is spent on.
    pub what: Cow<'static, str>,
    /// How long it takes.
    pub duration: Duration,
    /// The default's documentation, or the manifest field that set it.
    pub source: Cow<'static, str>,
}

impl From<&budget::Term> for Term {
    fn from(t: &budget::Term) -> Self {
        Self {
            what: Cow::Borrowed(t.what),
            duration: t.duration,
            source: Cow::Borrowed(t.source),
        }
    }
}

/// One stack found in front of a workload.
#[derive(Debug, Clone)]
pub struct Detection {
    /// The stack.
    pub stack: Stack,
    /// What in the manifests shows it, e.g. `nlb: Service ns/x, annotation …=nlb`.
    pub evidence: String,
    /// How long after the pod starts terminating this stack still sends it new requests.
    pub terms: Vec<Term>,
    /// Whether a load balancer registers the pod itself (target type `ip`): only then can its
    /// readiness gate hold a rollout until the new targets are healthy.
    pub ip_targets: bool,
}

impl Detection {
    /// A detection with the stack's default terms from the core timing model.
    pub(crate) fn with_default_terms(stack: Stack, evidence: String) -> Self {
        Self {
            stack,
            evidence,
            terms: stack.terms().iter().map(Term::from).collect(),
            ip_targets: false,
        }
    }

    /// The total lag of this stack.
    pub fn lag(&self) -> Duration {
        self.terms.iter().map(|t| t.duration).sum()
    }
}

/// The name `--stack` and `quiesce.io/discovery` use for a stack.
pub fn stack_name(stack: Stack) -> &'static str {
    match stack {
        Stack::KubeProxy => "kube-proxy",
        Stack::Alb => "alb",
        Stack::Nlb => "nlb",
        Stack::Eureka => "eureka",
        Stack::Istio => "istio",
        Stack::Linkerd => "linkerd",
    }
}

/// The detection rules, for `--explain detection`: which stack, and what in the manifests
/// shows it.
pub const RULES: &[(&str, &str)] = &[
    (
        "kube-proxy",
        "a Service in the same namespace selects the pod labels, unless every port of it is named metrics or *-metrics (http-metrics, https-metrics): scrapers, not clients, use those, and a failed scrape of a terminating pod costs nothing",
    ),
    (
        "nlb",
        "a Service of type LoadBalancer with spec.loadBalancerClass service.k8s.aws/nlb, or annotation service.beta.kubernetes.io/aws-load-balancer-type nlb (in-tree controller, instance targets), nlb-ip (ip targets) or external (target type from service.beta.kubernetes.io/aws-load-balancer-nlb-target-type, default instance); a TargetGroupBinding naming the Service (the load balancer type is not in the manifest: the NLB's longer lag is assumed)",
    ),
    (
        "alb",
        "an Ingress of class alb (spec.ingressClassName alb, an IngressClass with controller ingress.k8s.aws/alb, or the legacy annotation kubernetes.io/ingress.class: alb) routing to a Service; target type from alb.ingress.kubernetes.io/target-type (default instance)",
    ),
    (
        "targets",
        "ip targets: the pod is deregistered and its preStop covers the deregistration (alb: health check interval x unhealthy threshold, at most the deregistration_delay.timeout_seconds of the target-group-attributes annotation; nlb: about 2 minutes whatever the delay). Instance targets with externalTrafficPolicy Cluster: the node is the target and the drainer deregisters it, so only kube-proxy's lag counts. Instance targets with externalTrafficPolicy Local: the load balancer learns the node has no ready pod only from its health check, so the pod serves for kube-proxy's lag plus interval x unhealthy threshold (annotations override the defaults)",
    ),
    (
        "istio",
        "pod label or annotation sidecar.istio.io/inject \"true\", or the pod's Namespace (when in the input) labelled istio-injection=enabled or istio.io/rev=<revision>; sidecar.istio.io/inject \"false\" and istio-injection=disabled switch it off",
    ),
    (
        "linkerd",
        "annotation linkerd.io/inject: enabled on the pod template or on its Namespace (label or annotation, when in the input); linkerd.io/inject: disabled on the pod switches it off",
    ),
    (
        "eureka",
        "the pod registers with Eureka: eureka.client.service-url.* set (EUREKA_CLIENT_SERVICE_URL_DEFAULTZONE, EUREKA_CLIENT_SERVICEURL_DEFAULTZONE, any relaxed spelling) in container env, a ConfigMap referenced by env or envFrom, a --key=value argument, or a .properties or .yml file in a mounted ConfigMap, unless eureka.client.enabled, eureka.client.register-with-eureka or spring.cloud.discovery.enabled is false. It needs the budget with or without a Service. Cache settings are read where present: eureka.client.registry-fetch-interval-seconds, spring.cloud.loadbalancer.cache.ttl / .enabled, <client>.ribbon.ServerListRefreshInterval",
    ),
    (
        "override",
        "--stack replaces the detected stacks of every workload that receives traffic; the annotation quiesce.io/discovery replaces them for one workload (and makes it count as receiving traffic)",
    ),
];

/// Whether `svc` may carry client traffic: not when every port is named as a metrics port
/// (`metrics`, or Prometheus Operator's and kube-prometheus' `*-metrics` such as
/// `http-metrics`). Only a scraper reads those, and a scrape that fails on a terminating pod
/// is one missed sample, so such a Service needs no preStop delay. An unnamed port may carry
/// anything.
fn carries_traffic(svc: &Object) -> bool {
    let ports = svc.doc.pointer("/spec/ports").and_then(Value::as_array);
    let metrics = |p: &Value| {
        p.get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| n == "metrics" || n.ends_with("-metrics"))
    };
    !ports.is_some_and(|ports| !ports.is_empty() && ports.iter().all(metrics))
}

/// Every stack detected in front of `w`; empty when nothing sends it traffic.
pub fn detect(w: &Workload<'_>, index: &Index<'_>) -> Vec<Detection> {
    let mut out = Vec::new();
    let services: Vec<&Object> = w
        .services
        .iter()
        .copied()
        .filter(|s| carries_traffic(s))
        .collect();
    if !services.is_empty() {
        let names: Vec<String> = services
            .iter()
            .map(|s| format!("{}/{}", w.namespace, index::name(&s.doc)))
            .collect();
        out.push(Detection::with_default_terms(
            Stack::KubeProxy,
            format!(
                "kube-proxy: Service {} select{} the pods",
                names.join(", "),
                if names.len() == 1 { "s" } else { "" }
            ),
        ));
        for svc in services {
            out.extend(lb::detect(w, svc, index));
        }
        out.extend(mesh::detect(w, index));
    }
    out.extend(eureka::detect(w, index));
    out
}
