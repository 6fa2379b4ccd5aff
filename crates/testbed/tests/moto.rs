//! moto with quiesce's lifecycle-hook extension behaves like AWS, checked through boto3
//! (`tests/moto/selfcheck.py`), and its introspection endpoint reports what happened.

use std::path::Path;
use std::process::Command;

use quiesce_testbed::moto::Moto;

#[test]
fn lifecycle_hooks_behave_like_aws() {
    let moto = Moto::start().expect("moto starts (scripts/test --setup installs it)");
    let selfcheck = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/moto/selfcheck.py");
    let out = Command::new("python3")
        .arg(&selfcheck)
        .args(["--endpoint", moto.url()])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "selfcheck failed ({}):\n--- stdout\n{}\n--- stderr\n{}\n--- moto log\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        moto.log_tail()
    );

    let actions = moto.lifecycle_actions().expect("introspection answers");
    let by_api: Vec<_> = actions
        .iter()
        .filter(|a| a["completedBy"] == "api" && a["result"] == "CONTINUE")
        .collect();
    assert!(
        !by_api.is_empty() && by_api.iter().all(|a| a["completions"] == 1),
        "every CONTINUE by the API is recorded once: {actions:#?}"
    );
    assert!(
        actions
            .iter()
            .any(|a| a["completedBy"] == "timeout" && a["completions"] == 0),
        "the timeout applied DefaultResult: {actions:#?}"
    );
}
