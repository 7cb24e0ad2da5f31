//! Why a pod cannot run, in the kubelet's and the scheduler's own words:
//! an image that cannot be pulled, a container that keeps crashing (with
//! its last exit code) or was killed for memory, a container the kubelet
//! refuses to create (a root image under `runAsNonRoot`), a pod no node
//! takes, a readiness probe that keeps failing. Pure: read from a pod as
//! the cache keeps it.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodCondition};
use kube::ResourceExt;

use crate::api::conditions::{Check, reasons};

/// What keeps a pod from running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trouble {
    /// The kubelet's reason, as a condition reason.
    pub reason: &'static str,
    /// The kubelet's or scheduler's message.
    pub message: String,
    /// The pod will not recover by itself: only a change of the spec helps.
    pub terminal: bool,
}

impl Trouble {
    /// The condition check naming the pod: `pod NAME: message`.
    pub fn check(&self, pod: &str) -> Check {
        let message = format!("pod {pod}: {}", self.message);
        if self.terminal {
            Check::failed(self.reason, message)
        } else {
            Check::pending(self.reason, message)
        }
    }
}

/// Waiting reasons of a container that the kubelet gives, as condition
/// reasons, and whether each ends without a change of the spec.
const WAITING: [(&str, bool); 8] = [
    (reasons::INVALID_IMAGE_NAME, true),
    (reasons::ERR_IMAGE_NEVER_PULL, true),
    (reasons::ERR_IMAGE_PULL, false),
    (reasons::IMAGE_PULL_BACK_OFF, false),
    (reasons::CREATE_CONTAINER_CONFIG_ERROR, true),
    (reasons::CREATE_CONTAINER_ERROR, false),
    (reasons::RUN_CONTAINER_ERROR, false),
    (reasons::CRASH_LOOP_BACK_OFF, false),
];

/// Whether the scheduler found no node for the pod.
fn unscheduled(condition: &PodCondition) -> bool {
    condition.type_ == "PodScheduled"
        && condition.status == "False"
        && condition.reason.as_deref() == Some("Unschedulable")
}

/// What the scheduler says of a pod whose PersistentVolumeClaims are not
/// bound yet.
const BINDING_CLAIMS: &str = "unbound immediate PersistentVolumeClaims";

/// Whether `pod` is held before any of its containers ever ran: one the
/// kubelet refuses to create (a root image under `runAsNonRoot`, a missing
/// Secret, an image it cannot pull) or no node takes. Such a pod has run
/// none of its program; a pod still being created, or one whose container
/// ran once, is not held.
pub fn held_before_starting(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    let containers: Vec<&ContainerStatus> = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .collect();
    let ran = containers.iter().any(|container| {
        container.restart_count > 0
            || [&container.state, &container.last_state]
                .into_iter()
                .flatten()
                .any(|state| state.running.is_some() || state.terminated.is_some())
    });
    if ran
        || status
            .phase
            .as_deref()
            .is_some_and(|phase| phase != "Pending")
    {
        return false;
    }
    let refused = containers.iter().any(|container| {
        container_trouble(container)
            .is_some_and(|trouble| trouble.reason != reasons::CRASH_LOOP_BACK_OFF)
    });
    refused || status.conditions.iter().flatten().any(unscheduled)
}

