//! Frames: the pixels that travel from a source through the ring to preprocessing.
//!
//! Why this exists: every source (JPEG stream, Y4M file, V4L2 camera, synthetic pattern) must land its
//! pixels in memory the ring owns, allocated once at start-up. A [`Frame`] is that memory plus the few facts
//! preprocessing needs to read it (format, size, timestamp). Formats are kept as the source delivers them
//! when preprocessing can read them directly (YUYV, I420), so a camera frame is copied once and converted
//! once, in the pass that also resizes and normalizes.

/// Pixel layouts a frame slot can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// Packed 8-bit R, G, B (what the JPEG decoder writes).
    Rgb24,
    /// Packed 4:2:2, Y0 U Y1 V (what UVC cameras and Y4M `C422` files give after interleaving).
    Yuyv,
    /// Planar 4:2:0: full Y plane, then U and V planes at half width and half height.
    I420,
    /// Semi-planar 4:2:0: full Y plane, then one plane of interleaved U, V pairs at half resolution.
    Nv12,
    /// One 8-bit luma plane.
    Grey,
}

impl PixelFormat {
    /// Bytes needed for a `width` x `height` frame in this format.
    pub fn frame_len(self, width: u32, height: u32) -> usize {
        let (w, h) = (width as usize, height as usize);
        match self {
            PixelFormat::Rgb24 => w * h * 3,
            PixelFormat::Yuyv => w.div_ceil(2) * 2 * h * 2,
            PixelFormat::I420 | PixelFormat::Nv12 => w * h + 2 * (w.div_ceil(2) * h.div_ceil(2)),
            PixelFormat::Grey => w * h,
        }
    }
}

/// One frame slot: a buffer sized once for the largest frame the source can give, and what is in it now.
#[derive(Debug)]
pub struct Frame {
    /// Backing memory, allocated at start-up; `len` bytes of it are valid.
    pub data: Vec<u8>,
    pub len: usize,
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    /// Sequence number from the source (0 for the first frame it delivered).
    pub index: u64,
    /// Presentation time in milliseconds from the start of the stream (clip time or camera time).
    pub pts_ms: u64,
    /// Wall-clock time of capture, Unix milliseconds.
    pub unix_ms: u64,
    /// When the capture side began to read this frame (the start of end-to-end latency).
    pub captured: Option<std::time::Instant>,
}

impl Frame {
    /// A slot able to hold `capacity` bytes. The only allocation a slot ever makes.
    pub fn with_capacity(capacity: usize) -> Frame {
        Frame {
            data: vec![0; capacity],
            len: 0,
            format: PixelFormat::Rgb24,
            width: 0,
            height: 0,
            index: 0,
            pts_ms: 0,
            unix_ms: 0,
            captured: None,
        }
    }

    /// The valid pixel bytes.
    pub fn pixels(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

/// Which frame a result belongs to: what the stages after the slot was given back need of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameMeta {
    pub index: u64,
    pub pts_ms: u64,
    pub unix_ms: u64,
    pub width: u32,
    pub height: u32,
    pub captured: Option<std::time::Instant>,
}

impl From<&Frame> for FrameMeta {
    fn from(f: &Frame) -> Self {
        FrameMeta {
            index: f.index,
            pts_ms: f.pts_ms,
            unix_ms: f.unix_ms,
            width: f.width,
            height: f.height,
            captured: f.captured,
        }
    }
}

/// Wall clock in Unix milliseconds (0 if the clock is before 1970, which only a broken RTC gives).
pub fn unix_ms_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
