//! The public projects of tests/fixtures/import-corpus, imported without a
//! cluster and held to tests/fixtures/import-corpus/expectations.yaml: the
//! parts a person would pick, every variable the backend reads kept, the
//! database's variables wired to the operator's, no secret value printed,
//! and a report a person reads in under 30 lines. The suite applies the
//! same imports to the local control plane.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tempfile::TempDir;

use super::super::report::whole_occurrences;
use super::super::{ComposeRequest, Imported, import_compose, yaml};
use crate::api::crd::{AppStack, EnvEntry};

/// One project's expectations (see the file for what each field means).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Expected {
    pub copy: BTreeMap<String, String>,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub parts: BTreeMap<String, String>,
    pub left_out: Vec<String>,
    pub reads: Vec<String>,
    pub database: BTreeMap<String, String>,
    pub plain: BTreeMap<String, String>,
    pub generated: Vec<String>,
    pub referenced: Vec<String>,
    pub expose: BTreeMap<String, String>,
    pub api_url_env: Option<String>,
    pub revision_query: bool,
    pub command: Option<Vec<String>>,
    pub health: Option<String>,
    pub secrets: Vec<String>,
    pub images: BTreeMap<String, String>,
}

fn corpus_directory() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/import-corpus")
}

fn expectations() -> BTreeMap<String, Expected> {
    let text = std::fs::read_to_string(corpus_directory().join("expectations.yaml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A project copied into a scratch directory; derefs to the project's
/// directory, and removes the scratch directory when dropped.
struct Checkout {
    _scratch: TempDir,
    directory: PathBuf,
}

impl Deref for Checkout {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.directory
    }
}

/// The project in a directory of its own, after the copies its docs ask
/// for (`cp .env.example .env`).
fn checkout(project: &str, expected: &Expected) -> Checkout {
    let scratch = super::super::compose::tests::tempdir();
    // Under its own name: a project that names no stack is named after its directory.
    let directory = scratch.path().join(project);
    copy_tree(&corpus_directory().join(project), &directory);
    for (from, to) in &expected.copy {
        std::fs::copy(directory.join(from), directory.join(to)).unwrap();
    }
    Checkout {
        _scratch: scratch,
        directory,
    }
}

/// The request `appstack import compose ARGS` makes.
fn request(directory: &Path, expected: &Expected) -> ComposeRequest {
    let mut request = ComposeRequest {
        working_directory: directory.to_path_buf(),
        process_env: expected.env.clone().into_iter().collect(),
        ..ComposeRequest::default()
    };
    let mut args = expected.args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-f" => request.files.push(args.next().unwrap().into()),
            "--profile" => request.profiles.push(args.next().unwrap().clone()),
            "--generate-secrets" => request.generate_secrets = true,
            other => panic!("no such argument in the corpus tests: {other}"),
        }
    }
    request
}

fn entry<'a>(stack: &'a AppStack, name: &str) -> Option<&'a EnvEntry> {
    stack.spec.env.iter().find(|entry| entry.name == name)
}

/// Every expectation of one project, each failure naming the project.
fn check(project: &str, expected: &Expected, imported: &Imported) {
    let stack = &imported.stack;
    let report = &imported.report;
    let brief = report.render(false);
    let context = format!("{project}:\n{brief}");
    let parts: BTreeMap<String, String> = report
        .parts()
        .into_iter()
        .map(|(service, part)| (service.to_string(), part.to_string()))
        .collect();
    assert_eq!(parts, expected.parts, "{context}");
    for service in &expected.left_out {
        assert!(
            report
                .skipped()
                .iter()
                .any(|skipped| &skipped.service == service && skipped.what.starts_with("service")),
            "{project}: {service} is not reported as left out\n{brief}"
        );
        assert!(brief.contains(service.as_str()), "{context}");
    }
    for name in &expected.reads {
        assert!(
            name == "DATABASE_URL" || entry(stack, name).is_some(),
            "{project}: the backend reads {name}, which the AppStack lost\n{brief}"
        );
    }
    let database_secret = format!("{}-db", stack.metadata.name.as_deref().unwrap());
    for (name, key) in &expected.database {
        let reference = entry(stack, name)
            .and_then(|entry| entry.value_from.as_ref())
            .map(|from| &from.secret_key_ref);
        assert_eq!(
            reference.map(|reference| (reference.name.as_str(), reference.key.as_str())),
            Some((database_secret.as_str(), key.as_str())),
            "{project}: {name}"
        );
    }
    for (name, value) in &expected.plain {
        assert_eq!(
            entry(stack, name).and_then(|entry| entry.value.as_deref()),
            Some(value.as_str()),
            "{project}: {name}"
        );
    }
    for name in &expected.generated {
        assert!(
            entry(stack, name).is_some_and(|entry| entry.generate.is_some()),
            "{project}: {name} is not generated"
        );
    }
    for name in &expected.referenced {
        let reference = entry(stack, name)
            .and_then(|entry| entry.value_from.as_ref())
            .map(|from| from.secret_key_ref.name.clone());
        assert_eq!(
            reference,
            Some(imported.secret_name.clone()),
            "{project}: {name}"
        );
        assert!(
            imported.secret_values.contains_key(name),
            "{project}: {name}"
        );
    }
    if !expected.expose.is_empty() {
        let expose = stack.spec.expose.as_ref().expect("an expose spec");
        assert_eq!(
            (Some(expose.host.as_str()), Some(expose.api_path.as_str())),
            (
                expected.expose.get("host").map(String::as_str),
                expected.expose.get("apiPath").map(String::as_str)
            ),
            "{project}"
        );
    } else {
        assert!(stack.spec.expose.is_none(), "{project}");
    }
    if let Some(api_url_env) = &expected.api_url_env {
        assert_eq!(
            &stack.spec.frontend.as_ref().unwrap().api_url_env,
            api_url_env,
            "{project}"
        );
    }
    if expected.revision_query {
        assert!(
            stack
                .spec
                .migrations
                .as_ref()
                .unwrap()
                .revision_query
                .is_some(),
            "{project}"
        );
    }
    if let Some(command) = &expected.command {
        assert_eq!(stack.spec.backend.args.as_ref(), Some(command), "{project}");
    }
    if let Some(path) = &expected.health {
        assert_eq!(
            stack
                .spec
                .backend
                .health
                .as_ref()
                .map(|health| health.path.as_str()),
            Some(path.as_str()),
            "{project}"
        );
    }
    let printed = yaml::to_string(stack);
    for secret in &expected.secrets {
        assert!(
            whole_occurrences(&printed, secret).is_empty(),
            "{project}: {secret} in the AppStack\n{printed}"
        );
        assert!(
            whole_occurrences(&report.render(true), secret).is_empty(),
            "{project}: {secret} in the report"
        );
    }
    let lines = brief.lines().count();
    assert!(lines < 30, "{project}: {lines} lines of report\n{brief}");
}

