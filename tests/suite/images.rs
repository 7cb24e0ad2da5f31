//! The test images `scripts/images.sh` builds from Debian's packages. Each
//! archive is a well-formed OCI image that names itself and runs as a
//! non-root user; and each image works the way a restricted pod runs it: as
//! a UID the image has never heard of, on a read-only root filesystem with
//! only its volumes writable, as PID 1 of a PID namespace of its own. The
//! database image initializes from the official image's variables and
//! serves with a password; the seed backend's Alembic migrations upgrade,
//! fail with PostgreSQL's own error and downgrade against a real server,
//! and its API is healthy exactly while the database answers; the frontend
//! serves the API URL it was given; pause and the operator start and stop.
//!
//! They need root (chroot, mount and PID namespaces) and the images, which
//! take minutes to build the first time, so every test here is ignored by
//! default: `scripts/test.sh` builds the images and runs them as a phase of
//! their own. By hand:
//!
//!     scripts/images.sh >/dev/null
//!     cargo test --test suite -- --ignored images::

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection};

use crate::common::postgres::Postgres;
use crate::common::{eventually, free_port, http_get};

/// How long a process in an image may take to start or stop on a loaded
/// machine; only a broken image gets near it.
const LIMIT: Duration = Duration::from_secs(90);

/// A UID and GID no image knows, as OpenShift assigns them.
const ARBITRARY_USER: &str = "1000680000:1000680000";

const REGISTRY: &str = "appstack.test";

// ---------------------------------------------------------------------------
// Archives

/// The archive of image `reference` (`appstack.test/pause:1`) that
/// scripts/images.sh last built: the one file of that image in its cache.
/// The tests build nothing themselves (scripts/test.sh runs the script
/// first), so a build's minutes never count against a test's limits.
fn archive(reference: &str) -> PathBuf {
    let (name, tag) = reference
        .strip_prefix(&format!("{REGISTRY}/"))
        .and_then(|rest| rest.split_once(':'))
        .unwrap_or_else(|| panic!("{reference}: not an image of scripts/images.sh"));
    let cache = std::env::var_os("APPSTACK_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/appstack-operator")
        })
        .join("images");
    let prefix = format!("{name}-{tag}.");
    let found: Vec<PathBuf> = std::fs::read_dir(&cache)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            let file = path.file_name().unwrap().to_string_lossy();
            file.strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix(".tar"))
                .is_some_and(|digest| digest.len() == 16 && !digest.contains('.'))
        })
        .collect();
    let [archive] = found.as_slice() else {
        panic!(
            "{} archives of {reference} in {}: run scripts/images.sh first",
            found.len(),
            cache.display()
        );
    };
    let index = command_output("tar", &["-xOf", path(archive), "index.json"]);
    let index: Value = serde_json::from_slice(&index).unwrap();
    assert_eq!(
        index["manifests"][0]["annotations"]["io.containerd.image.name"],
        reference,
        "{}",
        archive.display()
    );
    archive.clone()
}

/// An image archive unpacked into a directory of its own: the OCI layout's
/// index, manifest and config, and its blobs. Removed when dropped.
struct Image {
    layout: TempDir,
    index: Value,
    manifest: Value,
    config: Value,
}

impl Image {
    fn open(reference: &str) -> Self {
        let archive = archive(reference);
        let layout = TempDir::new("layout");
        command_output("tar", &["-xf", path(&archive), "-C", path(&layout.0)]);
        let read = |relative: &str| -> Value {
            let text = std::fs::read(layout.0.join(relative))
                .unwrap_or_else(|error| panic!("{reference}: {relative}: {error}"));
            serde_json::from_slice(&text).unwrap()
        };
        let index = read("index.json");
        let manifest = read(&blob_path(&index["manifests"][0]["digest"]));
        let config = read(&blob_path(&manifest["config"]["digest"]));
        Self {
            layout,
            index,
            manifest,
            config,
        }
    }

    fn blob(&self, digest: &Value) -> PathBuf {
        self.layout.0.join(blob_path(digest))
    }

    fn layers(&self) -> Vec<PathBuf> {
        self.manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|layer| self.blob(&layer["digest"]))
            .collect()
    }

    /// The image config's `config` object: user, entrypoint, env...
    fn settings(&self) -> &Value {
        &self.config["config"]
    }

    /// The root filesystem: the layers unpacked in order.
    fn unpack(&self) -> Rootfs {
        let dir = TempDir::new("rootfs");
        for layer in self.layers() {
            command_output(
                "tar",
                &[
                    "-xzf",
                    path(&layer),
                    "-C",
                    path(&dir.0),
                    "--same-owner",
                    "--preserve-permissions",
                ],
            );
        }
        Rootfs {
            dir,
            settings: self.settings().clone(),
        }
    }
}

