//! What a sink still has to send, bounded: pure state, no I/O, so that
//! ordering, de-duplication, resends and drops are tested without a
//! network.
//!
//! - [`AlertmanagerOutbox`]: the latest alert per episode. An open
//!   episode's alert is queued again every `resend_interval`; a newer
//!   state of an episode replaces the one waiting, so a slow Alertmanager
//!   gets the current state, not the history.
//! - [`WebhookOutbox`]: every notification, in order.
//!
//! Both hold at most `capacity` notifications waiting; beyond, a new one
//! is refused (and counted as dropped by the caller).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use super::message::Notification;
use crate::detect::episode::EpisodeEvent;

/// A batch taken for sending: what to send and the tokens to confirm it.
#[derive(Debug)]
pub struct Batch {
    /// The notifications, oldest first.
    pub items: Vec<Arc<Notification>>,
    tokens: Vec<u64>,
}

/// The alerts an Alertmanager sink still has to send.
#[derive(Debug)]
pub struct AlertmanagerOutbox {
    capacity: usize,
    /// Open episodes: their alert is re-sent until they close.
    firing: HashMap<(String, u64), Arc<Notification>>,
    /// Waiting alerts by queue order (token); one per episode.
    pending: BTreeMap<u64, Arc<Notification>>,
    /// Episode to its token in `pending`.
    tokens: HashMap<(String, u64), u64>,
    next_token: u64,
}

impl AlertmanagerOutbox {
    /// An empty outbox holding at most `capacity` waiting alerts.
    pub fn new(capacity: usize) -> Self {
        AlertmanagerOutbox {
            capacity,
            firing: HashMap::new(),
            pending: BTreeMap::new(),
            tokens: HashMap::new(),
            next_token: 0,
        }
    }

    /// Takes a notification in; false when it had to be dropped (the
    /// outbox is full and holds nothing older for its episode).
    pub fn add(&mut self, notification: Arc<Notification>) -> bool {
        let key = notification.key();
        match notification.event {
            EpisodeEvent::Opened => {
                self.firing.insert(key.clone(), notification.clone());
            }
            EpisodeEvent::Closed => {
                self.firing.remove(&key);
            }
        }
        self.queue(key, notification)
    }

    /// Queues the alert of every open episode again (the resend timer).
    /// Returns how many could not be queued.
    pub fn resend(&mut self) -> u64 {
        let firing: Vec<_> = self
            .firing
            .iter()
            .map(|(k, n)| (k.clone(), n.clone()))
            .collect();
        firing
            .into_iter()
            .filter(|(key, n)| !self.queue(key.clone(), n.clone()))
            .count() as u64
    }

    fn queue(&mut self, key: (String, u64), notification: Arc<Notification>) -> bool {
        if let Some(old) = self.tokens.remove(&key) {
            self.pending.remove(&old);
        } else if self.is_full() {
            return false;
        }
        let token = self.next_token;
        self.next_token += 1;
        self.pending.insert(token, notification);
        self.tokens.insert(key, token);
        true
    }

    /// Up to `max` waiting alerts, oldest first; they stay queued until
    /// [`sent`](Self::sent).
    pub fn batch(&self, max: usize) -> Batch {
        let (tokens, items) = self
            .pending
            .iter()
            .take(max)
            .map(|(t, n)| (*t, n.clone()))
            .unzip();
        Batch { items, tokens }
    }

    /// Removes the alerts of `batch`, except those replaced by a newer
    /// state since it was taken.
    pub fn sent(&mut self, batch: &Batch) {
        for (token, item) in batch.tokens.iter().zip(&batch.items) {
            if self.pending.remove(token).is_some() {
                self.tokens.remove(&item.key());
            }
        }
    }

    /// Alerts waiting.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether a new episode's alert would be refused.
    pub fn is_full(&self) -> bool {
        self.pending.len() >= self.capacity
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Open episodes whose alert is re-sent.
    pub fn firing(&self) -> usize {
        self.firing.len()
    }
}

/// The notifications a webhook sink still has to send, in order.
#[derive(Debug)]
pub struct WebhookOutbox {
    capacity: usize,
    pending: VecDeque<Arc<Notification>>,
}

impl WebhookOutbox {
    /// An empty outbox holding at most `capacity` notifications.
    pub fn new(capacity: usize) -> Self {
        WebhookOutbox {
            capacity,
            pending: VecDeque::new(),
        }
    }

