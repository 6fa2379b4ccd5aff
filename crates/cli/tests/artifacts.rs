//! The shipped artifacts' recipes agree with what deploys them, checked without building:
//! the Dockerfile's final stages with the Helm chart (image name, tag, user, command), the
//! versions in the Dockerfile, the chart and the CHANGELOG with the crate's, and the Lambda
//! bundle's path with the SAM template's CodeUri. `scripts/image --check` and
//! `scripts/lambda-bundle --check` build the artifacts and check the built files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> serde_json::Value {
    serde_saphyr::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// One `FROM … AS name` stage of the Dockerfile: its base and its instructions, continuation
/// lines joined.
#[derive(Debug, Default)]
struct Stage {
    from: String,
    instructions: Vec<(String, String)>,
}

impl Stage {
    fn all(&self, instruction: &str) -> Vec<&str> {
        self.instructions
            .iter()
            .filter(|(i, _)| i == instruction)
            .map(|(_, rest)| rest.as_str())
            .collect()
    }

    fn one(&self, instruction: &str) -> &str {
        match self.all(instruction).as_slice() {
            [one] => one,
            other => panic!("expected one {instruction}, found {other:?}"),
        }
    }
}

/// The Dockerfile's global ARG defaults and its stages in order.
fn dockerfile() -> (BTreeMap<String, String>, Vec<(String, Stage)>) {
    let text = read("Dockerfile").replace("\\\n", " ");
    let mut args = BTreeMap::new();
    let mut stages: Vec<(String, Stage)> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (instruction, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim().to_string();
        match (instruction, stages.last_mut()) {
            ("FROM", _) => {
                let words: Vec<&str> = rest.split_whitespace().collect();
                let name = match words.as_slice() {
                    [_, as_, name] if as_.eq_ignore_ascii_case("as") => name.to_string(),
                    _ => panic!("every stage is named: FROM {rest}"),
                };
                let stage = Stage {
                    from: words[0].to_string(),
                    ..Stage::default()
                };
                stages.push((name, stage));
            }
            ("ARG", None) => {
                let (name, value) = rest.split_once('=').expect("global ARGs have defaults");
                args.insert(name.to_string(), value.to_string());
            }
            (_, Some((_, stage))) => stage.instructions.push((instruction.to_string(), rest)),
            (_, None) => panic!("{instruction} before the first FROM"),
        }
    }
    (args, stages)
}

fn stage<'a>(stages: &'a [(String, Stage)], name: &str) -> &'a Stage {
    &stages
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no stage {name}"))
        .1
}

/// A stage as the image it makes sees it: the instructions of its base stages first (a stage
/// `FROM` another inherits its user, labels and files), and the image it finally starts from.
fn flattened(stages: &[(String, Stage)], name: &str) -> Stage {
    let own = stage(stages, name);
    if !stages.iter().any(|(n, _)| *n == own.from) {
        return Stage {
            from: own.from.clone(),
            instructions: own.instructions.clone(),
        };
    }
    let mut base = flattened(stages, &own.from);
    base.instructions.extend(own.instructions.iter().cloned());
    base
}

