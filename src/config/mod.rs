//! Configuration: one TOML file, read once at start-up into typed, validated values.
//!
//! Why so strict: a sensor left on a gate for months must not run with a typo silently ignored. Unknown keys
//! are errors (`deny_unknown_fields`), values are checked while they are read (a score outside 0..1, an
//! unsupported baud rate, a camera name that would break the serial sentence), and every error names the
//! file, the line and the field. Relative paths are taken relative to the config file. Every field has a
//! default, so an empty file (or no file: the built-in default) is a working configuration: the shipped
//! FastestDet model (fp32, lean graph) on the shipped clip, alerts as sentences on stdout, GPIO on a logging pin.

// Input reaches this code (files, drivers, the wire): no panic path. Arithmetic is checked, saturating
// or provably bounded (each `allow` says why), and indexing goes through `get`.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::capture::v4l2::CameraFormat;

mod rules;
pub use rules::*;

/// A configuration error that points at the file, line and field.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}:{column}: {field}: {message}")]
pub struct ConfigError {
    pub file: String,
    /// 1-based; 0 when the error is not tied to a place in the file.
    pub line: usize,
    pub column: usize,
    /// Dotted path of the field, e.g. `serial.baud`.
    pub field: String,
    pub message: String,
}

/// Score threshold in 0..=1.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "f64")]
pub struct Score(pub f32);
impl TryFrom<f64> for Score {
    type Error = String;
    fn try_from(v: f64) -> Result<Self, String> {
        if (0.0..=1.0).contains(&v) {
            Ok(Score(v as f32))
        } else {
            Err(format!("{v} is not a score between 0 and 1"))
        }
    }
}

/// A camera name: it goes into serial sentences, so only letters, digits, `-`, `_` and `.`, 1..=32 chars.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Name(pub String);
impl TryFrom<String> for Name {
    type Error = String;
    fn try_from(v: String) -> Result<Self, String> {
        let ok = !v.is_empty() && v.len() <= 32 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if ok {
            Ok(Name(v))
        } else {
            Err(format!("{v:?} is not a valid name (1-32 characters of A-Z a-z 0-9 - _ .)"))
        }
    }
}

/// Serial baud rates termios supports.
pub const BAUD_RATES: [u32; 12] =
    [1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600, 1_000_000];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u32")]
pub struct Baud(pub u32);
impl TryFrom<u32> for Baud {
    type Error = String;
    fn try_from(v: u32) -> Result<Self, String> {
        if BAUD_RATES.contains(&v) {
            Ok(Baud(v))
        } else {
            Err(format!("{v} is not a supported baud rate (one of {BAUD_RATES:?})"))
        }
    }
}

/// Ring size: 2..=16 slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u32")]
pub struct Slots(pub usize);
impl TryFrom<u32> for Slots {
    type Error = String;
    fn try_from(v: u32) -> Result<Self, String> {
        if (2..=crate::ring::MAX_SLOTS as u32).contains(&v) {
            Ok(Slots(v as usize))
        } else {
            Err(format!("{v} slots: the ring needs 2 to {} slots", crate::ring::MAX_SLOTS))
        }
    }
}

/// Slowest frame rate lookout takes (frames per second): one frame every 10 s. Slower "cameras" are
/// time-lapse devices, and a rate near zero would make every wait between frames practically endless.
pub const MIN_FPS: f64 = 0.1;
/// Fastest frame rate lookout takes (frames per second).
pub const MAX_FPS: f64 = 1000.0;

/// Frames per second, [`MIN_FPS`]..=[`MAX_FPS`] (NaN and infinities are refused).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "f64")]
pub struct Fps(pub f64);
impl TryFrom<f64> for Fps {
    type Error = String;
    fn try_from(v: f64) -> Result<Self, String> {
        if (MIN_FPS..=MAX_FPS).contains(&v) {
            Ok(Fps(v))
        } else {
            Err(format!("{v} is not a frame rate ({MIN_FPS} <= fps <= {MAX_FPS})"))
        }
    }
}

