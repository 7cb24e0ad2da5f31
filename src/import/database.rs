//! How the database is wired: a managed database from the PostgreSQL
//! service, or an external one from `DATABASE_URL`; which of the
//! backend's variables hold a part of the database (host, port, user,
//! password, name, a URL) and are wired to the operator's `<stack>-db`
//! Secret; the pool settings.

use indexmap::IndexMap;
use serde_json::json;

use super::build::Builder;
use super::facts::{self, Facts, url_points_at, value_points_at};
use super::report::Report;
use super::roles::MigrationSource;
use super::sensitive::url_parts;
use crate::api::crd::{DatabaseSpec, ExternalDatabase, ManagedDatabase, PoolSpec, SecretKeyRef};
use crate::secrets::db_keys;

/// The AppStack's key for the external database URL in the Secret.
pub(super) const DATABASE_URL: &str = "DATABASE_URL";
/// Variables of the official postgres image that configure the server.
pub(super) const POSTGRES_VARIABLES: [&str; 3] =
    ["POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"];

/// The database part of the spec, and what it takes out of the env.
pub(super) struct DatabasePlan {
    pub(super) spec: DatabaseSpec,
    /// The external database URL, for the Secret.
    pub(super) external_url: Option<String>,
    /// The backend's DATABASE_URL in the compose project; the operator's
    /// takes its place.
    pub(super) compose_url: Option<String>,
    /// Backend variables that name the operator's database, by name.
    pub(super) wired: IndexMap<String, Wired>,
}

/// What a variable naming the database becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Wired {
    /// A key of Secret `<stack>-db`.
    DatabaseKey(&'static str),
    /// A plain value naming the operator's database Service.
    Plain(String),
}

/// The compose database as the backend's variables name it.
struct ComposeDatabase<'a> {
    facts: &'a Facts<'a>,
    user: String,
    /// `None` when compose does not say (a password file, trust).
    password: Option<String>,
    name: String,
    port: String,
}

impl<'a> ComposeDatabase<'a> {
    fn of(facts: &'a Facts<'a>) -> Self {
        let get = |key: &str| {
            facts
                .env
                .get(key)
                .filter(|value| !value.is_empty())
                .cloned()
        };
        let user = get("POSTGRES_USER").unwrap_or_else(|| "postgres".into());
        Self {
            facts,
            password: get("POSTGRES_PASSWORD"),
            name: get("POSTGRES_DB").unwrap_or_else(|| user.clone()),
            user,
            port: get("PGPORT").unwrap_or_else(|| "5432".into()),
        }
    }
}

/// What part of the database a variable holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// The value of this key of Secret `<stack>-db`.
    Key(&'static str),
    /// `host:port` of the database.
    HostPort,
    /// A JDBC URL, with its query (`?ssl=false`) kept.
    Jdbc { query: String },
    /// A setting of the PostgreSQL server itself.
    ServerSetting,
}

/// Settings of the official image's server, not of a client.
const SERVER_SETTINGS: [&str; 4] = [
    "PGDATA",
    "POSTGRES_INITDB_ARGS",
    "POSTGRES_INITDB_WALDIR",
    "POSTGRES_HOST_AUTH_METHOD",
];

/// Words of a variable name that say it is about the database.
const DATABASE_WORDS: [&str; 9] = [
    "DB",
    "DATABASE",
    "POSTGRES",
    "POSTGRESQL",
    "PG",
    "PSQL",
    "SQL",
    "DATASOURCE",
    "RDS",
];

/// Which part of a connection a name's last word is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Word {
    Host,
    Port,
    User,
    Password,
    Name,
}

fn part_word(word: &str) -> Option<Word> {
    Some(match word {
        "HOST" | "HOSTNAME" | "SERVER" | "ADDR" | "ADDRESS" => Word::Host,
        "PORT" => Word::Port,
        "USER" | "USERNAME" | "LOGIN" => Word::User,
        "PASSWORD" | "PASS" | "PASSWD" | "PWD" => Word::Password,
        "NAME" | "DB" | "DATABASE" | "DBNAME" => Word::Name,
        _ => return None,
    })
}

