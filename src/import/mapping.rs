//! A compose project (or a lone `.env`) to an AppStack and the Secret its
//! references need.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;

use super::compose::{self, CommandLine, Deploy, Project, ResourceAmounts, Service};
use super::dotenv::{self, EnvMap};
use super::env::{EnvSettings, TypedEnv, secret_destination, typed_env, valid_name};
use super::report::Report;
use super::roles::{self, FRONTEND_THRESHOLD, Facts};
use super::sensitive::{distinctive, secret_reason, url_parts};
use super::{ImportError, ProjectEnvironment};
use crate::api::crd::{
    AppStack, AppStackSpec, BackendSpec, DatabaseSpec, EnvEntry, ExternalDatabase, FrontendSpec,
    HealthSpec, MAX_STACK_NAME_LENGTH, ManagedDatabase, MigrationsSpec, PoolSpec, Quantity,
    RESERVED_ENV_NAMES, Resources, SecretKeyRef,
};

/// What `appstack import compose` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct ComposeRequest {
    /// Compose files in merge order; empty for the default files.
    pub files: Vec<PathBuf>,
    /// `.env` files; empty for the project directory's `.env`, if any.
    pub env_files: Vec<PathBuf>,
    /// Relative paths are resolved against it.
    pub working_directory: PathBuf,
    /// The process environment (it wins over `.env`, as in Compose).
    pub process_env: BTreeMap<String, String>,
    /// The AppStack's name; the compose project name when `None`.
    pub name: Option<String>,
    /// `SERVICE=IMAGE` for services that only have `build:`.
    pub images: Vec<(String, String)>,
    /// The backend service, when the heuristics should not choose.
    pub backend: Option<String>,
    /// The frontend service, when the heuristics should not choose.
    pub frontend: Option<String>,
    /// Placeholder secrets become `generate` entries.
    pub generate_secrets: bool,
    /// Where the Secret manifest will be written, for the messages.
    pub secrets_out: Option<PathBuf>,
}

/// An AppStack, the values of the Secret it references, and the report.
#[derive(Debug)]
pub struct Imported {
    pub stack: AppStack,
    /// Name of the Secret the stack's references point at.
    pub secret_name: String,
    /// The values that Secret must hold; empty when it references none.
    pub secret_values: BTreeMap<String, String>,
    pub report: Report,
}

/// Port the backend gets when nothing in the project names one.
const DEFAULT_BACKEND_PORT: u16 = 8000;
/// Port the frontend gets when nothing in the project names one.
const DEFAULT_FRONTEND_PORT: u16 = 3000;
/// The AppStack's key for the external database URL in the Secret.
const DATABASE_URL: &str = "DATABASE_URL";
/// Variables of the official postgres image that configure the server.
const POSTGRES_VARIABLES: [&str; 3] = ["POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"];

/// The Secret manifest holding `values`, for `--secrets-out`.
pub fn secret_manifest(name: &str, values: &BTreeMap<String, String>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/created-by".to_string(),
                "appstack-import".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        string_data: Some(values.clone()),
        ..Secret::default()
    }
}

/// The Secret an imported stack references: `<stack>-dotenv`.
fn secret_name(stack: &str) -> String {
    format!("{stack}-dotenv")
}

/// Imports a compose project.
pub fn import_compose(request: &ComposeRequest) -> Result<Imported, ImportError> {
    let mut report = Report::default();
    let files = if request.files.is_empty() {
        compose::default_files(&request.working_directory, &mut report)?
    } else {
        request
            .files
            .iter()
            .map(|file| request.working_directory.join(file))
            .collect()
    };
    let directory = files
        .first()
        .and_then(|file| file.parent())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| request.working_directory.clone());
    let environment = project_environment(request, &directory, &mut report)?;
    let project = compose::load(&files, &|name| environment.get(name), &mut report)?;
    if project.services.is_empty() {
        return Err(ImportError::NoServices);
    }
    report_top_level(&project, &mut report);
    let mut envs = IndexMap::new();
    for (name, service) in &project.services {
        let env =
            service_environment(name, service, &project.directory, &environment, &mut report)?;
        envs.insert(name.clone(), env);
    }
    let stack_name = stack_name(request, &project, &environment, &mut report);
    let all = roles::facts(&project.services, &envs);
    let known_secrets = known_secrets(&environment, &envs);
    let roles = assign_roles(request, &all, &mut report)?;
    let builder = Builder {
        request,
        stack_name: &stack_name,
        secret_name: secret_name(&stack_name),
        all: &all,
        roles: &roles,
        known_secrets: &known_secrets,
    };
    Ok(builder.build(report))
}

/// Reads the `.env` files into the project environment.
fn project_environment(
    request: &ComposeRequest,
    directory: &Path,
    report: &mut Report,
) -> Result<ProjectEnvironment, ImportError> {
    let env_files: Vec<PathBuf> = if request.env_files.is_empty() {
        let default = directory.join(".env");
        if default.is_file() {
            vec![default]
        } else {
            Vec::new()
        }
    } else {
        request
            .env_files
            .iter()
            .map(|file| request.working_directory.join(file))
            .collect()
    };
    let mut files = EnvMap::new();
    for path in &env_files {
        let text = std::fs::read_to_string(path).map_err(|source| ImportError::Read {
            path: path.clone(),
            source,
        })?;
        let unset = dotenv::parse_into(&text, &mut files, &|name| {
            request.process_env.get(name).cloned()
        })
        .map_err(|source| ImportError::Dotenv {
            path: path.clone(),
            source,
        })?;
        for name in unset {
            report.warn(format!(
                "variable {name} is not set: an empty string was substituted ({})",
                path.display()
            ));
        }
    }
    Ok(ProjectEnvironment {
        process: request.process_env.clone(),
        files,
    })
}

