//! Dereference: the secret values a stack's children carry — generated ones
//! kept from the stack's own Secrets, referenced ones copied from the user's
//! — and where its database is, read from the caches.
//!
//! Two reads go to the API server, both rare: a referenced Secret the cache
//! keeps without data (no stack referenced it when it was last seen), and,
//! before anything is generated, the stack's own Secrets, so a value that
//! exists but has not reached the cache yet is never generated anew.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};

use super::context::Context;
use crate::api::conditions::{Check, reasons};
use crate::api::stack::{Database, EnvSource, ValidatedStack};
use crate::children::{database::volume_claim_name, database_name, env_name};
use crate::database::{self, Failure, Located};
use crate::runtime::cache::Caches;
use crate::runtime::cache::slim::Slim;
use crate::secrets::{self, ObservedSecrets, Redactor, ResolveError, Resolved, SecretValue};

/// Secret types whose values are never copied into an application's
/// environment: credentials of the cluster itself.
pub const REFUSED_SECRET_TYPES: [&str; 2] = [
    "kubernetes.io/service-account-token",
    "bootstrap.kubernetes.io/token",
];

/// The type the stack's own Secrets have.
const OWN_SECRET_TYPE: &str = "Opaque";

/// Why the referenced values could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DereferenceError {
    #[error("reading Secret {name}: {source}")]
    Read {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("generating secret values: {0}")]
    Generate(#[source] ResolveError),
}

/// The stack's secret values and where its database is, or why they
/// cannot be had.
pub enum Dereferenced {
    Resolved {
        resolved: Resolved,
        /// The database, as far as the spec and the Secrets say; an external
        /// URL that cannot be used is the database stage's to report.
        located: Box<Result<Located, Failure>>,
        /// Hides the values resolved and read from every message.
        redactor: Redactor,
    },
    /// A referenced Secret, key or value cannot be used (yet), or a Secret
    /// of the stack's own name is in the way: the `SecretsReady` check.
    Unusable(Check),
    /// Secret `<stack>-db` is gone while the database volume made with its
    /// credentials is not: new credentials would not be accepted. The
    /// `DatabaseReady` check.
    CredentialsLost(Check),
}

/// Resolves every secret value of `stack`; `referenced` names the user's
/// Secrets it reads ([`crate::api::crd::AppStackSpec::referenced_secrets`], which
/// the cache's index follows too).
pub async fn dereference(
    context: &Context,
    stack: &ValidatedStack,
    referenced: &BTreeSet<&str>,
) -> Result<Dereferenced, DereferenceError> {
    let caches = &context.caches;
    let api: Api<Secret> = Api::namespaced(context.client.clone(), &stack.namespace);
    let mut observed = observe(caches, &api, stack, referenced).await?;
    let types = |name: &str| {
        caches
            .secrets
            .get(&stack.namespace, name)
            .and_then(|secret| secret.type_.clone())
    };
    if let Some(check) = unusable(stack, &observed, types) {
        return Ok(Dereferenced::Unusable(check));
    }
    let mut resolved = secrets::resolve(stack, &observed);
    if let Ok(first) = &resolved
        && (first.generated_database || !first.generated_env.is_empty())
    {
        // About to generate: the stack's own Secrets may exist beyond what
        // the cache has shown. Read them fresh and resolve again.
        for name in own_secrets(stack) {
            if let Some(secret) = read(&api, &name).await? {
                caches.secrets.record(secret);
            }
        }
        observed = observe(caches, &api, stack, referenced).await?;
        resolved = secrets::resolve(stack, &observed);
    }
    if let Ok(resolved) = &resolved
        && resolved.generated_database
        && let Some(volume) = caches
            .volumes
            .get(&stack.namespace, &volume_claim_name(stack))
    {
        return Ok(Dereferenced::CredentialsLost(credentials_lost(
            stack,
            &volume.name_any(),
        )));
    }
    match resolved {
        Ok(resolved) => {
            let located = database::locate(stack, &observed, &resolved.values);
            let redactor = Redactor::new(&resolved.values, &observed);
            Ok(Dereferenced::Resolved {
                resolved,
                located: Box::new(located),
                redactor,
            })
        }
        Err(ResolveError::MissingReference { name, key }) => {
            Ok(Dereferenced::Unusable(Check::pending(
                reasons::SECRET_KEY_NOT_FOUND,
                format!("key {key:?} of Secret {name:?} does not exist"),
            )))
        }
        Err(error) => Err(DereferenceError::Generate(error)),
    }
}

