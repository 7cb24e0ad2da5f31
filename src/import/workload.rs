//! What a backend, frontend or migration container runs: its image (or a
//! placeholder for one still to be built and pushed), command and
//! arguments, port, HTTP health check, user, replicas and resources.

use std::collections::BTreeMap;

use super::build::Builder;
use super::compose::{CommandLine, Deploy, ResourceAmounts};
use super::facts::{Facts, names_a_repository};
use super::frontend::load_balancer_port;
use super::report::Report;
use super::sensitive::url_parts;
use crate::api::crd::{HealthSpec, Quantity, Resources};

/// Port the backend gets when nothing in the project names one.
pub(super) const DEFAULT_BACKEND_PORT: u16 = 8000;
/// Port the frontend gets when nothing in the project names one.
pub(super) const DEFAULT_FRONTEND_PORT: u16 = 3000;
/// The start of the image `appstack import` writes for a service that is
/// only built; the API server and `appstack render` refuse it.
pub const PLACEHOLDER_IMAGE_PREFIX: &str = "<built from ";

/// The parts of a backend or frontend spec read from its service.
pub(super) struct Workload {
    pub(super) image: String,
    pub(super) command: Option<Vec<String>>,
    pub(super) args: Option<Vec<String>>,
    pub(super) port: i32,
    pub(super) health: Option<HealthSpec>,
    pub(super) replicas: Option<i32>,
    pub(super) resources: Option<Resources>,
    pub(super) run_as_user: Option<i64>,
}

impl Builder<'_> {
    /// What backend and frontend are made of alike; reports the service's
    /// dependencies and the attributes that are not carried over.
    pub(super) fn workload(
        &self,
        facts: &Facts,
        component: &str,
        default_port: u16,
        report: &mut Report,
    ) -> Workload {
        let (image, shown_image) = self.image(facts, report);
        let (command, args) = command_and_args(facts);
        let health = health(facts, report);
        let service_name = format!("{}-{component}", self.stack_name);
        let port = port(facts, health.as_ref(), default_port, report, &service_name);
        let mut summary = format!("{shown_image}, port {port}");
        if let Some((health, _)) = &health {
            summary.push_str(&format!(", probes GET {}", health.path));
        }
        if let Some(words) = args.as_ref().or(command.as_ref()) {
            summary.push_str(&format!(", runs {}", shown(words)));
        }
        report.decide(facts.name, summary);
        let (replicas, resources) = facts
            .service
            .deploy
            .as_ref()
            .map(|deploy| {
                (
                    deploy_replicas(deploy, facts.name, report),
                    deploy_resources(deploy, facts.name, report),
                )
            })
            .unwrap_or_default();
        let run_as_user = run_as_user(facts, report);
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
            run_as_user,
        }
    }

    /// The image of a service, and how to say it: `--image`, its `image`
    /// (a pushed one), or a placeholder the API server rejects for one
    /// that is only built here: `build:` alone, or beside a local name
    /// such as `backend:latest`, which `docker compose build` tags on this
    /// machine and no cluster can pull.
    pub(super) fn image(&self, facts: &Facts, report: &mut Report) -> (String, String) {
        if let Some((_, image)) = self
            .request
            .images
            .iter()
            .find(|(service, _)| service == facts.name)
        {
            return (image.clone(), format!("image {image} (--image)"));
        }
        let build = facts.service.build.as_ref();
        match (&facts.service.image, build) {
            (Some(image), None) => {
                let bare = image.split('@').next().unwrap_or(image);
                if !bare.contains('/') && !bare.contains(':') {
                    report.todo(format!(
                        "{image} (the image of {}) names no registry and no tag: if it was built on this machine (jib, docker build), push it and pass --image {}=REGISTRY/IMAGE:TAG",
                        facts.name, facts.name
                    ));
                }
                return (image.clone(), format!("image {image}"));
            }
            (Some(image), Some(_)) if names_a_repository(image) => {
                report.todo(format!(
                    "push {image}: compose builds {} and tags it so; the cluster pulls it",
                    facts.name
                ));
                return (image.clone(), format!("image {image}"));
            }
            _ => {}
        }
        let context = build
            .and_then(|build| build.context.clone())
            .unwrap_or_else(|| ".".into());
        let local = facts
            .service
            .image
            .as_ref()
            .map(|image| format!("; {image} is a local tag"))
            .unwrap_or_default();
        report.todo(format!(
            "build {} from {context}, push it to a registry, and rerun with --image {}=REGISTRY/IMAGE:TAG (the placeholder is refused by the API server and appstack render)",
            facts.name, facts.name
        ));
        (
            format!(
                "{PLACEHOLDER_IMAGE_PREFIX}{context}: pass --image {}=IMAGE>",
                facts.name
            ),
            format!("image a placeholder (built from {context}{local})"),
        )
    }
}

