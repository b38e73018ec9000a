//! Who owns which partition: the lease rules, as pure functions over what a
//! member has seen of the KV bucket, with time passed in.
//!
//! A lease or member key is alive while its revision keeps changing: a
//! key whose revision this member has seen unchanged for `lease_ttl` (on
//! its own monotonic clock) has expired, whatever the clocks of the
//! machines say. The holder stops consuming a partition when it has not
//! renewed it for `lease_ttl` minus one `lease_renew`, so it has stopped
//! before anyone else may take the partition over.
//!
//! Balance: the live members, sorted by id, each aim at `partitions /
//! members` partitions, the first `partitions % members` at one more, so
//! that no two differ by more than one. A member above its target releases
//! partitions (after a hand-over snapshot); one below claims free ones.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The value of a lease key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseValue {
    /// The instance id of the holder.
    pub owner: String,
}

/// The value of a member key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberValue {
    /// The member's instance id.
    pub id: String,
    /// Where its HTTP API listens (for `GET /cluster`), when known.
    #[serde(default)]
    pub http: Option<String>,
}

/// What this member last saw of one key.
#[derive(Clone, Debug)]
struct Observed {
    /// The value, `None` after a delete.
    value: Option<Vec<u8>>,
    revision: u64,
    /// When this member first saw that revision.
    since: Instant,
}

/// Every key of the bucket as this member has seen it.
#[derive(Clone, Debug, Default)]
pub struct View {
    keys: HashMap<String, Observed>,
}

/// A key as [`View::get`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyState<'a> {
    /// Never written, deleted, or expired; `revision` is what a
    /// compare-and-set must expect (0 for a key never seen).
    Free {
        /// The revision to expect.
        revision: u64,
    },
    /// Alive.
    Held {
        /// Its value.
        value: &'a [u8],
        /// Its revision.
        revision: u64,
    },
}

impl View {
    /// Records `key` at `revision` with `value` (`None` for a delete or
    /// purge), seen at `now`. The age of a key restarts with each new
    /// revision.
    pub fn observe(&mut self, key: &str, value: Option<Vec<u8>>, revision: u64, now: Instant) {
        match self.keys.get_mut(key) {
            Some(seen) if seen.revision == revision => {}
            Some(seen) if seen.revision > revision => {}
            _ => {
                self.keys.insert(
                    key.to_owned(),
                    Observed {
                        value,
                        revision,
                        since: now,
                    },
                );
            }
        }
    }

    /// The state of `key` at `now`, with leases lasting `ttl`.
    pub fn get(&self, key: &str, ttl: Duration, now: Instant) -> KeyState<'_> {
        match self.keys.get(key) {
            None => KeyState::Free { revision: 0 },
            Some(seen) => match &seen.value {
                Some(value) if now.saturating_duration_since(seen.since) < ttl => KeyState::Held {
                    value,
                    revision: seen.revision,
                },
                _ => KeyState::Free {
                    revision: seen.revision,
                },
            },
        }
    }

    /// The keys starting with `prefix` that are alive at `now`, with their
    /// values.
    pub fn alive<'a>(
        &'a self,
        prefix: &'a str,
        ttl: Duration,
        now: Instant,
    ) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        self.keys.keys().filter_map(move |key| {
            if !key.starts_with(prefix) {
                return None;
            }
            match self.get(key, ttl, now) {
                KeyState::Held { value, .. } => Some((key.as_str(), value)),
                KeyState::Free { .. } => None,
            }
        })
    }
}

/// Who holds a partition, as [`plan`] sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// Nobody (never leased, released, or expired).
    Free,
    /// This member.
    Me,
    /// Another member.
    Other(String),
}

/// What a member should do with the leases now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Free partitions to claim.
    pub claim: Vec<u32>,
    /// Partitions to hand over (release after a snapshot).
    pub release: Vec<u32>,
}

/// How many partitions the member of `rank` among `members` (sorted by id)
/// should own.
pub fn target(partitions: u32, members: usize, rank: usize) -> u32 {
    let members = members.max(1) as u32;
    partitions / members + u32::from((rank as u32) < partitions % members)
}

