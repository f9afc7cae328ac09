//! Lease-based leader election. Leadership gates writes, not reads: every replica watches,
//! only the leader writes, and a leader that loses its lease stops writing at once and
//! makes the process exit so it restarts as a follower.

use std::time::Duration;

use kube_leader_election::{LeaseLock, LeaseLockParams, LeaseLockResult};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Why leadership ended other than by shutdown.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// Another replica holds the lease now.
    #[error("lease {lease} was taken over by {holder}")]
    Lost {
        /// Lease name.
        lease: String,
        /// The new holder.
        holder: String,
    },
    /// Renewing failed for longer than the renew deadline.
    #[error("could not renew lease {lease} within {deadline:?}: {source}")]
    RenewDeadline {
        /// Lease name.
        lease: String,
        /// The renew deadline.
        deadline: Duration,
        /// The last renewal error.
        #[source]
        source: kube_leader_election::Error,
    },
    /// A follower could not reach the API server for longer than a lease duration.
    #[error("no contact with the API server for over {after:?} (lease {lease}): {source}")]
    LostContact {
        /// Lease name.
        lease: String,
        /// The lease duration.
        after: Duration,
        /// The last error.
        #[source]
        source: kube_leader_election::Error,
    },
}

/// Whether this replica leads; cheap to clone and to ask.
#[derive(Clone, Debug)]
pub struct LeaderState {
    /// None when leader election is disabled: this replica always leads.
    rx: Option<watch::Receiver<bool>>,
}

impl LeaderState {
    /// A state that always leads (leader election disabled).
    pub fn always() -> Self {
        Self { rx: None }
    }

    /// Whether this replica holds the lease right now.
    pub fn is_leader(&self) -> bool {
        self.rx.as_ref().is_none_or(|rx| *rx.borrow())
    }

    /// A stream that yields whenever this replica becomes leader (at once if it leads
    /// already): for `reconcile_all_on`, so a new leader looks at everything.
    pub fn gained(&self) -> impl futures::Stream<Item = ()> + Send + 'static {
        let rx = self.rx.clone();
        futures::stream::unfold((rx, false), |(rx, mut was)| async move {
            match rx {
                None if !was => Some(((), (None, true))),
                None => futures::future::pending().await,
                Some(mut rx) => loop {
                    let leading = *rx.borrow_and_update();
                    if leading && !was {
                        return Some(((), (Some(rx), true)));
                    }
                    was = leading;
                    if rx.changed().await.is_err() {
                        return None;
                    }
                },
            }
        })
    }

    /// Waits until this replica leads. Returns false if the election ended first.
    pub async fn wait_for_leadership(&mut self) -> bool {
        match &mut self.rx {
            None => true,
            Some(rx) => rx.wait_for(|leading| *leading).await.is_ok(),
        }
    }
}

/// Settings of one election.
#[derive(Clone, Debug)]
pub struct LeaderElectionConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// This replica's identity.
    pub identity: String,
    /// Lease validity.
    pub lease_duration: Duration,
    /// How long a leader may fail to renew before giving up.
    pub renew_deadline: Duration,
    /// Interval between acquire/renew attempts.
    pub retry_period: Duration,
}

/// Takes part in one election until shutdown or loss of leadership.
pub struct LeaderElector {
    lock: LeaseLock,
    config: LeaderElectionConfig,
    tx: watch::Sender<bool>,
    is_leader: Gauge,
    transitions: Counter,
}

impl std::fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElector").field("config", &self.config).finish_non_exhaustive()
    }
}

impl LeaderElector {
    /// An elector and the state it drives. Registers `mla_leader` (1 while leading) and
    /// `mla_leader_transitions_total` (times this replica became leader).
    pub fn new(client: kube::Client, config: LeaderElectionConfig, metrics: &Metrics) -> (Self, LeaderState) {
        let lock = LeaseLock::new(
            client,
            &config.namespace,
            LeaseLockParams {
                lease_name: config.lease_name.clone(),
                holder_id: config.identity.clone(),
                lease_ttl: config.lease_duration,
            },
        );
        let (tx, rx) = watch::channel(false);
        let is_leader = Gauge::default();
        let transitions = Counter::default();
        metrics.register("", |registry| {
            registry.register("leader", "1 while this replica holds the lease", is_leader.clone());
            registry.register("leader_transitions", "Times this replica became leader", transitions.clone());
        });
        (Self { lock, config, tx, is_leader, transitions }, LeaderState { rx: Some(rx) })
    }

