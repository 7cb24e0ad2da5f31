//! What a settled child keeps: once a pass finds a cached child holding
//! what the stack desires, the cache keeps only what later passes read of
//! it — the status [`super::observe`] reports and the fields it reports
//! against — and its desired hash stands in for the comparison (see
//! [`super::compare`]) until the watch shows it changed.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, StatefulSet, StatefulSetSpec};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, PersistentVolumeClaim, Pod, PodSpec, PodTemplateSpec, Secret, Service,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::DynamicObject;

use crate::runtime::cache::packed::Settle;

/// Children kept whole: a Secret's values are not in its desired hash, and
/// a Job, a volume claim or a pod is small once slimmed.
macro_rules! kept_whole {
    ($($kind:ty),*) => {$(
        impl Settle for $kind {
            fn residue(&self) -> Option<Self> {
                None
            }
        }
    )*};
}
kept_whole!(Secret, Job, PersistentVolumeClaim, Pod);

/// Children nothing reads but their metadata and status once settled.
macro_rules! settle_to_status {
    ($($kind:ty),*) => {$(
        impl Settle for $kind {
            fn residue(&self) -> Option<Self> {
                Some(Self {
                    metadata: self.metadata.clone(),
                    status: self.status.clone(),
                    ..Self::default()
                })
            }
        }
    )*};
}
settle_to_status!(Service, PodDisruptionBudget, Ingress);

/// Children nothing reads but their metadata once settled (a ConfigMap's
/// version: the backend's pods roll on it).
macro_rules! settle_to_metadata {
    ($($kind:ty),*) => {$(
        impl Settle for $kind {
            fn residue(&self) -> Option<Self> {
                Some(Self {
                    metadata: self.metadata.clone(),
                    ..Self::default()
                })
            }
        }
    )*};
}
settle_to_metadata!(ConfigMap, NetworkPolicy);

impl Settle for StatefulSet {
    /// The status reports ready replicas against the wanted ones.
    fn residue(&self) -> Option<Self> {
        Some(Self {
            metadata: self.metadata.clone(),
            spec: StatefulSetSpec {
                replicas: self.spec.replicas,
                ..StatefulSetSpec::default()
            },
            status: self.status.clone(),
        })
    }
}

impl Settle for Deployment {
    /// The status reports available replicas against the wanted ones, and
    /// the image they run.
    fn residue(&self) -> Option<Self> {
        Some(Self {
            metadata: self.metadata.clone(),
            spec: DeploymentSpec {
                replicas: self.spec.replicas,
                template: PodTemplateSpec {
                    metadata: None,
                    spec: self.spec.template.spec.as_ref().map(|pod| PodSpec {
                        containers: pod
                            .containers
                            .iter()
                            .take(1)
                            .map(|container| Container {
                                name: container.name.clone(),
                                image: container.image.clone(),
                                ..Container::default()
                            })
                            .collect(),
                        ..PodSpec::default()
                    }),
                },
                ..DeploymentSpec::default()
            },
            status: self.status.clone(),
        })
    }
}

impl Settle for DynamicObject {
    /// A ServiceMonitor or HTTPRoute: the route's status is read.
    fn residue(&self) -> Option<Self> {
        let mut residue = DynamicObject {
            types: self.types.clone(),
            metadata: self.metadata.clone(),
            data: serde_json::Value::Object(Default::default()),
        };
        if let Some(status) = self.data.get("status") {
            residue.data["status"] = status.clone();
        }
        Some(residue)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn secret(namespace: &str, name: &str, version: &str, value: &str) -> Secret {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": namespace, "name": name, "resourceVersion": version, "uid": "u1"},
            "data": {"key": k8s_openapi::ByteString(value.as_bytes().to_vec())}
        }))
        .unwrap()
    }

    #[test]
    fn a_residue_keeps_what_the_status_reads() {
        use super::super::observe::{deployment_check, ingress_check, statefulset_check};
        let statefulset: StatefulSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "shop-db", "generation": 3},
            "spec": {"replicas": 2, "serviceName": "shop-db", "selector": {},
                     "template": {"spec": {"containers": [{"name": "postgres", "image": "postgres:17"}]}}},
            "status": {"replicas": 2, "readyReplicas": 1, "updatedReplicas": 2, "observedGeneration": 3}
        }))
        .unwrap();
        let residue = statefulset.residue().unwrap();
        assert_eq!(statefulset_check(&residue), statefulset_check(&statefulset));
        assert!(residue.spec.template.spec.is_none());

        let deployment: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "shop-backend", "generation": 2},
            "spec": {"replicas": 2, "selector": {}, "template": {"spec": {"containers": [
                {"name": "backend", "image": "shop:1", "env": [{"name": "A", "value": "b"}]},
                {"name": "sidecar", "image": "proxy:1"}]}}},
            "status": {"replicas": 2, "updatedReplicas": 2, "availableReplicas": 2, "observedGeneration": 2}
        }))
        .unwrap();
        let residue = deployment.residue().unwrap();
        assert_eq!(deployment_check(&residue), deployment_check(&deployment));
        assert!(deployment_check(&residue).message.contains("shop:1"));

        let ingress: Ingress = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "shop"},
            "spec": {"rules": [{"host": "shop.example.com"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}
        }))
        .unwrap();
        let url = "https://shop.example.com";
        assert_eq!(
            ingress_check(&ingress.residue().unwrap(), url),
            ingress_check(&ingress, url)
        );

        let route = DynamicObject {
            types: None,
            metadata: ObjectMeta::default(),
            data: serde_json::json!({"spec": {"hostnames": ["shop"]}, "status": {"parents": []}}),
        };
        assert_eq!(
            route.residue().unwrap().data,
            serde_json::json!({"status": {"parents": []}})
        );
        assert!(
            secret("a", "s", "1", "v").residue().is_none(),
            "a Secret's values are not in its desired hash"
        );
    }
}
