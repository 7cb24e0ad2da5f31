//! Which values are secrets, which secrets are placeholders, and how
//! secret values are kept out of commands.

use indexmap::IndexMap;

use super::ProjectEnvironment;
use super::dotenv::EnvMap;
use super::report::Report;

/// Why a variable's value is kept out of the AppStack. Values are judged
/// whole, by their name and their own shape, never by a secret's text
/// found inside them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretReason {
    /// The name says so: `*_KEY`, `*SECRET*`, `*PASSWORD*`, `*TOKEN*`...
    Name,
    /// The value is a URL with a password in it.
    UrlPassword,
    /// The value is a connection string with `password=` in it.
    ConnectionPassword,
    /// The value is, whole, the value of this secret variable.
    SameValue(String),
}

/// Shortest secret value looked for in other values and commands;
/// shorter ones match too much text by chance.
pub const MIN_EMBEDDED_SECRET_LENGTH: usize = 6;

/// Whether a secret value is distinctive enough to look for in other
/// values and commands: long enough, and not a lowercase word such as the
/// `postgres` of `POSTGRES_PASSWORD=postgres`, which would match image
/// names and commands by chance.
pub fn distinctive(value: &str) -> bool {
    value.len() >= MIN_EMBEDDED_SECRET_LENGTH && !value.chars().all(|c| c.is_ascii_lowercase())
}

/// Whether a variable name marks its value as a secret: `*_KEY`,
/// `*_SECRET` (and any name holding SECRET), `*PASSWORD*`, `*PASSWD*`,
/// `*_PASS`, `*TOKEN*` and `*_CREDENTIALS`, in any case.
pub fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_uppercase();
    name.ends_with("_KEY")
        || name == "KEY"
        || name.contains("SECRET")
        || name.contains("PASSWORD")
        || name.contains("PASSWD")
        || name.ends_with("_PASS")
        || name.ends_with("_PWD")
        || name.contains("TOKEN")
        || name.ends_with("_CREDENTIALS")
        || name == "CREDENTIALS"
}

/// Why `name=value` is a secret, if it is one. `known` holds the secret
/// values found so far (name, value), for a value that is one of them.
pub fn secret_reason(name: &str, value: &str, known: &[(String, String)]) -> Option<SecretReason> {
    if is_secret_name(name) {
        return Some(SecretReason::Name);
    }
    if has_url_password(value) {
        return Some(SecretReason::UrlPassword);
    }
    if has_connection_password(value) {
        return Some(SecretReason::ConnectionPassword);
    }
    known
        .iter()
        .find(|(other, secret)| other != name && distinctive(secret) && value == secret)
        .map(|(other, _)| SecretReason::SameValue(other.clone()))
}

/// Whether `text` is a connection string with a password: a `password=`
/// or `pwd=` pair among pairs separated by spaces or `;` (libpq, ODBC).
pub fn has_connection_password(text: &str) -> bool {
    text.split(|c: char| c.is_whitespace() || c == ';')
        .filter_map(|pair| pair.split_once('='))
        .any(|(key, value)| {
            matches!(key.trim().to_ascii_lowercase().as_str(), "password" | "pwd")
                && !value.trim().is_empty()
        })
}

/// Where `secret` stands whole in `text`: bounded by the text's ends,
/// whitespace, quotes, `=` (a flag's value), `:` and `@` (a URL's
/// password), or a shell operator; never inside a longer word.
pub fn whole_occurrences(text: &str, secret: &str) -> Vec<usize> {
    if secret.is_empty() {
        return Vec::new();
    }
    text.match_indices(secret)
        .map(|(start, _)| start)
        .filter(|&start| {
            let before = text[..start].chars().next_back();
            let after = text[start + secret.len()..].chars().next();
            before.is_none_or(|c| {
                c.is_whitespace() || matches!(c, '"' | '\'' | '=' | ':' | '(' | ',')
            }) && after.is_none_or(|c| {
                c.is_whitespace() || matches!(c, '"' | '\'' | '@' | ';' | '&' | '|' | ')' | ',')
            })
        })
        .collect()
}

/// Whether `text` holds a URL with a password: `scheme://user:password@host`.
pub fn has_url_password(text: &str) -> bool {
    text.match_indices("://").any(|(index, _)| {
        let authority_start = index + 3;
        let rest = &text[authority_start..];
        let authority_end = rest
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace())
            .unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        let Some(at) = authority.rfind('@') else {
            return false;
        };
        authority[..at]
            .split_once(':')
            .is_some_and(|(_, password)| !password.is_empty())
    })
}