/// `KEY VALUE` lines printed by a script's `--print`.
fn printed(script: &str) -> BTreeMap<String, String> {
    let out = Command::new(repo().join(script))
        .arg("--print")
        .output()
        .expect("the script runs");
    assert!(out.status.success(), "{script} --print: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `docker build .` gives the drainer the chart deploys: default target, the chart's command
/// as entrypoint, the chart's user, nothing but the build stage's files on scratch.
#[test]
fn the_dockerfile_builds_the_image_the_chart_runs() {
    let (args, stages) = dockerfile();
    let values = yaml("deploy/helm/quiesce/values.yaml");
    let user = format!(
        "{}:{}",
        values["podSecurityContext"]["runAsUser"], values["podSecurityContext"]["runAsGroup"]
    );
    assert_eq!(user, "65532:65532");
    let (last, _) = stages.last().expect("stages");
    assert_eq!(last, "drainer", "`docker build .` builds the last stage");

    let deployment = read("deploy/helm/quiesce/templates/deployment.yaml");
    let command = deployment
        .lines()
        .find_map(|l| l.trim().strip_prefix("command: "))
        .expect("the chart sets the container's command");
    for (name, entrypoint) in [("drainer", "/quiesce"), ("init", "/quiesce-init")] {
        let s = flattened(&stages, name);
        assert_eq!(
            s.from, "scratch",
            "{name}: nothing is pulled for the final stages"
        );
        assert_eq!(
            s.one("USER"),
            user,
            "{name}: the chart's runAsUser:runAsGroup"
        );
        assert_eq!(s.one("ENTRYPOINT"), format!("[\"{entrypoint}\"]"), "{name}");
        // scripts/image stands a directory in for the build stage: every file must come from it.
        for copy in s.all("COPY") {
            assert!(copy.starts_with("--from=build "), "{name}: COPY {copy}");
        }
        let labels = s.all("LABEL").join(" ");
        for key in ["title", "source", "version", "revision", "licenses"] {
            assert!(
                labels.contains(&format!("org.opencontainers.image.{key}=")),
                "{name}: no {key} label in {labels}"
            );
        }
    }
    assert_eq!(
        command, "[/quiesce]",
        "the chart runs the image's entrypoint"
    );
    assert_eq!(args["VERSION"], VERSION, "the Dockerfile's VERSION label");
    assert_eq!(stage(&stages, "build").from, "${RUST_IMAGE}");
    assert!(
        stage(&stages, "build")
            .one("RUN")
            .contains("build/stage.sh /out"),
        "the build stage runs the script scripts/image runs"
    );
}

/// The chart's default image (repository, tag or appVersion) is the one scripts/image names,
/// and every version says the crate's.
#[test]
fn the_chart_defaults_to_the_image_the_recipe_produces() {
    let values = yaml("deploy/helm/quiesce/values.yaml");
    let chart = yaml("deploy/helm/quiesce/Chart.yaml");
    assert_eq!(chart["appVersion"], VERSION);
    let tag = match values["image"]["tag"].as_str() {
        Some("") | None => chart["appVersion"].as_str().unwrap().to_string(),
        Some(tag) => tag.to_string(),
    };
    let repository = values["image"]["repository"].as_str().unwrap();
    let image = printed("scripts/image");
    assert_eq!(image["version"], VERSION);
    assert_eq!(image["drainer_ref"], format!("{repository}:{tag}"));
    assert_eq!(image["init_ref"], format!("{repository}-init:{tag}"));
    assert!(
        image["drainer_archive"].ends_with(&format!("quiesce-{VERSION}.oci.tar")),
        "{image:?}"
    );
    assert!(
        read("CHANGELOG.md").contains(&format!("## {VERSION}")),
        "CHANGELOG.md has no section for {VERSION}"
    );
}

/// SAM zips the directory CodeUri names: it must be where scripts/lambda-bundle puts bootstrap.
#[test]
fn the_sam_template_points_at_the_lambda_bundle() {
    let template = read("deploy/sam/template.yaml");
    let field = |key: &str| {
        template
            .lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in the SAM template"))
            .trim()
            .to_string()
    };
    assert_eq!(field("Handler:"), "bootstrap");
    assert_eq!(field("Runtime:"), "provided.al2023");
    let code_uri = field("CodeUri:");
    let bundle = printed("scripts/lambda-bundle");
    let bootstrap = Path::new(&bundle["bootstrap"]);
    assert_eq!(bootstrap.file_name().unwrap(), "bootstrap");
    assert_eq!(
        normalize(&Path::new("deploy/sam").join(code_uri)),
        normalize(bootstrap.parent().unwrap()),
        "CodeUri is the directory holding bootstrap"
    );
}

/// `a/b/../c` → `a/c`, without touching the file system (the bundle need not exist).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                assert!(out.pop(), "{} leaves the repo", path.display())
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// cfn-lint from the venv scripts/test builds (tests/requirements.txt), or from PATH.
fn cfn_lint(dir: &Path, templates: &[&Path]) -> std::process::Output {
    let program = std::env::var_os("QUIESCE_VENV")
        .map(|venv| Path::new(&venv).join("bin/cfn-lint"))
        .unwrap_or_else(|| "cfn-lint".into());
    Command::new(&program)
        .current_dir(dir)
        .args(templates)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running {}: {e} (scripts/test installs it into its venv)",
                program.display()
            )
        })
}

/// The templates users deploy pass AWS's own linter, which knows every resource type's
/// properties and allowed values: a misspelt property or a wrong `!GetAtt` fails here rather
/// than in a user's `aws cloudformation deploy`. A copy with a misspelt property must fail, so
/// a linter that checks nothing cannot pass this test.
#[test]
fn the_cloudformation_and_sam_templates_pass_cfn_lint() {
    let templates = [
        Path::new("deploy/cloudformation/node-group-hooks.yaml"),
        Path::new("deploy/sam/template.yaml"),
    ];
    let out = cfn_lint(&repo(), &templates);
    assert!(
        out.status.success(),
        "cfn-lint found problems:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    let hooks = read("deploy/cloudformation/node-group-hooks.yaml");
    std::fs::write(
        &broken,
        hooks.replacen("DefaultResult:", "DefaultOutcome:", 1),
    )
    .unwrap();
    let out = cfn_lint(dir.path(), &[&broken]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stdout).contains("DefaultOutcome"),
        "cfn-lint accepted a misspelt property:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
