//! Episodes: consecutive trouble in a series, reported as one incident
//! ([8/11] §1). Pure logic: a 12-byte state per series and one step per
//! judged point; the table stores the state, the edges turn steps into
//! replies, records and events.
//!
//! - An episode **opens** on the anomalous point that completes
//!   `min_consecutive` anomalous points in a row (Prometheus' `for:`); the
//!   anomalies before it are outside any episode.
//! - It stays open while anomalies continue, and **closes** after
//!   `resolve_after` points in a row back inside the resolve band, which
//!   may be narrower than the detection band (`resolve_multiplier`, for
//!   hysteresis); a point between the two bands neither extends nor closes
//!   it, but breaks the run of calm points.
//! - While one is open no other opens. Its id is the `seq` of the point
//!   that opened it when it had one, else that point's timestamp in
//!   microseconds: the same data gives the same id in a replay or on
//!   another instance.

use super::{Baseline, Direction, Verdict};

/// The episode keys of a series' settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpisodeSettings {
    /// Anomalous points in a row that open an episode (at least 1).
    pub min_consecutive: u16,
    /// Points in a row back inside the resolve band that close it (at
    /// least 1).
    pub resolve_after: u16,
    /// `k` of the resolve band `mean ± k·σ_eff`.
    pub resolve_multiplier: f64,
    /// The sides the detector checks, which the resolve band follows.
    pub direction: Direction,
}

impl Default for EpisodeSettings {
    /// Every anomaly opens an episode and the first point back inside the
    /// band at `k = 3` closes it.
    fn default() -> Self {
        EpisodeSettings {
            min_consecutive: 1,
            resolve_after: 1,
            resolve_multiplier: 3.0,
            direction: Direction::Upper,
        }
    }
}

/// A series' episode state: 12 bytes, aligned to 4 so that it fits in the
/// 4 bytes of padding of a series' slot plus the 8 freed by storing the last
/// `seq` without an `Option` (fields are only read and written by value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, packed(4))]
pub struct EpisodeState {
    /// The id of the open episode, or [`EpisodeState::NONE`].
    open: u64,
    /// Anomalous points in a row (saturating).
    anomalous: u16,
    /// Points in a row back inside the resolve band while open.
    calm: u16,
}

impl Default for EpisodeState {
    fn default() -> Self {
        EpisodeState {
            open: Self::NONE,
            anomalous: 0,
            calm: 0,
        }
    }
}

/// What a point did to its series' episodes (`"opened"` or `"closed"` on
/// the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EpisodeEvent {
    /// This point opened the episode.
    Opened,
    /// This point closed the episode.
    Closed,
}

/// The episode a point belongs to, and what it did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EpisodeStep {
    /// The id of the episode the point is part of: every point from the
    /// one that opened it to the one that closed it.
    pub episode: Option<u64>,
    /// Whether this point opened or closed it.
    pub event: Option<EpisodeEvent>,
}

impl EpisodeState {
    /// No open episode. Ids are `seq`s (below 2^63) or timestamps in
    /// microseconds (below 2^63 for any plausible time), never this.
    const NONE: u64 = u64::MAX;

    /// The id of the open episode, if any.
    pub fn open(&self) -> Option<u64> {
        (self.open != Self::NONE).then_some(self.open)
    }

    /// The state as plain numbers (open id or `u64::MAX`, anomalous run,
    /// calm run), for a snapshot.
    pub fn to_parts(&self) -> (u64, u16, u16) {
        (self.open, self.anomalous, self.calm)
    }

    /// The state [`to_parts`](Self::to_parts) gave.
    pub fn from_parts(open: u64, anomalous: u16, calm: u16) -> Self {
        EpisodeState {
            open,
            anomalous,
            calm,
        }
    }

