//! Secret values: generated from the operating system's CSPRNG, held in a
//! type whose `Debug` and `Display` never show them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::api::crd::DEFAULT_GENERATED_LENGTH;
use crate::api::crd::SecretKeyRef;
use crate::api::stack::{Database, EnvSource, POSTGRES_PORT, ValidatedStack};

/// Characters generated values are made of: safe in URLs, shells and YAML
/// without quoting. Each carries log2(62) ≈ 5.95 bits of entropy.
pub const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// Length of the generated database password.
pub const DATABASE_PASSWORD_LENGTH: usize = DEFAULT_GENERATED_LENGTH;

/// A secret value. Formatting it prints `<redacted>`; only
/// [`SecretValue::expose`] gives the bytes, for building Secret data.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Vec<u8>);

impl SecretValue {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// A random alphanumeric value of `length` characters from the OS CSPRNG.
    pub fn generate(length: usize) -> Result<Self, getrandom::Error> {
        // Rejection sampling keeps every character equally likely: bytes at
        // or above the largest multiple of the alphabet size are dropped.
        let limit = 256 - (256 % ALPHABET.len());
        let mut value = Vec::with_capacity(length);
        let mut buffer = [0u8; 64];
        while value.len() < length {
            getrandom::fill(&mut buffer)?;
            value.extend(
                buffer
                    .iter()
                    .filter(|&&byte| usize::from(byte) < limit)
                    .map(|&byte| ALPHABET[usize::from(byte) % ALPHABET.len()])
                    .take(length - value.len()),
            );
        }
        Ok(Self(value))
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Keys of the `<stack>-db` Secret.
pub mod db_keys {
    pub const USERNAME: &str = "username";
    pub const PASSWORD: &str = "password";
    pub const DATABASE: &str = "database";
    pub const HOST: &str = "host";
    pub const PORT: &str = "port";
    pub const DATABASE_URL: &str = "DATABASE_URL";
    /// Every key, in the order messages list them.
    pub const ALL: [&str; 6] = [USERNAME, PASSWORD, DATABASE, HOST, PORT, DATABASE_URL];
}

/// Whether an env reference reads the stack's own `<stack>-db` Secret (the
/// name `children::database_name` gives it) of a managed database. Such a
/// reference takes the value being resolved: on the first pass that Secret
/// does not exist yet, and the operator is the one about to write it.
pub fn reads_own_database(stack: &ValidatedStack, reference: &SecretKeyRef) -> bool {
    matches!(stack.database, Database::Managed(_)) && reference.name == format!("{}-db", stack.name)
}

/// Every secret value a stack's children carry, resolved before building.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SecretValues {
    /// Data of the `<stack>-db` Secret (managed database only). Once the
    /// Secret exists this is what it holds, never a new value.
    pub database: BTreeMap<String, SecretValue>,
    /// Data of the `<stack>-env` Secret: generated and referenced env.
    pub env: BTreeMap<String, SecretValue>,
}

/// Hides every secret value a stack's status and Events could otherwise
/// carry — generated values, the database credentials, values copied from
/// the user's Secrets — should a message quote one (a failed migration
/// printing `DATABASE_URL`). Values shorter than [`Redactor::SHORTEST`]
/// are left: hiding every "1" would hide nothing and garble the rest.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// Longest first, so a value holding another is hidden whole.
    values: Vec<String>,
}

impl Redactor {
    /// What a hidden value reads as.
    pub const MASK: &'static str = "[redacted]";
    /// The shortest value hidden.
    pub const SHORTEST: usize = 4;

    /// A redactor of `values` and the referenced values `observed` read.
    /// Of a value that is a URL with a password, the password is hidden
    /// too, as written and decoded.
    pub fn new(values: &SecretValues, observed: &ObservedSecrets) -> Self {
        let database = [db_keys::PASSWORD, db_keys::DATABASE_URL]
            .into_iter()
            .filter_map(|key| values.database.get(key));
        let mut texts: Vec<String> = values
            .env
            .values()
            .chain(database)
            .chain(observed.referenced.values())
            .filter_map(|value| std::str::from_utf8(value.expose()).ok())
            .flat_map(|text| {
                let password = url::Url::parse(text)
                    .ok()
                    .and_then(|url| url.password().map(String::from));
                let decoded = password.as_deref().and_then(|password| {
                    percent_encoding::percent_decode_str(password)
                        .decode_utf8()
                        .ok()
                        .map(|decoded| decoded.into_owned())
                });
                [Some(text.to_string()), password, decoded]
            })
            .flatten()
            .filter(|text| text.chars().count() >= Self::SHORTEST)
            .collect();
        texts.sort_by_key(|text| std::cmp::Reverse(text.len()));
        texts.dedup();
        Self { values: texts }
    }

