//! What backend and frontend have in common: a Deployment running one
//! container behind a Service.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvFromSource, EnvVar, HTTPGetAction, Lifecycle, LifecycleHandler,
    PodSpec, PodTemplateSpec, Probe, Service, ServicePort, ServiceSpec, SleepAction,
    TCPSocketAction,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::{Component, object_meta, selector_labels};
use super::pod::pod_labels;
use crate::api::crd::{HealthSpec, Resources};
use crate::api::stack::ValidatedStack;

/// A backend or frontend: its Deployment and Service, and a
/// PodDisruptionBudget when it runs more than one replica.
#[derive(Clone, Debug)]
pub struct Workload {
    pub deployment: Deployment,
    pub service: Service,
    pub disruption_budget: Option<PodDisruptionBudget>,
}

/// Name of the container port and Service port.
pub const HTTP_PORT_NAME: &str = "http";

/// How long a stopping pod keeps serving before its container gets SIGTERM.
/// The pod leaves its Service's endpoints when it starts stopping, but
/// kube-proxy on every node (and any load balancer) needs a moment to stop
/// sending it new connections, while a web server stops accepting them the
/// moment SIGTERM arrives: without this pause those connections are
/// refused. The kubelet sleeps itself (`preStop.sleep`), so the image needs
/// no shell.
pub const DRAIN_SECONDS: i64 = 5;

/// The time a stopping pod gets in all: the drain, then the server's own
/// graceful shutdown, finishing the requests in flight.
pub const TERMINATION_GRACE_SECONDS: i64 = DRAIN_SECONDS + 25;

/// One component's settings, taken from its spec.
pub struct WorkloadSpec<'a> {
    pub component: Component,
    pub image: &'a str,
    pub command: Option<&'a Vec<String>>,
    pub args: Option<&'a Vec<String>>,
    /// `None`: the Deployment's replicas are left to others (an HPA).
    pub replicas: Option<i32>,
    pub port: i32,
    pub resources: Option<&'a Resources>,
    pub pod_labels: &'a BTreeMap<String, String>,
    pub pod_annotations: BTreeMap<String, String>,
    pub health: Option<&'a HealthSpec>,
    pub run_as_user: Option<i64>,
    pub env: Vec<EnvVar>,
    pub env_from: Vec<EnvFromSource>,
    /// The user's ServiceAccount, whose token the pods then mount.
    pub service_account_name: Option<&'a String>,
}

/// Name of a component's Deployment and Service: `<stack>-<component>`.
pub fn workload_name(stack: &ValidatedStack, component: Component) -> String {
    format!("{}-{}", stack.name, component.as_str())
}

