//! Which compose service plays which part of an AppStack: the PostgreSQL
//! database, the migrations, the backend, the frontend; every other
//! service is left out with its reason. Services behind a profile that is
//! not active are left out as Compose leaves them out.

use super::ImportError;
use super::build::ComposeRequest;
use super::facts::{self, Facts, value_points_at};
use super::frontend::{api_url_variable, calls};
use super::report::Report;

/// A service's score as the backend; the highest wins.
pub(super) fn backend_score(facts: &Facts, database: Option<&Facts>, others: &[Facts]) -> i32 {
    let name = facts.name.to_ascii_lowercase();
    let mut score = 0;
    if facts.env.contains_key("DATABASE_URL")
        || database.is_some_and(|database| facts.env_points_at(database).is_some())
    {
        score += 4;
    }
    if database.is_some_and(|database| facts.service.depends_on.contains_key(database.name)) {
        score += 2;
    }
    if ["api", "backend", "server", "app", "service"].contains(&name.as_str())
        || name.contains("api")
        || name.contains("backend")
    {
        score += 3;
    }
    if others
        .iter()
        .any(|other| other.name != facts.name && calls(other, facts))
    {
        score += 3;
    }
    if !facts.service.ports.is_empty() || !facts.service.expose.is_empty() {
        score += 1;
    }
    if frontend_name(&name) {
        score -= 3;
    }
    score
}

fn frontend_name(name: &str) -> bool {
    [
        "frontend",
        "web",
        "ui",
        "client",
        "webapp",
        "www",
        "site",
        "spa",
        "dashboard",
    ]
    .contains(&name)
        || name.contains("front")
        || name.ends_with("-ui")
        || name.ends_with("-web")
}

/// Scores at or above this make a service the frontend.
pub(super) const FRONTEND_THRESHOLD: i32 = 3;

/// A service's score as the frontend, given the backend and database.
pub(super) fn frontend_score(facts: &Facts, backend: &Facts, database: Option<&Facts>) -> i32 {
    let name = facts.name.to_ascii_lowercase();
    let mut score = 0;
    // A frontend does not talk to the database. Only `environment:` says
    // so: an env_file shared with the backend brings its variables along.
    let reaches_database = facts.sets_explicitly("DATABASE_URL")
        || database.is_some_and(|database| {
            facts
                .service
                .environment
                .values()
                .flatten()
                .any(|value| value_points_at(value, database))
        });
    if reaches_database {
        score -= 5;
    }
    if frontend_name(&name) {
        score += 3;
    }
    if calls(facts, backend) {
        score += 4;
    } else if api_url_variable(facts, backend).is_some() {
        score += 2;
    }
    if facts.service.depends_on.contains_key(backend.name) {
        score += 1;
    }
    let context = facts
        .service
        .build
        .as_ref()
        .and_then(|build| build.context.as_deref())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if ["front", "web", "ui", "client"]
        .iter()
        .any(|part| context.contains(part))
    {
        score += 2;
    }
    if facts.image_repository().is_some_and(|repository| {
        ["nginx", "node", "httpd", "nginx-unprivileged"].contains(&repository.as_str())
    }) {
        score += 1;
    }
    score
}

/// How the migrations are run.
pub(super) enum MigrationSource {
    /// A service of their own.
    Service(usize),
    /// The first commands of the backend's `sh -c` chain.
    BackendChain {
        tool: &'static str,
        revision_query: Option<&'static str>,
        migrate: Vec<Vec<String>>,
        rest: Vec<Vec<String>>,
    },
}

/// Which service (by index in compose order) plays which part.
pub(super) struct Roles {
    pub(super) database: Option<usize>,
    pub(super) migrations: Option<MigrationSource>,
    pub(super) backend: usize,
    pub(super) frontend: Option<usize>,
    /// Services behind a profile that is not active.
    pub(super) disabled: Vec<usize>,
}

