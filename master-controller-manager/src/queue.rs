//! A work queue of object names for the seed synchronizers: each name at most once in
//! the queue, never handled by two workers at once, handled again after its current
//! run when it was queued meanwhile. kube-runtime's `Controller` does the same with a
//! timer wheel, a map and a set of full object references per entry, whose capacity
//! stays once a cold start has queued every object: per seed and kind, that was more
//! memory than the objects themselves. Here an entry is one shared name.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The queue of one seed and kind.
#[derive(Debug, Default)]
pub struct Queue {
    inner: Mutex<Inner>,
    ready: Notify,
}

#[derive(Debug, Default)]
struct Inner {
    order: VecDeque<Arc<str>>,
    queued: HashSet<Arc<str>>,
    running: HashSet<Arc<str>>,
    /// Queued while running: queued again when the run ends.
    again: HashSet<Arc<str>>,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `name` unless it is queued already.
    pub fn push(&self, name: &str) {
        let mut inner = self.lock();
        if inner.queued.contains(name) || inner.again.contains(name) {
            return;
        }
        let name: Arc<str> = Arc::from(name);
        if inner.running.contains(&name) {
            inner.again.insert(name);
            return;
        }
        inner.queued.insert(name.clone());
        inner.order.push_back(name);
        drop(inner);
        self.ready.notify_one();
    }

    /// Queues `name` after `delay`, unless `stop` comes first.
    pub fn push_after(self: &Arc<Self>, name: String, delay: Duration, stop: CancellationToken) {
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(delay) => queue.push(&name),
            }
        });
    }

    /// The next name to handle, marked running; None once `stop` is cancelled.
    pub async fn next(&self, stop: &CancellationToken) -> Option<Arc<str>> {
        loop {
            // Register for a wake-up before looking, so that no push slips in between.
            let ready = self.ready.notified();
            {
                let mut inner = self.lock();
                if let Some(name) = inner.order.pop_front() {
                    inner.queued.remove(&name);
                    inner.running.insert(name.clone());
                    if inner.order.is_empty() {
                        // A cold start queues every object once; give that memory back.
                        inner.order.shrink_to_fit();
                        inner.queued.shrink_to_fit();
                    }
                    return Some(name);
                }
            }
            tokio::select! {
                () = stop.cancelled() => return None,
                () = ready => {}
            }
        }
    }

    /// Ends the run of `name`, queueing it again if it was pushed meanwhile.
    pub fn done(&self, name: &Arc<str>) {
        let mut inner = self.lock();
        inner.running.remove(name);
        if inner.again.remove(name) {
            inner.queued.insert(name.clone());
            inner.order.push_back(name.clone());
            drop(inner);
            self.ready.notify_one();
        }
    }

    /// Whether no name waits or runs (names waiting out a retry delay are not counted).
    pub fn is_idle(&self) -> bool {
        let inner = self.lock();
        inner.order.is_empty() && inner.running.is_empty()
    }

    /// How many names wait.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_are_queued_once_and_never_run_twice_at_once() {
        let queue = Queue::default();
        let stop = CancellationToken::new();
        queue.push("a");
        queue.push("b");
        queue.push("a");
        assert_eq!(queue.len(), 2);
        let a = queue.next(&stop).await.expect("a");
        assert_eq!(&*a, "a");
        // Pushed while running: not handed out again until done.
        queue.push("a");
        let b = queue.next(&stop).await.expect("b");
        assert_eq!(&*b, "b");
        assert_eq!(queue.len(), 0);
        queue.done(&b);
        queue.done(&a);
        let again = queue.next(&stop).await.expect("a again");
        assert_eq!(&*again, "a");
        queue.done(&again);
        stop.cancel();
        assert!(queue.next(&stop).await.is_none());
    }

    #[tokio::test]
    async fn a_waiting_worker_wakes_on_a_push() {
        let queue = Arc::new(Queue::default());
        let stop = CancellationToken::new();
        let waiter = {
            let (queue, stop) = (queue.clone(), stop.clone());
            tokio::spawn(async move { queue.next(&stop).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        queue.push_after("x".into(), Duration::from_millis(10), stop.clone());
        let name = tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken").expect("joined");
        assert_eq!(name.as_deref(), Some("x"));
    }
}
