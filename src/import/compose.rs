//! A Compose project as `docker compose config` would see it: each file
//! read as YAML (anchors, aliases and `<<` merge keys resolved; duplicate
//! keys rejected, as Compose rejects them), interpolated on its own, then
//! the files merged in order by the Compose Specification's merge rules
//! (`13-merge.md`, with `!reset` and `!override`), `extends` resolved, and
//! the result read into typed services.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Deserialize;
use serde_yaml::{Mapping, Value};

use super::error::ImportError;
use super::interpolate::{self, Variables};
use super::report::Report;

/// The files `docker compose` reads when given no `-f`, in order of
/// preference; the first one found is the project file.
pub const DEFAULT_FILES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

/// Override files `docker compose` adds to a default project file.
pub const OVERRIDE_FILES: [&str; 4] = [
    "compose.override.yaml",
    "compose.override.yml",
    "docker-compose.override.yaml",
    "docker-compose.override.yml",
];

/// The project file in `directory` and its override file, as `docker
/// compose` picks them without `-f`.
pub fn default_files(directory: &Path, report: &mut Report) -> Result<Vec<PathBuf>, ImportError> {
    let present: Vec<PathBuf> = DEFAULT_FILES
        .iter()
        .map(|name| directory.join(name))
        .filter(|path| path.is_file())
        .collect();
    let Some(project_file) = present.first().cloned() else {
        return Err(ImportError::NoComposeFile {
            directory: directory.to_path_buf(),
        });
    };
    if present.len() > 1 {
        report.warn(format!(
            "found several compose files in {}; using {}, as Compose does",
            directory.display(),
            file_name(&project_file)
        ));
    }
    let mut files = vec![project_file];
    if let Some(override_file) = OVERRIDE_FILES
        .iter()
        .map(|name| directory.join(name))
        .find(|path| path.is_file())
    {
        report.detail(
            "stack",
            format!("merged {} over it", file_name(&override_file)),
        );
        files.push(override_file);
    }
    Ok(files)
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    )
}

/// The merged project.
#[derive(Debug, Clone, Default)]
pub struct Project {
    /// The top-level `name`, when the files set one.
    pub name: Option<String>,
    /// The directory relative paths are resolved against: the first file's.
    pub directory: PathBuf,
    pub services: IndexMap<String, Service>,
    /// Top-level keys other than `name`, `services` and extensions.
    pub top_level: Vec<String>,
}

/// Loads and merges `files` (at least one), interpolating with `lookup`.
pub fn load(
    files: &[PathBuf],
    lookup: &dyn Fn(&str) -> Option<String>,
    report: &mut Report,
) -> Result<Project, ImportError> {
    let directory = files
        .first()
        .and_then(|file| file.parent())
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut merged = Value::Mapping(Mapping::new());
    for file in files {
        let document = read_file(file, lookup, report)?;
        merged = merge(merged, document, &mut Vec::new()).unwrap_or_default();
    }
    let mut merged = strip_tags(merged).unwrap_or_default();
    resolve_all_extends(&mut merged, &directory, lookup, report)?;
    let top_level: Vec<String> = merged
        .as_mapping()
        .into_iter()
        .flat_map(|mapping| mapping.keys())
        .filter_map(Value::as_str)
        .filter(|key| !matches!(*key, "name" | "services") && !key.starts_with("x-"))
        .map(str::to_string)
        .collect();
    let document: Document =
        serde_yaml::from_value(merged).map_err(|source| ImportError::Model { source })?;
    Ok(Project {
        name: document.name,
        directory,
        services: document.services,
        top_level,
    })
}

/// One compose file, read, interpolated and normalized, not yet merged.
fn read_file(
    path: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
    report: &mut Report,
) -> Result<Value, ImportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ImportError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let yaml_error = |source| ImportError::Yaml {
        path: path.to_path_buf(),
        source,
    };
    let mut value: Value = serde_yaml::from_str(&text).map_err(yaml_error)?;
    if value.is_null() {
        value = Value::Mapping(Mapping::new());
    }
    if !value.is_mapping() {
        return Err(ImportError::NotAMapping {
            path: path.to_path_buf(),
        });
    }
    // A merged mapping may hold a `<<` of its own (an anchor built on
    // another): merge again until none is left.
    for _ in 0..MAX_MERGE_DEPTH {
        value.apply_merge().map_err(yaml_error)?;
        if !holds_merge_key(&value) {
            break;
        }
    }
    let mut variables = Variables::new(lookup);
    interpolate_values(&mut value, &mut variables).map_err(|source| {
        ImportError::Interpolation {
            path: path.to_path_buf(),
            source,
        }
    })?;
    for name in variables.unset() {
        report.warn(format!(
            "variable {name} is not set: an empty string was substituted ({})",
            file_name(path)
        ));
    }
    normalize_services(&mut value);
    Ok(value)
}

