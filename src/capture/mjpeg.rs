//! MJPEG stream files: JPEG images laid end to end, the way UVC webcams send them and `ffmpeg -f mjpeg`
//! writes them.
//!
//! Why it is more than "split on FFD8": a JPEG can contain FFD8/FFD9 inside an EXIF thumbnail, so frames
//! are cut by walking the marker segments and the entropy-coded data properly. Many webcams also leave the
//! Huffman tables (DHT) out of every frame and rely on the standard tables of JPEG Annex K.3; strict
//! decoders reject such frames, so when a frame has no DHT before its first scan the standard tables are
//! inserted (the "DHT fix-up"). Each frame is decoded straight into the ring slot as RGB.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};

use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use super::pushback::Pushback;
use super::{pts_ms, CaptureError, FrameSource, Next, SourceInfo};
use crate::frame::{Frame, PixelFormat};
use crate::metrics::alloc::Arena;

/// The standard luminance and chrominance DC and AC Huffman tables (JPEG Annex K.3) as one DHT segment,
/// marker included. Byte-identical to what libjpeg and ffmpeg write with their default tables.
pub const STANDARD_DHT: [u8; 420] = {
    const HEX: &[u8] = b"ffc401a2\
0000010501010101010100000000000000000102030405060708090a0b\
0100030101010101010101010000000000000102030405060708090a0b\
100002010303020403050504040000017d01020300041105122131410613516107227114328191a1082342b1c11552d1f024\
33627282090a161718191a25262728292a3435363738393a434445464748494a535455565758595a636465666768696a7374\
75767778797a838485868788898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9ca\
d2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9fa\
1100020102040403040705040400010277000102031104052131061241510761711322328108144291a1b1c109233352f015\
6272d10a162434e125f11718191a262728292a35363738393a434445464748494a535455565758595a636465666768696a73\
7475767778797a82838485868788898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8\
c9cad2d3d4d5d6d7d8d9dae2e3e4e5e6e7e8e9eaf2f3f4f5f6f7f8f9fa";
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => panic!("not hex"),
        }
    }
    let mut out = [0u8; 420];
    let mut i = 0;
    // Compile-time evaluation: an out-of-range index here fails the build, not a run.
    #[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
    while i < 420 {
        out[i] = nibble(HEX[2 * i]) << 4 | nibble(HEX[2 * i + 1]);
        i += 1;
    }
    out
};

/// Largest JPEG frame accepted (bytes); anything longer is treated as damage and skipped.
pub const MAX_JPEG_LEN: usize = 16 << 20;

/// Slots of a file source hold frames up to this size (RGB) at least, so a stream whose frames change
/// size (or whose first frame is damaged or tiny) still fits; the configured `source.width` x
/// `source.height`, or a larger first frame, raise it. Pages of a slot that no frame uses are never
/// touched, so the memory actually used follows the real frame size.
pub const MIN_SLOT_PIXELS: (u32, u32) = (1920, 1080);

const NO_START: &str = "no JPEG start in 16 MiB of the stream";

/// A byte source that can be read and rewound: a file, or a clip built into the binary.
pub trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}

/// What [`Splitter::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Split {
    /// A complete JPEG is in the buffer; `dht_inserted` says whether the standard tables were added.
    Jpeg { dht_inserted: bool },
    /// The stream ended cleanly between frames.
    End,
    /// A frame (or bytes between frames) could not be used: cut short, a broken marker structure, a new
    /// SOI inside it, absurdly long, or garbage where a frame should start. Counted as one corrupt frame;
    /// the next call continues at the next real SOI, even one that was inside the damaged frame.
    Damaged { reason: &'static str },
}

/// Cuts an MJPEG byte stream into JPEGs, resynchronising after damage.
///
/// Why a struct: after damage the next frame may already have been read (a truncated frame's scan data
/// ends where the next frame's SOI begins). Those bytes are put back and parsed again before the
/// reader is touched ([`Pushback`]), so one damaged frame costs one frame, never the good ones after it.
#[derive(Debug, Default)]
pub struct Splitter {
    back: Pushback,
}

