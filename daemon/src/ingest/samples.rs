//! What a labelled format (remote-write, line protocol) decodes to: points
//! whose series names live in one buffer, and counts of what was skipped.
//!
//! A request of these formats carries thousands of samples over a few
//! hundred series; keeping every name in one `String` (and the points as
//! ranges into it) costs no allocation per series or per sample.

use std::borrow::Cow;
use std::ops::Range;

use super::point::{DataPoint, MAX_ABS_VALUE};

/// Why a sample was skipped rather than applied. Skips are counted, never
/// errors: Prometheus drops a whole batch on a 4xx and never retries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// A Prometheus stale marker: the series ended, it is not a point.
    Stale,
    /// The series name is longer than
    /// [`MAX_LABELLED_NAME_BYTES`](super::labels::MAX_LABELLED_NAME_BYTES).
    NameTooLong,
    /// The series name is not UTF-8 or holds a control character.
    InvalidName,
    /// NaN, ±Inf, or beyond ±[`MAX_ABS_VALUE`].
    InvalidValue,
    /// A line-protocol string field: not a number.
    StringField,
}

impl SkipReason {
    /// Every reason, in the order of [`Skipped::counts`].
    pub const ALL: [SkipReason; 5] = [
        SkipReason::Stale,
        SkipReason::NameTooLong,
        SkipReason::InvalidName,
        SkipReason::InvalidValue,
        SkipReason::StringField,
    ];

    /// The `reason` label of the skipped-samples metric.
    pub fn label(self) -> &'static str {
        match self {
            SkipReason::Stale => "stale_marker",
            SkipReason::NameTooLong => "name_too_long",
            SkipReason::InvalidName => "invalid_name",
            SkipReason::InvalidValue => "invalid_value",
            SkipReason::StringField => "string_field",
        }
    }
}

/// Samples skipped in one request, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Counts, indexed like [`SkipReason::ALL`].
    pub counts: [u64; SkipReason::ALL.len()],
}

impl Skipped {
    /// Counts one skipped sample.
    pub fn add(&mut self, reason: SkipReason) {
        self.counts[reason as usize] += 1;
    }

    /// Skipped samples for `reason`.
    pub fn get(&self, reason: SkipReason) -> u64 {
        self.counts[reason as usize]
    }

    /// All skipped samples.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// One decoded sample: a range of [`Samples::names`], a value and a
/// timestamp.
#[derive(Clone, Debug, PartialEq)]
struct Sample {
    name: Range<u32>,
    value: f64,
    timestamp: Option<f64>,
}

/// The samples of one request, in request order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Samples {
    names: String,
    samples: Vec<Sample>,
    /// The series of the samples pushed next, in `names`.
    current: Range<u32>,
    /// What was skipped, by reason.
    pub skipped: Skipped,
}

impl Samples {
    /// The name buffer, to append a series name to: note its length
    /// before the append and pass it to [`set_series`](Self::set_series).
    pub fn name_buffer(&mut self) -> &mut String {
        &mut self.names
    }

    /// Removes a name appended since `start` (a series that is skipped).
    pub fn discard_name(&mut self, start: usize) {
        self.names.truncate(start);
    }

    /// Makes the name appended from `start` to the end of the buffer the
    /// series of the samples pushed next.
    pub fn set_series(&mut self, start: usize) {
        // Bodies are bounded by `max_body_bytes`, far below 4 GiB.
        self.current = to_u32(start)..to_u32(self.names.len());
    }

    /// Adds a sample of the current series (see
    /// [`set_series`](Self::set_series)); counts and skips a value that is
    /// not a point (NaN, ±Inf, too large).
    pub fn push(&mut self, value: f64, timestamp: Option<f64>) {
        if !value.is_finite() || value.abs() > MAX_ABS_VALUE {
            self.skipped.add(SkipReason::InvalidValue);
            return;
        }
        self.samples.push(Sample {
            name: self.current.clone(),
            value,
            timestamp,
        });
    }

    /// Number of samples to apply.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there is no sample to apply.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The samples as points (no `seq`), borrowing their names.
    pub fn points(&self) -> Vec<DataPoint<'_>> {
        self.samples
            .iter()
            .map(|s| DataPoint {
                value: s.value,
                timestamp: s.timestamp,
                series: Cow::Borrowed(&self.names[s.name.start as usize..s.name.end as usize]),
                seq: None,
            })
            .collect()
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).expect("a request's series names fit in 4 GiB")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_borrow_their_names_and_bad_values_are_counted() {
        let mut samples = Samples::default();
        let series = |samples: &mut Samples, name: &str| {
            let start = samples.name_buffer().len();
            samples.name_buffer().push_str(name);
            samples.set_series(start);
        };
        series(&mut samples, "a{x=\"1\"}");
        samples.push(1.0, Some(10.0));
        samples.push(f64::NAN, Some(11.0));
        samples.push(2.0, Some(12.0));
        // A series whose first sample is skipped keeps its own name.
        series(&mut samples, "b");
        samples.push(f64::INFINITY, None);
        samples.push(4.0, None);
        series(&mut samples, "c");
        samples.push(-3.0, None);
        let points = samples.points();
        let got: Vec<(&str, f64, Option<f64>)> = points
            .iter()
            .map(|p| (p.series.as_ref(), p.value, p.timestamp))
            .collect();
        assert_eq!(
            got,
            [
                ("a{x=\"1\"}", 1.0, Some(10.0)),
                ("a{x=\"1\"}", 2.0, Some(12.0)),
                ("b", 4.0, None),
                ("c", -3.0, None)
            ]
        );
        assert_eq!(samples.skipped.get(SkipReason::InvalidValue), 2);
        assert_eq!(samples.skipped.total(), 2);
    }
}
