//! What the role heuristics read from a compose service: its image, its
//! words, the hosts it is reached by and the services its env points at;
//! which services are PostgreSQL, infrastructure or workers; which
//! commands run migrations.

use indexmap::IndexMap;

use super::compose::{CommandLine, Service};
use super::dotenv::EnvMap;
use super::sensitive::url_parts;

/// A service with what the heuristics read from it.
pub struct Facts<'a> {
    pub name: &'a str,
    pub service: &'a Service,
    /// The environment the container would get (env_file and environment).
    pub env: &'a EnvMap,
}

impl Facts<'_> {
    /// The image repository's last path segment, lowercase, no tag:
    /// `docker.io/library/postgres:16-alpine` is `postgres`.
    pub fn image_repository(&self) -> Option<String> {
        self.service.image.as_deref().map(image_repository)
    }

    /// Entrypoint and command words, a `sh -c` script split into its words.
    pub fn words(&self) -> Vec<String> {
        let mut words = Vec::new();
        for line in [&self.service.entrypoint, &self.service.command]
            .into_iter()
            .flatten()
        {
            words.extend(line.words().unwrap_or_default());
        }
        words
            .into_iter()
            .flat_map(|word| {
                if word.contains(char::is_whitespace) {
                    shlex::split(&word).unwrap_or_else(|| vec![word])
                } else {
                    vec![word]
                }
            })
            .collect()
    }

    /// Host names other services reach this one by.
    pub fn host_names(&self) -> Vec<&str> {
        let mut names = vec![self.name];
        names.extend(self.service.container_name.as_deref());
        names.extend(
            self.service
                .other
                .get("hostname")
                .and_then(|value| value.as_str()),
        );
        names
    }

    /// Whether `environment:` itself (not an `env_file`) sets `key`.
    pub fn sets_explicitly(&self, key: &str) -> bool {
        self.service.environment.contains_key(key)
    }

    /// The build arguments, with the value each gets.
    pub fn build_args(&self) -> Vec<(&str, &str)> {
        self.service
            .build
            .iter()
            .flat_map(|build| build.args.iter())
            .filter_map(|(key, value)| Some((key.as_str(), value.as_deref()?)))
            .collect()
    }

    /// The container labels that have a value.
    pub fn labels(&self) -> Vec<(&str, &str)> {
        self.service
            .labels
            .iter()
            .filter_map(|(key, value)| Some((key.as_str(), value.as_deref()?)))
            .collect()
    }

    /// Whether any variable holds a URL (or a bare host) naming `target`.
    pub fn env_points_at(&self, target: &Facts) -> Option<String> {
        self.env
            .iter()
            .find(|(_, value)| value_points_at(value, target))
            .map(|(key, _)| key.clone())
    }
}

/// Whether `value` names `target`: its host name alone, `host:port`, or a
/// URL whose host is `target` (by name, or localhost at one of its
/// published ports).
pub fn value_points_at(value: &str, target: &Facts) -> bool {
    let names = target.host_names();
    if names.contains(&value) {
        return true;
    }
    if let Some((host, port)) = value.rsplit_once(':')
        && names.contains(&host)
        && port.parse::<u16>().is_ok()
    {
        return true;
    }
    url_points_at(value, target)
}

/// Whether `value` is a URL whose host is `target` (by name, or localhost
/// at one of its published ports).
pub fn url_points_at(value: &str, target: &Facts) -> bool {
    let Some(url) = url_parts(value) else {
        return false;
    };
    if target.host_names().contains(&url.host.as_str()) {
        return true;
    }
    let local = matches!(
        url.host.as_str(),
        "localhost" | "127.0.0.1" | "0.0.0.0" | "::1"
    );
    local
        && url.port.is_some_and(|port| {
            target
                .service
                .ports
                .iter()
                .any(|mapping| mapping.mapping().published.as_deref() == Some(&port.to_string()))
        })
}

