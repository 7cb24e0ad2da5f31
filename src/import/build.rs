//! The builder: assembles the AppStack from what the other modules decide
//! (which service plays which part, how the database is wired, which
//! values are secret, what the workloads run), and the entry point
//! `import_compose`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;

use super::ImportError;
use super::compose;
use super::database::{DATABASE_URL, plural, take_pool};
use super::env::{EnvSettings, TypedEnv, typed_env};
use super::facts::{self, Facts};
use super::project::{
    active_profiles, project_environment, report_top_level, service_environment, stack_name,
};
use super::report::Report;
use super::roles::{MigrationSource, Roles, assign_roles};
use super::sensitive::{distinctive, guard_command, known_secrets};
use super::workload::{
    DEFAULT_BACKEND_PORT, Workload, command_and_args, deploy_resources, shell_or_words,
};
use crate::api::crd::{AppStack, AppStackSpec, BackendSpec, MigrationsSpec, RESERVED_ENV_NAMES};

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
    /// Profiles to enable (`--profile`); `COMPOSE_PROFILES` when empty.
    pub profiles: Vec<String>,
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
pub(super) fn secret_name(stack: &str) -> String {
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
    let stack_name = stack_name(request, &project, &environment, &mut report);
    let names: Vec<String> = files
        .iter()
        .map(|file| {
            file.file_name().map_or_else(
                || file.display().to_string(),
                |name| name.to_string_lossy().into_owned(),
            )
        })
        .collect();
    report.detail("stack", format!("read {}", names.join(" + ")));
    let profiles = active_profiles(request, &environment, &mut report);
    report_top_level(&project, &mut report);
    let mut envs = IndexMap::new();
    for (name, service) in &project.services {
        let env =
            service_environment(name, service, &project.directory, &environment, &mut report)?;
        envs.insert(name.clone(), env);
    }
    let all = facts::facts(&project.services, &envs);
    let known_secrets = known_secrets(&environment, &envs);
    let roles = assign_roles(request, &all, &profiles, &mut report)?;
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

/// Everything the spec builders share.
pub(super) struct Builder<'a> {
    pub(super) request: &'a ComposeRequest,
    pub(super) stack_name: &'a str,
    pub(super) secret_name: String,
    pub(super) all: &'a [Facts<'a>],
    pub(super) roles: &'a Roles,
    pub(super) known_secrets: &'a [(String, String)],
}