fn blob_path(digest: &Value) -> String {
    let digest = digest.as_str().expect("a digest");
    format!(
        "blobs/sha256/{}",
        digest.strip_prefix("sha256:").expect("a sha256 digest")
    )
}

// ---------------------------------------------------------------------------
// Running an image as a restricted pod would

/// A volume, as a pod mounts one: an emptyDir (a fresh tmpfs) or a host
/// directory (a PersistentVolume).
enum Volume<'a> {
    Empty(&'a str),
    Host(&'a Path, &'a str),
}

/// An unpacked image, ready to run.
struct Rootfs {
    dir: TempDir,
    settings: Value,
}

impl Rootfs {
    /// `command` (the image's entrypoint and cmd when `None`) run as `user`
    /// with the image's env plus `env`, in its working directory, on the
    /// root filesystem mounted read-only, with `volumes` the only writable
    /// paths, as PID 1 of a new PID namespace. The host's network is
    /// shared: servers listen on ports the test picks.
    fn command(
        &self,
        user: &str,
        env: &[(&str, &str)],
        command: Option<&[&str]>,
        volumes: &[Volume<'_>],
    ) -> tokio::process::Command {
        let root = &self.dir.0;
        let words = |key: &str| -> Vec<String> {
            self.settings[key]
                .as_array()
                .map(|words| {
                    words
                        .iter()
                        .map(|word| word.as_str().unwrap().to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut argv: Vec<String> = match command {
            Some(command) => command.iter().map(|word| word.to_string()).collect(),
            None => [words("Entrypoint"), words("Cmd")].concat(),
        };
        if let Some(workdir) = self.settings["WorkingDir"].as_str() {
            argv = [
                vec!["/usr/bin/env".into(), format!("--chdir={workdir}")],
                argv,
            ]
            .concat();
        }
        // Mount points are made before the root turns read-only, as the
        // runtime makes them in the container's own layer.
        let mut script = format!(
            "set -e\nmkdir -p '{root}/proc' '{root}/dev'\n",
            root = root.display()
        );
        let mut mounts = String::new();
        for volume in volumes {
            let (source, target) = match volume {
                Volume::Empty(target) => (None, *target),
                Volume::Host(source, target) => (Some(*source), *target),
            };
            assert!(
                !target.starts_with("/var/run"),
                "{target}: /var/run links to /run; name the real path"
            );
            let mount_point = root.join(target.trim_start_matches('/'));
            script.push_str(&format!("mkdir -p '{}'\n", mount_point.display()));
            mounts.push_str(&match source {
                None => format!(
                    "mount -t tmpfs -o mode=1777 tmpfs '{}'\n",
                    mount_point.display()
                ),
                Some(source) => format!(
                    "mount --bind '{}' '{}'\n",
                    source.display(),
                    mount_point.display()
                ),
            });
        }
        let root_text = root.display();
        script.push_str(&format!(
            "mount --bind '{root_text}' '{root_text}'\n\
             mount -o remount,bind,ro '{root_text}'\n\
             mount -t proc proc '{root_text}/proc'\n\
             mount --rbind /dev '{root_text}/dev'\n\
             mount -t tmpfs tmpfs '{root_text}/dev/shm'\n\
             {mounts}\
             exec /usr/sbin/chroot --userspec=\"$0\" '{root_text}' \"$@\"\n"
        ));
        let mut process = tokio::process::Command::new("/usr/bin/unshare");
        process
            .args(["--mount", "--pid", "--fork", "--", "/bin/sh", "-c"])
            .arg(script)
            .arg(user)
            .args(&argv)
            .env_clear()
            .kill_on_drop(true);
        for variable in self.settings["Env"].as_array().into_iter().flatten() {
            let (name, value) = variable.as_str().unwrap().split_once('=').unwrap();
            process.env(name, value);
        }
        process.envs(env.iter().copied());
        process
    }

    /// Runs a command to completion; its output.
    async fn run(&self, user: &str, env: &[(&str, &str)], command: &[&str]) -> Output {
        let output = self
            .command(user, env, Some(command), &[])
            .stdin(Stdio::null())
            .output();
        tokio::time::timeout(LIMIT, output)
            .await
            .unwrap_or_else(|_| panic!("{command:?} still running after {LIMIT:?}"))
            .expect("run unshare")
    }

    /// Starts a long-running process, its output going to a log file.
    fn start(
        &self,
        user: &str,
        env: &[(&str, &str)],
        command: Option<&[&str]>,
        volumes: &[Volume<'_>],
    ) -> Running {
        let log_path = self.dir.0.with_extension("log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = self
            .command(user, env, command, volumes)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start unshare");
        Running {
            child,
            log: log_path,
        }
    }
}

/// A process running in an image. Killed when dropped.
struct Running {
    child: tokio::process::Child,
    log: PathBuf,
}

impl Running {
    /// The process that is PID 1 in its namespace: the only child of
    /// `unshare --fork`.
    fn init_pid(&self) -> Option<String> {
        let pid = self.child.id()?;
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
        children.split_whitespace().next().map(String::from)
    }

    fn signal(&self, signal: &str) {
        let pid = self.init_pid().expect("the process is running");
        command_output("kill", &["-s", signal, &pid]);
    }

    /// Waits for the process to exit; its exit code.
    async fn exit_code(&mut self) -> Option<i32> {
        let status = tokio::time::timeout(LIMIT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("still running {LIMIT:?} later:\n{}", self.log()))
            .unwrap();
        status.code()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log has a line containing `text`.
    async fn logged(&self, text: &str) {
        let log = self.log.clone();
        eventually(&format!("{text:?} in the log"), LIMIT, || {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            async move { log.contains(text).then_some(()) }
        })
        .await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // PID 1 gone, the kernel ends the rest of its namespace.
        if let Some(pid) = self.init_pid() {
            let _ = std::process::Command::new("kill")
                .args(["-s", "KILL", &pid])
                .output();
        }
        let _ = self.child.start_kill();
    }
}

// ---------------------------------------------------------------------------
// Small helpers

/// A directory under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "appstack-images-{}-{what}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_file(self.0.with_extension("log"));
    }
}

fn path(path: &Path) -> &str {
    path.to_str().expect("UTF-8 paths")
}

fn command_output(program: &str, args: &[&str]) -> Vec<u8> {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("{program}: {error}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// An HTTP/1.0 request with a JSON body: status and body.
async fn http_post_json(port: u16, path: &str, body: &Value) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let (_, body) = response.split_once("\r\n\r\n")?;
    Some((status, body.to_string()))
}

/// Waits until `path` on `port` answers with `status`; the body.
async fn answers(port: u16, path: &str, status: u16) -> String {
    eventually(
        &format!("{path} answering {status}"),
        LIMIT,
        || async move {
            http_get(port, path)
                .await
                .and_then(|(got, body)| (got == status).then_some(body))
        },
    )
    .await
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|error| panic!("{error}: {body}"))
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

// ---------------------------------------------------------------------------
// The archives

#[tokio::test]
#[ignore = "needs root and the images of scripts/images.sh: scripts/test.sh runs it"]
async fn every_archive_is_an_oci_image_that_names_itself_and_runs_as_non_root() {
    let images = [
        ("pause:1", vec!["/usr/bin/catatonit", "-P"], vec![], None),
        (
            "postgres:15",
            vec!["docker-entrypoint.sh"],
            vec!["postgres"],
            None,
        ),
        (
            "seed-backend:1",
            vec![],
            vec!["uvicorn", "main:app", "--host", "0.0.0.0", "--port", "8000"],
            Some("/app"),
        ),
        (
            "seed-backend:2",
            vec![],
            vec!["uvicorn", "main:app", "--host", "0.0.0.0", "--port", "8000"],
            Some("/app"),
        ),
        (
            "seed-backend:broken",
            vec![],
            vec!["uvicorn", "main:app", "--host", "0.0.0.0", "--port", "8000"],
            Some("/app"),
        ),
        (
            "seed-backend:2-contract",
            vec![],
            vec!["uvicorn", "main:app", "--host", "0.0.0.0", "--port", "8000"],
            Some("/app"),
        ),
        (
            "seed-frontend:1",
            vec![],
            vec!["python3", "/app/server.py"],
            Some("/app"),
        ),
        (
            "operator:dev",
            vec!["/usr/local/bin/appstack"],
            vec!["run"],
            None,
        ),
    ];
    for (name, entrypoint, cmd, workdir) in images {
        let reference = format!("{REGISTRY}/{name}");
        let image = Image::open(&reference);
        let descriptor = &image.index["manifests"][0];
        assert_eq!(
            descriptor["annotations"]["org.opencontainers.image.ref.name"],
            json!(name.split_once(':').unwrap().1),
            "{reference}"
        );
        assert_eq!(descriptor["platform"]["os"], "linux", "{reference}");
        assert_eq!(
            image.manifest["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        let settings = image.settings();
        // A numeric, non-root user: the kubelet can check runAsNonRoot
        // against it without the pod naming a UID.
        let user = settings["User"].as_str().unwrap();
        let ids: Vec<u32> = user
            .split(':')
            .map(|id| {
                id.parse()
                    .unwrap_or_else(|_| panic!("{reference}: user {user}"))
            })
            .collect();
        assert_eq!(ids.len(), 2, "{reference}: user and group");
        assert!(ids.iter().all(|&id| id > 0), "{reference}: runs as {user}");
        let strings = |value: &Value| -> Vec<String> {
            value
                .as_array()
                .map(|words| {
                    words
                        .iter()
                        .map(|word| word.as_str().unwrap().to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(strings(&settings["Entrypoint"]), entrypoint, "{reference}");
        assert_eq!(strings(&settings["Cmd"]), cmd, "{reference}");
        assert_eq!(settings["WorkingDir"].as_str(), workdir, "{reference}");

        // What containerd checks on import: each blob matches its digest,
        // each layer's uncompressed content its diff ID.
        let config_bytes = std::fs::read(image.blob(&image.manifest["config"]["digest"])).unwrap();
        assert_eq!(
            format!("sha256:{}", sha256_hex(&config_bytes)),
            image.manifest["config"]["digest"],
            "{reference}: config digest"
        );
        let diff_ids = image.config["rootfs"]["diff_ids"].as_array().unwrap();
        assert_eq!(diff_ids.len(), image.layers().len(), "{reference}");
        let mut size = 0;
        for (layer, diff_id) in image.layers().iter().zip(diff_ids) {
            let compressed = std::fs::read(layer).unwrap();
            size += compressed.len();
            assert_eq!(
                layer.file_name().unwrap().to_str().unwrap(),
                sha256_hex(&compressed),
                "{reference}: layer digest"
            );
            let uncompressed = command_output("gzip", &["-dc", path(layer)]);
            assert_eq!(
                format!("sha256:{}", sha256_hex(&uncompressed)),
                *diff_id,
                "{reference}: diff ID"
            );
            // No package lists, manuals or documentation beyond licences.
            let listing = String::from_utf8(command_output("tar", &["-tzf", path(layer)])).unwrap();
            for entry in listing.lines() {
                let stray = entry.starts_with("var/lib/apt/lists/") && !entry.ends_with('/')
                    || entry.starts_with("usr/share/man/") && !entry.ends_with('/')
                    || entry.starts_with("usr/share/doc/")
                        && !entry.ends_with('/')
                        && !entry.ends_with("/copyright");
                assert!(!stray, "{reference} ships {entry}");
            }
        }
        println!(
            "{reference}: {} layer(s), {:.1} MiB compressed",
            diff_ids.len(),
            size as f64 / 1048576.0
        );
    }
}

// ---------------------------------------------------------------------------
// pause

#[tokio::test]
#[ignore = "needs root and the images of scripts/images.sh: scripts/test.sh runs it"]
async fn pause_runs_as_any_user_and_exits_at_once_on_sigterm_or_sigint() {
    let rootfs = Image::open("appstack.test/pause:1").unpack();
    for signal in ["TERM", "INT"] {
        let mut pause = rootfs.start(ARBITRARY_USER, &[], None, &[]);
        // PID 1 ignores the signals it has no handler for: catatonit is
        // ready once it blocks them to read them itself. The shell that
        // execs it blocks every signal too while it waits for a child it
        // vforked (a mount), and would drop the signal: check the name.
        eventually("catatonit waiting for signals", LIMIT, || {
            let status = pause
                .init_pid()
                .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok());
            async move {
                let status = status?;
                let name = status
                    .lines()
                    .find_map(|line| line.strip_prefix("Name:"))?
                    .trim();
                if name != "catatonit" {
                    return None;
                }
                let blocked = status
                    .lines()
                    .find_map(|line| line.strip_prefix("SigBlk:"))
                    .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())?;
                // Bits 14 and 1: SIGTERM (15) and SIGINT (2).
                (blocked & (1 << 14) != 0 && blocked & (1 << 1) != 0).then_some(())
            }
        })
        .await;
        pause.signal(signal);
        assert_eq!(
            pause.exit_code().await,
            Some(0),
            "SIG{signal}: {}",
            pause.log()
        );
    }
}

// ---------------------------------------------------------------------------
// postgres

#[tokio::test]
#[ignore = "needs root and the images of scripts/images.sh: scripts/test.sh runs it"]
async fn postgres_initializes_from_the_official_variables_and_serves_with_a_password() {
    let rootfs = Image::open("appstack.test/postgres:15").unpack();
    // The volume as a local PersistentVolume gives it: a directory the pod
    // may write to, owned by someone else.
    let volume = TempDir::new("pgvolume");
    command_output("chmod", &["0777", path(&volume.0)]);
    let port = free_port().to_string();
    let env = [
        ("POSTGRES_USER", "shop"),
        ("POSTGRES_PASSWORD", "pass word'\"$1"),
        ("POSTGRES_DB", "shopdb"),
        ("PGDATA", "/var/lib/postgresql/data/pgdata"),
    ];
    let volumes = [
        Volume::Host(&volume.0, "/var/lib/postgresql/data"),
        Volume::Empty("/run/postgresql"),
        Volume::Empty("/tmp"),
    ];
    let server_command = ["docker-entrypoint.sh", "postgres", "-p", port.as_str()];
    let mut server = rootfs.start(ARBITRARY_USER, &env, Some(&server_command[..]), &volumes);
    server.logged("listening on IPv4 address").await;
    assert!(
        server
            .log()
            .contains("database shopdb of user shop initialized"),
        "{}",
        server.log()
    );

    let url = |password: &str| {
        let password =
            percent_encoding::utf8_percent_encode(password, percent_encoding::NON_ALPHANUMERIC);
        format!("postgresql://shop:{password}@127.0.0.1:{port}/shopdb?sslmode=disable")
    };
    let mut connection = eventually("a password connection over TCP", LIMIT, || {
        let url = url("pass word'\"$1");
        async move { PgConnection::connect(&url).await.ok() }
    })
    .await;
    let (user, database): (String, String) =
        sqlx::query_as("SELECT current_user::text, current_database()::text")
            .fetch_one(&mut connection)
            .await
            .unwrap();
    assert_eq!((user.as_str(), database.as_str()), ("shop", "shopdb"));
    sqlx::raw_sql("CREATE TABLE kept (value text); INSERT INTO kept VALUES ('still here')")
        .execute(&mut connection)
        .await
        .unwrap();
    connection.close().await.unwrap();
    let refused = PgConnection::connect(&url("not the password"))
        .await
        .expect_err("a wrong password is refused over TCP");
    assert!(
        refused
            .to_string()
            .contains("password authentication failed"),
        "{refused}"
    );

    // The operator's readiness probe, run beside the server.
    let probe_script =
        format!("exec pg_isready -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\" -h 127.0.0.1 -p {port}");
    let probe = rootfs
        .run(ARBITRARY_USER, &env, &["sh", "-c", probe_script.as_str()])
        .await;
    assert!(probe.status.success(), "{}", text(&probe));

    // The image's stop signal is a fast shutdown; the next start finds the
    // data and initializes nothing.
    assert_eq!(image_stop_signal("appstack.test/postgres:15"), "SIGINT");
    server.signal("INT");
    assert_eq!(server.exit_code().await, Some(0), "{}", server.log());
    drop(server);
    let server = rootfs.start(ARBITRARY_USER, &env, Some(&server_command[..]), &volumes);
    server.logged("listening on IPv4 address").await;
    assert!(!server.log().contains("initialized"), "{}", server.log());
    let mut connection = eventually("the restarted server", LIMIT, || {
        let url = url("pass word'\"$1");
        async move { PgConnection::connect(&url).await.ok() }
    })
    .await;
    let kept: String = sqlx::query_scalar("SELECT value FROM kept")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(kept, "still here");
}

fn image_stop_signal(reference: &str) -> String {
    Image::open(reference).settings()["StopSignal"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
#[ignore = "needs root and the images of scripts/images.sh: scripts/test.sh runs it"]
async fn postgres_says_what_is_missing() {
    let rootfs = Image::open("appstack.test/postgres:15").unpack();
    let volume = TempDir::new("pgvolume");
    command_output("chmod", &["0777", path(&volume.0)]);
    let volumes = [
        Volume::Host(&volume.0, "/var/lib/postgresql/data"),
        Volume::Empty("/run/postgresql"),
        Volume::Empty("/tmp"),
    ];
    let mut server = rootfs.start(
        ARBITRARY_USER,
        &[("PGDATA", "/var/lib/postgresql/data/pgdata")],
        None,
        &volumes,
    );
    assert_eq!(server.exit_code().await, Some(1));
    assert!(
        server.log().contains("POSTGRES_PASSWORD is not set"),
        "{}",
        server.log()
    );

    // The volume's root itself as PGDATA: not the server's to take.
    let mut server = rootfs.start(
        ARBITRARY_USER,
        &[("POSTGRES_PASSWORD", "secret")],
        None,
        &volumes,
    );
    assert_eq!(server.exit_code().await, Some(1));
    assert!(
        server
            .log()
            .contains("point PGDATA at a directory inside the volume"),
        "{}",
        server.log()
    );
}

// ---------------------------------------------------------------------------
// seed-backend

const APP_PASSWORD: &str = "seed-password";

/// A fresh database `seed` owned by user `seed` on `server`, and the URL the
/// app reaches it by.
async fn seed_database(server: &Postgres) -> String {
    server
        .create_user_and_database("seed", APP_PASSWORD, "seed")
        .await;
    server.url("seed", APP_PASSWORD, "seed", "")
}

async fn alembic(rootfs: &Rootfs, url: &str, args: &[&str]) -> Output {
    let command = [&["alembic"][..], args].concat();
    rootfs
        .run(ARBITRARY_USER, &[("DATABASE_URL", url)], &command)
        .await
}

async fn schema_revision(server: &Postgres) -> Option<String> {
    let mut connection = server.superuser("seed").await;
    sqlx::query_scalar("SELECT version_num::text FROM alembic_version")
        .fetch_optional(&mut connection)
        .await
        .unwrap()
}

async fn item_columns(server: &Postgres) -> Vec<String> {
    let mut connection = server.superuser("seed").await;
    sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_name = 'items' ORDER BY ordinal_position",
    )
    .fetch_all(&mut connection)
    .await
    .unwrap()
}

#[tokio::test]
#[ignore = "needs root and the images of scripts/images.sh: scripts/test.sh runs it"]
async fn seed_backend_migrations_upgrade_fail_and_downgrade_against_postgres() {
    let server = Postgres::start();
    let url = seed_database(&server).await;
    let one = Image::open("appstack.test/seed-backend:1").unpack();
    let two = Image::open("appstack.test/seed-backend:2").unpack();
    let broken = Image::open("appstack.test/seed-backend:broken").unpack();
    let contract = Image::open("appstack.test/seed-backend:2-contract").unpack();

    let upgraded = alembic(&one, &url, &["upgrade", "head"]).await;
    assert!(upgraded.status.success(), "{}", text(&upgraded));
    assert!(
        text(&upgraded).contains("Running upgrade  -> 0001"),
        "{}",
        text(&upgraded)
    );
    assert_eq!(schema_revision(&server).await.as_deref(), Some("0001"));
    assert_eq!(item_columns(&server).await, ["id", "name", "note"]);
    server
        .execute(
            "seed",
            "INSERT INTO items (name, note) VALUES ('first', 'from release 1')",
        )
        .await;

    // :1 -> :2: the new column, the old notes carried into it.
    let upgraded = alembic(&two, &url, &["upgrade", "head"]).await;
    assert!(upgraded.status.success(), "{}", text(&upgraded));
    assert!(
        text(&upgraded).contains("Running upgrade 0001 -> 0002"),
        "{}",
        text(&upgraded)
    );
    assert_eq!(schema_revision(&server).await.as_deref(), Some("0002"));
    assert_eq!(
        item_columns(&server).await,
        ["id", "name", "note", "description"]
    );
    let mut connection = server.superuser("seed").await;
    let description: String =
        sqlx::query_scalar("SELECT description FROM items WHERE name = 'first'")
            .fetch_one(&mut connection)
            .await
            .unwrap();
    assert_eq!(description, "from release 1");
    let again = alembic(&two, &url, &["upgrade", "head"]).await;
    assert!(
        again.status.success(),
        "at head, an upgrade does nothing: {}",
        text(&again)
    );

    // :broken fails with PostgreSQL's own error and leaves the schema at 0002.
    let failed = alembic(&broken, &url, &["upgrade", "head"]).await;
    assert!(!failed.status.success(), "{}", text(&failed));
    let output = text(&failed);
    assert!(output.contains("Running upgrade 0002 -> 0003"), "{output}");
    assert!(
        output.contains("psycopg2.errors.UndefinedColumn"),
        "{output}"
    );
    assert!(
        output.contains("column \"owner_id\" does not exist"),
        "{output}"
    );
    assert_eq!(schema_revision(&server).await.as_deref(), Some("0002"));
    assert_eq!(
        item_columns(&server).await,
        ["id", "name", "note", "description"]
    );

    // :2 downgrades to revision 1, and release 1 reads its table again.
    let downgraded = alembic(&two, &url, &["downgrade", "0001"]).await;
    assert!(downgraded.status.success(), "{}", text(&downgraded));
    assert!(
        text(&downgraded).contains("Running downgrade 0002 -> 0001"),
        "{}",
        text(&downgraded)
    );
    assert_eq!(schema_revision(&server).await.as_deref(), Some("0001"));
    assert_eq!(item_columns(&server).await, ["id", "name", "note"]);

    // :2-contract: expand before the rollout, contract after it, and back.
    let expanded = alembic(&contract, &url, &["upgrade", "0002"]).await;
    assert!(expanded.status.success(), "{}", text(&expanded));
    let contracted = alembic(&contract, &url, &["upgrade", "head"]).await;
    assert!(contracted.status.success(), "{}", text(&contracted));
    assert_eq!(schema_revision(&server).await.as_deref(), Some("0003c"));
    assert_eq!(item_columns(&server).await, ["id", "name", "description"]);
    let restored = alembic(&contract, &url, &["downgrade", "0002"]).await;
    assert!(restored.status.success(), "{}", text(&restored));
    assert_eq!(schema_revision(&server).await.as_deref(), Some("0002"));
    assert_eq!(
        item_columns(&server).await,
        ["id", "name", "description", "note"]
    );
    let note: Option<String> = sqlx::query_scalar("SELECT note FROM items WHERE name = 'first'")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(note.as_deref(), Some("from release 1"));
}

#[tokio::test]
#[ignore = "needs root and the images of scripts/images.sh: scripts/test.sh runs it"]
async fn seed_backend_serves_its_release_while_the_database_answers() {
    let server = Postgres::start();
    let url = seed_database(&server).await;
    let one = Image::open("appstack.test/seed-backend:1").unpack();
    let two = Image::open("appstack.test/seed-backend:2").unpack();
    let migrated = alembic(&one, &url, &["upgrade", "head"]).await;
    assert!(migrated.status.success(), "{}", text(&migrated));

    let port = free_port();
    let port_text = port.to_string();
    let serve = [
        "uvicorn",
        "main:app",
        "--host",
        "127.0.0.1",
        "--port",
        port_text.as_str(),
    ];
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("SECRET_KEY", "a-secret-key"),
        ("DB_POOL_SIZE", "3"),
        ("DB_POOL_TIMEOUT", "5"),
    ];
    let mut backend = one.start(ARBITRARY_USER, &env, Some(&serve[..]), &[]);
    assert_eq!(
        json(&answers(port, "/health", 200).await),
        json!({"status": "ok"})
    );
    let version = json(&answers(port, "/api/version", 200).await);
    assert_eq!(version["version"], "1");
    assert_eq!(version["schema"], "0001");
    assert_eq!(
        version["secretKeySha256"],
        json!(&sha256_hex(b"a-secret-key")[..16])
    );
    let (status, created) = http_post_json(
        port,
        "/api/items",
        &json!({"name": "lamp", "note": "by the door"}),
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        json(&answers(port, "/api/items", 200).await),
        json!([{"id": 1, "name": "lamp", "note": "by the door"}])
    );
    let metrics = answers(port, "/metrics", 200).await;
    assert!(
        metrics
            .contains("seed_http_requests_total{method=\"GET\",path=\"/health\",status=\"200\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("seed_backend_info{schema=\"0001\",version=\"1\"} 1.0"),
        "{metrics}"
    );

    // SIGTERM (what the kubelet sends, to PID 1): uvicorn stops and exits 0.
    backend.signal("TERM");
    assert_eq!(backend.exit_code().await, Some(0), "{}", backend.log());
    assert!(
        backend.log().contains("Finished server process"),
        "{}",
        backend.log()
    );
    drop(backend);

    // Release 2 reads the column its revision adds: against revision 1 it
    // cannot list the items; once migrated, it can.
    let mut backend = two.start(ARBITRARY_USER, &env, Some(&serve[..]), &[]);
    answers(port, "/health", 200).await;
    let (status, _) = http_get(port, "/api/items").await.unwrap();
    assert_eq!(status, 500, "release 2 on revision 1's schema");
    let migrated = alembic(&two, &url, &["upgrade", "head"]).await;
    assert!(migrated.status.success(), "{}", text(&migrated));
    assert_eq!(
        json(&answers(port, "/api/items", 200).await),
        json!([{"id": 1, "name": "lamp", "description": "by the door"}])
    );

    // The database goes away: /health says so.
    drop(server);
    let body = answers(port, "/health", 503).await;
    assert!(body.contains("the database does not answer"), "{body}");
    assert!(backend.init_pid().is_some(), "the backend keeps running");
    backend.signal("TERM");
    assert_eq!(backend.exit_code().await, Some(0), "{}", backend.log());
}

#[tokio::test]
#[ignore = "needs root and the images of scripts/images.sh: scripts/test.sh runs it"]
async fn seed_backend_refuses_to_start_without_its_settings() {
    let rootfs = Image::open("appstack.test/seed-backend:1").unpack();
    let url = "postgresql://seed:password@127.0.0.1:1/seed";
    for (env, missing) in [
        (vec![("SECRET_KEY", "key")], "DATABASE_URL"),
        (vec![("DATABASE_URL", url)], "SECRET_KEY"),
    ] {
        let mut backend = rootfs.start(ARBITRARY_USER, &env, None, &[]);
        assert_eq!(backend.exit_code().await, Some(1), "{}", backend.log());
        assert!(
            backend
                .log()
                .contains(&format!("seed-backend: {missing} is not set")),
            "{}",
            backend.log()
        );
    }
    let migration = rootfs
        .run(ARBITRARY_USER, &[], &["alembic", "upgrade", "head"])
        .await;
    assert!(!migration.status.success());
    assert!(
        text(&migration).contains("seed-backend: DATABASE_URL is not set"),
        "{}",
        text(&migration)
    );
}

// ---------------------------------------------------------------------------
// seed-frontend

#[tokio::test]
#[ignore = "needs root and the images of scripts/images.sh: scripts/test.sh runs it"]
async fn seed_frontend_serves_the_api_url_it_was_given() {
    let rootfs = Image::open("appstack.test/seed-frontend:1").unpack();
    let port = free_port();
    let port_text = port.to_string();
    let api_url = "http://shop-backend.prod.svc:8000";
    let mut frontend = rootfs.start(
        ARBITRARY_USER,
        &[("REACT_APP_API_URL", api_url), ("PORT", port_text.as_str())],
        None,
        &[],
    );
    assert_eq!(
        json(&answers(port, "/config.json", 200).await),
        json!({"apiUrl": api_url})
    );
    let page = answers(port, "/", 200).await;
    assert!(
        page.contains(&format!("<code id=\"api-url\">{api_url}</code>")),
        "{page}"
    );
    assert!(
        page.contains(&format!("\"apiUrl\": \"{api_url}\"")),
        "{page}"
    );
    answers(port, "/health", 200).await;
    // As PID 1 a process ignores SIGTERM unless it handles it: this one does.
    frontend.signal("TERM");
    assert_eq!(frontend.exit_code().await, Some(0), "{}", frontend.log());
}

// ---------------------------------------------------------------------------
// operator

#[tokio::test]
#[ignore = "needs root and the images of scripts/images.sh: scripts/test.sh runs it"]
async fn operator_image_runs_the_release_binary_without_a_shell() {
    let image = Image::open("appstack.test/operator:dev");
    let user = image.settings()["User"].as_str().unwrap().to_string();
    assert_eq!(user, "65532:65532", "the chart's runAsUser");
    let rootfs = image.unpack();
    assert!(!rootfs.dir.0.join("bin/sh").exists(), "no shell");
    assert!(
        rootfs
            .dir
            .0
            .join("etc/ssl/certs/ca-certificates.crt")
            .is_file(),
        "CA certificates"
    );
    let crd = rootfs
        .run(&user, &[], &["/usr/local/bin/appstack", "crd"])
        .await;
    assert!(crd.status.success(), "{}", text(&crd));
    assert!(
        String::from_utf8_lossy(&crd.stdout).contains("name: appstacks.appstack.dev"),
        "{}",
        text(&crd)
    );
    let arbitrary = rootfs
        .run(ARBITRARY_USER, &[], &["/usr/local/bin/appstack", "--help"])
        .await;
    assert!(arbitrary.status.success(), "{}", text(&arbitrary));
}
