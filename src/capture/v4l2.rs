//! V4L2 cameras: the one module that knows the `v4l` crate.
//!
//! Why it looks like this: a camera is negotiated once (format, size, frame rate), then streams through
//! driver buffers mapped into our memory (mmap, 4 buffers). `v4l`'s stream lends each filled buffer; we
//! convert out of it straight into the ring slot (the one copy per frame) and hand the buffer back.
//! Raw formats are copied row by row (drivers may pad rows); MJPEG frames go through the same DHT fix-up
//! and JPEG decoder as MJPEG files, because UVC webcams leave the Huffman tables out. Presentation times
//! come from the driver's timestamps, relative to the first frame.
//!
//! Negotiation ([`negotiate`]) is a plain function over what the camera offers, so it is tested without a
//! camera: an explicit format must be offered; `auto` takes the cheapest format to convert that reaches
//! the requested frame rate at the requested size (YUYV and NV12 before MJPEG, which needs a JPEG decode,
//! and grey last, as colour models want colour).

use std::io::Cursor;
use std::mem::ManuallyDrop;
use std::path::PathBuf;
use std::time::Duration;

use v4l::buffer::Type;
use v4l::frameinterval::FrameIntervalEnum;
use v4l::framesize::FrameSizeEnum;
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::{Device, Format, FourCC};

use super::mjpeg::{decode_rgb_in, jpeg_arena, split_next, Split};
use super::{CaptureError, FrameSource, Next, SourceInfo};
use crate::frame::{Frame, PixelFormat};
use crate::metrics::alloc::Arena;

/// Pixel formats lookout can take from a camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CameraFormat {
    /// Let lookout pick (see the module documentation).
    Auto,
    Yuyv,
    Mjpeg,
    Nv12,
    Grey,
}

impl CameraFormat {
    fn fourcc(self) -> Option<[u8; 4]> {
        match self {
            CameraFormat::Auto => None,
            CameraFormat::Yuyv => Some(*b"YUYV"),
            CameraFormat::Mjpeg => Some(*b"MJPG"),
            CameraFormat::Nv12 => Some(*b"NV12"),
            CameraFormat::Grey => Some(*b"GREY"),
        }
    }

    /// The format for a V4L2 fourcc, if lookout can use it.
    pub fn from_fourcc(code: &[u8; 4]) -> Option<CameraFormat> {
        [CameraFormat::Yuyv, CameraFormat::Mjpeg, CameraFormat::Nv12, CameraFormat::Grey]
            .into_iter()
            .find(|f| f.fourcc().as_ref() == Some(code))
    }

    /// Relative cost of turning a frame of this format into model input (lower is cheaper).
    fn cost(self) -> u8 {
        match self {
            CameraFormat::Yuyv | CameraFormat::Nv12 => 0,
            CameraFormat::Mjpeg => 1,
            CameraFormat::Grey => 2,
            CameraFormat::Auto => u8::MAX,
        }
    }

    fn pixel_format(self) -> PixelFormat {
        match self {
            CameraFormat::Yuyv => PixelFormat::Yuyv,
            CameraFormat::Nv12 => PixelFormat::Nv12,
            CameraFormat::Grey => PixelFormat::Grey,
            CameraFormat::Mjpeg | CameraFormat::Auto => PixelFormat::Rgb24,
        }
    }
}

/// One (format, size) a camera offers, with the frame rates it offers there: (min, max) fps per entry;
/// a discrete rate has min == max.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    pub format: CameraFormat,
    pub width: u32,
    pub height: u32,
    pub rates: Vec<(f64, f64)>,
}

impl Offer {
    /// The rate closest to `fps` this offer can run at.
    fn best_rate(&self, fps: f64) -> f64 {
        self.rates
            .iter()
            // A driver may report a stepwise range upside down, or with NaN from a zero denominator:
            // order the ends and drop what is not a rate (`clamp` would panic on lo > hi).
            .filter(|&&(lo, hi)| lo.is_finite() && hi.is_finite())
            .map(|&(lo, hi)| fps.max(lo.min(hi)).min(lo.max(hi)))
            .min_by(|a, b| (a - fps).abs().total_cmp(&(b - fps).abs()))
            .unwrap_or(0.0)
    }
}

