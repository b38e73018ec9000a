//! The series table as snapshot records, one per series: its name, the
//! fingerprint of the detector settings it was under, its `seq`, counters
//! and last timestamp (which recognise resends after a restart), its
//! episode state and open episode, and its detector's state. The file
//! around the records (version, checksum, atomic write) is
//! [`crate::snapshot`]'s.
//!
//! Records are written one shard at a time, under that shard's lock only;
//! each is length-prefixed, so one that does not read back costs only its
//! own series.

use super::episodes::OpenEpisode;
use super::shard::{Shard, hash_name};
use super::{SHARDS, SeriesTable};
use crate::detect::Side;
use crate::detect::episode::EpisodeState;
use crate::detect::persist::{Decoder, Encoder, settings_fingerprint};
use crate::detect::registry;

/// What [`SeriesTable::import`] did with the records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Series restored, windows and episodes included.
    pub restored: usize,
    /// Records taken under other detector settings (or another detector):
    /// their series start fresh.
    pub changed: usize,
    /// Records that did not read back: their series start fresh.
    pub unreadable: usize,
    /// Records beyond `max_series`, or of series already present.
    pub skipped: usize,
}

impl SeriesTable {
    /// How many shards [`export_shard`](Self::export_shard) takes.
    pub fn shard_count(&self) -> usize {
        SHARDS
    }

    /// Appends the records of shard `index` to `out`; returns how many
    /// series it wrote. The shard's lock is held for [`CHUNK`] series at a
    /// time, so a request for the shard waits at most that long. If a
    /// series is removed meanwhile (ids move), the shard is written again,
    /// whole, under one hold: every series is written once.
    pub fn export_shard(&self, index: usize, out: &mut Vec<u8>) -> usize {
        let mut count = [0];
        self.export_shard_by(index, |_| Some(0), std::slice::from_mut(out), &mut count);
        count[0]
    }

    /// As [`export_shard`](Self::export_shard), but appends each series'
    /// record to `outs[route(name)]` and counts it in `counts[route(name)]`,
    /// and skips the series `route` gives `None` (a cluster member writes
    /// one snapshot per partition). `counts` is as long as `outs`.
    pub fn export_shard_by(
        &self,
        index: usize,
        route: impl Fn(&str) -> Option<usize>,
        outs: &mut [Vec<u8>],
        counts: &mut [usize],
    ) {
        let profiles = self.current();
        let fingerprints: Vec<u64> = profiles
            .settings
            .iter()
            .map(|settings| settings_fingerprint(&settings.detector))
            .collect();
        let starts: Vec<(usize, usize)> = outs
            .iter()
            .map(Vec::len)
            .zip(counts.iter().copied())
            .collect();
        let write = |shard: &Shard,
                     ids: std::ops::Range<usize>,
                     outs: &mut [Vec<u8>],
                     counts: &mut [usize]| {
            for id in ids {
                // Names come from `&str`s: always UTF-8.
                let name = std::str::from_utf8(shard.name(id as u32)).unwrap_or_default();
                if let Some(i) = route(name).filter(|&i| i < outs.len()) {
                    write_record(&profiles, &fingerprints, shard, id as u32, &mut outs[i]);
                    counts[i] += 1;
                }
            }
        };
        let mut next = 0;
        let mut removals = None;
        loop {
            let shard = self.lock_shard(index);
            let now = shard.removals();
            if *removals.get_or_insert(now) != now {
                for ((out, count), &(start, counted)) in
                    outs.iter_mut().zip(counts.iter_mut()).zip(&starts)
                {
                    out.truncate(start);
                    *count = counted;
                }
                write(&shard, 0..shard.len(), outs, counts);
                return;
            }
            let end = (next + CHUNK).min(shard.len());
            write(&shard, next..end, outs, counts);
            next = end;
            if next == shard.len() {
                return;
            }
            drop(shard);
            // Let the requests waiting for this shard, or for the core, go.
            std::thread::yield_now();
        }
    }

