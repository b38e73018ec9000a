//! Detector state as bytes, for state snapshots: a small little-endian
//! codec that each detector writes its state with
//! ([`SeriesModel::save`](super::SeriesModel::save)) and reads it back
//! with (`DetectorKind::restore`). The snapshot file around these bytes
//! (version, checksum, one record per series) is the series table's.
//!
//! A state is restored only under the settings it was saved under (the
//! table compares their fingerprint, [`settings_fingerprint`]), so a
//! detector may rely on its layout being the one its settings give; it
//! still checks every length it reads, and returns `None` for bytes that
//! do not make a state, never panics.

use super::{DetectorSettings, Direction};
use crate::fnv::fnv1a;

/// Writes values little-endian into a byte vector.
#[derive(Debug)]
pub struct Encoder<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Encoder<'a> {
    /// An encoder appending to `out`.
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        Encoder { out }
    }

    /// Writes a `u32`.
    pub fn u32(&mut self, value: u32) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }

    /// Writes a `u64`.
    pub fn u64(&mut self, value: u64) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }

    /// Writes an `f64` (its bits: NaN and -0.0 survive).
    pub fn f64(&mut self, value: f64) {
        self.u64(value.to_bits());
    }

    /// Writes a length, then the values.
    pub fn f64s(&mut self, values: impl ExactSizeIterator<Item = f64>) {
        self.f64s_counted(values.len(), values);
    }

    /// Writes `count`, then the first `count` values of `values` (which
    /// must yield at least that many).
    pub fn f64s_counted(&mut self, count: usize, values: impl Iterator<Item = f64>) {
        let count = count.min(u32::MAX as usize);
        self.u32(count as u32);
        let start = self.out.len();
        self.out.reserve(count * 8);
        for value in values.take(count) {
            self.f64(value);
        }
        debug_assert_eq!(
            self.out.len() - start,
            count * 8,
            "fewer values than counted"
        );
    }

    /// Writes the bytes that `write` appends, after their length: the
    /// same as [`bytes`](Self::bytes) of them, with no buffer between.
    pub fn nested(&mut self, write: impl FnOnce(&mut Encoder<'_>)) {
        let at = self.out.len();
        self.u32(0);
        write(&mut Encoder::new(self.out));
        let len = u32::try_from(self.out.len() - at - 4).expect("a state under 4 GiB");
        self.out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }

    /// Writes a length, then the bytes.
    pub fn bytes(&mut self, bytes: &[u8]) {
        self.u32(u32::try_from(bytes.len()).expect("a state under 4 GiB"));
        self.out.extend_from_slice(bytes);
    }
}

/// Reads what an [`Encoder`] wrote; every read is `None` past the end.
#[derive(Clone, Debug)]
pub struct Decoder<'a> {
    bytes: &'a [u8],
}

impl<'a> Decoder<'a> {
    /// A decoder over `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Decoder { bytes }
    }

    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.bytes.split_first_chunk::<N>()?;
        self.bytes = rest;
        Some(*head)
    }

    /// Reads a `u32`.
    pub fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }

    /// Reads a `u64`.
    pub fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }

    /// Reads an `f64`.
    pub fn f64(&mut self) -> Option<f64> {
        self.u64().map(f64::from_bits)
    }

    /// Reads a length and that many values (the length is checked against
    /// the bytes left before anything is allocated).
    pub fn f64s(&mut self) -> Option<Vec<f64>> {
        let len = self.u32()? as usize;
        if len.checked_mul(8)? > self.bytes.len() {
            return None;
        }
        (0..len).map(|_| self.f64()).collect()
    }

    /// Reads a length and that many bytes.
    pub fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()? as usize;
        if len > self.bytes.len() {
            return None;
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Some(head)
    }

    /// Whether every byte was read.
    pub fn is_done(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// A fingerprint of `settings`: a state saved under settings with another
/// fingerprint is not restored (its window size, season or detector may
/// differ), and its series starts fresh. Stable across runs of the same
/// build; a new version that changes the settings' shape changes it, which
/// is safe (series start fresh).
pub fn settings_fingerprint(settings: &DetectorSettings) -> u64 {
    // Every field by value (a new field fails to compile here until it is
    // added). Not the debug form: it shows the detector's function
    // pointers, whose addresses change from run to run.
    let DetectorSettings {
        kind,
        window_size,
        threshold_multiplier,
        direction,
        min_samples,
        min_std_dev,
        min_relative_std_dev,
        exclude_anomalies,
        max_excluded_run,
        half_life,
        season,
        seasons,
        bucket,
    } = settings;
    let mut bytes = Vec::with_capacity(128);
    let mut out = Encoder::new(&mut bytes);
    out.bytes(kind.name.as_bytes());
    let direction: &[u8] = match direction {
        Direction::Upper => b"upper",
        Direction::Lower => b"lower",
        Direction::Both => b"both",
    };
    out.bytes(direction);
    for count in [*window_size, *min_samples, *max_excluded_run, *seasons] {
        out.u64(count as u64);
    }
    out.u32(u32::from(*exclude_anomalies));
    for value in [
        *threshold_multiplier,
        *min_std_dev,
        *min_relative_std_dev,
        *half_life,
        *season,
        *bucket,
    ] {
        out.f64(value);
    }
    fnv1a(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_short_input_is_none() {
        let mut out = Vec::new();
        let mut encoder = Encoder::new(&mut out);
        encoder.u32(7);
        encoder.u64(u64::MAX);
        encoder.f64(-0.0);
        encoder.f64s([1.5, f64::NAN].into_iter());
        encoder.bytes(b"abc");
        let mut decoder = Decoder::new(&out);
        assert_eq!(decoder.u32(), Some(7));
        assert_eq!(decoder.u64(), Some(u64::MAX));
        assert_eq!(decoder.f64().map(f64::to_bits), Some((-0.0f64).to_bits()));
        let values = decoder.f64s().unwrap();
        assert_eq!(values[0], 1.5);
        assert!(values[1].is_nan());
        assert_eq!(decoder.bytes(), Some(&b"abc"[..]));
        assert!(decoder.is_done());
        assert_eq!(decoder.u32(), None);
        // A length beyond the bytes left allocates nothing and fails.
        // A nested write reads back as bytes.
        let mut nested = Vec::new();
        Encoder::new(&mut nested).nested(|inner| {
            inner.u32(5);
            inner.f64s_counted(2, [1.0, 2.0, 3.0].into_iter());
        });
        let mut decoder = Decoder::new(&nested);
        let mut inner = Decoder::new(decoder.bytes().unwrap());
        assert!(decoder.is_done());
        assert_eq!(inner.u32(), Some(5));
        assert_eq!(inner.f64s(), Some(vec![1.0, 2.0]));
        assert!(inner.is_done());
        let mut huge = Vec::new();
        Encoder::new(&mut huge).u32(u32::MAX);
        assert_eq!(Decoder::new(&huge).f64s(), None);
        assert_eq!(Decoder::new(&huge).bytes(), None);
    }

    #[test]
    fn fingerprints_follow_every_setting() {
        let base = DetectorSettings::default();
        let same = DetectorSettings::default();
        assert_eq!(settings_fingerprint(&base), settings_fingerprint(&same));
        let wider = DetectorSettings {
            window_size: base.window_size + 1,
            ..base.clone()
        };
        assert_ne!(settings_fingerprint(&base), settings_fingerprint(&wider));
        let other_side = DetectorSettings {
            direction: Direction::Lower,
            ..base.clone()
        };
        assert_ne!(
            settings_fingerprint(&base),
            settings_fingerprint(&other_side)
        );
    }
}
