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
use kube::Api;

use super::Context;
use super::status::{Check, reasons};
use crate::children::{database_name, env_name};
use crate::database::{self, Failure, Located};
use crate::runtime::cache::{Caches, Slim};
use crate::secrets::{self, ObservedSecrets, ResolveError, Resolved, SecretValue};
use crate::stack::{Database, ValidatedStack};

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

/// The stack's secret values and where its database is, or the reference
/// that is missing.
pub enum Dereferenced {
    Resolved {
        resolved: Resolved,
        /// The database, as far as the spec and the Secrets say; an external
        /// URL that cannot be used is the database stage's to report.
        located: Box<Result<Located, Failure>>,
    },
    /// A referenced Secret or key does not exist (yet).
    Missing(Check),
}

/// Resolves every secret value of `stack`; `referenced` names the user's
/// Secrets it reads ([`crate::crd::AppStackSpec::referenced_secrets`], which
/// the cache's index follows too).
pub async fn dereference(
    context: &Context,
    stack: &ValidatedStack,
    referenced: &BTreeSet<&str>,
) -> Result<Dereferenced, DereferenceError> {
    let caches = &context.caches;
    let api: Api<Secret> = Api::namespaced(context.client.clone(), &stack.namespace);
    let mut observed = observe(caches, &api, stack, referenced).await?;
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
    match resolved {
        Ok(resolved) => {
            let located = database::locate(stack, &observed, &resolved.values);
            Ok(Dereferenced::Resolved {
                resolved,
                located: Box::new(located),
            })
        }
        Err(ResolveError::MissingReference { name, key }) => {
            Ok(Dereferenced::Missing(Check::pending(
                reasons::SECRET_NOT_FOUND,
                format!("key {key:?} of Secret {name:?} does not exist"),
            )))
        }
        Err(error) => Err(DereferenceError::Generate(error)),
    }
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
