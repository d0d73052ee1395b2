//! Models: manifests, pinning, and the start-up self-test.
//!
//! Why: a model file is code. A manifest (`models/<name>.toml`) says exactly how to feed the model
//! (input size, colour order, normalization, resize), how to decode it, what its labels are, and which
//! bytes it must be (sha256). Loading alone proves little: a badly quantized file loads and runs and gives
//! wrong numbers (see `ultraface-rfb320.int8-softmax-qdq.bad.toml`). So every manifest carries a self-test:
//! a fixture image at the model's input size and the outputs an independent runtime (onnxruntime, made by
//! `scripts/make_fixtures.py`) produced for it. At start-up the fixture goes through our own preprocessing
//! and tract; if too many output values differ from the reference, the model is refused.

// Input reaches this code (files, drivers, the wire): no panic path. Arithmetic is checked, saturating
// or provably bounded (each `allow` says why), and indexing goes through `get`.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::detect::{Decoder, DecoderKind};
use crate::frame::{Frame, PixelFormat};
use crate::infer::{Engine, Kernels};
use crate::preprocess::{ColorOrder, InputSpec, Preprocessor, Resize};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Short name, e.g. `fastestdet-int8`.
    pub name: String,
    /// ONNX file, relative to the manifest.
    pub file: String,
    /// Hex sha256 of `file`; a file with any other hash is refused.
    pub sha256: String,
    /// License file shipped next to the model.
    pub license: String,
    #[serde(default)]
    pub description: String,
    /// Class labels, indexed by class id.
    pub labels: Vec<String>,
    /// Labels that alert when the config does not say (`rules.classes` unset). Default: all labels.
    #[serde(default)]
    pub alert_classes: Vec<String>,
    pub input: InputManifest,
    pub decoder: DecoderManifest,
    pub selftest: SelfTestManifest,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputManifest {
    /// Input tensor name in the ONNX graph (documentation; the first input is used).
    pub name: String,
    /// NCHW, batch 1, 3 channels.
    pub shape: [usize; 4],
    /// `rgb` or `bgr`.
    pub color: ColorOrder,
    /// value = (pixel * scale - mean[c]) / std[c], channels in R, G, B order.
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// `stretch` or `letterbox`.
    pub resize: Resize,
    /// Letterbox padding as a raw pixel value 0..255. Default 0.
    #[serde(default)]
    pub pad: f32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecoderManifest {
    pub kind: DecoderKind,
    /// Output tensor names in graph order (documentation and a count check).
    pub outputs: Vec<String>,
    /// Default score threshold (0..1) for a candidate to be kept.
    pub score_threshold: f32,
    /// Default NMS IoU threshold.
    pub nms_iou: f32,
    /// FastestDet only: channels 5.. are raw class logits (the lean graph, `scripts/lean_graph.py`), and
    /// the decoder takes their softmax where a cell can pass the threshold. Default false: probabilities.
    #[serde(default)]
    pub class_logits: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfTestManifest {
    /// Binary PPM (P6) at exactly the model's input size.
    pub input: String,
    /// All outputs of the reference run, concatenated in graph order, little-endian f32.
    pub expected: String,
    /// An element matches when |ours - reference| <= atol + rtol * |reference|.
    pub atol: f32,
    pub rtol: f32,
    /// Largest fraction of elements of any one output allowed not to match.
    pub max_mismatch: f64,
    /// How the reference was made.
    #[serde(default)]
    pub reference: String,
}

/// Why a model was refused. `lookout check` prints it and exits 2.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {message}")]
    Manifest { path: String, message: String },
    #[error("{path}: sha256 mismatch: the manifest pins {expected}, the file is {actual}; refusing a modified model")]
    Sha256 { path: String, expected: String, actual: String },
    #[error("{path}: {source:#}")]
    Load { path: String, source: anyhow::Error },
    #[error("model {name} failed its self-test: output {output} differs from the reference in {mismatched} of {total} values ({percent:.2}% > {allowed:.2}% allowed; largest difference {max_diff:.4})")]
    SelfTest {
        name: String,
        output: String,
        mismatched: usize,
        total: usize,
        percent: f64,
        allowed: f64,
        max_diff: f32,
    },
}

/// Where a manifest and the files it names live.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// The default model compiled into the binary.
    Builtin,
    /// A manifest on disk; its files are relative to its directory.
    Manifest(PathBuf),
}

