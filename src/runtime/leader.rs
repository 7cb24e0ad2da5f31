//! Leader election on a `coordination.k8s.io/v1` Lease, with the semantics
//! of client-go's `leaderelection`: the holder renews every retry period; a
//! lease not renewed for its duration may be taken over; updates carry the
//! resourceVersion, so two candidates never both win. A leader stopping
//! gracefully clears the holder, and standbys watch the Lease, so handover
//! does not wait for expiry.
//!
//! Expiry is measured as client-go measures it: from the moment this
//! candidate last saw the lease record change, on its own monotonic clock.
//! The `renewTime` in the record was written by another machine's clock,
//! which may be minutes or days off; it only ever counts as "the record
//! changed".

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
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
    let mut observed = Observed::default();
    loop {
        let leading_before = state.borrow().leading;
        let attempt = tokio::time::timeout(
            settings.retry_period.max(Duration::from_secs(1)),
            try_acquire_or_renew(&api, &settings, &mut observed),
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

/// The lease record as this candidate last saw it, and when it last saw it
/// change, on this process's monotonic clock (client-go's `observedRecord`
/// and `observedTime`).
#[derive(Debug, Default)]
struct Observed {
    record: Option<LeaseSpec>,
    changed_at: Option<Instant>,
}

impl Observed {
    /// Notes the record read at `now`; the clock restarts only when it
    /// differs from the one seen before.
    fn see(&mut self, record: &LeaseSpec, now: Instant) {
        if self.record.as_ref() != Some(record) {
            self.record = Some(record.clone());
            self.changed_at = Some(now);
        }
    }

    /// Whether the holder's lease still runs at `now`: less than its
    /// `leaseDurationSeconds` have passed since the record last changed.
    fn valid(&self, now: Instant) -> bool {
        let (Some(record), Some(changed_at)) = (&self.record, self.changed_at) else {
            return false;
        };
        let seconds = record.lease_duration_seconds.unwrap_or(0).max(0);
        let duration = Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
        now < changed_at + duration
    }
}

/// What a candidate does with the lease record it read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decision {
    /// Another holder's lease still runs: stand by.
    Wait,
    /// This process holds the lease: renew it.
    Renew,
    /// Nobody holds the lease, or its holder stopped renewing: take it.
    Acquire,
}

/// Decides on the record read at `now`, after noting it in `observed`.
fn decide(observed: &mut Observed, record: &LeaseSpec, identity: &str, now: Instant) -> Decision {
    observed.see(record, now);
    let holder = record
        .holder_identity
        .as_deref()
        .filter(|holder| !holder.is_empty());
    match holder {
        Some(holder) if holder == identity => Decision::Renew,
        Some(_) if observed.valid(now) => Decision::Wait,
        _ => Decision::Acquire,
    }
}

/// One election round: returns whether this process holds the lease now.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    settings: &LeaseSettings,
    observed: &mut Observed,
) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let duration_seconds = i32::try_from(settings.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let Some(lease) = api.get_opt(&settings.name).await? else {
        let spec = LeaseSpec {
            holder_identity: Some(settings.identity.clone()),
            lease_duration_seconds: Some(duration_seconds),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        };
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(settings.name.clone()),
                namespace: Some(settings.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(spec.clone()),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => {
                observed.see(&spec, Instant::now());
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let held_by_us = match decide(observed, &spec, &settings.identity, Instant::now()) {
        Decision::Wait => return Ok(false),
        Decision::Renew => true,
        Decision::Acquire => false,
    };
    let renewed = LeaseSpec {
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
    };
    let mut updated = lease;
    updated.spec = Some(renewed.clone());
    // The resourceVersion read above makes this a compare-and-swap.
    match api
        .replace(&settings.name, &PostParams::default(), &updated)
        .await
    {
        Ok(_) => {
            observed.see(&renewed, Instant::now());
            Ok(true)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
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
    let config = super::resilient::config().fields(&format!("metadata.name={name}"));
    let mut events = std::pin::pin!(super::resilient::watch("Lease", watcher(api, config)));
    while events.next().await.is_some() {
        changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(holder: &str, renewed_second: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed_second).unwrap())),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_lease_expires_its_duration_after_this_candidate_saw_it_change() {
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let mut observed = Observed::default();
        let held = record("a", 1_000);
        assert_eq!(decide(&mut observed, &held, "b", at(0)), Decision::Wait);
        assert_eq!(decide(&mut observed, &held, "b", at(14)), Decision::Wait);
        assert_eq!(
            decide(&mut observed, &held, "b", at(15)),
            Decision::Acquire,
            "unchanged for its duration"
        );
        assert_eq!(decide(&mut observed, &held, "a", at(15)), Decision::Renew);
    }

    #[test]
    fn renew_time_written_by_a_skewed_clock_never_decides_expiry() {
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let day = 86_400;
        let now = Timestamp::now().as_second();
        for offset in [-day, day] {
            let mut observed = Observed::default();
            // Renewed every 10 s, by a clock a day off either way.
            for tick in 0..10u64 {
                let renewed = record("a", now + offset + i64::try_from(tick).unwrap() * 10);
                assert_eq!(
                    decide(&mut observed, &renewed, "b", at(tick * 10)),
                    Decision::Wait,
                    "renewed (offset {offset} s), tick {tick}"
                );
            }
            // The renewals stop: taken over a lease duration after the last.
            let last = record("a", now + offset + 90);
            assert_eq!(decide(&mut observed, &last, "b", at(104)), Decision::Wait);
            assert_eq!(
                decide(&mut observed, &last, "b", at(105)),
                Decision::Acquire
            );
        }
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let mut observed = Observed::default();
        let released = LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            ..LeaseSpec::default()
        };
        assert_eq!(
            decide(&mut observed, &released, "b", Instant::now()),
            Decision::Acquire
        );
    }
}
