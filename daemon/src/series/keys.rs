//! The series names of one shard, packed into one byte buffer.
//!
//! A `Box<str>` per name costs 16 bytes where it is stored plus a heap
//! allocation of at least 32 bytes with glibc. Here each name is its length
//! (LEB128: one byte below 128) followed by its bytes, appended to one
//! `Vec<u8>` and addressed by a `u32` offset. A removed name stays as garbage
//! until [`Keys::compact`] rewrites the live names, which the shard does once
//! garbage outweighs them, so the buffer stays within about twice the live
//! names.

/// Names addressed by offset.
#[derive(Debug, Default)]
pub(super) struct Keys {
    bytes: Vec<u8>,
    /// Bytes of removed names still in `bytes`.
    garbage: usize,
}

impl Keys {
    /// Appends `key`; returns its offset.
    pub(super) fn push(&mut self, key: &[u8]) -> u32 {
        let at =
            u32::try_from(self.bytes.len()).expect("the series names of one shard fit in 4 GiB");
        let mut len = key.len();
        while len >= 0x80 {
            self.bytes.push((len & 0x7f) as u8 | 0x80);
            len >>= 7;
        }
        self.bytes.push(len as u8);
        self.bytes.extend_from_slice(key);
        at
    }

    /// The name at `at` (an offset returned by [`push`](Self::push)), and
    /// the number of bytes it takes.
    #[inline]
    fn entry(&self, at: u32) -> (&[u8], usize) {
        let start = at as usize;
        let mut pos = start;
        let mut len = 0usize;
        let mut shift = 0;
        loop {
            let byte = self.bytes[pos];
            pos += 1;
            len |= usize::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                break;
            }
            shift += 7;
        }
        (&self.bytes[pos..pos + len], pos + len - start)
    }

    /// The name at `at`.
    #[inline]
    pub(super) fn get(&self, at: u32) -> &[u8] {
        let start = at as usize;
        match self.bytes.get(start) {
            // Names shorter than 128 bytes, the common case: one length byte.
            Some(&len) if len < 0x80 => &self.bytes[start + 1..start + 1 + usize::from(len)],
            _ => self.entry(at).0,
        }
    }

    /// Marks the name at `at` as removed.
    pub(super) fn remove(&mut self, at: u32) {
        self.garbage += self.entry(at).1;
    }

    /// `true` once removed names take more room than live ones.
    pub(super) fn wants_compaction(&self) -> bool {
        self.garbage > self.bytes.len() / 2
    }

    /// Rewrites the names at `offsets` (every live name, each once) without
    /// the garbage, updating the offsets.
    pub(super) fn compact<'a>(&mut self, offsets: impl Iterator<Item = &'a mut u32>) {
        let old = std::mem::replace(
            self,
            Keys {
                bytes: Vec::with_capacity(self.bytes.len() - self.garbage),
                garbage: 0,
            },
        );
        for at in offsets {
            *at = self.push(old.get(*at));
        }
    }

    /// Bytes held, garbage included.
    #[cfg(test)]
    fn size(&self) -> usize {
        self.bytes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_any_length_round_trip() {
        let mut keys = Keys::default();
        let names: Vec<Vec<u8>> = [0usize, 1, 7, 127, 128, 300, 16_383, 16_384, 70_000]
            .iter()
            .map(|&n| (0..n).map(|i| b'a' + (i % 26) as u8).collect())
            .collect();
        let offsets: Vec<u32> = names.iter().map(|n| keys.push(n)).collect();
        for (name, &at) in names.iter().zip(&offsets) {
            assert_eq!(keys.get(at), &name[..]);
        }
        // One length byte below 128, two below 16,384, three above.
        assert_eq!(keys.entry(offsets[3]).1, 128);
        assert_eq!(keys.entry(offsets[4]).1, 130);
        assert_eq!(keys.entry(offsets[7]).1, 16_387);
    }

    #[test]
    fn compaction_drops_removed_names() {
        let mut keys = Keys::default();
        let mut live: Vec<(String, u32)> = (0..100)
            .map(|i| {
                let name = format!("series.{i}");
                let at = keys.push(name.as_bytes());
                (name, at)
            })
            .collect();
        let full = keys.size();
        for (_, at) in live.iter().filter(|(name, _)| !name.ends_with('7')) {
            keys.remove(*at);
        }
        live.retain(|(name, _)| name.ends_with('7'));
        assert!(keys.wants_compaction());
        keys.compact(live.iter_mut().map(|(_, at)| at));
        assert!(!keys.wants_compaction());
        assert!(keys.size() < full / 5);
        for (name, at) in &live {
            assert_eq!(keys.get(*at), name.as_bytes());
        }
    }
}