/// What negotiation settled on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    pub format: CameraFormat,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
}

/// Picks format, size and rate from `offers`. The size is the requested one if offered, else the offered
/// size closest in area. Among formats at that size: an explicit `want` must be there; `auto` prefers a
/// format that reaches `fps` (within 1%), then the cheaper conversion, then the higher rate.
pub fn negotiate(offers: &[Offer], want: CameraFormat, width: u32, height: u32, fps: f64) -> Result<Choice, String> {
    let usable: Vec<&Offer> = offers.iter().filter(|o| want == CameraFormat::Auto || o.format == want).collect();
    if usable.is_empty() {
        let have: Vec<String> = offers.iter().map(|o| format!("{:?}", o.format)).collect();
        return Err(format!(
            "the camera does not offer {want:?} (it offers: {})",
            if have.is_empty() { "nothing lookout can use".into() } else { have.join(", ") }
        ));
    }
    let px = |w: u32, h: u32| u64::from(w).saturating_mul(u64::from(h));
    let area = |o: &Offer| px(o.width, o.height).abs_diff(px(width, height));
    let exact = usable.iter().any(|o| (o.width, o.height) == (width, height));
    let best_area = usable.iter().map(|o| area(o)).min().unwrap_or(0);
    let at_size: Vec<&&Offer> = usable
        .iter()
        .filter(|o| if exact { (o.width, o.height) == (width, height) } else { area(o) == best_area })
        .collect();
    let reaches = |o: &Offer| o.best_rate(fps) >= fps * 0.99;
    let best = at_size
        .into_iter()
        .min_by(|a, b| {
            (!reaches(a), a.format.cost())
                .cmp(&(!reaches(b), b.format.cost()))
                .then(b.best_rate(fps).total_cmp(&a.best_rate(fps)))
        })
        .ok_or("no usable size")?;
    Ok(Choice { format: best.format, width: best.width, height: best.height, fps: best.best_rate(fps) })
}

/// Everything the camera offers that lookout can use (the `probe` listing and negotiation's input).
pub fn offers(dev: &Device) -> std::io::Result<Vec<Offer>> {
    let mut out = Vec::new();
    for desc in dev.enum_formats()? {
        let Some(format) = CameraFormat::from_fourcc(&desc.fourcc.repr) else { continue };
        for size in dev.enum_framesizes(desc.fourcc)? {
            let sizes: Vec<(u32, u32)> = match size.size {
                FrameSizeEnum::Discrete(d) => vec![(d.width, d.height)],
                FrameSizeEnum::Stepwise(s) => {
                    // Offer the corners; a requested size inside the range is offered by set_format too.
                    vec![(s.min_width, s.min_height), (s.max_width, s.max_height)]
                }
            };
            for (w, h) in sizes {
                let mut rates = Vec::new();
                for iv in dev.enum_frameintervals(desc.fourcc, w, h).unwrap_or_default() {
                    let fps = |n: u32, d: u32| if n > 0 { d as f64 / n as f64 } else { 0.0 };
                    match iv.interval {
                        FrameIntervalEnum::Discrete(f) => {
                            let r = fps(f.numerator, f.denominator);
                            rates.push((r, r));
                        }
                        FrameIntervalEnum::Stepwise(s) => rates
                            .push((fps(s.max.numerator, s.max.denominator), fps(s.min.numerator, s.min.denominator))),
                    }
                }
                out.push(Offer { format, width: w, height: h, rates });
            }
        }
    }
    Ok(out)
}

