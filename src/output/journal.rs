//! The journal: what must survive a crash or a power cut, in a fixed-size file.
//!
//! Why: a controller must be able to tell a reboot from lost sentences, and an alert sent to nobody
//! (the controller was off) must not be lost with the process. So the sequence number is written down
//! before every sentence goes out (the next run continues after it: no reuse, no gap), and every alert
//! is appended, with an fsync, before it is sent, then marked when acknowledged; at start the
//! unacknowledged ones are sent again, first, in order.
//!
//! Layout: two 32-byte header slots at the start hold the last sequence number, written alternately (a
//! torn write spoils one, the other is one sentence older); from byte 4096 on, a ring of fixed 320-byte
//! records (an alert with its sentence, or an ACK), each with a counter and a CRC-32, so a torn last
//! record after a power cut is detected by its checksum and skipped, never misread. The file never grows
//! beyond `4096 + records × 320` bytes. A write that fails (full disk, a bad card) is logged and counted by
//! the caller, and alerts still go out on the serial line and GPIO.

// Input reaches this code (files, drivers, the wire): no panic path. Arithmetic is checked, saturating
// or provably bounded (each `allow` says why), and indexing goes through `get`.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bytes of one record.
pub const RECORD: usize = 320;
/// Where the records start.
const RECORDS_AT: u64 = 4096;
const MAGIC: [u8; 4] = *b"LKJ1";
const KIND_ALERT: u8 = 1;
const KIND_ACK: u8 = 2;
/// Longest sentence a record holds.
const MAX_SENTENCE: usize = 256;

// A compile-time table: its indices and counters are bounded by the loops (0..256, 0..8).
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
const fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}
static CRC: [u32; 256] = crc_table();

/// CRC-32 (IEEE), as zlib computes it.
pub fn crc32(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |c, &b| CRC.get(usize::from((c as u8) ^ b)).copied().unwrap_or(0) ^ (c >> 8))
}

/// What the journal held when it was opened.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The last sequence number used (0 for a new journal).
    pub last_seq: u64,
    /// Alerts sent and never acknowledged, oldest first: (seq, the sentence's bytes).
    pub unacked: Vec<(u64, Vec<u8>)>,
    /// Records that failed their checksum (a torn write, damage) and were skipped.
    pub damaged: u64,
}

pub struct Journal {
    file: File,
    records: u64,
    /// Counter of the next record.
    next: u64,
    /// The header slot written last (0 or 1).
    slot: u64,
    /// A reusable record buffer.
    buf: [u8; RECORD],
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at.saturating_add(8)).and_then(|s| <[u8; 8]>::try_from(s).ok()).map_or(0, u64::from_le_bytes)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at.saturating_add(4)).and_then(|s| <[u8; 4]>::try_from(s).ok()).map_or(0, u32::from_le_bytes)
}

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    if let Some(s) = b.get_mut(at..at.saturating_add(v.len())) {
        s.copy_from_slice(v);
    }
}

impl Journal {
    /// Opens (or creates) the journal at `path` with room for `records` records, and reads it back.
    pub fn open(path: &Path, records: u64) -> std::io::Result<(Journal, Recovered)> {
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let records = records.max(16);
        let size = RECORDS_AT.saturating_add(records.saturating_mul(RECORD as u64));
        if file.metadata()?.len() < size {
            file.set_len(size)?;
        }
        let mut j = Journal { file, records, next: 0, slot: 0, buf: [0; RECORD] };
        let rec = j.recover()?;
        Ok((j, rec))
    }

    fn recover(&mut self) -> std::io::Result<Recovered> {
        let mut r = Recovered::default();
        // The header slots.
        let mut head = [0u8; 64];
        self.file.read_exact_at(&mut head, 0)?;
        for (i, s) in head.chunks_exact(32).enumerate() {
            let ok = s.get(..4) == Some(&MAGIC[..]) && u32_at(s, 16) == crc32(s.get(..16).unwrap_or(&[]));
            if ok && u64_at(s, 8) >= r.last_seq {
                r.last_seq = u64_at(s, 8);
                self.slot = i as u64;
            }
        }
        // The records, in the order they were written.
        let mut alerts: Vec<(u64, u64, Vec<u8>)> = Vec::new();
        let mut acks: Vec<u64> = Vec::new();
        let mut rec = [0u8; RECORD];
        for i in 0..self.records {
            let at = RECORDS_AT.saturating_add(i.saturating_mul(RECORD as u64));
            self.file.read_exact_at(&mut rec, at)?;
            if rec.iter().all(|&b| b == 0) {
                continue;
            }
            let body = rec.get(..RECORD.saturating_sub(4)).unwrap_or(&[]);
            if rec.get(..4) != Some(&MAGIC[..]) || u32_at(&rec, RECORD.saturating_sub(4)) != crc32(body) {
                r.damaged = r.damaged.saturating_add(1);
                continue;
            }
            let (kind, counter, seq) = (rec.get(4).copied().unwrap_or(0), u64_at(&rec, 8), u64_at(&rec, 16));
            let len =
                usize::from(u16::from_le_bytes([rec.get(24).copied().unwrap_or(0), rec.get(25).copied().unwrap_or(0)]));
            self.next = self.next.max(counter.saturating_add(1));
            r.last_seq = r.last_seq.max(seq);
            match kind {
                KIND_ALERT => {
                    let bytes = rec.get(26..26usize.saturating_add(len.min(MAX_SENTENCE))).unwrap_or(&[]).to_vec();
                    alerts.push((counter, seq, bytes));
                }
                KIND_ACK => acks.push(seq),
                _ => r.damaged = r.damaged.saturating_add(1),
            }
        }
        alerts.sort_by_key(|a| a.0);
        r.unacked = alerts.into_iter().filter(|(_, seq, _)| !acks.contains(seq)).map(|(_, s, b)| (s, b)).collect();
        Ok(r)
    }

