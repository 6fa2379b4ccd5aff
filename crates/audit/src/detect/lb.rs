//! AWS load balancers in front of a Service: NLBs from `type: LoadBalancer` Services, ALBs
//! from Ingresses of class `alb`, and target groups bound with `TargetGroupBinding`.
//!
//! What the pod must cover depends on the target type. With `ip` targets the pod itself is
//! registered and, when it terminates, deregistered. With `instance` targets the node is
//! registered: under `externalTrafficPolicy: Cluster` any node forwards to any pod and the node
//! stays a target until the drainer deregisters it, so the pod only waits out kube-proxy; under
//! `Local` the load balancer learns that the node has no ready pod left only when kube-proxy's
//! health-check node port starts failing and the health checks notice.

use std::borrow::Cow;
use std::time::Duration;

use quiesce_core::budget::Stack;
use serde_json::Value;

use super::{Detection, Term, stack_name};
use crate::index::{self, Index};
use crate::load::Object;
use crate::workload::Workload;

/// The AWS Load Balancer Controller's Service annotation prefix (its
/// docs/guide/service/annotations.md); the in-tree controller reads the same names.
const SVC: &str = "service.beta.kubernetes.io/aws-load-balancer-";
/// The AWS Load Balancer Controller's Ingress (and Service, for ALB) annotation prefix
/// (docs/guide/ingress/annotations.md).
const ALB: &str = "alb.ingress.kubernetes.io/";

/// ELBv2 keeps a deregistering target draining for `deregistration_delay.timeout_seconds`,
/// default 300 (Elastic Load Balancing target group attributes).
const DEFAULT_DEREGISTRATION_DELAY: u64 = 300;

/// Health-check defaults of whoever creates the target group, with where they are written.
struct HealthCheckDefaults {
    interval: u64,
    unhealthy_threshold: u64,
    source: &'static str,
}

/// aws-load-balancer-controller docs/guide/service/annotations.md: healthcheck-interval 10,
/// healthcheck-unhealthy-threshold 3.
const LBC_NLB: HealthCheckDefaults = HealthCheckDefaults {
    interval: 10,
    unhealthy_threshold: 3,
    source: "aws-load-balancer-controller Service annotation defaults: healthcheck-interval 10, healthcheck-unhealthy-threshold 3",
};
/// The in-tree controller (kubernetes/cloud-provider-aws pkg/providers/v1/aws_loadbalancer.go:
/// defaultNlbHealthCheckInterval 30, defaultNlbHealthCheckThreshold 3).
const IN_TREE_NLB: HealthCheckDefaults = HealthCheckDefaults {
    interval: 30,
    unhealthy_threshold: 3,
    source: "in-tree AWS cloud provider NLB defaults: defaultNlbHealthCheckInterval 30, defaultNlbHealthCheckThreshold 3",
};
/// aws-load-balancer-controller docs/guide/ingress/annotations.md:
/// healthcheck-interval-seconds 15, unhealthy-threshold-count 2.
const LBC_ALB: HealthCheckDefaults = HealthCheckDefaults {
    interval: 15,
    unhealthy_threshold: 2,
    source: "aws-load-balancer-controller Ingress annotation defaults: healthcheck-interval-seconds 15, unhealthy-threshold-count 2",
};
/// A target group made outside the cluster and bound with a TargetGroupBinding has ELBv2's own
/// defaults (CreateTargetGroup API reference: HealthCheckIntervalSeconds 30,
/// UnhealthyThresholdCount 2).
const ELBV2_API: HealthCheckDefaults = HealthCheckDefaults {
    interval: 30,
    unhealthy_threshold: 2,
    source: "ELBv2 CreateTargetGroup defaults: HealthCheckIntervalSeconds 30, UnhealthyThresholdCount 2",
};

/// One load balancer's target group for the Service, as far as the manifests describe it.
struct Target<'a> {
    stack: Stack,
    /// Why we think it is there.
    evidence: String,
    /// `ip` (the pod) or `instance` (the node).
    ip: bool,
    /// Objects whose annotations configure the target group, highest priority first.
    config: Vec<&'a Object>,
    /// The annotation prefix for health checks and target group attributes.
    prefix: &'static str,
    defaults: HealthCheckDefaults,
}

