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

use super::{pts_ms, CaptureError, FrameSource, Next, SourceInfo};
use crate::frame::{Frame, PixelFormat};

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
    while i < 420 {
        out[i] = nibble(HEX[2 * i]) << 4 | nibble(HEX[2 * i + 1]);
        i += 1;
    }
    out
};

/// Largest JPEG frame accepted (bytes); anything longer is treated as a corrupt stream and skipped.
const MAX_JPEG_LEN: usize = 16 << 20;

/// A byte source that can be read and rewound: a file, or a clip built into the binary.
pub trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}

/// What [`split_next`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Split {
    /// A complete JPEG is in the buffer; `dht_inserted` says whether the standard tables were added.
    Jpeg { dht_inserted: bool },
    /// The stream ended cleanly between frames.
    End,
    /// The stream ended inside a frame, or the frame was absurdly long.
    Truncated,
}

/// Reads the next JPEG (SOI .. EOI) from `r` into `out` (cleared first), inserting the standard Huffman
/// tables before the first scan when the frame has none. `out` keeps its capacity, so a warmed-up buffer
/// does not allocate.
pub fn split_next<R: BufRead>(r: &mut R, out: &mut Vec<u8>) -> std::io::Result<Split> {
    out.clear();
    // Find SOI: FF D8.
    let mut prev = 0u8;
    loop {
        let Some(b) = next_byte(r)? else {
            return Ok(Split::End);
        };
        if prev == 0xFF && b == 0xD8 {
            break;
        }
        prev = b;
    }
    out.extend_from_slice(&[0xFF, 0xD8]);
    let mut seen_dht = false;
    let mut dht_inserted = false;
    // `pending` is a marker already read (after entropy-coded data), to be handled next.
    let mut pending: Option<u8> = None;
    loop {
        let marker = match pending.take() {
            Some(m) => m,
            None => {
                // Expect FF, skipping fill bytes.
                let Some(b) = next_byte(r)? else {
                    return Ok(Split::Truncated);
                };
                if b != 0xFF {
                    return Ok(Split::Truncated);
                }
                let mut m = 0xFF;
                while m == 0xFF {
                    match next_byte(r)? {
                        Some(x) => m = x,
                        None => return Ok(Split::Truncated),
                    }
                }
                m
            }
        };
        if marker == 0xD9 {
            out.extend_from_slice(&[0xFF, 0xD9]);
            return Ok(Split::Jpeg { dht_inserted });
        }
        if marker == 0x01 || (0xD0..=0xD7).contains(&marker) {
            out.extend_from_slice(&[0xFF, marker]);
            continue;
        }
        let (Some(hi), Some(lo)) = (next_byte(r)?, next_byte(r)?) else {
            return Ok(Split::Truncated);
        };
        let seg_len = u16::from_be_bytes([hi, lo]) as usize;
        if seg_len < 2 || out.len() + seg_len > MAX_JPEG_LEN {
            return Ok(Split::Truncated);
        }
        if marker == 0xC4 {
            seen_dht = true;
        }
        if marker == 0xDA && !seen_dht {
            out.extend_from_slice(&STANDARD_DHT);
            seen_dht = true;
            dht_inserted = true;
        }
        out.extend_from_slice(&[0xFF, marker, hi, lo]);
        let start = out.len();
        out.resize(start + seg_len - 2, 0);
        if read_exact_or_eof(r, &mut out[start..])? {
            return Ok(Split::Truncated);
        }
        if marker == 0xDA {
            // Entropy-coded data: copy until a marker that is neither stuffing (FF00) nor a restart.
            loop {
                let Some(b) = next_byte(r)? else {
                    return Ok(Split::Truncated);
                };
                if b != 0xFF {
                    out.push(b);
                    if out.len() > MAX_JPEG_LEN {
                        return Ok(Split::Truncated);
                    }
                    continue;
                }
                let mut m = 0xFF;
                while m == 0xFF {
                    match next_byte(r)? {
                        Some(x) => m = x,
                        None => return Ok(Split::Truncated),
                    }
                }
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

fn next_byte<R: BufRead>(r: &mut R) -> std::io::Result<Option<u8>> {
    let buf = r.fill_buf()?;
    if buf.is_empty() {
        return Ok(None);
    }
    let b = buf[0];
    r.consume(1);
    Ok(Some(b))
}

/// Fills `dst`; returns true if the stream ended first.
fn read_exact_or_eof<R: Read>(r: &mut R, dst: &mut [u8]) -> std::io::Result<bool> {
    match r.read_exact(dst) {
        Ok(()) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(true),
        Err(e) => Err(e),
    }
}

/// Decodes one JPEG into packed RGB in `out`, which must be exactly `width * height * 3` bytes of the
/// expected size; a frame of another size is reported as corrupt rather than overrunning the slot.
pub fn decode_rgb(jpeg: &[u8], out: &mut [u8]) -> Result<(u32, u32), String> {
    let opts = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut dec = JpegDecoder::new_with_options(ZCursor::new(jpeg), opts);
    dec.decode_headers().map_err(|e| e.to_string())?;
    let (w, h) = dec.dimensions().ok_or("no dimensions")?;
    let need = w * h * 3;
    if need > out.len() {
        return Err(format!("{w}x{h} frame does not fit the {} byte slot", out.len()));
    }
    dec.decode_into(&mut out[..need]).map_err(|e| e.to_string())?;
    Ok((w as u32, h as u32))
}

/// Reads the width and height from a JPEG's frame header.
pub fn jpeg_dimensions(jpeg: &[u8]) -> Result<(u32, u32), String> {
    let mut dec = JpegDecoder::new(ZCursor::new(jpeg));
    dec.decode_headers().map_err(|e| e.to_string())?;
    let (w, h) = dec.dimensions().ok_or("no dimensions")?;
    Ok((w as u32, h as u32))
}

/// An MJPEG stream read from a file or memory.
pub struct MjpegSource {
    reader: BufReader<Box<dyn ReadSeek>>,
    jpeg: Vec<u8>,
    /// The first frame was read at open to learn the size; it is delivered by the first `next_frame`.
    first_pending: bool,
    info: SourceInfo,
    index: u64,
    /// Frames that arrived without Huffman tables and were fixed up.
    pub dht_fixups: u64,
}

impl MjpegSource {
    /// Opens a stream and reads its first frame to learn the frame size. `fps` is the stream's nominal
    /// rate (MJPEG files carry none).
    pub fn new(reader: Box<dyn ReadSeek>, fps: f64) -> Result<MjpegSource, CaptureError> {
        let mut reader = BufReader::with_capacity(64 * 1024, reader);
        let mut jpeg = Vec::with_capacity(1 << 20);
        let fixed = match split_next(&mut reader, &mut jpeg)? {
            Split::Jpeg { dht_inserted } => dht_inserted,
            Split::End | Split::Truncated => {
                return Err(CaptureError::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "no JPEG frame found in the MJPEG stream",
                )))
            }
        };
        let (width, height) = jpeg_dimensions(&jpeg).map_err(|reason| CaptureError::Corrupt { index: 0, reason })?;
        Ok(MjpegSource {
            reader,
            jpeg,
            first_pending: true,
            info: SourceInfo { width, height, format: PixelFormat::Rgb24, fps, live: false },
            index: 0,
            dht_fixups: u64::from(fixed),
        })
    }

    /// Opens an MJPEG file.
    pub fn open(path: &std::path::Path, fps: f64) -> Result<MjpegSource, CaptureError> {
        let file = std::fs::File::open(path)?;
        MjpegSource::new(Box::new(file), fps)
    }
}

impl FrameSource for MjpegSource {
    fn info(&self) -> SourceInfo {
        self.info
    }

    fn next_frame(&mut self, frame: &mut Frame) -> Result<Next, CaptureError> {
        if self.first_pending {
            self.first_pending = false;
        } else {
            match split_next(&mut self.reader, &mut self.jpeg)? {
                Split::Jpeg { dht_inserted } => self.dht_fixups += u64::from(dht_inserted),
                Split::End => return Ok(Next::End),
                Split::Truncated => {
                    self.index += 1;
                    return Err(CaptureError::Corrupt { index: self.index - 1, reason: "truncated JPEG".into() });
                }
            }
        }
        let index = self.index;
        self.index += 1;
        let need = self.info.frame_len();
        let (w, h) = decode_rgb(&self.jpeg, &mut frame.data[..need])
            .map_err(|reason| CaptureError::Corrupt { index, reason })?;
        if (w, h) != (self.info.width, self.info.height) {
            return Err(CaptureError::Corrupt {
                index,
                reason: format!("frame is {w}x{h}, stream is {}x{}", self.info.width, self.info.height),
            });
        }
        frame.len = need;
        frame.format = PixelFormat::Rgb24;
        frame.width = w;
        frame.height = h;
        frame.index = index;
        frame.pts_ms = pts_ms(index, self.info.fps);
        Ok(Next::Frame)
    }

    fn rewind(&mut self) -> Result<bool, CaptureError> {
        self.reader.seek(SeekFrom::Start(0))?;
        self.first_pending = false;
        self.index = 0;
        Ok(true)
    }
}

#[cfg(test)]
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
        assert_eq!(split_next(&mut Cursor::new(&jpeg[..]), &mut out).unwrap(), Split::Truncated);
    }

    #[test]
    fn clip_reads_to_the_end_and_rewinds() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/bikes.mjpeg");
        let mut src = MjpegSource::open(&path, 25.0).unwrap();
        assert_eq!((src.info().width, src.info().height), (640, 272));
        let mut f = Frame::with_capacity(src.info().frame_len());
        let mut n = 0;
        while src.next_frame(&mut f).unwrap() == Next::Frame {
            assert_eq!((f.index, f.pts_ms), (n, n * 40));
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