/// What the member `me` should claim and release, given the live members'
/// ids (`me` among them) and the holder of each partition.
pub fn plan(me: &str, members: &[String], holders: &[Holder]) -> Plan {
    let mut sorted: Vec<&str> = members.iter().map(String::as_str).collect();
    if !sorted.contains(&me) {
        sorted.push(me);
    }
    sorted.sort_unstable();
    sorted.dedup();
    let rank = sorted.iter().position(|&m| m == me).unwrap_or(0);
    let partitions = holders.len() as u32;
    let goal = target(partitions, sorted.len(), rank) as usize;
    let mine: Vec<u32> = (0..partitions)
        .filter(|&p| holders[p as usize] == Holder::Me)
        .collect();
    let mut plan = Plan::default();
    if mine.len() > goal {
        plan.release = mine[goal..].to_vec();
    } else if mine.len() < goal {
        // Start where this member's share would begin, so that members
        // claiming at once mostly try different partitions.
        let start = (rank as u64 * u64::from(partitions) / sorted.len() as u64) as u32;
        plan.claim = (0..partitions)
            .map(|i| (start + i) % partitions.max(1))
            .filter(|&p| holders[p as usize] == Holder::Free)
            .take(goal - mine.len())
            .collect();
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the members' plans in turn (claims succeed on free partitions
    /// only, as compare-and-set makes them) until nothing changes.
    fn settle(members: &[&str], holders: &mut [Option<String>]) -> usize {
        let ids: Vec<String> = members.iter().map(|m| m.to_string()).collect();
        for round in 0..100 {
            let mut changed = false;
            for &me in members {
                let view: Vec<Holder> = holders
                    .iter()
                    .map(|h| match h {
                        None => Holder::Free,
                        Some(h) if h == me => Holder::Me,
                        Some(h) => Holder::Other(h.clone()),
                    })
                    .collect();
                let plan = plan(me, &ids, &view);
                for p in plan.release {
                    holders[p as usize] = None;
                    changed = true;
                }
                for p in plan.claim {
                    if holders[p as usize].is_none() {
                        holders[p as usize] = Some(me.to_owned());
                        changed = true;
                    }
                }
            }
            if !changed {
                return round;
            }
        }
        panic!("no steady state");
    }

    fn counts(members: &[&str], holders: &[Option<String>]) -> Vec<usize> {
        members
            .iter()
            .map(|m| holders.iter().filter(|h| h.as_deref() == Some(*m)).count())
            .collect()
    }

    #[test]
    fn members_balance_to_within_one_partition() {
        for partitions in [1usize, 2, 7, 64, 100] {
            for n in 1..=5 {
                let members: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
                let members: Vec<&str> = members.iter().map(String::as_str).collect();
                let mut holders = vec![None; partitions];
                settle(&members, &mut holders);
                let c = counts(&members, &holders);
                assert!(holders.iter().all(Option::is_some), "all owned");
                let (min, max) = (c.iter().min().unwrap(), c.iter().max().unwrap());
                assert!(max - min <= 1, "{partitions} over {n}: {c:?}");
            }
        }
    }

    #[test]
    fn a_joining_member_gets_its_share_and_a_leaving_ones_is_taken() {
        let mut holders = vec![None; 64];
        settle(&["a", "b"], &mut holders);
        assert_eq!(counts(&["a", "b"], &holders), [32, 32]);
        settle(&["a", "b", "c"], &mut holders);
        assert_eq!(counts(&["a", "b", "c"], &holders), [22, 21, 21]);
        // `b` dies: its leases expire, so they show as free.
        for h in &mut holders {
            if h.as_deref() == Some("b") {
                *h = None;
            }
        }
        settle(&["a", "c"], &mut holders);
        assert_eq!(counts(&["a", "c"], &holders), [32, 32]);
    }

    #[test]
    fn a_key_expires_when_its_revision_stops_changing() {
        let ttl = Duration::from_secs(10);
        let t0 = Instant::now();
        let mut view = View::default();
        assert_eq!(view.get("lease.1", ttl, t0), KeyState::Free { revision: 0 });
        view.observe("lease.1", Some(b"a".to_vec()), 5, t0);
        let held = KeyState::Held {
            value: b"a",
            revision: 5,
        };
        assert_eq!(view.get("lease.1", ttl, t0 + Duration::from_secs(9)), held);
        // The same revision seen again does not make it younger.
        view.observe(
            "lease.1",
            Some(b"a".to_vec()),
            5,
            t0 + Duration::from_secs(9),
        );
        assert_eq!(
            view.get("lease.1", ttl, t0 + Duration::from_secs(10)),
            KeyState::Free { revision: 5 }
        );
        // A renewal does.
        view.observe(
            "lease.1",
            Some(b"a".to_vec()),
            6,
            t0 + Duration::from_secs(10),
        );
        assert!(matches!(
            view.get("lease.1", ttl, t0 + Duration::from_secs(19)),
            KeyState::Held { revision: 6, .. }
        ));
        // A stale update arriving late is ignored.
        view.observe("lease.1", None, 4, t0 + Duration::from_secs(19));
        assert!(matches!(
            view.get("lease.1", ttl, t0 + Duration::from_secs(19)),
            KeyState::Held { revision: 6, .. }
        ));
        // A delete frees it at once.
        view.observe("lease.1", None, 7, t0 + Duration::from_secs(11));
        assert_eq!(
            view.get("lease.1", ttl, t0 + Duration::from_secs(11)),
            KeyState::Free { revision: 7 }
        );
        assert_eq!(view.alive("lease.", ttl, t0).count(), 0);
    }
}