/// `registry/org/name:tag@digest` to `name`, lowercase.
pub fn image_repository(image: &str) -> String {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split(':').next().unwrap_or(last).to_ascii_lowercase()
}

/// Whether an image reference names where it is pushed: a registry host
/// (`ghcr.io/acme/api`, `localhost:5000/api`) or a Docker Hub account
/// (`acme/api`). A bare `backend:latest` is the name `docker compose
/// build` tags locally; a cluster cannot pull it.
pub fn names_a_repository(image: &str) -> bool {
    image.split('@').next().unwrap_or(image).contains('/')
}

/// Images that run PostgreSQL (the official image and images built on it).
const POSTGRES_IMAGES: [&str; 7] = [
    "postgres",
    "postgresql",
    "postgis",
    "pgvector",
    "timescaledb",
    "timescaledb-ha",
    "pgvecto-rs",
];

/// Whether a service is a PostgreSQL server: by its image, or, for a
/// service built locally, by a name, image or Dockerfile that says
/// postgres, or the official image's variables set in `environment`.
pub fn is_postgres(facts: &Facts) -> bool {
    let says_postgres = |text: &str| text.to_ascii_lowercase().contains("postgres");
    let repository = facts.image_repository();
    if let Some(repository) = &repository
        && (POSTGRES_IMAGES.contains(&repository.as_str())
            || repository.ends_with("postgres")
            || repository.ends_with("postgresql"))
    {
        return true;
    }
    let Some(build) = &facts.service.build else {
        return false;
    };
    // A client of a database sets its host, or runs a command of its own.
    let client = facts.service.command.is_some()
        || facts.service.entrypoint.is_some()
        || ["POSTGRES_SERVER", "POSTGRES_HOST", "DATABASE_URL"]
            .iter()
            .any(|key| facts.env.contains_key(*key));
    says_postgres(facts.name)
        || repository.as_deref().is_some_and(says_postgres)
        || build.dockerfile.as_deref().is_some_and(says_postgres)
        || build.context.as_deref().is_some_and(says_postgres)
        || (!client
            && facts
                .service
                .environment
                .keys()
                .any(|key| key == "POSTGRES_PASSWORD" || key == "POSTGRES_DB"))
}

/// Services that are neither part of an AppStack nor the application,
/// with the reason given for leaving them out: by image, then by what
/// the name says (reverse proxies, test runners).
pub fn infrastructure(facts: &Facts) -> Option<&'static str> {
    by_image(facts).or_else(|| by_name(facts))
}

const REVERSE_PROXY: &str = "a reverse proxy: in the cluster an Ingress or Gateway routes traffic to the Services (spec.expose)";
const TEST_RUNNER: &str =
    "end-to-end tests: a test runner is not part of a deployed stack; run it against the stack";

fn by_image(facts: &Facts) -> Option<&'static str> {
    let repository = facts.image_repository()?;
    let reason = match repository.as_str() {
        "redis" | "valkey" | "memcached" | "keydb" | "dragonfly" | "redis-stack" => {
            "a cache or broker: the AppStack has no component for it; run it separately (a managed service or its Helm chart) and point the backend's env at it"
        }
        "rabbitmq" | "kafka" | "cp-kafka" | "nats" | "zookeeper" | "activemq" | "redpanda" => {
            "a message broker: the AppStack has no component for it; run it separately and point the backend's env at it"
        }
        "elasticsearch" | "opensearch" | "meilisearch" | "typesense" | "solr" => {
            "a search engine: the AppStack has no component for it; run it separately"
        }
        "minio" | "localstack" | "azurite" => {
            "local stand-in for cloud storage: use the real service in the cluster's cloud"
        }
        "mailhog" | "mailpit" | "maildev" | "mailcatcher" | "smtp4dev" | "adminer" | "pgadmin4"
        | "pgadmin" => "a development tool: not part of a deployed stack",
        "mysql" | "mariadb" | "mongo" | "mongodb" => {
            "a database other than PostgreSQL: the AppStack manages PostgreSQL only"
        }
        "traefik" | "caddy" | "haproxy" | "envoy" | "nginx-proxy" => REVERSE_PROXY,
        "prometheus"
        | "grafana"
        | "loki"
        | "jaeger"
        | "otel-collector"
        | "opentelemetry-collector" => {
            "monitoring: the AppStack's ServiceMonitor works with the cluster's Prometheus"
        }
        "playwright" | "cypress" | "selenium" | "standalone-chrome" => TEST_RUNNER,
        _ => return None,
    };
    Some(reason)
}