pub(super) fn service_index(
    all: &[Facts],
    flag: &'static str,
    name: &str,
) -> Result<usize, ImportError> {
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
pub(super) struct Unassigned<'a> {
    pub(super) all: &'a [Facts<'a>],
    pub(super) taken: Vec<bool>,
    /// Services named by `--backend` and `--frontend`, kept for those parts.
    pub(super) reserved: [Option<usize>; 2],
}

impl Unassigned<'_> {
    /// Free services, in compose order, that no flag reserved.
    pub(super) fn free(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.all.len())
            .filter(|&index| !self.taken[index] && !self.reserved.contains(&Some(index)))
    }

    pub(super) fn take(&mut self, index: usize) -> usize {
        self.taken[index] = true;
        index
    }

    /// The free service (compose order breaks ties) scoring highest, if it
    /// scores at least `threshold`.
    pub(super) fn best(
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

/// Hands out the parts. `profiles` are the active ones.
pub(super) fn assign_roles(
    request: &ComposeRequest,
    all: &[Facts],
    profiles: &[String],
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
    let disabled = leave_out_profiles(&mut unassigned, profiles, report);
    let database = choose_database(&mut unassigned, report);
    if database.is_none()
        && let Some(&index) = disabled
            .iter()
            .find(|&&index| facts::is_postgres(&all[index]))
    {
        report.warn(format!(
            "the PostgreSQL service {} only runs with profile {}: without it the stack gets a managed database with the default image and settings; pass --profile to take its own",
            all[index].name,
            all[index].service.profiles.join(" or ")
        ));
    }
    let migration_service = choose_migration_service(&mut unassigned, report);
    // Infrastructure and workers are never the application.
    let candidates: Vec<usize> = unassigned
        .free()
        .chain(chosen_backend)
        .chain(chosen_frontend)
        .filter(|&index| {
            facts::infrastructure(&all[index]).is_none() && facts::worker(&all[index]).is_none()
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
                    backend_score(facts, database_facts, all)
                })
                .ok_or_else(|| no_backend(&unassigned, &disabled, database, profiles))?;
            report.detail(
                all[backend].name,
                "chosen as the backend (--backend SERVICE chooses another)",
            );
            backend
        }
    };
    unassigned.take(backend);
    for (dependency, _) in &all[backend].service.depends_on {
        if let Some(&index) = disabled
            .iter()
            .find(|&&index| all[index].name == dependency)
        {
            report.warn(format!(
                "{} depends on {dependency}, which only runs with profile {}: Compose would not start it without --profile",
                all[backend].name,
                all[index].service.profiles.join(" or ")
            ));
        }
    }
    let migrations = match migration_service {
        Some(index) => Some(MigrationSource::Service(index)),
        None => backend_chain_migrations(&all[backend]),
    };

    let frontend = chosen_frontend.or_else(|| {
        let frontend = unassigned.best(&candidates, FRONTEND_THRESHOLD, |facts| {
            frontend_score(facts, &all[backend], database_facts)
        })?;
        report.detail(
            all[frontend].name,
            "chosen as the frontend (--frontend SERVICE chooses another)",
        );
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
        disabled,
    })
}

