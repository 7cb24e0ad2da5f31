//! The security settings every pod the operator generates runs with: those
//! Pod Security `restricted` asks for, so the stack runs in a namespace
//! that enforces it.

use k8s_openapi::api::core::v1::{
    Capabilities, PodSecurityContext, SeccompProfile, SecurityContext,
};

/// The pod's context: never root, the container runtime's default seccomp
/// profile. `run_as_user` is the UID to run as where the image's own user
/// is not a non-root UID the kubelet can check (a user name, or none).
pub fn pod(run_as_user: Option<i64>) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user,
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// A container's context: no privilege escalation, no capabilities.
pub fn container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PodSpec;

    use crate::api::stack::tests::{example, from_yaml};
    use crate::children::build_for_test;

    #[test]
    fn every_generated_pod_runs_restricted() {
        let stack = from_yaml(
            &include_str!("../../deploy/examples/shop.yaml")
                .replace("    port: 3000\n", "    port: 3000\n    runAsUser: 101\n"),
        );
        let children = build_for_test(&stack);
        let frontend = children.frontend.unwrap();
        let job = children.migration_job.unwrap().spec.unwrap();
        let pods: Vec<(&str, PodSpec)> = vec![
            (
                "database",
                children
                    .database
                    .unwrap()
                    .statefulset
                    .spec
                    .template
                    .spec
                    .unwrap(),
            ),
            ("migration", job.template.spec.unwrap()),
            (
                "backend",
                children.backend.deployment.spec.template.spec.unwrap(),
            ),
            ("frontend", frontend.deployment.spec.template.spec.unwrap()),
        ];
        for (component, pod) in &pods {
            let context = pod.security_context.as_ref().unwrap();
            assert_eq!(context.run_as_non_root, Some(true), "{component}");
            assert_eq!(
                context.seccomp_profile.as_ref().unwrap().type_,
                "RuntimeDefault",
                "{component}"
            );
            for container in &pod.containers {
                let context = container.security_context.as_ref().unwrap();
                assert_eq!(
                    context.allow_privilege_escalation,
                    Some(false),
                    "{component}"
                );
                let capabilities = context.capabilities.as_ref().unwrap();
                assert_eq!(capabilities.drop.as_deref(), Some(&["ALL".to_string()][..]));
                assert!(capabilities.add.is_none(), "{component}");
            }
        }
        let user = |index: usize| pods[index].1.security_context.as_ref().unwrap().run_as_user;
        assert_eq!(user(0), Some(70), "the postgres user of the Alpine images");
        assert_eq!(
            user(1),
            None,
            "the image's own user, checked non-root by the kubelet"
        );
        assert_eq!(user(2), None);
        assert_eq!(user(3), Some(101));

        let mut stack = example();
        stack.backend.run_as_user = Some(1000);
        let job = crate::children::migration::migration_job(
            &stack,
            stack.managed_database_identity().as_ref(),
        )
        .unwrap();
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(
            pod.security_context.unwrap().run_as_user,
            Some(1000),
            "migrations run as the backend's user unless they say otherwise"
        );
    }
}
