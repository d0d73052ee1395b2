//! A synthetic test pattern: a bright square sliding over a gradient, with no file or device behind it.
//!
//! Why: it lets the whole pipeline (ring, preprocessing, inference, output) run and be measured anywhere,
//! including on a board with no camera attached, and it never hits the disk, so it shows what the rest of
//! the pipeline costs on its own.

use super::{pts_ms, CaptureError, FrameSource, Next, SourceInfo};
use crate::frame::{Frame, PixelFormat};

pub struct SyntheticSource {
    info: SourceInfo,
    index: u64,
}

impl SyntheticSource {
    /// An endless pattern; `source.frames` (applied by the capture loop) ends it.
    pub fn new(width: u32, height: u32, fps: f64) -> SyntheticSource {
        SyntheticSource { info: SourceInfo { width, height, format: PixelFormat::Rgb24, fps, live: false }, index: 0 }
    }
}

impl FrameSource for SyntheticSource {
    fn info(&self) -> SourceInfo {
        self.info
    }

    fn next_frame(&mut self, frame: &mut Frame) -> Result<Next, CaptureError> {
        let (w, h) = (self.info.width as usize, self.info.height as usize);
        let side = (w.min(h) / 4).max(1);
        // In u64: `index as usize * 4` overflows a 32-bit usize after 2^30 frames (armv7).
        let x0 = usize::try_from(self.index.wrapping_mul(4).checked_rem(w as u64).unwrap_or(0)).unwrap_or(0);
        let y0 = h.saturating_sub(side) / 2;
        let len = self.info.frame_len();
        let data = frame.data.get_mut(..len).unwrap_or(&mut []);
        for (i, px) in data.chunks_exact_mut(3).enumerate() {
            let (x, y) = (i.checked_rem(w).unwrap_or(0), i.checked_div(w).unwrap_or(0));
            let inside = x >= x0 && x < x0.saturating_add(side) && y >= y0 && y < y0.saturating_add(side);
            if inside {
                px.copy_from_slice(&[240, 240, 240]);
            } else {
                // x < w and y < h, so each ratio is below 255.
                let ramp = |v: usize, n: usize| v.saturating_mul(255).checked_div(n).unwrap_or(0) as u8;
                px.copy_from_slice(&[ramp(x, w), ramp(y, h), 64]);
            }
        }
        frame.len = len;
        frame.format = PixelFormat::Rgb24;
        frame.width = self.info.width;
        frame.height = self.info.height;
        frame.index = self.index;
        frame.pts_ms = pts_ms(self.index, self.info.fps);
        self.index = self.index.saturating_add(1);
        Ok(Next::Frame)
    }

    fn rewind(&mut self) -> Result<bool, CaptureError> {
        self.index = 0;
        Ok(true)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)] // tests may panic
mod tests {
    use super::*;

    #[test]
    fn frame_numbers_past_2_to_the_30_do_not_overflow_on_32_bit() {
        // `index as usize * 4` overflowed a 32-bit usize (armv7) after 2^30 frames.
        let mut src = SyntheticSource::new(64, 48, 25.0);
        src.index = (1 << 31) + 3;
        let mut f = Frame::with_capacity(src.info().frame_len());
        assert_eq!(src.next_frame(&mut f).ok(), Some(Next::Frame));
        assert_eq!(f.index, (1 << 31) + 3);
        src.index = u64::MAX;
        assert_eq!(src.next_frame(&mut f).ok(), Some(Next::Frame));
    }
}
