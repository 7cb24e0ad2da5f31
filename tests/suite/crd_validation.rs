//! The AppStack CRD on a real API server: it installs, accepts the design's
//! example, and rejects invalid stacks with a message naming the field.

use appstack::api::crd::AppStack;
use std::collections::BTreeSet;

use crate::common::{TEST_MANAGER, TestNamespace, client, install_crd, kubectl};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

const EXAMPLE: &str = include_str!("../../deploy/examples/shop.yaml");

fn example() -> Value {
    serde_yaml::from_str(EXAMPLE).unwrap()
}

/// Applies a stack the way `kubectl apply --server-side` does, with strict
/// field validation (kubectl's default), returning the API server's message.
async fn apply(client: &Client, namespace: &str, stack: &Value) -> Result<AppStack, String> {
    let api: Api<AppStack> = Api::namespaced(client.clone(), namespace);
    let name = stack["metadata"]["name"].as_str().unwrap();
    api.patch(
        name,
        &PatchParams::apply(TEST_MANAGER).validation_strict(),
        &Patch::Apply(stack),
    )
    .await
    .map_err(|error| match error {
        kube::Error::Api(status) => status.message,
        other => panic!("expected a rejection by the API server, got {other}"),
    })
}

/// Changes `path` (dot separated, numeric segments index arrays) in `value`.
fn change(value: &mut Value, path: &str, change: &Change) {
    match change {
        To(new) => set(value, path, new.clone()),
        Removed => set(value, path, Value::Null),
        Null => {
            set(value, path, json!(0));
            set_null(value, path);
        }
    }
}

fn set_null(value: &mut Value, path: &str) {
    let mut target = value;
    for segment in path.split('.') {
        target = match segment.parse::<usize>() {
            Ok(index) => &mut target[index],
            Err(_) => &mut target[segment],
        };
    }
    *target = Value::Null;
}

