//! The backend: a Deployment with the application env, `DATABASE_URL` and
//! the pool settings, behind a Service.

use super::meta::{CONFIG_CHECKSUM_ANNOTATION, Component};
use super::pod::application_env;
use super::workload::{Workload, WorkloadSpec, workload};
use crate::api::stack::ValidatedStack;

/// The backend's Deployment and Service. `checksum` is the config checksum;
/// it goes into the pod template so a config change rolls the pods.
pub fn backend(stack: &ValidatedStack, checksum: &str) -> Workload {
    let spec = &stack.backend;
    let (env, env_from) = application_env(stack);
    let mut pod_annotations = spec.pod_annotations.clone();
    pod_annotations.insert(CONFIG_CHECKSUM_ANNOTATION.into(), checksum.into());
    workload(
        stack,
        WorkloadSpec {
            component: Component::Backend,
            image: &spec.image,
            command: spec.command.as_ref(),
            args: spec.args.as_ref(),
            replicas: spec.replicas,
            port: spec.port,
            resources: spec.resources.as_ref(),
            pod_labels: &spec.pod_labels,
            pod_annotations,
            health: spec.health.as_ref(),
            run_as_user: spec.run_as_user,
            env,
            env_from,
            service_account_name: spec.service_account_name.as_ref(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::stack::tests::example;

    #[test]
    fn deployment_runs_the_image_with_env_by_reference_and_probes() {
        let stack = example();
        let Workload {
            deployment,
            service,
            disruption_budget,
        } = backend(&stack, "abc123");
        assert_eq!(
            disruption_budget.unwrap().metadata.name.as_deref(),
            Some("shop-backend"),
            "two replicas: a budget"
        );
        assert_eq!(deployment.metadata.name.as_deref(), Some("shop-backend"));
        let spec = deployment.spec;
        assert_eq!(spec.replicas, Some(2));
        let selector = spec.selector.match_labels.unwrap();
        assert_eq!(selector["app.kubernetes.io/component"], "backend");
        assert!(
            selector.values().all(|value| !value.contains("1.4.2")),
            "no version in selector"
        );
        let template = spec.template;
        assert_eq!(
            template.metadata.unwrap().annotations.unwrap()[CONFIG_CHECKSUM_ANNOTATION],
            "abc123"
        );
        let pod = template.spec.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.service_account_name, None);
        let container = &pod.containers[0];
        assert_eq!(
            container.image.as_deref(),
            Some("ghcr.io/acme/shop-backend:1.4.2")
        );
        assert_eq!(container.command.as_ref().unwrap()[0], "uvicorn");
        let env: Vec<_> = container
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|var| (var.name.as_str(), var.value.as_deref()))
            .collect();
        assert_eq!(
            env,
            [
                ("DATABASE_URL", None),
                ("DB_POOL_SIZE", Some("20")),
                ("DB_POOL_TIMEOUT", Some("30"))
            ]
        );
        let url = container.env.as_ref().unwrap()[0]
            .value_from
            .clone()
            .unwrap();
        assert_eq!(url.secret_key_ref.unwrap().name, "shop-db");
        let probe = container
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(probe.path.as_deref(), Some("/health"));
        let resources = container.resources.as_ref().unwrap();
        assert_eq!(resources.requests.as_ref().unwrap()["cpu"].0, "100m");
        assert_eq!(resources.limits.as_ref().unwrap()["memory"].0, "512Mi");
        assert_eq!(container.ports.as_ref().unwrap()[0].container_port, 8000);
        assert_eq!(service.spec.unwrap().ports.unwrap()[0].port, 8000);
    }

    #[test]
    fn a_named_service_account_gets_its_token() {
        let mut stack = example();
        stack.backend.service_account_name = Some("shop-api".into());
        let pod = backend(&stack, "abc123")
            .deployment
            .spec
            .template
            .spec
            .unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("shop-api"));
        assert_eq!(pod.automount_service_account_token, Some(true));
    }

    #[test]
    fn unset_replicas_are_left_to_others() {
        let stack = crate::api::stack::tests::from_yaml(
            &include_str!("../../deploy/examples/shop.yaml").replacen("    replicas: 2\n", "", 1),
        );
        assert_eq!(stack.backend.replicas, None);
        let deployment = backend(&stack, "abc123").deployment;
        assert_eq!(deployment.spec.replicas, None);
    }
}
