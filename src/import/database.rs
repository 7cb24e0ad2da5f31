//! How the database is wired: a managed database from the PostgreSQL
//! service, or an external one from `DATABASE_URL`; what becomes of the
//! variables that configured the compose database; the pool settings.

use indexmap::IndexMap;
use serde_json::json;

use super::build::Builder;
use super::facts::{self as roles, Facts};
use super::report::Report;
use super::roles::MigrationSource;
use super::sensitive::url_parts;
use crate::api::crd::{DatabaseSpec, ExternalDatabase, ManagedDatabase, PoolSpec, SecretKeyRef};

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
        let image = match &database.service.image {
            Some(image) => image.clone(),
            None => {
                let image = ManagedDatabase::default().image;
                report.warn(format!(
                    "{name} is built locally: the managed database uses {image}"
                ));
                image
            }
        };
        let repository = roles::image_repository(&image);
        if !["postgres", "postgis", "pgvector", "timescaledb"].contains(&repository.as_str()) {
            report.warn(format!(
                "{image}: the operator configures the official postgres image's variables (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB, PGDATA); check that this image honours them"
            ));
        }
        if let Some(url) = &url {
            report.note(format!(
                "{DATABASE_URL} of {} dropped: the operator sets it from Secret {}-db",
                self.backend().name,
                self.stack_name
            ));
            if let Some(parts) = url_parts(url)
                .filter(|parts| !matches!(parts.scheme.as_str(), "postgres" | "postgresql"))
            {
                report.warn(format!(
                    "{} read {DATABASE_URL} with the scheme {}; the operator's starts with postgresql://: convert it in the application",
                    self.backend().name,
                    parts.scheme
                ));
            }
        }
        self.drop_database_variables(database, variables, report);
        let database_name = self.database_name(database, report);
        self.report_database_attributes(database, report);
        let managed: ManagedDatabase =
            serde_json::from_value(json!({ "image": image })).expect("a managed database spec");
        report.note(format!(
            "database: managed, {image}, storage {} (the default size; set spec.database.managed.storage.size)",
            managed.storage.size.0
        ));
        DatabasePlan {
            spec: DatabaseSpec {
                managed: Some(managed),
                external: None,
                name: database_name,
                pool: None,
            },
            external_url: None,
            compose_url: url,
        }
    }

    pub(super) fn external_database(
        &self,
        url: Option<String>,
        report: &mut Report,
    ) -> DatabasePlan {
        let Some(url) = url else {
            report.warn(format!(
                "no PostgreSQL service and no {DATABASE_URL}: the stack gets a managed database (an AppStack always has one)"
            ));
            return DatabasePlan {
                spec: DatabaseSpec {
                    managed: Some(ManagedDatabase::default()),
                    ..DatabaseSpec::default()
                },
                external_url: None,
                compose_url: None,
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
        }
    }

    /// The database's own variables, its password and its host mean
    /// nothing once the operator runs the database: it generates the
    /// credentials and hands the backend DATABASE_URL.
    pub(super) fn drop_database_variables(
        &self,
        database: &Facts,
        variables: &mut IndexMap<String, String>,
        report: &mut Report,
    ) {
        let password = database
            .env
            .get("POSTGRES_PASSWORD")
            .filter(|password| !password.is_empty());
        let mut dropped = Vec::new();
        let mut host_variables = Vec::new();
        variables.retain(|key, value| {
            if database.env.contains_key(key) || password.is_some_and(|password| password == value)
            {
                dropped.push(key.clone());
                false
            } else if roles::value_points_at(value, database) {
                host_variables.push(key.clone());
                false
            } else {
                true
            }
        });
        if !dropped.is_empty() {
            report.note(format!(
                "env: {} dropped: the operator generates the database credentials and gives the backend {DATABASE_URL}",
                dropped.join(", ")
            ));
        }
        if !host_variables.is_empty() {
            report.warn(format!(
                "env: {} pointed at the compose service {} and were dropped: in the cluster the backend reaches the database through {DATABASE_URL} only",
                host_variables.join(", "),
                database.name
            ));
        }
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
        if user.is_some_and(|user| *user != name) {
            report.note(format!(
                "database: one name for database and user, {name} (compose had user {})",
                user.map(String::as_str).unwrap_or_default()
            ));
        }
        Some(name)
    }

    pub(super) fn report_database_attributes(&self, database: &Facts, report: &mut Report) {
        let name = database.name;
        for volume in &database.service.volumes {
            let mount = volume.mount();
            if mount.target.starts_with("/var/lib/postgresql") {
                report.note(format!(
                    "{name}: volume {} becomes the managed database's volume",
                    mount.written
                ));
            } else {
                report.skip(
                    name,
                    format!("volume {}", mount.written),
                    "the operator's database mounts its data volume only; run init scripts as a migration",
                );
            }
        }
        for port in &database.service.ports {
            report.skip(
                name,
                format!("ports {:?}", port.mapping().written),
                format!("the database is reached inside the cluster through Service {}-db; no host port", self.stack_name),
            );
        }
        if database.service.healthcheck.is_some() {
            report.note(format!(
                "{name}: healthcheck replaced by the operator's pg_isready probes"
            ));
        }
        if database.service.command.is_some() || database.service.entrypoint.is_some() {
            report.skip(
                name,
                "command",
                "the operator runs postgres with the image's defaults",
            );
        }
        for key in database
            .env
            .keys()
            .filter(|key| !POSTGRES_VARIABLES.contains(&key.as_str()))
        {
            report.skip(
                name,
                format!("variable {key}"),
                "the operator sets the database's environment itself",
            );
        }
        self.report_other_attributes(database, report);
    }

    /// Variables holding URLs of services the AppStack does not carry.
    pub(super) fn warn_about_uncarried_hosts(
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
        for (key, value) in variables {
            if let Some(target) = self.all.iter().enumerate().find(|(index, facts)| {
                !carried.contains(index) && roles::value_points_at(value, facts)
            }) {
                report.warn(format!(
                    "env: {key} points at the compose service {}, which is not carried over: point it at where that service runs",
                    target.1.name
                ));
            }
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
                report.note(format!("{key} becomes database.pool: the operator sets {key} itself"));
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
