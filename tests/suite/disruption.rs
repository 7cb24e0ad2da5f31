//! Disruptions of the shared control plane. `scripts/test.sh` runs these
//! alone, after the rest of the suite, since they take the API server away
//! from every other test.

use std::time::{Duration, Instant};

use crate::common::faults::{Moments, Rollout, Size};
use crate::common::{
    LIMIT, Operator, RELEASE, apply_stack, cluster_dir, eventually, example,
    service_account_identity, setup, wait_ready, wait_ready_within,
};
use appstack::api::crd::AppStack;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{DeleteParams, GroupVersionKind};
use serde_json::json;

/// How long the stack may take to be Ready again after the API-server
/// restart. That wait is kube-controller-manager's, not the operator's: its
/// client-go reflectors back off up to 30 s per retry and, on a loaded
/// machine, have taken over a minute to resume rolling Deployments out.
const CONTROL_PLANE_RECOVERY: Duration = Duration::from_secs(300);

#[tokio::test]
#[ignore = "disrupts the local control plane: scripts/test.sh runs it alone"]
async fn disruption_the_operator_rejoins_a_restarted_api_server() {
    let (client, namespace) = setup("restart").await;
    let ns = namespace.name.as_str();
    // With leader election, as deployed. The outage outlasts the 6 s lease:
    // the leader steps down, stands by, and leads again afterwards.
    let mut operator = Operator::start_with(
        &[
            "--namespace",
            ns,
            "--leader-elect",
            "--leader-elect-namespace",
            ns,
            "--leader-elect-lease-duration-seconds",
            "6",
            "--leader-elect-retry-period-seconds",
            "1",
        ],
        &[],
    )
    .await;
    let mut stack = example("shop");
    apply_stack(&client, ns, &stack).await;
    wait_ready(&client, ns, "shop").await;

    // Stop kube-apiserver for 10 s (etcd keeps running), then start it again.
    restart_api_server(10).await;
    assert!(
        tokio::time::timeout(
            Duration::from_millis(100),
            operator.exit_status(Duration::from_secs(1))
        )
        .await
        .is_err(),
        "the operator kept running through the outage"
    );
    operator.wait_for_health("/readyz", 200).await;

    // The operator's part: the change reaches the backend Deployment and
    // the status reports the new generation. Ready follows once
    // kube-controller-manager, which has its own reconnect backoff, has
    // rolled the Deployment out.
    let changed = Instant::now();
    stack["spec"]["backend"]["replicas"] = json!(1);
    apply_stack(&client, ns, &stack).await;
    let client = crate::common::client().await;
    let stacks: Api<AppStack> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    eventually("the operator applies the change", LIMIT, || async {
        let stack = stacks.get("shop").await.ok()?;
        let observed = stack.status?.observed_generation;
        let replicas = deployments.get("shop-backend").await.ok()?.spec.replicas;
        (Some(observed) == stack.metadata.generation && replicas == Some(1)).then_some(())
    })
    .await;
    let applied = changed.elapsed();
    wait_ready_within(&client, ns, "shop", CONTROL_PLANE_RECOVERY).await;
    let ready = changed.elapsed();
    println!(
        "after the API server restart, a spec change was applied in {applied:.2?} \
         and the stack was Ready again in {ready:.2?}"
    );
    assert!(
        applied <= Duration::from_secs(5),
        "the change was applied after {applied:?}"
    );
    assert!(
        operator.logged("watch failed; retrying"),
        "the outage was seen and survived"
    );
    let lines = operator.lines();
    let stood_by = lines
        .iter()
        .position(|line| line.contains("stopped reconciling, standing by"))
        .expect("the leader that could not renew stepped down");
    assert!(
        lines[stood_by..]
            .iter()
            .any(|line| line.contains("became the leader")),
        "and led again"
    );
}

/// Stops kube-apiserver for `seconds` (etcd keeps running) and starts it
/// again, waiting until it is ready.
async fn restart_api_server(seconds: u32) {
    let restart =
        tokio::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster.sh"))
            .args(["restart-apiserver", &seconds.to_string()])
            .env("APPSTACK_CLUSTER_DIR", cluster_dir())
            .status()
            .await
            .expect("run cluster.sh restart-apiserver");
    assert!(restart.success(), "the API server restarted");
}

#[tokio::test]
#[ignore = "disrupts the local control plane: scripts/test.sh runs it alone"]
async fn disruption_an_api_server_restart_mid_rollout_loses_nothing() {
    let size = Size::from_env();
    let started = Instant::now();
    let rollout = Rollout::start("apirestart", size).await;
    let ns = rollout.ns().to_string();
    let identity = service_account_identity(&ns, RELEASE).await;
    let mut operator = Operator::start_as(identity, &["--namespace", ns.as_str()], &[]).await;
    let mut moments = Moments::seeded();
    tokio::time::sleep(moments.between(Duration::from_secs(1), Duration::from_secs(5))).await;
    println!("{}  <- API server stopped for 10 s", rollout.states().await);
    restart_api_server(10).await;
    println!("{}  <- API server ready again", rollout.states().await);
    rollout.midway().await;
    assert!(
        operator.running(),
        "the operator kept running through the outage"
    );
    // The wait includes kube-controller-manager's own reconnect backoff.
    let converged = rollout
        .converge(size.converge_limit().max(CONTROL_PLANE_RECOVERY))
        .await;
    println!("{}", rollout.states().await);
    assert!(operator.running(), "the operator never exited");
    assert!(
        operator.logged("watch failed; retrying"),
        "the outage was seen and survived"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let user = operator.user.clone();
    operator.stop().await;
    rollout.verify(&user, true).await;
    println!(
        "{size:?}: {} stacks; Ready {converged:.1?} after the API server came back; {:.1?} in all",
        rollout.names.len(),
        started.elapsed()
    );
}

#[tokio::test]
#[ignore = "removes the AppStack CRD from the local control plane: scripts/test.sh runs it alone"]
async fn disruption_without_the_crd_the_operator_exits_with_the_install_hint() {
    let (client, namespace) = setup("nocrd").await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.delete("appstacks.appstack.dev", &DeleteParams::default())
        .await
        .expect("delete the AppStack CRD");
    let gvk = GroupVersionKind::gvk("appstack.dev", "v1alpha1", "AppStack");
    eventually("the API server stops serving AppStacks", LIMIT, || async {
        kube::discovery::pinned_kind(&client, &gvk)
            .await
            .is_err()
            .then_some(())
    })
    .await;

    let mut operator = Operator::start(&namespace.name).await;
    let status = operator.exit_status(Duration::from_secs(30)).await;
    crate::common::install_crd(&client).await;
    assert_eq!(status.code(), Some(2), "{}", operator.lines().join("\n"));
    // The output is read by background tasks that may lag the exit.
    eventually(
        "the error says how to install the CRD",
        Duration::from_secs(5),
        || async {
            operator
                .logged("appstack crd | kubectl apply -f -")
                .then_some(())
        },
    )
    .await;
}
