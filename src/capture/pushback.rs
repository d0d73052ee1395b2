//! Bytes put back in front of a reader: how the MJPEG and Y4M parsers resynchronise after damage.
//!
//! Why: after damage the next good frame may already have been read (a truncated frame's bytes run into
//! the next frame's start). Those bytes are put back here and read again before the reader is touched,
//! so one damaged frame costs one frame. Both buffers keep their capacity: once warmed up, putting
//! bytes back does not allocate.

use std::io::{BufRead, Read};

#[derive(Debug, Default)]
pub struct Pushback {
    carry: Vec<u8>,
    at: usize,
    spare: Vec<u8>,
}

impl Pushback {
    /// Forgets what was put back (after a rewind).
    pub fn clear(&mut self) {
        self.carry.clear();
        self.at = 0;
    }

    /// The bytes put back and not read yet.
    pub fn pending(&self) -> &[u8] {
        self.carry.get(self.at..).unwrap_or(&[])
    }

    /// The next byte: a put-back one first, then `r`'s.
    pub fn byte<R: BufRead>(&mut self, r: &mut R) -> std::io::Result<Option<u8>> {
        if let Some(&b) = self.carry.get(self.at) {
            self.at = self.at.saturating_add(1);
            return Ok(Some(b));
        }
        let buf = r.fill_buf()?;
        let Some(&b) = buf.first() else { return Ok(None) };
        r.consume(1);
        Ok(Some(b))
    }

    /// Fills `dst` from the put-back bytes, then `r`. Returns false if `r` ended first.
    pub fn fill<R: Read>(&mut self, r: &mut R, dst: &mut [u8]) -> std::io::Result<bool> {
        let have = self.pending();
        let n = have.len().min(dst.len());
        let (head, tail) = dst.split_at_mut(n);
        head.copy_from_slice(have.get(..n).unwrap_or(&[]));
        self.at = self.at.saturating_add(n);
        match r.read_exact(tail) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Puts `parts`, in order, in front of what is still to be read.
    pub fn unread(&mut self, parts: &[&[u8]]) {
        self.spare.clear();
        for p in parts {
            self.spare.extend_from_slice(p);
        }
        self.spare.extend_from_slice(self.carry.get(self.at..).unwrap_or(&[]));
        std::mem::swap(&mut self.carry, &mut self.spare);
        self.at = 0;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)] // tests may panic
mod tests {
    use super::*;

    #[test]
    fn put_back_bytes_come_first_in_order_then_the_reader() {
        let mut r = std::io::Cursor::new(b"xyz".to_vec());
        let mut p = Pushback::default();
        p.unread(&[b"ab", b"c"]);
        assert_eq!(p.byte(&mut r).unwrap(), Some(b'a'));
        p.unread(&[b"Z"]);
        assert_eq!(p.pending(), b"Zbc");
        let mut dst = [0u8; 5];
        assert!(p.fill(&mut r, &mut dst).unwrap());
        assert_eq!(&dst, b"Zbcxy");
        assert!(!p.fill(&mut r, &mut dst).unwrap(), "the reader ends first");
        assert_eq!(p.byte(&mut r).unwrap(), None);
    }
}
