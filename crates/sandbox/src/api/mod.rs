//! The in-memory Kubernetes API server.
//!
//! Real HTTP on loopback, real Kubernetes JSON: discovery, list/watch with resourceVersion
//! semantics, create/update/patch/delete with the registry's rules, `pods/eviction` with
//! PodDisruptionBudget semantics, and `Status` errors with the real codes and messages. The
//! simulated control plane (`crate::sim`) writes through the same [`Store`], so a watch sees
//! its changes exactly as it would see a kubelet's.

mod custom;
mod defaults;
pub mod eviction;
mod faults;
mod fields;
mod http;
mod openapi;
mod page;
pub mod patch;
mod protobuf;
pub mod resources;
mod review;
mod scale;
pub mod selector;
pub mod status;
pub mod store;
mod table;
mod validation;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kube::config::Kubeconfig;
use tokio::sync::watch;

pub use faults::{FaultInjector, FaultKind};
pub use store::Store;

/// Why the API server could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// kube-rs rejected the configuration we built for our own URL.
    #[error("building a client for {url}: {source}")]
    Client {
        /// The server URL.
        url: String,
        /// Why.
        source: kube::Error,
    },
}

/// How many changes the watch history keeps; a watch from an older resourceVersion gets 410.
pub const DEFAULT_HISTORY: usize = 100_000;

/// The header that marks a client's requests for [`ApiServer::audited`]: a test gives the
/// client under test this header (kube's `Config::headers`) to learn exactly which verbs on
/// which resources it uses, e.g. to check a chart's RBAC rules against the code.
pub const AUDIT_HEADER: &str = "x-quiesce-audit";

/// One request that carried [`AUDIT_HEADER`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audited {
    /// The header's value (which client).
    pub caller: String,
    /// The HTTP method.
    pub method: String,
    /// The path, e.g. `/api/v1/namespaces/default/pods/web-1/eviction`.
    pub path: String,
    /// The query string, e.g. `watch=true&resourceVersion=5`.
    pub query: String,
    /// The store's resourceVersion when the request arrived: where it falls in the watch
    /// history, so a check can read the cluster as the request found it.
    pub revision: u64,
    /// The response's status code; `None` while (or if never) answered, e.g. a hung request.
    pub status: Option<u16>,
    /// The injected fault this request hit, if any.
    pub fault: Option<FaultKind>,
    /// When the request arrived, so a test can count a client's requests per second.
    pub at: std::time::Instant,
}

pub(crate) struct Shared {
    store: Arc<Store>,
    faults: FaultInjector,
    requests: AtomicU64,
    audited: std::sync::Mutex<Vec<Audited>>,
    shutdown: watch::Sender<bool>,
}

/// A shared handle on an API server's audit log (see [`ApiServer::audit_log`]).
#[derive(Clone)]
pub struct AuditLog(Arc<Shared>);

impl AuditLog {
    /// The entries from index `from` on, in arrival order.
    pub fn since(&self, from: usize) -> Vec<Audited> {
        let log = self.0.audited.lock().unwrap_or_else(|p| p.into_inner());
        log.get(from..).map(<[Audited]>::to_vec).unwrap_or_default()
    }
}

/// A running API server.
pub struct ApiServer {
    url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// Binds `listen` (port 0 picks a free port) and serves until [`ApiServer::shutdown`].
    pub async fn start(listen: SocketAddr) -> Result<ApiServer, Error> {
        Self::start_with_history(listen, DEFAULT_HISTORY).await
    }

    /// Like [`ApiServer::start`] with a watch history of `history` changes, so tests can
    /// reach `410 Gone` without writing a hundred thousand objects.
    pub async fn start_with_history(
        listen: SocketAddr,
        history: usize,
    ) -> Result<ApiServer, Error> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| Error::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: listen,
            source,
        })?;
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            store: Store::new(history),
            faults: FaultInjector::default(),
            requests: AtomicU64::new(0),
            audited: std::sync::Mutex::default(),
            shutdown,
        });
        let app = axum::Router::new()
            .fallback(http::handle)
            .with_state(shared.clone());
        let mut stop = shared.shutdown.subscribe();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "sandbox API server stopped");
            }
        });
        Ok(ApiServer {
            url: format!("http://{addr}"),
            shared,
            task,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The store, for in-process writers (the simulated cluster) and tests.
    pub fn store(&self) -> Arc<Store> {
        self.shared.store.clone()
    }

    /// A kube-rs client for this server. kube's own retry of 429/503/504 is off: callers
    /// (the drain engine) must see a PDB's 429 to report it.
    pub fn client(&self) -> kube::Client {
        let mut config = kube::Config::new(self.url.parse().expect("our own URL parses"));
        config.default_retry = false;
        kube::Client::try_from(config).expect("a plain-HTTP client always builds")
    }

    /// A kubeconfig for kubectl: cluster `sandbox`, a user without credentials.
    pub fn kubeconfig(&self) -> Kubeconfig {
        let yaml = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: sandbox\n  cluster:\n    server: {}\nusers:\n- name: sandbox\n  user: {{}}\ncontexts:\n- name: sandbox\n  context:\n    cluster: sandbox\n    user: sandbox\ncurrent-context: sandbox\n",
            self.url
        );
        Kubeconfig::from_yaml(&yaml).expect("the kubeconfig template is valid")
    }

    /// The fault injector of this server.
    pub fn faults(&self) -> FaultInjector {
        self.shared.faults.clone()
    }

    /// Requests served so far; benchmarks compare clients by it.
    pub fn request_count(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// The requests that carried [`AUDIT_HEADER`], in arrival order.
    pub fn audited(&self) -> Vec<Audited> {
        self.shared
            .audited
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A handle on the audit log that outlives borrows of the server, for an observer task
    /// that follows the log while the server runs.
    pub fn audit_log(&self) -> AuditLog {
        AuditLog(self.shared.clone())
    }

    /// Stops serving; open watch streams end.
    pub async fn shutdown(self) {
        self.shared.shutdown.send_replace(true);
        let _ = self.task.await;
    }
}