/// The parts of a URL the import looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlParts {
    pub scheme: String,
    pub host: String,
    pub port: Option<u16>,
    /// The path without query or fragment, `/` when empty.
    pub path: String,
}

/// Splits `scheme://[userinfo@]host[:port][/path][?query]`; `None` when
/// `text` is not such a URL.
pub fn url_parts(text: &str) -> Option<UrlParts> {
    let (scheme, rest) = text.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return None;
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let (host, port_text) = match host_port.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    };
    let port = match port_text {
        None | Some("") => None,
        Some(port) => Some(port.parse().ok()?),
    };
    let after = &rest[authority_end..];
    let path_end = after.find(['?', '#']).unwrap_or(after.len());
    let path = if after[..path_end].is_empty() {
        "/".to_string()
    } else {
        after[..path_end].to_string()
    };
    Some(UrlParts {
        scheme: scheme.to_ascii_lowercase(),
        host: host.to_string(),
        port,
        path,
    })
}

/// Whether a secret's value is a stand-in to be replaced rather than a
/// real value: empty, `change-me`, `your-secret-key-here`, `xxxx`,
/// `<token>`, `placeholder`, Django's `django-insecure-...` and the like.
pub fn looks_like_placeholder(value: &str) -> bool {
    let lower = value.trim().to_ascii_lowercase();
    let letters: String = lower.chars().filter(char::is_ascii_alphanumeric).collect();
    lower.is_empty()
        || [
            "changeme",
            "changethis",
            "replaceme",
            "placeholder",
            "insecure",
        ]
        .iter()
        .any(|word| letters.contains(word))
        || letters.starts_with("your")
        || lower.contains("xxxx")
        || (letters.len() >= 3 && letters.chars().all(|c| c == 'x'))
        || (lower.starts_with('<') && lower.ends_with('>'))
        || [
            "secret", "password", "todo", "dummy", "example", "test", "none", "null",
        ]
        .contains(&letters.as_str())
}

/// Every secret value in the project: `.env` entries and service
/// environments whose name or value marks them secret.
pub(super) fn known_secrets(
    environment: &ProjectEnvironment,
    envs: &IndexMap<String, EnvMap>,
) -> Vec<(String, String)> {
    let mut known: Vec<(String, String)> = Vec::new();
    let all = environment
        .files
        .iter()
        .chain(envs.values().flat_map(|env| env.iter()));
    for (name, value) in all {
        if secret_reason(name, value, &[]).is_some()
            && !value.is_empty()
            && !known.iter().any(|(_, known_value)| known_value == value)
        {
            known.push((name.clone(), value.clone()));
        }
    }
    known
}