impl Builder<'_> {
    pub(super) fn backend(&self) -> &Facts<'_> {
        &self.all[self.roles.backend]
    }

    pub(super) fn database(&self) -> Option<&Facts<'_>> {
        self.roles.database.map(|index| &self.all[index])
    }

    pub(super) fn migration_service(&self) -> Option<&Facts<'_>> {
        match &self.roles.migrations {
            Some(MigrationSource::Service(index)) => Some(&self.all[*index]),
            _ => None,
        }
    }

    pub(super) fn frontend(&self) -> Option<&Facts<'_>> {
        self.roles.frontend.map(|index| &self.all[index])
    }

    fn build(&self, mut report: Report) -> Imported {
        let database_secret = format!("{}-db", self.stack_name);
        let settings = EnvSettings {
            stack_name: self.stack_name,
            secret_name: &self.secret_name,
            database_secret: self.database().map(|_| database_secret.as_str()),
            generate_secrets: self.request.generate_secrets,
            secrets_out: self.request.secrets_out.as_deref(),
        };
        report.part(self.backend().name, "backend");
        let mut variables = self.application_variables(&mut report);
        let database = self.database_plan(&mut variables, &mut report);
        let pool = take_pool(&mut variables, &mut report);
        self.report_uncarried_hosts(&variables, &mut report);
        let TypedEnv {
            entries: env,
            mut secret_values,
            generated_values,
        } = typed_env(
            &variables,
            &database.wired,
            self.known_secrets,
            &settings,
            self.backend().name,
            &mut report,
        );
        if let Some(url) = &database.external_url {
            secret_values.insert(DATABASE_URL.to_string(), url.clone());
            report.decide(
                self.backend().name,
                format!(
                    "database: external, its URL from Secret {} key {DATABASE_URL}",
                    self.secret_name
                ),
            );
        }
        let mut backend = self.backend_spec(&mut report);
        let mut migrations = self.migrations_spec(&mut backend, &mut report);
        let mut frontend = self.frontend_spec(&mut report);
        let expose = self.exposure(&mut report);
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
        // Variables wired to the operator's database hold its values, in
        // place of the compose database's.
        held.extend(database.wired.keys().filter_map(|name| {
            variables
                .get(name)
                .map(|value| (name.clone(), value.clone()))
        }));
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
        self.report_secret_values(&secret_values, &mut report);
        self.report_run_as_user(&backend, frontend.as_ref(), &mut report);
        let mut database_spec = database.spec;
        database_spec.pool = pool;
        let spec = AppStackSpec {
            database: database_spec,
            migrations,
            backend,
            frontend,
            env,
            monitoring: None,
            expose,
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

    /// What must hold the secret values the AppStack references.
    fn report_secret_values(&self, secret_values: &BTreeMap<String, String>, report: &mut Report) {
        if secret_values.is_empty() {
            return;
        }
        let empty: Vec<&str> = secret_values
            .iter()
            .filter(|(_, value)| value.is_empty())
            .map(|(key, _)| key.as_str())
            .collect();
        if !empty.is_empty() {
            report.todo(format!(
                "fill in {} in Secret {}: empty in the compose project",
                empty.join(", "),
                self.secret_name,
            ));
        }
    }

    /// The operator's pods run as non-root (Pod Security restricted): an
    /// image whose user is root, or a name, needs runAsUser.
    fn report_run_as_user(
        &self,
        backend: &BackendSpec,
        frontend: Option<&crate::api::crd::FrontendSpec>,
        report: &mut Report,
    ) {
        let mut unset = Vec::new();
        if backend.run_as_user.is_none() {
            unset.push("backend");
        }
        if frontend.is_some_and(|frontend| frontend.run_as_user.is_none()) {
            unset.push("frontend");
        }
        if !unset.is_empty() {
            report.todo(format!(
                "pods run as non-root (Pod Security restricted): if the {} image runs as root or as a user name, set runAsUser (e.g. spec.{}.runAsUser: 1000)",
                unset.join(" or "),
                unset[0]
            ));
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
            let mut differ = Vec::new();
            for (key, value) in migration.env {
                match variables.get(key) {
                    None => {
                        variables.insert(key.clone(), value.clone());
                        added.push(key.clone());
                    }
                    Some(existing)
                        if existing != value && !RESERVED_ENV_NAMES.contains(&key.as_str()) =>
                    {
                        differ.push(key.clone())
                    }
                    Some(_) => {}
                }
            }
            if !added.is_empty() {
                report.detail(
                    migration.name,
                    format!(
                        "{} of its env go to the AppStack's env (the backend gets them too)",
                        added.join(", ")
                    ),
                );
            }
            if !differ.is_empty() {
                report.warn(format!(
                    "{} sets {} differently from {}: the migration Job gets the backend's values",
                    migration.name,
                    differ.join(", "),
                    backend.name
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
            report.detail(
                backend.name,
                format!(
                    "{} dropped: settings of Compose itself",
                    compose_settings.join(", ")
                ),
            );
        }
        variables
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
            run_as_user,
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
        spec.run_as_user = run_as_user;
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
        let Some(source) = self.roles.migrations.as_ref() else {
            self.report_no_migrations(report);
            return None;
        };
        match source {
            MigrationSource::Service(index) => {
                let facts = &self.all[*index];
                report.part(facts.name, "migrations");
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
                let shown_image = if same_image {
                    "the backend's image".to_string()
                } else {
                    let (image, shown) = self.image(facts, report);
                    spec.image = Some(image);
                    shown
                };
                let (command, args) = command_and_args(facts);
                spec.command = command;
                spec.args = args;
                let words = facts.words();
                let (tool, query) = facts::migration(&words).unzip();
                spec.revision_query = query.flatten().map(str::to_string);
                let runs = if words.is_empty() {
                    "the image's command".to_string()
                } else {
                    shlex::try_join(words.iter().map(String::as_str))
                        .unwrap_or_else(|_| words.join(" "))
                };
                report.decide(
                    facts.name,
                    format!(
                        "the migration Job{}: {runs}, {shown_image}, run to success before the backend moves",
                        tool.map(|tool| format!(" ({tool})")).unwrap_or_default()
                    ),
                );
                for other in self.all {
                    if let Some(dependency) = other.service.depends_on.get(facts.name)
                        && dependency.condition() == "service_completed_successfully"
                    {
                        report.detail(
                            other.name,
                            format!(
                                "depends_on {} (service_completed_successfully): the operator's order runs migrations to success before the backend moves",
                                facts.name
                            ),
                        );
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
                    && let Some(resources) = deploy_resources(deploy, facts.name, report)
                {
                    spec.resources = Some(resources);
                }
                self.report_other_attributes(facts, report);
            }
            MigrationSource::BackendChain {
                tool,
                revision_query,
                migrate,
                rest,
            } => {
                spec.command = backend.command.clone();
                spec.args = Some(shell_or_words(migrate));
                spec.revision_query = revision_query.map(str::to_string);
                backend.args = Some(shell_or_words(rest));
                report.decide(
                    self.backend().name,
                    format!(
                        "its command ran {tool} migrations before the server: they are the migration Job now, and the backend only starts the server"
                    ),
                );
            }
        }
        Some(spec)
    }

    /// Without a migration service or a migration tool in the backend's
    /// command, the AppStack runs no migration Job: say so, and what the
    /// backend's command may still do at every start.
    fn report_no_migrations(&self, report: &mut Report) {
        let backend = self.backend();
        let chain = backend
            .service
            .command
            .as_ref()
            .and_then(facts::shell_chain);
        let at_start = match chain {
            Some(chain) => format!(
                "; the backend's command runs {} before its server, at every start of every pod",
                plural(chain.len() - 1, "command")
            ),
            None => String::new(),
        };
        report.decide(
            "stack",
            format!(
                "no migration step found (no migration service, no known tool in {}'s command): no migration Job{at_start}",
                backend.name
            ),
        );
        report.detail(
            "stack",
            "if the image migrates when it starts, nothing is missing; otherwise set spec.migrations.command",
        );
    }

    /// What becomes of a carried service's `depends_on`; `starts` says
    /// what the service is in the operator's order ("the backend starts").
    pub(super) fn report_dependencies(&self, facts: &Facts, starts: &str, report: &mut Report) {
        for (dependency, condition) in &facts.service.depends_on {
            let condition = condition.condition();
            let index = self.all.iter().position(|other| other.name == dependency);
            let name = facts.name;
            if index.is_some() && index == self.roles.database {
                report.detail(
                    name,
                    format!(
                        "depends_on {dependency} ({condition}): the operator's order already waits for the database to be ready before {starts}"
                    ),
                );
            } else if index.is_some() && index == Some(self.roles.backend) {
                report.detail(
                    name,
                    format!(
                        "depends_on {dependency} ({condition}): the operator's order already brings up the backend before {starts}"
                    ),
                );
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
    pub(super) fn report_other_attributes(&self, facts: &Facts, report: &mut Report) {
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
        let other_labels: Vec<&str> = facts
            .service
            .labels
            .keys()
            .map(String::as_str)
            .filter(|key| !key.starts_with("traefik."))
            .collect();
        if !other_labels.is_empty() {
            report.skip(
                name,
                format!("labels {}", other_labels.join(", ")),
                "container labels: no AppStack field (podLabels sets pod labels)",
            );
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
                "working_dir" => "set it in the image (WORKDIR)",
                "logging" => "the cluster's log collection applies",
                "hostname" | "domainname" | "extra_hosts" | "dns" => {
                    "in the cluster, services are reached by their Service names"
                }
                "stdin_open" | "tty" => "interactive settings mean nothing to a Deployment",
                "develop" => "Compose Watch is a development feature",
                "init" => "Kubernetes reaps zombie processes only with an init in the image",
                "secrets" | "configs" => {
                    "files mounted into the container: no AppStack field; put the values in .env (secret ones become Secret references)"
                }
                _ => "no AppStack field for it",
            };
            report.skip(name, key.clone(), reason);
        }
    }
}
