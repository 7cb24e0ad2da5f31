//! Disruptions of the shared control plane. `scripts/test.sh` runs these
//! alone, after the rest of the suite, since they take the API server away
//! from every other test.

mod common;

use std::time::{Duration, Instant};

use common::{LIMIT, Operator, apply_stack, cluster_dir, eventually, example, setup, wait_ready};
use serde_json::json;

#[tokio::test]
#[ignore = "disrupts the local control plane: scripts/test.sh runs it alone"]
async fn disruption_the_operator_rejoins_a_restarted_api_server() {
    let (client, namespace) = setup("restart").await;
    let ns = namespace.name.as_str();
    let mut operator = Operator::start(ns).await;
    let mut stack = example("shop");
    apply_stack(&client, ns, &stack).await;
    wait_ready(&client, ns, "shop").await;

    // Stop kube-apiserver for 10 s (etcd keeps running), then start it again.
    let restart =
        tokio::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster.sh"))
            .args(["restart-apiserver", "10"])
            .env("APPSTACK_CLUSTER_DIR", cluster_dir())
            .status()
            .await
            .expect("run cluster.sh restart-apiserver");
    assert!(restart.success(), "the API server restarted");
    assert!(
        tokio::time::timeout(
            Duration::from_millis(100),
            operator.exit_status(Duration::from_secs(1))
        )
        .await
        .is_err(),
        "the operator kept running through the outage"
    );
    eventually("the operator is ready", LIMIT, || async {
        (operator.health("/readyz").await == Some(200)).then_some(())
    })
    .await;

    let changed = Instant::now();
    stack["spec"]["backend"]["replicas"] = json!(1);
    apply_stack(&client, ns, &stack).await;
    let client = common::client().await;
    wait_ready(&client, ns, "shop").await;
    let elapsed = changed.elapsed();
    println!("a spec change made after the API server restart converged in {elapsed:.2?}");
    assert!(
        elapsed <= Duration::from_secs(5),
        "converged after {elapsed:?}"
    );
    assert!(
        operator
            .lines()
            .iter()
            .any(|line| line.contains("watch failed; reconnecting")),
        "the outage was seen and survived"
    );
}
