//! Capture: where frames come from.
//!
//! Why this exists: the pipeline must not care whether pixels come from a USB camera, a recorded clip or a
//! test pattern. Every source implements [`FrameSource`]: it says up front how big its frames can be (so
//! the ring allocates its slots once), then writes each frame straight into a slot it is lent. Pacing
//! (real time or as fast as possible) and looping are the capture loop's business, not the source's, so a
//! clip replays exactly like a camera would deliver it.
//!
//! Sources: [`v4l2`] (cameras), [`mjpeg`] (concatenated JPEGs, as UVC webcams and `ffmpeg -f mjpeg`
//! produce), [`y4m`] (raw YUV 4:2:2 or 4:2:0 in a YUV4MPEG2 container), [`synthetic`] (a moving pattern).
//! [`supervisor`] decides when a camera is lost, restored and tried again.

// Input reaches this code (files, drivers, the wire): no panic path. Arithmetic is checked, saturating
// or provably bounded (each `allow` says why), and indexing goes through `get`.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]

pub mod mjpeg;
pub mod pushback;
pub mod supervisor;
pub mod synthetic;
pub mod v4l2;
pub mod y4m;

use crate::frame::{Frame, PixelFormat};

/// What a source promises before its first frame: enough for the ring to size its slots.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SourceInfo {
    pub width: u32,
    pub height: u32,
    /// The format frames will arrive in.
    pub format: PixelFormat,
    /// Nominal frame rate (frames per second); used for presentation times and real-time pacing.
    pub fps: f64,
    /// A camera: it delivers frames at its own pace, so the capture loop never sleeps to pace it.
    pub live: bool,
}

impl SourceInfo {
    /// Bytes one slot needs for this source.
    pub fn frame_len(&self) -> usize {
        self.format.frame_len(self.width, self.height)
    }
}

/// Why a source did not give a frame. The capture loop chooses the recovery from the variant.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// This frame is unusable (bad JPEG, wrong size); skip it, count it, carry on.
    #[error("corrupt frame {index}: {reason}")]
    Corrupt { index: u64, reason: String },
    /// The source itself failed (read error, device gone); the loop stops or reopens.
    #[error("source failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Outcome of asking for a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// `frame` now holds a new frame.
    Frame,
    /// The stream ended (end of file). A file source can be rewound.
    End,
}

/// A camera or a file that fills frame slots.
pub trait FrameSource: Send {
    /// Frame geometry and format, known before the first frame.
    fn info(&self) -> SourceInfo;
    /// Write the next frame into `frame` (whose buffer holds at least `info().frame_len()` bytes).
    /// Sets `len`, `format`, `width`, `height`, `index` and `pts_ms`; the capture loop sets `unix_ms`.
    fn next_frame(&mut self, frame: &mut Frame) -> Result<Next, CaptureError>;
    /// Start again from the first frame; `false` when the source cannot (a live camera).
    fn rewind(&mut self) -> Result<bool, CaptureError>;
}

/// Presentation time of frame `index` at `fps`, in milliseconds.
pub(crate) fn pts_ms(index: u64, fps: f64) -> u64 {
    if fps > 0.0 {
        (index as f64 * 1000.0 / fps).round() as u64
    } else {
        0
    }
}