/// Longest alarm pulse (milliseconds). A stop switches the line off at once whatever the pulse.
pub const MAX_PULSE_MS: u64 = 60_000;
/// Longest stall timeout (milliseconds): below the systemd unit's `WatchdogSec=15s`, so a stalled
/// camera is declared lost (and the watchdog fed while it is retried) before systemd gives up on us.
pub const MAX_STALL_TIMEOUT_MS: u64 = 10_000;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub camera: CameraConfig,
    pub source: SourceConfig,
    pub model: ModelConfig,
    pub ring: RingConfig,
    pub inference: InferenceConfig,
    pub gate: GateConfig,
    /// The older single rule table, read as one implicit rule named `default` (see [`RulesConfig`]).
    pub rules: Option<RulesConfig>,
    /// Named rules (`[[rule]]`). With neither, the implicit `default` rule of an empty `[rules]`.
    pub rule: Vec<RuleConfig>,
    pub track: TrackConfig,
    pub serial: SerialConfig,
    pub gpio: GpioConfig,
    pub heartbeat: HeartbeatConfig,
    pub journal: JournalConfig,
    /// Alerts to an MQTT broker too (none without this table).
    pub mqtt: Option<MqttConfig>,
    /// Where this config came from (file name and text), for errors found after parsing.
    #[serde(skip)]
    origin: Option<(String, String)>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CameraConfig {
    /// Name reported in every alert. Default `cam0`.
    pub name: Name,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// The clip built into the binary (the shipped bikes clip, MJPEG, 640x272, 25 fps).
    Builtin,
    /// An MJPEG stream file (`path`), at `fps`.
    Mjpeg,
    /// A Y4M file (`path`); its header gives size and rate.
    Y4m,
    /// A moving test pattern, `width` x `height` at `fps`, `frames` long (endless if unset).
    Synthetic,
    /// A V4L2 camera (`device`), asked for `width` x `height` at `fps` in `format`.
    V4l2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pace {
    /// Deliver frames at the clip's frame rate, like a camera; inference that falls behind drops frames.
    Realtime,
    /// As fast as inference takes them; nothing is dropped (file analysis, tests).
    Fast,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// `builtin` (default), `v4l2`, `mjpeg`, `y4m` or `synthetic`.
    pub kind: SourceKind,
    /// V4L2 device: `/dev/video0` or a stable `/dev/v4l/by-id/...` link.
    pub device: Option<PathBuf>,
    /// V4L2 pixel format: `auto` (default: the cheapest to convert that reaches `fps`), `yuyv`, `mjpeg`,
    /// `nv12`, `grey`.
    pub format: CameraFormat,
    /// A camera that delivers no frame for this long, in milliseconds, is reported lost. Default 2000.
    pub stall_timeout_ms: u64,
    /// A lost camera is reopened after 250 ms, then at doubling intervals up to this many milliseconds.
    /// Default 10000.
    pub retry_max_ms: u64,
    /// File to read (`mjpeg`, `y4m`); relative to the config file.
    pub path: Option<PathBuf>,
    /// Frame rate in frames/s: asked of a camera; the rate of `mjpeg` and `synthetic` (files without a
    /// rate). Default 25.
    pub fps: Fps,
    /// `realtime` or `fast`. Default `fast` for files (every frame analysed), `realtime` otherwise
    /// (cameras are always realtime).
    pub pace: Option<Pace>,
    /// Start the clip again at its end instead of stopping. Default false.
    #[serde(rename = "loop")]
    pub looping: bool,
    /// Camera or synthetic frame width and height in pixels. Default 640 x 480.
    pub width: u32,
    pub height: u32,
    /// Stop after this many frames (any source; `lookout run --frames N` sets it). Unset: until the
    /// file ends; endless for a camera or the synthetic pattern.
    pub frames: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Model manifest (`models/<name>.toml`); unset = the built-in FastestDet (models/fastestdet-lean-fp32.toml).
    pub manifest: Option<PathBuf>,
    /// Override of the manifest's decoder score threshold (0..1).
    pub score_threshold: Option<Score>,
    /// Override of the manifest's NMS IoU threshold (0..1).
    pub nms_iou: Option<Score>,
}

/// Most inference engines (threads) a pipeline runs.
pub const MAX_ENGINES: usize = 8;

/// `[inference] engines`: `"auto"` (one per core, at most the ring's slots - 1) or a count 1..=8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "toml::Value")]
pub enum Engines {
    #[default]
    Auto,
    Count(usize),
}
impl TryFrom<toml::Value> for Engines {
    type Error = String;
    fn try_from(v: toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::String(s) if s == "auto" => Ok(Engines::Auto),
            toml::Value::Integer(n) if (1..=MAX_ENGINES as i64).contains(&n) => Ok(Engines::Count(n as usize)),
            other => Err(format!("{other} is not \"auto\" or an engine count 1..={MAX_ENGINES}")),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InferenceConfig {
    /// Inference engines, each on a thread of its own, frames dealt to them in turn and their results
    /// put back in frame order (decisions are the same as with one). Default `"auto"`.
    pub engines: Engines,
    /// Whose depthwise convolution, few-channel dense convolution and max pool kernels run: `"auto"`
    /// (lookout's where they were measured faster: x86-64), `"lookout"` or `"tract"`. See
    /// `crate::infer::kernels`.
    pub kernels: crate::infer::Kernels,
}

/// `[gate]`: motion gating (see `crate::gate`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GateConfig {
    /// Skip inference on frames where nothing moved. Default true.
    pub enabled: bool,
    /// How much a cell's mean luma (0..255) must differ from the background to count as moved. Default 10.
    pub threshold: u8,
    /// How many moved cells (16 x 16 source pixels each) make motion. Default 2.
    pub min_cells: u32,
    /// Longest run of skipped frames, in milliseconds of stream time: then a frame is analysed anyway, so
    /// a still object is re-checked and its track kept alive. 100..=10000. Default 1000.
    pub max_skip_ms: u64,
}
impl Default for GateConfig {
    fn default() -> Self {
        GateConfig { enabled: true, threshold: 10, min_cells: 2, max_skip_ms: 1000 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RingConfig {
    /// Frame slots allocated at start-up (2..16). Default 4.
    pub slots: Slots,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SerialConfig {
    /// Serial device for alert sentences (e.g. `/dev/ttyAMA0`); unset = stdout.
    pub port: Option<PathBuf>,
    /// Baud rate, 8N1, raw. Default 115200.
    pub baud: Baud,
    /// Keep every alert until the controller sends `$LKCMD,ACK,<seq>`, re-sending it (same seq, same
    /// bytes) every `resend_ms`. Default false.
    pub ack: bool,
    /// With `ack`: milliseconds between re-sends of an unacknowledged alert, 100..60000. Default 2000.
    pub resend_ms: u64,
    /// With `ack`: sends of one alert in all before it is given up (logged, counted), 1..1000. Default 30.
    pub max_sends: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GpioConfig {
    /// GPIO chip: a device (`/dev/gpiochip0`) or a chip label as `gpiodetect` shows it (`pinctrl-rp1`),
    /// which survives kernels renumbering chips; unset = a logging pin.
    pub chip: Option<PathBuf>,
    /// Line offset on the chip. Required with `chip`.
    pub line: Option<u32>,
    /// Drive the line low for "on" (most relay boards). Default false.
    pub active_low: bool,
    /// How long the line stays on after an alert, in milliseconds. Default 500.
    pub pulse_ms: u64,
    /// A second line on the same chip, on while the camera is lost (a fault or tamper relay). Follows
    /// `active_low` too.
    pub camera_lost_line: Option<u32>,
    /// More outputs, each bound to rules or to `camera_lost`, with a mode (`[[gpio.output]]`).
    pub output: Vec<GpioOutputConfig>,
}

/// How a GPIO output follows its alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpioMode {
    /// On for `pulse_ms` at each alert.
    Pulse,
    /// On at an alert until every alert it is bound to has cleared, or `$LKCMD,RESET`.
    Latched,
    /// On while an alert it is bound to stands (`$LKALR` to `$LKCLR`); for `event`, while it lasts.
    Follow,
}

/// What else an output can follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpioEvent {
    CameraLost,
}

/// One `[[gpio.output]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioOutputConfig {
    /// Line offset on the chip.
    pub line: u32,
    /// Default: `[gpio] chip`.
    #[serde(default)]
    pub chip: Option<PathBuf>,
    /// Default: `[gpio] active_low`.
    #[serde(default)]
    pub active_low: Option<bool>,
    /// Default `pulse` (`follow` for an event).
    #[serde(default)]
    pub mode: Option<GpioMode>,
    /// For `pulse`: default `[gpio] pulse_ms`.
    #[serde(default)]
    pub pulse_ms: Option<u64>,
    /// Alerts of these rules (by name); default: every rule.
    #[serde(default)]
    pub rules: Option<Vec<String>>,
    /// Instead of rules: `camera_lost`.
    #[serde(default)]
    pub event: Option<GpioEvent>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// The journal file: sequence numbers continue across restarts, unacknowledged alerts are sent
    /// again after one. Default: `journal` in the systemd StateDirectory (`$STATE_DIRECTORY`, i.e.
    /// /var/lib/lookout under the shipped unit); none when that is not set (a run from a shell).
    pub path: Option<PathBuf>,
    /// Its size in records of 320 bytes (alerts and ACKs; a ring), 64..1000000. Default 4096 (1.3 MB).
    pub records: u64,
    /// No journal at all, whatever the file or the environment says (`replay`).
    #[serde(skip)]
    pub off: bool,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig { path: None, records: 4096, off: false }
    }
}

impl JournalConfig {
    /// The file in force: the configured one, or the systemd StateDirectory's.
    pub fn effective_path(&self) -> Option<PathBuf> {
        if self.off {
            return None;
        }
        self.path.clone().or_else(|| {
            let dir = std::env::var_os("STATE_DIRECTORY")?;
            // systemd may list several directories, separated by ':'; ours is the first.
            let first = dir.to_string_lossy().split(':').next().map(PathBuf::from)?;
            Some(first.join("journal"))
        })
    }
}

/// `[mqtt]`: the broker, and how we appear on it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Default 127.0.0.1 (a broker on the board itself).
    pub host: String,
    /// Default 1883.
    pub port: u16,
    /// Topics are `<topic_prefix>/<camera>/...`. Default `lookout`.
    pub topic_prefix: String,
    /// Default `lookout-<camera>`.
    pub client_id: Option<String>,
    pub username: Option<String>,
    /// A file whose first line is the password (kept out of the config, which is world-readable).
    pub password_file: Option<PathBuf>,
    /// PEM CA certificate(s) of the broker: TLS with this set.
    pub tls_ca: Option<PathBuf>,
    /// Seconds, 5..3600. Default 30.
    pub keep_alive_s: u64,
    /// Messages kept while the broker is away, 16..100000. Default 1000.
    pub outbox: usize,
    /// Home Assistant MQTT discovery: a binary sensor per rule. Default off.
    pub discovery: bool,
    /// Default `homeassistant`.
    pub discovery_prefix: String,
    /// The password and CA file contents, read while the config is checked.
    #[serde(skip)]
    pub password: Option<String>,
    #[serde(skip)]
    pub ca_pem: Option<Vec<u8>>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            host: "127.0.0.1".into(),
            port: 1883,
            topic_prefix: "lookout".into(),
            client_id: None,
            username: None,
            password_file: None,
            tls_ca: None,
            keep_alive_s: 30,
            outbox: 1000,
            discovery: false,
            discovery_prefix: "homeassistant".into(),
            password: None,
            ca_pem: None,
        }
    }
}

