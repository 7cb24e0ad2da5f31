//! Watches that survive an API server restart. Each watch retries on its own
//! capped backoff, so one failing watch never pauses the others, and a watch
//! told its resourceVersion has expired (410 Gone, as every watch is after a
//! restart) relists at once instead of waiting out a backoff.

use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::runtime::watcher::{self, Event};
use tracing::{debug, warn};

use super::telemetry::error_chain;

const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Retry delays: from 250 ms, doubling, to at most 2 s, so a restarted API
/// server is rejoined within seconds.
#[derive(Clone, Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: BACKOFF_START,
        }
    }
}

impl Backoff {
    /// The delay before the next retry; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let current = self.next;
        self.next = (current * 2).min(BACKOFF_MAX);
        current
    }

    pub fn reset(&mut self) {
        self.next = BACKOFF_START;
    }
}

/// The first objects arrive as a streaming list: one watch request with
/// `sendInitialEvents`, answered from the API server's watch cache, each
/// object its own event, ended by a bookmark. There are no page round trips
/// and no page held decoded whole. A watch that ends resumes from its last
/// resourceVersion; one told that version has expired starts over with a
/// streaming list again.
pub fn config() -> watcher::Config {
    watcher::Config::default().streaming_lists()
}

/// `events` with its failures handled here: each is logged with the watched
/// `kind` and retried after this watch's own backoff, and none is passed on.
/// An expired resourceVersion is retried at once, the first time in a row.
/// The backoff starts over once the watch delivers objects again.
pub fn watch<K>(
    kind: impl Into<String>,
    events: impl Stream<Item = watcher::Result<Event<K>>> + Send + 'static,
) -> impl Stream<Item = watcher::Result<Event<K>>> + Send + 'static
where
    K: Send + 'static,
{
    let state = Resilient {
        kind: kind.into(),
        events: events.boxed(),
        backoff: Backoff::default(),
        expired: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        let event = state.next().await?;
        Some((Ok(event), state))
    })
}

struct Resilient<K> {
    kind: String,
    events: futures::stream::BoxStream<'static, watcher::Result<Event<K>>>,
    backoff: Backoff,
    /// The last failure was an expired resourceVersion.
    expired: bool,
}

impl<K> Resilient<K> {
    async fn next(&mut self) -> Option<Event<K>> {
        loop {
            match self.events.next().await? {
                Ok(event) => {
                    // `Init` comes before the list request, so it says
                    // nothing about whether the server answers.
                    if !matches!(event, Event::Init) {
                        self.backoff.reset();
                        self.expired = false;
                    }
                    return Some(event);
                }
                Err(error) if is_expired(&error) && !self.expired => {
                    debug!(kind = %self.kind, "watch resourceVersion expired; relisting");
                    self.expired = true;
                }
                Err(error) => {
                    let delay = self.backoff.next_delay();
                    warn!(
                        kind = %self.kind,
                        error = %error_chain(&error),
                        retry_in = ?delay,
                        "watch failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

fn is_expired(error: &watcher::Error) -> bool {
    matches!(error, watcher::Error::WatchError(status) if status.code == 410)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn gone() -> watcher::Error {
        let mut status = Status::failure("too old resource version: 1 (2)", "Expired");
        status.code = 410;
        watcher::Error::WatchError(Box::new(status))
    }

    fn refused() -> watcher::Error {
        watcher::Error::NoResourceVersion
    }

    #[test]
    fn the_backoff_doubles_to_two_seconds_and_starts_over_on_reset() {
        let mut backoff = Backoff::default();
        let delays: Vec<_> = (0..5).map(|_| backoff.next_delay()).collect();
        assert_eq!(
            delays,
            [250, 500, 1000, 2000, 2000].map(Duration::from_millis)
        );
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(250));
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_watch_relists_at_once_and_failures_wait_their_backoff() {
        let events = futures::stream::iter([
            Ok(Event::Apply(1)),
            Err(gone()),
            Ok(Event::Init),
            Err(refused()),
            Err(refused()),
            Ok(Event::InitApply(2)),
            Ok(Event::InitDone),
        ]);
        let started = tokio::time::Instant::now();
        let mut passed = Vec::new();
        let mut stream = std::pin::pin!(watch::<u32>("Test", events));
        while let Some(item) = stream.next().await {
            let event = item.expect("errors are not passed on");
            passed.push((format!("{event:?}"), started.elapsed()));
        }
        let at = |millis| Duration::from_millis(millis);
        assert_eq!(
            passed,
            [
                ("Apply(1)".to_string(), at(0)),
                ("Init".to_string(), at(0)),
                ("InitApply(2)".to_string(), at(750)),
                ("InitDone".to_string(), at(750)),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_expiry_repeated_without_progress_waits_its_backoff() {
        let events = futures::stream::iter([
            Err(gone()),
            Ok(Event::Init),
            Err(gone()),
            Ok(Event::Apply(1)),
        ]);
        let started = tokio::time::Instant::now();
        let mut stream = std::pin::pin!(watch::<u32>("Test", events));
        let mut last = None;
        while let Some(item) = stream.next().await {
            last = Some((item.is_ok(), started.elapsed()));
        }
        assert_eq!(last, Some((true, Duration::from_millis(250))));
    }
}
