//! Stack detection on real public manifests (tests/fixtures/SOURCES.md): each workload gets
//! the budget of the stacks in front of it without `--stack`, and each finding names what in
//! the manifests showed the stack.

mod common;

use common::{detect_text, finding, fixture_text, opts, rules, run_files};
use quiesce_audit::Finding;
use quiesce_core::budget::Stack;

/// The finding of `rule` for `workload`, which must ask for a preStop of `needed`.
fn budget(findings: &[Finding], rule: &str, workload: &str, needed: &str) -> Finding {
    let f = finding(findings, rule, workload).clone();
    assert!(
        f.message.contains(&format!("needed {needed} = ")),
        "{}",
        f.message
    );
    f
}

fn evidence_mentions(f: &Finding, text: &str) -> bool {
    f.evidence.iter().any(|e| e.contains(text))
}

const STORE: &str = "Deployment jhipster/store";
const NGINX: &str = "Deployment ingress-nginx/ingress-nginx-controller";

#[test]
fn the_jhipster_store_gets_the_eureka_budget_without_a_service_or_stack() {
    let findings = run_files(&["jhipster-store-deployment.yml"], &opts(&[]));
    assert_eq!(
        rules(&findings),
        ["single-replica", "no-prestop-delay", "grace-too-short"]
    );
    let f = budget(&findings, "no-prestop-delay", STORE, "1m 35s");
    assert!(
        evidence_mentions(&f, "eureka: env EUREKA_CLIENT_SERVICE_URL_DEFAULTZONE"),
        "{:?}",
        f.evidence
    );
}

#[test]
fn eureka_from_an_envfrom_config_map_reads_its_cache_settings() {
    let findings = run_files(&["eureka-envfrom.yaml"], &opts(&[]));
    assert_eq!(rules(&findings), ["prestop-too-short"]);
    let f = &findings[0];
    // 30 s server cache + 10 s registry fetch + 5 s SCLB cache + 5 s longest request.
    assert!(f.message.contains("needed 50s"), "{}", f.message);
    assert!(
        f.message
            .contains("EUREKA_CLIENT_REGISTRYFETCHINTERVALSECONDS = 10")
            && f.message
                .contains("SPRING_CLOUD_LOADBALANCER_CACHE_TTL = 5s"),
        "{}",
        f.message
    );
    assert!(evidence_mentions(f, "envFrom ConfigMap orders-discovery"));

    let fixed = fixture_text("eureka-envfrom.yaml").replace("seconds: 30", "seconds: 50");
    assert!(detect_text(&fixed).is_empty(), "{:#?}", detect_text(&fixed));

    let off = fixture_text("eureka-envfrom.yaml").replace(
        "  SPRING_CLOUD_LOADBALANCER_CACHE_TTL: 5s",
        "  SPRING_CLOUD_LOADBALANCER_CACHE_TTL: 5s\n  EUREKA_CLIENT_ENABLED: \"false\"",
    );
    assert!(detect_text(&off).is_empty(), "registration switched off");
}

#[test]
fn eureka_in_a_mounted_application_yml_is_found() {
    let text = fixture_text("eureka-envfrom.yaml")
        .replace(
            "  EUREKA_CLIENT_SERVICEURL_DEFAULTZONE: http://eureka.shop.svc.cluster.local:8761/eureka/\n  EUREKA_CLIENT_REGISTRYFETCHINTERVALSECONDS: \"10\"\n  SPRING_CLOUD_LOADBALANCER_CACHE_TTL: 5s\n",
            "  application.yml: |\n    eureka:\n      client:\n        service-url:\n          defaultZone: http://eureka:8761/eureka/\n",
        )
        .replace(
            "          envFrom: [{configMapRef: {name: orders-discovery}}]\n",
            "          volumeMounts: [{name: config, mountPath: /config}]\n",
        )
        .replace(
            "          lifecycle: {preStop: {sleep: {seconds: 30}}}\n",
            "          lifecycle: {preStop: {sleep: {seconds: 30}}}\n      volumes: [{name: config, configMap: {name: orders-discovery}}]\n",
        );
    let findings = detect_text(&text);
    let f = budget(
        &findings,
        "prestop-too-short",
        "Deployment shop/orders",
        "1m 35s",
    );
    assert!(
        evidence_mentions(
            &f,
            "file application.yml: eureka.client.service-url.defaultZone"
        ),
        "{:?}",
        f.evidence
    );
}