/// Longest chain of `<<` merges of anchors built on anchors.
const MAX_MERGE_DEPTH: usize = 16;

fn holds_merge_key(value: &Value) -> bool {
    match value {
        Value::Mapping(mapping) => {
            mapping.contains_key("<<") || mapping.values().any(holds_merge_key)
        }
        Value::Sequence(items) => items.iter().any(holds_merge_key),
        Value::Tagged(tagged) => holds_merge_key(&tagged.value),
        _ => false,
    }
}

/// Interpolates every string value; keys stay as written (spec:
/// "Interpolation applies only to YAML values, not to keys").
fn interpolate_values(
    value: &mut Value,
    variables: &mut Variables,
) -> Result<(), interpolate::InterpolationError> {
    match value {
        Value::String(text) => *text = interpolate::substitute(text, variables)?,
        Value::Sequence(items) => {
            for item in items {
                interpolate_values(item, variables)?;
            }
        }
        Value::Mapping(mapping) => {
            for (_, item) in mapping.iter_mut() {
                interpolate_values(item, variables)?;
            }
        }
        Value::Tagged(tagged) => interpolate_values(&mut tagged.value, variables)?,
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

/// Rewrites the short forms of service attributes into their long form, so
/// that files can be merged key by key: `environment` and `labels` lists
/// become mappings, a `depends_on` list a mapping of conditions, a `build`
/// string `{context}`, an `env_file` string a list, an `extends` string
/// `{service}`.
fn normalize_services(document: &mut Value) {
    let Some(services) = document
        .get_mut("services")
        .and_then(untagged_mut)
        .and_then(Value::as_mapping_mut)
    else {
        return;
    };
    for (_, service) in services.iter_mut() {
        let Some(service) = untagged_mut(service).and_then(Value::as_mapping_mut) else {
            continue;
        };
        for (key, value) in service.iter_mut() {
            let Some(value) = untagged_mut(value) else {
                continue;
            };
            match key.as_str() {
                Some("environment" | "labels") => key_values_to_mapping(value),
                Some("depends_on") => {
                    if let Value::Sequence(names) = value {
                        let mapping: Mapping = names
                            .iter()
                            .map(|name| {
                                let mut condition = Mapping::new();
                                condition.insert("condition".into(), "service_started".into());
                                (name.clone(), Value::Mapping(condition))
                            })
                            .collect();
                        *value = Value::Mapping(mapping);
                    }
                }
                Some("build") => {
                    wrap_string(value, "context");
                    if let Some(args) = value.get_mut("args").and_then(untagged_mut) {
                        key_values_to_mapping(args);
                    }
                }
                Some("extends") => wrap_string(value, "service"),
                Some("env_file") if value.is_string() => {
                    *value = Value::Sequence(vec![value.clone()]);
                }
                _ => {}
            }
        }
    }
}

/// The value under a `!reset`/`!override` tag, or the value itself.
fn untagged_mut(value: &mut Value) -> Option<&mut Value> {
    match value {
        Value::Tagged(tagged) => Some(&mut tagged.value),
        other => Some(other),
    }
}

fn wrap_string(value: &mut Value, key: &str) {
    if value.is_string() {
        let mut mapping = Mapping::new();
        mapping.insert(key.into(), value.clone());
        *value = Value::Mapping(mapping);
    }
}

/// `[KEY=VALUE, KEY]` becomes `{KEY: VALUE, KEY: null}`; scalar values in a
/// mapping become strings (`DEBUG: 1` is the string "1" in a container).
fn key_values_to_mapping(value: &mut Value) {
    match value {
        Value::Sequence(items) => {
            let mapping: Mapping = items
                .iter()
                .filter_map(|item| {
                    let text = scalar_text(item)?;
                    Some(match text.split_once('=') {
                        Some((key, value)) => (key.into(), value.into()),
                        None => (text.into(), Value::Null),
                    })
                })
                .collect();
            *value = Value::Mapping(mapping);
        }
        Value::Mapping(mapping) => {
            for (_, item) in mapping.iter_mut() {
                if let Some(text) = scalar_text(item).filter(|_| !item.is_string()) {
                    *item = Value::String(text);
                }
            }
        }
        _ => {}
    }
}

/// A scalar as the string a container would see.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(boolean) => Some(boolean.to_string()),
        _ => None,
    }
}