fn by_name(facts: &Facts) -> Option<&'static str> {
    let name = facts.name.to_ascii_lowercase();
    let dockerfile = facts
        .service
        .build
        .as_ref()
        .and_then(|build| build.dockerfile.as_deref())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let tests = ["playwright", "cypress", "selenium", "puppeteer", "e2e"];
    if tests
        .iter()
        .any(|word| name.contains(word) || dockerfile.contains(word))
    {
        return Some(TEST_RUNNER);
    }
    let proxies = [
        "proxy",
        "nginx",
        "traefik",
        "caddy",
        "haproxy",
        "reverse-proxy",
        "gateway",
        "loadbalancer",
    ];
    if proxies.contains(&name.as_str())
        || name.ends_with("-proxy")
        || name.ends_with("_proxy")
        || name.ends_with("-nginx")
        || name.ends_with("_nginx")
    {
        return Some(REVERSE_PROXY);
    }
    if ["flower", "maildev", "mailcatcher", "mailhog", "adminer"].contains(&name.as_str()) {
        return Some("a development tool: not part of a deployed stack");
    }
    None
}

/// Known migration tools: a name for messages, the words, in order, that
/// run them, and the query that reads the revision they leave in the
/// database (`None`: Alembic's, the operator's default). A word matches
/// when equal, when it ends with `/word` (`./manage.py`), or when it
/// starts with `word:` (`migrate:latest`).
const MIGRATION_TOOLS: [(&str, &[&str], Option<&str>); 13] = [
    ("Alembic", &["alembic", "upgrade"], None),
    (
        "Django",
        &["manage.py", "migrate"],
        Some("SELECT app || '.' || name FROM django_migrations ORDER BY id DESC LIMIT 1"),
    ),
    (
        "Django",
        &["django-admin", "migrate"],
        Some("SELECT app || '.' || name FROM django_migrations ORDER BY id DESC LIMIT 1"),
    ),
    (
        "Flyway",
        &["flyway", "migrate"],
        Some(
            "SELECT version FROM flyway_schema_history WHERE success ORDER BY installed_rank DESC LIMIT 1",
        ),
    ),
    (
        "Prisma",
        &["prisma", "migrate"],
        Some(
            "SELECT migration_name FROM _prisma_migrations WHERE finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT 1",
        ),
    ),
    (
        "Knex",
        &["knex", "migrate"],
        Some("SELECT name FROM knex_migrations ORDER BY id DESC LIMIT 1"),
    ),
    (
        "sqlx",
        &["sqlx", "migrate"],
        Some("SELECT max(version) FROM _sqlx_migrations WHERE success"),
    ),
    (
        "goose",
        &["goose", "up"],
        Some("SELECT max(version_id) FROM goose_db_version WHERE is_applied"),
    ),
    (
        "Rails",
        &["rails", "db:migrate"],
        Some("SELECT max(version) FROM schema_migrations"),
    ),
    (
        "Rails",
        &["rake", "db:migrate"],
        Some("SELECT max(version) FROM schema_migrations"),
    ),
    (
        "Sequelize",
        &["sequelize", "db:migrate"],
        Some("SELECT name FROM \"SequelizeMeta\" ORDER BY name DESC LIMIT 1"),
    ),
    (
        "TypeORM",
        &["typeorm", "migration:run"],
        Some("SELECT name FROM migrations ORDER BY id DESC LIMIT 1"),
    ),
    (
        "Diesel",
        &["diesel", "migration"],
        Some("SELECT max(version) FROM __diesel_schema_migrations"),
    ),
];

