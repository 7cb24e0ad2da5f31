//! How GitOps tools read an AppStack's health. Argo CD runs the Lua health
//! check in deploy/argocd/resource_customizations/appstack.dev/AppStack
//! (Argo CD's own layout, so it can go upstream as is), here in Debian's
//! `lua5.1`, the dialect Argo CD embeds. Flux and Helm 4 read kstatus, here
//! through the pinned `kstatus` command (scripts/build-tools.sh). Both read
//! AppStacks taken from the live control plane in each state.
//!
//! `APPSTACK_UPDATE_TESTDATA=1` makes the live test rewrite the testdata
//! files and health_test.yaml from what it read.

use std::path::{Path, PathBuf};

use crate::common::{
    Operator, apply_stack, create_secret, documents, example, setup, wait_for, wait_ready,
};
use appstack::api::crd::AppStack;
use kube::{Api, Client};
use serde_json::{Value, json};

const HEALTH_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/argocd/resource_customizations/appstack.dev/AppStack"
);

/// A JSON value as a Lua 5.1 table constructor (null fields left out, as
/// Argo CD's conversion leaves them nil).
fn lua(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(value) => value.to_string(),
        Value::Number(number) => number.to_string(),
        Value::String(text) => lua_string(text),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(lua).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Object(fields) => {
            let fields: Vec<String> = fields
                .iter()
                .filter(|(_, value)| !value.is_null())
                .map(|(key, value)| format!("[{}] = {}", lua_string(key), lua(value)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
    }
}

fn lua_string(text: &str) -> String {
    let mut quoted = String::from("\"");
    for byte in text.bytes() {
        match byte {
            b'"' => quoted.push_str("\\\""),
            b'\\' => quoted.push_str("\\\\"),
            b' '..=b'~' => quoted.push(byte as char),
            // Lua 5.1 strings are bytes: everything else as a decimal escape.
            _ => quoted.push_str(&format!("\\{byte:03}")),
        }
    }
    quoted.push('"');
    quoted
}

/// Argo CD's reading of `object`: health.lua run on it in lua5.1, as
/// (status, message).
async fn argo_cd_health(object: &Value) -> (String, String) {
    let driver = format!(
        "obj = {}\nlocal hs = dofile({})\nio.write(hs.status, \"\\n\", hs.message or \"\")\n",
        lua(object),
        lua_string(&format!("{HEALTH_DIR}/health.lua"))
    );
    let mut lua = tokio::process::Command::new("lua5.1");
    lua.arg("-");
    let output = crate::common::output_with_stdin(lua, driver.as_bytes()).await;
    assert!(
        output.status.success(),
        "health.lua: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let (status, message) = text.split_once('\n').unwrap();
    (status.to_string(), message.to_string())
}

/// kstatus's reading of `object` (the library Helm 4's --wait and Flux's
/// kustomize-controller use), as (status, message).
async fn kstatus(object: &Value) -> (String, String) {
    let command = tokio::process::Command::new(crate::common::tool("kstatus"));
    let output = crate::common::output_with_stdin(command, object.to_string().as_bytes()).await;
    assert!(
        output.status.success(),
        "kstatus: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reading: Value = serde_json::from_slice(&output.stdout).unwrap();
    (
        reading["status"].as_str().unwrap().to_string(),
        reading["message"].as_str().unwrap().to_string(),
    )
}

/// The kstatus status that means what an Argo CD health status means.
fn kstatus_equivalent(health: &str) -> &'static str {
    match health {
        "Healthy" => "Current",
        "Progressing" => "InProgress",
        "Degraded" => "Failed",
        other => panic!("health.lua returned {other}"),
    }
}

fn testdata(file: &str) -> PathBuf {
    Path::new(HEALTH_DIR).join("testdata").join(file)
}

#[tokio::test]
#[ignore = "needs lua5.1 and kstatus: run scripts/test.sh"]
async fn health_test_yaml_cases_pass_in_lua_and_kstatus_agrees() {
    let cases: Value = serde_yaml::from_str(
        &std::fs::read_to_string(Path::new(HEALTH_DIR).join("health_test.yaml")).unwrap(),
    )
    .unwrap();
    let cases = cases["tests"].as_array().unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for case in cases {
        let path = Path::new(HEALTH_DIR).join(case["inputPath"].as_str().unwrap());
        let object = documents(&std::fs::read_to_string(&path).unwrap()).remove(0);
        let (status, message) = argo_cd_health(&object).await;
        assert_eq!(
            (status.as_str(), message.as_str()),
            (
                case["healthStatus"]["status"].as_str().unwrap(),
                case["healthStatus"]["message"].as_str().unwrap()
            ),
            "{}",
            path.display()
        );
        let (reading, _) = kstatus(&object).await;
        assert_eq!(reading, kstatus_equivalent(&status), "{}", path.display());
        seen.insert(status);
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["Degraded", "Healthy", "Progressing"]
    );
}

#[test]
fn lua_literals_escape_what_lua_5_1_needs() {
    assert_eq!(
        lua(&json!({"a": [1, "x\"y\\z"], "b": null, "c": "é\n"})),
        r#"{["a"] = {1, "x\"y\\z"}, ["c"] = "\195\169\010"}"#
    );
}

/// One state of an AppStack as read live, with what both tools must say.
struct State {
    file: &'static str,
    health: &'static str,
    object: Value,
}

/// The live object as testdata: without managedFields, and in namespace
/// `prod` rather than the test's own.
fn as_testdata(stack: &AppStack, namespace: &str) -> Value {
    let mut object = serde_json::to_value(stack).unwrap();
    object["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("managedFields");
    let text = object.to_string().replace(namespace, "prod");
    serde_json::from_str(&text).unwrap()
}

/// What the committed testdata must share with the live object: the
/// generations and each condition's type, status and reason.
fn health_relevant(object: &Value) -> Value {
    let conditions: Vec<Value> = object["status"]["conditions"]
        .as_array()
        .map(|conditions| {
            conditions
                .iter()
                .map(|c| json!([c["type"], c["status"], c["reason"]]))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "generation": object["metadata"]["generation"],
        "observedGeneration": object["status"]["observedGeneration"],
        "conditions": conditions,
    })
}

async fn read(client: &Client, namespace: &str, name: &str) -> AppStack {
    let stacks: Api<AppStack> = Api::namespaced(client.clone(), namespace);
    stacks.get(name).await.unwrap()
}

#[tokio::test]
#[ignore = "needs the local control plane, lua5.1 and kstatus: run scripts/test.sh"]
async fn argo_cd_and_kstatus_read_each_live_state_alike() {
    let (client, namespace) = setup("gitops").await;
    let ns = namespace.name.as_str();
    let mut stack = example("shop");
    // Without a ServiceMonitor, so MonitoringReady does not depend on
    // whether another test has the Prometheus Operator's CRD installed.
    stack["spec"].as_object_mut().unwrap().remove("monitoring");
    // A referenced Secret that does not exist yet keeps the stack
    // reconciling until it is created.
    stack["spec"]["env"].as_array_mut().unwrap().push(
        json!({"name": "STRIPE_KEY", "valueFrom": {"secretKeyRef": {"name": "stripe", "key": "api-key"}}}),
    );
    let mut states = Vec::new();

    // Just created: nobody has reconciled it (observedGeneration -1).
    apply_stack(&client, ns, &stack).await;
    let created = read(&client, ns, "shop").await;
    assert_eq!(created.status.as_ref().unwrap().observed_generation, -1);
    states.push(State {
        file: "new.yaml",
        health: "Progressing",
        object: as_testdata(&created, ns),
    });

    // Reconciling: the operator waits for the referenced Secret.
    let operator = Operator::start(ns).await;
    let reconciling = wait_for(
        &client,
        ns,
        "shop",
        "SecretsReady",
        "False",
        Some("SecretNotFound"),
    )
    .await;
    assert_eq!(
        crate::common::condition(&reconciling, "Reconciling")
            .unwrap()
            .0,
        "True"
    );
    states.push(State {
        file: "reconciling.yaml",
        health: "Progressing",
        object: as_testdata(&reconciling, ns),
    });

    // Ready.
    create_secret(&client, ns, "stripe", "api-key", "sk_test_gitops").await;
    let ready = wait_ready(&client, ns, "shop").await;
    states.push(State {
        file: "healthy.yaml",
        health: "Healthy",
        object: as_testdata(&ready, ns),
    });

    // Spec changed, not yet observed: the operator is down when a new
    // revision (whose migration will fail) arrives.
    operator.stop().await;
    crate::common::fail_next_migration(&mut stack);
    apply_stack(&client, ns, &stack).await;
    let changed = read(&client, ns, "shop").await;
    assert_eq!(changed.metadata.generation, Some(2));
    assert_eq!(changed.status.as_ref().unwrap().observed_generation, 1);
    states.push(State {
        file: "spec_changed.yaml",
        health: "Progressing",
        object: as_testdata(&changed, ns),
    });

    // Stalled by the failed migration.
    let _operator = Operator::start(ns).await;
    let stalled = crate::common::wait_stalled_by_migration(&client, ns, "shop").await;
    states.push(State {
        file: "degraded_migration_failed.yaml",
        health: "Degraded",
        object: as_testdata(&stalled, ns),
    });

    let update = std::env::var_os("APPSTACK_UPDATE_TESTDATA").is_some();
    let mut cases = Vec::new();
    for state in &states {
        let (health, message) = argo_cd_health(&state.object).await;
        assert_eq!(health, state.health, "Argo CD on {}: {message}", state.file);
        let (reading, kstatus_message) = kstatus(&state.object).await;
        assert_eq!(
            reading,
            kstatus_equivalent(&health),
            "kstatus on {}: {kstatus_message}",
            state.file
        );
        if state.health == "Degraded" {
            assert!(message.starts_with("MigrationFailed: "), "{message}");
        }
        println!(
            "{:32} Argo CD {health:12} kstatus {reading:11} {message}",
            state.file
        );
        let path = testdata(state.file);
        if update {
            std::fs::write(&path, serde_yaml::to_string(&state.object).unwrap()).unwrap();
        }
        let committed = documents(&std::fs::read_to_string(&path).unwrap()).remove(0);
        assert_eq!(
            health_relevant(&committed),
            health_relevant(&state.object),
            "{} differs from the live object: rerun with APPSTACK_UPDATE_TESTDATA=1",
            path.display()
        );
        cases.push(json!({
            "healthStatus": {"status": health, "message": message},
            "inputPath": format!("testdata/{}", state.file),
        }));
    }
    if update {
        std::fs::write(
            Path::new(HEALTH_DIR).join("health_test.yaml"),
            serde_yaml::to_string(&json!({"tests": cases})).unwrap(),
        )
        .unwrap();
    }
}