/// The built-in default model's manifest.
pub const BUILTIN_MANIFEST: &str = "fastestdet-lean-fp32.toml";

/// Files of the built-in default model, compiled into the binary so that `lookout run` works from any
/// directory and a flashed board needs nothing else. It is FastestDet fp32 with the lean graph
/// (`scripts/lean_graph.py`): measured with tract 0.23.9 on x86-64 it runs a frame in 10-11 ms where the
/// int8 QDQ file takes 29-31 ms (tract computes QDQ convolutions in f32 between 114 quantize/dequantize
/// pairs) and the original fp32 graph 14 ms; tract does the same on ARM, so the default is one for every
/// architecture (see BENCHMARKS.md).
const BUILTIN: &[(&str, &[u8])] = &[
    ("fastestdet-lean-fp32.toml", include_bytes!("../models/fastestdet-lean-fp32.toml")),
    ("fastestdet-lean.onnx", include_bytes!("../models/fastestdet-lean.onnx")),
    ("selftest/bikes-352x352.ppm", include_bytes!("../models/selftest/bikes-352x352.ppm")),
    (
        "selftest/fastestdet-lean-fp32.expected.f32",
        include_bytes!("../models/selftest/fastestdet-lean-fp32.expected.f32"),
    ),
];

impl ModelSource {
    fn display(&self) -> String {
        match self {
            ModelSource::Builtin => format!("builtin:{BUILTIN_MANIFEST}"),
            ModelSource::Manifest(p) => p.display().to_string(),
        }
    }

    fn read(&self, rel: &str) -> Result<Cow<'static, [u8]>, String> {
        match self {
            ModelSource::Builtin => BUILTIN
                .iter()
                .find(|(n, _)| *n == rel)
                .map(|(_, b)| Cow::Borrowed(*b))
                .ok_or_else(|| format!("builtin:{rel}: not built in")),
            ModelSource::Manifest(p) => {
                let path = p.parent().unwrap_or(Path::new(".")).join(rel);
                std::fs::read(&path).map(Cow::Owned).map_err(|e| format!("{}: {e}", path.display()))
            }
        }
    }

    fn manifest_text(&self) -> Result<Cow<'static, [u8]>, String> {
        match self {
            ModelSource::Builtin => self.read(BUILTIN_MANIFEST),
            ModelSource::Manifest(p) => std::fs::read(p).map(Cow::Owned).map_err(|e| format!("{}: {e}", p.display())),
        }
    }
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Largest self-test image side (pixels): model inputs are far smaller.
const MAX_PPM_SIDE: u32 = 4096;

/// Reads a binary PPM (P6, maxval 255) into an RGB frame. A header that lies about the size, or an
/// image without its pixels, is an error, never a panic or a huge allocation.
pub fn read_ppm(bytes: &[u8]) -> Result<Frame, String> {
    let mut fields: Vec<&str> = Vec::with_capacity(4);
    let mut i = 0usize;
    let at = |i: usize| bytes.get(i).copied();
    while fields.len() < 4 {
        while at(i).is_some_and(|b| b.is_ascii_whitespace()) {
            i = i.saturating_add(1);
        }
        if at(i) == Some(b'#') {
            while at(i).is_some_and(|b| b != b'\n') {
                i = i.saturating_add(1);
            }
            continue;
        }
        let start = i;
        while at(i).is_some_and(|b| !b.is_ascii_whitespace()) {
            i = i.saturating_add(1);
        }
        if start == i {
            return Err("PPM header is incomplete".into());
        }
        let field = bytes.get(start..i).ok_or("PPM header is incomplete")?;
        fields.push(std::str::from_utf8(field).map_err(|_| "PPM header is not text")?);
    }
    let [magic, w, h, maxval] = fields[..] else { return Err("PPM header is incomplete".into()) };
    if magic != "P6" || maxval != "255" {
        return Err("only binary PPM (P6, maxval 255) is supported".into());
    }
    let w: u32 = w.parse().map_err(|_| "bad PPM width")?;
    let h: u32 = h.parse().map_err(|_| "bad PPM height")?;
    if w == 0 || h == 0 || w > MAX_PPM_SIDE || h > MAX_PPM_SIDE {
        return Err(format!("PPM size {w}x{h} is not usable (1..{MAX_PPM_SIDE} each way)"));
    }
    // One whitespace byte ends the header; the pixels follow.
    let data = bytes.get(i.saturating_add(1)..).unwrap_or(&[]);
    let len = PixelFormat::Rgb24.frame_len(w, h);
    let pixels = data.get(..len).ok_or_else(|| format!("PPM has {} pixel bytes, {w}x{h} needs {len}", data.len()))?;
    let mut f = Frame::with_capacity(len);
    f.data.copy_from_slice(pixels);
    (f.len, f.width, f.height, f.format) = (len, w, h, PixelFormat::Rgb24);
    Ok(f)
}

