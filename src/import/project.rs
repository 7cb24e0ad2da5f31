//! What the compose project gives each service: the project environment
//! (`.env` files and the process), the active profiles, each service's
//! environment as its container would get it, the top-level keys, and the
//! stack's name.

use std::path::{Path, PathBuf};

use super::build::ComposeRequest;
use super::compose::{Project, Service};
use super::dotenv::{self, EnvMap};
use super::report::Report;
use super::{ImportError, ProjectEnvironment};
use crate::api::crd::MAX_STACK_NAME_LENGTH;

/// Reads the `.env` files into the project environment.
pub(super) fn project_environment(
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

pub(super) fn report_top_level(project: &Project, report: &mut Report) {
    for key in &project.top_level {
        match key.as_str() {
            "version" => report.detail(
                "stack",
                "the top-level `version` is obsolete and ignored, as Compose ignores it",
            ),
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
pub(super) fn service_environment(
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
            None => report.detail(
                name,
                format!(
                    "{key} has no value in the environment or .env: left unset, as Compose does"
                ),
            ),
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

pub(super) fn stack_name(
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
        report.decide("stack", format!("{name}, from {source}"));
    } else {
        report.decide(
            "stack",
            format!("{name}, from {source} {wanted:?} (--name changes it)"),
        );
        report.detail(
            "stack",
            format!(
                "a stack name is lowercase letters, digits and '-', at most {MAX_STACK_NAME_LENGTH} characters"
            ),
        );
    }
    name
}

/// The profiles Compose would enable: the `--profile` flags, else
/// `COMPOSE_PROFILES` (comma-separated, from the process or `.env`).
pub(super) fn active_profiles(
    request: &ComposeRequest,
    environment: &ProjectEnvironment,
    report: &mut Report,
) -> Vec<String> {
    let (source, profiles) = if request.profiles.is_empty() {
        let listed = environment.get("COMPOSE_PROFILES").unwrap_or_default();
        (
            "COMPOSE_PROFILES",
            listed
                .split(',')
                .map(str::trim)
                .filter(|profile| !profile.is_empty())
                .map(str::to_string)
                .collect(),
        )
    } else {
        ("--profile", request.profiles.clone())
    };
    if !profiles.is_empty() {
        report.decide(
            "stack",
            format!("profiles {} (from {source})", profiles.join(", ")),
        );
    }
    profiles
}