fn report_top_level(project: &Project, report: &mut Report) {
    for key in &project.top_level {
        match key.as_str() {
            "version" => report.note("the top-level `version` is obsolete and ignored, as Compose ignores it"),
            "volumes" => {}
            "networks" => report.skip(
                "project",
                "networks",
                "the cluster network connects the stack's pods; the operator writes its NetworkPolicies",
            ),
            "secrets" | "configs" => report.skip(
                "project",
                key.clone(),
                "files mounted into containers have no AppStack field; put secret values in .env (they become Secret references)",
            ),
            "include" => report.warn(
                "`include` is not followed: pass the included files with -f to merge them",
            ),
            other => report.skip("project", other.to_string(), "no AppStack field for it"),
        }
    }
}

/// A service's environment as the container would get it: its env files,
/// then `environment` (which wins); a name alone takes its value from the
/// project environment, and stays unset without one.
fn service_environment(
    name: &str,
    service: &Service,
    directory: &Path,
    environment: &ProjectEnvironment,
    report: &mut Report,
) -> Result<EnvMap, ImportError> {
    let mut declared = EnvMap::new();
    for (key, value) in &service.environment {
        match value.clone().or_else(|| environment.get(key)) {
            Some(value) => {
                declared.insert(key.clone(), value);
            }
            None => report.note(format!(
                "{name}: {key} has no value in the environment or .env: left unset, as Compose does"
            )),
        }
    }
    let mut values = EnvMap::new();
    for env_file in &service.env_file {
        let path = directory.join(env_file.path());
        if !path.is_file() && !env_file.required() {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|source| ImportError::Read {
            path: path.clone(),
            source,
        })?;
        if env_file.raw() {
            for line in text
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
            {
                if let Some((key, value)) = line.split_once('=') {
                    values.insert(key.trim().to_string(), value.to_string());
                }
            }
            continue;
        }
        let lookup = |key: &str| environment.get(key).or_else(|| declared.get(key).cloned());
        let unset = dotenv::parse_into(&text, &mut values, &lookup).map_err(|source| {
            ImportError::Dotenv {
                path: path.clone(),
                source,
            }
        })?;
        for variable in unset {
            report.warn(format!(
                "variable {variable} is not set: an empty string was substituted ({})",
                path.display()
            ));
        }
    }
    for (key, value) in declared {
        values.insert(key, value);
    }
    Ok(values)
}

