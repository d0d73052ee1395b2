//! Entry points for the fuzz targets (`fuzz/`, cargo-fuzz) and for the test that replays their corpus
//! (`tests/fuzz_corpus.rs`), so CI guards every input the fuzzers ever found interesting.
//!
//! Why in the library: the targets must drive exactly the parsers the product runs, and the replay test
//! must drive exactly what the targets drive. Each function takes arbitrary bytes and must return
//! without panicking, hanging or allocating without bound; what it returns does not matter.

use std::io::Cursor;
use std::path::Path;

use crate::capture::mjpeg::{jpeg_dimensions, MjpegSource, Split, Splitter};
use crate::capture::y4m::Y4mSource;
use crate::capture::{CaptureError, FrameSource, Next};
use crate::frame::Frame;

/// Largest frame the targets decode (bytes): bigger ones are real errors to the product too, but
/// allocating them per input would make the fuzzer measure the allocator.
const MAX_FRAME: usize = 4 << 20;

/// The config parser and its validation; a config that parses then drives its rules and the tracker
/// through a few frames of moving boxes (labels `person`, `car`, `truck`; class 9 is no label).
pub fn config(data: &[u8]) {
    use crate::detect::Detection;
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(cfg) = crate::config::Config::parse(text, "fuzz.toml", Path::new("/etc/lookout")) else { return };
    let labels = ["person".to_string(), "car".to_string(), "truck".to_string()];
    let Ok(mut rules) = crate::rules::RuleSet::new(&cfg.rule_configs(), &labels, &labels[..1], 0.5) else { return };
    let mut tracker = crate::track::Tracker::new(cfg.track, 8);
    let mut out = rules.decisions(8);
    for i in 0..40u16 {
        let x = f32::from(i) * 9.0;
        let dets = [
            Detection { class_id: i % 3, score: 0.9, bbox: [x, 100.0, x + 60.0, 200.0] },
            Detection { class_id: 9, score: 0.7, bbox: [600.0 - x, 50.0, 640.0 - x, 470.0] },
            Detection { class_id: 0, score: 0.6, bbox: [x + 10.0, 110.0, x + 50.0, 190.0] },
        ];
        let n = usize::from(i % 4).min(dets.len());
        let dets = dets.get(..n).unwrap_or(&[]);
        let frame = crate::frame::FrameMeta {
            index: u64::from(i),
            pts_ms: u64::from(i) * 1000,
            unix_ms: 1_700_000_000_000,
            width: 640,
            height: 480,
            captured: None,
        };
        tracker.update(dets, frame.pts_ms);
        rules.update(&tracker, dets, frame, i.wrapping_mul(37) % 1440, i % 7 != 3, &mut out);
    }
    rules.finish(crate::frame::FrameMeta::default(), &mut out);
}

/// The MJPEG splitter, the DHT fix-up and the JPEG decoder, then the MJPEG source over the same bytes.
pub fn mjpeg(data: &[u8]) {
    let mut r = Cursor::new(data);
    let mut s = Splitter::new();
    let mut jpeg = Vec::new();
    let mut rgb = Vec::new();
    for _ in 0..64 {
        match s.next(&mut r, &mut jpeg) {
            Ok(Split::Jpeg { .. }) => {
                if let Ok((w, h)) = jpeg_dimensions(&jpeg) {
                    let need = (w as usize).saturating_mul(h as usize).saturating_mul(3);
                    if need <= MAX_FRAME {
                        rgb.resize(need, 0);
                        let _ = crate::capture::mjpeg::decode_rgb(&jpeg, &mut rgb);
                    }
                }
            }
            Ok(Split::Damaged { .. }) => {}
            Ok(Split::End) | Err(_) => break,
        }
    }
    if let Ok(mut src) = MjpegSource::new(Box::new(Cursor::new(data.to_vec())), 25.0, (16, 16)) {
        drain(&mut src);
    }
}

/// The Y4M header parser and frame reader.
pub fn y4m(data: &[u8]) {
    if let Ok(mut src) = Y4mSource::new(Box::new(Cursor::new(data.to_vec()))) {
        drain(&mut src);
    }
}

/// The model manifest parser and its validation, and the self-test PPM reader, on the same bytes.
pub fn manifest(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(m) = toml::from_str::<crate::model::Manifest>(text) {
            let _ = crate::model::validate(&m);
        }
    }
    let _ = crate::model::read_ppm(data);
}

fn drain(src: &mut dyn FrameSource) {
    let len = src.info().frame_len();
    if len > MAX_FRAME {
        return;
    }
    let mut f = Frame::with_capacity(len);
    for _ in 0..64 {
        match src.next_frame(&mut f) {
            Ok(Next::Frame) | Err(CaptureError::Corrupt { .. }) => {}
            Ok(Next::End) | Err(CaptureError::Io(_)) => break,
        }
    }
}