/// What keeps `pod` from running, if anything. Init containers first (the
/// others wait for them), the first troubled container of each in order.
pub fn trouble(pod: &Pod) -> Option<Trouble> {
    let status = pod.status.as_ref()?;
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for container in containers {
        if let Some(trouble) = container_trouble(container) {
            return Some(trouble);
        }
    }
    let conditions = status.conditions.as_deref().unwrap_or_default();
    // A pod whose claim is still being bound is not one no node can take:
    // the scheduler says "unbound immediate PersistentVolumeClaims" until
    // the volume is provisioned, and takes the pod once it is.
    if let Some(unschedulable) = conditions.iter().find(|condition| {
        unscheduled(condition)
            && !condition
                .message
                .as_deref()
                .is_some_and(|message| message.contains(BINDING_CLAIMS))
    }) {
        return Some(Trouble {
            reason: reasons::UNSCHEDULABLE,
            message: unschedulable
                .message
                .clone()
                .unwrap_or_else(|| "no node can take it".into()),
            terminal: false,
        });
    }
    // A Job's pod has no readiness to fail: running is all it does.
    let runs_a_job = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|owner| owner.kind == "Job");
    let running_not_ready = !runs_a_job
        && status.phase.as_deref() == Some("Running")
        && status.container_statuses.iter().flatten().any(|container| {
            !container.ready
                && container
                    .state
                    .as_ref()
                    .is_some_and(|state| state.running.is_some())
        });
    if running_not_ready
        && conditions
            .iter()
            .any(|condition| condition.type_ == "ContainersReady" && condition.status == "False")
    {
        let names: Vec<&str> = status
            .container_statuses
            .iter()
            .flatten()
            .filter(|container| !container.ready)
            .map(|container| container.name.as_str())
            .collect();
        return Some(Trouble {
            reason: reasons::NOT_READY,
            message: format!(
                "container {} is running but not ready: its readiness probe fails",
                names.join(", ")
            ),
            terminal: false,
        });
    }
    None
}

/// Whether a container config the kubelet refused with `message` comes
/// right by itself: an object not there yet, once it is created, or the
/// kubelet's own cache of Secrets and ConfigMaps not yet synced ("failed to
/// sync configmap cache: timed out waiting for the condition"), on its next
/// try. Any other config error (a root image under `runAsNonRoot`, a key
/// missing from a Secret) needs a new spec.
fn config_recovers(message: &str) -> bool {
    message.contains("not found")
        || message.starts_with("failed to sync ")
        || message.contains("timed out waiting for the condition")
}

fn container_trouble(container: &ContainerStatus) -> Option<Trouble> {
    let state = container.state.as_ref()?;
    let last_terminated = container
        .last_state
        .as_ref()
        .and_then(|last| last.terminated.as_ref());
    if let Some(waiting) = &state.waiting {
        let reason = waiting.reason.as_deref().unwrap_or_default();
        let (reason, terminal) = WAITING
            .iter()
            .copied()
            .find(|(known, _)| *known == reason)?;
        // A container killed for memory crash-loops too: the kill is the
        // cause worth naming.
        if let Some(killed) =
            last_terminated.filter(|last| last.reason.as_deref() == Some("OOMKilled"))
        {
            return Some(Trouble {
                reason: reasons::OOM_KILLED,
                message: format!(
                    "container {} was killed for exceeding its memory limit (exit code {}), restarted {} times",
                    container.name, killed.exit_code, container.restart_count
                ),
                terminal: false,
            });
        }
        let message = match (reason, last_terminated) {
            (reasons::CRASH_LOOP_BACK_OFF, Some(last)) => format!(
                "container {} keeps exiting (last exit code {}{}), restarted {} times",
                container.name,
                last.exit_code,
                last.reason
                    .as_deref()
                    .map(|why| format!(", {why}"))
                    .unwrap_or_default(),
                container.restart_count
            ),
            _ => waiting.message.clone().unwrap_or_default(),
        };
        let terminal = terminal
            && !(reason == reasons::CREATE_CONTAINER_CONFIG_ERROR && config_recovers(&message));
        return Some(Trouble {
            reason,
            message,
            terminal,
        });
    }
    if let Some(terminated) = &state.terminated
        && terminated.reason.as_deref() == Some("OOMKilled")
    {
        return Some(Trouble {
            reason: reasons::OOM_KILLED,
            message: format!(
                "container {} was killed for exceeding its memory limit (exit code {})",
                container.name, terminated.exit_code
            ),
            terminal: false,
        });
    }
    None
}

/// The first troubled pod of `pods` by name, terminal troubles first, as a
/// check naming the pod.
pub fn first_trouble<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Option<Check> {
    let mut troubled: Vec<(String, Trouble)> = pods
        .into_iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter_map(|pod| trouble(pod).map(|trouble| (pod.name_any(), trouble)))
        .collect();
    troubled
        .sort_by(|(a_name, a), (b_name, b)| b.terminal.cmp(&a.terminal).then(a_name.cmp(b_name)));
    troubled.first().map(|(name, trouble)| trouble.check(name))
}

