//! The timing model behind `quiesce audit`: how long a pod must keep serving after it is told
//! to stop, because every service-discovery stack in front of it learns of its removal late.
//!
//! Each stack contributes the lag between "endpoint removed" and "no client sends new requests
//! here"; the needed preStop delay is the slowest stack's lag plus the longest request, and the
//! smallest safe `terminationGracePeriodSeconds` is that delay plus the app's own shutdown.

use std::time::Duration;

/// A service-discovery stack a workload sits behind; each removes an endpoint with its own lag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    /// In-cluster Services through kube-proxy (iptables/ipvs).
    KubeProxy,
    /// AWS Application Load Balancer (AWS Load Balancer Controller, target type ip).
    Alb,
    /// AWS Network Load Balancer.
    Nlb,
    /// Netflix Eureka with client-side Ribbon/LoadBalancer caches.
    Eureka,
    /// Istio sidecars (Envoy).
    Istio,
    /// Linkerd proxies.
    Linkerd,
}

impl std::str::FromStr for Stack {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "kube-proxy" => Self::KubeProxy,
            "alb" => Self::Alb,
            "nlb" => Self::Nlb,
            "eureka" => Self::Eureka,
            "istio" => Self::Istio,
            "linkerd" => Self::Linkerd,
            other => {
                return Err(format!(
                    "unknown discovery stack {other:?}: expected one of kube-proxy, alb, nlb, eureka, istio, linkerd"
                ));
            }
        })
    }
}

/// One line of a budget, with where its number comes from, so a reader can check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// What this time is spent on.
    pub what: &'static str,
    /// How long it takes in the default configuration.
    pub duration: Duration,
    /// The documentation or code that sets the default.
    pub source: &'static str,
}

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// kube-proxy applies EndpointSlice changes no sooner than `--iptables-min-sync-period`
/// (default 1s, kubernetes pkg/proxy/apis/config/v1alpha1/defaults.go); the EndpointSlice
/// controller batches updates by `--endpointslice-updates-batch-period` (default 0) and the
/// watch adds about a second under load (kubernetes.io/docs/reference/command-line-tools-reference/kube-proxy).
const KUBE_PROXY: &[Term] = &[
    Term {
        what: "EndpointSlice propagation to every node",
        duration: secs(1),
        source: "kube-controller-manager endpointslice controller, watch latency",
    },
    Term {
        what: "kube-proxy iptables min sync period",
        duration: secs(1),
        source: "kube-proxy --iptables-min-sync-period default 1s (pkg/proxy/apis/config/v1alpha1/defaults.go)",
    },
];

/// ALB target groups default to HealthCheckIntervalSeconds 15 and UnhealthyThresholdCount 2
/// (docs.aws.amazon.com/elasticloadbalancing/latest/application/target-group-health-checks.html);
/// deregistration reaches the load balancer nodes only after the controller reconciles.
const ALB: &[Term] = &[
    Term {
        what: "AWS Load Balancer Controller deregisters the target",
        duration: secs(5),
        source: "aws-load-balancer-controller pod readiness gate docs (reconcile after EndpointSlice change)",
    },
    Term {
        what: "ALB health checks (interval 15s x unhealthy threshold 2)",
        duration: secs(30),
        source: "AWS ALB target group health check defaults",
    },
];

/// NLB target groups in IP mode keep routing to a deregistered target for about two minutes
/// whatever the deregistration delay says: measured with raw TCP in
/// aws-load-balancer-controller issue #2366 and seen again in #3270 (5s delay, ~2 min of
/// traffic) — research/graceful-termination-landscape.md §3.1.
const NLB: &[Term] = &[
    Term {
        what: "AWS Load Balancer Controller deregisters the target",
        duration: secs(5),
        source: "aws-load-balancer-controller reconcile after EndpointSlice change",
    },
    Term {
        what: "NLB stops routing to the deregistered target (measured ~2 min in IP mode)",
        duration: secs(120),
        source: "aws-load-balancer-controller issues #2366 and #3270",
    },
];

/// Eureka's three 30s caches, one after the other (seed 001; research/graceful-termination-landscape.md).
const EUREKA: &[Term] = &[
    Term {
        what: "Eureka server read-only response cache refresh",
        duration: secs(30),
        source: "eureka.server.responseCacheUpdateIntervalMs default 30000 (Netflix/eureka DefaultEurekaServerConfig)",
    },
    Term {
        what: "Eureka client registry fetch",
        duration: secs(30),
        source: "eureka.client.registryFetchIntervalSeconds default 30 (Netflix/eureka DefaultEurekaClientConfig)",
    },
    Term {
        what: "Ribbon / Spring Cloud LoadBalancer server list refresh",
        duration: secs(30),
        source: "ribbon.ServerListRefreshInterval default 30000 (Netflix/ribbon CommonClientConfigKey)",
    },
];