fn annotation<'a>(doc: &'a Value, key: &str) -> Option<&'a str> {
    doc.pointer("/metadata/annotations")?.get(key)?.as_str()
}

fn describe(o: &Object) -> String {
    let kind = o
        .doc
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    format!(
        "{kind} {}/{}",
        index::namespace(&o.doc),
        index::name(&o.doc)
    )
}

impl Target<'_> {
    /// An annotation from the first configuring object that has it, with its origin.
    fn setting(&self, key: &str) -> Option<(&str, String)> {
        self.config.iter().find_map(|o| {
            annotation(&o.doc, key).map(|v| (v, format!("annotation {key}={v} on {}", describe(o))))
        })
    }

    fn number(&self, key: &str) -> Option<(u64, String)> {
        let (v, origin) = self.setting(key)?;
        v.trim().parse().ok().map(|n| (n, origin))
    }

    /// `deregistration_delay.timeout_seconds` from the target-group-attributes annotation.
    fn deregistration_delay(&self) -> Option<(u64, String)> {
        let key = format!("{}target-group-attributes", self.prefix);
        let (attrs, origin) = self.setting(&key)?;
        attrs.split(',').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k.trim() == "deregistration_delay.timeout_seconds")
                .then(|| v.trim().parse().ok())
                .flatten()
                .map(|n| (n, origin.clone()))
        })
    }

    /// Health-check interval × unhealthy threshold, with the source of each number.
    fn health_check(&self) -> (u64, u64, String) {
        let (interval_key, threshold_key) = if self.prefix == ALB {
            ("healthcheck-interval-seconds", "unhealthy-threshold-count")
        } else {
            ("healthcheck-interval", "healthcheck-unhealthy-threshold")
        };
        let interval = self.number(&format!("{}{interval_key}", self.prefix));
        let threshold = self.number(&format!("{}{threshold_key}", self.prefix));
        let mut sources: Vec<String> = [&interval, &threshold]
            .into_iter()
            .flatten()
            .map(|(_, o)| o.clone())
            .collect();
        if interval.is_none() || threshold.is_none() {
            sources.push(self.defaults.source.to_string());
        }
        (
            interval.map_or(self.defaults.interval, |(n, _)| n),
            threshold.map_or(self.defaults.unhealthy_threshold, |(n, _)| n),
            sources.join("; "),
        )
    }

    fn into_detection(self, svc: &Object) -> Detection {
        let name = stack_name(self.stack);
        let local = svc
            .doc
            .pointer("/spec/externalTrafficPolicy")
            .and_then(Value::as_str)
            == Some("Local");
        let mut evidence = self.evidence.clone();
        let terms: Vec<Term> = if self.ip {
            evidence.push_str(", ip targets");
            self.ip_terms(&mut evidence)
        } else if local {
            evidence.push_str(", instance targets, externalTrafficPolicy Local");
            let (interval, threshold, source) = self.health_check();
            Stack::KubeProxy
                .terms()
                .iter()
                .map(Term::from)
                .chain([Term {
                    what: Cow::Owned(format!(
                        "{} health checks find the node without a ready pod (interval {interval}s x unhealthy threshold {threshold})",
                        name.to_uppercase()
                    )),
                    duration: Duration::from_secs(interval * threshold),
                    source: Cow::Owned(source),
                }])
                .collect()
        } else {
            evidence.push_str(
                ", instance targets, externalTrafficPolicy Cluster: the node is the target and the drainer deregisters it, so only kube-proxy's lag counts",
            );
            Stack::KubeProxy.terms().iter().map(Term::from).collect()
        };
        Detection {
            stack: self.stack,
            evidence,
            terms,
            ip_targets: self.ip,
        }
    }

    /// The terms of a pod registered by IP: the controller deregisters it, then the load
    /// balancer stops sending it new requests.
    fn ip_terms(&self, evidence: &mut String) -> Vec<Term> {
        let core = self.stack.terms();
        let delay = self.deregistration_delay();
        if self.stack == Stack::Nlb {
            // NLBs in IP mode keep routing to a deregistered target for about two minutes
            // whatever the delay says (aws-load-balancer-controller #2366, #3270): the core
            // terms already hold that measurement.
            if let Some((d, origin)) = &delay {
                evidence.push_str(&format!(
                    ", deregistration delay {d}s ({origin}) does not shorten the NLB's ~2 min"
                ));
            }
            return core.iter().map(Term::from).collect();
        }
        // An ALB stops sending new requests to a target once it is draining, and drops it
        // outright when the deregistration delay ends, so the wait is the health-check
        // window at most the delay (EclipseFdn/open-vsx.org #12422: a 25 s preStop under a
        // 30 s delay failed, 35 s held).
        let (interval, threshold, hc_source) = self.health_check();
        let window = interval * threshold;
        let (delay_s, delay_source) = delay.unwrap_or((
            DEFAULT_DEREGISTRATION_DELAY,
            "ELBv2 deregistration_delay.timeout_seconds default 300".to_string(),
        ));
        let (duration, what, source) = if delay_s < window {
            (
                delay_s,
                format!("ALB drops the draining target after its deregistration delay {delay_s}s"),
                delay_source,
            )
        } else {
            (
                window,
                format!(
                    "ALB stops routing to the draining target (health checks: interval {interval}s x unhealthy threshold {threshold})"
                ),
                hc_source,
            )
        };
        vec![
            Term::from(&core[0]),
            Term {
                what: Cow::Owned(what),
                duration: Duration::from_secs(duration),
                source: Cow::Owned(source),
            },
        ]
    }
}

