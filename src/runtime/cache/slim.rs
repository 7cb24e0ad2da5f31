//! What the caches keep of an object: what the comparison and the status
//! read, never `managedFields` or kubectl's last-applied copy.

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, StatefulSet, StatefulSetStatus,
};
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
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
    DynamicObject,
    AppStack,
    NetworkPolicy,
    Ingress
);

impl Slim for PodDisruptionBudget {
    /// Its status counts healthy pods, which the pods themselves tell.
    fn slim(&mut self) {
        slim_meta(&mut self.metadata);
        self.status = None;
    }
}

impl Slim for Deployment {
    /// Its status is read for how far the rollout is (replicas observed,
    /// updated and available), whether it exceeded its progress deadline,
    /// and when it completed (the post-deploy step soaks from then); not
    /// for its other counts, the times of a rollout in progress or the
    /// revision the controller numbers it with: a change of those alone
    /// wakes no pass.
    fn slim(&mut self) {
        slim_meta(&mut self.metadata);
        if let Some(annotations) = self.metadata.annotations.as_mut() {
            annotations.remove(DEPLOYMENT_REVISION);
        }
        self.status = self.status.take().map(|status| DeploymentStatus {
            observed_generation: status.observed_generation,
            replicas: status.replicas,
            updated_replicas: status.updated_replicas,
            available_replicas: status.available_replicas,
            conditions: status.conditions.map(|conditions| {
                conditions
                    .into_iter()
                    .filter_map(|condition| {
                        let rolled_out = match condition.reason.as_deref() {
                            Some(ROLLED_OUT) => true,
                            Some(PROGRESS_DEADLINE_EXCEEDED) => false,
                            _ => return None,
                        };
                        Some(DeploymentCondition {
                            type_: condition.type_,
                            status: condition.status,
                            reason: condition.reason,
                            last_update_time: condition.last_update_time.filter(|_| rolled_out),
                            ..DeploymentCondition::default()
                        })
                    })
                    .collect()
            }),
            ..DeploymentStatus::default()
        });
    }
}

/// The annotation the Deployment controller numbers rollouts with.
const DEPLOYMENT_REVISION: &str = "deployment.kubernetes.io/revision";

/// The reason of a Deployment's `Progressing` condition past its deadline.
pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";

/// The reason of a Deployment's `Progressing` condition once its rollout
/// completed; its `lastUpdateTime` says when.
pub const ROLLED_OUT: &str = "NewReplicaSetAvailable";

impl Slim for StatefulSet {
    /// Its status is read for how many replicas are ready and updated, at
    /// which generation: not for its revisions or other counts.
    fn slim(&mut self) {
        slim_meta(&mut self.metadata);
        self.status = self.status.take().map(|status| StatefulSetStatus {
            observed_generation: status.observed_generation,
            ready_replicas: status.ready_replicas,
            updated_replicas: status.updated_replicas,
            ..StatefulSetStatus::default()
        });
    }
}

impl Slim for Job {
    /// A Job is never patched: its labels matter, not its pods, and of its
    /// status how many pods ran (its attempts), whether it completed or
    /// failed (and why) and when it completed. Not its ready pods, the
    /// pods it has yet to count, or the conditions on the way to its end.
    fn slim(&mut self) {
        slim_meta(&mut self.metadata);
        if let Some(spec) = self.spec.as_mut() {
            spec.template = Default::default();
        }
        self.status = self.status.take().map(|status| JobStatus {
            active: status.active,
            succeeded: status.succeeded,
            failed: status.failed,
            completion_time: status.completion_time,
            conditions: status.conditions.map(|conditions| {
                conditions
                    .into_iter()
                    .filter(|condition| {
                        condition.status == "True" && JOB_ENDS.contains(&condition.type_.as_str())
                    })
                    .map(|condition| JobCondition {
                        type_: condition.type_,
                        status: condition.status,
                        reason: condition.reason,
                        ..JobCondition::default()
                    })
                    .collect()
            }),
            ..JobStatus::default()
        });
    }
}

/// The conditions of a Job that has ended.
const JOB_ENDS: [&str; 2] = ["Complete", "Failed"];