/// Video device nodes (`/dev/video*`), in numeric order.
pub fn video_devices(dev_dir: &std::path::Path) -> Vec<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(dev_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let n = name.to_str()?.strip_prefix("video")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

fn fps_of(f: v4l::Fraction) -> String {
    if f.numerator == 0 {
        "?".into()
    } else {
        format!("{:.3}", f.denominator as f64 / f.numerator as f64)
    }
}

/// Writes what `lookout probe` shows: for each video device its driver, card and bus, its stable
/// `/dev/v4l/by-id` names, and every format, size and frame interval it offers (as `v4l2-ctl
/// --list-formats-ext` does), marking what lookout can use. Returns how many devices lookout can use.
pub fn probe(out: &mut dyn std::io::Write) -> std::io::Result<usize> {
    let devices = video_devices(std::path::Path::new("/dev"));
    if devices.is_empty() {
        writeln!(out, "no camera: there are no video devices (/dev/video*) on this machine.")?;
        writeln!(out, "Plug a camera in (or load its driver) and run `lookout probe` again.")?;
        return Ok(0);
    }
    let by_id: Vec<(PathBuf, PathBuf)> = std::fs::read_dir("/dev/v4l/by-id")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((std::fs::canonicalize(e.path()).ok()?, e.path())))
        .collect();
    let mut usable_devices = 0usize;
    for path in &devices {
        let dev = match Device::with_path(path) {
            Ok(d) => d,
            Err(e) => {
                writeln!(out, "{}: cannot open: {e}", path.display())?;
                continue;
            }
        };
        let caps = match dev.query_caps() {
            Ok(c) => c,
            Err(e) => {
                writeln!(out, "{}: not a V4L2 device: {e}", path.display())?;
                continue;
            }
        };
        writeln!(out, "{}: driver {}, card \"{}\", bus {}", path.display(), caps.driver, caps.card, caps.bus)?;
        for (target, link) in &by_id {
            if target == path {
                writeln!(out, "  also {}", link.display())?;
            }
        }
        use v4l::capability::Flags;
        let capture = caps.capabilities.contains(Flags::VIDEO_CAPTURE);
        let streaming = caps.capabilities.contains(Flags::STREAMING);
        if !capture || !streaming {
            writeln!(out, "  not usable: not a {} device", if capture { "streaming" } else { "video capture" })?;
            continue;
        }
        let mut usable = Vec::new();
        for desc in dev.enum_formats().unwrap_or_default() {
            let ours = CameraFormat::from_fourcc(&desc.fourcc.repr);
            let mark = match ours {
                Some(f) => {
                    usable.push(format!("{f:?}").to_lowercase());
                    format!("usable as format = \"{}\"", format!("{f:?}").to_lowercase())
                }
                None => "not usable".into(),
            };
            writeln!(out, "  {} ({}): {mark}", desc.fourcc, desc.description)?;
            for size in dev.enum_framesizes(desc.fourcc).unwrap_or_default() {
                let corners = match size.size {
                    FrameSizeEnum::Discrete(d) => vec![(d.width, d.height)],
                    FrameSizeEnum::Stepwise(st) => {
                        writeln!(
                            out,
                            "    sizes {}x{} to {}x{} in steps of {}x{}",
                            st.min_width, st.min_height, st.max_width, st.max_height, st.step_width, st.step_height
                        )?;
                        vec![(st.min_width, st.min_height), (st.max_width, st.max_height)]
                    }
                };
                for (w, h) in corners {
                    let rates: Vec<String> = dev
                        .enum_frameintervals(desc.fourcc, w, h)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|iv| match iv.interval {
                            FrameIntervalEnum::Discrete(f) => fps_of(f),
                            FrameIntervalEnum::Stepwise(st) => format!("{}-{}", fps_of(st.max), fps_of(st.min)),
                        })
                        .collect();
                    let rates = if rates.is_empty() { "rate not listed".into() } else { rates.join(", ") + " fps" };
                    writeln!(out, "    {w}x{h}: {rates}")?;
                }
            }
        }
        if usable.is_empty() {
            writeln!(out, "  lookout cannot use it: it offers none of YUYV, MJPG, NV12, GREY")?;
        } else {
            usable_devices = usable_devices.saturating_add(1);
            writeln!(out, "  lookout can use it: device = \"{}\", format = {}", path.display(), usable.join(" | "))?;
        }
    }
    if usable_devices == 0 {
        writeln!(out, "no camera lookout can use: none of the video devices above captures a usable format.")?;
    }
    Ok(usable_devices)
}

/// Camera settings from the config.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraSettings {
    pub device: PathBuf,
    pub format: CameraFormat,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    /// A frame not arriving within this time is reported as an I/O error (the camera stalled).
    pub timeout: Duration,
    /// The largest frame a ring slot holds; a negotiated format that needs more is refused.
    pub max_frame_len: usize,
}

