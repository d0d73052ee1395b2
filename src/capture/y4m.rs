//! Y4M (YUV4MPEG2) files: uncompressed YUV frames with a one-line text header.
//!
//! Why: raw YUV is what cameras deliver before any compression, so a Y4M clip exercises the same colour
//! conversion a V4L2 camera does, with no JPEG decoder in between. `C422` frames (planar 4:2:2, the sampling
//! of a YUYV camera) are interleaved into YUYV in the slot; `C420*` frames stay planar I420; `Cmono` is grey.
//! `ffmpeg -i in.mp4 -f yuv4mpegpipe -pix_fmt yuv422p out.y4m` (or `yuv420p`, `gray`) makes them.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};

use super::mjpeg::ReadSeek;
use super::pushback::Pushback;
use super::{pts_ms, CaptureError, FrameSource, Next, SourceInfo};
use crate::frame::{Frame, PixelFormat};

/// Frame rates a Y4M header may give (frames per second): the same bounds as `source.fps`.
pub const FPS_RANGE: (f64, f64) = (crate::config::MIN_FPS, crate::config::MAX_FPS);

/// Longest header or FRAME line read (bytes): a file without newlines (`/dev/zero`) is refused, not
/// read until memory runs out.
const MAX_LINE: u64 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chroma {
    C420,
    C422,
    Mono,
}

/// A Y4M stream read from a file or memory.
///
/// Damage inside the stream (a FRAME line that is not one, a frame cut short) costs that frame only: it
/// is reported as corrupt and reading resumes at the next `FRAME` line, including one found inside the
/// damaged frame's bytes (kept in `carry` and read again). A frame counts as good only when the next
/// thing in the file is another `FRAME` line or the end, so a header that lies about the size gives
/// corrupt frames, not misaligned pictures.
pub struct Y4mSource {
    reader: BufReader<Box<dyn ReadSeek>>,
    /// Bytes read again after damage (see the type's documentation).
    back: Pushback,
    chroma: Chroma,
    info: SourceInfo,
    /// Byte offset of the first FRAME line, for rewinding.
    data_start: u64,
    /// One planar frame as stored in the file (only used for C422, which is interleaved into the slot).
    planar: Vec<u8>,
    line: Vec<u8>,
    index: u64,
    /// The previous frame was damaged: look for the next FRAME line before reading one.
    resync: bool,
}

fn bad(msg: String) -> CaptureError {
    CaptureError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, msg))
}

/// Parses a header rate `n:d` (two positive integers) into frames per second inside [`FPS_RANGE`].
fn parse_rate(val: &str) -> Result<f64, String> {
    let err = || format!("Y4M frame rate F{val} is not usable (want F<n>:<d>, {} to {} fps)", FPS_RANGE.0, FPS_RANGE.1);
    let (n, d) = val.split_once(':').ok_or_else(err)?;
    let (n, d): (u32, u32) = (n.parse().map_err(|_| err())?, d.parse().map_err(|_| err())?);
    if n == 0 || d == 0 {
        return Err(err());
    }
    let fps = f64::from(n) / f64::from(d);
    if !(FPS_RANGE.0..=FPS_RANGE.1).contains(&fps) {
        return Err(err());
    }
    Ok(fps)
}