    /// Writes down that `seq` is used (before the sentence goes out). No fsync: it survives a crash of
    /// the process; after a power cut the last heartbeat's number may come again.
    pub fn mark_seq(&mut self, seq: u64) -> std::io::Result<()> {
        self.slot = u64::from(self.slot == 0);
        let mut s = [0u8; 32];
        put(&mut s, 0, &MAGIC);
        put(&mut s, 8, &seq.to_le_bytes());
        let crc = crc32(s.get(..16).unwrap_or(&[]));
        put(&mut s, 16, &crc.to_le_bytes());
        self.file.write_all_at(&s, self.slot.saturating_mul(32))
    }

    fn append(&mut self, kind: u8, seq: u64, sentence: &[u8]) -> std::io::Result<()> {
        self.buf = [0; RECORD];
        let len = sentence.len().min(MAX_SENTENCE);
        put(&mut self.buf, 0, &MAGIC);
        put(&mut self.buf, 4, &[kind]);
        put(&mut self.buf, 8, &self.next.to_le_bytes());
        put(&mut self.buf, 16, &seq.to_le_bytes());
        put(&mut self.buf, 24, &(len as u16).to_le_bytes());
        put(&mut self.buf, 26, sentence.get(..len).unwrap_or(&[]));
        let crc = crc32(self.buf.get(..RECORD.saturating_sub(4)).unwrap_or(&[]));
        put(&mut self.buf, RECORD.saturating_sub(4), &crc.to_le_bytes());
        let at =
            RECORDS_AT.saturating_add(self.next.checked_rem(self.records).unwrap_or(0).saturating_mul(RECORD as u64));
        self.next = self.next.saturating_add(1);
        self.file.write_all_at(&self.buf, at)
    }

    /// Appends an alert and syncs it to the medium before it is sent.
    pub fn alert(&mut self, seq: u64, sentence: &[u8]) -> std::io::Result<()> {
        self.append(KIND_ALERT, seq, sentence)?;
        self.file.sync_data()
    }

    /// Marks `seq` acknowledged.
    pub fn ack(&mut self, seq: u64) -> std::io::Result<()> {
        self.append(KIND_ACK, seq, &[])
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)] // tests may panic
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("lookout-journal-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&d);
        d
    }

    #[test]
    fn crc_is_zlibs() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn sequence_and_unacked_alerts_survive_a_reopen() {
        let p = tmp("reopen");
        let (mut j, r) = Journal::open(&p, 64).unwrap();
        assert_eq!(r, Recovered::default());
        for seq in 1..=6 {
            j.mark_seq(seq).unwrap();
            if seq % 2 == 0 {
                j.alert(seq, format!("$LKALR,{seq},...*00\r\n").as_bytes()).unwrap();
            }
        }
        j.ack(4).unwrap();
        j.mark_seq(7).unwrap();
        drop(j);
        let (_, r) = Journal::open(&p, 64).unwrap();
        assert_eq!(r.last_seq, 7);
        assert_eq!(r.unacked, vec![(2, b"$LKALR,2,...*00\r\n".to_vec()), (6, b"$LKALR,6,...*00\r\n".to_vec())]);
        assert_eq!(r.damaged, 0);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn a_torn_record_is_skipped_never_misread_and_the_ring_stays_fixed() {
        let p = tmp("torn");
        let (mut j, _) = Journal::open(&p, 16).unwrap();
        for seq in 1..=40u64 {
            j.mark_seq(seq).unwrap();
            j.alert(seq, b"$LKALR,x*00\r\n").unwrap();
            if seq < 38 {
                j.ack(seq).unwrap();
            }
        }
        drop(j);
        let len = std::fs::metadata(&p).unwrap().len();
        assert_eq!(len, 4096 + 16 * 320, "fixed size");
        // Tear the newest record: the last one written (counter 76, alert 40), in slot 76 % 16 = 12.
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.write_all_at(&[0xAB; 100], 4096 + 12 * 320 + 150).unwrap();
        drop(f);
        let (_, r) = Journal::open(&p, 16).unwrap();
        assert_eq!(r.damaged, 1);
        assert_eq!(r.last_seq, 40, "the header still knows the last seq");
        let seqs: Vec<u64> = r.unacked.iter().map(|u| u.0).collect();
        assert_eq!(seqs, vec![38, 39], "alert 40 was torn: skipped, not misread");
        // A torn header slot: the other one is one older.
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        let (mut j, _) = Journal::open(&p, 16).unwrap();
        j.mark_seq(41).unwrap();
        let slot = j.slot;
        drop(j);
        f.write_all_at(&[0xFF; 8], slot * 32 + 8).unwrap();
        let (_, r) = Journal::open(&p, 16).unwrap();
        assert_eq!(r.last_seq, 40);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn garbage_files_are_not_trusted() {
        let p = tmp("garbage");
        let mut x = 7u32;
        let junk: Vec<u8> = (0..4096 + 16 * 320)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        std::fs::write(&p, junk).unwrap();
        let (_, r) = Journal::open(&p, 16).unwrap();
        assert_eq!((r.last_seq, r.unacked.len(), r.damaged), (0, 0, 16));
        std::fs::remove_file(&p).unwrap();
    }
}
