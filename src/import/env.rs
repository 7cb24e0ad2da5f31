//! Variables to typed `env` entries: secrets by reference (their values go
//! to a Secret manifest, never into the AppStack), placeholders generated
//! by the operator when asked, everything else plain; and `import dotenv`,
//! which types one `.env` file alone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;

use super::ImportError;
use super::build::secret_name;
use super::database::{DATABASE_URL, Wired};
use super::dotenv::{self, EnvMap};
use super::project::sanitize_name;
use super::report::Report;
use super::sensitive::{SecretReason, distinctive, looks_like_placeholder, secret_reason};
use crate::api::crd::{EnvEntry, EnvValueFrom, GenerateSpec, RESERVED_ENV_NAMES, SecretKeyRef};

/// Length of the values the operator generates for placeholders.
pub const GENERATED_LENGTH: i32 = 48;

/// How secrets are written.
pub struct EnvSettings<'a> {
    /// The stack's name, for messages.
    pub stack_name: &'a str,
    /// The Secret the AppStack references for secret values.
    pub secret_name: &'a str,
    /// The operator's `<stack>-db` Secret, with a managed database.
    pub database_secret: Option<&'a str>,
    /// Placeholder secrets become `generate` entries.
    pub generate_secrets: bool,
    /// Where the Secret manifest goes, for the messages.
    pub secrets_out: Option<&'a std::path::Path>,
}

/// Typed entries and the secret values they reference.
#[derive(Debug, Default)]
pub struct TypedEnv {
    pub entries: Vec<EnvEntry>,
    /// Key in the Secret to value.
    pub secret_values: BTreeMap<String, String>,
    /// Names the operator generates, with the placeholder they replace.
    pub generated_values: BTreeMap<String, String>,
}

/// Whether `name` can be an AppStack env name.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first == '_' || first.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

fn reference(secret: &str, key: &str) -> Option<EnvValueFrom> {
    Some(EnvValueFrom {
        secret_key_ref: SecretKeyRef {
            name: secret.to_string(),
            key: key.to_string(),
        },
    })
}

/// `A, B, C`, or the first `limit` and how many more.
fn listed(names: &[String], limit: usize) -> String {
    if names.len() <= limit {
        names.join(", ")
    } else {
        format!(
            "{}, and {} more",
            names[..limit].join(", "),
            names.len() - limit
        )
    }
}