/// Checks the values of a parsed manifest that the types cannot: what a hand-edited or hostile manifest
/// could get wrong. Every problem is a refusal with the field named.
pub fn validate(m: &Manifest) -> Result<(), String> {
    if m.sha256.len() != 64 || !m.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("sha256 {:?} is not 64 hexadecimal digits", m.sha256));
    }
    if m.labels.is_empty() || m.labels.len() > usize::from(u16::MAX) {
        return Err(format!("labels: {} labels (want 1..{})", m.labels.len(), u16::MAX));
    }
    if let Some(l) = m.labels.iter().find(|l| !crate::output::sentence::field_ok(l)) {
        return Err(format!(
            "labels: {l:?} cannot go into a sentence (1..{} printable ASCII characters, none of $ , *)",
            crate::output::sentence::MAX_FIELD
        ));
    }
    if let Some(c) = m.alert_classes.iter().find(|c| !m.labels.contains(c)) {
        return Err(format!("alert_classes: {c:?} is not in labels"));
    }
    let [n, c, h, w] = m.input.shape;
    let min_side = if m.decoder.kind == DecoderKind::Yunet { 32 } else { 16 };
    if n != 1 || c != 3 || !(min_side..=4096).contains(&h) || !(min_side..=4096).contains(&w) {
        return Err(format!("input.shape {:?} must be [1, 3, H, W] with H and W in {min_side}..4096", m.input.shape));
    }
    let i = &m.input;
    if !i.scale.is_finite()
        || i.mean.iter().any(|v| !v.is_finite())
        || i.std.iter().any(|v| !v.is_finite() || *v == 0.0)
    {
        return Err("input: scale, mean and std must be finite numbers, std not 0".into());
    }
    if !(0.0..=255.0).contains(&i.pad) {
        return Err(format!("input.pad {} is not a pixel value 0..255", i.pad));
    }
    let d = &m.decoder;
    for (name, v) in [("score_threshold", d.score_threshold), ("nms_iou", d.nms_iou)] {
        if !(0.0..=1.0).contains(&v) {
            return Err(format!("decoder.{name} {v} is not between 0 and 1"));
        }
    }
    if d.outputs.len() != d.kind.output_count() {
        return Err(format!(
            "decoder {:?} needs {} outputs, decoder.outputs lists {}",
            d.kind,
            d.kind.output_count(),
            d.outputs.len()
        ));
    }
    if d.kind.fixed_classes().is_some_and(|k| k != m.labels.len()) {
        return Err(format!("labels: decoder {:?} has exactly 1 class, the manifest lists {}", d.kind, m.labels.len()));
    }
    let st = &m.selftest;
    if !(st.atol.is_finite() && st.atol >= 0.0 && st.rtol.is_finite() && st.rtol >= 0.0) {
        return Err("selftest: atol and rtol must be finite and >= 0".into());
    }
    if !(0.0..=1.0).contains(&st.max_mismatch) {
        return Err(format!("selftest.max_mismatch {} is not a fraction 0..1", st.max_mismatch));
    }
    Ok(())
}

/// A model ready to run: engine, preprocessing and decoding, as its manifest describes.
pub struct Model {
    pub manifest: Manifest,
    pub source: ModelSource,
    pub engine: Engine,
    pub decoder: Decoder,
    pub preprocessor: Preprocessor,
}

