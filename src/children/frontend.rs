//! The frontend: a Deployment told where the backend is, behind a Service.

use super::meta::Component;
use super::pod::plain_var;
use super::workload::{Workload, WorkloadSpec, workload, workload_name};
use crate::api::stack::ValidatedStack;

/// The URL the backend Service answers on inside the cluster.
pub fn backend_url(stack: &ValidatedStack) -> String {
    format!(
        "http://{}.{}.svc:{}",
        workload_name(stack, Component::Backend),
        stack.namespace,
        stack.backend.port
    )
}

/// The backend's URL as the frontend hands it to the user's browser: the
/// public one when the stack is exposed, else the Service's.
pub fn api_url(stack: &ValidatedStack) -> String {
    stack
        .expose
        .as_ref()
        .map_or_else(|| backend_url(stack), |expose| expose.api_url())
}

/// The frontend's Deployment and Service, `None` without `spec.frontend`.
pub fn frontend(stack: &ValidatedStack) -> Option<Workload> {
    let spec = stack.frontend.as_ref()?;
    Some(workload(
        stack,
        WorkloadSpec {
            component: Component::Frontend,
            image: &spec.image,
            command: spec.command.as_ref(),
            args: spec.args.as_ref(),
            replicas: spec.replicas,
            port: spec.port,
            resources: spec.resources.as_ref(),
            pod_labels: &spec.pod_labels,
            pod_annotations: spec.pod_annotations.clone(),
            health: spec.health.as_ref(),
            run_as_user: spec.run_as_user,
            env: vec![plain_var(&spec.api_url_env, api_url(stack))],
            env_from: Vec::new(),
            service_account_name: None,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::stack::tests::{example, from_yaml};

    #[test]
    fn frontend_gets_the_backend_service_url() {
        let mut stack = example();
        stack.expose = None;
        let Workload {
            deployment,
            service,
            disruption_budget,
        } = frontend(&stack).unwrap();
        assert!(disruption_budget.is_some(), "two replicas: a budget");
        assert_eq!(deployment.metadata.name.as_deref(), Some("shop-frontend"));
        let pod = deployment.spec.template.spec.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        let container = &pod.containers[0];
        let env = &container.env.as_ref().unwrap()[0];
        assert_eq!(env.name, "REACT_APP_API_URL");
        assert_eq!(
            env.value.as_deref(),
            Some("http://shop-backend.prod.svc:8000")
        );
        assert!(container.env_from.is_none(), "no secrets for the frontend");
        assert!(
            container.readiness_probe.is_none(),
            "no health path, no probe"
        );
        assert_eq!(service.spec.unwrap().ports.unwrap()[0].port, 3000);
    }

    #[test]
    fn an_exposed_frontend_gets_the_public_api_url() {
        let stack = example();
        assert_eq!(api_url(&stack), "https://shop.example.com/api");
        let mut plain = stack.clone();
        plain.expose.as_mut().unwrap().tls = None;
        plain.expose.as_mut().unwrap().api_path = "/v1/api".into();
        assert_eq!(api_url(&plain), "http://shop.example.com/v1/api");
        let deployment = frontend(&stack).unwrap().deployment;
        let container = &deployment.spec.template.spec.unwrap().containers[0];
        assert_eq!(
            container.env.as_ref().unwrap()[0].value.as_deref(),
            Some("https://shop.example.com/api")
        );
    }

    #[test]
    fn no_frontend_no_children() {
        let yaml = include_str!("../../deploy/examples/shop.yaml");
        let start = yaml.find("  frontend:").unwrap();
        let end = yaml.find("  env:").unwrap();
        let stack = from_yaml(&format!("{}{}", &yaml[..start], &yaml[end..]));
        assert!(frontend(&stack).is_none());
    }
}