/// Types `variables` (already free of names the operator sets), in their
/// order; those in `wired` name the operator's database and become what
/// `wired` says. `known` holds every secret value seen in the project,
/// for values equal to one. `origin` is the subject of the messages.
pub fn typed_env(
    variables: &IndexMap<String, String>,
    wired: &IndexMap<String, Wired>,
    known: &[(String, String)],
    settings: &EnvSettings,
    origin: &str,
    report: &mut Report,
) -> TypedEnv {
    let mut typed = TypedEnv::default();
    let mut plain = Vec::new();
    let mut referenced = Vec::new();
    let mut generated = Vec::new();
    let mut placeholders = Vec::new();
    for (name, value) in variables {
        if !valid_name(name) {
            report.skip(
                origin,
                format!("variable {name}"),
                "not a valid AppStack env name: letters, digits and '_', not starting with a digit",
            );
            continue;
        }
        let entry = |value: Option<String>, generate: Option<GenerateSpec>, value_from| EnvEntry {
            name: name.clone(),
            value,
            generate,
            value_from,
        };
        match (wired.get(name), settings.database_secret) {
            (Some(Wired::DatabaseKey(key)), Some(secret)) => {
                typed
                    .entries
                    .push(entry(None, None, reference(secret, key)));
                continue;
            }
            (Some(Wired::Plain(wired_value)), _) => {
                typed
                    .entries
                    .push(entry(Some(wired_value.clone()), None, None));
                continue;
            }
            _ => {}
        }
        let Some(reason) = secret_reason(name, value, known) else {
            plain.push(name.clone());
            typed.entries.push(entry(Some(value.clone()), None, None));
            continue;
        };
        match &reason {
            SecretReason::Name => {}
            SecretReason::UrlPassword => report.detail(
                origin,
                format!("{name} holds a URL with a password: treated as a secret"),
            ),
            SecretReason::ConnectionPassword => report.detail(
                origin,
                format!("{name} holds a connection string with a password: treated as a secret"),
            ),
            SecretReason::SameValue(other) => report.detail(
                origin,
                format!("{name} holds the value of the secret {other}: treated as a secret"),
            ),
        }
        // An empty value is more often a credential of another service
        // (SMTP_PASSWORD) than a key of the application's own: a person fills
        // it in; a random one would only fail to log in.
        if settings.generate_secrets && !value.is_empty() && looks_like_placeholder(value) {
            generated.push(name.clone());
            typed.generated_values.insert(name.clone(), value.clone());
            typed.entries.push(entry(
                None,
                Some(GenerateSpec {
                    length: GENERATED_LENGTH,
                }),
                None,
            ));
            continue;
        }
        if !value.is_empty() && looks_like_placeholder(value) {
            placeholders.push(name.clone());
        }
        referenced.push(name.clone());
        typed.secret_values.insert(name.clone(), value.clone());
        typed
            .entries
            .push(entry(None, None, reference(settings.secret_name, name)));
    }
    let mut summary = Vec::new();
    if !plain.is_empty() {
        summary.push(format!("{} plain", plain.len()));
        report.detail(
            origin,
            format!(
                "plain values, in ConfigMap {}-env: {}",
                settings.stack_name,
                plain.join(", ")
            ),
        );
    }
    if !generated.is_empty() {
        summary.push(format!(
            "{} generated by the operator ({})",
            generated.len(),
            listed(&generated, 4)
        ));
        report.detail(
            origin,
            format!(
                "generated once, {GENERATED_LENGTH} characters, in place of placeholder values: {}",
                generated.join(", ")
            ),
        );
    }
    if !referenced.is_empty() {
        summary.push(format!(
            "{} from Secret {} ({})",
            referenced.len(),
            settings.secret_name,
            listed(&referenced, 4)
        ));
        report.detail(
            origin,
            format!(
                "secrets referenced from Secret {} ({}): {}",
                settings.secret_name,
                secret_destination(settings),
                referenced.join(", ")
            ),
        );
    }
    if !summary.is_empty() {
        report.decide(origin, format!("env: {}", summary.join(", ")));
    }
    if !placeholders.is_empty() {
        report.todo(format!(
            "{} {}: replace {} in Secret {}, or rerun with --generate-secrets to have the operator generate {}",
            placeholders.join(", "),
            if placeholders.len() == 1 {
                "holds a placeholder"
            } else {
                "hold placeholders"
            },
            if placeholders.len() == 1 { "it" } else { "them" },
            settings.secret_name,
            if placeholders.len() == 1 { "it" } else { "them" },
        ));
    }
    typed
}

/// Where the Secret's values are, for messages.
pub fn secret_destination(settings: &EnvSettings) -> String {
    match settings.secrets_out {
        Some(path) => format!("values written to {}", path.display()),
        None => "values not written: pass --secrets-out FILE, or create the Secret yourself".into(),
    }
}

/// What `appstack import dotenv` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct DotenvRequest {
    pub file: PathBuf,
    /// The stack the env is for; names the Secret `<name>-dotenv`.
    pub name: Option<String>,
    pub process_env: BTreeMap<String, String>,
    pub generate_secrets: bool,
    pub secrets_out: Option<PathBuf>,
}

/// A typed env list, the Secret values it references, and the report.
#[derive(Debug)]
pub struct ImportedEnv {
    pub env: Vec<EnvEntry>,
    pub secret_name: String,
    pub secret_values: BTreeMap<String, String>,
    pub report: Report,
}