/// An NLB from a `type: LoadBalancer` Service, if the AWS annotations or class say so.
fn service_target(svc: &Object) -> Option<Target<'_>> {
    let doc = &svc.doc;
    if doc.pointer("/spec/type").and_then(Value::as_str) != Some("LoadBalancer") {
        return None;
    }
    let class = doc
        .pointer("/spec/loadBalancerClass")
        .and_then(Value::as_str);
    let lb_type = annotation(doc, &format!("{SVC}type"));
    let target_type = annotation(doc, &format!("{SVC}nlb-target-type"));
    let what = describe(svc);
    let (evidence, ip, defaults) = match (class, lb_type) {
        (Some("service.k8s.aws/nlb"), _) => (
            format!("nlb: {what}, spec.loadBalancerClass service.k8s.aws/nlb"),
            target_type == Some("ip"),
            LBC_NLB,
        ),
        (Some(_), _) => return None,
        (None, Some(t @ ("external" | "nlb-ip"))) => (
            format!("nlb: {what}, annotation {SVC}type={t}"),
            t == "nlb-ip" || target_type == Some("ip"),
            LBC_NLB,
        ),
        // The legacy controller handles every other value (LBC docs, "Legacy Cloud Provider")
        // and registers instances only.
        (None, Some("nlb")) => (
            format!("nlb: {what}, annotation {SVC}type=nlb (in-tree controller)"),
            false,
            IN_TREE_NLB,
        ),
        _ => return None,
    };
    let evidence = match target_type {
        Some(t) => format!("{evidence}, annotation {SVC}nlb-target-type={t}"),
        None => evidence,
    };
    Some(Target {
        stack: Stack::Nlb,
        evidence,
        ip,
        config: vec![svc],
        prefix: SVC,
        defaults,
    })
}

/// Whether an Ingress belongs to the AWS Load Balancer Controller (its
/// docs/guide/ingress/ingress_class.md), and how we know.
fn alb_class(ingress: &Object, index: &Index<'_>) -> Option<String> {
    if let Some(class) = ingress
        .doc
        .pointer("/spec/ingressClassName")
        .and_then(Value::as_str)
    {
        let controller = index
            .ingress_class(class)
            .and_then(|c| c.doc.pointer("/spec/controller")?.as_str());
        return match controller {
            Some("ingress.k8s.aws/alb") => Some(format!(
                "spec.ingressClassName {class} (IngressClass controller ingress.k8s.aws/alb)"
            )),
            None if class == "alb" => Some("spec.ingressClassName alb".into()),
            _ => None,
        };
    }
    (annotation(&ingress.doc, "kubernetes.io/ingress.class") == Some("alb"))
        .then(|| "annotation kubernetes.io/ingress.class=alb".into())
}