/// Istio's sidecars learn of endpoints from istiod (push debounce 100ms, PILOT_DEBOUNCE_MAX 10s)
/// and keep draining for `terminationDrainDuration` (default 5s, istio.io ProxyConfig reference).
const ISTIO: &[Term] = &[
    Term {
        what: "istiod push debounce (PILOT_DEBOUNCE_MAX)",
        duration: secs(10),
        source: "istio pilot/pkg/features PILOT_DEBOUNCE_MAX default 10s",
    },
    Term {
        what: "Envoy terminationDrainDuration",
        duration: secs(5),
        source: "istio.io ProxyConfig terminationDrainDuration default 5s",
    },
];

/// Linkerd's destination controller watches EndpointSlices and streams updates to the proxies
/// (linkerd.io/2/reference/architecture), so it lags like kube-proxy plus one stream hop.
const LINKERD: &[Term] = &[
    Term {
        what: "EndpointSlice propagation to the destination controller",
        duration: secs(1),
        source: "linkerd2 controller/api/destination endpoints watcher",
    },
    Term {
        what: "destination update streamed to every proxy",
        duration: secs(1),
        source: "linkerd2-proxy discovery stream (linkerd.io/2/reference/architecture)",
    },
];

impl Stack {
    /// The default lags of this stack, term by term.
    pub fn terms(self) -> &'static [Term] {
        match self {
            Self::KubeProxy => KUBE_PROXY,
            Self::Alb => ALB,
            Self::Nlb => NLB,
            Self::Eureka => EUREKA,
            Self::Istio => ISTIO,
            Self::Linkerd => LINKERD,
        }
    }

    /// How long after removal this stack still sends new requests.
    pub fn lag(self) -> Duration {
        self.terms().iter().map(|t| t.duration).sum()
    }
}

/// The computed budget of one workload: stacks run in parallel, so the slowest one counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// The terms of the slowest stack, then the longest request.
    pub terms: Vec<Term>,
    /// The preStop delay that covers every term.
    pub needed_prestop: Duration,
    /// The smallest `terminationGracePeriodSeconds` that lets the app shut down after the delay.
    pub needed_grace: Duration,
}

/// Computes the budget for a workload behind `stacks` whose longest request takes
/// `max_request` and whose own shutdown takes `shutdown`.
pub fn compute(stacks: &[Stack], max_request: Duration, shutdown: Duration) -> Budget {
    let slowest = stacks.iter().copied().max_by_key(|s| s.lag());
    let mut terms: Vec<Term> = slowest.map(|s| s.terms().to_vec()).unwrap_or_default();
    terms.push(Term {
        what: "longest request in flight when the last client switches",
        duration: max_request,
        source: "--max-request",
    });
    let needed_prestop = terms.iter().map(|t| t.duration).sum();
    Budget {
        terms,
        needed_prestop,
        needed_grace: needed_prestop + shutdown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eureka_needs_ninety_seconds_plus_the_longest_request() {
        let b = compute(&[Stack::Eureka], secs(5), secs(10));
        assert_eq!(b.needed_prestop, secs(95));
        assert_eq!(b.needed_grace, secs(105));
        assert_eq!(b.terms.len(), 4);
    }

    #[test]
    fn every_stack_has_a_positive_cited_lag() {
        for s in ["kube-proxy", "alb", "nlb", "eureka", "istio", "linkerd"] {
            let stack: Stack = s.parse().unwrap();
            assert!(stack.lag() > Duration::ZERO, "{s}");
            assert!(stack.terms().iter().all(|t| !t.source.is_empty()), "{s}");
        }
        assert_eq!(Stack::KubeProxy.lag(), secs(2));
        assert_eq!(Stack::Alb.lag(), secs(35));
        assert_eq!(Stack::Nlb.lag(), secs(125));
        assert_eq!(Stack::Istio.lag(), secs(15));
        assert_eq!(Stack::Linkerd.lag(), secs(2));
    }

    #[test]
    fn combined_stacks_take_the_slowest() {
        let b = compute(&[Stack::KubeProxy, Stack::Alb], secs(0), secs(0));
        assert_eq!(b.needed_prestop, secs(35));
    }

    #[test]
    fn unknown_stack_is_named_in_the_error() {
        let err = "consul".parse::<Stack>().unwrap_err();
        assert!(err.contains("consul") && err.contains("eureka"));
    }
}
