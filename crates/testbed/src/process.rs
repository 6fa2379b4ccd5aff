//! Starting, probing and stopping the control-plane processes.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::config::Kubeconfig;

use crate::{Error, binaries_dir, certs, client_for};

/// The bearer token the test clients use; the token file maps it to `system:masters`.
const TOKEN: &str = "quiesce-testbed-token";

/// How long each server may take to answer; /readyz is OK about 3 s after start on 2 cores
/// (research/test-infrastructure.md), so this only catches a server that will never come up.
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// A running control plane; dropping it kills every process and removes its scratch directory.
pub struct ControlPlane {
    children: Vec<(&'static str, Child)>,
    kubeconfig: Kubeconfig,
    kubeconfig_path: PathBuf,
    url: String,
    dir: tempfile::TempDir,
}

fn free_port() -> Result<u16, Error> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver, kube-controller-manager (without `nodelifecycle`, which would
    /// taint kubelet-less nodes and evict everything) and kube-scheduler, and waits until the
    /// API server reports ready.
    pub async fn start() -> Result<ControlPlane, Error> {
        let bin = binaries_dir();
        if !bin.join("kube-apiserver").is_file() {
            return Err(Error::MissingBinaries(bin));
        }
        let dir = tempfile::Builder::new()
            .prefix("quiesce-testbed-")
            .tempdir()?;
        let certs = certs::generate(dir.path())?;
        let etcd_port = free_port()?;
        let api_port = free_port()?;
        let url = format!("https://127.0.0.1:{api_port}");

        std::fs::write(
            dir.path().join("tokens.csv"),
            format!("{TOKEN},admin,admin,\"system:masters\"\n"),
        )?;
        let kubeconfig_path = dir.path().join("kubeconfig");
        let kubeconfig_yaml = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: testbed\n  cluster:\n    server: {url}\n    certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    token: {TOKEN}\ncontexts:\n- name: testbed\n  context:\n    cluster: testbed\n    user: admin\ncurrent-context: testbed\n",
            ca = certs.ca.display()
        );
        std::fs::write(&kubeconfig_path, &kubeconfig_yaml)?;
        let kubeconfig = Kubeconfig::from_yaml(&kubeconfig_yaml)?;

        let mut plane = ControlPlane {
            children: Vec::new(),
            kubeconfig,
            kubeconfig_path,
            url,
            dir,
        };
        let d = plane.dir.path().to_path_buf();
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        plane.spawn(
            "etcd",
            Path::new("etcd"),
            &[
                "--data-dir".into(),
                d.join("etcd").display().to_string(),
                "--listen-client-urls".into(),
                etcd_url.clone(),
                "--advertise-client-urls".into(),
                etcd_url.clone(),
                "--listen-peer-urls".into(),
                format!("http://127.0.0.1:{}", free_port()?),
            ],
        )?;
        let p = |path: &Path| path.display().to_string();
        plane.spawn(
            "kube-apiserver",
            &bin.join("kube-apiserver"),
            &[
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={api_port}"),
                format!("--tls-cert-file={}", p(&certs.cert)),
                format!("--tls-private-key-file={}", p(&certs.key)),
                format!("--client-ca-file={}", p(&certs.ca)),
                format!("--token-auth-file={}", p(&d.join("tokens.csv"))),
                "--authorization-mode=RBAC".into(),
                "--service-cluster-ip-range=10.96.0.0/16".into(),
                "--service-account-issuer=https://kubernetes.default.svc".into(),
                format!("--service-account-key-file={}", p(&certs.sa_pub)),
                format!("--service-account-signing-key-file={}", p(&certs.sa_key)),
                // Without the token controller no service account exists for pods to use.
                "--disable-admission-plugins=ServiceAccount".into(),
                "--allow-privileged=true".into(),
            ],
        )?;
        plane.wait_ready().await?;
        let kubeconfig_arg = format!("--kubeconfig={}", p(&plane.kubeconfig_path));
        plane.spawn(
            "kube-controller-manager",
            &bin.join("kube-controller-manager"),
            &[
                kubeconfig_arg.clone(),
                "--controllers=disruption,replicaset,deployment,statefulset,daemonset,endpoint,endpointslice,garbagecollector,namespace,podgc".into(),
                "--leader-elect=false".into(),
                "--port=0".into(),
                "--secure-port=0".into(),
                "--use-service-account-credentials=false".into(),
            ],
        )?;
        plane.spawn(
            "kube-scheduler",
            &bin.join("kube-scheduler"),
            &[
                kubeconfig_arg,
                "--leader-elect=false".into(),
                "--port=0".into(),
                "--secure-port=0".into(),
            ],
        )?;
        Ok(plane)
    }

    fn spawn(&mut self, name: &'static str, program: &Path, args: &[String]) -> Result<(), Error> {
        let log = File::create(self.log_path(name))?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| Error::Process {
                what: format!("starting {}", program.display()),
                detail: e.to_string(),
            })?;
        self.children.push((name, child));
        Ok(())
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// The last lines a server logged, for error messages.
    pub fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.log_path(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Waits for `/readyz` (a probe with a deadline: a starting process has no event to watch).
    async fn wait_ready(&mut self) -> Result<(), Error> {
        let client = client_for(&self.kubeconfig).await?;
        let started = Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            let req = http_get("/readyz");
            if let Ok(body) = client.request_text(req).await
                && body.trim() == "ok"
            {
                return Ok(());
            }
            let exited = self
                .children
                .iter_mut()
                .find_map(|(name, child)| Some((*name, child.try_wait().ok()??)));
            if let Some((name, status)) = exited {
                return Err(Error::Process {
                    what: format!("{name} exited with {status}"),
                    detail: self.log_tail(name),
                });
            }
            if started.elapsed() > READY_DEADLINE {
                return Err(Error::NotReady {
                    server: "kube-apiserver",
                    waited: READY_DEADLINE,
                    log_tail: self.log_tail("kube-apiserver"),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// A client that talks to the API server as `system:masters`.
    pub async fn client(&self) -> Result<kube::Client, Error> {
        client_for(&self.kubeconfig).await
    }

    /// A kubeconfig file that the real kubectl accepts.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// The API server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

fn http_get(path: &str) -> http::Request<Vec<u8>> {
    http::Request::get(path)
        .body(Vec::new())
        .expect("a static GET request is valid")
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for (_, child) in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
