//! The inference side: a dispatcher (the caller's thread) and N engines on threads of their own.
//!
//! Why this shape: inference is nearly all the work, and one inference uses one core, so a board with
//! several cores analyses more frames a second with several engines each running whole frames (two
//! engines on two cores: 1.97 times one, where tract's own multi-threading inside one run gained 7-17%).
//! The engines share one optimized plan ([`Engine::fork`]): the weights are in memory once.
//!
//! The dispatcher takes the next frame from the ring, asks the motion gate whether it is worth a run,
//! preprocesses it into a free [`Job`]'s input tensor, gives the slot back and hands the job to whichever
//! engine is free; an engine runs the model, decodes the detections into the job and sends it back. Jobs
//! come back in any order; the dispatcher decides them (track, rules, output) strictly in the order the
//! frames came, through a small re-order table, so the decisions are those of one engine. There are N + 2
//! jobs: while every engine runs, the dispatcher already has the next two frames prepared, so an engine
//! that finishes finds work waiting even when the dispatcher, sharing the cores with the engines and the
//! capture thread, was slow to get one ready (with N + 1, two engines on two cores gave 222-243 frames/s
//! on the shipped clip against 250-260 with N + 2, four `lookout bench` pairs; N + 3 gained nothing more). A frame the gate skips is a job too, never sent to an engine: in its
//! turn it is decided with the last analysed frame's detections (nothing moved, so what was there is
//! there). All jobs, their tensors and detection buffers, and both channels are allocated here, at start.
//!
//! Stopping: the dispatcher watches the stop, the source's end and an engine's panic (reported as an
//! internal error, like a panic of its own). Dropping the job channel ends the engines after the run they
//! are in.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{panic_message, Analyzer, Failpoints, HeartbeatClock, Stats};
use crate::config::Config;
use crate::detect::{Decoder, Detection};
use crate::frame::FrameMeta;
use crate::gate::Gate;
use crate::infer::{Engine, InferError, Input};
use crate::metrics::{alloc, Timings};
use crate::preprocess::Geometry;
use crate::ring::{Ring, Take};
use crate::service::Notifier;
use crate::shutdown::Shutdown;

/// One frame's way through an engine and back.
pub struct Job {
    seq: u64,
    meta: FrameMeta,
    geom: Geometry,
    input: Input,
    dets: Vec<Detection>,
    /// The gate skipped this frame: no engine saw it.
    held: bool,
    result: Result<(), InferError>,
    infer: Duration,
    decode: Duration,
}

/// The steady-state allocation window: counts at the first frame of it, and at the latest frame.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllocWindow {
    /// Frames decided inside the window (after the first).
    pub frames: u64,
    /// Allocations in the window, all and inside tract's run.
    pub all: u64,
    pub tract: u64,
}

/// Frames decided before the allocation window opens. Each engine's first run is made at start; two frames
/// in, every buffer lookout uses per frame has been filled once, and the window covers the rest, first
/// alerts and first log lines of every thread included (they must not allocate either).
const ALLOC_WARMUP: u64 = 2;

/// What the inference side reports when it ends.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub timings: Timings,
    pub allocs: Option<AllocWindow>,
    pub engines: usize,
    /// Resident memory growth while the engines were made and ran once, KiB per engine.
    pub engine_rss_kb: u64,
    /// When the first and the last frame were decided, and how many were.
    pub first_decision: Option<Instant>,
    pub last_decision: Option<Instant>,
    pub decided: u64,
}

/// The engine threads, from the dispatcher's side.
struct Pool {
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Job>,
    failure: Arc<Mutex<Option<String>>>,
}