/// What a passed self-test measured.
#[derive(Debug, Clone)]
pub struct SelfTestReport {
    /// Per output: (name, mismatched values, total values, largest absolute difference).
    pub outputs: Vec<(String, usize, usize, f32)>,
}

impl Model {
    /// Reads the manifest, checks the model's sha256 and loads it into tract with the default kernels
    /// ([`Kernels::Auto`]). Does not run the self-test.
    pub fn load(source: &ModelSource) -> Result<Model, ModelError> {
        Model::load_with(source, Kernels::Auto)
    }

    /// [`Model::load`] with the kernels named.
    pub fn load_with(source: &ModelSource, kernels: Kernels) -> Result<Model, ModelError> {
        let path = source.display();
        let merr = |message: String| ModelError::Manifest { path: path.clone(), message };
        let text = source.manifest_text().map_err(&merr)?;
        let text = std::str::from_utf8(&text).map_err(|_| merr("manifest is not UTF-8".into()))?;
        let manifest: Manifest = toml::from_str(text).map_err(|e| merr(e.to_string()))?;
        validate(&manifest).map_err(&merr)?;
        let [_, _, h, w] = manifest.input.shape;
        let bytes = source.read(&manifest.file).map_err(&merr)?;
        let actual = sha256_hex(&bytes);
        if !actual.eq_ignore_ascii_case(&manifest.sha256) {
            return Err(ModelError::Sha256 { path: manifest.file.clone(), expected: manifest.sha256.clone(), actual });
        }
        crate::metrics::log_memory("reading the model");
        let engine = Engine::load(&bytes, manifest.input.shape, manifest.decoder.outputs.len(), kernels)
            .map_err(|source| ModelError::Load { path: manifest.file.clone(), source })?;
        // tract's reader and optimizer are done with: their code need not stay resident.
        let code_kb = crate::metrics::release_code_pages();
        log::debug!("{code_kb} KiB of code pages dropped after loading");
        crate::metrics::log_memory("loading the model into tract");
        // The labels must be the model's classes: a count that does not match decodes to nothing (or
        // to the wrong classes) forever.
        let lens: Vec<usize> = (0..engine.output_count()).map(|i| engine.output_len(i)).collect();
        manifest
            .decoder
            .kind
            .check_outputs(&lens, manifest.labels.len(), w, h)
            .map_err(|e| merr(format!("the model does not match the manifest: {e}")))?;
        let decoder = Decoder {
            kind: manifest.decoder.kind,
            classes: manifest.labels.len(),
            input_w: w,
            input_h: h,
            score_threshold: manifest.decoder.score_threshold,
            nms_iou: manifest.decoder.nms_iou,
            class_logits: manifest.decoder.class_logits,
        };
        let i = &manifest.input;
        let preprocessor = Preprocessor::new(InputSpec {
            width: w,
            height: h,
            order: i.color,
            resize: i.resize,
            scale: i.scale,
            mean: i.mean,
            std: i.std,
            pad: i.pad,
        });
        Ok(Model { manifest, source: source.clone(), engine, decoder, preprocessor })
    }

    /// Loads and self-tests: what start-up does.
    pub fn load_checked(source: &ModelSource) -> Result<(Model, SelfTestReport), ModelError> {
        Model::load_checked_with(source, Kernels::Auto)
    }

    /// [`Model::load_checked`] with the kernels named.
    pub fn load_checked_with(source: &ModelSource, kernels: Kernels) -> Result<(Model, SelfTestReport), ModelError> {
        let mut m = Model::load_with(source, kernels)?;
        let report = m.self_test()?;
        crate::metrics::log_memory("the self-test run");
        Ok((m, report))
    }

    /// Capacity the detection vector needs for this model.
    pub fn max_candidates(&self) -> usize {
        let lens: Vec<usize> = (0..self.engine.output_count()).map(|i| self.engine.output_len(i)).collect();
        self.decoder.kind.max_candidates(&lens)
    }

