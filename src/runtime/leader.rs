//! Leader election on a `coordination.k8s.io/v1` Lease, with the semantics
//! of client-go's `leaderelection`: the holder renews every retry period; a
//! lease not renewed for its duration may be taken over; updates carry the
//! resourceVersion, so two candidates never both win. A leader stopping
//! gracefully clears the holder, and standbys watch the Lease, so handover
//! does not wait for expiry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use prometheus::IntGauge;
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

/// Settings of one election.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// This process's name in `holderIdentity`.
    pub identity: String,
    /// How long a lease stays valid after its last renewal.
    pub lease_duration: Duration,
    /// How often the holder renews and a standby retries.
    pub retry_period: Duration,
}

/// What the election loop reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LeaderState {
    /// This process holds the lease.
    pub leading: bool,
    /// The last attempt to read or renew the lease succeeded.
    pub healthy: bool,
}

/// Runs the election until `stop` turns true, publishing the state on
/// `state`; then releases the lease if held.
pub async fn run(
    client: Client,
    settings: LeaseSettings,
    state: watch::Sender<LeaderState>,
    gauge: IntGauge,
    mut stop: watch::Receiver<bool>,
) {
    let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
    let changed = Arc::new(Notify::new());
    let lease_watch = tokio::spawn(notify_on_changes(
        api.clone(),
        settings.name.clone(),
        changed.clone(),
    ));
    // A leader that cannot renew for this long stops leading, before the
    // lease can expire and another process take over.
    let renew_deadline = settings.lease_duration.mul_f32(2.0 / 3.0);
    let mut last_renewed: Option<Instant> = None;
    loop {
        let leading_before = state.borrow().leading;
        let attempt = tokio::time::timeout(
            settings.retry_period.max(Duration::from_secs(1)),
            try_acquire_or_renew(&api, &settings),
        )
        .await;
        let next = match attempt {
            Ok(Ok(leading)) => {
                last_renewed = leading.then(Instant::now);
                LeaderState {
                    leading,
                    healthy: true,
                }
            }
            failed => {
                let error = match failed {
                    Ok(Err(error)) => error.to_string(),
                    _ => "request timed out".to_string(),
                };
                warn!(lease = %settings.name, %error, "could not read or renew the leader lease");
                let still_leading = leading_before
                    && last_renewed.is_some_and(|renewed| renewed.elapsed() < renew_deadline);
                LeaderState {
                    leading: still_leading,
                    healthy: false,
                }
            }
        };
        if next.leading != leading_before {
            if next.leading {
                info!(lease = %settings.name, identity = %settings.identity, "became the leader");
            } else {
                warn!(lease = %settings.name, identity = %settings.identity, "lost the leader lease");
            }
        }
        gauge.set(i64::from(next.leading));
        state.send_replace(next);
        tokio::select! {
            _ = tokio::time::sleep(settings.retry_period) => {}
            // A standby tries at once when the lease changes (released).
            _ = changed.notified(), if !next.leading => {}
            _ = stop.wait_for(|stop| *stop) => break,
        }
    }
    lease_watch.abort();
    if state.borrow().leading {
        match release(&api, &settings).await {
            Ok(()) => info!(lease = %settings.name, "released the leader lease"),
            Err(error) => {
                warn!(lease = %settings.name, %error, "could not release the leader lease")
            }
        }
    }
    gauge.set(0);
    state.send_replace(LeaderState::default());
}

/// One election round: returns whether this process holds the lease now.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    settings: &LeaseSettings,
) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let duration_seconds = i32::try_from(settings.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let Some(lease) = api.get_opt(&settings.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(settings.name.clone()),
                namespace: Some(settings.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(settings.identity.clone()),
                lease_duration_seconds: Some(duration_seconds),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec
        .holder_identity
        .clone()
        .filter(|holder| !holder.is_empty());
    let held_by_us = holder.as_deref() == Some(settings.identity.as_str());
    if !held_by_us && holder.is_some() && !expired(&spec, now) {
        return Ok(false);
    }
    let mut updated = lease.clone();
    updated.spec = Some(LeaseSpec {
        holder_identity: Some(settings.identity.clone()),
        lease_duration_seconds: Some(duration_seconds),
        acquire_time: if held_by_us {
            spec.acquire_time.clone()
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(spec.lease_transitions.unwrap_or(0) + i32::from(!held_by_us)),
        ..spec
    });
    // The resourceVersion read above makes this a compare-and-swap.
    match api
        .replace(&settings.name, &PostParams::default(), &updated)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    renewed.0 + duration < now
}

/// Clears the holder, as client-go does on a graceful release, so a standby
/// takes over at once.
async fn release(api: &Api<Lease>, settings: &LeaseSettings) -> Result<(), kube::Error> {
    let Some(lease) = api.get_opt(&settings.name).await? else {
        return Ok(());
    };
    let mut spec = lease.spec.clone().unwrap_or_default();
    if spec.holder_identity.as_deref() != Some(settings.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(MicroTime(Timestamp::now()));
    let mut released = lease;
    released.spec = Some(spec);
    api.replace(&settings.name, &PostParams::default(), &released)
        .await
        .map(|_| ())
}

async fn notify_on_changes(api: Api<Lease>, name: String, changed: Arc<Notify>) {
    let config = super::watch::config().fields(&format!("metadata.name={name}"));
    let mut events = std::pin::pin!(super::watch::resilient("Lease", watcher(api, config)));
    while events.next().await.is_some() {
        changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_expires_its_duration_after_the_last_renewal() {
        let renewed = Timestamp::from_second(1_000).unwrap();
        let spec = LeaseSpec {
            holder_identity: Some("a".into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(renewed)),
            ..LeaseSpec::default()
        };
        assert!(!expired(&spec, Timestamp::from_second(1_014).unwrap()));
        assert!(expired(&spec, Timestamp::from_second(1_016).unwrap()));
        assert!(expired(&LeaseSpec::default(), renewed), "never renewed");
    }
}