/// Why no service could be the backend, naming what each service is.
fn no_backend(
    unassigned: &Unassigned,
    disabled: &[usize],
    database: Option<usize>,
    profiles: &[String],
) -> ImportError {
    let all = unassigned.all;
    let enabled_application = (0..all.len()).any(|index| {
        !disabled.contains(&index)
            && Some(index) != database
            && facts::infrastructure(&all[index]).is_none()
    });
    let active = if profiles.is_empty() {
        "no profile is active".to_string()
    } else {
        format!("active: {}", profiles.join(", "))
    };
    if !enabled_application && !disabled.is_empty() {
        let listed: Vec<String> = disabled
            .iter()
            .map(|&index| {
                format!(
                    "{} ({})",
                    all[index].name,
                    all[index].service.profiles.join(", ")
                )
            })
            .collect();
        return ImportError::NoBackend {
            reason: format!(
                "every service that could be the backend only runs with a profile ({active}): {}; pass --profile PROFILE (or set COMPOSE_PROFILES) as you would to docker compose",
                listed.join(", ")
            ),
        };
    }
    let parts: Vec<String> = (0..all.len())
        .map(|index| {
            let facts = &all[index];
            let what = if disabled.contains(&index) {
                format!(
                    "only runs with profile {} ({active})",
                    facts.service.profiles.join(" or ")
                )
            } else if Some(index) == database {
                "is the database".to_string()
            } else if let Some(reason) =
                facts::infrastructure(facts).or_else(|| facts::worker(facts))
            {
                format!("is {}", reason.split(':').next().unwrap_or(reason))
            } else {
                "runs the migrations".to_string()
            };
            format!("{} {what}", facts.name)
        })
        .collect();
    ImportError::NoBackend {
        reason: format!(
            "{}; name the backend with --backend SERVICE",
            parts.join(", ")
        ),
    }
}

/// Whether a service with `profiles` runs when `active` are enabled: a
/// service without profiles always runs; `*` enables every profile.
pub(super) fn enabled(profiles: &[String], active: &[String]) -> bool {
    profiles.is_empty()
        || active
            .iter()
            .any(|profile| profile == "*" || profiles.contains(profile))
}

/// Services whose profiles are not active are not part of the project,
/// unless `--backend` or `--frontend` names them (naming a service on
/// Compose's command line enables its profile too). Returns them.
pub(super) fn leave_out_profiles(
    unassigned: &mut Unassigned,
    active: &[String],
    report: &mut Report,
) -> Vec<usize> {
    let disabled: Vec<usize> = unassigned
        .free()
        .filter(|&index| !enabled(&unassigned.all[index].service.profiles, active))
        .collect();
    for &index in &disabled {
        let facts = &unassigned.all[unassigned.take(index)];
        report.skip(
            facts.name,
            "service",
            format!(
                "only with profile {}: not started unless that profile is active (--profile)",
                facts.service.profiles.join(" or ")
            ),
        );
    }
    disabled
}

/// The first PostgreSQL service; any other is left out.
pub(super) fn choose_database(unassigned: &mut Unassigned, report: &mut Report) -> Option<usize> {
    let servers: Vec<usize> = unassigned
        .free()
        .filter(|&index| facts::is_postgres(&unassigned.all[index]))
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
pub(super) fn choose_migration_service(
    unassigned: &mut Unassigned,
    report: &mut Report,
) -> Option<usize> {
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
            .find_map(|line| line.as_ref().and_then(facts::shell_chain))
            .and_then(|chain| chain.last().cloned());
        words.extend(last_command.unwrap_or_else(|| facts.words()));
        facts::migration_tool(&words).is_some() && facts.service.ports.is_empty()
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
pub(super) fn report_unassigned(unassigned: &Unassigned, report: &mut Report) {
    for index in unassigned.free() {
        let facts = &unassigned.all[index];
        let reason = facts::infrastructure(facts).or_else(|| facts::worker(facts)).unwrap_or(
            "no part for it: an AppStack has the database, the migrations, a backend and a frontend; run it separately",
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
pub(super) fn backend_chain_migrations(backend: &Facts) -> Option<MigrationSource> {
    let chain = facts::shell_chain(backend.service.command.as_ref()?)?;
    let (tool, revision_query) = chain.iter().find_map(|command| facts::migration(command))?;
    let (migrate, rest): (Vec<Vec<String>>, Vec<Vec<String>>) = chain
        .into_iter()
        .partition(|command| facts::migration_tool(command).is_some());
    (!rest.is_empty()).then_some(MigrationSource::BackendChain {
        tool,
        revision_query,
        migrate,
        rest,
    })
}