impl Pool {
    /// Starts `n` engines forked from `engine`, each with its own copy of `decoder`. Each makes one run
    /// (tract sizes its buffers then) before this returns.
    fn start(
        engine: &Engine,
        decoder: &Decoder,
        n: usize,
        ring: &Arc<Ring>,
        cap: usize,
        faults: Failpoints,
    ) -> anyhow::Result<Pool> {
        // Both waited on once now: a channel's first wait allocates (see `alloc::sync_channel`).
        let (jobs_tx, jobs_rx) = alloc::sync_channel::<Job>(cap);
        let (done_tx, done) = alloc::sync_channel::<Job>(cap);
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let failure = Arc::new(Mutex::new(None));
        // Each engine makes its first run on its own thread (tract keeps per-thread scratch space, so a
        // first run elsewhere would leave a copy behind), and says so before it takes jobs.
        let (ready_tx, ready_rx) = sync_channel::<Result<(), String>>(n);
        for i in 0..n {
            let mut engine = engine.fork()?;
            let (decoder, jobs, done, ring, failure, ready) =
                (decoder.clone(), jobs_rx.clone(), done_tx.clone(), ring.clone(), failure.clone(), ready_tx.clone());
            std::thread::Builder::new().name(format!("engine-{i}")).spawn(move || {
                let r = catch_unwind(AssertUnwindSafe(|| {
                    alloc::prime_channel_wait();
                    let first = engine.run().map_err(|e| format!("engine {i}'s first run: {e}"));
                    // From now on it runs on the jobs' inputs: the shared one it ran on can go.
                    engine.drop_input();
                    let ok = first.is_ok();
                    let _ = ready.send(first);
                    drop(ready);
                    if ok {
                        engine_loop(&mut engine, &decoder, &jobs, &done, &ring, faults);
                    }
                }));
                if let Err(p) = r {
                    let msg = format!("engine {i} panicked: {}", panic_message(p.as_ref()));
                    *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(msg);
                    ring.wake();
                }
            })?;
        }
        drop(ready_tx);
        for r in ready_rx.iter() {
            r.map_err(|e| anyhow::anyhow!(e))?;
        }
        Ok(Pool { jobs: Some(jobs_tx), done, failure })
    }

    fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // The engines see the channel closed after the run they are in, and end.
        self.jobs = None;
    }
}

fn engine_loop(
    engine: &mut Engine,
    decoder: &Decoder,
    jobs: &Mutex<Receiver<Job>>,
    done: &SyncSender<Job>,
    ring: &Ring,
    faults: Failpoints,
) {
    loop {
        // One engine at a time waits on the queue; the others wait for the lock, which is the same.
        let job = jobs.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok(mut job) = job else { return };
        if faults.engine_panic == Some(job.seq) {
            panic!("failpoint engine-panic@{}", job.seq);
        }
        let t0 = Instant::now();
        job.result = engine.run_input(&job.input);
        let t1 = Instant::now();
        match &job.result {
            Ok(()) => decoder.decode(|i| engine.output(i), &job.geom, &mut job.dets),
            Err(_) => job.dets.clear(),
        }
        (job.infer, job.decode) = (t1.saturating_duration_since(t0), t1.elapsed());
        if done.send(job).is_err() {
            return;
        }
        ring.wake();
    }
}