/// Every secret value in the project: `.env` entries and service
/// environments whose name or value marks them secret.
fn known_secrets(
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

/// A DNS-1035 label of at most [`MAX_STACK_NAME_LENGTH`] characters made
/// from `text`: lowercase, other characters to `-`.
pub fn sanitize_name(text: &str) -> String {
    let mut name = String::new();
    for c in text.to_ascii_lowercase().chars() {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if !(c == '-' && (name.is_empty() || name.ends_with('-'))) {
            name.push(c);
        }
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert_str(0, "app-");
    }
    name.truncate(MAX_STACK_NAME_LENGTH);
    let name = name.trim_end_matches('-').to_string();
    if name.is_empty() {
        "app".to_string()
    } else {
        name
    }
}

fn stack_name(
    request: &ComposeRequest,
    project: &Project,
    environment: &ProjectEnvironment,
    report: &mut Report,
) -> String {
    let (source, wanted) = match (
        &request.name,
        &project.name,
        environment.get("COMPOSE_PROJECT_NAME"),
    ) {
        (Some(name), _, _) => ("--name", name.clone()),
        (None, Some(name), _) => ("the compose project name", name.clone()),
        (None, None, Some(name)) => ("COMPOSE_PROJECT_NAME", name),
        (None, None, None) => (
            "the project directory",
            std::fs::canonicalize(&project.directory)
                .unwrap_or_else(|_| project.directory.clone())
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ),
    };
    let name = sanitize_name(&wanted);
    if name == wanted {
        report.note(format!("stack name {name}, from {source}"));
    } else {
        report.note(format!(
            "stack name {name}, from {source} {wanted:?} made a valid name (lowercase letters, digits and '-', at most {MAX_STACK_NAME_LENGTH} characters); change it with --name"
        ));
    }
    name
}

/// How the migrations are run.
enum MigrationSource {
    /// A service of their own.
    Service(usize),
    /// The first commands of the backend's `sh -c` chain.
    BackendChain {
        tool: &'static str,
        migrate: Vec<Vec<String>>,
        rest: Vec<Vec<String>>,
    },
}

/// Which service (by index in compose order) plays which part.
struct Roles {
    database: Option<usize>,
    migrations: Option<MigrationSource>,
    backend: usize,
    frontend: Option<usize>,
}

fn service_index(all: &[Facts], flag: &'static str, name: &str) -> Result<usize, ImportError> {
    all.iter()
        .position(|facts| facts.name == name)
        .ok_or_else(|| ImportError::UnknownService {
            flag,
            service: name.to_string(),
            known: all
                .iter()
                .map(|facts| facts.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Services not yet given a part, as the parts are handed out.
struct Unassigned<'a> {
    all: &'a [Facts<'a>],
    taken: Vec<bool>,
    /// Services named by `--backend` and `--frontend`, kept for those parts.
    reserved: [Option<usize>; 2],
}

impl<'a> Unassigned<'a> {
    /// Free services, in compose order, that no flag reserved.
    fn free(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.all.len())
            .filter(|&index| !self.taken[index] && !self.reserved.contains(&Some(index)))
    }

    fn take(&mut self, index: usize) -> usize {
        self.taken[index] = true;
        index
    }

    /// The free service (compose order breaks ties) scoring highest, if it
    /// scores at least `threshold`.
    fn best(
        &self,
        candidates: &[usize],
        threshold: i32,
        score: impl Fn(&Facts) -> i32,
    ) -> Option<usize> {
        let mut best: Option<(usize, i32)> = None;
        for &index in candidates.iter().filter(|&&index| !self.taken[index]) {
            let score = score(&self.all[index]);
            if score >= threshold && best.is_none_or(|(_, best_score)| score > best_score) {
                best = Some((index, score));
            }
        }
        best.map(|(index, _)| index)
    }
}

fn assign_roles(
    request: &ComposeRequest,
    all: &[Facts],
    report: &mut Report,
) -> Result<Roles, ImportError> {
    let chosen_backend = request
        .backend
        .as_deref()
        .map(|name| service_index(all, "--backend", name))
        .transpose()?;
    let chosen_frontend = request
        .frontend
        .as_deref()
        .map(|name| service_index(all, "--frontend", name))
        .transpose()?;
    for (service, _) in &request.images {
        if !all.iter().any(|facts| facts.name == service) {
            report.warn(format!(
                "--image {service}=...: the compose project has no service {service}"
            ));
        }
    }
    let mut unassigned = Unassigned {
        all,
        taken: vec![false; all.len()],
        reserved: [chosen_backend, chosen_frontend],
    };
    leave_out_profiles(&mut unassigned, report);
    let database = choose_database(&mut unassigned, report);
    let migration_service = choose_migration_service(&mut unassigned, report);
    // Infrastructure and workers are never the application.
    let candidates: Vec<usize> = unassigned
        .free()
        .chain(chosen_backend)
        .chain(chosen_frontend)
        .filter(|&index| {
            roles::infrastructure(&all[index]).is_none() && roles::worker(&all[index]).is_none()
        })
        .collect();
    let database_facts = database.map(|index| &all[index]);

    let backend = match chosen_backend {
        Some(index) => index,
        None => {
            let candidates: Vec<usize> = candidates
                .iter()
                .copied()
                .filter(|index| Some(*index) != chosen_frontend)
                .collect();
            let backend = unassigned
                .best(&candidates, i32::MIN, |facts| {
                    roles::backend_score(facts, database_facts, all)
                })
                .ok_or(ImportError::NoBackend)?;
            report.note(format!(
                "backend: service {} (choose another with --backend SERVICE)",
                all[backend].name
            ));
            backend
        }
    };
    unassigned.take(backend);
    let migrations = match migration_service {
        Some(index) => Some(MigrationSource::Service(index)),
        None => backend_chain_migrations(&all[backend]),
    };

    let frontend = chosen_frontend.or_else(|| {
        let frontend = unassigned.best(&candidates, FRONTEND_THRESHOLD, |facts| {
            roles::frontend_score(facts, &all[backend], database_facts)
        })?;
        report.note(format!(
            "frontend: service {} (choose another with --frontend SERVICE)",
            all[frontend].name
        ));
        Some(frontend)
    });
    if let Some(index) = frontend {
        unassigned.take(index);
    }
    report_unassigned(&unassigned, report);
    Ok(Roles {
        database,
        migrations,
        backend,
        frontend,
    })
}

/// Services behind a profile are not part of the default project.
fn leave_out_profiles(unassigned: &mut Unassigned, report: &mut Report) {
    let profiled: Vec<usize> = unassigned
        .free()
        .filter(|&index| !unassigned.all[index].service.profiles.is_empty())
        .collect();
    for index in profiled {
        let facts = &unassigned.all[unassigned.take(index)];
        report.skip(
            facts.name,
            "service",
            format!(
                "only started with profile {}: not part of the default project",
                facts.service.profiles.join(", ")
            ),
        );
    }
}

/// The first PostgreSQL service; any other is left out.
fn choose_database(unassigned: &mut Unassigned, report: &mut Report) -> Option<usize> {
    let servers: Vec<usize> = unassigned
        .free()
        .filter(|&index| roles::is_postgres(&unassigned.all[index]))
        .collect();
    for &index in servers.iter().skip(1) {
        report.skip(
            unassigned.all[index].name,
            "service",
            "a second PostgreSQL server: an AppStack has one database",
        );
    }
    for &index in &servers {
        unassigned.take(index);
    }
    servers.first().copied()
}

/// A one-shot service others wait for (`service_completed_successfully`),
/// else one whose command ends by running a migration tool; any other such
/// service is left out.
fn choose_migration_service(unassigned: &mut Unassigned, report: &mut Report) -> Option<usize> {
    let all = unassigned.all;
    let awaited = |index: usize| {
        all.iter().any(|other| {
            other
                .service
                .depends_on
                .get(all[index].name)
                .is_some_and(|dependency| {
                    dependency.condition() == "service_completed_successfully"
                })
        })
    };
    let runs_migrations = |index: usize| {
        let facts = &all[index];
        let mut words: Vec<String> = facts.image_repository().into_iter().collect();
        let last_command = [&facts.service.entrypoint, &facts.service.command]
            .iter()
            .rev()
            .find_map(|line| line.as_ref().and_then(roles::shell_chain))
            .and_then(|chain| chain.last().cloned());
        words.extend(last_command.unwrap_or_else(|| facts.words()));
        roles::migration_tool(&words).is_some() && facts.service.ports.is_empty()
    };
    let candidates: Vec<usize> = unassigned
        .free()
        .filter(|&index| awaited(index) || runs_migrations(index))
        .collect();
    let chosen = candidates
        .iter()
        .copied()
        .find(|&index| awaited(index))
        .or_else(|| candidates.first().copied());
    for &index in &candidates {
        unassigned.take(index);
        if Some(index) != chosen {
            report.skip(
                all[index].name,
                "service",
                "a second one-shot or migration service: the AppStack runs one migration Job; fold it into the migration command",
            );
        }
    }
    chosen
}

/// Every service without a part, with the reason it has none.
fn report_unassigned(unassigned: &Unassigned, report: &mut Report) {
    for index in unassigned.free() {
        let facts = &unassigned.all[index];
        let reason = roles::infrastructure(facts).or_else(|| roles::worker(facts)).unwrap_or(
            "not the database, the migrations, the backend or the frontend: an AppStack has no place for another service; run it separately",
        );
        let what = match &facts.service.image {
            Some(image) => format!("service (image {image})"),
            None => "service".to_string(),
        };
        report.skip(facts.name, what, reason);
    }
}

/// Migrations the backend runs itself before starting its server, in a
/// `sh -c` chain: the migration commands become the Job, the others stay.
fn backend_chain_migrations(backend: &Facts) -> Option<MigrationSource> {
    let chain = roles::shell_chain(backend.service.command.as_ref()?)?;
    let tool = chain
        .iter()
        .find_map(|command| roles::migration_tool(command))?;
    let (migrate, rest): (Vec<Vec<String>>, Vec<Vec<String>>) = chain
        .into_iter()
        .partition(|command| roles::migration_tool(command).is_some());
    (!rest.is_empty()).then_some(MigrationSource::BackendChain {
        tool,
        migrate,
        rest,
    })
}

/// Everything the spec builders share.
struct Builder<'a> {
    request: &'a ComposeRequest,
    stack_name: &'a str,
    secret_name: String,
    all: &'a [Facts<'a>],
    roles: &'a Roles,
    known_secrets: &'a [(String, String)],
}