/// What keeps the stack's referenced values from being used, if anything:
/// for each `valueFrom` entry, its Secret missing, of a type whose values
/// are never copied, without the key, or holding a value that is not text;
/// and a Secret of the stack's own name that is not a plain one. Every
/// problem is named; the reason is the first one's. `type_of` gives the
/// type of a Secret the cache holds.
pub fn unusable(
    stack: &ValidatedStack,
    observed: &ObservedSecrets,
    type_of: impl Fn(&str) -> Option<String>,
) -> Option<Check> {
    let mut problems: Vec<(&'static str, String)> = Vec::new();
    for var in &stack.env {
        let EnvSource::Referenced(reference) = &var.source else {
            continue;
        };
        let (name, key) = (&reference.name, &reference.key);
        let field = format!("spec.env[{}]", var.name);
        if secrets::reads_own_database(stack, reference) {
            // The operator writes that Secret itself, with these keys.
            if !secrets::db_keys::ALL.contains(&key.as_str()) {
                problems.push((
                    reasons::SECRET_KEY_NOT_FOUND,
                    format!(
                        "Secret {name:?} has no key {key:?} ({field}); its keys: {}",
                        secrets::db_keys::ALL.join(", ")
                    ),
                ));
            }
            continue;
        }
        if !observed.present.contains(name) {
            problems.push((
                reasons::SECRET_NOT_FOUND,
                format!(
                    "Secret {name:?} ({field}) does not exist in namespace {:?}",
                    stack.namespace
                ),
            ));
            continue;
        }
        if let Some(type_) =
            type_of(name).filter(|type_| REFUSED_SECRET_TYPES.contains(&type_.as_str()))
        {
            problems.push((
                reasons::SECRET_TYPE_NOT_ALLOWED,
                format!(
                    "Secret {name:?} ({field}) is of type {type_}: tokens of the cluster are \
                     never copied into an application's environment"
                ),
            ));
            continue;
        }
        match observed.referenced.get(&(name.clone(), key.clone())) {
            None => {
                let keys: Vec<&str> = observed
                    .referenced
                    .keys()
                    .filter(|(secret, _)| secret == name)
                    .map(|(_, key)| key.as_str())
                    .collect();
                problems.push((
                    reasons::SECRET_KEY_NOT_FOUND,
                    format!(
                        "Secret {name:?} has no key {key:?} ({field}); its keys: {}",
                        if keys.is_empty() {
                            "none".to_string()
                        } else {
                            keys.join(", ")
                        }
                    ),
                ));
            }
            Some(value) if !is_text(value.expose()) => problems.push((
                reasons::SECRET_VALUE_NOT_TEXT,
                format!(
                    "the value of key {key:?} of Secret {name:?} ({field}) is not text (not \
                     UTF-8, or it holds a NUL byte), which an environment variable must be"
                ),
            )),
            Some(_) => {}
        }
    }
    let mut own = vec![env_name(stack)];
    if let Database::Managed(_) = stack.database {
        own.push(database_name(stack));
    }
    for name in own {
        if let Some(type_) = type_of(&name).filter(|type_| type_ != OWN_SECRET_TYPE) {
            problems.push((
                reasons::SECRET_CONFLICT,
                format!(
                    "Secret {name:?} exists with type {type_}, so it is not the stack's own \
                     (which is {OWN_SECRET_TYPE}): rename or delete it, or rename the stack"
                ),
            ));
        }
    }
    let (reason, _) = problems.first()?;
    let message = problems
        .iter()
        .map(|(_, problem)| problem.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    Some(Check::pending(reason, message))
}

/// Whether a value can be an environment variable's: UTF-8 without NUL.
fn is_text(value: &[u8]) -> bool {
    std::str::from_utf8(value).is_ok() && !value.contains(&0)
}

/// The `DatabaseReady` check while Secret `<stack>-db` is gone and the
/// volume holding the database made with its credentials is not.
fn credentials_lost(stack: &ValidatedStack, volume: &str) -> Check {
    let secret = database_name(stack);
    Check::failed(
        reasons::CREDENTIALS_LOST,
        format!(
            "Secret {secret:?}, which held the database credentials, is gone, but volume \
             {volume:?} still holds the database created with them: new credentials would \
             not be accepted, so none are generated and the backend keeps running as it is. \
             Restore Secret {secret:?} from a backup (keys username, password, database, \
             host, port, DATABASE_URL), or delete volume {volume:?} and pod {secret}-0 to \
             start over with an empty database"
        ),
    )
}

/// The stack's own Secrets: `<stack>-db` (managed database) and `<stack>-env`.
fn own_secrets(stack: &ValidatedStack) -> Vec<String> {
    let mut names = vec![env_name(stack)];
    if let Database::Managed(_) = stack.database {
        names.push(database_name(stack));
    }
    names
}

/// The stack's Secrets and every key of the `referenced` ones, from the
/// cache; a referenced Secret cached without its data is read.
async fn observe(
    caches: &Caches,
    api: &Api<Secret>,
    stack: &ValidatedStack,
    referenced: &BTreeSet<&str>,
) -> Result<ObservedSecrets, DereferenceError> {
    let namespace = stack.namespace.as_str();
    let data_of = |secret: &Secret| {
        secret
            .data
            .iter()
            .flatten()
            .map(|(key, value)| (key.clone(), SecretValue::new(value.0.clone())))
            .collect::<BTreeMap<_, _>>()
    };
    let mut observed = ObservedSecrets::default();
    if let Database::Managed(_) = stack.database {
        observed.database = caches
            .secrets
            .get(namespace, &database_name(stack))
            .map(|secret| data_of(&secret));
    }
    observed.env = caches
        .secrets
        .get(namespace, &env_name(stack))
        .map(|secret| data_of(&secret))
        .unwrap_or_default();
    for name in referenced {
        let cached = caches.secrets.get(namespace, name);
        let secret = match cached {
            Some(secret) if Caches::without_data(&secret) => {
                let fresh = read(api, name).await?;
                if let Some(fresh) = &fresh {
                    caches.secrets.record(fresh.clone());
                }
                fresh.map(std::sync::Arc::new)
            }
            cached => cached,
        };
        let Some(secret) = secret else {
            continue;
        };
        observed.present.insert(name.to_string());
        for (key, value) in data_of(&secret) {
            observed.referenced.insert((name.to_string(), key), value);
        }
    }
    Ok(observed)
}

async fn read(api: &Api<Secret>, name: &str) -> Result<Option<Secret>, DereferenceError> {
    let secret = api
        .get_opt(name)
        .await
        .map_err(|source| DereferenceError::Read {
            name: name.to_string(),
            source,
        })?;
    Ok(secret.map(|mut secret| {
        secret.slim();
        secret
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::stack::tests::example;

    fn observed(entries: &[(&str, &str, &[u8])]) -> ObservedSecrets {
        let mut observed = ObservedSecrets::default();
        for (name, key, value) in entries {
            observed.present.insert(name.to_string());
            observed.referenced.insert(
                (name.to_string(), key.to_string()),
                SecretValue::new(value.to_vec()),
            );
        }
        observed
    }

    fn no_types(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn usable_references_are_no_problem() {
        let stack = example();
        let fine = observed(&[("sendgrid", "api-key", b"SG.key")]);
        assert_eq!(unusable(&stack, &fine, no_types), None);
        let opaque = |_: &str| Some("Opaque".to_string());
        assert_eq!(unusable(&stack, &fine, opaque), None);
    }

    #[test]
    fn references_to_the_own_database_secret_need_no_secret_yet_but_a_real_key() {
        let mut stack = example();
        // The name the operator gives the Secret is the one references use.
        let secret = database_name(&stack);
        let own = |key: &str| crate::api::stack::EnvVar {
            name: format!("DB_{}", key.to_uppercase()),
            source: EnvSource::Referenced(crate::api::crd::SecretKeyRef {
                name: secret.clone(),
                key: key.into(),
            }),
        };
        stack.env.push(own("password"));
        stack.env.push(own("host"));
        let fine = observed(&[("sendgrid", "api-key", b"SG.key")]);
        assert_eq!(unusable(&stack, &fine, no_types), None);
        stack.env.push(own("socket"));
        let check = unusable(&stack, &fine, no_types).unwrap();
        assert_eq!(check.reason, reasons::SECRET_KEY_NOT_FOUND);
        assert!(
            check
                .message
                .contains("Secret \"shop-db\" has no key \"socket\" (spec.env[DB_SOCKET]); its keys: username, password, database, host, port, DATABASE_URL"),
            "{}",
            check.message
        );
    }

    #[test]
    fn each_malformed_reference_is_named_with_its_reason() {
        let stack = example();
        let check = |observed: &ObservedSecrets, types: &dyn Fn(&str) -> Option<String>| {
            let check = unusable(&stack, observed, types).expect("a problem");
            assert!(!check.ok && !check.terminal, "waits, never stalls");
            (check.reason, check.message)
        };
        assert_eq!(
            check(&ObservedSecrets::default(), &no_types),
            (
                reasons::SECRET_NOT_FOUND,
                r#"Secret "sendgrid" (spec.env[SENDGRID_API_KEY]) does not exist in namespace "prod""#
                    .to_string()
            )
        );
        assert_eq!(
            check(&observed(&[("sendgrid", "other", b"x")]), &no_types),
            (
                reasons::SECRET_KEY_NOT_FOUND,
                r#"Secret "sendgrid" has no key "api-key" (spec.env[SENDGRID_API_KEY]); its keys: other"#
                    .to_string()
            )
        );
        for value in [&b"\xff\xfe"[..], b"a\0b"] {
            let (reason, message) = check(&observed(&[("sendgrid", "api-key", value)]), &no_types);
            assert_eq!(reason, reasons::SECRET_VALUE_NOT_TEXT);
            assert!(
                message.contains(r#"key "api-key" of Secret "sendgrid""#),
                "{message}"
            );
        }
        let token = |name: &str| {
            (name == "sendgrid").then(|| "kubernetes.io/service-account-token".to_string())
        };
        let (reason, message) = check(&observed(&[("sendgrid", "api-key", b"t")]), &token);
        assert_eq!(reason, reasons::SECRET_TYPE_NOT_ALLOWED);
        assert!(message.contains("kubernetes.io/service-account-token"));

        // A Secret of the stack's own name that is someone else's: named
        // after the reference problem, which gives the reason.
        let tls = |name: &str| (name == "shop-env").then(|| "kubernetes.io/tls".to_string());
        let (reason, message) = check(&ObservedSecrets::default(), &tls);
        assert_eq!(reason, reasons::SECRET_NOT_FOUND);
        assert!(
            message.ends_with(
                r#"; Secret "shop-env" exists with type kubernetes.io/tls, so it is not the stack's own (which is Opaque): rename or delete it, or rename the stack"#
            ),
            "{message}"
        );
        let (reason, _) = check(&observed(&[("sendgrid", "api-key", b"ok")]), &tls);
        assert_eq!(reason, reasons::SECRET_CONFLICT);
    }

    #[test]
    fn no_message_shows_a_value() {
        let stack = example();
        for value in [&b"s3cr3t-\xff"[..], b"s3cr3t-\0"] {
            let check = unusable(
                &stack,
                &observed(&[("sendgrid", "api-key", value)]),
                no_types,
            )
            .unwrap();
            assert!(!check.message.contains("s3cr3t"), "{}", check.message);
        }
    }
}
