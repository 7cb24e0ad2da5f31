//! What a backend, frontend or migration container runs: its image,
//! command and arguments, port, HTTP health check, replicas and resources.

use std::collections::BTreeMap;

use super::build::Builder;
use super::compose::{CommandLine, Deploy, ResourceAmounts};
use super::facts::Facts;
use super::report::Report;
use super::sensitive::url_parts;
use crate::api::crd::{HealthSpec, Quantity, Resources};

/// Port the backend gets when nothing in the project names one.
pub(super) const DEFAULT_BACKEND_PORT: u16 = 8000;
/// Port the frontend gets when nothing in the project names one.
pub(super) const DEFAULT_FRONTEND_PORT: u16 = 3000;

/// The parts of a backend or frontend spec read from its service.
pub(super) struct Workload {
    pub(super) image: String,
    pub(super) command: Option<Vec<String>>,
    pub(super) args: Option<Vec<String>>,
    pub(super) port: i32,
    pub(super) health: Option<HealthSpec>,
    pub(super) replicas: Option<i32>,
    pub(super) resources: Option<Resources>,
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

/// The HTTP path and port a healthcheck requests, if it is an HTTP check.
pub(super) fn health(facts: &Facts, report: &mut Report) -> Option<(HealthSpec, Option<u16>)> {
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
pub(super) fn port(
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

/// `deploy.replicas`, when within the AppStack's 0 to 100.
pub(super) fn deploy_replicas(deploy: &Deploy, name: &str, report: &mut Report) -> Option<i32> {
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
pub(super) fn deploy_resources(deploy: &Deploy) -> Option<Resources> {
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
