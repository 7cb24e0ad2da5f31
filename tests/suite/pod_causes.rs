//! Conditions that say why, on the real local control plane. KWOK puts
//! pods into the states a kubelet reports when they cannot run (the stages
//! in hack/kwok-stages, chosen by pod labels), the scheduler finds no node
//! for a pod asking too much: each component's condition names the pod and
//! the kubelet's or scheduler's words, the stack is Stalled only where the
//! pod will not recover by itself, one Event tells each new cause, and the
//! cause goes once the pods recover. A failed migration's status carries
//! the tail of what it printed, with every secret value redacted.

use std::time::{Duration, Instant};

use crate::common::{
    LIMIT, Operator, apply_stack, condition, condition_message, eventually, example, setup,
    wait_for, wait_ready,
};
use appstack::api::crd::AppStack;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};

/// A stack whose pods are put into one state, and what its status says.
struct Case {
    name: &'static str,
    /// Changes the example stack so its pods end up in the state.
    fault: fn(&mut Value),
    /// The component's label value and condition.
    component: &'static str,
    condition: &'static str,
    reason: &'static str,
    /// Words of the kubelet or the scheduler the message carries.
    says: &'static str,
    /// Whether the stack is Stalled: the pod will not recover by itself.
    stalled: bool,
}

fn waiting(stack: &mut Value, component: &str, reason: &str, annotations: Value) {
    stack["spec"][component]["podLabels"] = json!({"appstack.test/waiting-reason": reason});
    stack["spec"][component]["podAnnotations"] = annotations;
}

const CASES: &[Case] = &[
    Case {
        name: "pull",
        fault: |stack| {
            waiting(
                stack,
                "backend",
                "ImagePullBackOff",
                json!({"appstack.test/waiting-message":
                    "Back-off pulling image \"ghcr.io/acme/shop-backend:1.4.3\""}),
            )
        },
        component: "backend",
        condition: "BackendAvailable",
        reason: "ImagePullBackOff",
        says: "Back-off pulling image \"ghcr.io/acme/shop-backend:1.4.3\"",
        stalled: false,
    },
    Case {
        name: "crash",
        fault: |stack| {
            waiting(
                stack,
                "backend",
                "CrashLoopBackOff",
                json!({"appstack.test/phase": "Running", "appstack.test/restart-count": "4",
                       "appstack.test/last-exit-code": "3",
                       "appstack.test/waiting-message": "back-off 1m20s restarting failed container"}),
            )
        },
        component: "backend",
        condition: "BackendAvailable",
        reason: "CrashLoopBackOff",
        says: "keeps exiting (last exit code 3, Error), restarted 4 times",
        stalled: false,
    },
    Case {
        name: "root",
        fault: |stack| {
            waiting(
                stack,
                "backend",
                "CreateContainerConfigError",
                json!({"appstack.test/waiting-message":
                    "container has runAsNonRoot and image will run as root (container: backend)"}),
            )
        },
        component: "backend",
        condition: "BackendAvailable",
        reason: "CreateContainerConfigError",
        says: "container has runAsNonRoot and image will run as root",
        stalled: true,
    },
    Case {
        name: "oom",
        fault: |stack| {
            waiting(
                stack,
                "frontend",
                "CrashLoopBackOff",
                json!({"appstack.test/phase": "Running", "appstack.test/restart-count": "2",
                       "appstack.test/last-exit-code": "137", "appstack.test/last-reason": "OOMKilled"}),
            )
        },
        component: "frontend",
        condition: "FrontendAvailable",
        reason: "OOMKilled",
        says: "was killed for exceeding its memory limit (exit code 137), restarted 2 times",
        stalled: false,
    },
    Case {
        name: "unready",
        fault: |stack| {
            stack["spec"]["backend"]["podLabels"] = json!({"appstack.test/not-ready": "true"});
        },
        component: "backend",
        condition: "BackendAvailable",
        reason: "NotReady",
        says: "is running but not ready: its readiness probe fails",
        stalled: false,
    },
    Case {
        name: "nonode",
        fault: |stack| {
            stack["spec"]["database"]["managed"]["resources"] =
                json!({"requests": {"cpu": "1000"}});
        },
        component: "database",
        condition: "DatabaseReady",
        reason: "Unschedulable",
        says: "Insufficient cpu",
        stalled: false,
    },
    Case {
        name: "migpull",
        fault: |stack| {
            waiting(
                stack,
                "migrations",
                "ErrImagePull",
                json!({"appstack.test/waiting-message":
                    "failed to pull and unpack image \"ghcr.io/acme/shop-backend:1.4.2\""}),
            )
        },
        component: "migration",
        condition: "MigrationsApplied",
        reason: "ErrImagePull",
        says: "failed to pull and unpack image",
        stalled: false,
    },
];