/// The last lines of what a container printed before it failed, as its
/// terminated state holds them (`terminationMessagePolicy:
/// FallbackToLogsOnError`): at most [`OUTPUT_LINES`] lines and
/// [`OUTPUT_CHARACTERS`] characters.
pub fn failure_output(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let message = status
        .container_statuses
        .iter()
        .flatten()
        .find_map(|container| {
            let terminated = container
                .state
                .as_ref()
                .and_then(|state| state.terminated.as_ref())
                .or_else(|| {
                    container
                        .last_state
                        .as_ref()
                        .and_then(|last| last.terminated.as_ref())
                })?;
            (terminated.exit_code != 0).then(|| terminated.message.clone())?
        })?;
    let message = message.trim_end();
    if message.is_empty() {
        return None;
    }
    Some(tail(message))
}

/// Lines of a migration's output a status message carries.
pub const OUTPUT_LINES: usize = 8;
/// Characters of a migration's output a status message carries.
pub const OUTPUT_CHARACTERS: usize = 1024;

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let kept = lines[lines.len().saturating_sub(OUTPUT_LINES)..].join("\n");
    let count = kept.chars().count();
    if count <= OUTPUT_CHARACTERS {
        return kept;
    }
    let skipped: String = kept.chars().skip(count - OUTPUT_CHARACTERS).collect();
    format!("…{skipped}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "shop-backend-7d9f-abcde", "namespace": "prod"},
            "status": status,
        }))
        .unwrap()
    }

    /// A pod whose backend container has not started: the kubelet's
    /// waiting `reason` and `message`.
    fn waiting(reason: &str, message: &str) -> Pod {
        pod(serde_json::json!({
            "phase": "Pending",
            "containerStatuses": [{"name": "backend", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": reason, "message": message}}}]
        }))
    }

    #[test]
    fn an_image_that_cannot_be_pulled_is_named_with_the_kubelets_words() {
        let backoff = waiting(
            "ImagePullBackOff",
            "Back-off pulling image \"ghcr.io/acme/shop-backend:1.4.3\"",
        );
        let check = first_trouble([&backoff]).unwrap();
        assert_eq!(check.reason, "ImagePullBackOff");
        assert_eq!(
            check.message,
            "pod shop-backend-7d9f-abcde: Back-off pulling image \"ghcr.io/acme/shop-backend:1.4.3\""
        );
        assert!(!check.terminal, "a registry may come back");
        let invalid = waiting(
            "InvalidImageName",
            "Failed to apply default image tag \"Shop:1\"",
        );
        assert!(
            first_trouble([&invalid]).unwrap().terminal,
            "a bad reference stays bad"
        );
    }

    #[test]
    fn a_crash_loop_names_the_last_exit_code_and_a_memory_kill_is_named_as_such() {
        let crashing = pod(serde_json::json!({
            "phase": "Running",
            "containerStatuses": [{"name": "backend", "ready": false, "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 1m20s"}},
                "lastState": {"terminated": {"exitCode": 3, "reason": "Error"}}}]
        }));
        let check = first_trouble([&crashing]).unwrap();
        assert_eq!(check.reason, "CrashLoopBackOff");
        assert!(
            check.message.contains("last exit code 3, Error"),
            "{}",
            check.message
        );
        assert!(
            check.message.contains("restarted 4 times"),
            "{}",
            check.message
        );
        let killed = pod(serde_json::json!({
            "phase": "Running",
            "containerStatuses": [{"name": "backend", "ready": false, "restartCount": 2,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]
        }));
        assert_eq!(first_trouble([&killed]).unwrap().reason, "OOMKilled");
    }

    #[test]
    fn a_root_image_stalls_and_a_missing_object_or_an_unsynced_cache_does_not() {
        let root = waiting(
            "CreateContainerConfigError",
            "container has runAsNonRoot and image will run as root (pod: \"shop-backend-7d9f-abcde_prod\", container: backend)",
        );
        let check = first_trouble([&root]).unwrap();
        assert_eq!(check.reason, "CreateContainerConfigError");
        assert!(check.terminal);
        let missing = waiting("CreateContainerConfigError", "secret \"shop-db\" not found");
        assert!(!first_trouble([&missing]).unwrap().terminal);
        let unsynced = waiting(
            "CreateContainerConfigError",
            "failed to sync configmap cache: timed out waiting for the condition",
        );
        let check = first_trouble([&unsynced]).unwrap();
        assert_eq!(check.reason, "CreateContainerConfigError");
        assert!(
            !check.terminal,
            "the kubelet syncs its cache and tries again"
        );
    }

    #[test]
    fn a_pod_is_held_before_starting_only_while_none_of_its_containers_ever_ran() {
        let waiting = |reason: &str| {
            pod(serde_json::json!({
                "phase": "Pending",
                "containerStatuses": [{"name": "migrate", "ready": false, "restartCount": 0,
                    "state": {"waiting": {"reason": reason}}}]
            }))
        };
        for refused in [
            "CreateContainerConfigError",
            "ErrImageNeverPull",
            "ImagePullBackOff",
        ] {
            assert!(held_before_starting(&waiting(refused)), "{refused}");
        }
        let unschedulable = pod(serde_json::json!({
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]
        }));
        assert!(held_before_starting(&unschedulable));
        // Being created, or running, or having run once: not held.
        assert!(!held_before_starting(&waiting("ContainerCreating")));
        assert!(!held_before_starting(&pod(
            serde_json::json!({"phase": "Pending"})
        )));
        let running = pod(serde_json::json!({
            "phase": "Running",
            "containerStatuses": [{"name": "migrate", "ready": true, "restartCount": 0,
                "state": {"running": {}}}]
        }));
        assert!(!held_before_starting(&running));
        let ran_once = pod(serde_json::json!({
            "phase": "Pending",
            "containerStatuses": [{"name": "migrate", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "CreateContainerConfigError"}},
                "lastState": {"terminated": {"exitCode": 1}}}]
        }));
        assert!(!held_before_starting(&ran_once));
    }

    #[test]
    fn an_unschedulable_pod_and_a_failing_readiness_probe_are_named() {
        let unschedulable = pod(serde_json::json!({
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient cpu."}]
        }));
        let check = first_trouble([&unschedulable]).unwrap();
        assert_eq!(check.reason, "Unschedulable");
        assert!(check.message.ends_with("3 Insufficient cpu."));
        let binding = pod(serde_json::json!({
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims. not found"}]
        }));
        assert_eq!(
            first_trouble([&binding]),
            None,
            "a volume being provisioned"
        );
        let not_ready = pod(serde_json::json!({
            "phase": "Running",
            "conditions": [{"type": "ContainersReady", "status": "False"}],
            "containerStatuses": [{"name": "backend", "ready": false, "restartCount": 0,
                "state": {"running": {}}}]
        }));
        assert_eq!(first_trouble([&not_ready]).unwrap().reason, "NotReady");
        let mut migrating = not_ready.clone();
        migrating.metadata.owner_references = Some(vec![serde_json::from_value(
            serde_json::json!({"apiVersion": "batch/v1", "kind": "Job", "name": "shop-migrate-1a2b", "uid": "u"}),
        )
        .unwrap()]);
        assert_eq!(first_trouble([&migrating]), None, "a Job's pod only runs");
        let starting = pod(serde_json::json!({
            "phase": "Pending",
            "containerStatuses": [{"name": "backend", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ContainerCreating"}}}]
        }));
        assert_eq!(
            first_trouble([&starting]),
            None,
            "merely starting is no trouble"
        );
    }

    #[test]
    fn a_failed_containers_output_is_cut_to_its_last_lines() {
        let output: String = (1..=20).map(|line| format!("line {line}\n")).collect();
        let failed = pod(serde_json::json!({
            "phase": "Failed",
            "containerStatuses": [{"name": "migrate", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 1, "reason": "Error", "message": output}}}]
        }));
        let tail = failure_output(&failed).unwrap();
        assert_eq!(tail.lines().count(), OUTPUT_LINES);
        assert!(
            tail.starts_with("line 13") && tail.ends_with("line 20"),
            "{tail}"
        );
        let long = "x".repeat(5000);
        let failed = pod(serde_json::json!({
            "containerStatuses": [{"name": "migrate", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 1, "message": long}}}]
        }));
        assert_eq!(
            failure_output(&failed).unwrap().chars().count(),
            OUTPUT_CHARACTERS + 1
        );
    }
}