    /// `text` with every known secret value replaced by [`Self::MASK`].
    pub fn redact(&self, text: &str) -> String {
        let mut redacted = text.to_string();
        for value in &self.values {
            if redacted.contains(value.as_str()) {
                redacted = redacted.replace(value.as_str(), Self::MASK);
            }
        }
        redacted
    }
}

/// Values read from the cluster that secret resolution needs.
#[derive(Clone, Debug, Default)]
pub struct ObservedSecrets {
    /// Data of an existing `<stack>-db` Secret.
    pub database: Option<BTreeMap<String, SecretValue>>,
    /// Data of an existing `<stack>-env` Secret.
    pub env: BTreeMap<String, SecretValue>,
    /// Values of the user's Secrets the spec references, by (name, key);
    /// absent when the Secret or key does not exist.
    pub referenced: BTreeMap<(String, String), SecretValue>,
    /// Names of the referenced Secrets that exist, so a missing Secret and
    /// a missing key can be told apart.
    pub present: BTreeSet<String>,
}

/// Why secret values could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("key {key:?} of Secret {name:?} does not exist")]
    MissingReference { name: String, key: String },
    #[error("the operating system's random number generator failed: {0}")]
    Random(getrandom::Error),
}

/// What resolution produced: the values, and which of them are new (so the
/// caller can say "generated" in an Event without naming a value).
#[derive(Debug)]
pub struct Resolved {
    pub values: SecretValues,
    pub generated_database: bool,
    pub generated_env: Vec<String>,
}

/// Resolves every secret value: existing generated values are kept, missing
/// ones generated, referenced ones copied.
pub fn resolve(
    stack: &ValidatedStack,
    observed: &ObservedSecrets,
) -> Result<Resolved, ResolveError> {
    let mut generated_database = false;
    let mut database = BTreeMap::new();
    // An external database's URL is not resolved here: pods read it from
    // the user's Secret by reference, and a missing one is the database
    // stage's to report (DatabaseReady), not a reason to hold back the
    // stack's own Secrets.
    if let Database::Managed(_) = &stack.database {
        match &observed.database {
            Some(existing) => database = existing.clone(),
            None => {
                let password = SecretValue::generate(DATABASE_PASSWORD_LENGTH)
                    .map_err(ResolveError::Random)?;
                database = database_secret_data(stack, &password);
                generated_database = true;
            }
        }
    }

    let mut env = BTreeMap::new();
    let mut generated_env = Vec::new();
    for var in &stack.env {
        let value = match &var.source {
            EnvSource::Plain(_) => continue,
            EnvSource::Generated { length } => match observed.env.get(&var.name) {
                Some(existing) => existing.clone(),
                None => {
                    generated_env.push(var.name.clone());
                    SecretValue::generate(*length).map_err(ResolveError::Random)?
                }
            },
            EnvSource::Referenced(reference) if reads_own_database(stack, reference) => database
                .get(&reference.key)
                .cloned()
                .ok_or_else(|| ResolveError::MissingReference {
                    name: reference.name.clone(),
                    key: reference.key.clone(),
                })?,
            EnvSource::Referenced(reference) => referenced(observed, reference)?.clone(),
        };
        env.insert(var.name.clone(), value);
    }
    Ok(Resolved {
        values: SecretValues { database, env },
        generated_database,
        generated_env,
    })
}

fn referenced<'a>(
    observed: &'a ObservedSecrets,
    reference: &SecretKeyRef,
) -> Result<&'a SecretValue, ResolveError> {
    observed
        .referenced
        .get(&(reference.name.clone(), reference.key.clone()))
        .ok_or_else(|| ResolveError::MissingReference {
            name: reference.name.clone(),
            key: reference.key.clone(),
        })
}

