//! The fault suite's scenario: many stacks coming up (some migrating, some
//! waiting for their database, some moving to a new revision half-way)
//! while something goes wrong, and what must hold at the end:
//!
//! - every stack is Ready;
//! - for each stack and revision, exactly one migration Job was ever
//!   created, counted in the API server's audit log (not just what is left);
//! - no generated value ever changed: every version of the stacks' own
//!   Secrets a watch saw holds the value first seen;
//! - no child was ever deleted, by anyone.
//!
//! `APPSTACK_FAULTS=full` runs the full size (30 stacks, 6 operator kills);
//! by default a quick one (6 stacks, 3 kills) keeps the suite short.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use appstack::api::crd::AppStack;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use super::postgres::Postgres;
use super::{TestNamespace, apply_stack, cluster_dir, condition, example, setup};

/// How big a run is: `APPSTACK_FAULTS=full`, or quick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    Quick,
    Full,
}

impl Size {
    pub fn from_env() -> Self {
        match std::env::var("APPSTACK_FAULTS").as_deref() {
            Ok("full") => Size::Full,
            _ => Size::Quick,
        }
    }

    pub fn stacks(self) -> usize {
        match self {
            Size::Quick => 6,
            Size::Full => 30,
        }
    }

    /// How many times the operator is killed.
    pub fn kills(self) -> usize {
        match self {
            Size::Quick => 3,
            Size::Full => 6,
        }
    }

    /// How long the stacks may take to converge after the last fault.
    pub fn converge_limit(self) -> Duration {
        match self {
            Size::Quick => Duration::from_secs(300),
            Size::Full => Duration::from_secs(900),
        }
    }
}

/// Delays from a seed, printed so a run can be repeated
/// (`APPSTACK_FAULTS_SEED`).
pub struct Moments(u64);

impl Moments {
    pub fn seeded() -> Self {
        let seed = std::env::var("APPSTACK_FAULTS_SEED")
            .ok()
            .and_then(|seed| seed.parse().ok())
            .unwrap_or_else(|| {
                let mut bytes = [0u8; 8];
                getrandom::fill(&mut bytes).expect("random seed");
                u64::from_le_bytes(bytes)
            });
        println!("fault moments from APPSTACK_FAULTS_SEED={seed}");
        Self(seed.max(1))
    }

    /// A delay between `low` and `high` (xorshift; fine for timing faults).
    pub fn between(&mut self, low: Duration, high: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let spread = high.saturating_sub(low).as_millis() as u64;
        low + Duration::from_millis(self.0 % spread.max(1))
    }
}

/// Every version of the stacks' own Secrets and migration Jobs a watch saw.
#[derive(Default)]
struct Seen {
    /// Generated values by (Secret, key): each distinct value seen.
    generated: BTreeMap<(String, String), BTreeSet<Vec<u8>>>,
    /// Migration Job UIDs by Job name.
    jobs: BTreeMap<String, BTreeSet<String>>,
}

/// Keys of the stacks' own Secrets holding generated values.
const GENERATED: [(&str, &str); 4] = [
    ("-env", "SECRET_KEY"),
    ("-db", "password"),
    ("-db", "username"),
    ("-db", "DATABASE_URL"),
];

/// The stacks of one scenario, in a namespace of their own.
pub struct Rollout {
    pub client: Client,
    pub namespace: TestNamespace,
    pub names: Vec<String>,
    /// Stacks on an external database that does not answer until
    /// [`Rollout::midway`].
    external: Vec<String>,
    postgres: Postgres,
    seen: Arc<Mutex<Seen>>,
    watches: Vec<tokio::task::JoinHandle<()>>,
    /// Where the audit log stood before the first stack.
    audit_mark: u64,
    started: Instant,
}

impl Drop for Rollout {
    fn drop(&mut self) {
        for watch in &self.watches {
            watch.abort();
        }
    }
}