/// Merges `over` onto `base` by the Compose Specification's rules; `None`
/// when `over` resets the value (`!reset`).
fn merge(base: Value, over: Value, path: &mut Vec<String>) -> Option<Value> {
    let over = match over {
        Value::Tagged(tagged) if tagged.tag == "reset" => return None,
        Value::Tagged(tagged) if tagged.tag == "override" => return strip_tags(tagged.value),
        other => other,
    };
    let base = match base {
        Value::Tagged(tagged) => tagged.value,
        other => other,
    };
    let at = |pattern: &[&str]| {
        path.len() == pattern.len()
            && path
                .iter()
                .zip(pattern)
                .all(|(segment, pattern)| *pattern == "*" || segment == pattern)
    };
    // Shell commands are replaced, not appended (13-merge.md, "Shell
    // commands"); ports and volumes are unique by their key ("Unique
    // resources").
    if at(&["services", "*", "command"])
        || at(&["services", "*", "entrypoint"])
        || at(&["services", "*", "healthcheck", "test"])
    {
        return strip_tags(over);
    }
    let unique_key: Option<fn(&Value) -> String> = if at(&["services", "*", "ports"]) {
        Some(port_key)
    } else if at(&["services", "*", "volumes"]) {
        Some(volume_key)
    } else {
        None
    };
    match (base, over) {
        (Value::Mapping(mut base), Value::Mapping(over)) => {
            for (key, value) in over {
                path.push(key.as_str().unwrap_or_default().to_string());
                match base.get_mut(&key) {
                    Some(existing) => match merge(std::mem::take(existing), value, path) {
                        Some(merged) => *existing = merged,
                        None => {
                            base.shift_remove(&key);
                        }
                    },
                    None => {
                        if let Some(value) = strip_tags(value) {
                            base.insert(key, value);
                        }
                    }
                }
                path.pop();
            }
            Some(Value::Mapping(base))
        }
        (Value::Sequence(mut base), Value::Sequence(over)) => {
            for item in over.into_iter().filter_map(strip_tags) {
                match unique_key {
                    Some(key_of) => {
                        let key = key_of(&item);
                        match base.iter_mut().find(|existing| key_of(existing) == key) {
                            Some(existing) => *existing = item,
                            None => base.push(item),
                        }
                    }
                    None => base.push(item),
                }
            }
            Some(Value::Sequence(base))
        }
        (_, over) => strip_tags(over),
    }
}

/// Removes `!reset` values and unwraps `!override` ones that no merge
/// consumed (in the first file they mean nothing more).
fn strip_tags(value: Value) -> Option<Value> {
    match value {
        Value::Tagged(tagged) if tagged.tag == "reset" => None,
        Value::Tagged(tagged) => strip_tags(tagged.value),
        Value::Mapping(mapping) => Some(Value::Mapping(
            mapping
                .into_iter()
                .filter_map(|(key, value)| Some((key, strip_tags(value)?)))
                .collect(),
        )),
        Value::Sequence(items) => Some(Value::Sequence(
            items.into_iter().filter_map(strip_tags).collect(),
        )),
        other => Some(other),
    }
}

/// A port's unique key: host IP, published port, target and protocol.
fn port_key(value: &Value) -> String {
    match serde_yaml::from_value::<Port>(value.clone()) {
        Ok(port) => {
            let port = port.mapping();
            format!(
                "{}|{}|{}|{}",
                port.host_ip.unwrap_or_default(),
                port.published.unwrap_or_default(),
                port.target,
                port.protocol
            )
        }
        Err(_) => format!("{value:?}"),
    }
}

/// A volume's unique key: its target path.
fn volume_key(value: &Value) -> String {
    match serde_yaml::from_value::<Volume>(value.clone()) {
        Ok(volume) => volume.mount().target,
        Err(_) => format!("{value:?}"),
    }
}

