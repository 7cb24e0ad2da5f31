//! A throwaway PostgreSQL server for one test: the machine's PostgreSQL
//! binaries (`initdb`, `pg_ctl`, `postgres`; Debian's `postgresql` package,
//! which `.ci/run` installs), a temporary data directory, a free loopback
//! port, password authentication (scram-sha-256) and TLS with a self-signed
//! certificate that nothing trusts. Run as the `postgres` user when the
//! tests run as root (PostgreSQL refuses root). Stopped and removed when
//! dropped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::{Connection, Executor, PgConnection};

/// The superuser's password (the server only listens on loopback).
const SUPERUSER_PASSWORD: &str = "superuser-password";

pub struct Postgres {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    as_postgres_user: bool,
}

impl Postgres {
    /// Starts a server; panics with the server's log when it cannot.
    pub fn start() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let bin = binaries();
        let as_postgres_user = running_as_root();
        let dir = std::env::temp_dir().join(format!(
            "appstack-postgres-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the server's directory");
        let mut server = Self {
            dir,
            bin,
            port: 0,
            as_postgres_user,
        };
        server.init();
        server.listen();
        server
    }

    fn init(&self) {
        let dir = &self.dir;
        std::fs::write(dir.join("password"), SUPERUSER_PASSWORD).unwrap();
        // A certificate for 127.0.0.1 and localhost, signed by itself: TLS
        // works with sslmode=require, and verify-ca/verify-full fail.
        run(Command::new("openssl").args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-keyout",
            path(&dir.join("server.key")),
            "-out",
            path(&dir.join("server.crt")),
        ]));
        if self.as_postgres_user {
            run(Command::new("chown").args(["-R", "postgres:", path(dir)]));
        }
        run(&mut self.command("chmod", &["600", path(&dir.join("server.key"))]));
        run(&mut self.command(
            &self.bin.join("initdb").to_string_lossy(),
            &[
                "--pgdata",
                path(&self.data()),
                "--username",
                "postgres",
                "--pwfile",
                path(&dir.join("password")),
                "--auth",
                "scram-sha-256",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
            ],
        ));
        let settings = format!(
            "listen_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
             max_connections = 40\nshared_buffers = 16MB\n",
            dir.display(),
            dir.join("server.crt").display(),
            dir.join("server.key").display(),
        );
        let conf = self.data().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text.push_str(&settings);
        std::fs::write(&conf, text).unwrap();
    }

    /// Starts the server on a free port. A port found free can be taken by
    /// another process before the server binds it: then another is tried.
    fn listen(&mut self) {
        let dir = self.dir.clone();
        for _ in 0..5 {
            self.port = super::free_port();
            std::fs::write(
                self.data().join("postgresql.auto.conf"),
                format!("port = {}\n", self.port),
            )
            .unwrap();
            let started = self
                .command(
                    &self.bin.join("pg_ctl").to_string_lossy(),
                    &[
                        "start",
                        "--pgdata",
                        path(&self.data()),
                        "--log",
                        path(&dir.join("server.log")),
                        "--wait",
                        "--timeout",
                        "60",
                    ],
                )
                .output()
                .expect("run pg_ctl");
            if started.status.success() {
                return;
            }
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            assert!(
                log.contains("Address already in use"),
                "PostgreSQL did not start:\n{}\n{log}",
                String::from_utf8_lossy(&started.stderr),
            );
        }
        panic!("PostgreSQL found no free port in five tries");
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `program args...`, as the `postgres` user when running as root.
    fn command(&self, program: &str, args: &[&str]) -> Command {
        if self.as_postgres_user {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--", program]).args(args);
            command
        } else {
            let mut command = Command::new(program);
            command.args(args);
            command
        }
    }

    /// A URL for `user:password` and `database` on this server, with query
    /// `parameters` (such as `sslmode=require`) when not empty.
    pub fn url(&self, user: &str, password: &str, database: &str, parameters: &str) -> String {
        let password: String = url::form_urlencoded::byte_serialize(password.as_bytes()).collect();
        let query = if parameters.is_empty() {
            String::new()
        } else {
            format!("?{parameters}")
        };
        format!(
            "postgresql://{user}:{password}@127.0.0.1:{}/{database}{query}",
            self.port
        )
    }

    /// A superuser connection to `database`.
    pub async fn superuser(&self, database: &str) -> PgConnection {
        PgConnection::connect(&self.url(
            "postgres",
            SUPERUSER_PASSWORD,
            database,
            "sslmode=disable",
        ))
        .await
        .expect("superuser connection")
    }

    /// Runs `sql` (one or more statements) as the superuser in `database`.
    pub async fn execute(&self, database: &str, sql: &str) {
        let mut connection = self.superuser(database).await;
        connection
            .execute(sqlx::raw_sql(sql))
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error}"));
        connection.close().await.unwrap();
    }

    /// A login role `user` with `password`, owning a new database of
    /// `database`'s name.
    pub async fn create_user_and_database(&self, user: &str, password: &str, database: &str) {
        let password = password.replace('\'', "''");
        self.execute(
            "postgres",
            &format!("CREATE ROLE {user} LOGIN PASSWORD '{password}'"),
        )
        .await;
        self.execute(
            "postgres",
            &format!("CREATE DATABASE {database} OWNER {user}"),
        )
        .await;
    }

    /// Sessions the operator holds open on this server (by its
    /// `application_name`).
    pub async fn operator_sessions(&self) -> i64 {
        let mut connection = self.superuser("postgres").await;
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'appstack-operator'",
        )
        .fetch_one(&mut connection)
        .await
        .unwrap();
        connection.close().await.unwrap();
        count
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .command(
                &self.bin.join("pg_ctl").to_string_lossy(),
                &[
                    "stop",
                    "--pgdata",
                    path(&self.data()),
                    "--mode",
                    "immediate",
                    "--wait",
                ],
            )
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The directory of the newest installed PostgreSQL's server binaries
/// (`APPSTACK_POSTGRES_BIN` overrides).
fn binaries() -> PathBuf {
    if let Ok(dir) = std::env::var("APPSTACK_POSTGRES_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).expect(
        "no PostgreSQL server binaries under /usr/lib/postgresql: install Debian's \
         postgresql package (.ci/run does) or set APPSTACK_POSTGRES_BIN",
    )
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
        .unwrap_or(false)
}

fn run(command: &mut Command) {
    let output = command.output().expect("run a setup command");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn path(path: &Path) -> &str {
    path.to_str().expect("UTF-8 paths")
}