impl Y4mSource {
    pub fn new(reader: Box<dyn ReadSeek>) -> Result<Y4mSource, CaptureError> {
        let mut reader = BufReader::with_capacity(256 * 1024, reader);
        let mut header = Vec::with_capacity(128);
        (&mut reader).take(MAX_LINE).read_until(b'\n', &mut header)?;
        if header.last() != Some(&b'\n') {
            return Err(bad(format!("not a Y4M file: no header line in the first {MAX_LINE} bytes")));
        }
        let text = std::str::from_utf8(&header).map_err(|_| bad("Y4M header is not text".into()))?;
        let mut fields = text.trim_end().split(' ');
        if fields.next() != Some("YUV4MPEG2") {
            return Err(bad("not a Y4M file (no YUV4MPEG2 signature)".into()));
        }
        let (mut w, mut h, mut fps, mut chroma) = (0u32, 0u32, 25.0f64, Chroma::C420);
        for f in fields {
            let mut chars = f.chars();
            let Some(tag) = chars.next() else { continue };
            let val = chars.as_str();
            match tag {
                'W' => w = val.parse().map_err(|_| bad(format!("bad Y4M width {val:?}")))?,
                'H' => h = val.parse().map_err(|_| bad(format!("bad Y4M height {val:?}")))?,
                'F' => fps = parse_rate(val).map_err(bad)?,
                'C' => {
                    chroma = match val {
                        "420" | "420jpeg" | "420paldv" | "420mpeg2" => Chroma::C420,
                        "422" => Chroma::C422,
                        "mono" => Chroma::Mono,
                        _ => {
                            return Err(bad(format!(
                                "Y4M colour space C{val} is not supported (8-bit 420, 422 or mono only)"
                            )))
                        }
                    };
                }
                _ => {}
            }
        }
        if w == 0 || h == 0 || w > 16384 || h > 16384 {
            return Err(bad(format!("Y4M frame size {w}x{h} is not usable (1..16384 each way)")));
        }
        let format = match chroma {
            Chroma::C420 => PixelFormat::I420,
            Chroma::C422 => PixelFormat::Yuyv,
            Chroma::Mono => PixelFormat::Grey,
        };
        let info = SourceInfo { width: w, height: h, format, fps, live: false };
        // Planar 4:2:2 has exactly as many bytes as packed YUYV.
        let planar = if chroma == Chroma::C422 { vec![0; info.frame_len()] } else { Vec::new() };
        Ok(Y4mSource {
            reader,
            back: Pushback::default(),
            chroma,
            info,
            data_start: header.len() as u64,
            planar,
            line: Vec::with_capacity(128),
            index: 0,
            resync: false,
        })
    }

    /// Opens a Y4M file (or FIFO: see [`crate::shutdown::open_file`]).
    pub fn open(path: &std::path::Path, stop: &crate::shutdown::Shutdown) -> Result<Y4mSource, CaptureError> {
        Y4mSource::new(Box::new(crate::shutdown::open_file(path, stop)?))
    }

    fn byte(&mut self) -> std::io::Result<Option<u8>> {
        self.back.byte(&mut self.reader)
    }

    /// Reads one line (up to `MAX_LINE` bytes) into `self.line`. Returns false at the end of the file.
    fn read_line(&mut self) -> std::io::Result<bool> {
        self.line.clear();
        while (self.line.len() as u64) < MAX_LINE {
            match self.byte()? {
                None => return Ok(!self.line.is_empty()),
                Some(b) => {
                    self.line.push(b);
                    if b == b'\n' {
                        return Ok(true);
                    }
                }
            }
        }
        Ok(true)
    }

    /// Skips to just after the next `FRAME...\n` line. Returns false if the file ends first.
    fn skip_to_frame_line(&mut self) -> std::io::Result<bool> {
        let mut matched = 0usize;
        while let Some(b) = self.byte()? {
            matched =
                if Some(&b) == b"FRAME".get(matched) { matched.saturating_add(1) } else { usize::from(b == b'F') };
            if matched == 5 {
                // The rest of the FRAME line (its parameters).
                self.line.clear();
                return self.read_line();
            }
        }
        Ok(false)
    }

    /// Whether the next bytes are a FRAME line (or the end of the file), without consuming them.
    fn frame_line_or_end_follows(&mut self) -> std::io::Result<bool> {
        let mut peek = [0u8; 5];
        let mut n = 0;
        while n < 5 {
            match self.byte()? {
                Some(b) => {
                    if let Some(p) = peek.get_mut(n) {
                        *p = b;
                    }
                    n = n.saturating_add(1);
                }
                None => break,
            }
        }
        let got = peek.get(..n).unwrap_or(&[]);
        self.back.unread(&[got]);
        // Three of the five letters are enough: a FRAME line with a damaged letter still shows that this
        // frame had the right length (the damaged line is then the next frame's problem).
        let letters = got.iter().zip(b"FRAME").filter(|(a, b)| a == b).count();
        Ok(n == 0 || letters >= 3)
    }
}