#[test]
fn every_corpus_project_imports_as_a_person_would() {
    let all = expectations();
    let projects: Vec<String> = std::fs::read_dir(corpus_directory())
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_type().unwrap().is_dir())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(projects.len() >= 10, "{projects:?}");
    for project in &projects {
        let expected = all
            .get(project)
            .unwrap_or_else(|| panic!("{project} has no expectations"));
        let checkout = checkout(project, expected);
        let imported = import_compose(&request(&checkout, expected))
            .unwrap_or_else(|error| panic!("{project}: {error}"));
        check(project, expected, &imported);
    }
}

#[test]
fn a_project_whose_services_all_need_a_profile_says_so() {
    let expected = &expectations()["hoppscotch"];
    let checkout = checkout("hoppscotch", expected);
    let mut request = request(&checkout, expected);
    request.profiles.clear();
    let error = import_compose(&request).unwrap_err().to_string();
    assert!(
        error.starts_with(
            "no service can be the backend: every service that could be the backend only runs with a profile (no profile is active)"
        ) && error.contains("hoppscotch-backend (backend, just-backend, app, admin)")
            && error.contains("pass --profile PROFILE"),
        "{error}"
    );
    // COMPOSE_PROFILES in .env works as --profile does.
    let mut dotenv = std::fs::read_to_string(checkout.join(".env")).unwrap();
    dotenv.push_str("\nCOMPOSE_PROFILES=app\n");
    std::fs::write(checkout.join(".env"), dotenv).unwrap();
    let imported = import_compose(&request).unwrap();
    assert_eq!(
        imported
            .stack
            .spec
            .frontend
            .as_ref()
            .map(|frontend| frontend.api_url_env.as_str()),
        Some("VITE_BACKEND_API_URL")
    );
    assert!(
        imported
            .report
            .lines("stack")
            .contains(&"profiles app (from COMPOSE_PROFILES)"),
        "{}",
        imported.report
    );
}

#[test]
fn a_required_variable_left_unset_stops_the_import_naming_it() {
    let expected = &expectations()["fastapi-template-0.12"];
    let checkout = checkout("fastapi-template-0.12", expected);
    let mut request = request(&checkout, expected);
    request.process_env.clear();
    let error = import_compose(&request).unwrap_err().to_string();
    assert!(
        error.contains("required variable DOMAIN is missing a value: Variable not set"),
        "{error}"
    );
}

#[test]
fn the_database_behind_an_inactive_profile_is_said_loudly() {
    let directory = super::super::compose::tests::tempdir();
    std::fs::write(
        directory.path().join("compose.yaml"),
        "services:\n  api:\n    image: api:1\n    environment: {DATABASE_URL: \"postgres://u:p@db/app\"}\n\
         \x20 db:\n    image: postgres:16\n    profiles: [database]\n",
    )
    .unwrap();
    let imported = import_compose(&ComposeRequest {
        working_directory: directory.path().to_path_buf(),
        ..ComposeRequest::default()
    })
    .unwrap();
    assert!(
        imported.report.warnings().iter().any(|warning| warning
            .starts_with("the PostgreSQL service db only runs with profile database")),
        "{}",
        imported.report
    );
}
