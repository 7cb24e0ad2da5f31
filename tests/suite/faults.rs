//! Repeated faults on the real local control plane: the operator killed
//! (SIGKILL) again and again while stacks converge, and leader election
//! against a lease holder whose clock is far off. The API server restarted
//! mid-rollout is in `tests/disruption.rs`, which runs alone.
//!
//! `APPSTACK_FAULTS=full` runs the full scenario (30 stacks, 6 kills); the
//! default is a quick one (6 stacks, 3 kills). Both print what they saw.

use std::time::{Duration, Instant};

use crate::common::faults::{Moments, Rollout, Size};
use crate::common::{LIMIT, Operator, RELEASE, eventually, service_account_identity, setup};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_killed_operator_loses_nothing() {
    let size = Size::from_env();
    let started = Instant::now();
    let rollout = Rollout::start("killed", size).await;
    let ns = rollout.ns().to_string();
    let identity = service_account_identity(&ns, RELEASE).await;
    let args = ["--namespace", ns.as_str()];
    let mut moments = Moments::seeded();
    let mut operator = Operator::start_as(identity.clone(), &args, &[]).await;
    let kills = size.kills();
    for kill in 1..=kills {
        tokio::time::sleep(
            moments.between(Duration::from_millis(500), Duration::from_millis(5000)),
        )
        .await;
        assert!(
            operator.running(),
            "the operator exited on its own before kill {kill}: {}",
            operator.lines().join("\n")
        );
        println!("{}  <- SIGKILL {kill} of {kills}", rollout.states().await);
        operator.stop().await;
        operator = Operator::start_as(identity.clone(), &args, &[]).await;
        if kill == kills.div_ceil(2) {
            rollout.midway().await;
        }
    }
    let converged = rollout.converge(size.converge_limit()).await;
    println!("{}", rollout.states().await);
    assert!(operator.running(), "the last operator still runs");
    // Trailing watch events settle before the audit log is read.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let user = operator.user.clone();
    operator.stop().await;
    rollout.verify(&user, false).await;
    println!(
        "{size:?}: {} stacks, {kills} kills; Ready {converged:.1?} after the last restart; \
         {:.1?} in all",
        rollout.names.len(),
        started.elapsed()
    );
}

/// A lease held by a process on another machine whose clock is `skew` off:
/// it renews every second, each `renewTime` a second after the last by its
/// clock. The candidate must not take over while the renewals go on, and
/// must once they stop.
async fn a_skewed_holder(prefix: &str, skew: SignedDuration) {
    const LEASE_SECONDS: u64 = 4;
    const NAME: &str = "appstack-operator";
    let (client, namespace) = setup(prefix).await;
    let ns = namespace.name.as_str();
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let renewed_at =
        |tick: i64| MicroTime(Timestamp::now() + skew + SignedDuration::from_secs(tick));
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": NAME},
        "spec": {"holderIdentity": "elsewhere", "leaseDurationSeconds": LEASE_SECONDS,
                 "leaseTransitions": 0}
    }))
    .unwrap();
    let mut lease = leases.create(&PostParams::default(), &lease).await.unwrap();
    let renew = |mut lease: Lease, tick: i64| {
        let leases = leases.clone();
        async move {
            let spec = lease.spec.as_mut().unwrap();
            spec.acquire_time.get_or_insert(renewed_at(0));
            spec.renew_time = Some(renewed_at(tick));
            leases
                .replace(NAME, &PostParams::default(), &lease)
                .await
                .expect("the holder renews: nobody took the lease")
        }
    };
    lease = renew(lease, 0).await;

    let operator = Operator::start_with(
        &[
            "--namespace",
            ns,
            "--leader-elect",
            "--leader-elect-namespace",
            ns,
            "--leader-elect-identity",
            "candidate",
            "--leader-elect-lease-duration-seconds",
            &LEASE_SECONDS.to_string(),
            "--leader-elect-retry-period-seconds",
            "1",
        ],
        &[],
    )
    .await;
    operator.wait_for_health("/readyz", 200).await;

    // Three lease durations of renewals: the lease stays with its holder.
    let holder = |lease: &Lease| {
        lease
            .spec
            .as_ref()
            .and_then(|spec| spec.holder_identity.clone())
    };
    for tick in 1..=(3 * LEASE_SECONDS as i64) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(holder(&lease).as_deref(), Some("elsewhere"));
        lease = renew(lease, tick).await;
    }
    let stopped = Instant::now();
    assert!(
        !operator.logged("became the leader"),
        "taken over while renewed: {}",
        operator.lines().join("\n")
    );

    // The renewals stop: the candidate takes over once a lease duration has
    // passed on its own clock since it saw the last one.
    eventually("the candidate takes over", LIMIT, || async {
        let lease = leases.get(NAME).await.ok()?;
        (holder(&lease).as_deref() == Some("candidate")).then_some(())
    })
    .await;
    let took = stopped.elapsed();
    println!(
        "holder's clock {skew:?} off: taken over {took:.1?} after its last renewal (lease {LEASE_SECONDS} s)"
    );
    assert!(
        took >= Duration::from_secs(LEASE_SECONDS - 1),
        "taken over {took:?} after the last renewal, before the lease could expire"
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_holder_renewing_with_a_clock_a_day_behind_keeps_the_lease_until_it_stops() {
    a_skewed_holder("skew-past", SignedDuration::from_hours(-24)).await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run scripts/test.sh"]
async fn a_holder_renewing_with_a_clock_a_day_ahead_loses_the_lease_once_it_stops() {
    a_skewed_holder("skew-future", SignedDuration::from_hours(24)).await;
}