/// Interleaves planar 4:2:2 (Y plane, U plane, V plane at half width) into packed YUYV. Short planes
/// or a short output leave the rest untouched (the caller sized them; this never panics).
pub fn interleave_422(planar: &[u8], width: usize, height: usize, out: &mut [u8]) {
    let cw = width.div_ceil(2);
    let ylen = width.saturating_mul(height);
    let clen = cw.saturating_mul(height);
    let y = planar.get(..ylen).unwrap_or(&[]);
    let u = planar.get(ylen..ylen.saturating_add(clen)).unwrap_or(&[]);
    let v = planar.get(ylen.saturating_add(clen)..).unwrap_or(&[]);
    let rows = y.chunks_exact(width.max(1)).zip(u.chunks_exact(cw.max(1))).zip(v.chunks_exact(cw.max(1)));
    for (((yr, ur), vr), o) in rows.zip(out.chunks_exact_mut(cw.saturating_mul(4).max(1))) {
        for (c, ((px, &uu), &vv)) in o.chunks_exact_mut(4).zip(ur).zip(vr).enumerate() {
            let y0 = yr.get(c.saturating_mul(2)).copied().unwrap_or(0);
            let y1 = yr.get(c.saturating_mul(2).saturating_add(1)).copied().unwrap_or(y0);
            px.copy_from_slice(&[y0, uu, y1, vv]);
        }
    }
}

impl FrameSource for Y4mSource {
    fn info(&self) -> SourceInfo {
        self.info
    }

    fn next_frame(&mut self, frame: &mut Frame) -> Result<Next, CaptureError> {
        let index = self.index;
        if self.resync {
            self.resync = false;
            if !self.skip_to_frame_line()? {
                return Ok(Next::End);
            }
        } else {
            if !self.read_line()? {
                return Ok(Next::End);
            }
            if !self.line.starts_with(b"FRAME") || self.line.last() != Some(&b'\n') {
                // Not a FRAME line: this frame is lost; look for the next one (maybe inside this line).
                self.index = self.index.saturating_add(1);
                let line = std::mem::take(&mut self.line);
                if let Some(p) = line.windows(5).skip(1).position(|w| w == b"FRAME") {
                    self.back.unread(&[line.get(p.saturating_add(1)..).unwrap_or(&[])]);
                }
                self.line = line;
                self.resync = true;
                return Err(CaptureError::Corrupt { index, reason: "damaged FRAME line".into() });
            }
        }
        self.index = self.index.saturating_add(1);
        let len = self.info.frame_len();
        let Some(dst) = frame.data.get_mut(..len) else {
            return Err(CaptureError::Corrupt { index, reason: "the frame does not fit the slot".into() });
        };
        let complete = match self.chroma {
            Chroma::C422 => self.back.fill(&mut self.reader, &mut self.planar)?,
            Chroma::C420 | Chroma::Mono => self.back.fill(&mut self.reader, dst)?,
        };
        if !complete {
            return Err(CaptureError::Corrupt { index, reason: "the file ends inside the frame".into() });
        }
        if !self.frame_line_or_end_follows()? {
            // The frame was cut short (or the header lies about its size): the next FRAME line may be
            // inside what was just read.
            // (The 5 bytes looked at are back in front of the reader; a FRAME line may also straddle.)
            let data: &[u8] =
                if self.chroma == Chroma::C422 { &self.planar } else { frame.data.get(..len).unwrap_or(&[]) };
            let inside = data.windows(5).position(|w| w == b"FRAME");
            let straddle = (1..5).rev().find(|&k| {
                data.ends_with(b"FRAME".get(..k).unwrap_or(&[]))
                    && self.back.pending().starts_with(b"FRAME".get(k..).unwrap_or(&[]))
            });
            match (inside, straddle) {
                (Some(p), _) => self.back.unread(&[data.get(p..).unwrap_or(&[])]),
                (None, Some(k)) => self.back.unread(&[b"FRAME".get(..k).unwrap_or(&[])]),
                (None, None) => self.resync = true,
            }
            return Err(CaptureError::Corrupt {
                index,
                reason: "frame size does not match the header (cut short, or the header lies)".into(),
            });
        }
        if self.chroma == Chroma::C422 {
            interleave_422(&self.planar, self.info.width as usize, self.info.height as usize, dst_of(frame, len));
        }
        frame.len = len;
        frame.format = self.info.format;
        frame.width = self.info.width;
        frame.height = self.info.height;
        frame.index = index;
        frame.pts_ms = pts_ms(index, self.info.fps);
        Ok(Next::Frame)
    }