/// Resolves `extends` in every service of the merged document.
fn resolve_all_extends(
    document: &mut Value,
    directory: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
    report: &mut Report,
) -> Result<(), ImportError> {
    let Some(services) = document
        .get("services")
        .and_then(Value::as_mapping)
        .cloned()
    else {
        return Ok(());
    };
    let mut resolved = Mapping::new();
    for (name, service) in &services {
        let name_text = name.as_str().unwrap_or_default();
        let service = extended(name_text, service, &services, directory, lookup, report, 0)?;
        resolved.insert(name.clone(), service);
    }
    document["services"] = Value::Mapping(resolved);
    Ok(())
}

/// Longest chain of `extends` followed before giving up on a cycle.
const MAX_EXTENDS_DEPTH: usize = 16;

/// `service` with its `extends` base merged under it (spec `05-services.md`,
/// "extends": the base is merged with the service by the merge rules).
fn extended(
    name: &str,
    service: &Value,
    services: &Mapping,
    directory: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
    report: &mut Report,
    depth: usize,
) -> Result<Value, ImportError> {
    let Some(extends) = service.get("extends") else {
        return Ok(service.clone());
    };
    let invalid = |reason: String| ImportError::Extends {
        service: name.to_string(),
        reason,
    };
    if depth >= MAX_EXTENDS_DEPTH {
        return Err(invalid("extends forms a cycle".into()));
    }
    let base_name = extends
        .get("service")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("extends names no service".into()))?
        .to_string();
    let base = match extends.get("file").and_then(Value::as_str) {
        Some(file) => {
            let path = directory.join(file);
            let document = strip_tags(read_file(&path, lookup, report)?).unwrap_or_default();
            let file_services = document
                .get("services")
                .and_then(Value::as_mapping)
                .cloned()
                .unwrap_or_default();
            let base = file_services
                .get(base_name.as_str())
                .ok_or_else(|| invalid(format!("{} has no service {base_name}", path.display())))?;
            let base_directory = path.parent().unwrap_or(directory).to_path_buf();
            extended(
                &base_name,
                base,
                &file_services,
                &base_directory,
                lookup,
                report,
                depth + 1,
            )?
        }
        None => {
            let base = services
                .get(base_name.as_str())
                .ok_or_else(|| invalid(format!("no service {base_name} to extend")))?;
            extended(
                &base_name,
                base,
                services,
                directory,
                lookup,
                report,
                depth + 1,
            )?
        }
    };
    let mut own = service.clone();
    if let Some(mapping) = own.as_mapping_mut() {
        mapping.shift_remove("extends");
    }
    let mut base = base;
    if let Some(mapping) = base.as_mapping_mut() {
        mapping.shift_remove("extends");
    }
    let mut path = vec!["services".to_string(), name.to_string()];
    Ok(merge(base, own, &mut path).unwrap_or_default())
}

/// The merged document, typed.
#[derive(Debug, Deserialize, Default)]
struct Document {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    services: IndexMap<String, Service>,
}

/// One service, with the attributes the import reads typed and the rest
/// kept by name for the report.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Service {
    pub image: Option<String>,
    pub build: Option<Build>,
    pub command: Option<CommandLine>,
    pub entrypoint: Option<CommandLine>,
    /// After normalization: name to value, `None` for a name alone.
    pub environment: IndexMap<String, Option<String>>,
    pub env_file: Vec<EnvFile>,
    pub ports: Vec<Port>,
    pub expose: Vec<Scalar>,
    pub volumes: Vec<Volume>,
    pub depends_on: IndexMap<String, Dependency>,
    pub healthcheck: Option<Healthcheck>,
    pub deploy: Option<Deploy>,
    pub profiles: Vec<String>,
    pub container_name: Option<String>,
    pub restart: Option<String>,
    /// After normalization: name to value.
    pub labels: IndexMap<String, Option<String>>,
    /// `user: 1000`, `user: "1000:1000"` or a user name.
    pub user: Option<Scalar>,
    /// Every other attribute, by name.
    #[serde(flatten)]
    pub other: IndexMap<String, Value>,
}

/// `build:` in its long form.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Build {
    pub context: Option<String>,
    pub dockerfile: Option<String>,
    /// After normalization: name to value, `None` for a name alone.
    pub args: IndexMap<String, Option<String>>,
}

/// A YAML scalar read as the text a container would see.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Text(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Text(text) => formatter.write_str(text),
            Scalar::Integer(number) => write!(formatter, "{number}"),
            Scalar::Float(number) => write!(formatter, "{number}"),
            Scalar::Boolean(boolean) => write!(formatter, "{boolean}"),
        }
    }
}