/// A topic prefix: levels of letters, digits, `-`, `_` and `.` joined by `/` (no wildcards, no empty
/// level, no leading `$`), at most 128 characters.
fn topic_prefix_problem(p: &str) -> Option<String> {
    if p.is_empty() || p.len() > 128 {
        return Some("must be 1..128 characters".into());
    }
    let level_ok = |l: &str| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !p.split('/').all(level_ok) {
        return Some(format!("{p:?} is not a topic prefix (levels of A-Z a-z 0-9 - _ . joined by /)"));
    }
    None
}

impl MqttConfig {
    /// Checks the values and reads the password and CA files; `Err((key, message))`.
    fn check(&mut self, base: &Path) -> Result<(), (&'static str, String)> {
        let host_ok = |h: &str| {
            !h.is_empty() && h.len() <= 253 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:_".contains(&b))
        };
        if !host_ok(&self.host) {
            return Err(("host", format!("{:?} is not a host name or address", self.host)));
        }
        if self.port == 0 {
            return Err(("port", "must be 1..65535".into()));
        }
        if let Some(m) = topic_prefix_problem(&self.topic_prefix) {
            return Err(("topic_prefix", m));
        }
        if let Some(m) = topic_prefix_problem(&self.discovery_prefix) {
            return Err(("discovery_prefix", m));
        }
        if let Some(id) = &self.client_id {
            if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
                return Err(("client_id", format!("{id:?} is not a client id (1-64 of A-Z a-z 0-9 - _ .)")));
            }
        }
        if let Some(u) = &self.username {
            if u.is_empty() || u.len() > 256 || u.chars().any(char::is_control) {
                return Err(("username", "must be 1..256 characters, none of them control characters".into()));
            }
        }
        if self.password_file.is_some() && self.username.is_none() {
            return Err(("password_file", "a password goes with a `username`".into()));
        }
        if !(5..=3600).contains(&self.keep_alive_s) {
            return Err(("keep_alive_s", "must be 5..3600".into()));
        }
        if !(16..=100_000).contains(&self.outbox) {
            return Err(("outbox", "must be 16..100000".into()));
        }
        if let Some(p) = &mut self.password_file {
            if p.is_relative() {
                *p = base.join(&*p);
            }
            let text = std::fs::read_to_string(&*p).map_err(|e| ("password_file", format!("{}: {e}", p.display())))?;
            let first = text.lines().next().unwrap_or("").to_string();
            if first.is_empty() || first.len() > 1024 || first.chars().any(char::is_control) {
                return Err((
                    "password_file",
                    format!("{}: the first line must be the password (1..1024 characters)", p.display()),
                ));
            }
            self.password = Some(first);
        }
        if let Some(p) = &mut self.tls_ca {
            if p.is_relative() {
                *p = base.join(&*p);
            }
            let pem = std::fs::read(&*p).map_err(|e| ("tls_ca", format!("{}: {e}", p.display())))?;
            #[cfg(feature = "mqtt")]
            crate::output::mqtt::parse_ca(&pem).map_err(|e| ("tls_ca", format!("{}: {e}", p.display())))?;
            self.ca_pem = Some(pem);
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeartbeatConfig {
    /// Milliseconds between `$LKHBT` sentences; 0 turns them off. Default 10000.
    pub interval_ms: u64,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig { interval_ms: 10_000 }
    }
}

impl Default for CameraConfig {
    fn default() -> Self {
        CameraConfig { name: Name("cam0".into()) }
    }
}
impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            kind: SourceKind::Builtin,
            device: None,
            format: CameraFormat::Auto,
            stall_timeout_ms: 2000,
            retry_max_ms: 10_000,
            path: None,
            fps: Fps(25.0),
            pace: None,
            looping: false,
            width: 640,
            height: 480,
            frames: None,
        }
    }
}
impl Default for RingConfig {
    fn default() -> Self {
        RingConfig { slots: Slots(4) }
    }
}
impl Default for SerialConfig {
    fn default() -> Self {
        SerialConfig { port: None, baud: Baud(115_200), ack: false, resend_ms: 2000, max_sends: 30 }
    }
}
impl Default for GpioConfig {
    fn default() -> Self {
        GpioConfig {
            chip: None,
            line: None,
            active_low: false,
            pulse_ms: 500,
            camera_lost_line: None,
            output: Vec::new(),
        }
    }
}