#[test]
fn the_ingress_nginx_nlb_with_local_traffic_gets_the_health_check_term() {
    let findings = run_files(&["ingress-nginx-aws-deploy.yaml"], &opts(&[]));
    // kube-proxy 2 s + in-tree NLB health checks 30 s x 3 + 5 s longest request.
    let f = budget(&findings, "no-prestop-delay", NGINX, "1m 37s");
    assert!(
        f.message.contains("interval 30s x unhealthy threshold 3"),
        "{}",
        f.message
    );
    assert!(
        f.evidence[0].starts_with(
            "nlb: Service ingress-nginx/ingress-nginx-controller, annotation service.beta.kubernetes.io/aws-load-balancer-type=nlb"
        ) && f.evidence[0].contains("externalTrafficPolicy Local"),
        "{:?}",
        f.evidence
    );

    let tuned = fixture_text("ingress-nginx-aws-deploy.yaml").replace(
        "    service.beta.kubernetes.io/aws-load-balancer-type: nlb\n",
        "    service.beta.kubernetes.io/aws-load-balancer-type: nlb\n    service.beta.kubernetes.io/aws-load-balancer-healthcheck-interval: \"10\"\n    service.beta.kubernetes.io/aws-load-balancer-healthcheck-unhealthy-threshold: \"2\"\n",
    );
    let f = budget(&detect_text(&tuned), "no-prestop-delay", NGINX, "27s");
    assert!(
        f.message.contains(
            "annotation service.beta.kubernetes.io/aws-load-balancer-healthcheck-interval=10"
        ),
        "{}",
        f.message
    );
}

#[test]
fn instance_targets_with_cluster_traffic_leave_the_pod_only_kube_proxy() {
    let cluster = fixture_text("ingress-nginx-aws-deploy.yaml").replace(
        "externalTrafficPolicy: Local",
        "externalTrafficPolicy: Cluster",
    );
    let findings = detect_text(&cluster);
    let f = budget(&findings, "no-prestop-delay", NGINX, "7s");
    assert!(
        evidence_mentions(&f, "the node is the target"),
        "{:?}",
        f.evidence
    );
}

#[test]
fn nlb_ip_targets_need_the_measured_two_minutes() {
    let ip = fixture_text("ingress-nginx-aws-deploy.yaml").replace(
        "    service.beta.kubernetes.io/aws-load-balancer-type: nlb\n",
        "    service.beta.kubernetes.io/aws-load-balancer-type: external\n    service.beta.kubernetes.io/aws-load-balancer-nlb-target-type: ip\n    service.beta.kubernetes.io/aws-load-balancer-target-group-attributes: deregistration_delay.timeout_seconds=30\n",
    );
    let f = budget(&detect_text(&ip), "no-prestop-delay", NGINX, "2m 10s");
    assert!(
        evidence_mentions(&f, "deregistration delay 30s"),
        "{:?}",
        f.evidence
    );
}

#[test]
fn bookinfo_in_an_injected_namespace_gets_the_mesh_budget() {
    let details = "Deployment default/details-v1";
    let plain = run_files(&["istio-bookinfo.yaml"], &opts(&[]));
    budget(&plain, "no-prestop-delay", details, "7s");

    for (namespace, label) in [
        (
            "namespace-default-istio-injection.yaml",
            "istio-injection=enabled",
        ),
        ("namespace-default-istio-rev.yaml", "istio.io/rev=canary"),
    ] {
        let meshed = run_files(&["istio-bookinfo.yaml", namespace], &opts(&[]));
        let f = budget(&meshed, "no-prestop-delay", details, "20s");
        assert!(
            f.evidence[0] == format!("istio: Namespace default, label {label}"),
            "{:?}",
            f.evidence
        );
    }

    let opted_out = fixture_text("istio-bookinfo.yaml").replace(
        "        app: details\n        version: v1\n",
        "        app: details\n        version: v1\n        sidecar.istio.io/inject: \"false\"\n",
    ) + &fixture_text("namespace-default-istio-injection.yaml")
        .replace("# ", "---\n# ");
    budget(&detect_text(&opted_out), "no-prestop-delay", details, "7s");
}

