//! Status writes a reconcile holds back: per stack, since when its status
//! has differed from what passes found only in messages.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Stacks whose status differs from what passes found only in messages,
/// and since when: the reconcile writes their messages within a window of
/// its own (see `reconcile::status::COALESCE`).
#[derive(Debug, Default)]
pub struct Deferred {
    since: Mutex<HashMap<String, Instant>>,
}

impl Deferred {
    /// How long the status of stack `uid`, whose messages alone changed,
    /// still waits within `window`; `None` when it is due now.
    pub fn wait(&self, uid: &str, window: Duration) -> Option<Duration> {
        let now = Instant::now();
        let mut since = self.since.lock().expect("deferred lock");
        let first = *since.entry(uid.to_string()).or_insert(now);
        let left = window.saturating_sub(now.duration_since(first));
        (!left.is_zero()).then_some(left)
    }

    /// The status of stack `uid` was written, or needs no write, or the
    /// stack is gone.
    pub fn forget(&self, uid: &str) {
        self.since.lock().expect("deferred lock").remove(uid);
    }

    pub fn len(&self) -> usize {
        self.since.lock().expect("deferred lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
