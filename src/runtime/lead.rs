//! Terms of leading: reconcile while this process leads (always, without
//! leader election); a leader that loses its lease stops at once and stands
//! by until it wins the lease again.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tokio::sync::watch;
use tracing::{info, warn};

use super::controller::{self, RunOptions};
use super::leader::LeaderState;
use super::metrics::Metrics;
use super::server::ProcessState;

/// What reconciling needs, for each term of leading.
pub struct Lead {
    pub client: Client,
    pub metrics: Metrics,
    pub options: RunOptions,
    pub state: Arc<ProcessState>,
    /// How long in-flight passes may take to finish on shutdown.
    pub grace: Duration,
}

/// How a term of reconciling ended.
enum Ended {
    /// Shutdown was asked for.
    Stopped,
    /// Another process may lead now.
    LostLease,
}

impl Lead {
    /// Leads term after term until `stopped` completes. Without
    /// `leadership` (no election) there is one term.
    pub async fn run(
        &self,
        stopped: impl Future<Output = ()> + Clone + Send + Sync + 'static,
        leadership: Option<watch::Receiver<LeaderState>>,
    ) {
        loop {
            if let Some(leadership) = &leadership {
                let mut leadership = leadership.clone();
                info!("waiting to become the leader");
                let leading = tokio::select! {
                    result = leadership.wait_for(|state| state.leading) => result.is_ok(),
                    _ = stopped.clone() => false,
                };
                if !leading {
                    return;
                }
            }
            match self.term(stopped.clone(), leadership.clone()).await {
                Ended::Stopped => return,
                Ended::LostLease => {
                    warn!("lost the leader lease: stopped reconciling, standing by");
                }
            }
        }
    }

    /// Reconciles until `stopped` (in-flight passes get the grace period)
    /// or until `leadership` says the lease is lost (in-flight passes are
    /// dropped at once: another process may lead soon).
    async fn term(
        &self,
        stopped: impl Future<Output = ()> + Clone + Send + Sync + 'static,
        leadership: Option<watch::Receiver<LeaderState>>,
    ) -> Ended {
        let controller = controller::run(
            self.client.clone(),
            self.metrics.clone(),
            self.options.clone(),
            self.state.clone(),
            stopped.clone(),
        );
        let lost = async move {
            match leadership {
                Some(mut leadership) => {
                    let _ = leadership.wait_for(|state| !state.leading).await;
                }
                None => futures::future::pending::<()>().await,
            }
        };
        tokio::pin!(controller);
        let ended = tokio::select! {
            () = &mut controller => Ended::Stopped,
            _ = stopped => {
                if tokio::time::timeout(self.grace, &mut controller).await.is_err() {
                    warn!(grace = ?self.grace, "in-flight reconciles did not finish in time");
                }
                Ended::Stopped
            }
            _ = lost => Ended::LostLease,
        };
        self.state.forget_caches();
        ended
    }
}
