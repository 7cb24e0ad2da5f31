//! `appstack import compose|dotenv`: arguments, output and exit codes.
//! The AppStack (or env list) goes to standard output; messages, warnings
//! and what was not carried over to standard error. The exit code is
//! non-zero only when nothing could be made.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{
    ComposeRequest, DotenvRequest, Report, import_compose, import_dotenv, secret_manifest,
};

#[derive(Subcommand, Debug)]
pub enum ImportCommand {
    /// Print an AppStack made from a docker-compose project and its .env.
    /// Secret values go to a Secret (--secrets-out), never into the
    /// AppStack; what could not be carried over is listed on stderr.
    Compose(ComposeArgs),
    /// Print the typed `env` list of an AppStack made from a .env file.
    Dotenv(DotenvArgs),
}

#[derive(Args, Debug)]
pub struct ComposeArgs {
    /// Compose file; repeat to merge several, in order. Default: compose.yaml
    /// (or compose.yml, docker-compose.yaml, docker-compose.yml) in the
    /// current directory, with its override file.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    files: Vec<PathBuf>,
    /// File of variables for interpolation, repeatable. Default: .env
    /// beside the first compose file. The process environment wins.
    #[arg(long = "env-file", value_name = "FILE")]
    env_files: Vec<PathBuf>,
    /// AppStack name. Default: the compose project name (top-level `name`,
    /// COMPOSE_PROJECT_NAME or the project directory).
    #[arg(long)]
    name: Option<String>,
    /// Image of a service that only has `build:`, as SERVICE=IMAGE; repeatable.
    #[arg(long = "image", value_name = "SERVICE=IMAGE", value_parser = service_image)]
    images: Vec<(String, String)>,
    /// The service that becomes the backend (default: chosen from
    /// DATABASE_URL, ports, names and who calls whom).
    #[arg(long, value_name = "SERVICE")]
    backend: Option<String>,
    /// The service that becomes the frontend (default: chosen by name and
    /// by a variable holding the backend's URL).
    #[arg(long, value_name = "SERVICE")]
    frontend: Option<String>,
    /// Enable a profile, as `docker compose --profile`; repeatable.
    /// Default: COMPOSE_PROFILES (from the environment or .env).
    #[arg(long = "profile", value_name = "PROFILE")]
    profiles: Vec<String>,
    /// Print every note and every setting not carried over, with why.
    #[arg(short, long)]
    verbose: bool,
    /// Write a Secret manifest with the secret values to FILE (mode 0600);
    /// apply it before the AppStack.
    #[arg(long, value_name = "FILE")]
    secrets_out: Option<PathBuf>,
    /// Secrets whose value is a placeholder (change-me, changethis,
    /// your-secret-key..., xxxx) become values the operator generates;
    /// empty ones are listed to fill in.
    #[arg(long)]
    generate_secrets: bool,
}

#[derive(Args, Debug)]
pub struct DotenvArgs {
    /// The .env file.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The AppStack the env is for; secret references name Secret
    /// <NAME>-dotenv. Default: the file's directory name.
    #[arg(long)]
    name: Option<String>,
    /// Write a Secret manifest with the secret values to FILE (mode 0600).
    #[arg(long, value_name = "FILE")]
    secrets_out: Option<PathBuf>,
    /// Secrets whose value is a placeholder become values the operator
    /// generates.
    #[arg(long)]
    generate_secrets: bool,
    /// Print every note, with why.
    #[arg(short, long)]
    verbose: bool,
}

fn service_image(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((service, image)) if !service.is_empty() && !image.is_empty() => {
            Ok((service.to_string(), image.to_string()))
        }
        _ => Err(format!("{text:?} is not SERVICE=IMAGE")),
    }
}

/// Runs an import subcommand.
pub fn run(command: ImportCommand) -> ExitCode {
    let process_env: BTreeMap<String, String> = std::env::vars_os()
        .filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)))
        .collect();
    let working_directory = std::env::current_dir().unwrap_or_default();
    match command {
        ImportCommand::Compose(args) => {
            let request = ComposeRequest {
                files: args.files,
                env_files: args.env_files,
                working_directory,
                process_env,
                name: args.name,
                images: args.images,
                backend: args.backend,
                frontend: args.frontend,
                profiles: args.profiles,
                generate_secrets: args.generate_secrets,
                secrets_out: args.secrets_out.clone(),
            };
            match import_compose(&request) {
                Ok(imported) => finish(
                    "compose",
                    args.verbose,
                    &imported.report,
                    args.secrets_out.as_deref(),
                    &imported.secret_name,
                    &imported.secret_values,
                    &super::yaml::to_string(&imported.stack),
                ),
                Err(error) => fail("compose", &error.to_string()),
            }
        }
        ImportCommand::Dotenv(args) => {
            let request = DotenvRequest {
                file: args.file,
                name: args.name,
                process_env,
                generate_secrets: args.generate_secrets,
                secrets_out: args.secrets_out.clone(),
            };
            match import_dotenv(&request) {
                Ok(imported) => finish(
                    "dotenv",
                    args.verbose,
                    &imported.report,
                    args.secrets_out.as_deref(),
                    &imported.secret_name,
                    &imported.secret_values,
                    &super::yaml::to_string(&imported.env),
                ),
                Err(error) => fail("dotenv", &error.to_string()),
            }
        }
    }
}

fn fail(subcommand: &str, message: &str) -> ExitCode {
    eprintln!("appstack import {subcommand}: {message}");
    ExitCode::FAILURE
}

/// Writes the Secret (when asked), the report to stderr and `output` to
/// stdout.
fn finish(
    subcommand: &str,
    verbose: bool,
    report: &Report,
    secrets_out: Option<&Path>,
    secret_name: &str,
    secret_values: &BTreeMap<String, String>,
    output: &str,
) -> ExitCode {
    let mut report = report.clone();
    match secrets_out {
        Some(path) if !secret_values.is_empty() => {
            let manifest = super::yaml::to_string(&secret_manifest(secret_name, secret_values));
            if let Err(error) = write_private(path, &manifest) {
                return fail(subcommand, &format!("writing {}: {error}", path.display()));
            }
            report.decide(
                "stack",
                format!(
                    "Secret {secret_name} written to {} (keys {}): apply it before the AppStack",
                    path.display(),
                    secret_values.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            );
        }
        Some(path) => report.detail(
            "stack",
            format!("no secret values: {} not written", path.display()),
        ),
        None if !secret_values.is_empty() => report.todo(format!(
            "create Secret {secret_name} ({}) before the AppStack: rerun with --secrets-out FILE to have it written",
            secret_values.keys().cloned().collect::<Vec<_>>().join(", ")
        )),
        None => {}
    }
    eprint!("{}", report.render(verbose));
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(output.as_bytes())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Writes `contents` to `path`, readable by its owner only (0600), also
/// when the file already existed with wider permissions.
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_files_are_private_even_when_they_existed() {
        use std::os::unix::fs::PermissionsExt;
        let directory = std::env::temp_dir().join(format!("appstack-cli-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("secret.yaml");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, "new").unwrap();
        let metadata = std::fs::metadata(&path).unwrap();
        assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        std::fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn image_flags_are_service_equals_image() {
        assert_eq!(
            service_image("api=ghcr.io/acme/api:1.0").unwrap(),
            ("api".to_string(), "ghcr.io/acme/api:1.0".to_string())
        );
        assert!(service_image("api").is_err());
        assert!(service_image("=image").is_err());
    }
}