    /// Applies one point with `verdict` and `value`; `id` gives what the
    /// point would name an episode it opens (see [`episode_id`]), called
    /// only when it opens one.
    #[inline]
    pub fn step(
        &mut self,
        verdict: &Verdict,
        value: f64,
        id: impl FnOnce() -> u64,
        settings: &EpisodeSettings,
    ) -> EpisodeStep {
        let baseline = match verdict {
            Verdict::WarmingUp { .. } => {
                return EpisodeStep {
                    episode: self.open(),
                    event: None,
                };
            }
            Verdict::Normal(b) | Verdict::Anomaly(b, _) => b,
        };
        if verdict.is_anomaly() {
            self.anomalous = self.anomalous.saturating_add(1);
            self.calm = 0;
            if self.open().is_none() && self.anomalous >= settings.min_consecutive.max(1) {
                let id = id();
                self.open = id;
                return EpisodeStep {
                    episode: Some(id),
                    event: Some(EpisodeEvent::Opened),
                };
            }
            return EpisodeStep {
                episode: self.open(),
                event: None,
            };
        }
        self.anomalous = 0;
        let Some(open) = self.open() else {
            return EpisodeStep::default();
        };
        if resolved(baseline, value, settings) {
            self.calm = self.calm.saturating_add(1);
            if self.calm >= settings.resolve_after.max(1) {
                *self = EpisodeState::default();
                return EpisodeStep {
                    episode: Some(open),
                    event: Some(EpisodeEvent::Closed),
                };
            }
        } else {
            self.calm = 0;
        }
        EpisodeStep {
            episode: Some(open),
            event: None,
        }
    }
}

/// Whether `value` lies inside the resolve band on the sides the
/// direction checks.
fn resolved(baseline: &Baseline, value: f64, settings: &EpisodeSettings) -> bool {
    let band = settings.resolve_multiplier * baseline.sigma;
    let below_top = value <= baseline.mean + band;
    let above_bottom = value >= baseline.mean - band;
    match settings.direction {
        Direction::Upper => below_top,
        Direction::Lower => above_bottom,
        Direction::Both => below_top && above_bottom,
    }
}