/// The reason a pod of `component` of stack `name` reports, if any: the
/// first container's waiting reason, its last termination's when that was
/// a memory kill, not-ready, or the scheduler's.
fn pod_reason(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let container = status
        .container_statuses
        .as_ref()
        .and_then(|all| all.first());
    if let Some(container) = container {
        let last = container
            .last_state
            .as_ref()
            .and_then(|last| last.terminated.as_ref())
            .and_then(|terminated| terminated.reason.clone());
        if last.as_deref() == Some("OOMKilled") {
            return last;
        }
        if let Some(waiting) = container
            .state
            .as_ref()
            .and_then(|state| state.waiting.as_ref())
        {
            return waiting.reason.clone();
        }
        if !container.ready && status.phase.as_deref() == Some("Running") {
            return Some("NotReady".into());
        }
    }
    status
        .conditions
        .iter()
        .flatten()
        .find(|condition| condition.type_ == "PodScheduled" && condition.status == "False")
        .and_then(|condition| condition.reason.clone())
}

/// Events about stack `name` with `reason`.
async fn events(client: &Client, namespace: &str, name: &str, reason: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|event| {
            event
                .regarding
                .as_ref()
                .and_then(|regarding| regarding.name.as_deref())
                == Some(name)
                && event.reason.as_deref() == Some(reason)
        })
        .collect()
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn each_cause_a_pod_cannot_run_is_named_on_its_components_condition() {
    let (client, namespace) = setup("podcauses").await;
    let ns = namespace.name.as_str();
    let operator = Operator::start(ns).await;
    let stacks: Api<AppStack> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    for case in CASES {
        let mut stack = example(case.name);
        (case.fault)(&mut stack);
        apply_stack(&client, ns, &stack).await;
    }
    for case in CASES {
        // The moment a pod reports the cause and the moment the condition
        // names it, as seen by polling both every 100 ms.
        let selector = format!(
            "app.kubernetes.io/instance={},app.kubernetes.io/component={}",
            case.name, case.component
        );
        let mut pod_seen: Option<Instant> = None;
        let started = Instant::now();
        let (stack, named) = loop {
            assert!(
                started.elapsed() < LIMIT,
                "{}: {} never said {}",
                case.name,
                case.condition,
                case.reason
            );
            if pod_seen.is_none()
                && pods
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .unwrap()
                    .items
                    .iter()
                    .any(|pod| pod_reason(pod).as_deref() == Some(case.reason))
            {
                pod_seen = Some(Instant::now());
            }
            let stack = stacks.get(case.name).await.unwrap();
            if condition(&stack, case.condition)
                == Some(("False".to_string(), case.reason.to_string()))
            {
                break (stack, Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let message = condition_message(&stack, case.condition);
        let delay = pod_seen.map(|seen| named.saturating_duration_since(seen));
        eprintln!(
            "figure=pod-cause-to-condition case={} reason={} seconds={:.1}",
            case.name,
            case.reason,
            delay.unwrap_or_default().as_secs_f64()
        );
        assert!(
            message.starts_with(&format!("pod {}-", case.name)),
            "{}: the message names the pod: {message}",
            case.name
        );
        assert!(
            message.contains(case.says),
            "{}: the kubelet's words: {message}",
            case.name
        );
        let stalled = condition(&stack, "Stalled").map(|(status, _)| status);
        assert_eq!(
            stalled.as_deref() == Some("True"),
            case.stalled,
            "{}: Stalled only when it will not recover by itself: {:?}",
            case.name,
            stack.status
        );
        if !case.stalled {
            assert_eq!(
                condition(&stack, "Reconciling")
                    .map(|(status, _)| status)
                    .as_deref(),
                Some("True"),
                "{}",
                case.name
            );
        }
        let told = eventually("a Warning naming the cause", LIMIT, || async {
            let told = events(&client, ns, case.name, case.reason).await;
            (!told.is_empty()).then_some(told)
        })
        .await;
        assert_eq!(told.len(), 1, "{}: one Event per cause", case.name);
        assert_eq!(told[0].type_.as_deref(), Some("Warning"));
    }

    // More passes over a troubled stack tell nothing new: touching the
    // stacks wakes a pass each, and each cause is still one Event, never
    // repeated.
    let before: Vec<usize> = CASES
        .iter()
        .map(|case| operator.passes(case.name, ns))
        .collect();
    for case in CASES {
        stacks
            .patch(
                case.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"example.com/touched": "1"}}})),
            )
            .await
            .unwrap();
    }
    eventually("a pass over each touched stack", LIMIT, || async {
        CASES
            .iter()
            .zip(&before)
            .all(|(case, before)| operator.passes(case.name, ns) > *before)
            .then_some(())
    })
    .await;
    for case in CASES {
        let told = events(&client, ns, case.name, case.reason).await;
        assert_eq!(told.len(), 1, "{}", case.name);
        assert!(
            told[0].series.is_none(),
            "{}: the Event was published once, not once per pass: {:?}",
            case.name,
            told[0].series
        );
    }

    // The pods recover: the cause goes with them.
    let recovered = example("pull");
    apply_stack(&client, ns, &recovered).await;
    let stack = wait_for(
        &client,
        ns,
        "pull",
        "BackendAvailable",
        "True",
        Some("Available"),
    )
    .await;
    assert!(
        !condition_message(&stack, "BackendAvailable").contains("pod pull-"),
        "{}",
        condition_message(&stack, "BackendAvailable")
    );
    wait_ready(&client, ns, "pull").await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_failed_migration_says_what_it_printed_with_every_secret_redacted() {
    let (client, namespace) = setup("migoutput").await;
    let ns = namespace.name.as_str();
    let _operator = Operator::start(ns).await;
    let mut stack = example("leak");
    apply_stack(&client, ns, &stack).await;
    wait_ready(&client, ns, "leak").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let value = |secret: &Secret, key: &str| -> String {
        let ByteString(bytes) = secret.data.as_ref().unwrap()[key].clone();
        String::from_utf8(bytes).unwrap()
    };
    let database = secrets.get("leak-db").await.unwrap();
    let url = value(&database, "DATABASE_URL");
    let password = value(&database, "password");
    let env = secrets.get("leak-env").await.unwrap();
    let secret_key = value(&env, "SECRET_KEY");
    let sendgrid = value(&env, "SENDGRID_API_KEY");

    // A migration that prints the URL it connects with, the app's secret
    // key and a referenced value, then fails with a real error.
    let printed = format!(
        "INFO  [alembic.runtime.migration] Context impl PostgresqlImpl.\n\
         connecting to {url}\n\
         SECRET_KEY={secret_key} SENDGRID_API_KEY={sendgrid}\n\
         sqlalchemy.exc.ProgrammingError: (psycopg2.errors.UndefinedTable) relation \"items\" does not exist"
    );
    stack["spec"]["backend"]["image"] = json!("ghcr.io/acme/shop-backend:2.0.0");
    stack["spec"]["migrations"]["backoffLimit"] = json!(0);
    stack["spec"]["migrations"]["podLabels"] = json!({"appstack.test/fail": "true"});
    stack["spec"]["migrations"]["podAnnotations"] =
        json!({"appstack.test/termination-message": printed});
    apply_stack(&client, ns, &stack).await;
    let failed = wait_for(
        &client,
        ns,
        "leak",
        "Stalled",
        "True",
        Some("MigrationFailed"),
    )
    .await;
    let message = condition_message(&failed, "MigrationsApplied");
    eprintln!("MigrationsApplied: {message}");
    assert!(message.contains("the migration printed"), "{message}");
    assert!(
        message.contains("relation \"items\" does not exist"),
        "the error itself: {message}"
    );
    assert!(message.contains("connecting to [redacted]"), "{message}");
    for secret in [&url, &password, &secret_key, &sendgrid] {
        assert!(
            !message.contains(secret.as_str()),
            "a secret value in the status: {message}"
        );
    }
    let told = eventually("the MigrationFailed Event", LIMIT, || async {
        let told = events(&client, ns, "leak", "MigrationFailed").await;
        (!told.is_empty()).then_some(told)
    })
    .await;
    let note = told[0].note.clone().unwrap_or_default();
    assert!(note.contains("[redacted]"), "{note}");
    for secret in [&url, &password, &secret_key, &sendgrid] {
        assert!(
            !note.contains(secret.as_str()),
            "a secret value in an Event: {note}"
        );
    }
    // The backend keeps serving the last migrated revision.
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), ns);
    let backend = deployments.get("leak-backend").await.unwrap();
    let image = backend.spec.template.spec.unwrap().containers[0]
        .image
        .clone()
        .unwrap();
    assert_eq!(image, "ghcr.io/acme/shop-backend:1.4.2");
}