/// Replaces secret values standing whole in a command by `$(NAME)`
/// references to the variables of the container's env (`held`: name and
/// value) that hold them; a command with a secret the env does not hold
/// is left out.
pub(super) fn guard_command(
    command: &mut Option<Vec<String>>,
    args: &mut Option<Vec<String>>,
    owner: &str,
    held: &[(String, String)],
    secrets: &[(String, String)],
    report: &mut Report,
) {
    for (field, words) in [("command", command), ("args", args)] {
        let Some(list) = words.as_mut() else {
            continue;
        };
        let mut leaked = None;
        for word in list.iter_mut() {
            for (key, value) in secrets {
                let found = whole_occurrences(word, value);
                if found.is_empty() {
                    continue;
                }
                let holder = held
                    .iter()
                    .find(|(_, held_value)| held_value == value)
                    .map(|(name, _)| name.clone());
                match holder {
                    Some(name) => {
                        for start in found.into_iter().rev() {
                            word.replace_range(start..start + value.len(), &format!("$({name})"));
                        }
                        report.detail(
                            owner,
                            format!(
                                "its {field} held the value of {key}: replaced by $({name}), which Kubernetes expands from the container's env"
                            ),
                        );
                    }
                    None => leaked = Some(key.clone()),
                }
            }
        }
        if let Some(key) = leaked {
            *words = None;
            report.warn(format!(
                "{owner}: its {field} held the value of {key}, which its container's env does not hold: left out of the AppStack"
            ));
            report.todo(format!(
                "set the {field} of {owner} by hand, taking the secret from the env (left out: it held the value of {key})"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_follow_the_documented_patterns() {
        for name in [
            "SECRET_KEY",
            "STRIPE_API_KEY",
            "JWT_SECRET",
            "SECRET_KEY_BASE",
            "POSTGRES_PASSWORD",
            "DB_PASSWORD_FILE",
            "smtp_password",
            "SMTP_PASS",
            "GITHUB_TOKEN",
            "TOKEN_SIGNING",
            "GOOGLE_APPLICATION_CREDENTIALS",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in [
            "LOG_LEVEL",
            "KEY_PREFIX",
            "PASSENGER_COUNT",
            "API_URL",
            "DEBUG",
        ] {
            assert!(!is_secret_name(name), "{name}");
        }
    }

    #[test]
    fn urls_with_a_password_are_secrets() {
        assert!(has_url_password("postgres://app:s3cret@db:5432/app"));
        assert!(has_url_password("redis://:hunter22@redis:6379/0"));
        assert!(has_url_password("amqp://guest:guest@rabbitmq:5672//"));
        assert!(has_url_password("a=1,b=https://u:p@h"));
        assert!(!has_url_password("postgres://app@db:5432/app"));
        assert!(!has_url_password("https://api.example.com/v1?user=a:b@c"));
        assert!(!has_url_password("http://localhost:8000"));
        assert_eq!(
            secret_reason("BROKER_URL", "redis://:pw@redis:6379", &[]),
            Some(SecretReason::UrlPassword)
        );
    }

    #[test]
    fn secrets_are_judged_by_whole_values_never_by_text_inside_them() {
        let known = vec![("DB_PASS".to_string(), "Tr0ub4dor-3".to_string())];
        assert_eq!(
            secret_reason("PGOPTS", "host=db password=Tr0ub4dor-3", &known),
            Some(SecretReason::ConnectionPassword)
        );
        assert_eq!(
            secret_reason("MIRROR", "Tr0ub4dor-3", &known),
            Some(SecretReason::SameValue("DB_PASS".into()))
        );
        // A plain value that merely contains a secret's text stays plain.
        assert_eq!(
            secret_reason("GREETING", "say Tr0ub4dor-3x to enter", &known),
            None
        );
        let app = vec![("POSTGRES_PASSWORD".to_string(), "app".to_string())];
        assert_eq!(secret_reason("POSTGRES_DB", "app", &app), None);
        let short = vec![("PIN".to_string(), "1234".to_string())];
        assert_eq!(secret_reason("PORT", "12345", &short), None);
    }

    #[test]
    fn secrets_stand_whole_in_commands_or_not_at_all() {
        let at = |text: &str| whole_occurrences(text, "s3cr3t-Pw");
        assert_eq!(at("--password=s3cr3t-Pw"), [11]);
        assert_eq!(at("postgres://u:s3cr3t-Pw@db/app"), [13]);
        assert_eq!(at("sh -c 'login s3cr3t-Pw && run'"), [13]);
        assert!(at("s3cr3t-Pwd").is_empty());
        assert!(at("xs3cr3t-Pw").is_empty());
        assert!(at("/data/s3cr3t-Pw/file").is_empty());
    }

    #[test]
    fn only_distinctive_secrets_are_looked_for_in_other_text() {
        assert!(distinctive("pg-Kq8v3Lx2Rt"));
        assert!(distinctive("Tr0ub4dor"));
        for value in ["postgres", "pw", "password", "secret"] {
            assert!(!distinctive(value), "{value}");
        }
        let known = vec![("POSTGRES_PASSWORD".to_string(), "postgres".to_string())];
        assert_eq!(
            secret_reason("DB_ENGINE", "django.db.backends.postgresql", &known),
            None
        );
    }

    #[test]
    fn url_parts_split_host_port_and_path() {
        assert_eq!(
            url_parts("postgresql+asyncpg://app:pw@db:5432/app?ssl=true").unwrap(),
            UrlParts {
                scheme: "postgresql+asyncpg".into(),
                host: "db".into(),
                port: Some(5432),
                path: "/app".into()
            }
        );
        let health = url_parts("http://localhost:8000/api/health?full=1").unwrap();
        assert_eq!(
            (health.host.as_str(), health.port, health.path.as_str()),
            ("localhost", Some(8000), "/api/health")
        );
        assert_eq!(url_parts("http://backend").unwrap().path, "/");
        assert_eq!(url_parts("http://[::1]:3000/").unwrap().host, "::1");
        assert!(url_parts("not a url").is_none());
    }

    #[test]
    fn placeholders_are_recognised() {
        for value in [
            "",
            "change-me",
            "CHANGE_ME_IN_PRODUCTION",
            "your-secret-key-here",
            "your_api_key",
            "xxxx",
            "sk_live_xxxxxxxxxxxx",
            "<your token>",
            "django-insecure-9x#k2",
            "secret",
        ] {
            assert!(looks_like_placeholder(value), "{value:?}");
        }
        for value in [
            "k8Jd0-2mQz",
            "SG.Zx81kq",
            "postgres://u:p@db/app",
            "hunter22",
        ] {
            assert!(!looks_like_placeholder(value), "{value:?}");
        }
    }
}