/// A V4L2 camera streaming into ring slots.
pub struct V4l2Source {
    // Dropped by hand, before the device (see `Drop`).
    stream: ManuallyDrop<Stream<'static>>,
    _dev: Device,
    /// Streaming has started (all buffers queued, STREAMON done).
    started: bool,
    /// The buffer lent to the last frame, queued again before the next wait.
    held: Option<usize>,
    fd: std::os::fd::RawFd,
    stop: crate::shutdown::Shutdown,
    choice: Choice,
    stride: usize,
    info: SourceInfo,
    jpeg: Vec<u8>,
    arena: Arena,
    first_ts_us: Option<i64>,
    index: u64,
    timeout: Duration,
    pub device: PathBuf,
}

fn invalid(msg: String) -> CaptureError {
    CaptureError::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, msg))
}

impl V4l2Source {
    /// Opens and configures the camera and maps its buffers; streaming starts with the first frame.
    /// Waits for frames watch `stop`.
    pub fn open(s: &CameraSettings, stop: &crate::shutdown::Shutdown) -> Result<V4l2Source, CaptureError> {
        let dev = Device::with_path(&s.device)?;
        let caps = dev.query_caps()?;
        let flags = caps.capabilities;
        use v4l::capability::Flags;
        if !flags.contains(Flags::VIDEO_CAPTURE) || !flags.contains(Flags::STREAMING) {
            return Err(invalid(format!("{} ({}) is not a streaming capture device", s.device.display(), caps.card)));
        }
        let offered = offers(&dev)?;
        let choice = negotiate(&offered, s.format, s.width, s.height, s.fps)
            .map_err(|e| invalid(format!("{}: {e}", s.device.display())))?;
        let need = choice.format.pixel_format().frame_len(choice.width, choice.height);
        if need > s.max_frame_len {
            return Err(invalid(format!(
                "{}: {:?} {}x{} needs {need} bytes a frame, more than the ring's {}-byte slots (configure \
                 source.width and source.height to a size the camera offers)",
                s.device.display(),
                choice.format,
                choice.width,
                choice.height,
                s.max_frame_len
            )));
        }
        let fourcc = FourCC::new(&choice.format.fourcc().unwrap_or(*b"YUYV"));
        let set = dev.set_format(&Format::new(choice.width, choice.height, fourcc))?;
        if set.fourcc != fourcc || (set.width, set.height) != (choice.width, choice.height) {
            return Err(invalid(format!(
                "{}: asked for {} {}x{}, the driver set {} {}x{}",
                s.device.display(),
                fourcc,
                choice.width,
                choice.height,
                set.fourcc,
                set.width,
                set.height
            )));
        }
        let fps = choice.fps.round().max(1.0) as u32;
        let actual_fps = match dev.set_params(&v4l::video::capture::Parameters::with_fps(fps)) {
            Ok(p) if p.interval.numerator > 0 => p.interval.denominator as f64 / p.interval.numerator as f64,
            Ok(_) => choice.fps,
            Err(e) => {
                log::warn!("{}: could not set {fps} fps: {e}", s.device.display());
                choice.fps
            }
        };
        let mut stream = Stream::with_buffers(&dev, Type::VideoCapture, 4)?;
        // lookout waits for each frame itself (with the stop); this only bounds the dequeue after that.
        stream.set_timeout(Duration::from_secs(1));
        let fd = stream.handle().fd();
        let format = choice.format.pixel_format();
        let info = SourceInfo { width: choice.width, height: choice.height, format, fps: actual_fps, live: true };
        log::info!(
            "{} ({}, {}): {:?} {}x{} at {:.1} fps",
            s.device.display(),
            caps.driver,
            caps.card,
            choice.format,
            choice.width,
            choice.height,
            actual_fps
        );
        Ok(V4l2Source {
            stream: ManuallyDrop::new(stream),
            _dev: dev,
            started: false,
            held: None,
            fd,
            stop: stop.clone(),
            choice,
            stride: set.stride as usize,
            info,
            jpeg: Vec::with_capacity(1 << 20),
            arena: jpeg_arena(info.frame_len()),
            first_ts_us: None,
            index: 0,
            timeout: s.timeout,
            device: s.device.clone(),
        })
    }
}