/// An AppStack named `name` of the scenario: the example (managed
/// database, migrations, backend, frontend), every fifth one on an external
/// database whose Secret first names a port nothing listens on.
fn stack(index: usize) -> (String, Value, bool) {
    let name = format!("s{index:02}");
    let mut stack = example(&name);
    let external = index % 5 == 4;
    if external {
        stack["spec"]["database"] = json!({"external": {"urlSecretRef": {"name": format!("{name}-url"), "key": "DATABASE_URL"}}});
    }
    (name, stack, external)
}

impl Rollout {
    /// A namespace with the operator's prerequisites and `size`'s stacks
    /// applied, watched from before the first one.
    pub async fn start(prefix: &str, size: Size) -> Self {
        let (client, namespace) = setup(prefix).await;
        let ns = namespace.name.clone();
        let postgres = Postgres::start();
        let audit_mark = super::AuditLog::open().mark();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let watches = vec![
            tokio::spawn(watch_secrets(client.clone(), ns.clone(), seen.clone())),
            tokio::spawn(watch_jobs(client.clone(), ns.clone(), seen.clone())),
        ];
        let mut names = Vec::new();
        let mut external = Vec::new();
        for index in 0..size.stacks() {
            let (name, stack, on_external) = stack(index);
            if on_external {
                // Nothing listens there: the stack waits for its database.
                let refused = format!(
                    "postgresql://{name}:pw@127.0.0.1:{}/{name}?sslmode=disable",
                    super::free_port()
                );
                put_secret(&client, &ns, &format!("{name}-url"), &refused).await;
                external.push(name.clone());
            }
            apply_stack(&client, &ns, &stack).await;
            names.push(name);
        }
        Self {
            client,
            namespace,
            names,
            external,
            postgres,
            seen,
            watches,
            audit_mark,
            started: Instant::now(),
        }
    }

    pub fn ns(&self) -> &str {
        &self.namespace.name
    }

    /// Half-way: every third managed stack moves to a new backend image (a
    /// new migration revision), and the external databases start answering.
    pub async fn midway(&self) {
        for (index, name) in self.names.iter().enumerate() {
            if index % 3 == 0 && !self.external.contains(name) {
                let mut stack = stack(index).1;
                stack["spec"]["backend"]["image"] = json!("ghcr.io/acme/shop-backend:1.5.0");
                apply_stack(&self.client, self.ns(), &stack).await;
            }
        }
        for name in &self.external {
            let password = format!("{name}-password");
            self.postgres
                .create_user_and_database(name, &password, name)
                .await;
            let url = self.postgres.url(name, &password, name, "sslmode=disable");
            put_secret(&self.client, self.ns(), &format!("{name}-url"), &url).await;
        }
        println!(
            "{:>6.1} s  midway: new revisions and reachable external databases applied",
            self.started.elapsed().as_secs_f64()
        );
    }

    /// How the stacks stand: the count of each Ready reason.
    pub async fn states(&self) -> String {
        let stacks: Api<AppStack> = Api::namespaced(self.client.clone(), self.ns());
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        for stack in stacks
            .list(&ListParams::default())
            .await
            .map(|list| list.items)
            .unwrap_or_default()
        {
            let reason = condition(&stack, "Ready")
                .map(|(status, reason)| {
                    if status == "True" {
                        "Ready".into()
                    } else {
                        reason
                    }
                })
                .unwrap_or_else(|| "Unobserved".into());
            *reasons.entry(reason).or_default() += 1;
        }
        let states: Vec<String> = reasons
            .iter()
            .map(|(reason, count)| format!("{count} {reason}"))
            .collect();
        format!(
            "{:>6.1} s  {}",
            self.started.elapsed().as_secs_f64(),
            states.join(", ")
        )
    }