/// `command`, `entrypoint` or a healthcheck `test`: a shell-form string or
/// an exec-form list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum CommandLine {
    Shell(String),
    Exec(Vec<Scalar>),
}

impl CommandLine {
    /// The words, the shell form split as Compose splits it (shell quoting
    /// rules, no shell started).
    pub fn words(&self) -> Result<Vec<String>, String> {
        match self {
            CommandLine::Shell(text) => {
                shlex::split(text).ok_or_else(|| format!("cannot split {text:?} into words"))
            }
            CommandLine::Exec(words) => Ok(words.iter().map(Scalar::to_string).collect()),
        }
    }

    /// As written, for messages.
    pub fn display(&self) -> String {
        match self {
            CommandLine::Shell(text) => text.clone(),
            CommandLine::Exec(words) => words
                .iter()
                .map(Scalar::to_string)
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// An `env_file` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum EnvFile {
    Path(String),
    Detailed {
        path: String,
        #[serde(default)]
        required: Option<bool>,
        #[serde(default)]
        format: Option<String>,
    },
}

impl EnvFile {
    pub fn path(&self) -> &str {
        match self {
            EnvFile::Path(path) | EnvFile::Detailed { path, .. } => path,
        }
    }

    pub fn required(&self) -> bool {
        match self {
            EnvFile::Path(_) => true,
            EnvFile::Detailed { required, .. } => required.unwrap_or(true),
        }
    }

    /// `format: raw` files are read without quotes or interpolation.
    pub fn raw(&self) -> bool {
        matches!(self, EnvFile::Detailed { format: Some(format), .. } if format == "raw")
    }
}

/// A `ports` entry, short (`"8000:8000"`, `3000`) or long.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Port {
    Short(Scalar),
    Long {
        target: Scalar,
        #[serde(default)]
        published: Option<Scalar>,
        #[serde(default)]
        host_ip: Option<String>,
        #[serde(default)]
        protocol: Option<String>,
    },
}

/// A port entry's parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub host_ip: Option<String>,
    pub published: Option<String>,
    /// The container port (the first of a range).
    pub target: u16,
    pub protocol: String,
    /// As written, for messages.
    pub written: String,
}

impl Port {
    /// Parses `[[IP:]PUBLISHED:]TARGET[/PROTOCOL]`; a target that is not a
    /// port reads as 0.
    pub fn mapping(&self) -> PortMapping {
        match self {
            Port::Long {
                target,
                published,
                host_ip,
                protocol,
            } => PortMapping {
                host_ip: host_ip.clone(),
                published: published.as_ref().map(Scalar::to_string),
                target: first_port(&target.to_string()),
                protocol: protocol.clone().unwrap_or_else(|| "tcp".into()),
                written: match published {
                    Some(published) => format!("{published}:{target}"),
                    None => target.to_string(),
                },
            },
            Port::Short(scalar) => {
                let written = scalar.to_string();
                let (ports, protocol) = written
                    .split_once('/')
                    .map_or((written.as_str(), "tcp"), |(ports, protocol)| {
                        (ports, protocol)
                    });
                let (host, target) = ports
                    .rsplit_once(':')
                    .map_or((None, ports), |(host, target)| (Some(host), target));
                let (host_ip, published) = match host {
                    None => (None, None),
                    Some(host) => match host.rsplit_once(':') {
                        Some((ip, published)) => (
                            Some(ip.trim_matches(['[', ']']).to_string()),
                            Some(published.to_string()),
                        ),
                        None => (None, Some(host.to_string())),
                    },
                };
                PortMapping {
                    host_ip,
                    published: published.filter(|published| !published.is_empty()),
                    target: first_port(target),
                    protocol: protocol.to_string(),
                    written: written.clone(),
                }
            }
        }
    }
}

/// The first port of `8000` or `8000-8005`.
fn first_port(text: &str) -> u16 {
    text.split('-')
        .next()
        .and_then(|port| port.trim().parse().ok())
        .unwrap_or(0)
}

/// A `volumes` entry, short (`source:target[:mode]`) or long.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Volume {
    Short(String),
    Long {
        #[serde(rename = "type", default)]
        kind: Option<String>,
        #[serde(default)]
        source: Option<String>,
        target: String,
    },
}