impl Drop for V4l2Source {
    /// Stops streaming and unmaps the buffers. `v4l`'s stream panics in its own drop when STREAMOFF fails
    /// with anything but ENODEV (device gone); a camera that fails oddly must not take the process down,
    /// so STREAMOFF is tried here first and, if it fails that way, the stream is leaked (its mapped
    /// buffers and descriptor, a few MB at most, once per such failure) with an error in the log.
    fn drop(&mut self) {
        use v4l::io::traits::Stream as _;
        match self.stream.stop() {
            Err(e) if e.raw_os_error() != Some(libc::ENODEV) => {
                log::error!("{}: stopping the stream failed ({e}); leaking its buffers", self.device.display());
            }
            // SAFETY: the stream is dropped exactly once, here, and never used after.
            _ => unsafe { ManuallyDrop::drop(&mut self.stream) },
        }
    }
}

/// Copies `rows` rows of `row_len` bytes from `src` (rows `stride` apart) into `dst` (rows packed).
fn copy_rows(src: &[u8], stride: usize, row_len: usize, rows: usize, dst: &mut [u8]) -> Result<(), String> {
    let stride = stride.max(row_len);
    let short = || format!("buffer of {} bytes is short for {rows} rows of {row_len} (stride {stride})", src.len());
    if row_len == 0 {
        return Ok(());
    }
    let mut out = dst.chunks_exact_mut(row_len);
    for r in 0..rows {
        let start = r.checked_mul(stride).ok_or_else(short)?;
        let row = src.get(start..start.saturating_add(row_len)).filter(|s| s.len() == row_len).ok_or_else(short)?;
        out.next().ok_or_else(short)?.copy_from_slice(row);
    }
    Ok(())
}

/// Converts one driver buffer into `frame` (raw formats: packed rows; MJPEG: decoded to RGB, the
/// decoder's allocations in `arena`).
#[allow(clippy::too_many_arguments)]
pub fn convert(
    format: CameraFormat,
    width: u32,
    height: u32,
    stride: usize,
    data: &[u8],
    jpeg: &mut Vec<u8>,
    arena: &mut Arena,
    frame: &mut Frame,
) -> Result<(), String> {
    let (w, h) = (width as usize, height as usize);
    let pf = format.pixel_format();
    let len = pf.frame_len(width, height);
    let dst = frame.data.get_mut(..len).ok_or("frame slot too small")?;
    match format {
        CameraFormat::Yuyv => copy_rows(data, stride, w.div_ceil(2).saturating_mul(4), h, dst)?,
        CameraFormat::Grey => copy_rows(data, stride, w, h, dst)?,
        CameraFormat::Nv12 => {
            let (y, uv) = dst.split_at_mut(w.saturating_mul(h).min(len));
            let stride = stride.max(w);
            copy_rows(data, stride, w, h, y)?;
            let chroma = data.get(stride.saturating_mul(h)..).ok_or("NV12 buffer has no chroma plane")?;
            copy_rows(chroma, stride, w.div_ceil(2).saturating_mul(2), h.div_ceil(2), uv)?;
        }
        CameraFormat::Mjpeg => {
            match split_next(&mut Cursor::new(data), jpeg).map_err(|e| e.to_string())? {
                Split::Jpeg { .. } => {}
                Split::End | Split::Damaged { .. } => return Err("incomplete JPEG from the camera".into()),
            }
            let (jw, jh) = decode_rgb_in(arena, jpeg, dst)?;
            if (jw, jh) != (width, height) {
                return Err(format!("camera sent a {jw}x{jh} JPEG in a {width}x{height} stream"));
            }
        }
        CameraFormat::Auto => return Err("no format negotiated".into()),
    }
    frame.len = len;
    frame.format = pf;
    frame.width = width;
    frame.height = height;
    Ok(())
}

impl FrameSource for V4l2Source {
    fn info(&self) -> SourceInfo {
        self.info
    }