    /// Restores the series of `records` (as [`export_shard`] wrote them,
    /// one after another) under the configuration in force. A series
    /// already present is left alone.
    ///
    /// [`export_shard`]: Self::export_shard
    pub fn import(&self, records: &[u8]) -> RestoreReport {
        let profiles = self.current();
        let now = self.now_secs();
        let mut report = RestoreReport::default();
        let mut decoder = Decoder::new(records);
        while !decoder.is_done() {
            let Some(record) = decoder.bytes() else {
                report.unreadable += 1;
                break;
            };
            match self.import_record(&profiles, record, now) {
                Imported::Restored => report.restored += 1,
                Imported::Changed => report.changed += 1,
                Imported::Unreadable => report.unreadable += 1,
                Imported::Skipped => report.skipped += 1,
            }
        }
        report
    }

    fn import_record(&self, profiles: &super::Profiles, record: &[u8], now: u32) -> Imported {
        let Some(parsed) = Record::read(record) else {
            return Imported::Unreadable;
        };
        let Ok(name) = std::str::from_utf8(parsed.name) else {
            return Imported::Unreadable;
        };
        let profile = profiles.profile_of(name);
        let settings = &profiles.settings[profile as usize].detector;
        if parsed.fingerprint != settings_fingerprint(settings)
            || parsed.kind != settings.kind.name.as_bytes()
        {
            return Imported::Changed;
        }
        // Read the detector's state before the series takes a slot.
        let model = if settings.is_moving_average() {
            let mut probe = Decoder::new(parsed.detector);
            let valid = probe.f64s().is_some() && probe.f64s().is_some() && probe.is_done();
            if !valid {
                return Imported::Unreadable;
            }
            None
        } else {
            let mut bytes = Decoder::new(parsed.detector);
            match (settings.kind.restore)(&mut bytes, settings) {
                Some(model) if bytes.is_done() => Some(model),
                _ => return Imported::Unreadable,
            }
        };
        let hash = hash_name(&self.hasher, name);
        let mut shard = self.lock_shard(Self::shard_of(hash));
        if shard.find(hash, name).is_some() || self.reserve(1).is_err() {
            return Imported::Skipped;
        }
        let id = Self::create(profiles, &mut shard, hash, name, now);
        let (slot, ring) = shard.series(id).into_ring();
        match model {
            Some(model) => slot.detector.set_model(model),
            None => {
                slot.detector
                    .restore_window(&mut Decoder::new(parsed.detector), ring)
                    .expect("checked above");
            }
        }
        slot.last_seq = parsed.last_seq;
        slot.stats = parsed.stats;
        slot.episode = parsed.episode;
        if let Some(open) = parsed.open {
            shard.open_episodes.insert(name.into(), open);
            self.episodes.restored_open();
        }
        Imported::Restored
    }
}

/// The fate of one record.
enum Imported {
    Restored,
    Changed,
    Unreadable,
    Skipped,
}

/// Series written per hold of a shard's lock: about 50 µs of encoding.
const CHUNK: usize = 256;

/// Writes the record of series `id`, length first. `fingerprints` holds
/// the fingerprint of each of `profiles`' settings.
fn write_record(
    profiles: &super::Profiles,
    fingerprints: &[u64],
    shard: &Shard,
    id: u32,
    out: &mut Vec<u8>,
) {
    let name = shard.name(id);
    let slot = shard.slot(id);
    let profile = profiles.profile_index(name, slot);
    let open = slot.episode.open().and_then(|_| {
        let name = std::str::from_utf8(name).ok()?;
        shard.open_episodes.get(name).copied()
    });
    Encoder::new(out).nested(|encoder| {
        encoder.bytes(name);
        encoder.u64(fingerprints[profile]);
        encoder.bytes(slot.detector.kind().name.as_bytes());
        encoder.u64(slot.last_seq);
        let stats = slot.stats;
        encoder.u64(stats.points);
        encoder.u32(stats.anomalies);
        encoder.f64(stats.last_value);
        encoder.f64(stats.last_timestamp);
        let (episode, anomalous, calm) = slot.episode.to_parts();
        encoder.u64(episode);
        encoder.u32(u32::from(anomalous));
        encoder.u32(u32::from(calm));
        match open {
            None => encoder.u32(0),
            Some(open) => {
                encoder.u32(1);
                encoder.u64(open.id);
                encoder.f64(open.start);
                encoder.u64(open.points);
                encoder.f64(open.peak_score);
                encoder.f64(open.peak_value);
                encoder.u32(match open.direction {
                    Side::Upper => 0,
                    Side::Lower => 1,
                });
            }
        }
        encoder.nested(|state| match slot.detector.model() {
            Some(model) => model.save(state),
            None => slot.detector.save_window(shard.ring(id), state),
        });
    });
}