    /// Waits until every stack is Ready for its current generation, up to
    /// `limit`; returns how long that took.
    pub async fn converge(&self, limit: Duration) -> Duration {
        let from = Instant::now();
        let stacks: Api<AppStack> = Api::namespaced(self.client.clone(), self.ns());
        let last = Mutex::new(String::new());
        super::eventually("every stack Ready", limit, || async {
            let items = stacks.list(&ListParams::default()).await.ok()?.items;
            let waiting: Vec<String> = items
                .iter()
                .filter(|stack| {
                    let current = stack
                        .status
                        .as_ref()
                        .map(|status| status.observed_generation)
                        == stack.metadata.generation;
                    !(current
                        && condition(stack, "Ready").is_some_and(|(status, _)| status == "True"))
                })
                .map(|stack| stack.name_any())
                .collect();
            let summary = format!("{} not Ready yet: {waiting:?}", waiting.len());
            let mut last = last.lock().unwrap();
            if *last != summary {
                println!("{:>6.1} s  {summary}", self.started.elapsed().as_secs_f64());
                *last = summary;
            }
            (items.len() == self.names.len() && waiting.is_empty()).then_some(())
        })
        .await;
        from.elapsed()
    }

    /// Checks the end state (every stack Ready is [`Rollout::converge`]'s)
    /// and prints what it counted. `operator` is the user the operator
    /// authenticates as. With `api_server_restarted`, a Job created just as
    /// the API server was killed may lack its audit entry: its count may be
    /// zero, never two.
    pub async fn verify(&self, operator: &str, api_server_restarted: bool) {
        let ns = self.ns();
        let entries = audit_entries(self.audit_mark, ns);

        // One migration Job per stack and revision, ever.
        let mut created: BTreeMap<String, usize> = BTreeMap::new();
        for entry in &entries {
            if entry["verb"] == "create"
                && entry["objectRef"]["resource"] == "jobs"
                && entry["user"]["username"] == operator
                && entry["responseStatus"]["code"]
                    .as_u64()
                    .is_some_and(|code| (200..300).contains(&code))
            {
                let name = entry["objectRef"]["name"].as_str().unwrap_or_default();
                *created.entry(name.to_string()).or_default() += 1;
            }
        }
        let seen_jobs = self.seen.lock().unwrap().jobs.clone();
        for (name, uids) in &seen_jobs {
            assert_eq!(uids.len(), 1, "Job {name} existed as {uids:?}");
            let logged = created.get(name).copied().unwrap_or(0);
            assert!(
                logged == 1 || (api_server_restarted && logged == 0),
                "Job {name} was created {logged} times"
            );
        }
        for (name, count) in &created {
            assert_eq!(*count, 1, "Job {name} was created {count} times");
        }
        let stacks: Api<AppStack> = Api::namespaced(self.client.clone(), ns);
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), ns);
        for name in &self.names {
            let stack = stacks.get(name).await.unwrap();
            let migration = stack.status.unwrap().migration.unwrap();
            assert_eq!(
                migration.applied_revision, migration.target_revision,
                "{name}"
            );
            let job = migration.job_name.unwrap();
            assert!(
                seen_jobs.contains_key(&job) || jobs.get_opt(&job).await.unwrap().is_some(),
                "{name}: the applied revision's Job {job} was created"
            );
        }

        // No generated value ever changed.
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let generated = self.seen.lock().unwrap().generated.clone();
        for ((secret, key), values) in &generated {
            assert_eq!(
                values.len(),
                1,
                "{key} of Secret {secret} took {} values",
                values.len()
            );
        }
        for name in &self.names {
            for (suffix, key) in GENERATED {
                let secret = format!("{name}{suffix}");
                if self.external.contains(name) && suffix == "-db" {
                    continue;
                }
                let now = secrets.get(&secret).await.unwrap().data.unwrap()[key]
                    .0
                    .clone();
                let first = generated.get(&(secret.clone(), key.to_string()));
                assert_eq!(
                    first.and_then(|values| values.first()),
                    Some(&now),
                    "{key} of Secret {secret} is the value first seen"
                );
            }
        }

        // No child deleted, by anyone.
        let deletions: Vec<String> = entries
            .iter()
            .filter(|entry| {
                matches!(entry["verb"].as_str(), Some("delete" | "deletecollection"))
                    && matches!(
                        entry["objectRef"]["resource"].as_str(),
                        Some(
                            "secrets"
                                | "configmaps"
                                | "services"
                                | "statefulsets"
                                | "deployments"
                                | "jobs"
                                | "persistentvolumeclaims"
                                | "servicemonitors"
                        )
                    )
            })
            .map(|entry| {
                format!(
                    "{} {} {} by {}",
                    entry["verb"],
                    entry["objectRef"]["resource"],
                    entry["objectRef"]["name"],
                    entry["user"]["username"]
                )
            })
            .collect();
        assert!(
            deletions.is_empty(),
            "children were deleted: {deletions:#?}"
        );

        let revisions = created.len().max(seen_jobs.len());
        println!(
            "{} stacks Ready; {revisions} migration Jobs, each created once ({} creations in \
             the audit log); {} generated values, none changed; no child deleted",
            self.names.len(),
            created.values().sum::<usize>(),
            generated.len()
        );
    }
}