/// The Deployment and Service of a component.
pub fn workload(stack: &ValidatedStack, spec: WorkloadSpec<'_>) -> Workload {
    let name = workload_name(stack, spec.component);
    let selector = selector_labels(stack, spec.component);
    // Readiness asks the health path, which may depend on the database:
    // a pod that cannot serve leaves its Service. Liveness only asks whether
    // the server accepts connections: a backend whose database is away
    // (restarting, failing over) waits for it instead of being restarted
    // over and over, which would help nothing.
    let readiness_probe = spec.health.map(|health| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(health.path.clone()),
            port: IntOrString::String(HTTP_PORT_NAME.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(5),
        failure_threshold: Some(3),
        ..Probe::default()
    });
    let liveness_probe = spec.health.map(|_| Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String(HTTP_PORT_NAME.into()),
            ..TCPSocketAction::default()
        }),
        period_seconds: Some(10),
        failure_threshold: Some(6),
        ..Probe::default()
    });
    let container = Container {
        name: spec.component.as_str().into(),
        image: Some(spec.image.into()),
        command: spec.command.cloned(),
        args: spec.args.cloned(),
        ports: Some(vec![ContainerPort {
            name: Some(HTTP_PORT_NAME.into()),
            container_port: spec.port,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        env: (!spec.env.is_empty()).then_some(spec.env),
        env_from: (!spec.env_from.is_empty()).then_some(spec.env_from),
        resources: super::pod::resources(spec.resources),
        readiness_probe,
        liveness_probe,
        security_context: Some(super::security::container()),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: DRAIN_SECONDS,
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        ..Container::default()
    };
    let deployment = Deployment {
        metadata: object_meta(stack, name.clone(), spec.component),
        spec: DeploymentSpec {
            replicas: spec.replicas,
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels(stack, spec.component, spec.pod_labels)),
                    annotations: super::pod::non_empty(spec.pod_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    security_context: Some(super::security::pod(spec.run_as_user)),
                    termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
                    ..super::pod::pod_service_account(spec.service_account_name)
                }),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    };
    let service = Service {
        metadata: object_meta(stack, name, spec.component),
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some(HTTP_PORT_NAME.into()),
                port: spec.port,
                target_port: Some(IntOrString::String(HTTP_PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    Workload {
        deployment,
        service,
        disruption_budget: disruption_budget(stack, spec.component, spec.replicas),
    }
}

/// A PodDisruptionBudget `<stack>-<component>` letting a voluntary
/// disruption (a node drain) take one pod at a time, when there is more than
/// one. With a single replica a budget would block every drain. Replicas
/// left to others (`None`, an HPA) get one: at one pod, `maxUnavailable: 1`
/// still lets a drain through.
pub fn disruption_budget(
    stack: &ValidatedStack,
    component: Component,
    replicas: Option<i32>,
) -> Option<PodDisruptionBudget> {
    replicas
        .is_none_or(|replicas| replicas > 1)
        .then(|| PodDisruptionBudget {
            metadata: object_meta(stack, workload_name(stack, component), component),
            spec: Some(PodDisruptionBudgetSpec {
                max_unavailable: Some(IntOrString::Int(1)),
                selector: Some(LabelSelector {
                    match_labels: Some(selector_labels(stack, component)),
                    ..LabelSelector::default()
                }),
                ..PodDisruptionBudgetSpec::default()
            }),
            ..PodDisruptionBudget::default()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::stack::tests::example;

    #[test]
    fn readiness_asks_the_health_path_and_liveness_only_the_port() {
        let stack = example();
        let deployment = super::super::backend::backend(&stack, "abc123").deployment;
        let container = &deployment.spec.template.spec.unwrap().containers[0];
        let readiness = container.readiness_probe.as_ref().unwrap();
        assert_eq!(
            readiness.http_get.as_ref().unwrap().path.as_deref(),
            Some("/health")
        );
        // A backend whose database is away answers its health path with an
        // error: it leaves the Service, but is not restarted for it.
        let liveness = container.liveness_probe.as_ref().unwrap();
        assert!(liveness.http_get.is_none());
        assert_eq!(
            liveness.tcp_socket.as_ref().unwrap().port,
            IntOrString::String(HTTP_PORT_NAME.into())
        );
    }

    #[test]
    fn a_stopping_pod_drains_before_its_server_stops() {
        let stack = example();
        let deployments = [
            super::super::backend::backend(&stack, "abc123").deployment,
            super::super::frontend::frontend(&stack).unwrap().deployment,
        ];
        for deployment in deployments {
            let pod = deployment.spec.template.spec.unwrap();
            let pre_stop = pod.containers[0]
                .lifecycle
                .as_ref()
                .and_then(|lifecycle| lifecycle.pre_stop.as_ref())
                .expect("a preStop hook");
            assert_eq!(
                pre_stop.sleep.as_ref().map(|sleep| sleep.seconds),
                Some(DRAIN_SECONDS),
                "the kubelet sleeps: no shell needed in the image"
            );
            assert!(pre_stop.exec.is_none());
            let grace = pod.termination_grace_period_seconds.unwrap();
            assert!(
                grace >= DRAIN_SECONDS + 20,
                "the server has time to finish its requests after the drain: {grace}"
            );
        }
    }

    #[test]
    fn a_pod_budget_takes_one_pod_at_a_time_and_only_of_several() {
        let stack = example();
        let budget = disruption_budget(&stack, Component::Backend, Some(3)).unwrap();
        assert_eq!(budget.metadata.name.as_deref(), Some("shop-backend"));
        let spec = budget.spec.unwrap();
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(spec.min_available, None);
        assert_eq!(
            spec.selector.unwrap().match_labels.unwrap(),
            selector_labels(&stack, Component::Backend)
        );
        assert!(disruption_budget(&stack, Component::Frontend, Some(1)).is_none());
        assert!(disruption_budget(&stack, Component::Frontend, Some(0)).is_none());
        assert!(disruption_budget(&stack, Component::Frontend, None).is_some());
    }
}
