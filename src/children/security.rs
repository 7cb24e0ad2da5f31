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