/// Creates Secret `name` or replaces its data with `DATABASE_URL: url`.
async fn put_secret(client: &Client, namespace: &str, name: &str, url: &str) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {"DATABASE_URL": url}
    }))
    .unwrap();
    secrets
        .patch(
            name,
            &kube::api::PatchParams::apply(super::TEST_MANAGER).force(),
            &kube::api::Patch::Apply(&secret),
        )
        .await
        .unwrap_or_else(|error| panic!("apply Secret {name}: {error}"));
}

/// Mutating requests in `namespace` logged after `mark`, whole.
pub fn audit_entries(mark: u64, namespace: &str) -> Vec<Value> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(cluster_dir().join("logs/audit.log")).expect("audit log");
    file.seek(SeekFrom::Start(mark)).unwrap();
    let mut text = String::new();
    file.read_to_string(&mut text).unwrap();
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|entry| {
            entry["objectRef"]["namespace"] == namespace && entry["stage"] == "ResponseComplete"
        })
        .collect()
}

/// Records every value of the generated keys of the stacks' own Secrets.
async fn watch_secrets(client: Client, namespace: String, seen: Arc<Mutex<Seen>>) {
    let api: Api<Secret> = Api::namespaced(client, &namespace);
    let config =
        watcher::Config::default().labels("app.kubernetes.io/managed-by=appstack-operator");
    let mut events = std::pin::pin!(watcher::watcher(api, config));
    while let Some(event) = events.next().await {
        let (Ok(Event::Apply(secret)) | Ok(Event::InitApply(secret))) = event else {
            continue;
        };
        let name = secret.name_any();
        let data = secret.data.unwrap_or_default();
        let mut seen = seen.lock().unwrap();
        for (suffix, key) in GENERATED {
            if name.ends_with(suffix)
                && let Some(value) = data.get(key)
            {
                seen.generated
                    .entry((name.clone(), key.to_string()))
                    .or_default()
                    .insert(value.0.clone());
            }
        }
    }
}

/// Records the UID of every migration Job.
async fn watch_jobs(client: Client, namespace: String, seen: Arc<Mutex<Seen>>) {
    let api: Api<Job> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().labels("app.kubernetes.io/component=migration");
    let mut events = std::pin::pin!(watcher::watcher(api, config));
    while let Some(event) = events.next().await {
        let (Ok(Event::Apply(job)) | Ok(Event::InitApply(job))) = event else {
            continue;
        };
        seen.lock()
            .unwrap()
            .jobs
            .entry(job.name_any())
            .or_default()
            .insert(job.uid().unwrap_or_default());
    }
}