/// Sets `path` (dot separated, numeric segments index arrays) in `value`;
/// `null` removes the field.
fn set(value: &mut Value, path: &str, new: Value) {
    let mut target = value;
    let segments: Vec<&str> = path.split('.').collect();
    for segment in &segments[..segments.len() - 1] {
        target = match segment.parse::<usize>() {
            Ok(index) => &mut target[index],
            Err(_) => &mut target[*segment],
        };
    }
    let last = segments[segments.len() - 1];
    match new {
        Value::Null => {
            target.as_object_mut().unwrap().remove(last);
        }
        _ => target[last] = new,
    }
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn crd_installs_and_the_design_example_is_accepted_unobserved() {
    let client = client().await;
    let crd = install_crd(&client).await;
    let conditions = crd.status.unwrap().conditions.unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "NamesAccepted" && c.status == "True")
    );

    let namespace = TestNamespace::new(&client, "crd-example").await;
    let stack = apply(&client, &namespace.name, &example())
        .await
        .expect("the design example is valid");
    assert_eq!(stack.status.unwrap().observed_generation, -1);

    // A plain create (no status in the request) reads back unobserved too,
    // so kstatus reports it as in progress rather than current.
    let api: Api<AppStack> = Api::namespaced(client.clone(), &namespace.name);
    let mut minimal: AppStack = serde_json::from_value(json!({
        "apiVersion": "appstack.dev/v1alpha1", "kind": "AppStack",
        "metadata": {"name": "minimal"},
        "spec": {"database": {"managed": {}}, "backend": {"image": "app:1"}}
    }))
    .unwrap();
    minimal.status = None;
    api.create(&PostParams::default(), &minimal).await.unwrap();
    let read = api.get("minimal").await.unwrap();
    assert_eq!(read.status.unwrap().observed_generation, -1);
    // Defaults from the schema are visible to every client, not only the operator.
    let raw = serde_json::to_value(&read.spec).unwrap();
    assert_eq!(raw["database"]["managed"]["image"], "postgres:16-alpine");
    assert_eq!(raw["database"]["managed"]["deletionPolicy"], "Retain");
    assert_eq!(raw["database"]["managed"]["storage"]["size"], "10Gi");
    assert_eq!(raw["backend"]["port"], 8000);
    assert!(
        raw["backend"].get("replicas").is_none(),
        "unset replicas stay unset: left to an autoscaler"
    );

    // The revision queries the field's description gives as examples.
    for (index, query) in [
        "SELECT version_num FROM alembic_version",
        "SELECT app || '.' || name FROM django_migrations ORDER BY id DESC LIMIT 1",
        "select version from flyway_schema_history where success order by installed_rank desc limit 1",
        "WITH heads AS (SELECT version FROM schema_migrations WHERE NOT dirty)\nSELECT version FROM heads",
    ]
    .into_iter()
    .enumerate()
    {
        let mut stack = example();
        set(&mut stack, "metadata.name", json!(format!("query-{index}")));
        set(&mut stack, "spec.migrations.revisionQuery", json!(query));
        apply(&client, &namespace.name, &stack)
            .await
            .unwrap_or_else(|message| panic!("{query:?} rejected: {message}"));
    }

    // Whole numbers of bytes written with a fraction and a binary suffix,
    // up to one past 2^52 where a double holds no fraction.
    for (index, memory) in ["0.5Gi", "1.5Ki", "6578.5Ti"].into_iter().enumerate() {
        let mut stack = example();
        set(&mut stack, "metadata.name", json!(format!("bytes-{index}")));
        set(
            &mut stack,
            "spec.backend.resources",
            json!({"limits": {"memory": memory}}),
        );
        set(
            &mut stack,
            "spec.database.managed.storage.size",
            json!(memory),
        );
        apply(&client, &namespace.name, &stack)
            .await
            .unwrap_or_else(|message| panic!("{memory} rejected: {message}"));
    }
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn every_example_stack_is_accepted() {
    let client = client().await;
    install_crd(&client).await;
    let namespace = TestNamespace::new(&client, "crd-examples").await;
    let mut accepted = Vec::new();
    for file in [
        include_str!("../../deploy/examples/shop.yaml"),
        include_str!("../../deploy/examples/external-database.yaml"),
        include_str!("../../deploy/examples/backend-only.yaml"),
    ] {
        for document in serde_yaml::Deserializer::from_str(file) {
            let value: Value = serde::Deserialize::deserialize(document).unwrap();
            if value["kind"] == "AppStack" {
                let stack = apply(&client, &namespace.name, &value)
                    .await
                    .unwrap_or_else(|message| panic!("{}: {message}", value["metadata"]["name"]));
                accepted.push(stack.metadata.name.unwrap());
            }
        }
    }
    assert_eq!(accepted, ["shop", "billing", "api"]);
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn maps_emptied_by_server_side_apply_are_accepted() {
    let client = client().await;
    install_crd(&client).await;
    let namespace = TestNamespace::new(&client, "crd-empty-maps").await;
    let mut stack = example();
    set(
        &mut stack,
        "spec.backend.podLabels",
        json!({"team": "shop"}),
    );
    apply(&client, &namespace.name, &stack).await.unwrap();

    // Server-side apply stores a map its manager empties as null.
    set(&mut stack, "spec.backend.podLabels", json!({}));
    set(&mut stack, "spec.backend.resources.limits", json!({}));
    let applied = apply(&client, &namespace.name, &stack)
        .await
        .expect("emptying maps is accepted");
    assert!(applied.spec.backend.pod_labels.is_empty());
    let resources = applied.spec.backend.resources.unwrap();
    assert!(resources.limits.is_empty());
    assert!(!resources.requests.is_empty());
}

/// One invalid change to the design example, and what the API server's
/// message must contain: the offending field and the reason.
struct Invalid {
    what: &'static str,
    path: &'static str,
    change: Change,
    expect: &'static [&'static str],
}

/// What a case does to the field at its path.
enum Change {
    To(Value),
    /// Leaves the field out.
    Removed,
    /// Sends an explicit `null`.
    Null,
}

use Change::{Null, Removed, To};