fn word_matches(word: &str, token: &str) -> bool {
    let word = word.to_ascii_lowercase();
    word == token || word.ends_with(&format!("/{token}")) || word.starts_with(&format!("{token}:"))
}

/// The migration tool `words` run, if any.
pub fn migration_tool(words: &[String]) -> Option<&'static str> {
    migration(words).map(|(tool, _)| tool)
}

/// The migration tool `words` run and the query reading its revision.
pub fn migration(words: &[String]) -> Option<(&'static str, Option<&'static str>)> {
    MIGRATION_TOOLS.iter().find_map(|(tool, tokens, query)| {
        let mut remaining = words.iter();
        tokens
            .iter()
            .all(|token| remaining.any(|word| word_matches(word, token)))
            .then_some((*tool, *query))
    })
}

/// Shells whose `-c` script is split into commands.
const SHELLS: [&str; 6] = ["sh", "bash", "ash", "dash", "/bin/sh", "/bin/bash"];

/// A command that runs a `sh -c` script of several commands chained with
/// `&&` or `;`: the commands, each as words.
pub fn shell_chain(line: &CommandLine) -> Option<Vec<Vec<String>>> {
    let words = line.words().ok()?;
    let script = match words.as_slice() {
        [shell, flag, script] if SHELLS.contains(&shell.as_str()) && flag == "-c" => script,
        _ => return None,
    };
    let tokens = shlex::split(script)?;
    let mut commands = vec![Vec::new()];
    for token in tokens {
        let (word, ends_command) = match token.as_str() {
            "&&" | ";" => (None, true),
            _ => match token.strip_suffix(';') {
                Some(word) => (Some(word.to_string()), true),
                None => (Some(token), false),
            },
        };
        if let Some(word) = word.filter(|word| !word.is_empty()) {
            commands.last_mut().expect("never empty").push(word);
        }
        if ends_command {
            commands.push(Vec::new());
        }
    }
    commands.retain(|command| !command.is_empty());
    (commands.len() > 1).then_some(commands)
}

/// Background workers: a second process of the application.
pub fn worker(facts: &Facts) -> Option<&'static str> {
    let words: Vec<String> = facts
        .words()
        .iter()
        .map(|word| word.to_ascii_lowercase())
        .collect();
    let has = |word: &str| words.iter().any(|candidate| word_matches(candidate, word));
    let name = facts.name.to_ascii_lowercase();
    let worker = (has("celery") && (has("worker") || has("beat")))
        || has("rqworker")
        || (has("rq") && has("worker"))
        || ["sidekiq", "dramatiq", "huey_consumer", "arq", "faktory"]
            .iter()
            .any(|tool| has(tool))
        || ["worker", "beat", "scheduler", "cron", "consumer"]
            .iter()
            .any(|part| name.contains(part));
    worker.then_some(
        "a background worker: the AppStack runs one backend Deployment; run the worker as a Deployment of its own (same image and env)",
    )
}

