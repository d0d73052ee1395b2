//! lookout: an edge camera sensor. Frames in, alerts out, in fixed memory.
//!
//! # Layout
//!
//! ```text
//!  capture (FrameSource: v4l2, mjpeg, y4m, synthetic)    capture thread
//!     │ writes into a slot       (a camera is supervised: camera_lost / camera_restored ─▶ output)
//!     ▼
//!  ring (fixed slots, heapless index queues, latest frame wins)
//!     │ next ready slot
//!     ▼                                                   dispatcher (the caller's thread)
//!  gate (motion: skip?) ─▶ preprocess (convert + two-pass resize + normalize) into a job's input
//!     │ the job to whichever engine is free                engine threads (N, one shared plan)
//!     ▼
//!  infer (tract) ─▶ detect (decode + NMS) ─▶ back to the dispatcher, put in frame order
//!                                                                             │
//!                                                                             ▼
//!                                                  track (IoU + constant velocity, stable ids)
//!                                                                             │
//!                                                                             ▼
//!                               rules (class, score, area, zone/line, N-of-M, dwell, clear, schedule)
//!                                                                             │ RuleAlert, RuleClear
//!                                                                             ▼
//!   output: Event ─▶ GPIO thread (pulse, fault line) and output thread (serial $LKALR / $LKCLR / $LKEVT /
//!           $LKHBT, commands $LKCMD, ACK and re-send)
//! ```
//!
//! - [`frame`]: the pixel buffers slots hold. [`capture`]: the sources. [`ring`]: the slots.
//! - [`gate`]: motion gating. [`preprocess`], [`infer`] (the only module that uses tract), [`detect`]:
//!   frame to detections.
//! - [`model`]: manifests, sha256 pinning, self-test. [`config`]: the TOML file.
//! - [`track`]: the same object from frame to frame. [`rules`]: when a track becomes an alert, and why
//!   not (zones, lines, confirmation, dwell, clear, schedules). [`output`]: where alerts go.
//! - [`service`]: systemd readiness and watchdog. [`shutdown`]: SIGTERM reaching every wait.
//!   [`logging`]: log lines formatted on the stack (a thread's first line must not allocate either).
//! - [`fuzzing`]: the parsers' entry points, shared by the fuzz targets and their corpus replay.
//! - [`pipeline`]: the threads wired together (capture, the dispatcher and its engines:
//!   `pipeline::engines`). [`metrics`]: latency histograms, memory, the counting allocator and the JPEG
//!   decoder's arena. [`cli`]: the `lookout` command; [`bench`]: its measurements.

pub mod bench;
pub mod capture;
pub mod cli;
pub mod config;
pub mod detect;
pub mod frame;
pub mod fuzzing;
pub mod gate;
pub mod infer;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod output;
pub mod pipeline;
pub mod preprocess;
pub mod ring;
pub mod rules;
pub mod service;
pub mod shutdown;
pub mod track;