/// The part of a connection a variable name is about, when the name is
/// about the database: `POSTGRES_SERVER`, `SQL_HOST`, `PG_DBNAME`,
/// `SPRING_DATASOURCE_USERNAME`, `PGPASSWORD`, `LISTMONK_db__password`.
fn name_part(key: &str) -> Option<Word> {
    let words: Vec<String> = key
        .split(['_', '.', '-'])
        .filter(|word| !word.is_empty())
        .map(str::to_ascii_uppercase)
        .collect();
    let last = words.last()?;
    // One word that joins both: PGHOST, DBPASS, PGDATABASE.
    for prefix in ["PG", "DB", "POSTGRES"] {
        if let Some(rest) = last.strip_prefix(prefix)
            && let Some(word) = part_word(rest)
        {
            return Some(word);
        }
    }
    let about_database = words[..words.len() - 1]
        .iter()
        .any(|word| DATABASE_WORDS.contains(&word.as_str()));
    about_database.then(|| part_word(last)).flatten()
}

/// The part of `compose`'s database that `key=value` holds, if any: by
/// value for URLs and host names, by name and value for the rest (a
/// value equal to the database's password is its password only where the
/// name says so).
fn database_part(key: &str, value: &str, compose: &ComposeDatabase) -> Option<Part> {
    if SERVER_SETTINGS.contains(&key) && compose.facts.env.contains_key(key) {
        return Some(Part::ServerSetting);
    }
    if let Some(rest) = value.strip_prefix("jdbc:postgresql://")
        && let Some(url) = url_parts(&format!("postgresql://{rest}"))
        && compose.facts.host_names().contains(&url.host.as_str())
    {
        let query = rest
            .find('?')
            .map(|at| rest[at..].to_string())
            .unwrap_or_default();
        return Some(Part::Jdbc { query });
    }
    if let Some(url) = url_parts(value)
        && url.scheme.starts_with("postgres")
        && url_points_at(value, compose.facts)
    {
        return Some(Part::Key(db_keys::DATABASE_URL));
    }
    if compose.facts.host_names().contains(&value) {
        return Some(Part::Key(db_keys::HOST));
    }
    if value_points_at(value, compose.facts) && url_parts(value).is_none() {
        return Some(Part::HostPort);
    }
    match name_part(key)? {
        Word::Port if value == compose.port => Some(Part::Key(db_keys::PORT)),
        Word::User if value == compose.user => Some(Part::Key(db_keys::USERNAME)),
        Word::Password
            if compose
                .password
                .as_deref()
                .is_none_or(|password| password == value) =>
        {
            Some(Part::Key(db_keys::PASSWORD))
        }
        Word::Name if value == compose.name => Some(Part::Key(db_keys::DATABASE)),
        _ => None,
    }
}

/// `3 variables`, `1 variable`.
pub(super) fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