/// One record, read.
struct Record<'a> {
    name: &'a [u8],
    fingerprint: u64,
    kind: &'a [u8],
    last_seq: u64,
    stats: super::shard::SeriesStats,
    episode: EpisodeState,
    open: Option<OpenEpisode>,
    detector: &'a [u8],
}

impl<'a> Record<'a> {
    fn read(bytes: &'a [u8]) -> Option<Record<'a>> {
        let mut d = Decoder::new(bytes);
        let name = d.bytes()?;
        let fingerprint = d.u64()?;
        let kind = d.bytes()?;
        registry::by_name(std::str::from_utf8(kind).ok()?)?;
        let last_seq = d.u64()?;
        let stats = super::shard::SeriesStats {
            points: d.u64()?,
            anomalies: d.u32()?,
            last_value: d.f64()?,
            last_timestamp: d.f64()?,
        };
        let episode = EpisodeState::from_parts(
            d.u64()?,
            u16::try_from(d.u32()?).ok()?,
            u16::try_from(d.u32()?).ok()?,
        );
        let open = match d.u32()? {
            0 => None,
            1 => Some(OpenEpisode {
                id: d.u64()?,
                start: d.f64()?,
                points: d.u64()?,
                peak_score: d.f64()?,
                peak_value: d.f64()?,
                direction: match d.u32()? {
                    0 => Side::Upper,
                    1 => Side::Lower,
                    _ => return None,
                },
            }),
            _ => return None,
        };
        // An open episode and its summary go together.
        if episode.open().is_some() != open.is_some() {
            return None;
        }
        let detector = d.bytes()?;
        d.is_done().then_some(Record {
            name,
            fingerprint,
            kind,
            last_seq,
            stats,
            episode,
            open,
            detector,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::detect::Verdict;
    use crate::ingest::DataPoint;

    fn table(text: &str) -> SeriesTable {
        let config = Config::from_toml_str(text, std::path::Path::new("t.toml")).unwrap();
        SeriesTable::new(Arc::new(config))
    }

    fn point(series: &str, value: f64, seq: u64) -> DataPoint<'static> {
        DataPoint {
            value,
            timestamp: Some(1_700_000_000.0 + seq as f64),
            series: Cow::Owned(series.to_owned()),
            seq: Some(seq),
        }
    }

    fn export(table: &SeriesTable) -> (Vec<u8>, usize) {
        let mut out = Vec::new();
        let count = (0..table.shard_count())
            .map(|shard| table.export_shard(shard, &mut out))
            .sum();
        (out, count)
    }

    const CONFIG: &str = "[detector]\nwindow_size = 5\nthreshold_multiplier = 3\nresolve_after = 2\n\
        [[rule]]\nseries = \"robust.*\"\ndetector = \"median_mad\"\nwindow_size = 5\n";

    #[test]
    fn series_continue_in_a_new_table_with_seq_and_open_episodes() {
        let before = table(CONFIG);
        for seq in 1..=6 {
            let wobble = (seq % 2) as f64;
            before
                .observe_point(&point("cpu", 10.0 + wobble, seq))
                .unwrap();
            before
                .observe_point(&point("robust.mem", 10.0 + wobble * 1e-9, seq))
                .unwrap();
        }
        // A spike opens an episode on cpu.
        let spike = before.observe_point(&point("cpu", 100.0, 7)).unwrap();
        assert!(matches!(spike.verdict, Verdict::Anomaly(..)));
        assert!(spike.episode.episode.is_some());
        let open = before.episode_counts().open;

        let (records, count) = export(&before);
        assert_eq!(count, 2);
        let after = table(CONFIG);
        let report = after.import(&records);
        assert_eq!(
            report,
            RestoreReport {
                restored: 2,
                ..RestoreReport::default()
            }
        );
        assert_eq!(after.len(), 2);
        assert_eq!(after.episode_counts().open, open);

        for name in ["cpu", "robust.mem"] {
            // Not warming up: the window came back.
            let next = |table: &SeriesTable| table.observe_point(&point(name, 10.5, 8)).unwrap();
            let (a, b) = (next(&before), next(&after));
            assert!(!b.duplicate, "{name}");
            // The same verdict, with the same baseline up to rounding (the
            // restored window's sums are recomputed from its points).
            assert_eq!(a.verdict.is_anomaly(), b.verdict.is_anomaly(), "{name}");
            match (a.verdict, b.verdict) {
                (
                    Verdict::Normal(x) | Verdict::Anomaly(x, _),
                    Verdict::Normal(y) | Verdict::Anomaly(y, _),
                ) => {
                    assert!(
                        (x.mean - y.mean).abs() <= 1e-9 * x.mean.abs().max(1.0),
                        "{name}"
                    );
                    assert!(
                        (x.std_dev - y.std_dev).abs() <= 1e-9 * x.std_dev.max(1.0),
                        "{name}"
                    );
                }
                (x, y) => panic!("{name}: {x:?} then {y:?}"),
            }
            // The last seq came back: a resend is recognised.
            assert!(
                after
                    .observe_point(&point(name, 10.0, 3))
                    .unwrap()
                    .duplicate,
                "{name}"
            );
        }
        // The open episode is the same one, and closes as it would have.
        let a = before.observe_point(&point("cpu", 10.5, 9)).unwrap();
        let b = after.observe_point(&point("cpu", 10.5, 9)).unwrap();
        assert_eq!(a.episode, b.episode);
        assert_eq!(after.episode_counts().open, before.episode_counts().open);
    }

    #[test]
    fn changed_settings_and_broken_records_start_fresh() {
        let before = table(CONFIG);
        for seq in 1..=6 {
            before.observe_point(&point("cpu", 10.0, seq)).unwrap();
            before
                .observe_point(&point("robust.mem", 10.0, seq))
                .unwrap();
        }
        let (records, _) = export(&before);
        // window_size changed for the default profile only.
        let after = table(&CONFIG.replacen("window_size = 5", "window_size = 6", 1));
        let report = after.import(&records);
        assert_eq!((report.restored, report.changed), (1, 1), "{report:?}");
        // A cut file: what reads back is restored, the rest is counted.
        let cut = table(CONFIG).import(&records[..records.len() - 3]);
        assert_eq!(cut.restored + cut.unreadable, 2, "{cut:?}");
        assert!(cut.unreadable >= 1);
        // Garbage never panics.
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let report = table(CONFIG).import(&noise);
        assert_eq!(report.restored, 0);
    }

    /// The series names of exported records.
    fn names(records: &[u8]) -> Vec<String> {
        let mut decoder = Decoder::new(records);
        let mut names = Vec::new();
        while !decoder.is_done() {
            let record = decoder.bytes().expect("a record");
            let name = Decoder::new(record).bytes().expect("a name");
            names.push(String::from_utf8(name.to_vec()).unwrap());
        }
        names
    }

    #[test]
    fn an_export_during_a_sweep_writes_every_surviving_series_once() {
        // Shards of several chunks each; the sweep removes half the
        // series while the export runs, which moves the others' ids.
        for round in 0..8 {
            let mut table = table("[detector]\nwindow_size = 3\nseries_ttl = \"10s\"\n");
            let batch = |prefix: &str| -> Vec<DataPoint<'static>> {
                (0..20_000)
                    .map(|i| DataPoint {
                        value: 1.0,
                        timestamp: None,
                        series: Cow::Owned(format!("{prefix}{i}")),
                        seq: None,
                    })
                    .collect()
            };
            table.observe_batch(&batch("old.")).unwrap();
            table.started -= std::time::Duration::from_secs(8);
            table.observe_batch(&batch("new.")).unwrap();
            table.started -= std::time::Duration::from_secs(8);
            let (exported, removed) = std::thread::scope(|scope| {
                let export = scope.spawn(|| export(&table));
                let sweep = scope.spawn(|| table.sweep_idle().0);
                (export.join().unwrap(), sweep.join().unwrap())
            });
            assert_eq!(removed, 20_000, "round {round}");
            let (records, count) = exported;
            let mut names = names(&records);
            assert_eq!(names.len(), count, "round {round}");
            names.sort_unstable();
            let before = names.len();
            names.dedup();
            assert_eq!(names.len(), before, "round {round}: a series written twice");
            let new = names.iter().filter(|n| n.starts_with("new.")).count();
            assert_eq!(new, 20_000, "round {round}: a surviving series is missing");
        }
    }
}