/// Why parsing of one frame stopped.
enum Stop {
    Eof,
    Damage(&'static str),
}

type Step<T> = Result<T, Stop>;

impl Splitter {
    pub fn new() -> Splitter {
        Splitter::default()
    }

    /// Forgets carried bytes (after a rewind).
    pub fn reset(&mut self) {
        self.back.clear();
    }

    fn byte<R: BufRead>(&mut self, r: &mut R) -> std::io::Result<Option<u8>> {
        self.back.byte(r)
    }

    /// Reads the next JPEG (SOI .. EOI) from `r` into `out` (cleared first), inserting the standard
    /// Huffman tables before the first scan when the frame has none.
    pub fn next<R: BufRead>(&mut self, r: &mut R, out: &mut Vec<u8>) -> std::io::Result<Split> {
        out.clear();
        // Find SOI (FF D8). Zero or FF padding between frames (some cameras pad) is not damage; anything
        // else is, and so is more than a frame's worth of padding (a source of endless zeros).
        let mut prev = 0u8;
        let (mut skipped, mut garbage) = (0usize, false);
        loop {
            let Some(b) = self.byte(r)? else {
                return Ok(if garbage {
                    Split::Damaged { reason: "garbage at the end of the stream" }
                } else {
                    Split::End
                });
            };
            if prev == 0xFF && b == 0xD8 {
                break;
            }
            if b != 0x00 && b != 0xFF {
                garbage = true;
            }
            skipped = skipped.saturating_add(1);
            if skipped > MAX_JPEG_LEN {
                return Ok(Split::Damaged { reason: NO_START });
            }
            prev = b;
        }
        if garbage {
            // The bytes before this SOI were a frame whose own start was damaged: that is one lost frame.
            // Report it now and deliver this frame next time.
            self.back.unread(&[&[0xFF, 0xD8]]);
            return Ok(Split::Damaged { reason: "garbage between frames" });
        }
        out.extend_from_slice(&[0xFF, 0xD8]);
        let mut dht_inserted_at = None;
        match self.frame(r, out, &mut dht_inserted_at)? {
            Ok(()) => Ok(Split::Jpeg { dht_inserted: dht_inserted_at.is_some() }),
            Err(stop) => {
                let reason = match stop {
                    Stop::Eof => "the stream ends inside the frame",
                    Stop::Damage(why) => why,
                };
                self.resync(out, dht_inserted_at);
                Ok(Split::Damaged { reason })
            }
        }
    }

    /// After damage: the next SOI inside what this frame consumed (after its own SOI, outside the tables
    /// we inserted) is where parsing continues.
    fn resync(&mut self, out: &[u8], dht_at: Option<usize>) {
        let (a, b) = match dht_at {
            Some(p) => (out.get(2..p).unwrap_or(&[]), out.get(p.saturating_add(STANDARD_DHT.len())..).unwrap_or(&[])),
            None => (out.get(2..).unwrap_or(&[]), &[][..]),
        };
        // An SOI is FF D8 followed by a marker's FF, or FF D8 at the very end (the marker that cut the
        // frame short: its next byte has not been read).
        let soi = |s: &[u8]| {
            (0..s.len()).find(|&k| {
                s.get(k..k.saturating_add(2)) == Some(&[0xFF, 0xD8][..])
                    && matches!(s.get(k.saturating_add(2)), Some(0xFF) | None)
            })
        };
        let rest = match (soi(a), soi(b)) {
            (Some(k), _) => [a.get(k..).unwrap_or(&[]), b],
            (None, Some(k)) => [b.get(k..).unwrap_or(&[]), &[][..]],
            (None, None) => return,
        };
        self.back.unread(&rest);
    }

    fn need<R: BufRead>(&mut self, r: &mut R) -> std::io::Result<Step<u8>> {
        Ok(self.byte(r)?.ok_or(Stop::Eof))
    }

