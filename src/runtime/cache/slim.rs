//! What the caches keep of an object: what the comparison and the status
//! read, never `managedFields` or kubectl's last-applied copy.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    PersistentVolumeClaim, Pod, PodCondition, PodStatus, Secret, Service,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::DynamicObject;

use crate::api::crd::AppStack;

/// Cached objects keep what the comparison and the status read.
pub trait Slim {
    fn slim(&mut self);
}

fn slim_meta(meta: &mut kube::api::ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

macro_rules! slim_metadata_only {
    ($($kind:ty),*) => {$(
        impl Slim for $kind {
            fn slim(&mut self) {
                slim_meta(&mut self.metadata);
            }
        }
    )*};
}
slim_metadata_only!(
    Secret,
    ConfigMap,
    Service,
    StatefulSet,
    Deployment,
    DynamicObject,
    AppStack,
    NetworkPolicy,
    PodDisruptionBudget,
    Ingress
);

impl Slim for Job {
    /// A Job is never patched: its status and labels matter, not its pods.
    fn slim(&mut self) {
        slim_meta(&mut self.metadata);
        if let Some(spec) = self.spec.as_mut() {
            spec.template = Default::default();
        }
    }
}

impl Slim for PersistentVolumeClaim {
    /// Only the volume's ownerReferences are ever read.
    fn slim(&mut self) {
        slim_meta(&mut self.metadata);
        self.spec = None;
        self.status = None;
    }
}

impl Slim for Pod {
    /// A pod is read only for why it cannot run: its phase, the conditions
    /// that do not hold, and each container's readiness, restarts and the
    /// reason and message of its waiting or terminated state (and of its
    /// last termination). No spec, annotations or timestamps: a stack's
    /// pods outnumber its other children.
    fn slim(&mut self) {
        slim_meta(&mut self.metadata);
        self.metadata.annotations = None;
        self.metadata.managed_fields = None;
        self.metadata.generate_name = None;
        self.spec = None;
        self.status = self.status.take().map(|status| PodStatus {
            phase: status.phase,
            conditions: status.conditions.map(|conditions| {
                conditions
                    .into_iter()
                    .filter(|condition| condition.status != "True")
                    .map(|condition| PodCondition {
                        type_: condition.type_,
                        status: condition.status,
                        reason: condition.reason,
                        message: condition.message,
                        ..PodCondition::default()
                    })
                    .collect()
            }),
            container_statuses: status
                .container_statuses
                .map(|statuses| statuses.into_iter().map(slim_container).collect()),
            init_container_statuses: status
                .init_container_statuses
                .map(|statuses| statuses.into_iter().map(slim_container).collect()),
            ..PodStatus::default()
        });
    }
}

/// What a container's status says of why it cannot run.
fn slim_container(status: ContainerStatus) -> ContainerStatus {
    let state = |state: Option<ContainerState>| {
        state.map(|state| ContainerState {
            waiting: state.waiting.map(|waiting| ContainerStateWaiting {
                reason: waiting.reason,
                message: waiting.message,
            }),
            terminated: state.terminated.map(|terminated| ContainerStateTerminated {
                exit_code: terminated.exit_code,
                reason: terminated.reason,
                message: terminated.message,
                ..ContainerStateTerminated::default()
            }),
            running: state.running.map(|_| Default::default()),
        })
    };
    ContainerStatus {
        name: status.name,
        ready: status.ready,
        restart_count: status.restart_count,
        state: state(status.state),
        last_state: state(status.last_state),
        ..ContainerStatus::default()
    }
}

/// `object` as the caches keep it.
pub fn slimmed<K: Slim>(mut object: K) -> K {
    object.slim();
    object
}
