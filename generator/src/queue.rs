//! The bounded queue between the scheduler and the sender.
//!
//! Paced series push without waiting: when the detector is down long
//! enough to fill the queue, the oldest points are dropped (and counted),
//! so the stream stays real-time. Unpaced series (`data_frequency = 0`)
//! wait for room instead: "as fast as possible" means as fast as the
//! detector takes the points.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// A point waiting to be posted.
#[derive(Clone, Debug, PartialEq)]
pub struct Outgoing {
    /// Series name.
    pub series: Arc<str>,
    /// Value.
    pub value: f64,
    /// Unix seconds.
    pub timestamp: f64,
    /// Per-series sequence number.
    pub seq: u64,
}

/// The queue; shared by the scheduler (producer) and the sender.
#[derive(Debug)]
pub struct Queue {
    items: Mutex<VecDeque<Outgoing>>,
    capacity: AtomicUsize,
    not_empty: Notify,
    not_full: Notify,
    dropped: AtomicU64,
}

impl Queue {
    /// An empty queue holding at most `capacity` points.
    pub fn new(capacity: usize) -> Queue {
        Queue {
            items: Mutex::new(VecDeque::new()),
            capacity: AtomicUsize::new(capacity.max(1)),
            not_empty: Notify::new(),
            not_full: Notify::new(),
            dropped: AtomicU64::new(0),
        }
    }

    /// Changes the capacity (a reload); excess points are dropped oldest
    /// first.
    pub fn set_capacity(&self, capacity: usize) {
        let capacity = capacity.max(1);
        self.capacity.store(capacity, Ordering::Relaxed);
        let mut items = self.lock();
        while items.len() > capacity {
            items.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Outgoing>> {
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a point, dropping the oldest one when full; returns whether
    /// one was dropped.
    pub fn push(&self, item: Outgoing) -> bool {
        let dropped = {
            let mut items = self.lock();
            let dropped = items.len() >= self.capacity.load(Ordering::Relaxed);
            if dropped {
                items.pop_front();
            }
            items.push_back(item);
            dropped
        };
        if dropped {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.not_empty.notify_one();
        dropped
    }

    /// Appends a point once there is room.
    pub async fn push_when_room(&self, item: Outgoing) {
        loop {
            let notified = self.not_full.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut items = self.lock();
                if items.len() < self.capacity.load(Ordering::Relaxed) {
                    items.push_back(item);
                    drop(items);
                    self.not_empty.notify_one();
                    return;
                }
            }
            notified.await;
        }
    }

    /// Removes and returns up to `max` points, oldest first; waits while the
    /// queue is empty.
    pub async fn take(&self, max: usize) -> Vec<Outgoing> {
        loop {
            let batch = self.try_take(max);
            if !batch.is_empty() {
                return batch;
            }
            self.not_empty.notified().await;
        }
    }

    /// Removes and returns up to `max` points without waiting.
    pub fn try_take(&self, max: usize) -> Vec<Outgoing> {
        let batch: Vec<Outgoing> = {
            let mut items = self.lock();
            let n = items.len().min(max);
            items.drain(..n).collect()
        };
        if !batch.is_empty() {
            self.not_full.notify_waiters();
        }
        batch
    }

    /// Waits until a point may be waiting (or [`Queue::wake_sender`]).
    pub async fn wait_items(&self) {
        self.not_empty.notified().await;
    }

    /// Wakes a sender waiting in [`Queue::wait_items`] (production ended).
    pub fn wake_sender(&self) {
        self.not_empty.notify_one();
    }

    /// Puts a batch that could not be delivered back at the front, in
    /// order (at shutdown, so it is counted as unsent).
    pub fn requeue_front(&self, batch: Vec<Outgoing>) {
        let mut items = self.lock();
        for item in batch.into_iter().rev() {
            items.push_front(item);
        }
    }

    /// Points waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no point waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Points dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(seq: u64) -> Outgoing {
        Outgoing {
            series: "s".into(),
            value: 1.0,
            timestamp: 0.0,
            seq,
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_oldest() {
        let queue = Queue::new(3);
        for seq in 0..5 {
            queue.push(point(seq));
        }
        assert_eq!(queue.dropped(), 2);
        let seqs: Vec<u64> = queue.take(10).await.iter().map(|p| p.seq).collect();
        assert_eq!(seqs, [2, 3, 4]);
    }

    #[tokio::test]
    async fn push_when_room_waits_for_the_sender() {
        let queue = Arc::new(Queue::new(2));
        queue.push(point(0));
        queue.push(point(1));
        let producer = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.push_when_room(point(2)).await })
        };
        tokio::task::yield_now().await;
        assert!(!producer.is_finished());
        assert_eq!(queue.take(1).await[0].seq, 0);
        producer.await.unwrap();
        let seqs: Vec<u64> = queue.take(10).await.iter().map(|p| p.seq).collect();
        assert_eq!(seqs, [1, 2]);
        assert_eq!(queue.dropped(), 0);
    }
}