    /// A marker after FF, skipping fill bytes (FF FF ...).
    fn marker<R: BufRead>(&mut self, r: &mut R) -> std::io::Result<Step<u8>> {
        loop {
            match self.need(r)? {
                Ok(0xFF) => continue,
                other => return Ok(other),
            }
        }
    }

    /// Everything after the SOI up to and including EOI.
    fn frame<R: BufRead>(
        &mut self,
        r: &mut R,
        out: &mut Vec<u8>,
        dht_inserted_at: &mut Option<usize>,
    ) -> std::io::Result<Step<()>> {
        macro_rules! get {
            ($e:expr) => {
                match $e? {
                    Ok(v) => v,
                    Err(stop) => return Ok(Err(stop)),
                }
            };
        }
        let mut seen_dht = false;
        // A marker already read (after entropy-coded data), to be handled next.
        let mut pending: Option<u8> = None;
        loop {
            let marker = match pending.take() {
                Some(m) => m,
                None => {
                    if get!(self.need(r)) != 0xFF {
                        return Ok(Err(Stop::Damage("bytes where a marker should be")));
                    }
                    get!(self.marker(r))
                }
            };
            match marker {
                0xD9 => {
                    out.extend_from_slice(&[0xFF, 0xD9]);
                    return Ok(Ok(()));
                }
                0xD8 => {
                    // A new frame starts inside this one: this one was cut short.
                    out.extend_from_slice(&[0xFF, 0xD8]);
                    return Ok(Err(Stop::Damage("a new frame starts inside the frame (cut short)")));
                }
                0x01 | 0xD0..=0xD7 => {
                    out.extend_from_slice(&[0xFF, marker]);
                    continue;
                }
                0x00 => return Ok(Err(Stop::Damage("a stuffed byte where a marker should be"))),
                _ => {}
            }
            let (hi, lo) = (get!(self.need(r)), get!(self.need(r)));
            let seg_len = usize::from(u16::from_be_bytes([hi, lo]));
            if seg_len < 2 {
                return Ok(Err(Stop::Damage("a marker segment shorter than its length field")));
            }
            if out.len().saturating_add(seg_len) > MAX_JPEG_LEN {
                return Ok(Err(Stop::Damage("the frame is longer than 16 MiB")));
            }
            if marker == 0xC4 {
                seen_dht = true;
            }
            if marker == 0xDA && !seen_dht {
                *dht_inserted_at = Some(out.len());
                out.extend_from_slice(&STANDARD_DHT);
                seen_dht = true;
            }
            out.extend_from_slice(&[0xFF, marker, hi, lo]);
            for _ in 2..seg_len {
                let b = get!(self.need(r));
                out.push(b);
            }
            if marker == 0xDA {
                // Entropy-coded data: copy until a marker that is neither stuffing (FF00) nor a restart.
                loop {
                    let b = get!(self.need(r));
                    if b != 0xFF {
                        out.push(b);
                        if out.len() > MAX_JPEG_LEN {
                            return Ok(Err(Stop::Damage("the frame is longer than 16 MiB")));
                        }
                        continue;
                    }
                    let m = get!(self.marker(r));
                    if m == 0x00 || (0xD0..=0xD7).contains(&m) {
                        out.extend_from_slice(&[0xFF, m]);
                        continue;
                    }
                    pending = Some(m);
                    break;
                }
            }
        }
    }
}

/// Splits one JPEG from `r` with a fresh [`Splitter`] (one buffer holding one frame: a camera's).
pub fn split_next<R: BufRead>(r: &mut R, out: &mut Vec<u8>) -> std::io::Result<Split> {
    Splitter::new().next(r, out)
}

/// Decodes one JPEG into packed RGB at the start of `out`; a frame that does not fit is an error, never
/// an overrun.
pub fn decode_rgb(jpeg: &[u8], out: &mut [u8]) -> Result<(u32, u32), String> {
    let opts =
        DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB).set_max_width(16384).set_max_height(16384);
    let mut dec = JpegDecoder::new_with_options(ZCursor::new(jpeg), opts);
    dec.decode_headers().map_err(|e| e.to_string())?;
    let (w, h) = dec.dimensions().ok_or("no dimensions")?;
    let need = w.checked_mul(h).and_then(|p| p.checked_mul(3)).ok_or("frame size overflows")?;
    let cap = out.len();
    let dst = out.get_mut(..need).ok_or_else(|| format!("{w}x{h} frame does not fit the {cap} byte slot"))?;
    dec.decode_into(dst).map_err(|e| e.to_string())?;
    let (w, h) = (u32::try_from(w).map_err(|_| "width")?, u32::try_from(h).map_err(|_| "height")?);
    Ok((w, h))
}

