//! What the caches keep of an object: what the comparison and the status
//! read, never `managedFields` or kubectl's last-applied copy.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
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

/// `object` as the caches keep it.
pub fn slimmed<K: Slim>(mut object: K) -> K {
    object.slim();
    object
}
