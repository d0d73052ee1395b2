//! Y4M (YUV4MPEG2) files: uncompressed YUV frames with a one-line text header.
//!
//! Why: raw YUV is what cameras deliver before any compression, so a Y4M clip exercises the same colour
//! conversion a V4L2 camera does, with no JPEG decoder in between. `C422` frames (planar 4:2:2, the sampling
//! of a YUYV camera) are interleaved into YUYV in the slot; `C420*` frames stay planar I420; `Cmono` is grey.
//! `ffmpeg -i in.mp4 -f yuv4mpegpipe -pix_fmt yuv422p out.y4m` (or `yuv420p`, `gray`) makes them.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};

use super::mjpeg::ReadSeek;
use super::{pts_ms, CaptureError, FrameSource, Next, SourceInfo};
use crate::frame::{Frame, PixelFormat};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chroma {
    C420,
    C422,
    Mono,
}

/// A Y4M stream read from a file or memory.
pub struct Y4mSource {
    reader: BufReader<Box<dyn ReadSeek>>,
    chroma: Chroma,
    info: SourceInfo,
    /// Byte offset of the first FRAME line, for rewinding.
    data_start: u64,
    /// One planar frame as stored in the file (only used for C422, which is interleaved into the slot).
    planar: Vec<u8>,
    line: Vec<u8>,
    index: u64,
}

fn bad(msg: String) -> CaptureError {
    CaptureError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, msg))
}

impl Y4mSource {
    pub fn new(reader: Box<dyn ReadSeek>) -> Result<Y4mSource, CaptureError> {
        let mut reader = BufReader::with_capacity(256 * 1024, reader);
        let mut header = Vec::with_capacity(128);
        reader.read_until(b'\n', &mut header)?;
        let text = std::str::from_utf8(&header).map_err(|_| bad("Y4M header is not text".into()))?;
        let mut fields = text.trim_end().split(' ');
        if fields.next() != Some("YUV4MPEG2") {
            return Err(bad("not a Y4M file (no YUV4MPEG2 signature)".into()));
        }
        let (mut w, mut h, mut fps, mut chroma) = (0u32, 0u32, 25.0f64, Chroma::C420);
        for f in fields {
            let (tag, val) = f.split_at(1.min(f.len()));
            match tag {
                "W" => w = val.parse().map_err(|_| bad(format!("bad Y4M width {val:?}")))?,
                "H" => h = val.parse().map_err(|_| bad(format!("bad Y4M height {val:?}")))?,
                "F" => {
                    let (n, d) = val.split_once(':').ok_or_else(|| bad(format!("bad Y4M rate {val:?}")))?;
                    let (n, d): (f64, f64) = (
                        n.parse().map_err(|_| bad(format!("bad Y4M rate {val:?}")))?,
                        d.parse().map_err(|_| bad(format!("bad Y4M rate {val:?}")))?,
                    );
                    if n > 0.0 && d > 0.0 {
                        fps = n / d;
                    }
                }
                "C" => {
                    chroma = if val.starts_with("420") {
                        Chroma::C420
                    } else if val == "422" {
                        Chroma::C422
                    } else if val == "mono" {
                        Chroma::Mono
                    } else {
                        return Err(bad(format!("Y4M colour space C{val} is not supported (use 420, 422 or mono)")));
                    };
                }
                _ => {}
            }
        }
        if w == 0 || h == 0 || w > 16384 || h > 16384 {
            return Err(bad(format!("Y4M frame size {w}x{h} is not usable")));
        }
        let format = match chroma {
            Chroma::C420 => PixelFormat::I420,
            Chroma::C422 => PixelFormat::Yuyv,
            Chroma::Mono => PixelFormat::Grey,
        };
        let info = SourceInfo { width: w, height: h, format, fps, live: false };
        let planar = if chroma == Chroma::C422 {
            vec![0; (w as usize * h as usize) + 2 * (w as usize).div_ceil(2) * h as usize]
        } else {
            Vec::new()
        };
        Ok(Y4mSource {
            reader,
            chroma,
            info,
            data_start: header.len() as u64,
            planar,
            line: Vec::with_capacity(128),
            index: 0,
        })
    }

    pub fn open(path: &std::path::Path) -> Result<Y4mSource, CaptureError> {
        Y4mSource::new(Box::new(std::fs::File::open(path)?))
    }
}

/// Interleaves planar 4:2:2 (Y plane, U plane, V plane at half width) into packed YUYV.
pub fn interleave_422(planar: &[u8], width: usize, height: usize, out: &mut [u8]) {
    let cw = width.div_ceil(2);
    let (y, uv) = planar.split_at(width * height);
    let (u, v) = uv.split_at(cw * height);
    for row in 0..height {
        let yr = &y[row * width..(row + 1) * width];
        let ur = &u[row * cw..(row + 1) * cw];
        let vr = &v[row * cw..(row + 1) * cw];
        let o = &mut out[row * cw * 4..(row + 1) * cw * 4];
        for c in 0..cw {
            o[4 * c] = yr[2 * c];
            o[4 * c + 1] = ur[c];
            o[4 * c + 2] = *yr.get(2 * c + 1).unwrap_or(&yr[2 * c]);
            o[4 * c + 3] = vr[c];
        }
    }
}

impl FrameSource for Y4mSource {
    fn info(&self) -> SourceInfo {
        self.info
    }

    fn next_frame(&mut self, frame: &mut Frame) -> Result<Next, CaptureError> {
        self.line.clear();
        let n = (&mut self.reader).take(1024).read_until(b'\n', &mut self.line)?;
        if n == 0 {
            return Ok(Next::End);
        }
        let index = self.index;
        self.index += 1;
        if !self.line.starts_with(b"FRAME") || self.line.last() != Some(&b'\n') {
            return Err(bad(format!("Y4M frame {index} has no FRAME header; the file is damaged")));
        }
        let (w, h) = (self.info.width as usize, self.info.height as usize);
        let len = self.info.frame_len();
        let short = match self.chroma {
            Chroma::C422 => {
                let r = self.reader.read_exact(&mut self.planar);
                if r.is_ok() {
                    interleave_422(&self.planar, w, h, &mut frame.data[..len]);
                }
                r
            }
            Chroma::C420 | Chroma::Mono => self.reader.read_exact(&mut frame.data[..len]),
        };
        match short {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(CaptureError::Corrupt { index, reason: "file ends inside the frame".into() })
            }
            Err(e) => return Err(e.into()),
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
        self.index = 0;
        Ok(true)
    }
}

#[cfg(test)]
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
}