/// The inference side's loop: see the module doc. Returns what it measured, or why it failed (an
/// engine that could not start or panicked).
#[allow(clippy::too_many_arguments)]
pub fn inference_loop(
    cfg: &Config,
    mut analyzer: Analyzer,
    ring: &Arc<Ring>,
    frame_size: (u32, u32),
    stats: &Stats,
    stop: &Shutdown,
    notifier: &mut Notifier,
    faults: Failpoints,
) -> Result<Report, String> {
    let n = cfg.engines();
    let cap = n.saturating_add(2);
    let rss_before = crate::metrics::rss_kb();
    let pool = Pool::start(&analyzer.model.engine, &analyzer.model.decoder, n, ring, cap, faults)
        .map_err(|e| format!("starting {n} inference engines: {e:#}"))?;
    let mut free: Vec<Job> = Vec::with_capacity(cap);
    for _ in 0..cap {
        free.push(Job {
            seq: 0,
            meta: FrameMeta::default(),
            geom: analyzer.model.preprocessor.geometry(),
            input: analyzer.model.engine.new_input().map_err(|e| format!("an engine input: {e:#}"))?,
            dets: Vec::with_capacity(analyzer.model.max_candidates()),
            held: false,
            result: Ok(()),
            infer: Duration::ZERO,
            decode: Duration::ZERO,
        });
    }
    // The model's own input (the self-test's and the first runs') is no engine's any more.
    analyzer.model.engine.drop_input();
    crate::metrics::release_freed_memory();
    let engine_rss_kb = crate::metrics::rss_kb().saturating_sub(rss_before) / n.max(1) as u64;
    crate::metrics::log_memory("starting the engines");
    log::info!(
        "{n} inference engine{} (about {engine_rss_kb} KiB of memory each at start; a run's large tensors are planned after its first runs), motion gating {}",
        if n == 1 { "" } else { "s" },
        if cfg.gate.enabled { "on" } else { "off" }
    );
    let mut pending: Vec<Option<Job>> = (0..cap).map(|_| None).collect();
    let mut gate = Gate::new(&cfg.gate, analyzer.rules.zones(), frame_size.0, frame_size.1);
    let mut report = Report { engines: n, engine_rss_kb, ..Report::default() };
    let mut window: Option<((u64, u64), AllocWindow)> = None;
    let mut heartbeat = HeartbeatClock::new(cfg.heartbeat.interval_ms, Instant::now());
    let (mut next_seq, mut next_decide, mut in_flight, mut closed) = (0u64, 0u64, 0usize, false);
    let slot_of = |seq: u64| usize::try_from(seq % cap as u64).unwrap_or(0);
    loop {
        let now = Instant::now();
        let decided = stats.analysed.load(Ordering::Relaxed).saturating_add(stats.skipped.load(Ordering::Relaxed));
        notifier.tick(now, decided, stats.camera_lost.load(Ordering::Relaxed));
        if stop.is_set() {
            break;
        }
        if let Some(why) = pool.failure() {
            return Err(why);
        }
        if let Some(h) = heartbeat.as_mut().and_then(|h| h.due(now, stats, ring.dropped())) {
            analyzer.output.send(crate::output::Event::Heartbeat(h));
        }
        if let Some(why) = analyzer.output.failure() {
            log::error!("stopping: {why}");
            break;
        }
        loop {
            match pool.done.try_recv() {
                Ok(job) => {
                    in_flight = in_flight.saturating_sub(1);
                    let at = slot_of(job.seq);
                    if let Some(p) = pending.get_mut(at) {
                        *p = Some(job);
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return Err("the inference engines stopped".into()),
            }
        }
        // Decide what is back, in frame order.
        while let Some(job) = pending.get_mut(slot_of(next_decide)).and_then(|p| p.take_if(|j| j.seq == next_decide)) {
            let job = decide(&mut analyzer, job, stats, &mut report.timings);
            next_decide = next_decide.saturating_add(1);
            let t = Instant::now();
            if report.first_decision.is_none() {
                report.first_decision = Some(t);
                crate::metrics::log_memory("the first decision");
            }
            (report.last_decision, report.decided) = (Some(t), next_decide);
            free.push(job);
            let c = alloc::counts();
            match &mut window {
                None if next_decide == ALLOC_WARMUP => window = Some((c, AllocWindow::default())),
                Some((start, w)) => {
                    *w = AllocWindow {
                        frames: w.frames.saturating_add(1),
                        all: c.0.saturating_sub(start.0),
                        tract: c.1.saturating_sub(start.1),
                    }
                }
                None => {}
            }
        }
        if closed && in_flight == 0 && next_decide == next_seq {
            // The source ended (not a stop): nothing is in view any more, so every alert clears.
            let n = analyzer.end_of_stream();
            stats.clears.fetch_add(n as u64, Ordering::Relaxed);
            break;
        }
        let mut wait = Duration::from_millis(100);
        if let Some(h) = &heartbeat {
            wait = wait.min(h.next.saturating_duration_since(now));
        }
        match free.pop() {
            Some(mut job) if !closed => match ring.take(wait) {
                Take::Slot(i) => {
                    // Counted in frames taken (`analysed` can move by several at once with N engines).
                    Failpoints::hit(faults.infer_panic, next_seq, "infer-panic", stop);
                    Failpoints::hit(faults.infer_hang, next_seq, "infer-hang", stop);
                    let slot = ring.slot(i);
                    job.meta = FrameMeta::from(&*slot);
                    let t0 = Instant::now();
                    let verdict = gate.check(&slot);
                    let t1 = Instant::now();
                    report.timings.gate.record(t1.saturating_duration_since(t0));
                    job.held = !verdict.analyse();
                    if !job.held {
                        job.geom = analyzer.prepare_into(&slot, &mut job.input);
                        report.timings.preprocess.record(t1.elapsed());
                    }
                    drop(slot);
                    ring.release(i);
                    job.seq = next_seq;
                    next_seq = next_seq.saturating_add(1);
                    if job.held {
                        let at = slot_of(job.seq);
                        if let Some(p) = pending.get_mut(at) {
                            *p = Some(job);
                        }
                    } else if let Some(tx) = &pool.jobs {
                        // Never blocks: the channel holds every job there is.
                        if tx.try_send(job).is_err() {
                            return Err("the inference engines stopped".into());
                        }
                        in_flight = in_flight.saturating_add(1);
                    }
                }
                Take::Timeout => {
                    free.push(job);
                    analyzer.check_arming();
                }
                Take::Woken => free.push(job),
                Take::Closed => {
                    free.push(job);
                    closed = true;
                }
            },
            other => {
                if let Some(job) = other {
                    free.push(job);
                }
                if in_flight > 0 {
                    match pool.done.recv_timeout(wait) {
                        Ok(job) => {
                            in_flight = in_flight.saturating_sub(1);
                            let at = slot_of(job.seq);
                            if let Some(p) = pending.get_mut(at) {
                                *p = Some(job);
                            }
                        }
                        Err(RecvTimeoutError::Timeout) => analyzer.check_arming(),
                        Err(RecvTimeoutError::Disconnected) => return Err("the inference engines stopped".into()),
                    }
                }
            }
        }
    }
    report.allocs = window.map(|(_, w)| w);
    crate::metrics::log_memory("the last frame");
    log::debug!("allocations: {:?}, jpeg arena overflows {}", alloc::counts(), alloc::Arena::overflows());
    Ok(report)
}

/// Decides one job in its turn; gives the job back for reuse.
fn decide(analyzer: &mut Analyzer, mut job: Job, stats: &Stats, timings: &mut Timings) -> Job {
    if job.held {
        stats.skipped.fetch_add(1, Ordering::Relaxed);
    } else {
        match std::mem::replace(&mut job.result, Ok(())) {
            Ok(()) => {
                let us = u64::try_from(job.infer.saturating_add(job.decode).as_micros()).unwrap_or(u64::MAX);
                stats.infer_us.fetch_add(us, Ordering::Relaxed);
                stats.analysed.fetch_add(1, Ordering::Relaxed);
                timings.inference.record(job.infer);
                timings.decode.record(job.decode);
                analyzer.swap_detections(&mut job.dets);
            }
            Err(e) => {
                stats.infer_errors.fetch_add(1, Ordering::Relaxed);
                log::error!("frame {}: {e}", job.meta.index);
                return job;
            }
        }
    }
    let t = Instant::now();
    let (alerts, clears) = analyzer.act(job.meta);
    timings.decide.record(t.elapsed());
    if let Some(c) = job.meta.captured {
        timings.end_to_end.record(c.elapsed());
    }
    stats.alerts.fetch_add(alerts as u64, Ordering::Relaxed);
    stats.clears.fetch_add(clears as u64, Ordering::Relaxed);
    job
}
