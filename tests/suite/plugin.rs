//! `kubectl appstack` against live stacks on the local control plane, one
//! in each state a user asks it about: progressing (a migration that runs),
//! Ready, a failed migration, and a pod that cannot run. `status` in text
//! and JSON, `retry` of the failed migration, and `render` as `appstack
//! render` prints it.

use crate::common::{
    LIMIT, Operator, apply_stack, eventually, example, plugin, setup, wait_for, wait_ready,
};
use serde_json::{Value, json};

async fn status_json(name: &str, namespace: &str) -> Value {
    let output = plugin(&["status", name, "-n", namespace, "-o", "json"]).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON on standard output")
}

async fn status_text(name: &str, namespace: &str) -> String {
    let output = plugin(&["status", name, "-n", namespace]).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn stage<'a>(report: &'a Value, condition: &str) -> &'a Value {
    report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["condition"] == condition)
        .unwrap_or_else(|| panic!("no stage {condition} in {report:#}"))
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn status_retry_and_render_read_stacks_in_every_state() {
    let (client, namespace) = setup("plugin").await;
    let ns = namespace.name.as_str();
    let _operator = Operator::start(ns).await;

    let ready = example("ready");
    let mut running = example("running");
    running["spec"]["migrations"]["podLabels"] = json!({"appstack.test/not-ready": "true"});
    let mut pulling = example("pulling");
    pulling["spec"]["backend"]["podLabels"] =
        json!({"appstack.test/waiting-reason": "ImagePullBackOff"});
    pulling["spec"]["backend"]["podAnnotations"] = json!({"appstack.test/waiting-message":
        "Back-off pulling image \"ghcr.io/acme/shop-backend:1.4.2\""});
    let mut failing = example("failing");
    for stack in [&ready, &running, &pulling, &failing] {
        apply_stack(&client, ns, stack).await;
    }
    wait_ready(&client, ns, "ready").await;
    wait_ready(&client, ns, "failing").await;
    failing["spec"]["backend"]["image"] = json!("ghcr.io/acme/shop-backend:2.0.0");
    failing["spec"]["migrations"]["backoffLimit"] = json!(0);
    failing["spec"]["migrations"]["podLabels"] = json!({"appstack.test/fail": "true"});
    failing["spec"]["migrations"]["podAnnotations"] = json!({"appstack.test/termination-message":
        "alembic.util.exc.CommandError: Can't locate revision identified by 'c0ffee'"});
    apply_stack(&client, ns, &failing).await;
    wait_for(
        &client,
        ns,
        "failing",
        "Stalled",
        "True",
        Some("MigrationFailed"),
    )
    .await;
    wait_for(
        &client,
        ns,
        "running",
        "MigrationsApplied",
        "False",
        Some("MigrationRunning"),
    )
    .await;
    wait_for(
        &client,
        ns,
        "pulling",
        "BackendAvailable",
        "False",
        Some("ImagePullBackOff"),
    )
    .await;

    // Ready: every stage True, pods of each component running, the URL.
    let report = status_json("ready", ns).await;
    assert_eq!(report["state"], "Ready");
    assert!(
        report["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|row| row["status"] == "True"),
        "{report:#}"
    );
    let components: std::collections::BTreeSet<&str> = report["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pod| pod["component"].as_str().unwrap())
        .collect();
    assert!(
        ["database", "backend", "frontend"]
            .iter()
            .all(|component| components.contains(component)),
        "{components:?}"
    );
    assert_eq!(report["url"], "https://shop.example.com");
    assert_eq!(report["jobs"][0]["state"], "Succeeded");
    assert!(report["lastFailure"].is_null());

    // Progressing: the migration runs; the stages after it wait.
    let report = status_json("running", ns).await;
    assert_eq!(report["state"], "Reconciling");
    assert_eq!(
        stage(&report, "MigrationsApplied")["reason"],
        "MigrationRunning"
    );
    assert_eq!(report["jobs"][0]["state"], "Running");
    let text = status_text("running", ns).await;
    assert!(
        text.starts_with(&format!(
            "AppStack {ns}/running: Reconciling (MigrationRunning)"
        )),
        "{text}"
    );

    // A pod that cannot run: named with the kubelet's reason.
    let report = status_json("pulling", ns).await;
    let backend = report["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|pod| pod["component"] == "backend" && pod["reason"] == "ImagePullBackOff")
        .unwrap_or_else(|| panic!("a backend pod pulling: {report:#}"));
    assert!(
        backend["message"]
            .as_str()
            .unwrap()
            .contains("Back-off pulling image")
    );
    let text = status_text("pulling", ns).await;
    assert!(text.contains("ImagePullBackOff"), "{text}");

    // A failed migration: history, the failure and what it printed.
    let report = status_json("failing", ns).await;
    assert_eq!(report["state"], "Stalled");
    let jobs = report["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2, "{jobs:#?}");
    assert!(
        jobs[0]["state"].as_str().unwrap().starts_with("Failed"),
        "{jobs:#?}"
    );
    assert_eq!(jobs[1]["state"], "Succeeded");
    let failure = report["lastFailure"].as_str().unwrap();
    assert!(
        failure.contains("Can't locate revision identified by 'c0ffee'"),
        "{failure}"
    );
    let text = status_text("failing", ns).await;
    eprintln!("{text}");
    assert!(text.contains("Last failure"), "{text}");
    assert!(
        text.contains(&format!("kubectl appstack retry failing -n {ns}")),
        "{text}"
    );

    // retry: a new token, a new revision, a new Job.
    let ready_retry = plugin(&["retry", "ready", "-n", ns]).await;
    assert!(
        !ready_retry.status.success(),
        "nothing to retry on a Ready stack"
    );
    let retried = plugin(&["retry", "failing", "-n", ns]).await;
    assert!(
        retried.status.success(),
        "{}",
        String::from_utf8_lossy(&retried.stderr)
    );
    let failed_job = jobs[0]["name"].as_str().unwrap().to_string();
    eventually("a new migration Job after retry", LIMIT, || async {
        let report = status_json("failing", ns).await;
        let newest = report["jobs"][0]["name"].as_str()?.to_string();
        (newest != failed_job).then_some(())
    })
    .await;

    // render: what `appstack render` prints.
    let example_file = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples/shop.yaml");
    let rendered = plugin(&["render", "-f", example_file]).await;
    assert!(rendered.status.success());
    let expected =
        appstack::cli::render::render(&std::fs::read_to_string(example_file).unwrap(), "default")
            .unwrap();
    assert_eq!(String::from_utf8(rendered.stdout).unwrap(), expected);
}