/// Words as a person would type them, shortened past 60 characters.
fn shown(words: &[String]) -> String {
    let text =
        shlex::try_join(words.iter().map(String::as_str)).unwrap_or_else(|_| words.join(" "));
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(59).collect::<String>())
    } else {
        text
    }
}

/// Compose `entrypoint` is the container's command and `command` its
/// arguments, as in Kubernetes; empty ones are left to the image.
pub(super) fn command_and_args(facts: &Facts) -> (Option<Vec<String>>, Option<Vec<String>>) {
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
pub(super) fn shell_or_words(commands: &[Vec<String>]) -> Vec<String> {
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

/// The URL an HTTP healthcheck requests: a `http(s)://` URL anywhere in
/// the test, the first address `curl` or `wget` is given (`curl -f
/// localhost:3000/health` has no scheme and is HTTP all the same), or the
/// request line of a raw `GET /path HTTP/1.x` written to a socket.
fn health_url(words: &[String]) -> Option<(String, Option<u16>)> {
    let text = words.join(" ");
    let scheme_url = text.match_indices("http").find_map(|(start, _)| {
        let candidate = &text[start..];
        let end = candidate
            .find(|c: char| c.is_whitespace() || matches!(c, '\'' | '"' | ')' | '`'))
            .unwrap_or(candidate.len());
        url_parts(&candidate[..end])
            .filter(|parts| parts.scheme == "http" || parts.scheme == "https")
    });
    if let Some(url) = scheme_url {
        return Some((url.path, url.port));
    }
    let tokens: Vec<String> = words
        .iter()
        .flat_map(|word| shlex::split(word).unwrap_or_else(|| vec![word.clone()]))
        .collect();
    let client = tokens
        .iter()
        .position(|token| matches!(token.rsplit('/').next(), Some("curl" | "wget")));
    if let Some(client) = client {
        // Options whose value is the next word: that word is no address.
        let takes_value = [
            "-o",
            "-O",
            "-H",
            "-u",
            "-X",
            "-d",
            "-w",
            "-m",
            "-A",
            "-e",
            "-T",
            "--output",
            "--output-document",
            "--header",
            "--user",
            "--request",
            "--data",
            "--max-time",
            "--write-out",
            "--user-agent",
            "--timeout",
        ];
        let mut rest = tokens[client + 1..].iter();
        while let Some(token) = rest.next() {
            if takes_value.contains(&token.as_str()) {
                rest.next();
            } else if !token.starts_with(['-', '/']) && token.contains('/') {
                let url = url_parts(&format!("http://{token}"))?;
                return Some((url.path, url.port));
            }
        }
        return None;
    }
    let get = text.find("GET ")?;
    let path = text[get + 4..].split_whitespace().next()?;
    path.starts_with('/').then(|| (path.to_string(), None))
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
    let Some((path, port)) = health_url(&words) else {
        report.skip(
            facts.name,
            format!("healthcheck {:?}", test.display()),
            "not an HTTP check: the AppStack's probes are HTTP GETs of health.path",
        );
        return None;
    };
    let valid = path.starts_with('/') && !path.contains(char::is_whitespace);
    if !valid {
        return None;
    }
    report.detail(
        facts.name,
        format!("healthcheck becomes the probes' path {path}"),
    );
    Some((HealthSpec { path }, port))
}

/// The port a service listens on: its traefik load balancer port, its
/// container ports, `expose`, its command's flags, its healthcheck URL,
/// `PORT`, else `default`.
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
                    "host ports are not published: in the cluster Service {service_name} serves port {} (spec.expose reaches it from outside)",
                    mapping.target
                ),
            );
        }
    }
    let from_labels = || load_balancer_port(facts);
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
    match from_labels()
        .or(found)
        .or_else(from_expose)
        .or_else(from_command)
        .or_else(from_health)
        .or_else(from_env)
    {
        Some(port) => port,
        None => {
            report.detail(facts.name, format!("no port found; using {default}"));
            default
        }
    }
}