#[test]
fn a_linkerd_annotation_brings_the_linkerd_budget() {
    let text = fixture_text("targetgroupbinding.yaml").replace(
        "    metadata: {labels: {app: checkout}}",
        "    metadata: {labels: {app: checkout}, annotations: {linkerd.io/inject: enabled}}",
    );
    let f = detect_text(&text)
        .into_iter()
        .find(|f| f.rule == "prestop-too-short")
        .expect("the NLB budget still applies");
    assert!(
        evidence_mentions(
            &f,
            "linkerd: shop/checkout, annotation linkerd.io/inject=enabled"
        ),
        "{:?}",
        f.evidence
    );
}

#[test]
fn an_alb_ingress_with_ip_targets_gets_the_alb_budget() {
    let workload = "Deployment game-2048/deployment-2048";
    let findings = run_files(&["alb-2048-full.yaml"], &opts(&[]));
    // Controller 5 s + health checks 15 s x 2 + 5 s longest request.
    let f = budget(&findings, "no-prestop-delay", workload, "40s");
    assert!(
        f.evidence[0].starts_with(
            "alb: Ingress game-2048/ingress-2048 routes to Service game-2048/service-2048, spec.ingressClassName alb"
        ) && f.evidence[0].contains("ip targets"),
        "{:?}",
        f.evidence
    );

    let short_delay = fixture_text("alb-2048-full.yaml").replace(
        "    alb.ingress.kubernetes.io/target-type: ip\n",
        "    alb.ingress.kubernetes.io/target-type: ip\n    alb.ingress.kubernetes.io/target-group-attributes: deregistration_delay.timeout_seconds=10\n",
    );
    let f = budget(
        &detect_text(&short_delay),
        "no-prestop-delay",
        workload,
        "20s",
    );
    assert!(
        f.message.contains("deregistration delay 10s"),
        "{}",
        f.message
    );

    let legacy = fixture_text("alb-2048-full.yaml")
        .replace("  ingressClassName: alb\n", "")
        .replace(
            "    alb.ingress.kubernetes.io/scheme: internet-facing\n",
            "    kubernetes.io/ingress.class: alb\n    alb.ingress.kubernetes.io/scheme: internet-facing\n",
        );
    let f = budget(&detect_text(&legacy), "no-prestop-delay", workload, "40s");
    assert!(
        evidence_mentions(&f, "annotation kubernetes.io/ingress.class=alb"),
        "{:?}",
        f.evidence
    );

    let other_class = fixture_text("alb-2048-full.yaml")
        .replace("ingressClassName: alb", "ingressClassName: nginx");
    budget(
        &detect_text(&other_class),
        "no-prestop-delay",
        workload,
        "7s",
    );
}

#[test]
fn a_target_group_binding_brings_the_load_balancer_budget() {
    let findings = run_files(&["targetgroupbinding.yaml"], &opts(&[]));
    let f = budget(
        &findings,
        "prestop-too-short",
        "Deployment shop/checkout",
        "2m 10s",
    );
    assert!(
        f.evidence[0]
            .starts_with("nlb: TargetGroupBinding shop/checkout binds Service shop/checkout"),
        "{:?}",
        f.evidence
    );
}

#[test]
fn stack_and_annotation_still_override_detection() {
    let findings = run_files(
        &["jhipster-store-deployment.yml"],
        &opts(&[Stack::KubeProxy]),
    );
    let f = budget(&findings, "no-prestop-delay", STORE, "7s");
    assert_eq!(f.evidence, ["kube-proxy: --stack"]);

    let annotated = fixture_text("jhipster-store-deployment.yml").replace(
        "  namespace: jhipster\n",
        "  namespace: jhipster\n  annotations: {quiesce.io/discovery: istio}\n",
    );
    let findings = detect_text(&annotated);
    budget(&findings, "no-prestop-delay", STORE, "20s");

    let typo = annotated.replace(
        "quiesce.io/discovery: istio",
        "quiesce.io/discovery: consul",
    );
    let findings = detect_text(&typo);
    let f = finding(&findings, "invalid-annotation", STORE);
    assert!(
        f.message.contains("consul") && f.message.contains("eureka"),
        "{}",
        f.message
    );
}