impl Builder<'_> {
    pub(super) fn database_plan(
        &self,
        variables: &mut IndexMap<String, String>,
        report: &mut Report,
    ) -> DatabasePlan {
        let url = variables.shift_remove(DATABASE_URL);
        let Some(database) = self.database() else {
            return self.external_database(url, report);
        };
        let name = database.name;
        report.part(name, "database");
        let given = self
            .request
            .images
            .iter()
            .find(|(service, _)| service == name)
            .map(|(_, image)| image.clone());
        let image = match (given, &database.service.image, &database.service.build) {
            (Some(image), _, _) => image,
            (None, Some(image), None) => image.clone(),
            (None, _, Some(build)) => {
                let image = ManagedDatabase::default().image;
                report.todo(format!(
                    "{name} is built from {}: the managed database runs {image}; if that Dockerfile adds extensions or scripts, push its image and pass --image {name}=IMAGE",
                    build.context.as_deref().unwrap_or(".")
                ));
                image
            }
            (None, None, None) => ManagedDatabase::default().image,
        };
        let repository = facts::image_repository(&image);
        if !["postgres", "postgis", "pgvector", "timescaledb"].contains(&repository.as_str()) {
            report.warn(format!(
                "{image}: the operator configures the official postgres image's variables (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB, PGDATA); check that this image honours them"
            ));
        }
        if let Some(url) = &url {
            report.decide(
                self.backend().name,
                format!(
                    "{DATABASE_URL} is the operator's, from Secret {}-db",
                    self.stack_name
                ),
            );
            if let Some(parts) = url_parts(url)
                .filter(|parts| !matches!(parts.scheme.as_str(), "postgres" | "postgresql"))
            {
                report.todo(format!(
                    "{} read {DATABASE_URL} as {}://...; the operator's is postgresql://...: have the application convert it",
                    self.backend().name,
                    parts.scheme
                ));
            }
        }
        let database_name = self.database_name(database, report);
        // The operator's default: the stack's name with `_` for `-`.
        let operator_name = database_name
            .clone()
            .unwrap_or_else(|| self.stack_name.replace('-', "_"));
        let wired = self.wire_database_variables(database, &operator_name, variables, report);
        self.report_database_attributes(database, variables, report);
        let managed: ManagedDatabase =
            serde_json::from_value(json!({ "image": image })).expect("a managed database spec");
        report.decide(
            name,
            format!(
                "managed, {image}, database and user {operator_name:?}, storage {} (the default; spec.database.managed.storage.size)",
                managed.storage.size.0
            ),
        );
        DatabasePlan {
            spec: DatabaseSpec {
                managed: Some(managed),
                external: None,
                name: database_name,
                pool: None,
            },
            external_url: None,
            compose_url: url,
            wired,
        }
    }

    pub(super) fn external_database(
        &self,
        url: Option<String>,
        report: &mut Report,
    ) -> DatabasePlan {
        let Some(url) = url else {
            report.warn(format!(
                "no PostgreSQL service and no {DATABASE_URL}: the stack gets a managed database with the default image (an AppStack always has one)"
            ));
            return DatabasePlan {
                spec: DatabaseSpec {
                    managed: Some(ManagedDatabase::default()),
                    ..DatabaseSpec::default()
                },
                external_url: None,
                compose_url: None,
                wired: IndexMap::new(),
            };
        };
        if let Some(parts) = url_parts(&url) {
            if !parts.scheme.starts_with("postgres") {
                report.warn(format!(
                    "{DATABASE_URL} has the scheme {}: the operator expects a PostgreSQL URL",
                    parts.scheme
                ));
            }
            if matches!(
                parts.host.as_str(),
                "localhost" | "127.0.0.1" | "::1" | "host.docker.internal"
            ) {
                report.warn(format!(
                    "{DATABASE_URL} points at {}, which inside the cluster is not your database: correct it in Secret {}",
                    parts.host, self.secret_name
                ));
            }
            if let Some(service) = self
                .all
                .iter()
                .find(|facts| facts.host_names().contains(&parts.host.as_str()))
            {
                report.warn(format!(
                    "{DATABASE_URL} points at the compose service {}, which is not carried over: correct it in Secret {}",
                    service.name, self.secret_name
                ));
            }
        }
        DatabasePlan {
            spec: DatabaseSpec {
                managed: None,
                external: Some(ExternalDatabase {
                    url_secret_ref: SecretKeyRef {
                        name: self.secret_name.clone(),
                        key: DATABASE_URL.to_string(),
                    },
                }),
                name: None,
                pool: None,
            },
            external_url: Some(url.clone()),
            compose_url: Some(url),
            wired: IndexMap::new(),
        }
    }

    /// Wires the backend's variables that hold a part of the compose
    /// database (host, port, user, password, name, a URL of it) to the
    /// operator's database: a reference to a key of Secret `<stack>-db`,
    /// or, for a JDBC URL or a `host:port`, a plain value naming the
    /// operator's Service. The server's own settings (PGDATA and the like)
    /// that came along in a shared env file are dropped.
    pub(super) fn wire_database_variables(
        &self,
        database: &Facts,
        database_name: &str,
        variables: &mut IndexMap<String, String>,
        report: &mut Report,
    ) -> IndexMap<String, Wired> {
        let compose = ComposeDatabase::of(database);
        let service = format!("{}-db", self.stack_name);
        let mut wired = IndexMap::new();
        let mut server_settings = Vec::new();
        for (key, value) in variables.iter() {
            let Some(part) = database_part(key, value, &compose) else {
                continue;
            };
            let wiring = match part {
                Part::Key(key) => Wired::DatabaseKey(key),
                Part::HostPort => Wired::Plain(format!("{service}:5432")),
                Part::Jdbc { query } => Wired::Plain(format!(
                    "jdbc:postgresql://{service}:5432/{database_name}{query}"
                )),
                Part::ServerSetting => {
                    server_settings.push(key.clone());
                    continue;
                }
            };
            wired.insert(key.clone(), wiring);
        }
        variables.retain(|key, _| !server_settings.contains(key));
        if !server_settings.is_empty() {
            report.detail(
                self.backend().name,
                format!(
                    "{} dropped: settings of the PostgreSQL server, shared with {} through an env file; the operator configures its server",
                    server_settings.join(", "),
                    database.name
                ),
            );
        }
        let from_secret: Vec<String> = wired
            .iter()
            .filter_map(|(name, wiring)| match wiring {
                Wired::DatabaseKey(key) => Some(format!("{name}={key}")),
                Wired::Plain(_) => None,
            })
            .collect();
        if !from_secret.is_empty() {
            report.decide(
                self.backend().name,
                format!(
                    "{} from Secret {service}, the operator's database: {}",
                    plural(from_secret.len(), "variable"),
                    from_secret.join(", ")
                ),
            );
        }
        for (name, wiring) in &wired {
            if let Wired::Plain(value) = wiring {
                report.decide(
                    self.backend().name,
                    format!("{name} names the operator's database: {value}"),
                );
            }
        }
        for (key, value) in variables.iter() {
            if wired.contains_key(key) {
                continue;
            }
            if let Some(url) = url_parts(value).filter(|_| url_points_at(value, database)) {
                report.warn(format!(
                    "{key} is a {} URL of the compose database {}: it is kept as written; point it at {service}",
                    url.scheme, database.name
                ));
            }
        }
        wired
    }

    /// `POSTGRES_DB` (else `POSTGRES_USER`) as the database and user name.
    pub(super) fn database_name(&self, database: &Facts, report: &mut Report) -> Option<String> {
        let user = database
            .env
            .get("POSTGRES_USER")
            .filter(|user| !user.is_empty());
        let wanted = database
            .env
            .get("POSTGRES_DB")
            .filter(|name| !name.is_empty())
            .or(user)?;
        let name = wanted.to_ascii_lowercase().replace('-', "_");
        let valid = name.len() <= 63
            && name.starts_with(|c: char| c == '_' || c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c == '_' || c.is_ascii_lowercase() || c.is_ascii_digit());
        if !valid {
            report.warn(format!(
                "database name {wanted:?} is not a PostgreSQL identifier the AppStack accepts: the stack name is used"
            ));
            return None;
        }
        if user.is_some_and(|user| *user != name) || *wanted != name {
            report.detail(
                database.name,
                format!(
                    "one name for database and user, {name} (compose had database {wanted} and user {})",
                    user.map(String::as_str).unwrap_or("postgres")
                ),
            );
        }
        Some(name)
    }

    /// What of the database service the AppStack carries. Variables the
    /// backend has too are the application's (a shared env file), not the
    /// server's.
    pub(super) fn report_database_attributes(
        &self,
        database: &Facts,
        backend_variables: &IndexMap<String, String>,
        report: &mut Report,
    ) {
        let name = database.name;
        for volume in &database.service.volumes {
            let mount = volume.mount();
            if mount.target.starts_with("/var/lib/postgresql") {
                report.detail(
                    name,
                    format!(
                        "volume {} becomes the managed database's volume",
                        mount.written
                    ),
                );
            } else {
                report.skip(
                    name,
                    format!("volume {}", mount.written),
                    "not the data volume: the operator's database mounts its data volume only; run init scripts as a migration",
                );
            }
        }
        for port in &database.service.ports {
            report.skip(
                name,
                format!("ports {:?}", port.mapping().written),
                format!(
                    "no host port: the database is reached inside the cluster through Service {}-db",
                    self.stack_name
                ),
            );
        }
        if database.service.healthcheck.is_some() {
            report.detail(
                name,
                "healthcheck replaced by the operator's pg_isready probes",
            );
        }
        if database.service.command.is_some() || database.service.entrypoint.is_some() {
            report.skip(
                name,
                "command",
                "the operator runs postgres with the image's defaults: set server options in the image",
            );
        }
        for key in database.env.keys().filter(|key| {
            !POSTGRES_VARIABLES.contains(&key.as_str()) && !backend_variables.contains_key(*key)
        }) {
            report.skip(
                name,
                format!("variable {key}"),
                "the operator sets the database's environment: bake server settings into the image",
            );
        }
        if database.env.contains_key("POSTGRES_PASSWORD_FILE") {
            report.detail(
                name,
                "POSTGRES_PASSWORD_FILE: the operator generates the password, in Secret <stack>-db",
            );
        }
        self.report_other_attributes(database, report);
    }

    /// Variables naming services the AppStack does not carry: one thing
    /// to do per such service. A variable that names a carried service
    /// too (a localhost port two services publish) is taken to mean that
    /// one; services behind an inactive profile are not in the project.
    pub(super) fn report_uncarried_hosts(
        &self,
        variables: &IndexMap<String, String>,
        report: &mut Report,
    ) {
        let carried: Vec<usize> = [
            Some(self.roles.backend),
            self.roles.frontend,
            self.roles.database,
        ]
        .into_iter()
        .flatten()
        .chain(match &self.roles.migrations {
            Some(MigrationSource::Service(index)) => Some(*index),
            _ => None,
        })
        .collect();
        let mut named: IndexMap<usize, Vec<&str>> = IndexMap::new();
        for (key, value) in variables {
            let targets: Vec<usize> = (0..self.all.len())
                .filter(|index| !self.roles.disabled.contains(index))
                .filter(|&index| value_points_at(value, &self.all[index]))
                .collect();
            if let Some(&target) = targets.first()
                && !targets.iter().any(|index| carried.contains(index))
            {
                named.entry(target).or_default().push(key);
            }
        }
        for (target, keys) in named {
            report.todo(format!(
                "{} {} {}, a compose service the stack does not run: run it (or a managed equivalent) and point {} there",
                keys.join(", "),
                if keys.len() == 1 { "names" } else { "name" },
                self.all[target].name,
                if keys.len() == 1 { "it" } else { "them" }
            ));
        }
    }
}

/// `DB_POOL_SIZE` and `DB_POOL_TIMEOUT` become `database.pool`.
pub(super) fn take_pool(
    variables: &mut IndexMap<String, String>,
    report: &mut Report,
) -> Option<PoolSpec> {
    let mut pool: PoolSpec = serde_json::from_value(json!({})).expect("a pool spec");
    let mut any = false;
    for (key, range, field) in [
        ("DB_POOL_SIZE", 1..=10000, &mut pool.size),
        ("DB_POOL_TIMEOUT", 1..=3600, &mut pool.timeout_seconds),
    ] {
        let Some(value) = variables.shift_remove(key) else {
            continue;
        };
        match value.trim().parse::<i32>() {
            Ok(number) if range.contains(&number) => {
                *field = number;
                any = true;
                report.detail(
                    "stack",
                    format!("{key} becomes database.pool: the operator sets {key} itself"),
                );
            }
            _ => report.warn(format!(
                "{key} {value:?} is not a whole number in {}..{}: dropped, the operator sets {key} itself",
                range.start(),
                range.end()
            )),
        }
    }
    any.then_some(pool)
}