    fn rewind(&mut self) -> Result<bool, CaptureError> {
        self.reader.seek(SeekFrom::Start(self.data_start))?;
        self.back.clear();
        self.resync = false;
        self.index = 0;
        Ok(true)
    }
}

fn dst_of(frame: &mut Frame, len: usize) -> &mut [u8] {
    frame.data.get_mut(..len).unwrap_or(&mut [])
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)] // tests may panic
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn reads_422_as_yuyv_and_420_as_planar() {
        // 4x2 frame, C422: Y = 0..8, U = 100.., V = 200..
        let mut file = b"YUV4MPEG2 W4 H2 F30:1 Ip C422\nFRAME\n".to_vec();
        file.extend(0u8..8);
        file.extend([100, 101, 102, 103]);
        file.extend([200, 201, 202, 203]);
        let mut src = Y4mSource::new(Box::new(Cursor::new(file))).unwrap();
        assert_eq!(src.info().format, PixelFormat::Yuyv);
        assert_eq!(src.info().fps, 30.0);
        let mut f = Frame::with_capacity(src.info().frame_len());
        assert_eq!(src.next_frame(&mut f).unwrap(), Next::Frame);
        assert_eq!(f.pixels(), &[0, 100, 1, 200, 2, 101, 3, 201, 4, 102, 5, 202, 6, 103, 7, 203]);
        assert_eq!(src.next_frame(&mut f).unwrap(), Next::End);
        assert!(src.rewind().unwrap());
        assert_eq!(src.next_frame(&mut f).unwrap(), Next::Frame);
        assert_eq!(f.index, 0);

        let mut file = b"YUV4MPEG2 W2 H2 F25:1 C420jpeg\nFRAME\n".to_vec();
        file.extend([1, 2, 3, 4, 5, 6]);
        let mut src = Y4mSource::new(Box::new(Cursor::new(file))).unwrap();
        assert_eq!(src.info().format, PixelFormat::I420);
        let mut f = Frame::with_capacity(src.info().frame_len());
        src.next_frame(&mut f).unwrap();
        assert_eq!(f.pixels(), &[1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn short_frame_is_corrupt_not_a_panic() {
        let mut file = b"YUV4MPEG2 W2 H2 F25:1 C420\nFRAME\n".to_vec();
        file.extend([1, 2, 3]);
        let mut src = Y4mSource::new(Box::new(Cursor::new(file))).unwrap();
        let mut f = Frame::with_capacity(src.info().frame_len());
        assert!(matches!(src.next_frame(&mut f), Err(CaptureError::Corrupt { .. })));
    }

    #[test]
    fn unsupported_colour_space_is_named() {
        let file = b"YUV4MPEG2 W2 H2 C444\n".to_vec();
        let err = Y4mSource::new(Box::new(Cursor::new(file))).err().unwrap().to_string();
        assert!(err.contains("C444"), "{err}");
    }

    fn frames_of(file: Vec<u8>) -> (Vec<Result<u8, ()>>, Y4mSource) {
        let mut src = Y4mSource::new(Box::new(Cursor::new(file))).unwrap();
        let mut f = Frame::with_capacity(src.info().frame_len());
        let mut got = Vec::new();
        loop {
            match src.next_frame(&mut f) {
                Ok(Next::Frame) => got.push(Ok(f.pixels()[0])),
                Ok(Next::End) => return (got, src),
                Err(CaptureError::Corrupt { .. }) => got.push(Err(())),
                Err(e) => panic!("{e}"),
            }
        }
    }

    fn mono(frames: &[&[u8]]) -> Vec<u8> {
        let mut file = b"YUV4MPEG2 W2 H2 F25:1 Cmono\n".to_vec();
        for f in frames {
            file.extend_from_slice(f);
        }
        file
    }

    #[test]
    fn damaged_frame_lines_and_cut_frames_cost_one_frame_each() {
        let ok = |v: u8| [b"FRAME\n".as_slice(), &[v; 4]].concat();
        // A damaged FRAME marker, then good frames.
        let (got, _) = frames_of(mono(&[&ok(1), b"FRAMX\n\x02\x02\x02\x02", &ok(3), &ok(4)]));
        assert_eq!(got, [Ok(1), Err(()), Ok(3), Ok(4)]);
        // A frame cut short in the middle of the file: the next FRAME line is inside its bytes.
        let (got, _) = frames_of(mono(&[&ok(1), b"FRAME\n\x02\x02", &ok(3), &ok(4)]));
        assert_eq!(got, [Ok(1), Err(()), Ok(3), Ok(4)]);
        // A header that says 2x2 for 3x2 frames: every frame is corrupt, none is misread, no abort.
        let (got, _) = frames_of(mono(&[b"FRAME\n\x01\x01\x01\x01\x01\x01", b"FRAME\n\x02\x02\x02\x02\x02\x02"]));
        assert!(got.iter().all(|g| g.is_err()) && !got.is_empty(), "{got:?}");
        // Truncated at the very end.
        let (got, _) = frames_of(mono(&[&ok(1), b"FRAME\n\x02"]));
        assert_eq!(got, [Ok(1), Err(())]);
    }

    #[test]
    fn hostile_headers_are_refused_not_panics_or_hangs() {
        for h in [
            "YUV4MPEG2 W2 H2 F0:0",
            "YUV4MPEG2 W2 H2 F-1:1",
            "YUV4MPEG2 W2 H2 Fnan:1",
            "YUV4MPEG2 W2 H2 F1:100000000000000000000",
            "YUV4MPEG2 W2 H2 F1:1000",
            "YUV4MPEG2 W2 H2 F100000:1",
            "YUV4MPEG2 W2 H2 C420p10",
            "YUV4MPEG2 W2 H2 Cmono16",
            "YUV4MPEG2 W\u{e9}2 H2",
            "YUV4MPEG2 W0 H2",
            "YUV4MPEG2 W99999999999 H2",
        ] {
            let file = format!("{h}\nFRAME\n").into_bytes();
            assert!(Y4mSource::new(Box::new(Cursor::new(file))).is_err(), "{h}");
        }
        // An unknown multi-byte tag is ignored (as the format says), not split inside a character.
        let file = "YUV4MPEG2 \u{e9}x W2 H2 Cmono\nFRAME\n\x01\x01\x01\x01".as_bytes().to_vec();
        assert!(Y4mSource::new(Box::new(Cursor::new(file))).is_ok());
        // No newline at all (/dev/zero): refused after MAX_LINE bytes.
        let zeros = std::io::Cursor::new(vec![0u8; 1 << 20]);
        let e = Y4mSource::new(Box::new(zeros)).err().unwrap().to_string();
        assert!(e.contains("no header line"), "{e}");
    }
}
