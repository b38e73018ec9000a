//! Fan-out of the dashboard's live events (`GET /events`): one broadcast of
//! the events every subscriber gets, a cap on subscribers, and one switch
//! that ends every stream at shutdown.
//!
//! It knows neither HTTP nor the state the events describe: the HTTP side
//! ([`crate::http`]) formats events and runs each stream, the publisher
//! publishes here. A subscriber that falls behind the broadcast's bounded
//! buffer loses the oldest events and learns how many (tokio's `Lagged`),
//! so a slow browser never slows anyone else.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Events the broadcast holds for a subscriber that has not read them yet.
const BUFFERED_EVENTS: usize = 64;

/// The live-event hub.
#[derive(Debug)]
pub struct LiveEvents {
    sender: broadcast::Sender<Bytes>,
    streams: Arc<AtomicUsize>,
    closed: CancellationToken,
}

impl Default for LiveEvents {
    fn default() -> Self {
        LiveEvents {
            sender: broadcast::channel(BUFFERED_EVENTS).0,
            streams: Arc::new(AtomicUsize::new(0)),
            closed: CancellationToken::new(),
        }
    }
}

/// One subscriber: its share of the broadcast and the shutdown switch. It
/// counts against the cap until dropped.
#[derive(Debug)]
pub struct Subscription {
    /// The broadcast events, in order.
    pub events: broadcast::Receiver<Bytes>,
    /// Cancelled when the daemon shuts down: the stream must end at once.
    pub closed: CancellationToken,
    streams: Arc<AtomicUsize>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

impl LiveEvents {
    /// A new subscriber, unless `max` streams are open or the daemon is
    /// shutting down (`None`).
    pub fn subscribe(&self, max: usize) -> Option<Subscription> {
        if self.closed.is_cancelled() {
            return None;
        }
        self.streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(Subscription {
            events: self.sender.subscribe(),
            closed: self.closed.clone(),
            streams: self.streams.clone(),
        })
    }

    /// Sends `event` to every subscriber (to none when there are none).
    pub fn publish(&self, event: Bytes) {
        // An error only means that nobody listens.
        let _ = self.sender.send(event);
    }

    /// Open streams.
    pub fn streams(&self) -> usize {
        self.streams.load(Ordering::Acquire)
    }

    /// Ends every stream and refuses new ones (shutdown).
    pub fn close(&self) {
        self.closed.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_counts_open_subscriptions() {
        let live = LiveEvents::default();
        let a = live.subscribe(2).unwrap();
        let _b = live.subscribe(2).unwrap();
        assert!(live.subscribe(2).is_none(), "at the cap");
        drop(a);
        assert_eq!(live.streams(), 1);
        assert!(live.subscribe(2).is_some(), "room again");
        live.close();
        assert!(live.subscribe(2).is_none(), "closed");
    }

    #[tokio::test]
    async fn a_slow_subscriber_loses_the_oldest_and_learns_how_many() {
        let live = LiveEvents::default();
        let mut slow = live.subscribe(1).unwrap();
        for i in 0..BUFFERED_EVENTS + 3 {
            live.publish(Bytes::from(i.to_string()));
        }
        assert_eq!(
            slow.events.recv().await,
            Err(broadcast::error::RecvError::Lagged(3))
        );
        assert_eq!(slow.events.recv().await.unwrap(), Bytes::from("3"));
    }
}