    fn next_frame(&mut self, frame: &mut Frame) -> Result<Next, CaptureError> {
        use v4l::io::traits::Stream as _;
        if !self.started {
            for i in 0..self.stream.buffer_count() {
                CaptureStream::queue(&mut *self.stream, i)?;
            }
            self.stream.start()?;
            self.started = true;
        } else if let Some(i) = self.held.take() {
            CaptureStream::queue(&mut *self.stream, i)?;
        }
        match self.stop.wait_fd(Some(self.fd), libc::POLLIN, self.timeout) {
            crate::shutdown::Wait::Stopped => return Err(crate::shutdown::stopped_error().into()),
            crate::shutdown::Wait::TimedOut => {
                let ms = self.timeout.as_millis();
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no frame for {ms} ms: the camera stalled (timed out)"),
                )
                .into());
            }
            crate::shutdown::Wait::Ready => {}
        }
        let i = CaptureStream::dequeue(&mut *self.stream)?;
        self.held = Some(i);
        let Some((buf, meta)) = self.stream.get(i) else {
            return Err(invalid(format!("driver returned buffer {i}, which was never mapped")));
        };
        let index = self.index;
        self.index = self.index.saturating_add(1);
        let used = if meta.bytesused > 0 { (meta.bytesused as usize).min(buf.len()) } else { buf.len() };
        let c = self.choice;
        convert(
            c.format,
            c.width,
            c.height,
            self.stride,
            buf.get(..used).unwrap_or(buf),
            &mut self.jpeg,
            &mut self.arena,
            frame,
        )
        .map_err(|reason| CaptureError::Corrupt { index, reason })?;
        // time_t is 32-bit on armv7 and 64-bit on aarch64: the casts are needed on one of them.
        #[allow(clippy::unnecessary_cast)]
        let ts = (meta.timestamp.sec as i64).saturating_mul(1_000_000).saturating_add(meta.timestamp.usec as i64);
        let first = *self.first_ts_us.get_or_insert(ts);
        frame.index = index;
        frame.pts_ms = u64::try_from(ts.saturating_sub(first)).unwrap_or(0) / 1000;
        Ok(Next::Frame)
    }

    fn rewind(&mut self) -> Result<bool, CaptureError> {
        Ok(false)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)] // tests may panic
mod tests {
    use super::*;

    fn offer(format: CameraFormat, width: u32, height: u32, rates: &[f64]) -> Offer {
        Offer { format, width, height, rates: rates.iter().map(|&r| (r, r)).collect() }
    }

    #[test]
    fn auto_prefers_raw_when_it_reaches_the_rate_else_mjpeg() {
        let cam = [
            offer(CameraFormat::Mjpeg, 1280, 720, &[30.0, 15.0]),
            offer(CameraFormat::Yuyv, 1280, 720, &[10.0, 5.0]),
            offer(CameraFormat::Mjpeg, 640, 480, &[30.0]),
            offer(CameraFormat::Yuyv, 640, 480, &[30.0, 15.0]),
        ];
        let c = negotiate(&cam, CameraFormat::Auto, 640, 480, 30.0).unwrap();
        assert_eq!((c.format, c.width, c.height, c.fps), (CameraFormat::Yuyv, 640, 480, 30.0));
        // At 720p YUYV only does 10 fps over USB 2: MJPEG reaches 30.
        let c = negotiate(&cam, CameraFormat::Auto, 1280, 720, 30.0).unwrap();
        assert_eq!((c.format, c.fps), (CameraFormat::Mjpeg, 30.0));
        // Asking for 10 fps, YUYV (no decode) is enough.
        let c = negotiate(&cam, CameraFormat::Auto, 1280, 720, 10.0).unwrap();
        assert_eq!(c.format, CameraFormat::Yuyv);
    }

    #[test]
    fn explicit_format_must_be_offered_and_size_falls_back_to_the_closest() {
        let cam = [offer(CameraFormat::Yuyv, 640, 480, &[30.0]), offer(CameraFormat::Yuyv, 320, 240, &[30.0])];
        let e = negotiate(&cam, CameraFormat::Mjpeg, 640, 480, 30.0).unwrap_err();
        assert!(e.contains("does not offer Mjpeg") && e.contains("Yuyv"), "{e}");
        let c = negotiate(&cam, CameraFormat::Yuyv, 600, 400, 30.0).unwrap();
        assert_eq!((c.width, c.height), (640, 480));
        assert!(negotiate(&[], CameraFormat::Auto, 640, 480, 30.0).unwrap_err().contains("nothing lookout can use"));
    }