fn invalid_cases() -> Vec<Invalid> {
    vec![
        Invalid {
            what: "a soak longer than a week",
            path: "spec.migrations.postDeploy",
            change: To(json!({"command": ["alembic", "upgrade", "head"], "after": "200h"})),
            expect: &["postDeploy.after must be at most 168h"],
        },
        Invalid {
            what: "a soak that is not a duration",
            path: "spec.migrations.postDeploy",
            change: To(json!({"command": ["alembic", "upgrade", "head"], "after": "10 minutes"})),
            expect: &["spec.migrations.postDeploy.after"],
        },
        Invalid {
            what: "a post-deploy step without a command",
            path: "spec.migrations.postDeploy",
            change: To(json!({"after": "1m"})),
            expect: &["spec.migrations.postDeploy.command", "Required value"],
        },
        Invalid {
            what: "unknown rollback policy",
            path: "spec.migrations.rollback",
            change: To(json!("Revert")),
            expect: &["spec.migrations.rollback", "Unsupported value"],
        },
        Invalid {
            what: "unknown approval policy",
            path: "spec.migrations.approval",
            change: To(json!("Later")),
            expect: &["spec.migrations.approval", "Unsupported value"],
        },
        Invalid {
            what: "an approved revision that is no revision",
            path: "spec.migrations.approvedRevision",
            change: To(json!("latest")),
            expect: &["spec.migrations.approvedRevision"],
        },
        Invalid {
            what: "no backup kept",
            path: "spec.migrations.backup",
            change: To(json!({"enabled": true, "keep": 0})),
            expect: &["spec.migrations.backup.keep", "greater than or equal to 1"],
        },
        Invalid {
            what: "both managed and external database",
            path: "spec.database.external",
            change: To(json!({"urlSecretRef": {"name": "db", "key": "url"}})),
            expect: &[
                "spec.database",
                "exactly one of database.managed or database.external",
            ],
        },
        Invalid {
            what: "neither managed nor external database",
            path: "spec.database.managed",
            change: Removed,
            expect: &[
                "spec.database",
                "exactly one of database.managed or database.external",
            ],
        },
        Invalid {
            what: "unknown deletion policy",
            path: "spec.database.managed.deletionPolicy",
            change: To(json!("Keep")),
            expect: &["spec.database.managed.deletionPolicy", "Unsupported value"],
        },
        Invalid {
            what: "database name that is not a Postgres identifier",
            path: "spec.database.name",
            change: To(json!("shop-db; drop table")),
            expect: &["spec.database.name"],
        },
        Invalid {
            what: "pool size 0",
            path: "spec.database.pool.size",
            change: To(json!(0)),
            expect: &["spec.database.pool.size", "greater than or equal to 1"],
        },
        Invalid {
            what: "empty backend image",
            path: "spec.backend.image",
            change: To(json!("")),
            expect: &["spec.backend.image"],
        },
        Invalid {
            what: "101 backend replicas",
            path: "spec.backend.replicas",
            change: To(json!(101)),
            expect: &["spec.backend.replicas", "less than or equal to 100"],
        },
        Invalid {
            what: "frontend port 70000",
            path: "spec.frontend.port",
            change: To(json!(70000)),
            expect: &["spec.frontend.port", "less than or equal to 65535"],
        },
        Invalid {
            what: "empty migration command",
            path: "spec.migrations.command",
            change: To(json!([])),
            expect: &["spec.migrations.command"],
        },
        Invalid {
            what: "negative backoff limit",
            path: "spec.migrations.backoffLimit",
            change: To(json!(-1)),
            expect: &["spec.migrations.backoffLimit", "greater than or equal to 0"],
        },
        Invalid {
            what: "env name that is not an identifier",
            path: "spec.env.0.name",
            change: To(json!("1-LOG-LEVEL")),
            expect: &["spec.env[0].name"],
        },
        Invalid {
            what: "duplicate env name",
            path: "spec.env.1.name",
            change: To(json!("LOG_LEVEL")),
            expect: &["spec.env", "LOG_LEVEL"],
        },
        Invalid {
            what: "env name the operator sets itself",
            path: "spec.env.0.name",
            change: To(json!("DATABASE_URL")),
            expect: &["spec.env[0].name", "which the operator sets itself"],
        },
        Invalid {
            what: "env entry with both value and generate",
            path: "spec.env.0.generate",
            change: To(json!({"length": 32})),
            expect: &["spec.env[0]", "exactly one of value, generate or valueFrom"],
        },
        Invalid {
            what: "env entry with none of value, generate, valueFrom",
            path: "spec.env.0.value",
            change: Removed,
            expect: &["spec.env[0]", "exactly one of value, generate or valueFrom"],
        },
        Invalid {
            what: "secret reference without a key",
            path: "spec.env.2.valueFrom.secretKeyRef",
            change: To(json!({"name": "sendgrid"})),
            expect: &["spec.env[2].valueFrom.secretKeyRef.key", "Required value"],
        },
        Invalid {
            what: "generated secret shorter than 16",
            path: "spec.env.1.generate.length",
            change: To(json!(8)),
            expect: &["spec.env[1].generate.length", "greater than or equal to 16"],
        },
        Invalid {
            what: "malformed storage quantity",
            path: "spec.database.managed.storage.size",
            change: To(json!("ten gigs")),
            expect: &["spec.database.managed.storage.size"],
        },
        Invalid {
            what: "malformed resource quantity",
            path: "spec.backend.resources.limits.memory",
            change: To(json!("512 MB")),
            expect: &["spec.backend.resources.limits.memory"],
        },
        Invalid {
            what: "unquoted fractional CPU (a YAML number, not a quantity string)",
            path: "spec.backend.resources.requests.cpu",
            change: To(json!(0.5)),
            expect: &["spec.backend.resources.requests.cpu"],
        },
        Invalid {
            what: "malformed scrape interval",
            path: "spec.backend.metrics.interval",
            change: To(json!("30 seconds")),
            expect: &["spec.backend.metrics.interval"],
        },
        Invalid {
            what: "relative health path",
            path: "spec.backend.health.path",
            change: To(json!("health")),
            expect: &["spec.backend.health.path"],
        },
        Invalid {
            what: "frontend API URL variable the operator sets itself",
            path: "spec.frontend.apiUrlEnv",
            change: To(json!("DATABASE_URL")),
            expect: &["spec.frontend.apiUrlEnv", "which the operator sets itself"],
        },
        Invalid {
            what: "missing backend",
            path: "spec.backend",
            change: Removed,
            expect: &["spec.backend", "Required value"],
        },
        Invalid {
            what: "unknown field",
            path: "spec.backend.imagePullPolicy",
            change: To(json!("Always")),
            expect: &["spec.backend.imagePullPolicy"],
        },
        Invalid {
            what: "ServiceAccount name that is not a DNS subdomain",
            path: "spec.backend.serviceAccountName",
            change: To(json!("Shop_API")),
            expect: &["spec.backend.serviceAccountName", "should match"],
        },
        Invalid {
            what: "migration ServiceAccount name with a space",
            path: "spec.migrations.serviceAccountName",
            change: To(json!("shop migrate")),
            expect: &["spec.migrations.serviceAccountName", "should match"],
        },
        Invalid {
            what: "ClusterIssuer name that is not a DNS subdomain",
            path: "spec.expose.tls.clusterIssuer",
            change: To(json!("Lets_Encrypt")),
            expect: &["spec.expose.tls.clusterIssuer", "should match"],
        },
        Invalid {
            what: "Ingress class name with an underscore",
            path: "spec.expose.ingress.className",
            change: To(json!("public_nginx")),
            expect: &["spec.expose.ingress.className", "should match"],
        },
        Invalid {
            what: "Ingress annotation key that is not a qualified name",
            path: "spec.expose.ingress.annotations",
            change: To(json!({"nginx/ingress/rewrite": "/"})),
            expect: &[
                "spec.expose.ingress.annotations",
                "annotation keys must be qualified names",
            ],
        },
        Invalid {
            what: "namespace selector label value with a space",
            path: "spec.networkPolicy.exposeFrom",
            change: To(json!({"namespaceSelector": {"matchLabels": {"team": "web shop"}}})),
            expect: &[
                "spec.networkPolicy.exposeFrom.namespaceSelector.matchLabels.team",
                "should match",
            ],
        },
        Invalid {
            what: "selector requirement In without values",
            path: "spec.networkPolicy.metricsFrom",
            change: To(
                json!({"podSelector": {"matchExpressions": [{"key": "app", "operator": "In"}]}}),
            ),
            expect: &[
                "spec.networkPolicy.metricsFrom.podSelector.matchExpressions[0]",
                "In and NotIn need values",
            ],
        },
        Invalid {
            what: "public host that is not a DNS name",
            path: "spec.expose.host",
            change: To(json!("Shop_Example.com")),
            expect: &["spec.expose.host", "must be a DNS name"],
        },
        Invalid {
            what: "public host that is an IP address",
            path: "spec.expose.host",
            change: To(json!("203.0.113.7")),
            expect: &["spec.expose.host", "not an IP address"],
        },
        Invalid {
            what: "expose without a host",
            path: "spec.expose.host",
            change: Removed,
            expect: &["spec.expose.host", "Required value"],
        },
        Invalid {
            what: "relative API path",
            path: "spec.expose.apiPath",
            change: To(json!("api")),
            expect: &["spec.expose.apiPath", "must be an absolute path"],
        },
        Invalid {
            what: "API path with a trailing slash",
            path: "spec.expose.apiPath",
            change: To(json!("/api/")),
            expect: &["spec.expose.apiPath", "does not end with '/'"],
        },
        Invalid {
            what: "API path at the root while the frontend is there",
            path: "spec.expose.apiPath",
            change: To(json!("/")),
            expect: &["spec.expose.apiPath", "the frontend is served at '/'"],
        },
        Invalid {
            what: "both an Ingress and a gateway",
            path: "spec.expose.gateway",
            change: To(json!({"name": "public"})),
            expect: &[
                "spec.expose",
                "at most one of expose.ingress or expose.gateway",
            ],
        },
        Invalid {
            what: "both a TLS Secret and a ClusterIssuer",
            path: "spec.expose.tls.secretName",
            change: To(json!("shop-tls")),
            expect: &[
                "spec.expose.tls",
                "exactly one of expose.tls.secretName or expose.tls.clusterIssuer",
            ],
        },
        Invalid {
            what: "TLS with neither a Secret nor a ClusterIssuer",
            path: "spec.expose.tls",
            change: To(json!({})),
            expect: &[
                "spec.expose.tls",
                "exactly one of expose.tls.secretName or expose.tls.clusterIssuer",
            ],
        },
        Invalid {
            what: "database address that is not a CIDR",
            path: "spec.networkPolicy.databaseCIDRs",
            change: To(json!(["10.0.0.0/8", "db.example.com"])),
            expect: &["spec.networkPolicy.databaseCIDRs", "must be CIDRs"],
        },
        Invalid {
            what: "peer selecting nothing",
            path: "spec.networkPolicy.exposeFrom",
            change: To(json!({})),
            expect: &[
                "spec.networkPolicy.exposeFrom",
                "set namespaceSelector, podSelector or both",
            ],
        },
        Invalid {
            what: "revision query that writes",
            path: "spec.migrations.revisionQuery",
            change: To(json!("DELETE FROM alembic_version")),
            expect: &[
                "spec.migrations.revisionQuery",
                "a single SELECT (or WITH ... SELECT) statement",
            ],
        },
        Invalid {
            what: "revision query with a second statement",
            path: "spec.migrations.revisionQuery",
            change: To(json!(
                "SELECT version_num FROM alembic_version; DROP TABLE users"
            )),
            expect: &["spec.migrations.revisionQuery", "without ';'"],
        },
        Invalid {
            what: "stack name that is not a DNS-1035 label",
            path: "metadata.name",
            change: To(json!("shop.v2")),
            expect: &["metadata.name", "DNS-1035"],
        },
        Invalid {
            what: "stack name too long for its child names",
            path: "metadata.name",
            change: To(json!("a-very-long-stack-name-that-leaves-no-room-xyz")),
            expect: &["metadata.name", "at most 44 characters"],
        },
        // Unicode and very long names.
        Invalid {
            what: "stack name with a non-ASCII letter",
            path: "metadata.name",
            change: To(json!("shöp")),
            expect: &["metadata.name"],
        },
        Invalid {
            what: "stack name of 300 characters",
            path: "metadata.name",
            change: To(json!("a".repeat(300))),
            expect: &["metadata.name"],
        },
        Invalid {
            what: "env name in Cyrillic",
            path: "spec.env.0.name",
            change: To(json!("УРОВЕНЬ_ЛОГА")),
            expect: &["spec.env[0].name", "should match"],
        },
        Invalid {
            what: "env name of 129 characters",
            path: "spec.env.0.name",
            change: To(json!("A".repeat(129))),
            expect: &["spec.env[0].name", "Too long"],
        },
        Invalid {
            what: "image in full-width letters",
            path: "spec.backend.image",
            change: To(json!("ｓｈｏｐ:１")),
            expect: &["spec.backend.image"],
        },
        Invalid {
            what: "image ending in a no-break space",
            path: "spec.frontend.image",
            change: To(json!("ghcr.io/acme/shop-frontend:1.4.2\u{a0}")),
            expect: &["spec.frontend.image"],
        },
        Invalid {
            what: "database name of 64 characters",
            path: "spec.database.name",
            change: To(json!("d".repeat(64))),
            expect: &["spec.database.name"],
        },
        Invalid {
            what: "Secret name with capitals and '_'",
            path: "spec.env.2.valueFrom.secretKeyRef.name",
            change: To(json!("SendGrid_Key")),
            expect: &["spec.env[2].valueFrom.secretKeyRef.name", "should match"],
        },
        Invalid {
            what: "Secret key starting with '..'",
            path: "spec.env.2.valueFrom.secretKeyRef.key",
            change: To(json!("..data")),
            expect: &[
                "spec.env[2].valueFrom.secretKeyRef.key",
                "must not be '.' or start with '..'",
            ],
        },
        Invalid {
            what: "retry token of 64 characters",
            path: "spec.migrations.retryToken",
            change: To(json!("r".repeat(64))),
            expect: &["spec.migrations.retryToken", "Too long"],
        },
        Invalid {
            what: "pod label value of 64 characters",
            path: "spec.backend.podLabels",
            change: To(json!({"team": "t".repeat(64)})),
            expect: &["spec.backend.podLabels.team", "Too long"],
        },
        Invalid {
            what: "pod label value with an accent",
            path: "spec.frontend.podLabels",
            change: To(json!({"team": "café"})),
            expect: &["spec.frontend.podLabels.team", "should match"],
        },
        Invalid {
            what: "pod label key with two '/'",
            path: "spec.migrations.podLabels",
            change: To(json!({"example.com/team/name": "data"})),
            expect: &[
                "spec.migrations.podLabels",
                "label keys must be qualified names",
            ],
        },
        Invalid {
            what: "ServiceMonitor label key with a prefix of 254 characters",
            path: "spec.monitoring.serviceMonitor.labels",
            change: To(json!({format!("{}/release", "p".repeat(254)): "prometheus"})),
            expect: &[
                "spec.monitoring.serviceMonitor.labels",
                "label keys must be qualified names",
            ],
        },
        Invalid {
            what: "pod annotation key in Cyrillic",
            path: "spec.backend.podAnnotations",
            change: To(json!({"ключ": "значение"})),
            expect: &[
                "spec.backend.podAnnotations",
                "annotation keys must be qualified names",
            ],
        },
        Invalid {
            what: "pod annotations beyond what a pod may hold",
            path: "spec.backend.podAnnotations",
            change: To(json!({"a": "x".repeat(40_000), "b": "y".repeat(40_000)})),
            expect: &["spec.backend.podAnnotations", "at most 64000 characters"],
        },
        Invalid {
            what: "plain env values beyond what a ConfigMap may hold",
            path: "spec.env",
            change: To(json!([
                {"name": "A", "value": "a".repeat(200_000)},
                {"name": "B", "value": "b".repeat(200_000)},
            ])),
            expect: &["spec.env", "at most 250000 characters together"],
        },
        Invalid {
            what: "command holding a C1 control character",
            path: "spec.backend.command",
            change: To(json!(["uvicorn", "main:app\u{85}\u{9b}"])),
            expect: &["spec.backend.command[1]", "should match"],
        },
        Invalid {
            what: "env value holding DEL",
            path: "spec.env.0.value",
            change: To(json!("INFO\u{7f}")),
            expect: &["spec.env[0].value", "should match"],
        },
        // Huge numbers.
        Invalid {
            what: "10^20 backend replicas",
            path: "spec.backend.replicas",
            change: To(json!(100_000_000_000_000_000_000_u128 as f64)),
            expect: &["spec.backend.replicas"],
        },
        Invalid {
            what: "backend port 2^63 - 1",
            path: "spec.backend.port",
            change: To(json!(i64::MAX)),
            expect: &["spec.backend.port", "less than or equal to 65535"],
        },
        Invalid {
            what: "pool timeout beyond 32 bits",
            path: "spec.database.pool.timeoutSeconds",
            change: To(json!(9_999_999_999_i64)),
            expect: &["spec.database.pool.timeoutSeconds"],
        },
        Invalid {
            what: "generated secret of 10^30 characters",
            path: "spec.env.1.generate.length",
            change: To(json!(1e30)),
            expect: &["spec.env[1].generate.length"],
        },
        Invalid {
            what: "storage of 10 pebibytes",
            path: "spec.database.managed.storage.size",
            change: To(json!("10Pi")),
            expect: &["spec.database.managed.storage.size", "less than 8Pi"],
        },
        Invalid {
            what: "runAsUser beyond 32 bits",
            path: "spec.backend.runAsUser",
            change: To(json!(4_294_967_296_i64)),
            expect: &["spec.backend.runAsUser", "less than or equal to 2147483647"],
        },
        // null where an object is expected.
        Invalid {
            what: "null backend",
            path: "spec.backend",
            change: Null,
            expect: &["spec.backend"],
        },
        Invalid {
            what: "null database",
            path: "spec.database",
            change: Null,
            expect: &["spec.database"],
        },
        Invalid {
            what: "null secret reference",
            path: "spec.env.2.valueFrom.secretKeyRef",
            change: Null,
            expect: &["spec.env[2].valueFrom.secretKeyRef"],
        },
        // Empty lists.
        Invalid {
            what: "empty backend command",
            path: "spec.backend.command",
            change: To(json!([])),
            expect: &["spec.backend.command", "should have at least 1 items"],
        },
        Invalid {
            what: "empty frontend command",
            path: "spec.frontend.command",
            change: To(json!([])),
            expect: &["spec.frontend.command", "should have at least 1 items"],
        },
        // What a child could not hold, or Pod Security restricted forbids.
        Invalid {
            what: "storage of zero bytes",
            path: "spec.database.managed.storage.size",
            change: To(json!("0")),
            expect: &["spec.database.managed.storage.size", "more than 0"],
        },
        Invalid {
            what: "storage in fractions of a byte",
            path: "spec.database.managed.storage.size",
            change: To(json!("1500m")),
            expect: &[
                "spec.database.managed.storage.size",
                "whole number of bytes",
            ],
        },
        Invalid {
            what: "storage class that is not a DNS subdomain",
            path: "spec.database.managed.storage.storageClassName",
            change: To(json!("Fast_SSD")),
            expect: &[
                "spec.database.managed.storage.storageClassName",
                "should match",
            ],
        },
        Invalid {
            what: "negative CPU request",
            path: "spec.backend.resources.requests.cpu",
            change: To(json!("-100m")),
            expect: &["spec.backend.resources.requests.cpu", "should match"],
        },
        Invalid {
            what: "negative CPU limit as a JSON number",
            path: "spec.backend.resources.limits",
            change: To(json!({"cpu": -7_358_516_819_683_744_578_i64})),
            expect: &["spec.backend.resources", "must not be negative"],
        },
        Invalid {
            what: "memory request above its limit",
            path: "spec.backend.resources.requests.memory",
            change: To(json!("1Gi")),
            expect: &["spec.backend.resources", "must not exceed resources.limits"],
        },
        Invalid {
            what: "memory in fractions of a byte",
            path: "spec.backend.resources.limits.memory",
            change: To(json!("512.5")),
            expect: &["spec.backend.resources", "whole numbers of bytes"],
        },
        Invalid {
            // Past 2^52 bytes a double holds no fraction, so an approximate
            // float reads this as whole; the API server counts thousandths.
            what: "memory a fraction of a byte above a large whole number",
            path: "spec.backend.resources.limits.memory",
            change: To(json!("6578.347Ti")),
            expect: &["spec.backend.resources", "whole numbers of bytes"],
        },
        Invalid {
            what: "a resource other than cpu, memory and ephemeral-storage",
            path: "spec.backend.resources.limits",
            change: To(json!({"nvidia.com/gpu": 1})),
            expect: &[
                "spec.backend.resources",
                "cpu, memory and ephemeral-storage",
            ],
        },
        Invalid {
            what: "running as root",
            path: "spec.backend.runAsUser",
            change: To(json!(0)),
            expect: &["spec.backend.runAsUser", "forbids running as root"],
        },
        Invalid {
            what: "an AppArmor profile by annotation",
            path: "spec.frontend.podAnnotations",
            change: To(
                json!({"container.apparmor.security.beta.kubernetes.io/frontend": "unconfined"}),
            ),
            expect: &[
                "spec.frontend.podAnnotations",
                "must not set seccomp or AppArmor profiles",
            ],
        },
        Invalid {
            what: "a seccomp profile by annotation",
            path: "spec.migrations.podAnnotations",
            change: To(json!({"seccomp.security.alpha.kubernetes.io/pod": "unconfined"})),
            expect: &[
                "spec.migrations.podAnnotations",
                "must not set seccomp or AppArmor profiles",
            ],
        },
    ]
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn invalid_stacks_are_rejected_with_a_message_naming_the_field() {
    let client = client().await;
    install_crd(&client).await;
    let namespace = TestNamespace::new(&client, "crd-invalid").await;
    let cases = invalid_cases();
    let distinct: BTreeSet<&str> = cases.iter().map(|case| case.what).collect();
    assert!(distinct.len() >= 40 && distinct.len() == cases.len());
    let mut failures = Vec::new();
    for (index, case) in cases.iter().enumerate() {
        let mut stack = example();
        if case.path != "metadata.name" {
            set(
                &mut stack,
                "metadata.name",
                json!(format!("invalid-{index}")),
            );
        }
        change(&mut stack, case.path, &case.change);
        // As `kubectl apply --server-side` sends it (YAML, which cannot
        // carry some characters at all) and as `kubectl create` does (JSON).
        let mut answers = vec![("created", create(&client, &namespace.name, &stack).await)];
        if !holds_text_yaml_refuses(&stack) {
            answers.push((
                "applied",
                apply(&client, &namespace.name, &stack).await.map(|_| ()),
            ));
        }
        // And as a change to a valid stack: a rule skips only a value the
        // update leaves as it was. (An object applied as `{}` over one
        // with fields is emptied to null by server-side apply, which is
        // valid: see maps_emptied_by_server_side_apply_are_accepted.)
        let emptied = matches!(&case.change, To(value) if value == &json!({}));
        if case.path != "metadata.name" && !emptied {
            let mut valid = example();
            set(
                &mut valid,
                "metadata.name",
                json!(format!("updated-{index}")),
            );
            apply(&client, &namespace.name, &valid)
                .await
                .expect("the example is valid");
            let mut changed = stack.clone();
            set(
                &mut changed,
                "metadata.name",
                json!(format!("updated-{index}")),
            );
            if !holds_text_yaml_refuses(&changed) {
                answers.push((
                    "changed",
                    apply(&client, &namespace.name, &changed).await.map(|_| ()),
                ));
            }
        }
        for (how, answer) in answers {
            match answer {
                Ok(()) => failures.push(format!("{} ({how}): accepted", case.what)),
                Err(message) => {
                    let missing: Vec<_> = case
                        .expect
                        .iter()
                        .filter(|part| !message.contains(*part))
                        .collect();
                    if !missing.is_empty() {
                        failures.push(format!(
                            "{} ({how}): message {message:?} lacks {missing:?}",
                            case.what
                        ));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Nothing invalid was stored: the valid stacks the changes were refused
    // on are as they were.
    let api: Api<AppStack> = Api::namespaced(client.clone(), &namespace.name);
    for stored in api.list(&Default::default()).await.unwrap().items {
        let name = stored.metadata.name.clone().unwrap_or_default();
        assert!(name.starts_with("updated-"), "{name} was stored");
        assert_eq!(
            serde_json::to_value(&stored.spec).unwrap(),
            serde_json::to_value(serde_json::from_value::<AppStack>(example()).unwrap().spec)
                .unwrap(),
            "{name} changed"
        );
    }
}

/// Whether `stack` holds a character the API server's YAML decoder refuses
/// (DEL, C1 controls but NEL), which only a JSON body can carry.
fn holds_text_yaml_refuses(stack: &Value) -> bool {
    stack
        .to_string()
        .chars()
        .any(|c| matches!(c, '\u{7f}'..='\u{84}' | '\u{86}'..='\u{9f}'))
}

/// Creates a stack from JSON, as `kubectl create` does (with strict field
/// validation, kubectl's default), returning the API server's message.
async fn create(client: &Client, namespace: &str, stack: &Value) -> Result<(), String> {
    create_raw(client, namespace, &stack.to_string()).await
}

/// POSTs `body` as it is (JSON) with strict field validation.
async fn create_raw(client: &Client, namespace: &str, body: &str) -> Result<(), String> {
    let request = http::Request::post(format!(
        "/apis/appstack.dev/v1alpha1/namespaces/{namespace}/appstacks?fieldValidation=Strict"
    ))
    .header("content-type", "application/json")
    .body(kube::client::Body::from(body.as_bytes().to_vec()))
    .unwrap();
    answer(client, request).await
}

async fn answer(client: &Client, request: http::Request<kube::client::Body>) -> Result<(), String> {
    let response = client.send(request).await.expect("the API server answers");
    if response.status().is_success() {
        return Ok(());
    }
    let body = response.into_body().collect_bytes().await.unwrap();
    let status: Value = serde_json::from_slice(&body).unwrap_or_default();
    Err(status["message"].as_str().unwrap_or_default().to_string())
}

/// The design example with `backend.image` given twice, as YAML.
fn duplicated_image_yaml(name: &str) -> String {
    let yaml = EXAMPLE.replace("name: shop\n", &format!("name: {name}\n"));
    yaml.replace(
        "    image: ghcr.io/acme/shop-backend:1.4.2\n",
        "    image: ghcr.io/acme/shop-backend:1.4.2\n    image: ghcr.io/acme/shop-backend:9.9.9\n",
    )
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn duplicate_keys_are_rejected_by_the_api_servers_own_decoding() {
    let client = client().await;
    install_crd(&client).await;
    let namespace = TestNamespace::new(&client, "crd-duplicates").await;
    let ns = namespace.name.as_str();

    // Raw YAML as a server-side apply body: the API server decodes it.
    let yaml = duplicated_image_yaml("dup-yaml");
    assert_eq!(yaml.matches("shop-backend:").count(), 2);
    let request = http::Request::patch(format!(
        "/apis/appstack.dev/v1alpha1/namespaces/{ns}/appstacks/dup-yaml?fieldManager={TEST_MANAGER}&fieldValidation=Strict"
    ))
    .header("content-type", "application/apply-patch+yaml")
    .body(kube::client::Body::from(yaml.clone().into_bytes()))
    .unwrap();
    let message = answer(&client, request).await.unwrap_err();
    let duplicate_line = yaml
        .lines()
        .position(|line| line.ends_with("shop-backend:9.9.9"))
        .unwrap()
        + 1;
    assert!(
        message.contains(&format!(
            "line {duplicate_line}: key \"image\" already set in map"
        )),
        "{message}"
    );

    // Raw JSON through kubectl (`create --raw` sends the file as it is).
    let stack: Value =
        serde_yaml::from_str(&EXAMPLE.replace("name: shop\n", "name: dup-json\n")).unwrap();
    let json = stack.to_string().replacen(
        "\"image\":\"ghcr.io/acme/shop-backend:1.4.2\"",
        "\"image\":\"ghcr.io/acme/shop-backend:1.4.2\",\"image\":\"ghcr.io/acme/shop-backend:9.9.9\"",
        1,
    );
    assert_eq!(json.matches("shop-backend:").count(), 2);
    let file = std::env::temp_dir().join(format!("appstack-duplicate-{ns}.json"));
    std::fs::write(&file, &json).unwrap();
    let output = kubectl()
        .args(["create", "--raw"])
        .arg(format!(
            "/apis/appstack.dev/v1alpha1/namespaces/{ns}/appstacks?fieldValidation=Strict"
        ))
        .arg("-f")
        .arg(&file)
        .output()
        .await
        .unwrap();
    let _ = std::fs::remove_file(&file);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("duplicate field \"spec.backend.image\""),
        "{stderr}"
    );

    let api: Api<AppStack> = Api::namespaced(client.clone(), ns);
    assert!(
        api.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}