/// 1-based line and column of byte offset `at` in `text`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count().saturating_add(1);
    let line_start = before.rfind('\n').map_or(0, |i| i.saturating_add(1));
    let col = before.len().saturating_sub(line_start).saturating_add(1);
    (line, col)
}

/// Finds the line of `key` inside `[table]` (or at top level when `table` is empty); 0 if absent.
/// Arrays of tables count from 0: the second `[[rule]]` is `rule[1]`, its `[rule.class.x]` is
/// `rule[1].class.x`.
fn find_key_line(text: &str, table: &str, key: &str) -> usize {
    let mut current = String::new();
    for (n, raw) in text.lines().enumerate() {
        let l = raw.trim();
        if l.starts_with('[') {
            current = header_path(text, n);
            continue;
        }
        if current == table {
            if let Some((k, _)) = l.split_once('=') {
                if k.trim() == key {
                    return n.saturating_add(1);
                }
            }
        }
    }
    0
}

/// The table path of the header on line `n` (0-based) of `text`: `rule[2]`, `rules.class.person`.
fn header_path(text: &str, n: usize) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut path = String::new();
    // A line of a multi-line array (`[0.0, 1.0]`) is not a header: a table name has no `,` `[` `]`.
    let name_ok = |h: &&str| !h.contains([',', '[', ']']);
    for raw in text.lines().take(n.saturating_add(1)) {
        let l = raw.split('#').next().unwrap_or("").trim();
        if let Some(name) = l.strip_prefix("[[").and_then(|h| h.strip_suffix("]]")).filter(name_ok) {
            let name = name.trim().to_string();
            let c = counts.entry(name.clone()).or_insert(0);
            path = format!("{name}[{c}]");
            *c = c.saturating_add(1);
        } else if let Some(name) = l.strip_prefix('[').and_then(|h| h.strip_suffix(']')).filter(name_ok) {
            let name = name.trim();
            // `[rule.class.x]` inside the last `[[rule]]`.
            path = match name.split_once('.') {
                Some((head, rest)) if counts.contains_key(head) => {
                    format!("{head}[{}].{rest}", counts.get(head).copied().unwrap_or(1).saturating_sub(1))
                }
                _ => name.to_string(),
            };
        }
    }
    path
}

