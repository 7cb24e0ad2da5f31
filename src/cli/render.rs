//! `appstack render`: the children an AppStack would get, built by the same
//! functions the controller uses, with no cluster involved.

use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;

use crate::children;
use crate::crd::AppStack;
use crate::reconcile::plan::{self, Object};
use crate::secrets;
use crate::stack::{Database, DatabaseIdentity, InvalidSpec, ValidatedStack};
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
/// only where its API is served). The migration Job of an external database
/// carries a revision computed without the URL in the user's Secret, which
/// render does not read; a comment says its name in a cluster differs.
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
            Some(&rendered_identity(&validated)),
            &rendered_checksum(&validated),
        ));
        for stage in stages::ORDER {
            for desired in &children[&stage] {
                let object = match &desired.object {
                    Object::Secret(secret) => Object::Secret(readable(secret.clone())),
                    other => other.clone(),
                };
                output.push_str("---\n");
                if let (Object::Job(_), Database::External { url_secret_ref }) =
                    (&object, &validated.database)
                {
                    output.push_str(&format!(
                        "# In a cluster this Job's name differs: its revision covers the host, port \
                         and database of the URL in Secret {} key {}.\n",
                        url_secret_ref.name, url_secret_ref.key
                    ));
                }
                output.push_str(
                    &serde_yaml::to_string(&object.to_value()).expect("children always serialize"),
                );
            }
        }
    }
    Ok(output)
}

/// The database identity a migration revision is rendered with: the
/// managed database's, or a stand-in naming the external URL's Secret.
fn rendered_identity(stack: &ValidatedStack) -> DatabaseIdentity {
    match &stack.database {
        Database::Managed(_) => DatabaseIdentity::Managed {
            database: stack.database_name.clone(),
        },
        Database::External { url_secret_ref } => DatabaseIdentity::External {
            host: format!(
                "<from Secret {}/{}>",
                url_secret_ref.name, url_secret_ref.key
            ),
            port: 0,
            database: String::new(),
        },
    }
}

/// A stand-in for the backend's config checksum, which in a cluster hashes
/// the versions of its configuration sources.
fn rendered_checksum(stack: &ValidatedStack) -> String {
    let sources: Vec<String> = children::config_sources(stack)
        .into_iter()
        .map(|(source, name)| format!("{source:?} {name}"))
        .collect();
    format!("<versions of {}>", sources.join(", "))
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
    fn an_external_database_job_says_its_name_differs_in_a_cluster() {
        let input = include_str!("../../deploy/examples/shop.yaml").replace(
            "    managed:\n      image: postgres:16-alpine\n      storage: {size: 10Gi}\n      deletionPolicy: Retain\n",
            "    external:\n      urlSecretRef: {name: prod-db, key: DATABASE_URL}\n",
        );
        let output = render(&input, "prod").unwrap();
        let job = output
            .split("---\n")
            .find(|document| document.contains("kind: Job"))
            .expect("the Job is shown");
        assert!(job.starts_with(
            "# In a cluster this Job's name differs: its revision covers the host, port and database of the URL in Secret prod-db key DATABASE_URL.\n"
        ), "{job}");
    }

    #[test]
    fn an_invalid_document_is_an_error() {
        assert!(render("apiVersion: v1\nkind: AppStack\nspec: 3\n", "default").is_err());
    }
}