/// The id an episode opened by this point gets: its `seq`, else its
/// timestamp in whole microseconds (rounded; timestamps are at least 0).
pub fn episode_id(seq: Option<u64>, timestamp: f64) -> u64 {
    seq.unwrap_or_else(|| (timestamp * 1e6).round().clamp(0.0, (1u64 << 62) as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Side;
    use proptest::prelude::*;

    /// A baseline at mean 0 with σ_eff 1 (band ±3 at k = 3).
    const B: Baseline = Baseline {
        mean: 0.0,
        std_dev: 1.0,
        threshold: 3.0,
        lower_threshold: -3.0,
        sigma: 1.0,
    };

    fn settings(min_consecutive: u16, resolve_after: u16, resolve: f64) -> EpisodeSettings {
        EpisodeSettings {
            min_consecutive,
            resolve_after,
            resolve_multiplier: resolve,
            direction: Direction::Upper,
        }
    }

    /// Steps through `values` (anomalous above 3); ids are 100 + index.
    fn run(values: &[f64], s: &EpisodeSettings) -> Vec<EpisodeStep> {
        let mut state = EpisodeState::default();
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let verdict = if v > 3.0 {
                    Verdict::Anomaly(B, Side::Upper)
                } else {
                    Verdict::Normal(B)
                };
                state.step(&verdict, v, || 100 + i as u64, s)
            })
            .collect()
    }

    fn events(steps: &[EpisodeStep]) -> Vec<(usize, Option<u64>, Option<EpisodeEvent>)> {
        steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.event.is_some() || s.episode.is_some())
            .map(|(i, s)| (i, s.episode, s.event))
            .collect()
    }

    #[test]
    fn a_burst_is_one_episode() {
        let s = settings(1, 1, 3.0);
        let steps = run(&[0.0, 9.0, 9.0, 9.0, 0.0, 0.0], &s);
        use EpisodeEvent::*;
        assert_eq!(
            events(&steps),
            [
                (1, Some(101), Some(Opened)),
                (2, Some(101), None),
                (3, Some(101), None),
                (4, Some(101), Some(Closed)),
            ]
        );
    }

    #[test]
    fn min_consecutive_is_prometheus_for() {
        let s = settings(3, 1, 3.0);
        // Two anomalies, a calm point, then three: only the third of those
        // opens, and the ones before are outside any episode.
        let steps = run(&[9.0, 9.0, 0.0, 9.0, 9.0, 9.0, 9.0, 0.0], &s);
        use EpisodeEvent::*;
        assert_eq!(
            events(&steps),
            [
                (5, Some(105), Some(Opened)),
                (6, Some(105), None),
                (7, Some(105), Some(Closed)),
            ]
        );
    }

    #[test]
    fn resolve_after_and_hysteresis() {
        // Closes after two points in a row inside ±1σ; 2.0 is inside the
        // detection band but outside the resolve band: it breaks the run.
        let s = settings(1, 2, 1.0);
        let steps = run(&[9.0, 0.5, 2.0, 0.5, 9.0, 0.5, 0.5, 0.5], &s);
        use EpisodeEvent::*;
        assert_eq!(
            events(&steps),
            [
                (0, Some(100), Some(Opened)),
                (1, Some(100), None),
                (2, Some(100), None),
                (3, Some(100), None),
                (4, Some(100), None),
                (5, Some(100), None),
                (6, Some(100), Some(Closed)),
            ],
            "no new episode while one is open"
        );
    }

    #[test]
    fn warming_up_points_change_nothing() {
        let s = settings(2, 1, 3.0);
        let mut state = EpisodeState::default();
        let anomaly = Verdict::Anomaly(B, Side::Upper);
        state.step(&anomaly, 9.0, || 1, &s);
        let before = state;
        let step = state.step(&Verdict::WarmingUp { have: 1, need: 4 }, 9.0, || 2, &s);
        assert_eq!((step, state), (EpisodeStep::default(), before));
        assert_eq!(
            state.step(&anomaly, 9.0, || 3, &s).event,
            Some(EpisodeEvent::Opened)
        );
    }

    #[test]
    fn ids_come_from_seq_or_microseconds() {
        assert_eq!(episode_id(Some(7), 1.5), 7);
        assert_eq!(episode_id(None, 1_700_000_000.5), 1_700_000_000_500_000);
        assert_eq!(std::mem::size_of::<EpisodeState>(), 12);
        assert_eq!(std::mem::align_of::<EpisodeState>(), 4);
    }

    /// The episodes of a whole sequence, computed by looking back instead
    /// of by a state machine: the reference the steps must agree with.
    fn reference(anomalous: &[bool], calm: &[bool], s: &EpisodeSettings) -> Vec<(usize, usize)> {
        let (k, r) = (s.min_consecutive as usize, s.resolve_after as usize);
        let mut episodes = Vec::new();
        let mut i = 0;
        while i < anomalous.len() {
            // The first point completing k anomalies in a row opens.
            let opens = i + 1 >= k && (i + 1 - k..=i).all(|j| anomalous[j]);
            if !opens {
                i += 1;
                continue;
            }
            // It closes at the first point ending r calm non-anomalous
            // points in a row after it.
            let close = (i + 1..anomalous.len()).find(|&e| {
                e + 1 >= r && e + 1 - r > i && (e + 1 - r..=e).all(|j| !anomalous[j] && calm[j])
            });
            match close {
                Some(e) => {
                    episodes.push((i, e));
                    // The run of anomalies restarts after the close.
                    i = e + 1;
                    // Anomalies counted toward k may not span the close.
                    let rest: Vec<(usize, usize)> = reference(&anomalous[i..], &calm[i..], s)
                        .into_iter()
                        .map(|(a, b)| (a + i, b.saturating_add(i)))
                        .collect();
                    episodes.extend(rest);
                    return episodes;
                }
                None => {
                    episodes.push((i, usize::MAX));
                    return episodes;
                }
            }
        }
        episodes
    }

    proptest! {
        #[test]
        fn steps_agree_with_the_reference(
            points in prop::collection::vec((any::<bool>(), any::<bool>()), 0..200),
            k in 1u16..4,
            r in 1u16..4,
        ) {
            let s = settings(k, r, 1.0);
            // An anomalous point is 9; a calm one 0.5; a normal point
            // outside the resolve band 2.0.
            let values: Vec<f64> = points
                .iter()
                .map(|&(anomalous, calm)| if anomalous { 9.0 } else if calm { 0.5 } else { 2.0 })
                .collect();
            let steps = run(&values, &s);
            let anomalous: Vec<bool> = points.iter().map(|p| p.0).collect();
            let calm: Vec<bool> = points.iter().map(|p| p.1).collect();
            let mut got = Vec::new();
            let mut start = None;
            for (i, step) in steps.iter().enumerate() {
                match step.event {
                    Some(EpisodeEvent::Opened) => start = Some(i),
                    Some(EpisodeEvent::Closed) => got.push((start.take().unwrap(), i)),
                    None => {}
                }
            }
            if let Some(open) = start {
                got.push((open, usize::MAX));
            }
            prop_assert_eq!(got, reference(&anomalous, &calm, &s));
        }
    }
}