    /// Runs the fixture through preprocessing and tract and compares every output value with the reference.
    pub fn self_test(&mut self) -> Result<SelfTestReport, ModelError> {
        let st = self.manifest.selftest.clone();
        let name = self.manifest.name.clone();
        let merr =
            |message: String| ModelError::Manifest { path: format!("{} (self-test)", self.source.display()), message };
        let img = self.source.read(&st.input).map_err(&merr)?;
        let frame = read_ppm(&img).map_err(|e| merr(format!("{}: {e}", st.input)))?;
        let spec = self.preprocessor.spec();
        if (frame.width as usize, frame.height as usize) != (spec.width, spec.height) {
            return Err(merr(format!(
                "{} is {}x{}, the model input is {}x{}",
                st.input, frame.width, frame.height, spec.width, spec.height
            )));
        }
        let expected = self.source.read(&st.expected).map_err(&merr)?;
        let total: usize = (0..self.engine.output_count()).map(|i| self.engine.output_len(i)).sum();
        if expected.len() != total.saturating_mul(4) {
            return Err(merr(format!(
                "{} holds {} bytes, the outputs need {}",
                st.expected,
                expected.len(),
                total.saturating_mul(4)
            )));
        }
        self.preprocessor.run(&frame, self.engine.input_mut());
        self.engine.run().map_err(|e| ModelError::Load { path: self.manifest.file.clone(), source: e.into() })?;
        let mut report = SelfTestReport { outputs: Vec::new() };
        let mut offset = 0usize;
        for i in 0..self.engine.output_count() {
            let ours = self.engine.output(i);
            let end = offset.saturating_add(ours.len());
            let reference = expected.get(offset.saturating_mul(4)..end.saturating_mul(4)).unwrap_or(&[]);
            offset = end;
            let (mut mismatched, mut max_diff) = (0usize, 0f32);
            for (a, e) in ours.iter().zip(reference.chunks_exact(4)) {
                let e = f32::from_le_bytes(<[u8; 4]>::try_from(e).unwrap_or([0; 4]));
                let d = (a - e).abs();
                // NaN counts as a mismatch.
                if d.is_nan() || d > st.atol + st.rtol * e.abs() {
                    mismatched = mismatched.saturating_add(1);
                }
                if d > max_diff || d.is_nan() {
                    max_diff = d;
                }
            }
            let out_name = self.manifest.decoder.outputs.get(i).cloned().unwrap_or_else(|| format!("output {i}"));
            let frac = mismatched as f64 / ours.len().max(1) as f64;
            if frac > st.max_mismatch {
                return Err(ModelError::SelfTest {
                    name,
                    output: out_name,
                    mismatched,
                    total: ours.len(),
                    percent: frac * 100.0,
                    allowed: st.max_mismatch * 100.0,
                    max_diff,
                });
            }
            report.outputs.push((out_name, mismatched, ours.len(), max_diff));
        }
        Ok(report)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)] // tests may panic
mod tests {
    use super::*;

    #[test]
    fn ppm_round_trip_and_errors() {
        let mut p = b"P6\n# c\n2 1\n255\n".to_vec();
        p.extend([1, 2, 3, 4, 5, 6]);
        let f = read_ppm(&p).unwrap();
        assert_eq!((f.width, f.height, f.pixels()), (2, 1, &[1u8, 2, 3, 4, 5, 6][..]));
        assert!(read_ppm(b"P5\n2 1\n255\n\0\0").is_err());
        assert!(read_ppm(b"P6\n2 1\n255\n\0").is_err());
    }

    #[test]
    fn an_engine_that_let_go_of_its_input_gets_a_new_one_and_still_passes_its_self_test() {
        let (mut m, first) = Model::load_checked(&ModelSource::Builtin).unwrap();
        m.engine.drop_input();
        // A run without an input: zeros, of the model's shape (tract accepts it).
        m.engine.run().unwrap();
        // Preprocessing writes a whole new input, and the self-test gives what it gave before.
        m.engine.drop_input();
        let again = m.self_test().unwrap();
        assert_eq!(again.outputs.len(), first.outputs.len());
        for (a, b) in again.outputs.iter().zip(&first.outputs) {
            assert_eq!((a.1, a.2), (b.1, b.2));
            assert!((a.3 - b.3).abs() < 1e-6);
        }
    }

    #[test]
    fn sha256_of_known_input() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