/// [`decode_rgb`] with the decoder's allocations served from `arena` (see [`crate::metrics::alloc`]): the
/// error message is copied out of the arena before it is left.
#[allow(clippy::result_large_err)] // the 256-byte message is the point: it must not allocate in the arena
pub fn decode_rgb_in(arena: &mut Arena, jpeg: &[u8], out: &mut [u8]) -> Result<(u32, u32), String> {
    let r: Result<(u32, u32), heapless::String<256>> = arena.scope(|| {
        decode_rgb(jpeg, out).map_err(|e| {
            let mut s = heapless::String::new();
            for c in e.chars() {
                if s.push(c).is_err() {
                    break;
                }
            }
            s
        })
    });
    r.map_err(|e| e.as_str().to_string())
}

/// The arena a JPEG decoder needs for frames of up to `frame_len` RGB bytes: zune-jpeg keeps a plane per
/// component and its MCU rows, about 1.1 x the RGB size for 4:2:0 (measured); twice that, plus 1 MiB.
pub fn jpeg_arena(frame_len: usize) -> Arena {
    Arena::new(frame_len.saturating_mul(2).saturating_add(1 << 20))
}

/// Reads the width and height from a JPEG's frame header.
pub fn jpeg_dimensions(jpeg: &[u8]) -> Result<(u32, u32), String> {
    let mut dec = JpegDecoder::new(ZCursor::new(jpeg));
    dec.decode_headers().map_err(|e| e.to_string())?;
    let (w, h) = dec.dimensions().ok_or("no dimensions")?;
    Ok((u32::try_from(w).map_err(|_| "width")?, u32::try_from(h).map_err(|_| "height")?))
}

/// An MJPEG stream read from a file or memory.
pub struct MjpegSource {
    reader: BufReader<Box<dyn ReadSeek>>,
    splitter: Splitter,
    jpeg: Vec<u8>,
    /// Damaged frames found before the first good one at open, still to be reported.
    damaged_first: u32,
    /// The first good frame, read at open, is in `jpeg`, to be delivered next.
    first_pending: bool,
    info: SourceInfo,
    index: u64,
    /// Frames that arrived without Huffman tables and were fixed up.
    pub dht_fixups: u64,
    arena: Arena,
}