/// A volume entry's parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `volume` (named or anonymous), `bind` or another long-form type.
    pub kind: String,
    pub source: Option<String>,
    pub target: String,
    /// As written, for messages.
    pub written: String,
}

impl Volume {
    pub fn mount(&self) -> Mount {
        match self {
            Volume::Long {
                kind,
                source,
                target,
            } => Mount {
                kind: kind.clone().unwrap_or_else(|| "volume".into()),
                source: source.clone(),
                target: target.clone(),
                written: match source {
                    Some(source) => format!("{source}:{target}"),
                    None => target.clone(),
                },
            },
            Volume::Short(text) => {
                let parts: Vec<&str> = text.split(':').collect();
                let (source, target) = match parts.as_slice() {
                    [target] => (None, *target),
                    [source, target, ..] => (Some(*source), *target),
                    [] => (None, ""),
                };
                let bind = source.is_some_and(|source| {
                    source.starts_with('.')
                        || source.starts_with('/')
                        || source.starts_with('~')
                        || source.starts_with('$')
                });
                Mount {
                    kind: if bind { "bind" } else { "volume" }.into(),
                    source: source.map(str::to_string),
                    target: target.to_string(),
                    written: text.clone(),
                }
            }
        }
    }
}

/// A `depends_on` entry in its long form.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Dependency {
    pub condition: Option<String>,
    pub required: Option<bool>,
}

impl Dependency {
    pub fn condition(&self) -> &str {
        self.condition.as_deref().unwrap_or("service_started")
    }
}

/// `healthcheck:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Healthcheck {
    pub test: Option<CommandLine>,
    pub disable: Option<bool>,
}

/// `deploy:`, the parts with an AppStack counterpart.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Deploy {
    pub replicas: Option<i64>,
    pub resources: Option<DeployResources>,
}

/// `deploy.resources`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DeployResources {
    pub limits: Option<ResourceAmounts>,
    pub reservations: Option<ResourceAmounts>,
}

/// CPU and memory of `deploy.resources.limits` or `.reservations`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ResourceAmounts {
    pub cpus: Option<Scalar>,
    pub memory: Option<Scalar>,
}

/// One service from its YAML, short forms allowed, for tests elsewhere.
#[cfg(test)]
pub(crate) fn service_from_yaml(yaml: &str) -> Service {
    let service: Value = serde_yaml::from_str(yaml).expect("service YAML");
    let mut services = Mapping::new();
    services.insert("service".into(), service);
    let mut document = Mapping::new();
    document.insert("services".into(), Value::Mapping(services));
    let mut document = Value::Mapping(document);
    normalize_services(&mut document);
    serde_yaml::from_value(document["services"]["service"].clone()).expect("a service")
}

#[cfg(test)]
pub(crate) mod tests {
    //! Merge expectations come from the Compose Specification's
    //! `13-merge.md` (cited as "merge"), YAML features from `10-fragments.md`.
    use super::*;