/// Every service's facts, in compose order.
pub fn facts<'a>(
    services: &'a IndexMap<String, Service>,
    envs: &'a IndexMap<String, EnvMap>,
) -> Vec<Facts<'a>> {
    services
        .iter()
        .map(|(name, service)| Facts {
            name,
            service,
            env: &envs[name],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(yaml: &str) -> Service {
        super::super::compose::service_from_yaml(yaml)
    }

    #[test]
    fn image_repositories_drop_registry_tag_and_digest() {
        assert_eq!(image_repository("postgres:16-alpine"), "postgres");
        assert_eq!(image_repository("docker.io/library/postgres"), "postgres");
        assert_eq!(
            image_repository("ghcr.io/acme/Shop-API:1.2@sha256:abc"),
            "shop-api"
        );
        assert_eq!(
            image_repository("localhost:5000/pgvector/pgvector:pg16"),
            "pgvector"
        );
    }

    #[test]
    fn migration_tools_are_found_in_commands() {
        let words = |text: &str| shlex::split(text).unwrap();
        assert_eq!(
            migration_tool(&words("alembic upgrade head")),
            Some("Alembic")
        );
        assert_eq!(
            migration_tool(&words("python ./manage.py migrate --noinput")),
            Some("Django")
        );
        assert_eq!(
            migration_tool(&words("npx prisma migrate deploy")),
            Some("Prisma")
        );
        assert_eq!(
            migration_tool(&words("npx knex migrate:latest")),
            Some("Knex")
        );
        assert_eq!(migration_tool(&words("sqlx migrate run")), Some("sqlx"));
        assert_eq!(migration_tool(&words("goose -dir db up")), Some("goose"));
        assert_eq!(
            migration_tool(&words("flyway -url=jdbc:x migrate")),
            Some("Flyway")
        );
        assert_eq!(migration_tool(&words("alembic history")), None);
        assert_eq!(migration_tool(&words("uvicorn app:app")), None);
    }

    #[test]
    fn shell_chains_split_into_commands() {
        let line = CommandLine::Shell(
            "sh -c \"python manage.py migrate --noinput && gunicorn app.wsgi -b 0.0.0.0:8000\""
                .into(),
        );
        assert_eq!(
            shell_chain(&line).unwrap(),
            [
                vec!["python", "manage.py", "migrate", "--noinput"],
                vec!["gunicorn", "app.wsgi", "-b", "0.0.0.0:8000"]
            ]
        );
        assert!(shell_chain(&CommandLine::Shell("gunicorn app.wsgi".into())).is_none());
        let exec = CommandLine::Exec(vec![
            super::super::compose::Scalar::Text("bash".into()),
            super::super::compose::Scalar::Text("-c".into()),
            super::super::compose::Scalar::Text(
                "alembic upgrade head; exec uvicorn main:app".into(),
            ),
        ]);
        assert_eq!(shell_chain(&exec).unwrap().len(), 2);
    }

    #[test]
    fn postgres_workers_and_infrastructure_are_recognised() {
        let env = EnvMap::new();
        let db = service("image: postgis/postgis:16-3.4");
        let facts = Facts {
            name: "db",
            service: &db,
            env: &env,
        };
        assert!(is_postgres(&facts));
        let built = service("build: ./db\nenvironment: {POSTGRES_PASSWORD: x}");
        assert!(is_postgres(&Facts {
            name: "db",
            service: &built,
            env: &env
        }));
        let redis = service("image: redis:7-alpine");
        assert!(
            infrastructure(&Facts {
                name: "cache",
                service: &redis,
                env: &env
            })
            .is_some()
        );
        let celery = service("build: .\ncommand: celery -A proj worker -l info");
        assert!(
            worker(&Facts {
                name: "tasks",
                service: &celery,
                env: &env
            })
            .is_some()
        );
        let api = service("build: .\ncommand: uvicorn main:app");
        assert!(
            worker(&Facts {
                name: "api",
                service: &api,
                env: &env
            })
            .is_none()
        );
    }

    #[test]
    fn urls_point_at_services_by_name_or_published_localhost_port() {
        let env = EnvMap::new();
        let api = service("build: .\nports: ['8001:8000']");
        let target = Facts {
            name: "api",
            service: &api,
            env: &env,
        };
        assert!(value_points_at("http://api:8000/v1", &target));
        assert!(value_points_at("http://localhost:8001", &target));
        assert!(!value_points_at("http://localhost:8000", &target));
        assert!(value_points_at("api", &target));
        assert!(!value_points_at("https://example.com", &target));
    }
}
