//! Starts the workload controllers of kube-controller-manager — ReplicaSet, Deployment,
//! StatefulSet, disruption (PDB status), EndpointSlice, Endpoints, Job, CronJob,
//! HorizontalPodAutoscaler, namespace, garbage collector, attach/detach (detach only) — as kube-rs
//! clients of any API server: the sandbox's, or a real one with its own controllers off.

use kube::Client;
use tokio::task::JoinSet;

use crate::time::TimeScale;

/// The running controllers; dropping the handle stops them.
pub struct WorkloadControllers {
    tasks: JoinSet<()>,
}

impl WorkloadControllers {
    /// Starts every controller against the API `client` talks to, with simulated waits
    /// (minReadySeconds, the PDB DeletionTimeout) shortened by `scale`, and CronJob schedules on
    /// a clock `scale` times faster than real.
    pub fn spawn(client: Client, scale: TimeScale) -> WorkloadControllers {
        let mut tasks = JoinSet::new();
        tasks.spawn(super::replicaset::run(client.clone(), scale));
        tasks.spawn(super::deployment::run(client.clone(), scale));
        tasks.spawn(super::statefulset::run(client.clone(), scale));
        tasks.spawn(super::disruption::run(client.clone(), scale));
        tasks.spawn(super::endpointslice::run(client.clone(), scale));
        tasks.spawn(super::endpoints::run(client.clone(), scale));
        tasks.spawn(super::job::run(client.clone(), scale));
        tasks.spawn(super::cronjob::run(client.clone(), scale));
        tasks.spawn(super::hpa::run(client.clone(), scale));
        tasks.spawn(super::namespace::run(client.clone(), scale));
        tasks.spawn(super::attachdetach::run(client.clone(), scale));
        tasks.spawn(super::gc::run(client, scale));
        WorkloadControllers { tasks }
    }

    /// Stops the controllers and waits until they are gone.
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}
