//! The stack's configuration: the `<stack>-db` and `<stack>-env` Secrets and
//! the `<stack>-env` ConfigMap.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};

use super::meta::{Component, database_name, env_name, object_meta};
use crate::api::stack::{Database, EnvSource, ValidatedStack};
use crate::secrets::{SecretValue, SecretValues};

/// The plain env entries, as the ConfigMap holds them.
pub fn plain_env(stack: &ValidatedStack) -> BTreeMap<String, String> {
    stack
        .env
        .iter()
        .filter_map(|var| match &var.source {
            EnvSource::Plain(value) => Some((var.name.clone(), value.clone())),
            _ => None,
        })
        .collect()
}

/// ConfigMap `<stack>-env`: the plain env. Always present (possibly empty)
/// so pods can reference it unconditionally.
pub fn env_config_map(stack: &ValidatedStack) -> ConfigMap {
    ConfigMap {
        metadata: object_meta(stack, env_name(stack), Component::Config),
        data: super::pod::non_empty(plain_env(stack)),
        ..ConfigMap::default()
    }
}

/// Secret `<stack>-env`: generated and referenced env values.
pub fn env_secret(stack: &ValidatedStack, secrets: &SecretValues) -> Secret {
    Secret {
        metadata: object_meta(stack, env_name(stack), Component::Config),
        type_: Some("Opaque".into()),
        data: super::pod::non_empty(secret_data(&secrets.env)),
        ..Secret::default()
    }
}

/// Secret `<stack>-db`: the managed database's credentials and URL. It has
/// no ownerReference under `deletionPolicy: Retain`, so it outlives the stack
/// together with the data volume it unlocks.
pub fn database_secret(stack: &ValidatedStack, secrets: &SecretValues) -> Option<Secret> {
    let Database::Managed(_) = stack.database else {
        return None;
    };
    let mut metadata = object_meta(stack, database_name(stack), Component::Database);
    if !stack.deletes_database_with_stack() {
        metadata.owner_references = None;
    }
    Some(Secret {
        metadata,
        type_: Some("Opaque".into()),
        data: Some(secret_data(&secrets.database)),
        ..Secret::default()
    })
}

fn secret_data(values: &BTreeMap<String, SecretValue>) -> BTreeMap<String, ByteString> {
    values
        .iter()
        .map(|(key, value)| (key.clone(), ByteString(value.expose().to_vec())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::stack::tests::{example, from_yaml};
    use crate::secrets::placeholders;

    #[test]
    fn plain_env_goes_to_the_config_map_and_the_rest_to_the_secret() {
        let stack = example();
        let config = env_config_map(&stack);
        assert_eq!(config.metadata.name.as_deref(), Some("shop-env"));
        let data = config.data.unwrap();
        assert_eq!(
            data.keys().collect::<Vec<_>>(),
            ["CORS_ORIGINS", "LOG_LEVEL"]
        );
        assert_eq!(data["LOG_LEVEL"], "INFO");

        let secret = env_secret(&stack, &placeholders(&stack));
        let keys: Vec<_> = secret.data.unwrap().into_keys().collect();
        assert_eq!(keys, ["SECRET_KEY", "SENDGRID_API_KEY"]);
    }

    #[test]
    fn database_secret_is_retained_by_default_and_owned_under_delete() {
        let stack = example();
        let secret = database_secret(&stack, &placeholders(&stack)).unwrap();
        assert_eq!(secret.metadata.name.as_deref(), Some("shop-db"));
        assert!(secret.metadata.owner_references.is_none());
        let keys: Vec<_> = secret.data.unwrap().into_keys().collect();
        assert_eq!(
            keys,
            [
                "DATABASE_URL",
                "database",
                "host",
                "password",
                "port",
                "username"
            ]
        );

        let deleting = from_yaml(
            &include_str!("../../deploy/examples/shop.yaml")
                .replace("deletionPolicy: Retain", "deletionPolicy: Delete"),
        );
        let secret = database_secret(&deleting, &placeholders(&deleting)).unwrap();
        assert_eq!(
            secret.metadata.owner_references.unwrap()[0].uid,
            deleting.uid
        );
    }

    #[test]
    fn external_database_has_no_database_secret() {
        let stack = from_yaml(&external_example());
        assert!(database_secret(&stack, &placeholders(&stack)).is_none());
    }

    fn external_example() -> String {
        include_str!("../../deploy/examples/shop.yaml").replace(
            "    managed:\n      image: postgres:16-alpine\n      storage: {size: 10Gi}\n      deletionPolicy: Retain\n",
            "    external:\n      urlSecretRef: {name: prod-db, key: DATABASE_URL}\n",
        )
    }
}
