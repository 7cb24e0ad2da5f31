//! `appstack render`: the children an AppStack would get, built by the same
//! functions the controller uses, with no cluster involved.

use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;

use crate::children;
use crate::crd::AppStack;
use crate::reconcile::plan::{self, Object};
use crate::secrets;
use crate::stack::{InvalidSpec, ValidatedStack};
use crate::stages;

/// Stand-in for the UID the API server assigns.
pub const PLACEHOLDER_UID: &str = "<uid>";

/// Why rendering failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("not an AppStack: {0}")]
    Parse(#[from] serde_yaml::Error),
    #[error(transparent)]
    Invalid(#[from] InvalidSpec),
}

/// Renders every AppStack in a YAML stream as a YAML stream of children, in
/// the order the controller applies them. Secret values are placeholders;
/// the ServiceMonitor is shown whenever enabled (in a cluster it is applied
/// only where its API is served).
pub fn render(input: &str, default_namespace: &str) -> Result<String, RenderError> {
    let mut output = String::new();
    for document in serde_yaml::Deserializer::from_str(input) {
        let value = serde_yaml::Value::deserialize(document)?;
        if value.is_null() {
            continue;
        }
        let stack: AppStack = serde_yaml::from_value(value)?;
        let namespace = stack
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| default_namespace.to_string());
        let name = stack.metadata.name.clone().unwrap_or_default();
        let validated = ValidatedStack::from_parts(
            name,
            namespace,
            PLACEHOLDER_UID.into(),
            stack.metadata.generation.unwrap_or(1),
            &stack.spec,
        )?;
        let children = plan::by_stage(children::build(
            &validated,
            &secrets::placeholders(&validated),
        ));
        for stage in stages::ORDER {
            for desired in &children[&stage] {
                let object = match &desired.object {
                    Object::Secret(secret) => Object::Secret(readable(secret.clone())),
                    other => other.clone(),
                };
                output.push_str("---\n");
                output.push_str(
                    &serde_yaml::to_string(&object.to_value()).expect("children always serialize"),
                );
            }
        }
    }
    Ok(output)
}

/// A Secret with its (placeholder) data as `stringData`, so a reader sees
/// `<generated: 48 characters>` rather than base64.
fn readable(mut secret: Secret) -> Secret {
    secret.string_data = secret.data.take().map(|data| {
        data.into_iter()
            .map(|(key, value)| (key, String::from_utf8_lossy(&value.0).into_owned()))
            .collect()
    });
    secret
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_child_with_placeholders_for_secrets() {
        let output = render(include_str!("../../deploy/examples/shop.yaml"), "prod").unwrap();
        let kinds: Vec<String> = serde_yaml::Deserializer::from_str(&output)
            .map(|document| {
                let value = serde_yaml::Value::deserialize(document).unwrap();
                format!(
                    "{} {}",
                    value["kind"].as_str().unwrap(),
                    value["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(
            kinds[..7],
            [
                "Secret shop-db",
                "Secret shop-env",
                "ConfigMap shop-env",
                "Service shop-db",
                "StatefulSet shop-db",
                &kinds[5],
                "Service shop-backend",
            ]
        );
        assert!(kinds[5].starts_with("Job shop-migrate-"));
        assert_eq!(
            kinds[7..],
            [
                "Deployment shop-backend",
                "Service shop-frontend",
                "Deployment shop-frontend",
                "ServiceMonitor shop-backend"
            ]
        );
        let env: Secret = serde_yaml::from_str(output.split("---\n").nth(2).unwrap()).unwrap();
        let data = env.string_data.unwrap();
        assert_eq!(data["SECRET_KEY"], "<generated: 48 characters>");
        assert_eq!(data["SENDGRID_API_KEY"], "<from Secret sendgrid/api-key>");
    }

    #[test]
    fn an_invalid_document_is_an_error() {
        assert!(render("apiVersion: v1\nkind: AppStack\nspec: 3\n", "default").is_err());
    }
}