/// Types one `.env` file.
pub fn import_dotenv(request: &DotenvRequest) -> Result<ImportedEnv, ImportError> {
    let mut report = Report::default();
    let text = std::fs::read_to_string(&request.file).map_err(|source| ImportError::Read {
        path: request.file.clone(),
        source,
    })?;
    let mut variables = EnvMap::new();
    let unset = dotenv::parse_into(&text, &mut variables, &|name| {
        request.process_env.get(name).cloned()
    })
    .map_err(|source| ImportError::Dotenv {
        path: request.file.clone(),
        source,
    })?;
    for name in unset {
        report.warn(format!(
            "variable {name} is not set: an empty string was substituted"
        ));
    }
    let name = match &request.name {
        Some(name) => sanitize_name(name),
        None => {
            let directory = std::fs::canonicalize(&request.file)
                .ok()
                .and_then(|path| {
                    path.parent()
                        .and_then(Path::file_name)
                        .map(|name| name.to_string_lossy().into_owned())
                })
                .unwrap_or_default();
            let name = sanitize_name(&directory);
            report.decide(
                "stack",
                format!("{name}, from the directory of the file (--name changes it)"),
            );
            name
        }
    };
    let secret_name = secret_name(&name);
    let settings = EnvSettings {
        stack_name: &name,
        secret_name: &secret_name,
        database_secret: None,
        generate_secrets: request.generate_secrets,
        secrets_out: request.secrets_out.as_deref(),
    };
    let known: Vec<(String, String)> = variables
        .iter()
        .filter(|(key, value)| secret_reason(key, value, &[]).is_some() && !value.is_empty())
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    let database_url = variables.shift_remove(DATABASE_URL);
    for reserved in RESERVED_ENV_NAMES
        .iter()
        .filter(|name| **name != DATABASE_URL)
    {
        if variables.shift_remove(*reserved).is_some() {
            report.decide(
                "env",
                format!("{reserved} dropped: the operator sets it from spec.database.pool"),
            );
        }
    }
    let TypedEnv {
        entries,
        mut secret_values,
        generated_values: _,
    } = typed_env(
        &variables,
        &IndexMap::new(),
        &known,
        &settings,
        "env",
        &mut report,
    );
    if let Some(url) = database_url {
        secret_values.insert(DATABASE_URL.to_string(), url);
        report.decide(
            "env",
            format!(
                "{DATABASE_URL} is the operator's; for an external database it is kept in Secret {secret_name} (spec.database.external.urlSecretRef {{name: {secret_name}, key: {DATABASE_URL}}})"
            ),
        );
    }
    let secrets: Vec<&str> = known
        .iter()
        .map(|(_, value)| value.as_str())
        .chain(secret_values.values().map(String::as_str))
        .filter(|value| distinctive(value))
        .collect();
    report.redact(&secrets);
    Ok(ImportedEnv {
        env: entries,
        secret_name,
        secret_values,
        report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variables(pairs: &[(&str, &str)]) -> IndexMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn secrets_are_referenced_placeholders_generated_and_the_rest_plain() {
        let mut report = Report::default();
        let settings = EnvSettings {
            stack_name: "shop",
            secret_name: "shop-dotenv",
            database_secret: None,
            generate_secrets: true,
            secrets_out: None,
        };
        let typed = typed_env(
            &variables(&[
                ("LOG_LEVEL", "info"),
                ("SECRET_KEY", "change-me"),
                ("STRIPE_API_KEY", "sk_live_51Habc"),
                ("CACHE_URL", "redis://:r3dis-pass@cache:6379/0"),
                ("bad-name", "x"),
            ]),
            &IndexMap::new(),
            &[],
            &settings,
            "api",
            &mut report,
        );
        let yaml = serde_yaml::to_string(&typed.entries).unwrap();
        assert_eq!(
            yaml,
            "- name: LOG_LEVEL\n  value: info\n\
             - name: SECRET_KEY\n  generate:\n    length: 48\n\
             - name: STRIPE_API_KEY\n  valueFrom:\n    secretKeyRef:\n      name: shop-dotenv\n      key: STRIPE_API_KEY\n\
             - name: CACHE_URL\n  valueFrom:\n    secretKeyRef:\n      name: shop-dotenv\n      key: CACHE_URL\n"
        );
        assert_eq!(
            typed.secret_values.keys().collect::<Vec<_>>(),
            ["CACHE_URL", "STRIPE_API_KEY"]
        );
        assert!(
            !yaml.contains("change-me") && !yaml.contains("sk_live") && !yaml.contains("r3dis")
        );
        assert_eq!(report.skipped()[0].what, "variable bad-name");
    }

    #[test]
    fn without_generate_secrets_placeholders_are_referenced_with_a_warning() {
        let mut report = Report::default();
        let settings = EnvSettings {
            stack_name: "s",
            secret_name: "s",
            database_secret: None,
            generate_secrets: false,
            secrets_out: None,
        };
        let typed = typed_env(
            &variables(&[("JWT_SECRET", "change-me")]),
            &IndexMap::new(),
            &[],
            &settings,
            ".env",
            &mut report,
        );
        assert!(typed.entries[0].value_from.is_some());
        assert_eq!(typed.secret_values["JWT_SECRET"], "change-me");
        assert!(report.todos()[0].contains("--generate-secrets"), "{report}");
    }
}