/// Whether an Ingress sends traffic to the Service named `svc` (networking.k8s.io/v1
/// `backend.service.name`, or v1beta1's `backend.serviceName`).
fn routes_to(ingress: &Value, svc: &str) -> bool {
    let backend_is = |b: &Value| {
        b.pointer("/service/name")
            .or_else(|| b.get("serviceName"))
            .and_then(Value::as_str)
            == Some(svc)
    };
    let default = ["/spec/defaultBackend", "/spec/backend"]
        .iter()
        .filter_map(|p| ingress.pointer(p))
        .any(backend_is);
    default
        || ingress
            .pointer("/spec/rules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| r.pointer("/http/paths")?.as_array())
            .flatten()
            .filter_map(|p| p.get("backend"))
            .any(backend_is)
}

/// ALBs from Ingresses of class alb that route to `svc`.
fn ingress_targets<'a>(svc: &'a Object, ns: &str, index: &Index<'a>) -> Vec<Target<'a>> {
    let name = index::name(&svc.doc);
    index
        .of(ns, "Ingress")
        .iter()
        .filter(|i| routes_to(&i.doc, name))
        .filter_map(|i| {
            let class = alb_class(i, index)?;
            // Annotations on the Service win over the Ingress's (LBC ingress annotations doc).
            let config = vec![svc, *i];
            let key = format!("{ALB}target-type");
            let target_type = config
                .iter()
                .find_map(|o| annotation(&o.doc, &key).map(|v| (v, describe(o))));
            let mut evidence = format!("alb: {} routes to {}, {class}", describe(i), describe(svc));
            if let Some((t, on)) = &target_type {
                evidence.push_str(&format!(", annotation {key}={t} on {on}"));
            }
            Some(Target {
                stack: Stack::Alb,
                evidence,
                ip: target_type.is_some_and(|(t, _)| t == "ip"),
                config,
                prefix: ALB,
                defaults: LBC_ALB,
            })
        })
        .collect()
}

/// Target groups bound to `svc` with a TargetGroupBinding (elbv2.k8s.aws). The manifest does
/// not say whether the target group belongs to an ALB or an NLB, so the NLB's longer lag is
/// assumed; without `targetType` the controller's webhook asks AWS, so `ip` (the pod must
/// cover its own deregistration) is assumed.
fn binding_targets<'a>(svc: &'a Object, ns: &str, index: &Index<'a>) -> Vec<Target<'a>> {
    let name = index::name(&svc.doc);
    index
        .of(ns, "TargetGroupBinding")
        .iter()
        .filter(|b| b.doc.pointer("/spec/serviceRef/name").and_then(Value::as_str) == Some(name))
        .map(|b| {
            let target_type = b.doc.pointer("/spec/targetType").and_then(Value::as_str);
            let evidence = format!(
                "nlb: {} binds {} (load balancer type not in the manifest: the NLB's longer lag is assumed), {}",
                describe(b),
                describe(svc),
                target_type.map_or("targetType not set: ip assumed".to_string(), |t| {
                    format!("spec.targetType {t}")
                })
            );
            Target {
                stack: Stack::Nlb,
                evidence,
                ip: target_type.is_none_or(|t| t == "ip"),
                config: vec![*b],
                prefix: SVC,
                defaults: ELBV2_API,
            }
        })
        .collect()
}

/// Every load balancer in front of `svc`, one of the Services selecting `w`.
pub fn detect<'a>(w: &Workload<'a>, svc: &'a Object, index: &Index<'a>) -> Vec<Detection> {
    service_target(svc)
        .into_iter()
        .chain(ingress_targets(svc, w.namespace, index))
        .chain(binding_targets(svc, w.namespace, index))
        .map(|t| t.into_detection(svc))
        .collect()
}