impl MjpegSource {
    /// Opens a stream. `fps` is the stream's nominal rate (MJPEG files carry none); `min_size` is the
    /// smallest frame size the slots must hold (the configured size), raised by the first good frame's
    /// size if larger (see [`MIN_SLOT_PIXELS`]). Damaged frames before the first good one (up to 64) are
    /// still reported, as corrupt, by the first calls to `next_frame`; the stream is not rewound for this,
    /// so a FIFO works too.
    pub fn new(reader: Box<dyn ReadSeek>, fps: f64, min_size: (u32, u32)) -> Result<MjpegSource, CaptureError> {
        let mut reader = BufReader::with_capacity(64 * 1024, reader);
        let mut splitter = Splitter::new();
        let mut jpeg = Vec::with_capacity(1 << 20);
        let mut damaged_first = 0u32;
        let mut first = None;
        let mut dht_fixups = 0;
        while damaged_first < 64 {
            match splitter.next(&mut reader, &mut jpeg)? {
                Split::Jpeg { dht_inserted } => match jpeg_dimensions(&jpeg) {
                    Ok(d) => {
                        first = Some(d);
                        dht_fixups = u64::from(dht_inserted);
                        break;
                    }
                    Err(_) => damaged_first = damaged_first.saturating_add(1),
                },
                // 16 MiB without a frame start (endless zeros): not an MJPEG stream.
                Split::Damaged { reason } if reason == NO_START => break,
                Split::Damaged { .. } => damaged_first = damaged_first.saturating_add(1),
                Split::End => break,
            }
        }
        let Some((fw, fh)) = first else {
            return Err(CaptureError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "no decodable JPEG frame at the start of the MJPEG stream",
            )));
        };
        let width = fw.max(min_size.0).max(MIN_SLOT_PIXELS.0);
        let height = fh.max(min_size.1).max(MIN_SLOT_PIXELS.1);
        let arena = jpeg_arena(PixelFormat::Rgb24.frame_len(width, height));
        Ok(MjpegSource {
            arena,
            reader,
            splitter,
            jpeg,
            damaged_first,
            first_pending: true,
            info: SourceInfo { width, height, format: PixelFormat::Rgb24, fps, live: false },
            index: 0,
            dht_fixups,
        })
    }

    /// Opens an MJPEG file (or FIFO: see [`crate::shutdown::open_file`]).
    pub fn open(
        path: &std::path::Path,
        fps: f64,
        min_size: (u32, u32),
        stop: &crate::shutdown::Shutdown,
    ) -> Result<MjpegSource, CaptureError> {
        let file = crate::shutdown::open_file(path, stop)?;
        MjpegSource::new(Box::new(file), fps, min_size)
    }
}

impl FrameSource for MjpegSource {
    /// Width and height here are the slot's capacity; each frame carries its own size.
    fn info(&self) -> SourceInfo {
        self.info
    }

    fn next_frame(&mut self, frame: &mut Frame) -> Result<Next, CaptureError> {
        let index = self.index;
        let split = if self.damaged_first > 0 {
            self.damaged_first = self.damaged_first.saturating_sub(1);
            Split::Damaged { reason: "damaged frame before the first good one" }
        } else if self.first_pending {
            self.first_pending = false;
            Split::Jpeg { dht_inserted: false }
        } else {
            self.splitter.next(&mut self.reader, &mut self.jpeg)?
        };
        match split {
            Split::Jpeg { dht_inserted } => self.dht_fixups = self.dht_fixups.saturating_add(u64::from(dht_inserted)),
            Split::End => return Ok(Next::End),
            Split::Damaged { reason } => {
                self.index = self.index.saturating_add(1);
                return Err(CaptureError::Corrupt { index, reason: reason.into() });
            }
        }
        self.index = self.index.saturating_add(1);
        let cap = self.info.frame_len().min(frame.data.len());
        let slot = frame.data.get_mut(..cap).unwrap_or(&mut []);
        let (w, h) = decode_rgb_in(&mut self.arena, &self.jpeg, slot)
            .map_err(|reason| CaptureError::Corrupt { index, reason })?;
        frame.len = PixelFormat::Rgb24.frame_len(w, h);
        frame.format = PixelFormat::Rgb24;
        frame.width = w;
        frame.height = h;
        frame.index = index;
        frame.pts_ms = pts_ms(index, self.info.fps);
        Ok(Next::Frame)
    }

    fn rewind(&mut self) -> Result<bool, CaptureError> {
        self.reader.seek(SeekFrom::Start(0))?;
        self.splitter.reset();
        (self.damaged_first, self.first_pending) = (0, false);
        self.index = 0;
        Ok(true)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)] // tests may panic
mod tests {
    use super::*;
    use std::io::Cursor;

