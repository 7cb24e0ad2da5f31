//! `appstack render`: the children an AppStack would get, built by the same
//! functions the controller uses, with no cluster involved.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;

use crate::api::crd::AppStack;
use crate::api::stack::{Database, DatabaseIdentity, InvalidSpec, ValidatedStack};
use crate::children;
use crate::database::DatabaseUrl;
use crate::database::url::UrlError;
use crate::import::PLACEHOLDER_IMAGE_PREFIX;
use crate::reconcile::plan::{self, Object};
use crate::secrets::{self, SecretValue};
use crate::stages;

/// Stand-in for the UID the API server assigns.
pub const PLACEHOLDER_UID: &str = "<uid>";

/// Why rendering failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("document {index}: {source}")]
    Parse {
        index: usize,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("document {index} is not a Kubernetes object: it has no kind")]
    NoKind { index: usize },
    #[error("document {index} (AppStack {name}): {source}")]
    Invalid {
        index: usize,
        name: String,
        #[source]
        source: InvalidSpec,
    },
    #[error(
        "AppStack {stack} reads key {key:?} of Secret {secret:?}, which the Secret in this file does not have"
    )]
    MissingKey {
        stack: String,
        secret: String,
        key: String,
    },
    #[error(
        "AppStack {stack}: the database URL in Secret {secret:?} key {key:?} is unusable: {source}"
    )]
    DatabaseUrl {
        stack: String,
        secret: String,
        key: String,
        #[source]
        source: UrlError,
    },
    #[error(
        "AppStack {stack}: {field} is {image:?}, a placeholder appstack import writes for an image only built on the developer's machine: build and push it, then set {field} (or rerun appstack import compose with --image SERVICE=IMAGE)"
    )]
    PlaceholderImage {
        stack: String,
        field: &'static str,
        image: String,
    },
    #[error("no AppStack in the input")]
    NoStack,
}

/// What `render` made of its input: the children, and a line per document
/// of the input saying whether it was rendered, read or ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub output: String,
    pub documents: Vec<String>,
}

/// Renders every AppStack in a YAML stream as a YAML stream of children, in
/// the order the controller applies them. The stream may hold the Secrets
/// the stacks reference beside them, as users keep them: their keys are
/// checked, and their values show as placeholders like every secret value.
/// An external database's URL in such a Secret locates the database (the
/// migration Job's revision and the NetworkPolicies follow it, as in a
/// cluster); without it, a comment says the Job's name in a cluster
/// differs. Other kinds are not the operator's and are skipped. The
/// ServiceMonitor and HTTPRoute are shown whenever asked for (in a cluster
/// they are applied only where their API is served).
pub fn render(input: &str, default_namespace: &str) -> Result<String, RenderError> {
    render_documents(input, default_namespace).map(|rendered| rendered.output)
}