/// The `<stack>-db` Secret's data for a password.
pub fn database_secret_data(
    stack: &ValidatedStack,
    password: &SecretValue,
) -> BTreeMap<String, SecretValue> {
    let host = format!("{}-db.{}.svc", stack.name, stack.namespace);
    let user = &stack.database_name;
    let mut url = format!("postgresql://{user}:").into_bytes();
    url.extend_from_slice(password.expose());
    url.extend_from_slice(format!("@{host}:{POSTGRES_PORT}/{user}").as_bytes());
    [
        (db_keys::USERNAME, SecretValue::new(user.as_bytes())),
        (db_keys::PASSWORD, password.clone()),
        (db_keys::DATABASE, SecretValue::new(user.as_bytes())),
        (db_keys::HOST, SecretValue::new(host.into_bytes())),
        (
            db_keys::PORT,
            SecretValue::new(POSTGRES_PORT.to_string().into_bytes()),
        ),
        (db_keys::DATABASE_URL, SecretValue::new(url)),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value))
    .collect()
}

/// Placeholder values for `appstack render`, which has no cluster to read
/// from and must not print real secrets.
pub fn placeholders(stack: &ValidatedStack) -> SecretValues {
    let database = match &stack.database {
        Database::Managed(_) => {
            database_secret_data(stack, &SecretValue::new(b"<generated>".to_vec()))
        }
        Database::External { .. } => BTreeMap::new(),
    };
    let env = stack
        .env
        .iter()
        .filter_map(|var| {
            let placeholder = match &var.source {
                EnvSource::Plain(_) => return None,
                EnvSource::Generated { length } => format!("<generated: {length} characters>"),
                EnvSource::Referenced(reference) => {
                    format!("<from Secret {}/{}>", reference.name, reference.key)
                }
            };
            Some((var.name.clone(), SecretValue::new(placeholder.into_bytes())))
        })
        .collect();
    SecretValues { database, env }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::stack::tests::example;

    fn sendgrid() -> ObservedSecrets {
        ObservedSecrets {
            referenced: [(
                ("sendgrid".to_string(), "api-key".to_string()),
                SecretValue::new(b"SG.key".to_vec()),
            )]
            .into(),
            ..Default::default()
        }
    }

    #[test]
    fn generated_values_are_random_alphanumeric_of_the_asked_length() {
        let first = SecretValue::generate(48).unwrap();
        let second = SecretValue::generate(48).unwrap();
        assert_eq!(first.expose().len(), 48);
        assert!(first.expose().iter().all(u8::is_ascii_alphanumeric));
        assert_ne!(first, second);
    }

    #[test]
    fn default_values_carry_at_least_256_bits_from_a_url_safe_alphabet() {
        let bits = |length: usize| length as f64 * (ALPHABET.len() as f64).log2();
        assert!(bits(DEFAULT_GENERATED_LENGTH) >= 256.0);
        assert!(bits(DATABASE_PASSWORD_LENGTH) >= 256.0);
        assert!(
            bits(DEFAULT_GENERATED_LENGTH - 1) < 256.0,
            "the shortest such length"
        );
        let unreserved = |byte: &u8| byte.is_ascii_alphanumeric() || b"-._~".contains(byte);
        assert!(ALPHABET.iter().all(unreserved), "RFC 3986 unreserved only");
        let distinct: BTreeSet<_> = ALPHABET.iter().collect();
        assert_eq!(distinct.len(), ALPHABET.len());
        let value = SecretValue::generate(DEFAULT_GENERATED_LENGTH).unwrap();
        assert!(value.expose().iter().all(|byte| ALPHABET.contains(byte)));
    }

    #[test]
    fn every_character_is_about_equally_likely() {
        // 62,000 characters: each of 62 expected 1,000 times. A biased
        // modulo (256 % 62 = 8 characters favoured) would show as ~1,200.
        let value = SecretValue::generate(62_000).unwrap();
        let mut counts = BTreeMap::new();
        for byte in value.expose() {
            *counts.entry(*byte).or_insert(0u32) += 1;
        }
        assert_eq!(counts.len(), ALPHABET.len());
        assert!(
            counts.values().all(|count| (800..1_150).contains(count)),
            "{counts:?}"
        );
    }

    #[test]
    fn formatting_never_shows_the_value() {
        let value = SecretValue::new(b"hunter2".to_vec());
        assert_eq!(format!("{value:?} {value}"), "<redacted> <redacted>");
        let resolved = resolve(&example(), &sendgrid()).unwrap();
        assert!(!format!("{resolved:?}").contains("SG.key"));
    }

    #[test]
    fn first_resolution_generates_and_later_ones_keep() {
        let stack = example();
        let first = resolve(&stack, &sendgrid()).unwrap();
        assert!(first.generated_database);
        assert_eq!(first.generated_env, ["SECRET_KEY"]);
        assert_eq!(first.values.env["SECRET_KEY"].expose().len(), 48);
        assert_eq!(first.values.env["SENDGRID_API_KEY"].expose(), b"SG.key");
        let url =
            String::from_utf8(first.values.database["DATABASE_URL"].expose().to_vec()).unwrap();
        assert!(
            url.starts_with("postgresql://shop:") && url.ends_with("@shop-db.prod.svc:5432/shop")
        );

        let observed = ObservedSecrets {
            database: Some(first.values.database.clone()),
            env: first.values.env.clone(),
            ..sendgrid()
        };
        let second = resolve(&stack, &observed).unwrap();
        assert!(!second.generated_database && second.generated_env.is_empty());
        assert_eq!(second.values, first.values);
    }

    #[test]
    fn a_missing_external_database_url_is_left_to_the_database_check() {
        let stack = crate::api::stack::tests::from_yaml(
            &include_str!("../deploy/examples/shop.yaml").replace(
                "    managed:\n      image: postgres:16-alpine\n      storage: {size: 10Gi}\n      deletionPolicy: Retain\n",
                "    external:\n      urlSecretRef: {name: prod-db, key: DATABASE_URL}\n",
            ),
        );
        let resolved = resolve(&stack, &sendgrid()).unwrap();
        assert!(resolved.values.database.is_empty());
        assert_eq!(resolved.values.env.len(), 2);
    }

    #[test]
    fn references_to_the_own_database_secret_take_its_values_from_the_first_pass() {
        let mut stack = example();
        for (name, key) in [("DB_HOST", "host"), ("DB_PASSWORD", "password")] {
            stack.env.push(crate::api::stack::EnvVar {
                name: name.into(),
                source: EnvSource::Referenced(SecretKeyRef {
                    name: "shop-db".into(),
                    key: key.into(),
                }),
            });
        }
        let first = resolve(&stack, &sendgrid()).unwrap();
        assert_eq!(first.values.env["DB_HOST"].expose(), b"shop-db.prod.svc");
        assert_eq!(
            first.values.env["DB_PASSWORD"],
            first.values.database["password"]
        );
        let observed = ObservedSecrets {
            database: Some(first.values.database.clone()),
            env: first.values.env.clone(),
            ..sendgrid()
        };
        assert_eq!(resolve(&stack, &observed).unwrap().values, first.values);

        stack.env.push(crate::api::stack::EnvVar {
            name: "DB_SOCKET".into(),
            source: EnvSource::Referenced(SecretKeyRef {
                name: "shop-db".into(),
                key: "socket".into(),
            }),
        });
        assert_eq!(
            resolve(&stack, &sendgrid()).unwrap_err().to_string(),
            r#"key "socket" of Secret "shop-db" does not exist"#
        );
    }

    #[test]
    fn a_missing_reference_is_an_error_naming_it() {
        let error = resolve(&example(), &ObservedSecrets::default()).unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"key "api-key" of Secret "sendgrid" does not exist"#
        );
    }

    #[test]
    fn every_known_secret_value_is_redacted_and_short_values_are_not() {
        let mut values = SecretValues::default();
        values
            .env
            .insert("SECRET_KEY".into(), SecretValue::new("k3y-generated-value"));
        values.env.insert("FLAG".into(), SecretValue::new("on"));
        values
            .database
            .insert(db_keys::PASSWORD.into(), SecretValue::new("p4ssw0rd"));
        values.database.insert(
            db_keys::DATABASE_URL.into(),
            SecretValue::new("postgresql://shop:p4ssw0rd@shop-db:5432/shop"),
        );
        let mut observed = ObservedSecrets::default();
        observed.referenced.insert(
            ("ext".into(), "url".into()),
            SecretValue::new("postgres://app:s%40fe@db.example.com/app"),
        );
        let redactor = Redactor::new(&values, &observed);
        let printed = "connecting to postgresql://shop:p4ssw0rd@shop-db:5432/shop with k3y-generated-value; \
                       password p4ssw0rd; other s@fe and s%40fe; flag on";
        let redacted = redactor.redact(printed);
        for secret in ["p4ssw0rd", "k3y-generated-value", "s@fe", "s%40fe"] {
            assert!(!redacted.contains(secret), "{secret} in {redacted}");
        }
        assert!(
            redacted.contains("connecting to [redacted] with [redacted]"),
            "{redacted}"
        );
        assert!(
            redacted.ends_with("flag on"),
            "too short to hide: {redacted}"
        );
    }
}