    #[test]
    fn stepwise_rates_clamp_to_the_request() {
        let cam = [Offer { format: CameraFormat::Yuyv, width: 640, height: 480, rates: vec![(1.0, 60.0)] }];
        assert_eq!(negotiate(&cam, CameraFormat::Auto, 640, 480, 25.0).unwrap().fps, 25.0);
        let cam = [Offer { format: CameraFormat::Yuyv, width: 640, height: 480, rates: vec![(1.0, 15.0)] }];
        assert_eq!(negotiate(&cam, CameraFormat::Auto, 640, 480, 25.0).unwrap().fps, 15.0);
        // Upside-down and NaN ranges from a driver: no panic, the sane range wins.
        let cam = [Offer {
            format: CameraFormat::Yuyv,
            width: 640,
            height: 480,
            rates: vec![(60.0, 1.0), (f64::NAN, 30.0), (f64::INFINITY, f64::INFINITY)],
        }];
        assert_eq!(negotiate(&cam, CameraFormat::Auto, 640, 480, 25.0).unwrap().fps, 25.0);
    }

    #[test]
    fn padded_rows_and_nv12_planes_are_packed_into_the_slot() {
        // 2x2 YUYV with a 6-byte stride (2 bytes of padding per row).
        let data = [1, 2, 3, 4, 0, 0, 5, 6, 7, 8, 0, 0];
        let mut f = Frame::with_capacity(8);
        convert(CameraFormat::Yuyv, 2, 2, 6, &data, &mut Vec::new(), &mut Arena::new(0), &mut f).unwrap();
        assert_eq!(f.pixels(), &[1, 2, 3, 4, 5, 6, 7, 8]);
        // 2x2 NV12 with stride 4: Y rows, then one UV row.
        let data = [10, 11, 0, 0, 12, 13, 0, 0, 20, 21, 0, 0];
        let mut f = Frame::with_capacity(6);
        convert(CameraFormat::Nv12, 2, 2, 4, &data, &mut Vec::new(), &mut Arena::new(0), &mut f).unwrap();
        assert_eq!((f.pixels(), f.format), (&[10u8, 11, 12, 13, 20, 21][..], PixelFormat::Nv12));
        // A short buffer is an error, not a panic.
        assert!(convert(CameraFormat::Yuyv, 2, 2, 6, &data[..7], &mut Vec::new(), &mut Arena::new(0), &mut f).is_err());
    }

    #[test]
    fn mjpeg_without_huffman_tables_converts() {
        let full = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/std-huffman.jpg")).unwrap();
        let at = full.windows(2).position(|w| w == [0xFF, 0xC4]).unwrap();
        let len = u16::from_be_bytes([full[at + 2], full[at + 3]]) as usize;
        let mut stripped = full[..at].to_vec();
        stripped.extend_from_slice(&full[at + 2 + len..]);
        let mut f = Frame::with_capacity(640 * 272 * 3);
        convert(CameraFormat::Mjpeg, 640, 272, 0, &stripped, &mut Vec::new(), &mut Arena::new(0), &mut f).unwrap();
        assert_eq!((f.width, f.height, f.format), (640, 272, PixelFormat::Rgb24));
    }
}

/// The pre-generated bindings (vendor/v4l2-sys-mit) against the target's C compiler and kernel headers
/// (src/capture/v4l2_layout.c, compiled by build.rs): sizes, alignments and offsets of the structs our
/// ioctls pass, and the ioctl codes the v4l crate derives from them. Run for every target we build (the
/// ARM ones under qemu-user), so a binding file for the wrong architecture cannot ship.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)] // tests may panic
mod layout {
    use std::ffi::{c_char, CStr};
    use std::mem::{align_of, offset_of, size_of};

    use v4l::v4l2::vidioc;
    use v4l::v4l_sys::*;

    #[repr(C)]
    struct Entry {
        name: *const c_char,
        value: u64,
    }

    extern "C" {
        static lookout_v4l2_layout: [Entry; 0];
        static lookout_v4l2_layout_len: usize;
    }

