//! Stage benchmarks (divan): the per-frame work outside tract, on the shipped clip.
//! `cargo bench --bench stages`. Compare stages with each other within one run; absolute times on a
//! shared machine move from run to run.

use lookout::capture::mjpeg::{decode_rgb, split_next};
use lookout::frame::{Frame, PixelFormat};
use lookout::model::{Model, ModelSource};
use lookout::preprocess::Preprocessor;
use lookout::ring::{Policy, Ring, Take};

fn main() {
    divan::main();
}

fn clip_frame() -> (Vec<u8>, Frame) {
    let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/bikes.mjpeg")).unwrap();
    let mut r = std::io::Cursor::new(&bytes[..]);
    let mut jpeg = Vec::new();
    for _ in 0..=100 {
        split_next(&mut r, &mut jpeg).unwrap();
    }
    let mut f = Frame::with_capacity(640 * 272 * 3);
    decode_rgb(&jpeg, &mut f.data).unwrap();
    (f.len, f.width, f.height, f.format) = (640 * 272 * 3, 640, 272, PixelFormat::Rgb24);
    (jpeg, f)
}

fn fastestdet() -> Model {
    Model::load(&ModelSource::Builtin).unwrap()
}

#[divan::bench]
fn jpeg_decode_640x272(b: divan::Bencher) {
    let (jpeg, mut f) = clip_frame();
    b.bench_local(|| decode_rgb(divan::black_box(&jpeg), &mut f.data).unwrap());
}

#[divan::bench]
fn preprocess_rgb_640x272_to_352(b: divan::Bencher) {
    let (_, f) = clip_frame();
    let m = fastestdet();
    let mut p = Preprocessor::new(m.preprocessor.spec().clone());
    let mut out = vec![0f32; p.tensor_len()];
    b.bench_local(|| p.run(divan::black_box(&f), &mut out));
}

#[divan::bench]
fn preprocess_i420_640x272_to_352(b: divan::Bencher) {
    let m = fastestdet();
    let mut f = Frame::with_capacity(PixelFormat::I420.frame_len(640, 272));
    for (i, v) in f.data.iter_mut().enumerate() {
        *v = (i * 7 % 251) as u8;
    }
    (f.len, f.width, f.height, f.format) = (f.data.len(), 640, 272, PixelFormat::I420);
    let mut p = Preprocessor::new(m.preprocessor.spec().clone());
    let mut out = vec![0f32; p.tensor_len()];
    b.bench_local(|| p.run(divan::black_box(&f), &mut out));
}

#[divan::bench]
fn decode_and_nms_fastestdet(b: divan::Bencher) {
    let (_, f) = clip_frame();
    let mut m = fastestdet();
    let geom = m.preprocessor.run(&f, m.engine.input_mut());
    m.engine.run().unwrap();
    let mut dets = Vec::with_capacity(m.max_candidates());
    let (dec, engine) = (&m.decoder, &m.engine);
    b.bench_local(|| dec.decode(|i| engine.output(i), &geom, &mut dets));
}

#[divan::bench]
fn tract_run_fastestdet_int8(b: divan::Bencher) {
    let (_, f) = clip_frame();
    let mut m = fastestdet();
    m.preprocessor.run(&f, m.engine.input_mut());
    b.bench_local(|| m.engine.run().unwrap());
}

#[divan::bench]
fn ring_cycle(b: divan::Bencher) {
    let ring = Ring::new(4, 16, Policy::LatestWins);
    b.bench_local(|| {
        let i = ring.acquire().unwrap();
        ring.publish(i);
        if let Take::Slot(j) = ring.take(std::time::Duration::ZERO) {
            ring.release(j);
        }
    });
}
