//! What a pass needs from the process: the client, who reports its Events,
//! the metrics, the caches of the stack's scope, and the process's side of
//! every database.

use std::sync::Arc;

use kube::Client;
use kube::runtime::events::Reporter;

use crate::children::network::OperatorPods;
use crate::database::Databases;
use crate::runtime::cache::Caches;
use crate::runtime::metrics::Metrics;

/// What a pass needs: the client and who reports its Events, the metrics,
/// the caches of the stack's scope, and the process's side of every database.
pub struct Context {
    pub client: Client,
    pub reporter: Reporter,
    pub metrics: Metrics,
    pub caches: Arc<Caches>,
    pub databases: Arc<Databases>,
    /// The operator's pods, when they connect to managed databases from
    /// inside the cluster: the databases' NetworkPolicies let them in.
    pub operator_pods: Option<OperatorPods>,
}