    /// Takes a notification in; false when the outbox is full.
    pub fn add(&mut self, notification: Arc<Notification>) -> bool {
        if self.is_full() {
            return false;
        }
        self.pending.push_back(notification);
        true
    }

    /// The oldest notification (one document per request).
    pub fn batch(&self) -> Batch {
        Batch {
            items: self.pending.front().cloned().into_iter().collect(),
            tokens: Vec::new(),
        }
    }

    /// Removes the notification of `batch` (the oldest).
    pub fn sent(&mut self, batch: &Batch) {
        if !batch.items.is_empty() {
            self.pending.pop_front();
        }
    }

    /// Notifications waiting.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether a new notification would be refused.
    pub fn is_full(&self) -> bool {
        self.pending.len() >= self.capacity
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::message::Opening;
    use crate::api::EpisodeRecord;
    use crate::detect::Side;

    fn n(series: &str, episode: u64, event: EpisodeEvent) -> Arc<Notification> {
        Arc::new(Notification {
            event,
            episode: EpisodeRecord {
                series: series.into(),
                episode,
                start: 1.0,
                end: (event == EpisodeEvent::Closed).then_some(2.0),
                points: 1,
                peak_score: 9.0,
                peak_value: 9.0,
                direction: Side::Upper,
            },
            opening: Some(Opening {
                value: 9.0,
                mean: 0.0,
                std_dev: 1.0,
                threshold: 6.0,
            }),
            severity: "warning".into(),
            external_url: "http://x".into(),
        })
    }

    fn names(batch: &Batch) -> Vec<(String, EpisodeEvent)> {
        batch
            .items
            .iter()
            .map(|n| (n.episode.series.clone(), n.event))
            .collect()
    }

    #[test]
    fn alertmanager_keeps_the_latest_state_per_episode_and_resends_open_ones() {
        use EpisodeEvent::{Closed, Opened};
        let mut outbox = AlertmanagerOutbox::new(3);
        assert!(outbox.add(n("a", 1, Opened)));
        assert!(outbox.add(n("b", 1, Opened)));
        assert!(outbox.add(n("a", 1, Closed)), "replaces a's opening");
        assert_eq!(outbox.len(), 2);
        let batch = outbox.batch(10);
        assert_eq!(names(&batch), [("b".into(), Opened), ("a".into(), Closed)]);
        // b closes while the batch is in flight: its newer state stays.
        assert!(outbox.add(n("b", 1, Closed)));
        outbox.sent(&batch);
        assert_eq!(names(&outbox.batch(10)), [("b".into(), Closed)]);
        outbox.sent(&outbox.batch(10));
        assert!(outbox.is_empty());
        assert_eq!(outbox.firing(), 0);

        // Open episodes come back on each resend; closed ones do not.
        outbox.add(n("c", 1, Opened));
        outbox.add(n("d", 1, Opened));
        outbox.sent(&outbox.batch(10));
        assert_eq!(outbox.resend(), 0);
        assert_eq!(outbox.len(), 2);
        assert_eq!(outbox.resend(), 0, "a resend replaces the waiting copy");
        assert_eq!(outbox.len(), 2);

        // Full: a new episode is refused, a known one still updates.
        assert!(outbox.add(n("e", 1, Opened)));
        assert!(!outbox.add(n("f", 1, Opened)));
        assert!(outbox.add(n("e", 1, Closed)));
        assert_eq!(outbox.len(), 3);
        let batch = outbox.batch(2);
        assert_eq!(batch.items.len(), 2, "at most max per batch");
    }

    #[test]
    fn webhooks_keep_every_notification_in_order() {
        use EpisodeEvent::{Closed, Opened};
        let mut outbox = WebhookOutbox::new(2);
        assert!(outbox.add(n("a", 1, Opened)));
        assert!(outbox.add(n("a", 1, Closed)));
        assert!(!outbox.add(n("b", 1, Opened)), "full");
        let batch = outbox.batch();
        assert_eq!(names(&batch), [("a".into(), Opened)]);
        outbox.sent(&batch);
        assert_eq!(names(&outbox.batch()), [("a".into(), Closed)]);
        outbox.sent(&outbox.batch());
        assert!(outbox.is_empty());
        assert!(outbox.batch().items.is_empty());
    }
}
