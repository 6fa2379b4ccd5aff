//! The Helm engine helper renders and lints the repository's chart offline, and reports a
//! template that fails instead of returning half a render.

use quiesce_testbed::helm;
use serde_json::json;

#[test]
fn the_chart_renders_and_lints_clean() {
    let rendered = helm::template(&helm::chart_dir(), "quiesce", "kube-system", &json!(null))
        .expect("the chart renders with its defaults");
    let objects = rendered.objects().unwrap();
    let deployment = objects
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("a Deployment");
    assert_eq!(deployment["metadata"]["namespace"], "kube-system");
    assert!(rendered.stream().unwrap().matches("\n---\n").count() + 1 >= objects.len());
    let lint = helm::lint(&helm::chart_dir(), "kube-system", &json!(null)).unwrap();
    let problems: Vec<_> = lint.iter().filter(|m| !m.starts_with("info ")).collect();
    assert!(problems.is_empty(), "helm lint --strict: {problems:?}");
}

#[test]
fn a_failing_template_is_an_error() {
    // A string where the chart expects the image map: the deployment template cannot render.
    let err = helm::template(
        &helm::chart_dir(),
        "quiesce",
        "kube-system",
        &json!({"image": "nope"}),
    )
    .expect_err("a string image does not render");
    assert!(err.to_string().contains("image.repository"), "{err}");
}
