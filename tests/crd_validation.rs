//! The AppStack CRD on a real API server: it installs, accepts the design's
//! example, and rejects invalid stacks with a message naming the field.
mod common;

use appstack::crd::AppStack;
use common::{TEST_MANAGER, TestNamespace, client, install_crd};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

const EXAMPLE: &str = include_str!("../deploy/examples/shop.yaml");

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

/// Sets `path` (dot separated, numeric segments index arrays) in `value`.
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
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn every_example_stack_is_accepted() {
    let client = client().await;
    install_crd(&client).await;
    let namespace = TestNamespace::new(&client, "crd-examples").await;
    let mut accepted = Vec::new();
    for file in [
        include_str!("../deploy/examples/shop.yaml"),
        include_str!("../deploy/examples/external-database.yaml"),
        include_str!("../deploy/examples/backend-only.yaml"),
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
    value: Value,
    expect: &'static [&'static str],
}

fn invalid_cases() -> Vec<Invalid> {
    vec![
        Invalid {
            what: "both managed and external database",
            path: "spec.database.external",
            value: json!({"urlSecretRef": {"name": "db", "key": "url"}}),
            expect: &[
                "spec.database",
                "exactly one of database.managed or database.external",
            ],
        },
        Invalid {
            what: "neither managed nor external database",
            path: "spec.database.managed",
            value: Value::Null,
            expect: &[
                "spec.database",
                "exactly one of database.managed or database.external",
            ],
        },
        Invalid {
            what: "unknown deletion policy",
            path: "spec.database.managed.deletionPolicy",
            value: json!("Keep"),
            expect: &["spec.database.managed.deletionPolicy", "Unsupported value"],
        },
        Invalid {
            what: "database name that is not a Postgres identifier",
            path: "spec.database.name",
            value: json!("shop-db; drop table"),
            expect: &["spec.database.name"],
        },
        Invalid {
            what: "pool size 0",
            path: "spec.database.pool.size",
            value: json!(0),
            expect: &["spec.database.pool.size", "greater than or equal to 1"],
        },
        Invalid {
            what: "empty backend image",
            path: "spec.backend.image",
            value: json!(""),
            expect: &["spec.backend.image"],
        },
        Invalid {
            what: "101 backend replicas",
            path: "spec.backend.replicas",
            value: json!(101),
            expect: &["spec.backend.replicas", "less than or equal to 100"],
        },
        Invalid {
            what: "frontend port 70000",
            path: "spec.frontend.port",
            value: json!(70000),
            expect: &["spec.frontend.port", "less than or equal to 65535"],
        },
        Invalid {
            what: "empty migration command",
            path: "spec.migrations.command",
            value: json!([]),
            expect: &["spec.migrations.command"],
        },
        Invalid {
            what: "negative backoff limit",
            path: "spec.migrations.backoffLimit",
            value: json!(-1),
            expect: &["spec.migrations.backoffLimit", "greater than or equal to 0"],
        },
        Invalid {
            what: "env name that is not an identifier",
            path: "spec.env.0.name",
            value: json!("1-LOG-LEVEL"),
            expect: &["spec.env[0].name"],
        },
        Invalid {
            what: "duplicate env name",
            path: "spec.env.1.name",
            value: json!("LOG_LEVEL"),
            expect: &["spec.env", "duplicate entries for key [name=\"LOG_LEVEL\"]"],
        },
        Invalid {
            what: "env name the operator sets itself",
            path: "spec.env.0.name",
            value: json!("DATABASE_URL"),
            expect: &["spec.env[0].name", "which the operator sets itself"],
        },
        Invalid {
            what: "env entry with both value and generate",
            path: "spec.env.0.generate",
            value: json!({"length": 32}),
            expect: &["spec.env[0]", "exactly one of value, generate or valueFrom"],
        },
        Invalid {
            what: "env entry with none of value, generate, valueFrom",
            path: "spec.env.0.value",
            value: Value::Null,
            expect: &["spec.env[0]", "exactly one of value, generate or valueFrom"],
        },
        Invalid {
            what: "secret reference without a key",
            path: "spec.env.2.valueFrom.secretKeyRef",
            value: json!({"name": "sendgrid"}),
            expect: &["spec.env[2].valueFrom.secretKeyRef.key", "Required value"],
        },
        Invalid {
            what: "generated secret shorter than 16",
            path: "spec.env.1.generate.length",
            value: json!(8),
            expect: &["spec.env[1].generate.length", "greater than or equal to 16"],
        },
        Invalid {
            what: "malformed storage quantity",
            path: "spec.database.managed.storage.size",
            value: json!("ten gigs"),
            expect: &["spec.database.managed.storage.size"],
        },
        Invalid {
            what: "malformed resource quantity",
            path: "spec.backend.resources.limits.memory",
            value: json!("512 MB"),
            expect: &["spec.backend.resources.limits.memory"],
        },
        Invalid {
            what: "unquoted fractional CPU (a YAML number, not a quantity string)",
            path: "spec.backend.resources.requests.cpu",
            value: json!(0.5),
            expect: &["spec.backend.resources.requests.cpu"],
        },
        Invalid {
            what: "malformed scrape interval",
            path: "spec.backend.metrics.interval",
            value: json!("30 seconds"),
            expect: &["spec.backend.metrics.interval"],
        },
        Invalid {
            what: "relative health path",
            path: "spec.backend.health.path",
            value: json!("health"),
            expect: &["spec.backend.health.path"],
        },
        Invalid {
            what: "frontend API URL variable the operator sets itself",
            path: "spec.frontend.apiUrlEnv",
            value: json!("DATABASE_URL"),
            expect: &["spec.frontend.apiUrlEnv", "which the operator sets itself"],
        },
        Invalid {
            what: "missing backend",
            path: "spec.backend",
            value: Value::Null,
            expect: &["spec.backend", "Required value"],
        },
        Invalid {
            what: "unknown field",
            path: "spec.backend.imagePullPolicy",
            value: json!("Always"),
            expect: &["spec.backend.imagePullPolicy", "not declared in schema"],
        },
        Invalid {
            what: "public host that is not a DNS name",
            path: "spec.expose.host",
            value: json!("Shop_Example.com"),
            expect: &["spec.expose.host", "must be a DNS name"],
        },
        Invalid {
            what: "public host that is an IP address",
            path: "spec.expose.host",
            value: json!("203.0.113.7"),
            expect: &["spec.expose.host", "not an IP address"],
        },
        Invalid {
            what: "expose without a host",
            path: "spec.expose.host",
            value: Value::Null,
            expect: &["spec.expose.host", "Required value"],
        },
        Invalid {
            what: "relative API path",
            path: "spec.expose.apiPath",
            value: json!("api"),
            expect: &["spec.expose.apiPath", "must be an absolute path"],
        },
        Invalid {
            what: "API path with a trailing slash",
            path: "spec.expose.apiPath",
            value: json!("/api/"),
            expect: &["spec.expose.apiPath", "does not end with '/'"],
        },
        Invalid {
            what: "API path at the root while the frontend is there",
            path: "spec.expose.apiPath",
            value: json!("/"),
            expect: &["spec.expose.apiPath", "the frontend is served at '/'"],
        },
        Invalid {
            what: "both an Ingress and a gateway",
            path: "spec.expose.gateway",
            value: json!({"name": "public"}),
            expect: &[
                "spec.expose",
                "at most one of expose.ingress or expose.gateway",
            ],
        },
        Invalid {
            what: "both a TLS Secret and a ClusterIssuer",
            path: "spec.expose.tls.secretName",
            value: json!("shop-tls"),
            expect: &[
                "spec.expose.tls",
                "exactly one of expose.tls.secretName or expose.tls.clusterIssuer",
            ],
        },
        Invalid {
            what: "TLS with neither a Secret nor a ClusterIssuer",
            path: "spec.expose.tls",
            value: json!({}),
            expect: &[
                "spec.expose.tls",
                "exactly one of expose.tls.secretName or expose.tls.clusterIssuer",
            ],
        },
        Invalid {
            what: "database address that is not a CIDR",
            path: "spec.networkPolicy.databaseCIDRs",
            value: json!(["10.0.0.0/8", "db.example.com"]),
            expect: &["spec.networkPolicy.databaseCIDRs", "must be CIDRs"],
        },
        Invalid {
            what: "peer selecting nothing",
            path: "spec.networkPolicy.exposeFrom",
            value: json!({}),
            expect: &[
                "spec.networkPolicy.exposeFrom",
                "set namespaceSelector, podSelector or both",
            ],
        },
        Invalid {
            what: "revision query that writes",
            path: "spec.migrations.revisionQuery",
            value: json!("DELETE FROM alembic_version"),
            expect: &[
                "spec.migrations.revisionQuery",
                "a single SELECT (or WITH ... SELECT) statement",
            ],
        },
        Invalid {
            what: "revision query with a second statement",
            path: "spec.migrations.revisionQuery",
            value: json!("SELECT version_num FROM alembic_version; DROP TABLE users"),
            expect: &["spec.migrations.revisionQuery", "without ';'"],
        },
        Invalid {
            what: "stack name that is not a DNS-1035 label",
            path: "metadata.name",
            value: json!("shop.v2"),
            expect: &["metadata.name", "DNS-1035"],
        },
        Invalid {
            what: "stack name too long for its child names",
            path: "metadata.name",
            value: json!("a-very-long-stack-name-that-leaves-no-room-xyz"),
            expect: &["metadata.name", "at most 44 characters"],
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
    assert!(cases.len() >= 12);
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
        set(&mut stack, case.path, case.value.clone());
        match apply(&client, &namespace.name, &stack).await {
            Ok(_) => failures.push(format!("{}: accepted", case.what)),
            Err(message) => {
                let missing: Vec<_> = case
                    .expect
                    .iter()
                    .filter(|part| !message.contains(*part))
                    .collect();
                if !missing.is_empty() {
                    failures.push(format!(
                        "{}: message {message:?} lacks {missing:?}",
                        case.what
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Nothing invalid was stored.
    let api: Api<AppStack> = Api::namespaced(client.clone(), &namespace.name);
    assert!(
        api.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}