/// `--port 8000`, `--port=8000`, `-p 8000`, `--bind 0.0.0.0:8000`,
/// `-b :8000` or a bare `0.0.0.0:8000` in a command.
pub(super) fn command_port(words: &[String]) -> Option<u16> {
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

/// A numeric compose `user` (`1000`, `"1000:1000"`) becomes runAsUser.
/// The operator's pods run as non-root (Pod Security restricted), so
/// without one an image that runs as root, or as a user name, is
/// refused by the kubelet.
fn run_as_user(facts: &Facts, report: &mut Report) -> Option<i64> {
    let user = facts.service.user.as_ref()?.to_string();
    let uid = user.split(':').next().unwrap_or_default();
    match uid.parse::<i64>() {
        Ok(uid) if uid >= 1 => {
            report.decide(facts.name, format!("runs as user {uid} (runAsUser)"));
            Some(uid)
        }
        _ => {
            report.todo(format!(
                "{} runs as user {user:?} under Compose; the operator's pods must run as a non-root UID: set runAsUser",
                facts.name
            ));
            None
        }
    }
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

/// Whether a compose amount is zero, which Compose reads as no limit.
fn zero(text: &str) -> bool {
    text.trim()
        .trim_end_matches(|c: char| c.is_ascii_alphabetic())
        .parse::<f64>()
        == Ok(0.0)
}

/// `deploy.resources`: reservations to requests, limits to limits. A
/// zero means "no limit" to Compose and is left out, not written as a
/// limit of nothing.
pub(super) fn deploy_resources(
    deploy: &Deploy,
    name: &str,
    report: &mut Report,
) -> Option<Resources> {
    let resources = deploy.resources.as_ref()?;
    let mut amounts = |amounts: &Option<ResourceAmounts>, field: &str| {
        let mut map = BTreeMap::new();
        let Some(amounts) = amounts else {
            return map;
        };
        if let Some(cpus) = &amounts.cpus {
            if zero(&cpus.to_string()) {
                report.detail(
                    name,
                    format!("deploy.resources.{field}.cpus 0 means no limit: left out"),
                );
            } else {
                map.insert("cpu".to_string(), Quantity(cpus.to_string()));
            }
        }
        if let Some(memory) = &amounts.memory {
            let text = memory.to_string();
            if zero(&text) {
                report.detail(
                    name,
                    format!("deploy.resources.{field}.memory 0 means no limit: left out"),
                );
            } else if let Some(memory) = memory_quantity(&text) {
                map.insert("memory".to_string(), Quantity(memory));
            }
        }
        map
    };
    let converted = Resources {
        requests: amounts(&resources.reservations, "reservations"),
        limits: amounts(&resources.limits, "limits"),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        vec![text.to_string()]
    }

    #[test]
    fn http_health_checks_are_read_with_or_without_a_scheme() {
        assert_eq!(
            health_url(&words("curl -f http://localhost:8000/api/health")),
            Some(("/api/health".into(), Some(8000)))
        );
        assert_eq!(
            health_url(&[
                "CMD".into(),
                "curl".into(),
                "-f".into(),
                "localhost:3000/health".into()
            ]),
            Some(("/health".into(), Some(3000)))
        );
        assert_eq!(
            health_url(&words("wget -q --spider --proxy=off localhost:3000/health")),
            Some(("/health".into(), Some(3000)))
        );
        assert_eq!(
            health_url(&words(
                "bash -c 'exec 3<>/dev/tcp/127.0.0.1/8080; printf \"GET /management/health HTTP/1.0\\r\\n\" >&3'"
            )),
            Some(("/management/health".into(), None))
        );
        assert_eq!(
            health_url(&words("curl -s -o /dev/null -H 'Host: x' app:8080/ready")),
            Some(("/ready".into(), Some(8080)))
        );
        assert_eq!(health_url(&words("pg_isready -U postgres")), None);
        assert_eq!(health_url(&words("redis-cli ping")), None);
    }

    #[test]
    fn zero_resources_mean_no_limit() {
        assert!(zero("0") && zero("0.0") && zero("0M") && zero(" 0 "));
        assert!(!zero("0.5") && !zero("512m"));
    }
}