/// The database part of the spec, and what it takes out of the env.
struct DatabasePlan {
    spec: DatabaseSpec,
    /// The external database URL, for the Secret.
    external_url: Option<String>,
    /// The backend's DATABASE_URL in the compose project; the operator's
    /// takes its place.
    compose_url: Option<String>,
}

/// The parts of a backend or frontend spec read from its service.
struct Workload {
    image: String,
    command: Option<Vec<String>>,
    args: Option<Vec<String>>,
    port: i32,
    health: Option<HealthSpec>,
    replicas: Option<i32>,
    resources: Option<Resources>,
}

impl Builder<'_> {
    fn backend(&self) -> &Facts<'_> {
        &self.all[self.roles.backend]
    }

    fn database(&self) -> Option<&Facts<'_>> {
        self.roles.database.map(|index| &self.all[index])
    }

    fn migration_service(&self) -> Option<&Facts<'_>> {
        match &self.roles.migrations {
            Some(MigrationSource::Service(index)) => Some(&self.all[*index]),
            _ => None,
        }
    }

    fn frontend(&self) -> Option<&Facts<'_>> {
        self.roles.frontend.map(|index| &self.all[index])
    }

    fn build(&self, mut report: Report) -> Imported {
        let settings = EnvSettings {
            stack_name: self.stack_name,
            secret_name: &self.secret_name,
            generate_secrets: self.request.generate_secrets,
            secrets_out: self.request.secrets_out.as_deref(),
        };
        let mut variables = self.application_variables(&mut report);
        let database = self.database_plan(&mut variables, &mut report);
        let pool = take_pool(&mut variables, &mut report);
        self.warn_about_uncarried_hosts(&variables, &mut report);
        let TypedEnv {
            entries: env,
            mut secret_values,
            generated_values,
        } = typed_env(
            &variables,
            self.known_secrets,
            &settings,
            self.backend().name,
            &mut report,
        );
        if let Some(url) = &database.external_url {
            secret_values.insert(DATABASE_URL.to_string(), url.clone());
            report.note(format!(
                "database: external, URL from Secret {} key {DATABASE_URL} ({})",
                self.secret_name,
                secret_destination(&settings)
            ));
        }
        let mut backend = self.backend_spec(&mut report);
        let mut migrations = self.migrations_spec(&mut backend, &mut report);
        let mut frontend = self.frontend_spec(&mut report);
        let secrets = self.secret_values_in_play(&secret_values);
        // What the backend and migration containers' env holds, by value.
        let mut held: Vec<(String, String)> = secret_values
            .iter()
            .chain(&generated_values)
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        held.extend(
            database
                .compose_url
                .iter()
                .map(|url| (DATABASE_URL.to_string(), url.clone())),
        );
        guard_command(
            &mut backend.command,
            &mut backend.args,
            self.backend().name,
            &held,
            &secrets,
            &mut report,
        );
        if let Some(migrations) = &mut migrations {
            guard_command(
                &mut migrations.command,
                &mut migrations.args,
                "migrations",
                &held,
                &secrets,
                &mut report,
            );
        }
        if let Some(frontend) = &mut frontend {
            guard_command(
                &mut frontend.command,
                &mut frontend.args,
                "frontend",
                &[],
                &secrets,
                &mut report,
            );
        }
        let mut database_spec = database.spec;
        database_spec.pool = pool;
        let spec = AppStackSpec {
            database: database_spec,
            migrations,
            backend,
            frontend,
            env,
            monitoring: None,
            expose: None,
            network_policy: None,
        };
        report.redact(
            &secrets
                .iter()
                .map(|(_, value)| value.as_str())
                .collect::<Vec<_>>(),
        );
        Imported {
            stack: AppStack::new(self.stack_name, spec),
            secret_name: self.secret_name.clone(),
            secret_values,
            report,
        }
    }

    /// Every secret value that must not appear in the AppStack: the
    /// project's and the ones the Secret will hold.
    fn secret_values_in_play(
        &self,
        secret_values: &BTreeMap<String, String>,
    ) -> Vec<(String, String)> {
        let mut secrets: Vec<(String, String)> = self.known_secrets.to_vec();
        secrets.extend(
            secret_values
                .iter()
                .map(|(key, value)| (key.clone(), value.clone())),
        );
        secrets.retain(|(_, value)| distinctive(value));
        secrets
    }

    /// The backend's environment, with the migration service's variables
    /// it lacks (the AppStack gives both the same env).
    fn application_variables(&self, report: &mut Report) -> IndexMap<String, String> {
        let backend = self.backend();
        let mut variables: IndexMap<String, String> = backend.env.clone();
        if let Some(migration) = self.migration_service() {
            let mut added = Vec::new();
            for (key, value) in migration.env {
                match variables.get(key) {
                    None => {
                        variables.insert(key.clone(), value.clone());
                        added.push(key.clone());
                    }
                    Some(existing) if existing != value => report.warn(format!(
                        "{} sets {key} differently from {}: the AppStack gives both the backend's value",
                        migration.name, backend.name
                    )),
                    Some(_) => {}
                }
            }
            if !added.is_empty() {
                report.note(format!(
                    "env: {} from {} (the backend gets them too)",
                    added.join(", "),
                    migration.name
                ));
            }
        }
        let compose_settings: Vec<String> = variables
            .keys()
            .filter(|key| key.starts_with("COMPOSE_"))
            .cloned()
            .collect();
        if !compose_settings.is_empty() {
            variables.retain(|key, _| !key.starts_with("COMPOSE_"));
            report.note(format!(
                "env: {} dropped: settings of Compose itself",
                compose_settings.join(", ")
            ));
        }
        variables
    }

    fn database_plan(
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

    fn external_database(&self, url: Option<String>, report: &mut Report) -> DatabasePlan {
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
    fn drop_database_variables(
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
    fn database_name(&self, database: &Facts, report: &mut Report) -> Option<String> {
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

    fn report_database_attributes(&self, database: &Facts, report: &mut Report) {
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
    fn warn_about_uncarried_hosts(
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

    /// What backend and frontend are made of alike; reports the service's
    /// dependencies and the attributes that are not carried over.
    fn workload(
        &self,
        facts: &Facts,
        component: &str,
        default_port: u16,
        report: &mut Report,
    ) -> Workload {
        let image = self.image(facts, report);
        let (command, args) = command_and_args(facts);
        let health = health(facts, report);
        let service_name = format!("{}-{component}", self.stack_name);
        let port = port(facts, health.as_ref(), default_port, report, &service_name);
        let (replicas, resources) = facts
            .service
            .deploy
            .as_ref()
            .map(|deploy| {
                (
                    deploy_replicas(deploy, facts.name, report),
                    deploy_resources(deploy),
                )
            })
            .unwrap_or_default();
        self.report_dependencies(facts, &format!("the {component} starts"), report);
        self.report_other_attributes(facts, report);
        Workload {
            image,
            command,
            args,
            port: i32::from(port),
            health: health.map(|(health, _)| health),
            replicas,
            resources,
        }
    }

    fn backend_spec(&self, report: &mut Report) -> BackendSpec {
        let Workload {
            image,
            command,
            args,
            port,
            health,
            replicas,
            resources,
        } = self.workload(self.backend(), "backend", DEFAULT_BACKEND_PORT, report);
        // Read from JSON so the CRD's defaults apply to what compose leaves out.
        let mut spec: BackendSpec =
            serde_json::from_value(json!({ "image": image })).expect("a backend spec");
        spec.command = command;
        spec.args = args;
        spec.port = port;
        spec.health = health;
        spec.replicas = replicas;
        spec.resources = resources;
        spec
    }

    fn migrations_spec(
        &self,
        backend: &mut BackendSpec,
        report: &mut Report,
    ) -> Option<MigrationsSpec> {
        // Read from `{}` so the CRD's defaults apply.
        let mut spec: MigrationsSpec =
            serde_json::from_value(json!({})).expect("a migrations spec");
        match self.roles.migrations.as_ref()? {
            MigrationSource::Service(index) => {
                let facts = &self.all[*index];
                let backend = self.backend();
                let same_image = match (&facts.service.image, &backend.service.image) {
                    (Some(image), Some(backend_image)) => image == backend_image,
                    (None, None) => {
                        let context = |facts: &Facts| {
                            facts
                                .service
                                .build
                                .as_ref()
                                .and_then(|build| build.context.clone())
                        };
                        context(facts) == context(backend)
                    }
                    _ => false,
                } && !self
                    .request
                    .images
                    .iter()
                    .any(|(service, _)| service == facts.name);
                if !same_image {
                    spec.image = Some(self.image(facts, report));
                }
                let (command, args) = command_and_args(facts);
                spec.command = command;
                spec.args = args;
                let tool = roles::migration_tool(&facts.words());
                report.note(format!(
                    "migrations: service {}{} runs as the migration Job, to success before the backend moves",
                    facts.name,
                    tool.map(|tool| format!(" ({tool})")).unwrap_or_default()
                ));
                for other in self.all {
                    if let Some(dependency) = other.service.depends_on.get(facts.name)
                        && dependency.condition() == "service_completed_successfully"
                    {
                        report.note(format!(
                            "{} depends_on {} (service_completed_successfully): the operator's order runs migrations to success before the backend moves",
                            other.name, facts.name
                        ));
                    }
                }
                for port in &facts.service.ports {
                    report.skip(
                        facts.name,
                        format!("ports {:?}", port.mapping().written),
                        "a migration Job serves nothing",
                    );
                }
                self.report_dependencies(facts, "migrations run", report);
                if let Some(deploy) = &facts.service.deploy
                    && let Some(resources) = deploy_resources(deploy)
                {
                    spec.resources = Some(resources);
                }
                self.report_other_attributes(facts, report);
            }
            MigrationSource::BackendChain {
                tool,
                migrate,
                rest,
            } => {
                spec.command = backend.command.clone();
                spec.args = Some(shell_or_words(migrate));
                backend.args = Some(shell_or_words(rest));
                report.note(format!(
                    "migrations: {} ran {tool} migrations in its command before starting; they now run as the migration Job before the backend starts, and the backend's command only starts the server",
                    self.backend().name
                ));
            }
        }
        Some(spec)
    }

    fn frontend_spec(&self, report: &mut Report) -> Option<FrontendSpec> {
        let facts = self.frontend()?;
        let Workload {
            image,
            command,
            args,
            port,
            health,
            replicas,
            resources,
        } = self.workload(facts, "frontend", DEFAULT_FRONTEND_PORT, report);
        let mut spec: FrontendSpec =
            serde_json::from_value(json!({ "image": image })).expect("a frontend spec");
        spec.command = command;
        spec.args = args;
        spec.port = port;
        spec.health = health;
        spec.replicas = replicas;
        spec.resources = resources;
        let api_url = roles::api_url_variable(facts, self.backend())
            .filter(|name| valid_name(name) && !RESERVED_ENV_NAMES.contains(&name.as_str()));
        match &api_url {
            Some(name) => {
                report.note(format!(
                    "frontend: {name} becomes apiUrlEnv: the operator sets it to the backend Service's URL"
                ));
                spec.api_url_env = name.clone();
            }
            None => report.note(format!(
                "frontend: no variable held the backend's URL; the operator sets {} (apiUrlEnv) to it",
                spec.api_url_env
            )),
        }
        for key in facts
            .env
            .keys()
            .filter(|key| Some(*key) != api_url.as_ref())
        {
            report.skip(
                facts.name,
                format!("variable {key}"),
                "an AppStack gives the frontend only the backend's URL (apiUrlEnv); build the value into the image",
            );
        }
        Some(spec)
    }

    /// The image of a service: `--image`, its `image`, or a placeholder the
    /// API server rejects for a service that is only built.
    fn image(&self, facts: &Facts, report: &mut Report) -> String {
        if let Some((_, image)) = self
            .request
            .images
            .iter()
            .find(|(service, _)| service == facts.name)
        {
            if facts.service.build.is_some() {
                report.note(format!(
                    "{}: image {image} (from --image) instead of its build",
                    facts.name
                ));
            }
            return image.clone();
        }
        if let Some(image) = &facts.service.image {
            return image.clone();
        }
        let context = facts
            .service
            .build
            .as_ref()
            .and_then(|build| build.context.clone())
            .unwrap_or_else(|| ".".into());
        report.warn(format!(
            "{} is only built (build: {context}): push the image and pass --image {}=REGISTRY/IMAGE:TAG; until then the AppStack holds a placeholder the API server rejects",
            facts.name, facts.name
        ));
        format!("<built from {context}: pass --image {}=IMAGE>", facts.name)
    }

    /// What becomes of a carried service's `depends_on`; `starts` says
    /// what the service is in the operator's order ("the backend starts").
    fn report_dependencies(&self, facts: &Facts, starts: &str, report: &mut Report) {
        for (dependency, condition) in &facts.service.depends_on {
            let condition = condition.condition();
            let index = self.all.iter().position(|other| other.name == dependency);
            let name = facts.name;
            if index.is_some() && index == self.roles.database {
                report.note(format!(
                    "{name} depends_on {dependency} ({condition}): the operator's order already waits for the database to be ready before {starts}"
                ));
            } else if index.is_some() && index == Some(self.roles.backend) {
                report.note(format!(
                    "{name} depends_on {dependency} ({condition}): the operator's order already brings up the backend before {starts}"
                ));
            } else if self
                .migration_service()
                .is_some_and(|migration| migration.name == dependency)
            {
                // Said with the migrations.
            } else {
                report.skip(
                    name,
                    format!("depends_on {dependency}"),
                    format!("{dependency} is not part of the AppStack"),
                );
            }
        }
    }

    /// Attributes of a carried service the AppStack has no field for.
    fn report_other_attributes(&self, facts: &Facts, report: &mut Report) {
        let name = facts.name;
        let is_database = self
            .roles
            .database
            .is_some_and(|index| self.all[index].name == name);
        if !is_database {
            for volume in &facts.service.volumes {
                let mount = volume.mount();
                let reason = match (mount.kind.as_str(), &mount.source) {
                    ("bind", _) => {
                        "a bind mount from the host (source code or configuration): build it into the image"
                    }
                    (_, Some(_)) => {
                        "a named volume: an AppStack gives its workloads no persistent volume"
                    }
                    (_, None) => "an anonymous volume: not needed without the bind mounts",
                };
                report.skip(name, format!("volume {}", mount.written), reason);
            }
        }
        if let Some(container_name) = &facts.service.container_name {
            report.skip(
                name,
                format!("container_name {container_name}"),
                "pod names are generated",
            );
        }
        if let Some(restart) = &facts.service.restart {
            let reason = if self
                .migration_service()
                .is_some_and(|migration| migration.name == name)
            {
                "the migration Job retries a failed run up to backoffLimit times"
            } else {
                "Kubernetes restarts failed containers itself"
            };
            report.skip(name, format!("restart {restart}"), reason);
        }
        for key in facts
            .service
            .other
            .keys()
            .filter(|key| !key.starts_with("x-"))
        {
            let reason = match key.as_str() {
                "networks" | "network_mode" | "links" | "external_links" => {
                    "the cluster network connects the stack's pods; the operator writes its NetworkPolicies"
                }
                "working_dir" | "user" => "set it in the image (WORKDIR, USER)",
                "labels" => "container labels have no AppStack field (podLabels sets pod labels)",
                "logging" => "the cluster's log collection applies",
                "hostname" | "domainname" | "extra_hosts" | "dns" => {
                    "in the cluster, services are reached by their Service names"
                }
                "stdin_open" | "tty" => "interactive settings mean nothing to a Deployment",
                "develop" => "Compose Watch is a development feature",
                _ => "no AppStack field for it",
            };
            report.skip(name, key.clone(), reason);
        }
    }
}

/// Compose `entrypoint` is the container's command and `command` its
/// arguments, as in Kubernetes; empty ones are left to the image.
fn command_and_args(facts: &Facts) -> (Option<Vec<String>>, Option<Vec<String>>) {
    let words = |line: &Option<CommandLine>| {
        line.as_ref()
            .and_then(|line| line.words().ok())
            .filter(|words| !words.is_empty())
            .map(|words| words.iter().map(|word| kubernetes_literal(word)).collect())
    };
    (
        words(&facts.service.entrypoint),
        words(&facts.service.command),
    )
}

/// Escapes `text` so Kubernetes passes it through unchanged: in command and
/// args, `$(NAME)` is a variable reference and `$$` a literal `$`.
pub fn kubernetes_literal(text: &str) -> String {
    let mut output = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        output.push(c);
        if c == '$' && matches!(chars.peek(), Some('(' | '$')) {
            output.push('$');
        }
    }
    output
}

/// Commands as exec words when there is one simple command, else as a
/// `sh -c` script chained with `&&`.
fn shell_or_words(commands: &[Vec<String>]) -> Vec<String> {
    let strip_exec = |command: &Vec<String>| -> Vec<String> {
        match command.split_first() {
            Some((first, rest)) if first == "exec" && !rest.is_empty() => rest.to_vec(),
            _ => command.clone(),
        }
    };
    let simple = |command: &Vec<String>| {
        command
            .iter()
            .all(|word| !word.contains(['$', '|', '>', '<', '*', '`', '&', ';']))
    };
    match commands {
        [command] if simple(command) => strip_exec(command)
            .iter()
            .map(|word| kubernetes_literal(word))
            .collect(),
        _ => {
            let script = commands
                .iter()
                .map(|command| {
                    shlex::try_join(command.iter().map(String::as_str))
                        .unwrap_or_else(|_| command.join(" "))
                })
                .collect::<Vec<_>>()
                .join(" && ");
            vec!["sh".into(), "-c".into(), kubernetes_literal(&script)]
        }
    }
}

/// Replaces secret values in a command by `$(NAME)` references to the
/// variables of the container's env (`held`: name and value) that hold
/// them; a command with a secret the env does not hold is left out.
fn guard_command(
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
                if !word.contains(value.as_str()) {
                    continue;
                }
                let holder = held
                    .iter()
                    .find(|(_, held_value)| held_value == value)
                    .map(|(name, _)| name.clone());
                match holder {
                    Some(name) => {
                        *word = word.replace(value.as_str(), &format!("$({name})"));
                        report.note(format!(
                            "{owner}: {field} held the value of {key}: replaced by $({name}), which Kubernetes expands from the container's env"
                        ));
                    }
                    None => leaked = Some(key.clone()),
                }
            }
        }
        if let Some(key) = leaked {
            *words = None;
            report.warn(format!(
                "{owner}: {field} held the value of {key}, which its container's env does not hold: left out of the AppStack; set it by hand"
            ));
        }
    }
}

/// The HTTP path and port a healthcheck requests, if it is an HTTP check.
fn health(facts: &Facts, report: &mut Report) -> Option<(HealthSpec, Option<u16>)> {
    let healthcheck = facts.service.healthcheck.as_ref()?;
    let test = healthcheck.test.as_ref()?;
    if healthcheck.disable == Some(true) {
        return None;
    }
    let words = test.words().unwrap_or_default();
    if words.first().is_some_and(|word| word == "NONE") {
        return None;
    }
    let text = words.join(" ");
    let url = text.match_indices("http").find_map(|(start, _)| {
        let candidate = &text[start..];
        let end = candidate
            .find(|c: char| c.is_whitespace() || matches!(c, '\'' | '"' | ')' | '`'))
            .unwrap_or(candidate.len());
        url_parts(&candidate[..end])
            .filter(|parts| parts.scheme == "http" || parts.scheme == "https")
    });
    let Some(url) = url else {
        report.skip(
            facts.name,
            format!("healthcheck {:?}", test.display()),
            "not an HTTP check: the AppStack's probes are HTTP GETs of health.path",
        );
        return None;
    };
    let valid = url.path.starts_with('/') && !url.path.contains(char::is_whitespace);
    if !valid {
        return None;
    }
    report.note(format!(
        "{}: healthcheck becomes the probes' path {}",
        facts.name, url.path
    ));
    Some((HealthSpec { path: url.path }, url.port))
}

/// The port a service listens on: its container ports, `expose`, its
/// command's flags, its healthcheck URL, `PORT`, else `default`.
fn port(
    facts: &Facts,
    health: Option<&(HealthSpec, Option<u16>)>,
    default: u16,
    report: &mut Report,
    service_name: &str,
) -> u16 {
    let mut found = None;
    for mapping in facts.service.ports.iter().map(|port| port.mapping()) {
        if mapping.target > 0 && mapping.protocol == "tcp" && found.is_none() {
            found = Some(mapping.target);
        }
        if mapping.published.is_some() || mapping.host_ip.is_some() {
            report.skip(
                facts.name,
                format!("ports {:?}", mapping.written),
                format!(
                    "host ports are not published; in the cluster Service {service_name} serves port {} (an Ingress reaches it from outside)",
                    mapping.target
                ),
            );
        }
    }
    let from_expose = || {
        facts
            .service
            .expose
            .iter()
            .find_map(|port| port.to_string().split(['/', '-']).next()?.parse().ok())
    };
    let from_command = || command_port(&facts.words());
    let from_health = || health.and_then(|(_, port)| *port);
    let from_env = || facts.env.get("PORT").and_then(|port| port.parse().ok());
    match found
        .or_else(from_expose)
        .or_else(from_command)
        .or_else(from_health)
        .or_else(from_env)
    {
        Some(port) => port,
        None => {
            report.note(format!("{}: no port found; using {default}", facts.name));
            default
        }
    }
}

/// `--port 8000`, `--port=8000`, `-p 8000`, `--bind 0.0.0.0:8000`,
/// `-b :8000` or a bare `0.0.0.0:8000` in a command.
fn command_port(words: &[String]) -> Option<u16> {
    let host_port = |text: &str| {
        text.rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
    };
    let mut iterator = words.iter().peekable();
    while let Some(word) = iterator.next() {
        let next = iterator.peek().map(|next| next.as_str());
        let found = match word.as_str() {
            "--port" | "-p" => next.and_then(|port| port.parse().ok()),
            "--bind" | "-b" => next.and_then(host_port),
            other => other
                .strip_prefix("--port=")
                .and_then(|port| port.parse().ok())
                .or_else(|| other.strip_prefix("--bind=").and_then(host_port))
                .or_else(|| {
                    other
                        .strip_prefix("0.0.0.0:")
                        .or_else(|| other.strip_prefix("[::]:"))
                        .and_then(|port| port.parse().ok())
                }),
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

/// `deploy.replicas`, when within the AppStack's 0 to 100.
fn deploy_replicas(deploy: &Deploy, name: &str, report: &mut Report) -> Option<i32> {
    let count = deploy.replicas?;
    match i32::try_from(count) {
        Ok(count) if (0..=100).contains(&count) => Some(count),
        _ => {
            report.warn(format!(
                "{name}: deploy.replicas {count} is outside 0..100; the AppStack's default applies"
            ));
            None
        }
    }
}

/// `deploy.resources`: reservations to requests, limits to limits.
fn deploy_resources(deploy: &Deploy) -> Option<Resources> {
    let resources = deploy.resources.as_ref()?;
    let amounts = |amounts: &Option<ResourceAmounts>| {
        let mut map = BTreeMap::new();
        if let Some(amounts) = amounts {
            if let Some(cpus) = &amounts.cpus {
                map.insert("cpu".to_string(), Quantity(cpus.to_string()));
            }
            if let Some(memory) = amounts
                .memory
                .as_ref()
                .and_then(|memory| memory_quantity(&memory.to_string()))
            {
                map.insert("memory".to_string(), Quantity(memory));
            }
        }
        map
    };
    let converted = Resources {
        requests: amounts(&resources.reservations),
        limits: amounts(&resources.limits),
    };
    (!converted.requests.is_empty() || !converted.limits.is_empty()).then_some(converted)
}

/// A Compose byte value (`512m`, `1gb`, `2048`; powers of 1024) as a
/// Kubernetes quantity.
pub fn memory_quantity(text: &str) -> Option<String> {
    let text = text.trim().to_ascii_lowercase();
    let digits_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    if number.is_empty() {
        return None;
    }
    let suffix = match unit.trim_end_matches('b') {
        "" => "",
        "k" => "Ki",
        "m" => "Mi",
        "g" => "Gi",
        "t" => "Ti",
        _ => return None,
    };
    Some(format!("{number}{suffix}"))
}

/// `DB_POOL_SIZE` and `DB_POOL_TIMEOUT` become `database.pool`.
fn take_pool(variables: &mut IndexMap<String, String>, report: &mut Report) -> Option<PoolSpec> {
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
            report.note(format!(
                "stack name {name}, from the directory of the file; change it with --name"
            ));
            name
        }
    };
    let secret_name = secret_name(&name);
    let settings = EnvSettings {
        stack_name: &name,
        secret_name: &secret_name,
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
            report.note(format!(
                "{reserved} dropped: the operator sets it from spec.database.pool"
            ));
        }
    }
    let TypedEnv {
        entries,
        mut secret_values,
        generated_values: _,
    } = typed_env(
        &variables,
        &known,
        &settings,
        &request.file.display().to_string(),
        &mut report,
    );
    if let Some(url) = database_url {
        secret_values.insert(DATABASE_URL.to_string(), url);
        report.note(format!(
            "{DATABASE_URL} dropped from env: the operator sets it; for an external database it is kept in Secret {secret_name} (use spec.database.external.urlSecretRef {{name: {secret_name}, key: {DATABASE_URL}}})"
        ));
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
mod tests;