    fn c_side() -> Vec<(String, u64)> {
        // SAFETY: the C file defines the array with `lookout_v4l2_layout_len` entries, each name a static
        // NUL-terminated string.
        unsafe {
            let entries = std::slice::from_raw_parts(lookout_v4l2_layout.as_ptr(), lookout_v4l2_layout_len);
            entries.iter().map(|e| (CStr::from_ptr(e.name).to_string_lossy().into_owned(), e.value)).collect()
        }
    }

    macro_rules! size {
        ($v:ident, $t:ident) => {
            $v.push((format!("size {}", stringify!($t)), size_of::<$t>() as u64));
            $v.push((format!("align {}", stringify!($t)), align_of::<$t>() as u64));
        };
    }
    macro_rules! off {
        ($v:ident, $t:ident, $f:ident) => {
            $v.push((format!("offset {}.{}", stringify!($t), stringify!($f)), offset_of!($t, $f) as u64));
        };
    }
    macro_rules! ioctl {
        ($v:ident, $c:ident) => {
            $v.push((format!("ioctl {}", stringify!($c)), vidioc::$c as u64));
        };
    }

    #[test]
    fn bindings_match_the_c_compiler_for_this_target() {
        let mut r = Vec::new();
        size!(r, v4l2_capability);
        size!(r, v4l2_fmtdesc);
        size!(r, v4l2_frmsizeenum);
        size!(r, v4l2_frmivalenum);
        size!(r, v4l2_pix_format);
        size!(r, v4l2_format);
        size!(r, v4l2_streamparm);
        size!(r, v4l2_requestbuffers);
        size!(r, v4l2_buffer);
        size!(r, v4l2_plane);
        size!(r, timeval);
        off!(r, v4l2_buffer, bytesused);
        off!(r, v4l2_buffer, flags);
        off!(r, v4l2_buffer, timestamp);
        off!(r, v4l2_buffer, sequence);
        off!(r, v4l2_buffer, memory);
        off!(r, v4l2_buffer, m);
        off!(r, v4l2_buffer, length);
        off!(r, v4l2_format, fmt);
        off!(r, v4l2_pix_format, bytesperline);
        off!(r, v4l2_pix_format, sizeimage);
        off!(r, v4l2_streamparm, parm);
        // `discrete` sits in an anonymous union, which bindgen names `__bindgen_anon_1`.
        r.push(("offset v4l2_frmsizeenum.discrete".into(), offset_of!(v4l2_frmsizeenum, __bindgen_anon_1) as u64));
        r.push(("offset v4l2_frmivalenum.discrete".into(), offset_of!(v4l2_frmivalenum, __bindgen_anon_1) as u64));
        ioctl!(r, VIDIOC_QUERYCAP);
        ioctl!(r, VIDIOC_ENUM_FMT);
        ioctl!(r, VIDIOC_G_FMT);
        ioctl!(r, VIDIOC_S_FMT);
        ioctl!(r, VIDIOC_REQBUFS);
        ioctl!(r, VIDIOC_QUERYBUF);
        ioctl!(r, VIDIOC_QBUF);
        ioctl!(r, VIDIOC_DQBUF);
        ioctl!(r, VIDIOC_STREAMON);
        ioctl!(r, VIDIOC_STREAMOFF);
        ioctl!(r, VIDIOC_G_PARM);
        ioctl!(r, VIDIOC_S_PARM);
        ioctl!(r, VIDIOC_ENUM_FRAMESIZES);
        ioctl!(r, VIDIOC_ENUM_FRAMEINTERVALS);
        let c = c_side();
        for ((rn, rv), (cn, cv)) in r.iter().zip(&c) {
            assert_eq!(rn, cn, "the Rust and C tables list different entries");
            assert_eq!(rv, cv, "{rn}: Rust bindings say {rv}, the C compiler says {cv}");
        }
        assert_eq!(r.len(), c.len(), "the Rust and C tables have different lengths");
        // What this target's layout is, for the log (88/68 bytes for v4l2_buffer on 64/32-bit).
        eprintln!("v4l2_buffer is {} bytes, v4l2_format {} bytes", size_of::<v4l2_buffer>(), size_of::<v4l2_format>());
    }
}