/// [`render`], with what became of each document of the input.
pub fn render_documents(input: &str, default_namespace: &str) -> Result<Rendered, RenderError> {
    let mut stacks = Vec::new();
    let mut secrets: BTreeMap<(String, String), Secret> = BTreeMap::new();
    let mut documents = Vec::new();
    for (number, document) in serde_yaml::Deserializer::from_str(input).enumerate() {
        let index = number + 1;
        let parse = |source| RenderError::Parse { index, source };
        let value = serde_yaml::Value::deserialize(document).map_err(parse)?;
        if value.is_null() {
            documents.push(format!("document {index}: empty, ignored"));
            continue;
        }
        let namespace = value["metadata"]["namespace"]
            .as_str()
            .unwrap_or(default_namespace)
            .to_string();
        let name = value["metadata"]["name"].as_str().unwrap_or("").to_string();
        match value["kind"].as_str() {
            Some("AppStack") => {
                let stack: AppStack = serde_yaml::from_value(value).map_err(parse)?;
                documents.push(format!("document {index}: AppStack {name}, rendered"));
                stacks.push((index, namespace, stack));
            }
            Some("Secret") => {
                let secret: Secret = serde_yaml::from_value(value).map_err(parse)?;
                documents.push(format!(
                    "document {index}: Secret {name}, read for the keys the stacks reference"
                ));
                secrets.insert((namespace, name), secret);
            }
            Some(kind) => documents.push(format!(
                "document {index}: {kind} {name}, ignored: not the operator's"
            )),
            None => return Err(RenderError::NoKind { index }),
        }
    }
    if stacks.is_empty() {
        return Err(RenderError::NoStack);
    }
    let mut output = String::new();
    for (index, namespace, stack) in stacks {
        let name = stack.metadata.name.clone().unwrap_or_default();
        refuse_placeholder_images(&name, &stack)?;
        let validated = ValidatedStack::from_parts(
            name.clone(),
            namespace.clone(),
            PLACEHOLDER_UID.into(),
            stack.metadata.generation.unwrap_or(1),
            &stack.spec,
        )
        .map_err(|source| RenderError::Invalid {
            index,
            name: name.clone(),
            source,
        })?;
        let mut identity = None;
        for reference in stack.spec.referenced_keys() {
            let Some(secret) = secrets.get(&(namespace.clone(), reference.name.clone())) else {
                continue;
            };
            let Some(value) = secret_value(secret, &reference.key) else {
                return Err(RenderError::MissingKey {
                    stack: name,
                    secret: reference.name.clone(),
                    key: reference.key.clone(),
                });
            };
            if let Database::External { url_secret_ref } = &validated.database
                && url_secret_ref == reference
            {
                let url = DatabaseUrl::parse(value.expose()).map_err(|source| {
                    RenderError::DatabaseUrl {
                        stack: name.clone(),
                        secret: reference.name.clone(),
                        key: reference.key.clone(),
                        source,
                    }
                })?;
                identity = Some(url.identity());
            }
        }
        let located = identity.is_some();
        let identity = identity.unwrap_or_else(|| rendered_identity(&validated));
        let children = plan::by_stage(children::build(
            &validated,
            &secrets::placeholders(&validated),
            Some(&identity),
            None,
            &rendered_checksum(&validated),
        ));
        for stage in stages::ORDER {
            for desired in &children[&stage] {
                let object = match &desired.object {
                    Object::Secret(secret) => Object::Secret(readable(secret.clone())),
                    other => other.clone(),
                };
                output.push_str("---\n");
                if let (Object::Job(_), Database::External { url_secret_ref }, false) =
                    (&object, &validated.database, located)
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
    Ok(Rendered { output, documents })
}

/// An image `appstack import` left as a placeholder (`<built from ...>`),
/// which the API server's schema refuses too: rendering it would show
/// children no cluster can run.
fn refuse_placeholder_images(name: &str, stack: &AppStack) -> Result<(), RenderError> {
    let images = [
        ("spec.backend.image", Some(&stack.spec.backend.image)),
        (
            "spec.frontend.image",
            stack.spec.frontend.as_ref().map(|frontend| &frontend.image),
        ),
        (
            "spec.migrations.image",
            stack
                .spec
                .migrations
                .as_ref()
                .and_then(|migrations| migrations.image.as_ref()),
        ),
    ];
    for (field, image) in images {
        if let Some(image) = image
            && image.starts_with(PLACEHOLDER_IMAGE_PREFIX)
        {
            return Err(RenderError::PlaceholderImage {
                stack: name.to_string(),
                field,
                image: image.clone(),
            });
        }
    }
    Ok(())
}

/// A key's value in a Secret as written in a file: `data` (base64, decoded
/// by the type) or `stringData`.
fn secret_value(secret: &Secret, key: &str) -> Option<SecretValue> {
    let data = secret.data.as_ref().and_then(|data| data.get(key));
    let string = secret.string_data.as_ref().and_then(|data| data.get(key));
    data.map(|value| SecretValue::new(value.0.clone()))
        .or_else(|| string.map(|value| SecretValue::new(value.as_bytes().to_vec())))
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

    fn kinds_and_names(output: &str) -> Vec<String> {
        serde_yaml::Deserializer::from_str(output)
            .map(|document| {
                let value = serde_yaml::Value::deserialize(document).unwrap();
                format!(
                    "{} {}",
                    value["kind"].as_str().unwrap(),
                    value["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect()
    }

    fn document(output: &str, kind_and_name: &str) -> serde_yaml::Value {
        serde_yaml::Deserializer::from_str(output)
            .map(|document| serde_yaml::Value::deserialize(document).unwrap())
            .find(|value| {
                format!(
                    "{} {}",
                    value["kind"].as_str().unwrap(),
                    value["metadata"]["name"].as_str().unwrap()
                ) == kind_and_name
            })
            .unwrap_or_else(|| panic!("no {kind_and_name} in the output"))
    }

    #[test]
    fn renders_every_child_in_stage_order_with_placeholders_for_secrets() {
        let output = render(include_str!("../../deploy/examples/shop.yaml"), "prod").unwrap();
        let kinds = kinds_and_names(&output);
        let job = kinds
            .iter()
            .find(|kind| kind.starts_with("Job shop-migrate-"))
            .unwrap();
        assert_eq!(
            kinds,
            [
                "Secret shop-db",
                "Secret shop-env",
                "ConfigMap shop-env",
                "NetworkPolicy shop-default-deny",
                "NetworkPolicy shop-database",
                "NetworkPolicy shop-migration",
                "NetworkPolicy shop-backend",
                "NetworkPolicy shop-frontend",
                "Service shop-db",
                "StatefulSet shop-db",
                job,
                "Service shop-backend",
                "Deployment shop-backend",
                "PodDisruptionBudget shop-backend",
                "Service shop-frontend",
                "Deployment shop-frontend",
                "PodDisruptionBudget shop-frontend",
                "Ingress shop",
                "ServiceMonitor shop-backend",
            ]
        );
        let env: Secret = serde_yaml::from_value(document(&output, "Secret shop-env")).unwrap();
        let data = env.string_data.unwrap();
        assert_eq!(data["SECRET_KEY"], "<generated: 48 characters>");
        assert_eq!(data["SENDGRID_API_KEY"], "<from Secret sendgrid/api-key>");
    }

    const WITH_SECRETS: &str = "\
apiVersion: v1
kind: Secret
metadata: {name: sendgrid}
stringData: {api-key: SG.not-for-output}
---
apiVersion: v1
kind: Secret
metadata: {name: prod-db}
data: {url: cG9zdGdyZXNxbDovL2FwcDpodW50ZXIyQDEwLjEuMi4zOjY0MzIvc2hvcA==}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: unrelated}
data: {a: b}
";

    fn external_stack(name: &str) -> String {
        include_str!("../../deploy/examples/shop.yaml")
            .replace("name: shop\n", &format!("name: {name}\n"))
            .replace(
                "    managed:\n      image: postgres:16-alpine\n      storage: {size: 10Gi}\n      deletionPolicy: Retain\n",
                "    external: {urlSecretRef: {name: prod-db, key: url}}\n",
            )
    }

    #[test]
    fn a_multi_document_file_renders_every_stack_with_its_secrets_as_placeholders() {
        let input = format!(
            "{WITH_SECRETS}---\n{}---\n{}",
            include_str!("../../deploy/examples/shop.yaml"),
            external_stack("api")
        );
        let output = render(&input, "prod").unwrap();
        assert!(
            !output.contains("SG.not-for-output"),
            "no value of the file's Secrets"
        );
        assert!(
            !output.contains("hunter2"),
            "no part of the database URL's credentials"
        );
        let kinds = kinds_and_names(&output);
        assert!(kinds.contains(&"Deployment shop-backend".to_string()));
        assert!(kinds.contains(&"Deployment api-backend".to_string()));
        assert!(
            !kinds
                .iter()
                .any(|kind| kind.starts_with("ConfigMap unrelated"))
        );
        assert!(
            !kinds.contains(&"Secret sendgrid".to_string()),
            "the user's Secrets are theirs"
        );
        let env: Secret = serde_yaml::from_value(document(&output, "Secret api-env")).unwrap();
        assert_eq!(
            env.string_data.unwrap()["SENDGRID_API_KEY"],
            "<from Secret sendgrid/api-key>"
        );
        let egress = &document(&output, "NetworkPolicy api-backend")["spec"]["egress"][1];
        assert_eq!(
            serde_json::to_value(egress).unwrap(),
            serde_json::json!({"to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}],
                               "ports": [{"port": 6432, "protocol": "TCP"}]}),
            "the file's database URL locates the database"
        );
    }

    const EXAMPLE: &str = include_str!("../../deploy/examples/shop.yaml");

    #[test]
    fn an_image_left_as_a_placeholder_is_refused_naming_the_field() {
        let stack = EXAMPLE.replace(
            "image: ghcr.io/acme/shop-frontend:1.4.2",
            "image: \"<built from ./web: pass --image web=IMAGE>\"",
        );
        assert_ne!(stack, EXAMPLE, "the example has a frontend image");
        let error = render(&stack, "prod").unwrap_err().to_string();
        assert!(
            error.starts_with(
                "AppStack shop: spec.frontend.image is \"<built from ./web: pass --image web=IMAGE>\", a placeholder"
            ),
            "{error}"
        );
    }

    #[test]
    fn each_document_of_the_input_is_said_used_or_ignored() {
        let input = format!(
            "{EXAMPLE}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: extra}}\n---\n\
             apiVersion: v1\nkind: Secret\nmetadata: {{name: sendgrid}}\nstringData: {{api-key: x}}\n"
        );
        let rendered = render_documents(&input, "prod").unwrap();
        assert_eq!(
            rendered.documents,
            [
                "document 1: AppStack shop, rendered",
                "document 2: ConfigMap extra, ignored: not the operator's",
                "document 3: Secret sendgrid, read for the keys the stacks reference",
            ]
        );
        assert_eq!(rendered.output, render(&input, "prod").unwrap());
    }

    #[test]
    fn a_key_missing_from_a_secret_in_the_file_is_an_error() {
        let input = format!(
            "{}---\n{}",
            WITH_SECRETS.replace("api-key: SG", "other-key: SG"),
            include_str!("../../deploy/examples/shop.yaml")
        );
        let error = render(&input, "prod").unwrap_err().to_string();
        assert_eq!(
            error,
            "AppStack shop reads key \"api-key\" of Secret \"sendgrid\", which the Secret in this file does not have"
        );
    }

    #[test]
    fn invalid_documents_are_errors_naming_the_document() {
        let error = render("apiVersion: v1\nkind: AppStack\nspec: 3\n", "default")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("document 1:"), "{error}");
        let error = render("a: b\n", "default").unwrap_err().to_string();
        assert_eq!(
            error,
            "document 1 is not a Kubernetes object: it has no kind"
        );
        let error = render(WITH_SECRETS, "default").unwrap_err().to_string();
        assert_eq!(error, "no AppStack in the input");
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

    #[test]
    fn a_generate_length_the_schema_forbids_is_an_error_not_an_empty_secret() {
        let input = include_str!("../../deploy/examples/shop.yaml")
            .replace("generate: {length: 48}", "generate: {length: -5}");
        let error = render(&input, "prod").unwrap_err();
        assert_eq!(
            error.to_string(),
            "document 1 (AppStack shop): spec.env[SECRET_KEY].generate.length must be between 16 and 256 characters, not -5"
        );
    }
}
