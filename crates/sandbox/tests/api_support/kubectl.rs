//! kubectl pointed at one test server: the real binary (the machines' dispatcher picks the
//! kubectl matching the server's version), with a kubeconfig and discovery cache of its own.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use quiesce_sandbox::api::ApiServer;

/// kubectl pointed at one server, with its own discovery cache.
pub struct Kubectl {
    kubeconfig: PathBuf,
    cache: PathBuf,
    dir: tempfile::TempDir,
}

impl Kubectl {
    /// kubectl for `server`, with a fresh kubeconfig and cache in a temporary directory.
    pub fn new(server: &ApiServer) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        // JSON is YAML, and kubectl reads it as such.
        let text = serde_json::to_string(&server.kubeconfig()).unwrap();
        std::fs::write(&kubeconfig, text).unwrap();
        Kubectl {
            kubeconfig,
            cache: dir.path().join("cache"),
            dir,
        }
    }

    /// A scratch directory that lives as long as this kubectl, for manifests.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The command line, for tests that stream kubectl's output.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("/usr/bin/kubectl");
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .arg("--request-timeout=20s")
            .args(args)
            .kill_on_drop(true);
        cmd
    }

    /// Runs kubectl to completion within a deadline.
    pub async fn run(&self, args: &[&str]) -> Output {
        tokio::time::timeout(Duration::from_secs(60), self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} finished within 60s"))
            .expect("kubectl runs")
    }

    /// Runs kubectl and returns its stdout, failing the test on a non-zero exit.
    pub async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}