impl Slim for PersistentVolumeClaim {
    /// Only the volume's ownerReferences are ever read: not its status or
    /// the binding annotations, which change as it binds.
    fn slim(&mut self) {
        slim_meta(&mut self.metadata);
        self.metadata.annotations = None;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(status: serde_json::Value, revision: &str) -> Deployment {
        slimmed(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "shop-backend", "generation": 2,
                             "annotations": {DEPLOYMENT_REVISION: revision, "team": "x"}},
                "status": status
            }))
            .unwrap(),
        )
    }

    #[test]
    fn a_deployment_keeps_how_far_its_rollout_is_and_whether_it_is_past_its_deadline() {
        let progressing = |reason: &str, time: &str| {
            serde_json::json!({"type": "Progressing", "status": "True", "reason": reason,
                               "lastUpdateTime": time, "message": "ReplicaSet is progressing"})
        };
        let rolling = deployment(
            serde_json::json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
                               "availableReplicas": 1, "readyReplicas": 1, "unavailableReplicas": 1,
                               "conditions": [progressing("NewReplicaSetCreated", "2026-01-01T00:00:00Z")]}),
            "1",
        );
        let ready_elsewhere = deployment(
            serde_json::json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
                               "availableReplicas": 1, "readyReplicas": 2, "unavailableReplicas": 1,
                               "conditions": [progressing("ReplicaSetUpdated", "2026-01-01T00:00:09Z")]}),
            "2",
        );
        assert_eq!(rolling, ready_elsewhere, "nothing a pass reads changed");
        assert_eq!(
            rolling
                .metadata
                .annotations
                .as_ref()
                .unwrap()
                .get("team")
                .map(String::as_str),
            Some("x")
        );
        let available = deployment(
            serde_json::json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
                               "availableReplicas": 2}),
            "2",
        );
        assert_ne!(rolling, available);
        let stuck = deployment(
            serde_json::json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
                               "availableReplicas": 1,
                               "conditions": [progressing(PROGRESS_DEADLINE_EXCEEDED, "2026-01-01T00:10:00Z")]}),
            "2",
        );
        assert_eq!(
            stuck.status.unwrap().conditions.unwrap()[0]
                .reason
                .as_deref(),
            Some(PROGRESS_DEADLINE_EXCEEDED)
        );
        // When the rollout completed: the post-deploy step soaks from then.
        let rolled_out = deployment(
            serde_json::json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
                               "availableReplicas": 2,
                               "conditions": [progressing(ROLLED_OUT, "2026-01-01T00:05:00Z")]}),
            "2",
        );
        let completed = &rolled_out.status.unwrap().conditions.unwrap()[0];
        assert_eq!(completed.reason.as_deref(), Some(ROLLED_OUT));
        assert_eq!(
            completed
                .last_update_time
                .as_ref()
                .map(|time| time.0.as_second()),
            Some(1_767_225_900)
        );
    }

    #[test]
    fn a_job_keeps_its_attempts_and_how_it_ended() {
        let job = |status: serde_json::Value| -> Job {
            slimmed(
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": "shop-migrate-1"}, "status": status
                }))
                .unwrap(),
            )
        };
        let started =
            job(serde_json::json!({"active": 1, "ready": 0, "startTime": "2026-01-01T00:00:00Z"}));
        let ready =
            job(serde_json::json!({"active": 1, "ready": 1, "startTime": "2026-01-01T00:00:00Z"}));
        assert_eq!(started, ready, "nothing a pass reads changed");
        let ending = job(serde_json::json!({"active": 0, "succeeded": 1,
            "conditions": [{"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached"}]}));
        let complete = job(serde_json::json!({"active": 0, "succeeded": 1,
            "completionTime": "2026-01-01T00:00:09Z",
            "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached"},
                {"type": "Complete", "status": "True", "reason": "CompletionsReached",
                 "lastTransitionTime": "2026-01-01T00:00:09Z"}]}));
        assert_ne!(ending, complete);
        let status = complete.status.unwrap();
        assert_eq!(status.succeeded, Some(1));
        assert!(status.completion_time.is_some());
        let conditions = status.conditions.unwrap();
        assert_eq!(conditions.len(), 1);
        assert_eq!(
            (
                conditions[0].type_.as_str(),
                conditions[0].reason.as_deref()
            ),
            ("Complete", Some("CompletionsReached"))
        );
        let failed = job(serde_json::json!({"failed": 3,
            "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}));
        assert_eq!(
            failed.status.unwrap().conditions.unwrap()[0]
                .reason
                .as_deref(),
            Some("BackoffLimitExceeded")
        );
    }

    #[test]
    fn a_statefulset_keeps_its_ready_and_updated_replicas_at_its_generation() {
        let statefulset = |status: serde_json::Value| -> StatefulSet {
            slimmed(
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": "shop-db", "generation": 1}, "status": status
                }))
                .unwrap(),
            )
        };
        let created = statefulset(serde_json::json!({"observedGeneration": 1, "replicas": 1,
            "updatedReplicas": 1, "currentRevision": "shop-db-1", "updateRevision": "shop-db-1"}));
        let counted = statefulset(serde_json::json!({"observedGeneration": 1, "replicas": 1,
            "updatedReplicas": 1, "currentReplicas": 1, "availableReplicas": 0,
            "currentRevision": "shop-db-1", "updateRevision": "shop-db-1"}));
        assert_eq!(created, counted, "nothing a pass reads changed");
        let ready = statefulset(serde_json::json!({"observedGeneration": 1, "replicas": 1,
            "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}));
        assert_ne!(created, ready);
        assert_eq!(ready.status.unwrap().ready_replicas, Some(1));
    }
}