/// An error about `key` in `[table]` of `text`, pointing at the key's line, or at the table's header
/// when the key is not written in the file.
fn error_in(file: &str, text: &str, table: &str, key: &str, message: String) -> ConfigError {
    let mut line = find_key_line(text, table, key);
    if line == 0 {
        line = text
            .lines()
            .enumerate()
            .position(|(n, l)| l.trim().starts_with('[') && header_path(text, n) == table)
            .map_or(0, |n| n.saturating_add(1));
    }
    ConfigError { file: file.into(), line, column: usize::from(line > 0), field: format!("{table}.{key}"), message }
}

impl Config {
    /// Parses `text` (read from `file`, used in messages) and validates it. Relative paths are resolved
    /// against `base`.
    pub fn parse(text: &str, file: &str, base: &Path) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            ConfigError { file: file.into(), line, column, field: "(syntax)".into(), message: e.message().into() }
        })?;
        let mut cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            let (line, column) = inner.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            ConfigError { file: file.into(), line, column, field, message: inner.message().into() }
        })?;
        cfg.origin = Some((file.to_string(), text.to_string()));
        let err = |table: &str, key: &str, message: String| error_in(file, text, table, key, message);
        match cfg.source.kind {
            SourceKind::Mjpeg | SourceKind::Y4m => match &cfg.source.path {
                None => return Err(err("source", "path", "a file source needs `path`".into())),
                Some(p) if p.is_relative() => cfg.source.path = Some(base.join(p)),
                Some(_) => {}
            },
            SourceKind::Synthetic | SourceKind::V4l2 => {
                if !(16..=8192).contains(&cfg.source.width) || !(16..=8192).contains(&cfg.source.height) {
                    return Err(err("source", "width", "frame size must be 16..8192 pixels each way".into()));
                }
                if cfg.source.kind == SourceKind::V4l2 {
                    match &cfg.source.device {
                        None => return Err(err("source", "device", "a v4l2 source needs `device`".into())),
                        Some(d) if d.is_relative() => {
                            return Err(err(
                                "source",
                                "device",
                                format!("{} is not an absolute device path", d.display()),
                            ))
                        }
                        Some(_) => {}
                    }
                    if !(100..=MAX_STALL_TIMEOUT_MS).contains(&cfg.source.stall_timeout_ms) {
                        return Err(err(
                            "source",
                            "stall_timeout_ms",
                            format!("must be 100..{MAX_STALL_TIMEOUT_MS} (below the service's 15 s watchdog)"),
                        ));
                    }
                    if !(250..=600_000).contains(&cfg.source.retry_max_ms) {
                        return Err(err("source", "retry_max_ms", "must be 250..600000 (10 minutes)".into()));
                    }
                }
            }
            SourceKind::Builtin => {}
        }
        if let Some(p) = &cfg.model.manifest {
            if p.is_relative() {
                cfg.model.manifest = Some(base.join(p));
            }
        }
        if let Some(p) = &cfg.serial.port {
            if p.is_relative() {
                return Err(err("serial", "port", format!("{} is not an absolute device path", p.display())));
            }
        }
        if let Some(p) = &cfg.journal.path {
            if p.is_relative() {
                cfg.journal.path = Some(base.join(p));
            }
        }
        if cfg.gate.threshold == 0 {
            return Err(err("gate", "threshold", "must be 1..255 (0 would see motion in every frame)".into()));
        }
        if !(1..=10_000).contains(&cfg.gate.min_cells) {
            return Err(err("gate", "min_cells", "must be 1..10000".into()));
        }
        if !(100..=10_000).contains(&cfg.gate.max_skip_ms) {
            return Err(err("gate", "max_skip_ms", "must be 100..10000".into()));
        }
        if let Engines::Count(n) = cfg.inference.engines {
            if n >= cfg.ring.slots.0 {
                return Err(err(
                    "inference",
                    "engines",
                    format!(
                        "{n} engines need a ring of at least {} slots (ring.slots is {})",
                        n.saturating_add(1),
                        cfg.ring.slots.0
                    ),
                ));
            }
        }
        if !(64..=1_000_000).contains(&cfg.journal.records) {
            return Err(err("journal", "records", "must be 64..1000000".into()));
        }
        if !(100..=60_000).contains(&cfg.serial.resend_ms) {
            return Err(err("serial", "resend_ms", "must be 100..60000".into()));
        }
        if !(1..=1000).contains(&cfg.serial.max_sends) {
            return Err(err("serial", "max_sends", "must be 1..1000".into()));
        }
        if cfg.gpio.line.is_some() && cfg.gpio.chip.is_none() {
            return Err(err("gpio", "line", "`chip` and `line` go together: set both or neither".into()));
        }
        if cfg.gpio.chip.is_some() && cfg.gpio.line.is_none() && cfg.gpio.output.is_empty() {
            return Err(err("gpio", "line", "`chip` and `line` go together (or add [[gpio.output]] lines)".into()));
        }
        if let Some(l) = cfg.gpio.camera_lost_line {
            if cfg.gpio.chip.is_none() {
                return Err(err("gpio", "camera_lost_line", "needs `chip` (and `line` for alerts)".into()));
            }
            if Some(l) == cfg.gpio.line {
                return Err(err("gpio", "camera_lost_line", format!("line {l} is already the alert line")));
            }
        }
        let rule_names: Vec<String> = cfg.rule_configs().iter().map(|r| r.name.0.clone()).collect();
        let mut used: Vec<(PathBuf, u32)> = Vec::new();
        if let Some(chip) = &cfg.gpio.chip {
            used.extend(cfg.gpio.line.iter().chain(&cfg.gpio.camera_lost_line).map(|l| (chip.clone(), *l)));
        }
        for (i, o) in cfg.gpio.output.iter().enumerate() {
            let table = format!("gpio.output[{i}]");
            let Some(chip) = o.chip.clone().or_else(|| cfg.gpio.chip.clone()) else {
                return Err(err(&table, "chip", "no chip: set `chip` here or in [gpio]".into()));
            };
            if used.contains(&(chip.clone(), o.line)) {
                return Err(err(&table, "line", format!("line {} of {} is already an output", o.line, chip.display())));
            }
            used.push((chip, o.line));
            if let Some(names) = &o.rules {
                if o.event.is_some() {
                    return Err(err(&table, "event", "an output follows rules or an event, not both".into()));
                }
                if names.is_empty() {
                    return Err(err(&table, "rules", "is empty: leave it out for every rule".into()));
                }
                if let Some(n) = names.iter().find(|n| !rule_names.contains(n)) {
                    return Err(err(
                        &table,
                        "rules",
                        format!("{n:?} is not a rule (rules: {})", rule_names.join(", ")),
                    ));
                }
            }
            if o.event.is_some() && o.mode.is_some_and(|m| m != GpioMode::Follow) {
                return Err(err(&table, "mode", "an event output follows the event (mode = \"follow\")".into()));
            }
            if o.pulse_ms.is_some_and(|p| !(10..=MAX_PULSE_MS).contains(&p)) {
                return Err(err(&table, "pulse_ms", format!("must be 10..{MAX_PULSE_MS} (one minute)")));
            }
            if o.pulse_ms.is_some() && o.mode.is_some_and(|m| m != GpioMode::Pulse) {
                return Err(err(&table, "pulse_ms", "only a pulse has a length".into()));
            }
        }
        if cfg.heartbeat.interval_ms != 0 && cfg.heartbeat.interval_ms < 100 {
            return Err(err("heartbeat", "interval_ms", "must be 0 (off) or at least 100".into()));
        }
        if !(10..=MAX_PULSE_MS).contains(&cfg.gpio.pulse_ms) {
            return Err(err("gpio", "pulse_ms", format!("must be 10..{MAX_PULSE_MS} (one minute)")));
        }
        for (i, r) in cfg.rule.iter_mut().enumerate() {
            r.table = format!("rule[{i}]");
        }
        rules::validate(cfg.rules.as_ref(), &cfg.rule, &cfg.track).map_err(|(table, key, m)| err(&table, key, m))?;
        if let Some(m) = &mut cfg.mqtt {
            if cfg!(not(feature = "mqtt")) {
                return Err(err("mqtt", "host", "this build has no MQTT (built without the `mqtt` feature)".into()));
            }
            m.check(base).map_err(|(key, message)| err("mqtt", key, message))?;
        }
        Ok(cfg)
    }

    /// An error about `key` in `[table]`, found after parsing (e.g. a label the model does not have),
    /// pointing at the key's line, or the table's when the key is not written in the file.
    pub fn error_at(&self, table: &str, key: &str, message: String) -> ConfigError {
        match &self.origin {
            Some((file, text)) => error_in(file, text, table, key, message),
            None => error_in("(built-in default)", "", table, key, message),
        }
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            field: "(file)".into(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, &path.display().to_string(), base)
    }

    /// The rules in force: the `[[rule]]` entries, or the one implicit rule of `[rules]` (or of its
    /// defaults when the file has neither).
    pub fn rule_configs(&self) -> Vec<RuleConfig> {
        if self.rule.is_empty() {
            vec![RuleConfig::from_legacy(&self.rules.clone().unwrap_or_default())]
        } else {
            self.rule.clone()
        }
    }

    /// Effective pacing: files default to `fast`, the synthetic source to `realtime`.
    /// How many inference engines to run: `[inference] engines`, `"auto"` being one per core, at most the
    /// ring's slots - 1 (each engine holds a frame's input while the next frame is prepared).
    pub fn engines(&self) -> usize {
        let most = self.ring.slots.0.saturating_sub(1).clamp(1, MAX_ENGINES);
        match self.inference.engines {
            Engines::Count(n) => n.clamp(1, most),
            Engines::Auto => std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, most),
        }
    }

    pub fn pace(&self) -> Pace {
        match self.source.kind {
            SourceKind::V4l2 => Pace::Realtime,
            SourceKind::Synthetic => self.source.pace.unwrap_or(Pace::Realtime),
            _ => self.source.pace.unwrap_or(Pace::Fast),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)] // tests may panic
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Config, ConfigError> {
        Config::parse(t, "test.toml", Path::new("/etc/lookout"))
    }

    #[test]
    fn empty_file_is_the_builtin_default() {
        let c = parse("").unwrap();
        assert_eq!(c.source.kind, SourceKind::Builtin);
        assert_eq!(c.ring.slots, Slots(4));
        assert_eq!(c.serial.baud, Baud(115_200));
        assert_eq!(c.pace(), Pace::Fast);
    }

    #[test]
    fn unknown_field_names_file_line_and_field() {
        let e = parse("[camera]\nname = \"gate\"\n\n[serial]\nbaud = 9600\nparity = \"even\"\n").unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("test.toml", 6), "{e}");
        assert!(e.message.contains("parity"), "{e}");
        assert!(e.field.starts_with("serial"), "{e}");
    }

    #[test]
    fn bad_value_names_the_field() {
        let e = parse("[serial]\nbaud = 12345\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (2, "serial.baud"), "{e}");
        assert!(e.message.contains("baud"), "{e}");
        let e = parse("[rules]\nmin_score = 1.5\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (2, "rules.min_score"), "{e}");
        let e = parse("[camera]\nname = \"gate,1\"\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (2, "camera.name"), "{e}");
    }

    #[test]
    fn cross_field_errors_point_at_the_table() {
        let e = parse("[source]\nkind = \"mjpeg\"\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (1, "source.path"), "{e}");
        let e = parse("[gpio]\nchip = \"/dev/gpiochip0\"\n").unwrap_err();
        assert_eq!(e.field, "gpio.line", "{e}");
        let e = parse("[gpio]\nchip = \"/dev/gpiochip0\"\nline = 2\ncamera_lost_line = 2\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (4, "gpio.camera_lost_line"), "{e}");
        let e = parse("[heartbeat]\ninterval_ms = 5\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (2, "heartbeat.interval_ms"), "{e}");
    }

    #[test]
    fn camera_needs_an_absolute_device() {
        let c = parse("[source]\nkind = \"v4l2\"\ndevice = \"/dev/video0\"\nformat = \"mjpeg\"\n").unwrap();
        assert_eq!((c.source.format, c.pace()), (CameraFormat::Mjpeg, Pace::Realtime));
        let e = parse("[source]\nkind = \"v4l2\"\ndevice = \"video0\"\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (3, "source.device"), "{e}");
        let e = parse("[source]\nkind = \"v4l2\"\nformat = \"h264\"\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (3, "source.format"), "{e}");
    }

    #[test]
    fn errors_in_arrays_of_tables_point_at_the_right_entry() {
        let text = "[[rule]]\nname = \"a\"\nzone = [\n  [0.0, 0.0],\n  [1.0, 0.0],\n  [1.0, 1.0]\n]\n[[rule]]\nname = \"b\"\n[[rule]]\nname = \"b\"\n";
        let e = parse(text).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (11, "rule[2].name"), "{e}");
        // A key after a multi-line array is found in its table (the array's lines are not headers).
        let c = parse(
            "[[rule]]\nname = \"a\"\nzone = [\n  [0.0, 0.0],\n  [1.0, 0.0],\n  [1.0, 1.0]\n]\nclasses = [\"x\"]\n",
        )
        .unwrap();
        let e = c.error_at("rule[0]", "classes", "no".into());
        assert_eq!(e.line, 8, "{e}");
    }

    #[test]
    fn gpio_outputs_are_checked() {
        let ok = parse("[gpio]\nchip = \"/dev/gpiochip0\"\nline = 17\n[[rule]]\nname = \"gate\"\n[[gpio.output]]\nline = 22\nmode = \"latched\"\nrules = [\"gate\"]\n[[gpio.output]]\nline = 23\nevent = \"camera_lost\"\n").unwrap();
        assert_eq!(ok.gpio.output.len(), 2);
        let bad = |t: &str, field: &str, what: &str| {
            let e = parse(t).unwrap_err();
            assert!(e.field == field && e.message.contains(what), "{e}");
        };
        bad("[[gpio.output]]\nline = 3\n", "gpio.output[0].chip", "no chip");
        bad(
            "[gpio]\nchip = \"/dev/gpiochip0\"\nline = 3\n[[gpio.output]]\nline = 3\n",
            "gpio.output[0].line",
            "already",
        );
        bad(
            "[gpio]\nchip = \"c\"\n[[gpio.output]]\nline = 3\nrules = [\"nope\"]\n",
            "gpio.output[0].rules",
            "not a rule",
        );
        bad(
            "[gpio]\nchip = \"c\"\n[[gpio.output]]\nline = 3\nevent = \"camera_lost\"\nmode = \"pulse\"\n",
            "gpio.output[0].mode",
            "follows",
        );
        bad("[gpio]\nchip = \"c\"\n[[gpio.output]]\nline = 3\npulse_ms = 5\n", "gpio.output[0].pulse_ms", "10..");
        bad(
            "[gpio]\nchip = \"c\"\n[[gpio.output]]\nline = 3\nmode = \"follow\"\npulse_ms = 50\n",
            "gpio.output[0].pulse_ms",
            "only a pulse",
        );
        let e = parse("[gpio]\nchip = \"c\"\n[[gpio.output]]\nline = 3\nmode = \"blink\"\n").unwrap_err();
        assert!(e.field.starts_with("gpio.output"), "{e}");
    }

    #[test]
    fn syntax_error_has_a_line() {
        let e = parse("[camera]\nname = \n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let c = parse("[source]\nkind = \"mjpeg\"\npath = \"clip.mjpeg\"\n[model]\nmanifest = \"m.toml\"\n").unwrap();
        assert_eq!(c.source.path.unwrap(), Path::new("/etc/lookout/clip.mjpeg"));
        assert_eq!(c.model.manifest.unwrap(), Path::new("/etc/lookout/m.toml"));
    }
}
