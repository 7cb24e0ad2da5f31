//! Which compose service plays which part of an AppStack: the PostgreSQL
//! database, the migrations, the backend, the frontend; every other
//! service is left out with its reason.

use super::ImportError;
use super::build::ComposeRequest;
use super::facts::{self as roles, Facts};
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
        .any(|other| other.name != facts.name && other.env_points_at(facts).is_some())
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
    // A frontend does not talk to the database.
    if facts.env.contains_key("DATABASE_URL")
        || database.is_some_and(|database| facts.env_points_at(database).is_some())
    {
        score -= 5;
    }
    if frontend_name(&name) {
        score += 3;
    }
    if facts.env_points_at(backend).is_some() {
        score += 4;
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

impl<'a> Unassigned<'a> {
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

pub(super) fn assign_roles(
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
                    backend_score(facts, database_facts, all)
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
            frontend_score(facts, &all[backend], database_facts)
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
pub(super) fn leave_out_profiles(unassigned: &mut Unassigned, report: &mut Report) {
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
pub(super) fn choose_database(unassigned: &mut Unassigned, report: &mut Report) -> Option<usize> {
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
pub(super) fn report_unassigned(unassigned: &Unassigned, report: &mut Report) {
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
pub(super) fn backend_chain_migrations(backend: &Facts) -> Option<MigrationSource> {
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