    fn load_texts(
        files: &[&str],
        variables: &[(&str, &str)],
    ) -> Result<(Project, Report), ImportError> {
        let directory = tempdir();
        let paths: Vec<PathBuf> = files
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let path = directory.path().join(format!("compose{index}.yaml"));
                std::fs::write(&path, text).unwrap();
                path
            })
            .collect();
        let variables: Vec<(String, String)> = variables
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        let lookup = move |name: &str| {
            variables
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        };
        let mut report = Report::default();
        let project = load(&paths, &lookup, &mut report)?;
        Ok((project, report))
    }

    /// A fresh scratch directory, removed with everything in it when the
    /// returned guard is dropped.
    pub(crate) fn tempdir() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("appstack-import-")
            .tempdir()
            .unwrap()
    }

    #[test]
    fn mappings_merge_and_sequences_append() {
        // merge, "Mapping": missing entries added, conflicting ones merged;
        // "Sequence": values of the overriding file appended.
        let (project, _) = load_texts(
            &[
                "services:\n  foo:\n    image: a\n    dns: [1.1.1.1]\n    environment: {K1: v1, K2: v2}\n",
                "services:\n  foo:\n    image: b\n    dns: [8.8.8.8]\n    environment: [K2=VALUE, K3=v3]\n",
            ],
            &[],
        )
        .unwrap();
        let foo = &project.services["foo"];
        assert_eq!(foo.image.as_deref(), Some("b"));
        assert_eq!(
            foo.other["dns"],
            serde_yaml::from_str::<Value>("[1.1.1.1, 8.8.8.8]").unwrap()
        );
        let environment: Vec<(&str, Option<&str>)> = foo
            .environment
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_deref()))
            .collect();
        assert_eq!(
            environment,
            [
                ("K1", Some("v1")),
                ("K2", Some("VALUE")),
                ("K3", Some("v3"))
            ]
        );
    }

    #[test]
    fn commands_are_replaced_not_appended() {
        // merge, "Shell commands": command, entrypoint and healthcheck.test
        // are overridden by the latest file.
        let (project, _) = load_texts(
            &[
                "services:\n  foo:\n    command: [echo, foo]\n    healthcheck: {test: [CMD, a], interval: 5s}\n",
                "services:\n  foo:\n    command: [echo, bar]\n    healthcheck: {test: [CMD, b]}\n",
            ],
            &[],
        )
        .unwrap();
        let foo = &project.services["foo"];
        assert_eq!(
            foo.command.as_ref().unwrap().words().unwrap(),
            ["echo", "bar"]
        );
        assert_eq!(
            foo.healthcheck
                .as_ref()
                .unwrap()
                .test
                .as_ref()
                .unwrap()
                .words()
                .unwrap(),
            ["CMD", "b"]
        );
    }

    #[test]
    fn volumes_and_ports_are_unique_by_key() {
        // merge, "Unique resources": foo:/work then bar:/work leaves bar:/work.
        let (project, _) = load_texts(
            &[
                "services:\n  foo:\n    volumes: ['foo:/work', 'data:/data']\n    ports: ['8000:8000']\n",
                "services:\n  foo:\n    volumes: ['bar:/work']\n    ports: ['8000:8000', '9000:9000']\n",
            ],
            &[],
        )
        .unwrap();
        let foo = &project.services["foo"];
        let volumes: Vec<String> = foo
            .volumes
            .iter()
            .map(|volume| volume.mount().written)
            .collect();
        assert_eq!(volumes, ["bar:/work", "data:/data"]);
        let ports: Vec<String> = foo
            .ports
            .iter()
            .map(|port| port.mapping().written)
            .collect();
        assert_eq!(ports, ["8000:8000", "9000:9000"]);
    }

    #[test]
    fn reset_removes_and_override_replaces() {
        // merge, "Reset value" and "Replace value".
        let (project, _) = load_texts(
            &[
                "services:\n  app:\n    image: myapp\n    ports: ['8080:80']\n    environment: {FOO: BAR, KEEP: yes}\n",
                "services:\n  app:\n    ports: !override ['8443:443']\n    environment:\n      FOO: !reset null\n",
            ],
            &[],
        )
        .unwrap();
        let app = &project.services["app"];
        let ports: Vec<String> = app
            .ports
            .iter()
            .map(|port| port.mapping().written)
            .collect();
        assert_eq!(ports, ["8443:443"]);
        assert_eq!(app.environment.keys().collect::<Vec<_>>(), ["KEEP"]);
        let (project, _) = load_texts(
            &[
                "services:\n  app:\n    image: myapp\n    ports: ['8080:80']\n",
                "services:\n  app:\n    ports: !reset []\n",
            ],
            &[],
        )
        .unwrap();
        assert!(project.services["app"].ports.is_empty());
    }

    #[test]
    fn anchors_aliases_and_merge_keys_are_resolved() {
        // 10-fragments.md, examples 2 and 4.
        let text = "x-env: &env\n  FOO: BAR\n  ZOT: QUIX\n\
                    services:\n  first:\n    image: my-image\n    environment: *env\n\
                    \x20 second:\n    image: another\n    environment:\n      <<: *env\n      YET_ANOTHER: VARIABLE\n";
        let (project, _) = load_texts(&[text], &[]).unwrap();
        assert_eq!(
            project.services["first"].environment["ZOT"].as_deref(),
            Some("QUIX")
        );
        let second = &project.services["second"].environment;
        assert_eq!(second["FOO"].as_deref(), Some("BAR"));
        assert_eq!(second["YET_ANOTHER"].as_deref(), Some("VARIABLE"));
    }

    #[test]
    fn anchors_built_on_anchors_are_merged_through() {
        // An anchor whose mapping merges another: each level's own keys win
        // over what it merges.
        let text = "x-db: &db\n  USER: app\n  MODE: db\n\
                    x-app: &app\n  <<: *db\n  MODE: app\n  PORT: 5432\n\
                    services:\n  web:\n    image: web\n    environment:\n      <<: *app\n      MODE: web\n";
        let (project, _) = load_texts(&[text], &[]).unwrap();
        let environment = &project.services["web"].environment;
        assert_eq!(environment["USER"].as_deref(), Some("app"));
        assert_eq!(environment["MODE"].as_deref(), Some("web"));
        assert_eq!(environment["PORT"].as_deref(), Some("5432"));
        assert!(!environment.contains_key("<<"));
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        // Compose's YAML reader rejects a key defined twice in one mapping.
        let error =
            load_texts(&["services:\n  a:\n    image: x\n    image: y\n"], &[]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("duplicate entry with key \"image\""),
            "{error}"
        );
    }

    #[test]
    fn values_are_interpolated_per_file_and_keys_are_not() {
        // 12-interpolation.md: "Interpolation applies only to YAML values,
        // not to keys"; unset variables are reported.
        let text = "services:\n  app:\n    image: \"webapp:${TAG}\"\n    labels:\n      \"$KEY_NOT_INTERPOLATED\": x\n\
                    \x20   environment: [\"$NAME=v\", \"PLAIN=${MISSING}\"]\n";
        let (project, report) =
            load_texts(&[text], &[("TAG", "v1.5"), ("NAME", "FROM_VAR")]).unwrap();
        let app = &project.services["app"];
        assert_eq!(app.image.as_deref(), Some("webapp:v1.5"));
        assert!(app.environment.contains_key("FROM_VAR"));
        assert!(app.labels.contains_key("$KEY_NOT_INTERPOLATED"));
        assert!(report.warnings()[0].contains("MISSING"), "{report}");
    }

    #[test]
    fn a_required_variable_stops_the_load() {
        let error = load_texts(
            &["services:\n  app:\n    image: \"app:${TAG:?set TAG}\"\n"],
            &[],
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("required variable TAG is missing a value: set TAG"),
            "{error}"
        );
    }

    #[test]
    fn extends_merges_the_base_service_under_the_extending_one() {
        // 05-services.md, "extends".
        let text = "services:\n  base:\n    image: app:1\n    environment: {A: '1', B: '2'}\n\
                    \x20 web:\n    extends: base\n    environment: {B: three}\n    command: serve\n";
        let (project, _) = load_texts(&[text], &[]).unwrap();
        let web = &project.services["web"];
        assert_eq!(web.image.as_deref(), Some("app:1"));
        assert_eq!(web.environment["A"].as_deref(), Some("1"));
        assert_eq!(web.environment["B"].as_deref(), Some("three"));
        assert!(!web.other.contains_key("extends"));
        let cycle = "services:\n  a:\n    extends: b\n  b:\n    extends: a\n";
        assert!(load_texts(&[cycle], &[]).is_err());
    }

    #[test]
    fn short_forms_read_like_long_forms() {
        let text = "services:\n  app:\n    build: ./api\n    env_file: .env\n    depends_on: [db]\n\
                    \x20   environment: {DEBUG: 1, ON: true}\n    ports: [3000, '127.0.0.1:8001:8000/tcp', {target: 80, published: '8080'}]\n\
                    \x20   volumes: ['./src:/app', 'data:/var/lib/data', '/cache']\n";
        let (project, _) = load_texts(&[text], &[]).unwrap();
        let app = &project.services["app"];
        assert_eq!(
            app.build.as_ref().unwrap().context.as_deref(),
            Some("./api")
        );
        assert_eq!(app.env_file[0].path(), ".env");
        assert_eq!(app.depends_on["db"].condition(), "service_started");
        assert_eq!(app.environment["DEBUG"].as_deref(), Some("1"));
        assert_eq!(app.environment["ON"].as_deref(), Some("true"));
        let ports: Vec<(Option<String>, Option<String>, u16)> = app
            .ports
            .iter()
            .map(|port| {
                let port = port.mapping();
                (port.host_ip, port.published, port.target)
            })
            .collect();
        assert_eq!(
            ports,
            [
                (None, None, 3000),
                (Some("127.0.0.1".into()), Some("8001".into()), 8000),
                (None, Some("8080".into()), 80)
            ]
        );
        let kinds: Vec<String> = app
            .volumes
            .iter()
            .map(|volume| volume.mount().kind)
            .collect();
        assert_eq!(kinds, ["bind", "volume", "volume"]);
    }
}