    /// Acquires and renews the lease until `shutdown` (then releases it, so a successor
    /// need not wait for it to expire) or until leadership is lost (an error: the process
    /// must stop writing and exit).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), LeaderError> {
        let lease = &self.config.lease_name;
        let mut last_renewal = Instant::now();
        let mut last_contact = Instant::now();
        loop {
            let leading = *self.tx.borrow();
            let result = self.lock.try_acquire_or_renew().await;
            if result.is_ok() {
                last_contact = Instant::now();
            }
            match result {
                Ok(LeaseLockResult::Acquired(_)) if !leading => {
                    // The library acquires with an unconditional patch, so two replicas
                    // racing for an expired lease can both see success. Confirm after a
                    // short pause: only the replica whose write landed last still holds it.
                    tokio::time::sleep(self.config.retry_period.min(Duration::from_millis(500))).await;
                    if let Ok(LeaseLockResult::Acquired(_)) = self.lock.try_acquire_or_renew().await {
                        tracing::info!(lease, identity = %self.config.identity, "became leader");
                        last_renewal = Instant::now();
                        self.set_leading(true);
                        self.transitions.inc();
                    }
                }
                Ok(LeaseLockResult::Acquired(_)) => last_renewal = Instant::now(),
                Ok(LeaseLockResult::NotAcquired(current)) => {
                    let holder = current.spec.and_then(|s| s.holder_identity).unwrap_or_default();
                    if leading {
                        self.set_leading(false);
                        return Err(LeaderError::Lost { lease: lease.clone(), holder });
                    }
                    tracing::debug!(lease, holder, "lease held by another replica");
                }
                Err(error) => {
                    if leading && last_renewal.elapsed() > self.config.renew_deadline {
                        self.set_leading(false);
                        return Err(LeaderError::RenewDeadline {
                            lease: lease.clone(),
                            deadline: self.config.renew_deadline,
                            source: error,
                        });
                    }
                    if !leading && last_contact.elapsed() > self.config.lease_duration {
                        // A follower that lost the API server for longer than a lease
                        // restarts too: after an API server restart the watches of a
                        // surviving process were seen to stay stale for minutes, while a
                        // fresh process lists and watches correctly.
                        return Err(LeaderError::LostContact {
                            lease: lease.clone(),
                            after: self.config.lease_duration,
                            source: error,
                        });
                    }
                    tracing::warn!(lease, %error, "acquiring or renewing the lease failed");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.config.retry_period) => {}
            }
        }
        if *self.tx.borrow() {
            self.set_leading(false);
            match self.lock.step_down().await {
                Ok(()) => tracing::info!(lease, "released the lease"),
                Err(error) => tracing::warn!(lease, %error, "releasing the lease failed; it expires by itself"),
            }
        }
        Ok(())
    }

    fn set_leading(&self, leading: bool) {
        self.is_leader.set(i64::from(leading));
        self.tx.send_replace(leading);
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn gained_yields_each_time_leadership_begins() {
        let mut always = Box::pin(LeaderState::always().gained());
        assert_eq!(always.next().await, Some(()));
        assert!(futures::FutureExt::now_or_never(always.next()).is_none(), "once only");

        let (tx, rx) = watch::channel(false);
        let state = LeaderState { rx: Some(rx) };
        let mut gained = Box::pin(state.gained());
        assert!(futures::FutureExt::now_or_never(gained.next()).is_none(), "not leading yet");
        tx.send_replace(true);
        assert_eq!(gained.next().await, Some(()));
        tx.send_replace(false);
        tokio::task::yield_now().await;
        assert!(futures::FutureExt::now_or_never(gained.next()).is_none(), "lost, not gained");
        tx.send_replace(true);
        assert_eq!(gained.next().await, Some(()));
    }
}