    fn tiny_jpeg_with_exif_thumbnail() -> Vec<u8> {
        // SOI, APP1 containing a fake embedded SOI/EOI, SOS with stuffed FF00 and a restart marker, EOI.
        let mut v = vec![0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x08, 0xFF, 0xD8, 0xFF, 0xD9, 0x00, 0x00];
        v.extend_from_slice(&[0xFF, 0xC4, 0x00, 0x02]);
        v.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x02, 0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, 0xFF, 0xD9]);
        v
    }

    #[test]
    fn splits_on_real_markers_not_on_embedded_eoi() {
        let one = tiny_jpeg_with_exif_thumbnail();
        let mut stream = one.clone();
        stream.extend_from_slice(&one);
        let mut r = Cursor::new(stream);
        let mut out = Vec::new();
        assert_eq!(split_next(&mut r, &mut out).unwrap(), Split::Jpeg { dht_inserted: false });
        assert_eq!(out, one);
        assert_eq!(split_next(&mut r, &mut out).unwrap(), Split::Jpeg { dht_inserted: false });
        assert_eq!(out, one);
        assert_eq!(split_next(&mut r, &mut out).unwrap(), Split::End);
    }

    #[test]
    fn inserts_standard_tables_before_the_scan_when_missing() {
        let jpeg = [0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02, 0x11, 0xFF, 0xD9];
        let mut out = Vec::new();
        let got = split_next(&mut Cursor::new(&jpeg[..]), &mut out).unwrap();
        assert_eq!(got, Split::Jpeg { dht_inserted: true });
        assert_eq!(&out[..2], &[0xFF, 0xD8]);
        assert_eq!(&out[2..422], &STANDARD_DHT[..]);
        assert_eq!(&out[422..], &jpeg[2..]);
    }

    #[test]
    fn truncated_frame_is_reported() {
        let jpeg = [0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02, 0x11, 0x22];
        let mut out = Vec::new();
        assert!(matches!(split_next(&mut Cursor::new(&jpeg[..]), &mut out).unwrap(), Split::Damaged { .. }));
    }

    /// The first `n` frames of the shipped clip, each as its own JPEG.
    fn clip_frames(n: usize) -> Vec<Vec<u8>> {
        let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/bikes.mjpeg")).unwrap();
        let mut r = Cursor::new(&bytes[..]);
        let mut s = Splitter::new();
        (0..n)
            .map(|_| {
                let mut out = Vec::new();
                assert!(matches!(s.next(&mut r, &mut out).unwrap(), Split::Jpeg { .. }));
                out
            })
            .collect()
    }

    fn split_all(stream: &[u8]) -> Vec<Result<Vec<u8>, &'static str>> {
        let mut r = Cursor::new(stream);
        let mut s = Splitter::new();
        let mut got = Vec::new();
        loop {
            let mut out = Vec::new();
            match s.next(&mut r, &mut out).unwrap() {
                Split::Jpeg { .. } => got.push(Ok(out)),
                Split::Damaged { reason } => got.push(Err(reason)),
                Split::End => return got,
            }
        }
    }

    #[test]
    fn a_truncated_frame_costs_itself_only() {
        let frames = clip_frames(15);
        let mut stream = frames[0][..frames[0].len() / 2].to_vec();
        for f in &frames[1..] {
            stream.extend_from_slice(f);
        }
        let got = split_all(&stream);
        assert_eq!(got.len(), 15, "one damaged + 14 good");
        assert!(got[0].is_err());
        for (g, want) in got[1..].iter().zip(&frames[1..]) {
            assert_eq!(g.as_ref().unwrap(), want);
        }
    }

    #[test]
    fn a_huge_garbage_segment_does_not_swallow_the_frames_after_it() {
        let frames = clip_frames(12);
        // Frame 0 gets an APP5 segment claiming 65535 bytes right after its SOI, with only 3 bytes.
        let mut stream = vec![0xFF, 0xD8, 0xFF, 0xE5, 0xFF, 0xFF, 1, 2, 3];
        stream.extend_from_slice(&frames[0][2..]);
        for f in &frames[1..] {
            stream.extend_from_slice(f);
        }
        let got = split_all(&stream);
        let good: Vec<_> = got.iter().filter_map(|g| g.as_ref().ok()).collect();
        assert!(got[0].is_err(), "{:?}", got.iter().map(|g| g.as_ref().err()).collect::<Vec<_>>());
        // Frame 0 is lost (the garbage segment is its own); every frame the segment swallowed comes back.
        assert_eq!(good.len(), 11, "{:?}", got.iter().map(|g| g.as_ref().err()).collect::<Vec<_>>());
        assert_eq!(good[..], frames[1..].iter().collect::<Vec<_>>()[..]);
    }

    #[test]
    fn garbage_between_frames_is_one_damaged_frame_and_zero_padding_is_none() {
        let frames = clip_frames(2);
        let mut stream = frames[0].clone();
        stream.extend_from_slice(&[0u8; 100]);
        stream.extend_from_slice(&frames[1]);
        stream.extend_from_slice(b"not a jpeg at all");
        stream.extend_from_slice(&frames[0]);
        let got = split_all(&stream);
        let kinds: Vec<bool> = got.iter().map(|g| g.is_ok()).collect();
        assert_eq!(kinds, [true, true, false, true]);
        // Endless zeros (/dev/zero) come back as damage every 16 MiB, never as a hang.
        let mut zeros = std::io::BufReader::new(std::io::repeat(0));
        let mut out = Vec::new();
        let mut s = Splitter::new();
        let r = s.next(&mut zeros, &mut out).unwrap();
        assert!(matches!(r, Split::End | Split::Damaged { .. }));
    }

    #[test]
    fn a_size_change_and_a_tiny_first_frame_fit_the_slots() {
        // A 1x1 JPEG first, then the 640x272 clip: slots are sized for the larger of both and 1080p.
        let tiny = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/1x1.jpg")).unwrap();
        let frames = clip_frames(3);
        let mut stream = tiny.clone();
        for f in &frames {
            stream.extend_from_slice(f);
        }
        let mut src = MjpegSource::new(Box::new(Cursor::new(stream)), 25.0, (640, 480)).unwrap();
        let mut f = Frame::with_capacity(src.info().frame_len());
        let mut sizes = Vec::new();
        while let Ok(Next::Frame) = src.next_frame(&mut f) {
            sizes.push((f.width, f.height));
        }
        assert_eq!(sizes, [(1, 1), (640, 272), (640, 272), (640, 272)]);
    }

    #[test]
    fn clip_reads_to_the_end_and_rewinds() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/bikes.mjpeg");
        let stop = crate::shutdown::Shutdown::new().unwrap();
        let mut src = MjpegSource::open(&path, 25.0, (640, 480), &stop).unwrap();
        assert_eq!((src.info().width, src.info().height), (1920, 1080), "slots hold 1080p at least");
        let mut f = Frame::with_capacity(src.info().frame_len());
        let mut n = 0;
        while src.next_frame(&mut f).unwrap() == Next::Frame {
            assert_eq!((f.index, f.pts_ms, f.width, f.height), (n, n * 40, 640, 272));
            n += 1;
        }
        assert_eq!(n, 250);
        assert!(src.rewind().unwrap());
        assert_eq!(src.next_frame(&mut f).unwrap(), Next::Frame);
        assert_eq!(f.index, 0);
        assert_eq!(src.dht_fixups, 0, "ffmpeg writes its tables into every frame");
    }

    #[test]
    fn standard_dht_has_the_annex_k_counts() {
        // Segment length 0x01A2 = 418, four tables: DC0 (12 symbols), DC1 (12), AC0 (162), AC1 (162).
        assert_eq!(&STANDARD_DHT[..4], &[0xFF, 0xC4, 0x01, 0xA2]);
        let mut i = 4;
        let mut classes = Vec::new();
        while i < STANDARD_DHT.len() {
            let tc_th = STANDARD_DHT[i];
            let n: usize = STANDARD_DHT[i + 1..i + 17].iter().map(|&c| c as usize).sum();
            classes.push((tc_th, n));
            i += 17 + n;
        }
        assert_eq!(i, STANDARD_DHT.len());
        assert_eq!(classes, vec![(0x00, 12), (0x01, 12), (0x10, 162), (0x11, 162)]);
    }
}
