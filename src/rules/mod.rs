//! Rules: deciding, per track and frame, whether what the detector sees is worth an alarm, and why not.
//!
//! Why plain, explicit rules: whoever wires a relay to this sensor must be able to predict it, and tune it
//! on a recorded clip (`lookout replay`). A rule watches tracks ([`crate::track`]), not detections: a
//! track counts for a rule in a frame when its class is one the rule names, its score and box area pass
//! the minimums and its place (the box's bottom-centre) is in the rule's zone (or anywhere without one).
//! It alerts once it counted in N of the last M analysed frames (`confirm`: one flickering frame never
//! trips the relay) and stayed `dwell_ms`, or, for a line rule, once it crossed the line in the asked
//! direction; then never again for that track: once the track has been out (or unseen) for `clear_ms`
//! the alert is cleared (`$LKCLR`), and a track that comes back still does not alert twice. A parked van
//! is one alert, and a second person walking in is a second one. `cooldown_ms` is a minimum gap
//! before the rule alerts again for a new track. A disarmed rule (SIGUSR2) or one outside its schedule
//! goes on counting but does not alert. Time is the frame's presentation time, not the wall clock, so a
//! clip gives the same decisions however fast it is read; schedules alone look at the local wall clock,
//! passed in by the caller.
//!
//! Every detection gets a [`Reason`] per rule in every frame, so `replay` can say why something did not
//! alert; `run` and `replay` share this code. State is fixed-size per rule ([`RULE_STATES`] tracks).

// Input reaches this code (files, drivers, the wire): no panic path. Arithmetic is checked, saturating
// or provably bounded (each `allow` says why), and indexing goes through `get`.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

pub mod confirm;
pub mod schedule;
pub mod zone;

use std::fmt;

use crate::config::{Confirm, Direction, RuleConfig};
use crate::detect::Detection;
use crate::frame::FrameMeta;
use crate::track::{Tracker, MAX_TRACKS};
use confirm::{Presence, Window};
use schedule::Schedule;
use zone::Point;

/// Tracks each rule keeps state for: the live ones plus those gone but not yet cleared.
pub const RULE_STATES: usize = 2 * MAX_TRACKS;

/// What a rule decided for one detection in one frame: `Alert`, or the first reason it did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Alert,
    /// Its track's class is not one the rule names.
    Class,
    Score,
    Area,
    OutsideZone,
    /// A line rule: the track has not crossed the line (in the asked direction).
    NotCrossed,
    /// Counted in `have` of the frames confirmation looks at; `need` are needed.
    NotConfirmed {
        have: u32,
        need: u32,
    },
    /// In the zone for `ms` of the `need` ms the rule asks.
    Dwell {
        ms: u64,
        need: u64,
    },
    /// Its track alerted already and has not cleared since.
    AlreadyAlerted,
    Disarmed,
    OutsideSchedule,
    /// The rule alerted for another track less than `cooldown_ms` ago.
    Cooldown,
    /// No track (the tracker was full).
    Untracked,
    /// A second detection of a track in the same frame (nested in its box): the track's own detection
    /// decides.
    Duplicate,
    /// The rule's state table was full of alerted tracks.
    NoRoom,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Alert => f.write_str("alert"),
            Reason::Class => f.write_str("class"),
            Reason::Score => f.write_str("score"),
            Reason::Area => f.write_str("area"),
            Reason::OutsideZone => f.write_str("outside_zone"),
            Reason::NotCrossed => f.write_str("not_crossed"),
            Reason::NotConfirmed { have, need } => write!(f, "not_confirmed:{have}/{need}"),
            Reason::Dwell { ms, need } => write!(f, "dwell:{ms}/{need}"),
            Reason::AlreadyAlerted => f.write_str("already_alerted"),
            Reason::Disarmed => f.write_str("disarmed"),
            Reason::OutsideSchedule => f.write_str("outside_schedule"),
            Reason::Cooldown => f.write_str("cooldown"),
            Reason::Untracked => f.write_str("untracked"),
            Reason::Duplicate => f.write_str("duplicate"),
            Reason::NoRoom => f.write_str("no_room"),
        }
    }
}

/// A rule's alert for a track.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RuleAlert {
    /// Index of the rule in [`RuleSet::rules`].
    pub rule: usize,
    pub track: u32,
    /// The track's class.
    pub class_id: u16,
    /// This frame's detection of the track.
    pub score: f32,
    /// x1, y1, x2, y2 in source pixels.
    pub bbox: [f32; 4],
    pub frame: FrameMeta,
    /// For a line rule: which way it was crossed.
    pub direction: Option<Direction>,
}

/// A rule's alert for a track is over: the track was out of the zone (or unseen) for `clear_ms`, or
/// the stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleClear {
    pub rule: usize,
    pub track: u32,
    pub frame: FrameMeta,
}

/// One frame's decisions, in buffers sized once ([`RuleSet::decisions`]).
#[derive(Debug)]
pub struct Decisions {
    pub alerts: Vec<RuleAlert>,
    pub clears: Vec<RuleClear>,
    /// Detection-major: `reasons[det * rules + rule]`.
    reasons: Vec<Reason>,
    rules: usize,
}

impl Decisions {
    /// What rule `rule` decided for detection `det` of the frame.
    pub fn reason(&self, det: usize, rule: usize) -> Option<Reason> {
        self.reasons.get(det.checked_mul(self.rules)?.checked_add(rule)?).copied()
    }

    fn set(&mut self, det: usize, rule: usize, r: Reason) {
        if let Some(slot) = det.checked_mul(self.rules).and_then(|i| i.checked_add(rule)) {
            if let Some(s) = self.reasons.get_mut(slot) {
                *s = r;
            }
        }
    }

    fn reset(&mut self, dets: usize) {
        self.alerts.clear();
        self.clears.clear();
        self.reasons.clear();
        let n = dets.saturating_mul(self.rules).min(self.reasons.capacity());
        self.reasons.resize(n, Reason::Untracked);
    }
}

/// A rule names a label the model does not have. `table` and `key` locate it in the config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{label:?} is not a label of this model")]
pub struct RulesError {
    pub table: String,
    pub key: String,
    pub label: String,
}

#[derive(Debug, Clone)]
enum Place {
    Anywhere,
    Zone(Vec<Point>),
    Line { a: Point, b: Point, direction: Direction },
}

/// One track as one rule sees it.
#[derive(Debug, Clone, Copy)]
struct State {
    track: u32,
    window: Window,
    presence: Presence,
    /// An alert stands for it (until its clear).
    alerted: bool,
    /// It alerted once: a track never alerts twice for a rule.
    done: bool,
    last_point: Option<Point>,
    crossed: Option<Direction>,
    /// Looked at in the current frame.
    updated: bool,
}

impl State {
    fn new(track: u32) -> State {
        State {
            track,
            window: Window::default(),
            presence: Presence::default(),
            alerted: false,
            done: false,
            last_point: None,
            crossed: None,
            updated: false,
        }
    }
}

/// Per-class thresholds of a rule (one entry per label).
#[derive(Debug, Clone, Copy)]
struct ClassPolicy {
    enabled: bool,
    min_score: f32,
    min_area: f32,
    confirm: Confirm,
    /// The older table's per-class cooldown (0: none).
    cooldown_ms: u64,
}

/// One rule, validated against the model's labels, with its per-track state.
#[derive(Debug)]
pub struct Rule {
    pub name: String,
    place: Place,
    classes: Vec<ClassPolicy>,
    dwell_ms: u64,
    cooldown_ms: u64,
    clear_ms: u64,
    schedule: Schedule,
    last_alert: Option<u64>,
    last_alert_class: Vec<Option<u64>>,
    states: heapless::Vec<State, RULE_STATES>,
    /// Times a track found no room in the state table.
    pub full: u64,
}

/// Which way p moved going from q, across a line a-b, if it crossed it.
fn crossing(a: Point, b: Point, q: Point, p: Point) -> Option<Direction> {
    let (sq, sp) = (zone::side(a, b, q), zone::side(a, b, p));
    if sq == 0 || sp == 0 || sq == sp || !zone::segments_meet(q, p, a, b) {
        return None;
    }
    let steep = (b.y - a.y).abs() > (b.x - a.x).abs();
    Some(match (steep, p.x > q.x, p.y > q.y) {
        (true, true, _) => Direction::LeftToRight,
        (true, false, _) => Direction::RightToLeft,
        (false, _, true) => Direction::Down,
        (false, _, false) => Direction::Up,
    })
}

impl Rule {
    fn new(
        cfg: &RuleConfig,
        labels: &[String],
        default_classes: &[String],
        default_min_score: f32,
    ) -> Result<Rule, RulesError> {
        let classes = cfg.classes.as_deref().unwrap_or(default_classes);
        let min_score = cfg.min_score.map_or(default_min_score, |s| s.0);
        let unknown = |name: &str| !labels.iter().any(|l| l == name);
        if let Some(name) = classes.iter().find(|n| unknown(n)) {
            return Err(RulesError { table: cfg.table.clone(), key: "classes".into(), label: name.clone() });
        }
        if let Some(name) = cfg.class.keys().find(|n| unknown(n)) {
            return Err(RulesError { table: format!("{}.class", cfg.table), key: name.clone(), label: name.clone() });
        }
        let policies = labels
            .iter()
            .map(|l| {
                let o = cfg.class.get(l).cloned().unwrap_or_default();
                let confirm = match o.confirm_frames {
                    Some(n) => Confirm { n: n.max(1), m: n.max(1) },
                    None => cfg.confirm,
                };
                ClassPolicy {
                    enabled: classes.is_empty() || classes.contains(l),
                    min_score: o.min_score.map_or(min_score, |s| s.0),
                    min_area: o.min_area.unwrap_or(cfg.min_area),
                    confirm,
                    cooldown_ms: o.cooldown_ms.unwrap_or(cfg.class_cooldown_ms),
                }
            })
            .collect();
        let place = match (&cfg.zone, &cfg.line) {
            (Some(z), _) => Place::Zone(z.0.clone()),
            (None, Some(l)) => Place::Line { a: l.0[0], b: l.0[1], direction: cfg.direction.unwrap_or(Direction::Any) },
            (None, None) => Place::Anywhere,
        };
        Ok(Rule {
            name: cfg.name.0.clone(),
            place,
            classes: policies,
            dwell_ms: cfg.dwell_ms,
            cooldown_ms: cfg.cooldown_ms,
            clear_ms: cfg.clear_ms,
            schedule: Schedule(cfg.schedule.clone()),
            last_alert: None,
            last_alert_class: vec![None; labels.len()],
            states: heapless::Vec::new(),
            full: 0,
        })
    }

    fn is_line(&self) -> bool {
        matches!(self.place, Place::Line { .. })
    }

    /// The static part of the decision: class, score, area, place. `None`: the track counts.
    fn filter(&self, class_id: u16, d: &Detection, at: Point) -> Option<Reason> {
        let Some(p) = self.classes.get(usize::from(class_id)) else { return Some(Reason::Class) };
        if !p.enabled {
            return Some(Reason::Class);
        }
        if d.score < p.min_score {
            return Some(Reason::Score);
        }
        self.placed(p, d, at)
    }

    /// Whether a detection of an enabled class is there for the rule, whatever its score: area and
    /// place. What keeps a stay (dwell, clear) going.
    fn placed(&self, p: &ClassPolicy, d: &Detection, at: Point) -> Option<Reason> {
        if d.area() < p.min_area {
            return Some(Reason::Area);
        }
        match &self.place {
            Place::Zone(z) if !zone::contains(z, at) => Some(Reason::OutsideZone),
            _ => None,
        }
    }

    /// The state of `track`, made if needed. When the table is full, one without a standing alert makes
    /// room: one that never alerted first, then the longest gone.
    fn state(&mut self, track: u32) -> Option<usize> {
        if let Some(i) = self.states.iter().position(|s| s.track == track) {
            return Some(i);
        }
        if self.states.push(State::new(track)).is_ok() {
            return Some(self.states.len().saturating_sub(1));
        }
        let victim = self
            .states
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.alerted)
            .min_by_key(|(_, s)| (s.done, s.updated, s.presence.last_in()))
            .map(|(i, _)| i)?;
        if let Some(s) = self.states.get_mut(victim) {
            *s = State::new(track);
        }
        Some(victim)
    }

    #[allow(clippy::too_many_arguments)]
    fn update(
        &mut self,
        me: usize,
        tracker: &Tracker,
        dets: &[Detection],
        frame: FrameMeta,
        gate: Option<Reason>,
        out: &mut Decisions,
    ) {
        let pts = frame.pts_ms;
        for s in self.states.iter_mut() {
            s.updated = false;
        }
        for t in tracker.tracks() {
            let det = t.det.and_then(|i| dets.get(i).map(|d| (i, d)));
            let at = det.map(|(_, d)| zone::anchor(&d.bbox, frame.width, frame.height));
            let blocked = match (det, at) {
                (Some((_, d)), Some(at)) => self.filter(t.class_id, d, at),
                _ => Some(Reason::Untracked),
            };
            let counts = blocked.is_none();
            // In the zone at any score the tracker keeps: the stay goes on (no clear for a parked car
            // whose score dips for a while), though only a counting frame confirms.
            let there = counts
                || match (det, at, self.classes.get(usize::from(t.class_id))) {
                    (Some((_, d)), Some(at), Some(p)) if p.enabled => self.placed(p, d, at).is_none(),
                    _ => false,
                };
            let existing = self.states.iter().position(|s| s.track == t.id);
            let want = existing.is_some() || counts || (self.is_line() && det.is_some());
            let si = if want { self.state(t.id) } else { None };
            let Some(si) = si else {
                if want {
                    self.full = self.full.saturating_add(1);
                }
                if let Some((i, _)) = det {
                    out.set(i, me, blocked.unwrap_or(Reason::NoRoom));
                }
                continue;
            };
            let place = self.place.clone_line();
            let Some(s) = self.states.get_mut(si) else { continue };
            s.updated = true;
            s.window.push(counts);
            // A point on the line itself is on neither side: the crossing is judged from the last
            // point off it.
            if let (Some((a, b, dir)), Some(p)) = (place, at) {
                if zone::side(a, b, p) != 0 {
                    if let Some(moved) = s.last_point.and_then(|q| crossing(a, b, q, p)) {
                        if dir == Direction::Any || dir == moved {
                            s.crossed = Some(moved);
                        }
                    }
                    s.last_point = Some(p);
                }
            }
            if there {
                s.presence.seen(pts);
            }
            let Some((i, d)) = det else { continue };
            let policy = self.classes.get(usize::from(t.class_id)).copied();
            let reason = match (blocked, policy) {
                (Some(r), _) => r,
                (None, None) => Reason::Class,
                (None, Some(p)) => {
                    let have = s.window.count(p.confirm);
                    let dwell = s.presence.dwell(pts);
                    let since = |last: Option<u64>, gap: u64| last.is_some_and(|l| pts.saturating_sub(l) < gap);
                    let class_last = self.last_alert_class.get(usize::from(t.class_id)).copied().flatten();
                    if have < p.confirm.n {
                        Reason::NotConfirmed { have, need: p.confirm.n }
                    } else if dwell < self.dwell_ms {
                        Reason::Dwell { ms: dwell, need: self.dwell_ms }
                    } else if place.is_some() && s.crossed.is_none() {
                        Reason::NotCrossed
                    } else if s.done {
                        Reason::AlreadyAlerted
                    } else if let Some(g) = gate {
                        g
                    } else if since(self.last_alert, self.cooldown_ms) || since(class_last, p.cooldown_ms) {
                        Reason::Cooldown
                    } else {
                        Reason::Alert
                    }
                }
            };
            if reason == Reason::Alert {
                s.alerted = true;
                s.done = true;
                let direction = s.crossed;
                self.last_alert = Some(pts);
                if let Some(l) = self.last_alert_class.get_mut(usize::from(t.class_id)) {
                    *l = Some(pts);
                }
                if out.alerts.len() < out.alerts.capacity() {
                    out.alerts.push(RuleAlert {
                        rule: me,
                        track: t.id,
                        class_id: t.class_id,
                        score: d.score,
                        bbox: d.bbox,
                        frame,
                        direction,
                    });
                }
            }
            out.set(i, me, reason);
        }
        // Tracks that ended: not in this frame either.
        for s in self.states.iter_mut().filter(|s| !s.updated) {
            s.window.push(false);
        }
        let clear_ms = self.clear_ms;
        for s in self.states.iter_mut() {
            if s.presence.expire(pts, clear_ms) {
                if s.alerted && out.clears.len() < out.clears.capacity() {
                    out.clears.push(RuleClear { rule: me, track: s.track, frame });
                }
                s.alerted = false;
                s.crossed = None;
            }
        }
        // Forget tracks that ended and have nothing left to clear.
        self.states.retain(|s| s.updated || s.presence.active());
    }

    /// The stream ended: every alert still standing is cleared, in the order of the track ids.
    fn finish(&mut self, me: usize, frame: FrameMeta, out: &mut Decisions) {
        self.states.sort_unstable_by_key(|s| s.track);
        for s in self.states.iter().filter(|s| s.alerted) {
            if out.clears.len() < out.clears.capacity() {
                out.clears.push(RuleClear { rule: me, track: s.track, frame });
            }
        }
        self.states.clear();
    }
}

impl Place {
    fn clone_line(&self) -> Option<(Point, Point, Direction)> {
        match self {
            Place::Line { a, b, direction } => Some((*a, *b, *direction)),
            _ => None,
        }
    }
}

/// The rules in force, in config order.
#[derive(Debug)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
}

impl RuleSet {
    /// Builds the rules for a model with `labels`; `default_classes` and `default_min_score` come from
    /// the manifest and apply where a rule is silent. Unknown label names are errors (a typo would
    /// silently disable an alarm).
    pub fn new(
        rules: &[RuleConfig],
        labels: &[String],
        default_classes: &[String],
        default_min_score: f32,
    ) -> Result<RuleSet, RulesError> {
        let rules = rules
            .iter()
            .map(|r| Rule::new(r, labels, default_classes, default_min_score))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RuleSet { rules })
    }

    /// Buffers for one frame's decisions with up to `max_dets` detections.
    pub fn decisions(&self, max_dets: usize) -> Decisions {
        let n = self.rules.len();
        Decisions {
            alerts: Vec::with_capacity(n.saturating_mul(MAX_TRACKS)),
            clears: Vec::with_capacity(n.saturating_mul(RULE_STATES)),
            reasons: Vec::with_capacity(n.saturating_mul(max_dets)),
            rules: n,
        }
    }

    /// The zones motion gating watches: every rule's zone, or `None` (the whole frame) when any rule
    /// looks anywhere or at a line.
    pub fn zones(&self) -> Option<Vec<Vec<Point>>> {
        self.rules
            .iter()
            .map(|r| match &r.place {
                Place::Zone(z) => Some(z.clone()),
                Place::Anywhere | Place::Line { .. } => None,
            })
            .collect()
    }

    /// Whether any rule has a schedule (only then is the local time needed).
    pub fn needs_clock(&self) -> bool {
        self.rules.iter().any(|r| !r.schedule.always())
    }

    /// Decides one analysed frame: `tracker` has been updated with `dets`; `minute` is the local time
    /// of day (for schedules), `armed` whether the rules are armed.
    pub fn update(
        &mut self,
        tracker: &Tracker,
        dets: &[Detection],
        frame: FrameMeta,
        minute: u16,
        armed: bool,
        out: &mut Decisions,
    ) {
        out.reset(dets.len());
        for (i, d) in dets.iter().enumerate() {
            if tracker.is_duplicate(i) {
                for r in 0..self.rules.len() {
                    out.set(i, r, Reason::Duplicate);
                }
            } else if tracker.track_of(i).is_none() {
                // Untracked detections: the static reason if there is one, else `untracked`.
                for (r, rule) in self.rules.iter().enumerate() {
                    let at = zone::anchor(&d.bbox, frame.width, frame.height);
                    out.set(i, r, rule.filter(d.class_id, d, at).unwrap_or(Reason::Untracked));
                }
            }
        }
        for (me, rule) in self.rules.iter_mut().enumerate() {
            let gate = if !armed {
                Some(Reason::Disarmed)
            } else if !rule.schedule.contains(minute) {
                Some(Reason::OutsideSchedule)
            } else {
                None
            };
            rule.update(me, tracker, dets, frame, gate, out);
        }
    }

    /// The stream ended at `frame`: clears every alert still standing.
    pub fn finish(&mut self, frame: FrameMeta, out: &mut Decisions) {
        out.reset(0);
        for (me, rule) in self.rules.iter_mut().enumerate() {
            rule.finish(me, frame, out);
        }
    }

    pub fn name(&self, rule: usize) -> &str {
        self.rules.get(rule).map_or("?", |r| r.name.as_str())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // tests may panic
mod tests {
    use super::*;
    use crate::config::{Config, TrackConfig};
    use std::path::Path;

    fn labels() -> Vec<String> {
        vec!["person".into(), "car".into(), "cat".into()]
    }

    fn rules(toml: &str) -> RuleSet {
        let cfg = Config::parse(toml, "test.toml", Path::new("/")).unwrap();
        RuleSet::new(&cfg.rule_configs(), &labels(), &[], 0.5).unwrap()
    }

    fn meta(i: u64, step: u64) -> FrameMeta {
        FrameMeta { index: i, pts_ms: i * step, unix_ms: 0, width: 100, height: 100, captured: None }
    }

    /// ('A' or 'C', rule, track, frame) for every alert and clear.
    type Events = Vec<(char, usize, u32, u64)>;

    /// Runs frames of detections through a tracker and the rules; returns ("A"/"C", rule, track, frame)
    /// for every alert and clear, and the reasons of detection 0 per frame for rule 0.
    fn drive(
        set: &mut RuleSet,
        frames: &[Vec<Detection>],
        step: u64,
        armed: &dyn Fn(u64) -> bool,
    ) -> (Events, Vec<Option<String>>) {
        let mut tracker = Tracker::new(TrackConfig { max_coast_ms: 200, ..Default::default() }, 8);
        let mut out = set.decisions(8);
        let mut events = Vec::new();
        let mut reasons = Vec::new();
        for (i, dets) in frames.iter().enumerate() {
            let m = meta(i as u64, step);
            tracker.update(dets, m.pts_ms);
            set.update(&tracker, dets, m, 0, armed(i as u64), &mut out);
            events.extend(out.alerts.iter().map(|a| ('A', a.rule, a.track, a.frame.index)));
            events.extend(out.clears.iter().map(|c| ('C', c.rule, c.track, c.frame.index)));
            reasons.push(out.reason(0, 0).map(|r| r.to_string()));
        }
        (events, reasons)
    }

    fn person(x: f32, y: f32) -> Detection {
        Detection { class_id: 0, score: 0.9, bbox: [x, y, x + 10.0, y + 20.0] }
    }

    #[test]
    fn a_track_alerts_once_then_clears_after_leaving() {
        let mut set = rules("[[rule]]\nname = \"all\"\nconfirm = \"2/3\"\nclear_ms = 300\n");
        // Present (still) for 20 frames of 100 ms, then gone.
        let mut frames: Vec<Vec<Detection>> = (0..20).map(|_| vec![person(40.0, 40.0)]).collect();
        frames.extend((0..5).map(|_| vec![]));
        let (ev, reasons) = drive(&mut set, &frames, 100, &|_| true);
        // Confirmed in frame 1; last seen frame 19 (1900 ms): cleared 300 ms later, at frame 22.
        assert_eq!(ev, vec![('A', 0, 1, 1), ('C', 0, 1, 22)]);
        assert_eq!(reasons[0].as_deref(), Some("not_confirmed:1/2"));
        assert_eq!(reasons[1].as_deref(), Some("alert"));
        assert!(reasons[2..20].iter().all(|r| r.as_deref() == Some("already_alerted")));
    }

    #[test]
    fn a_track_that_leaves_and_comes_back_alerts_once() {
        let mut set = rules(
            "[[rule]]\nname = \"gate\"\nconfirm = \"1/1\"\nclear_ms = 300\nzone = [[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]\n",
        );
        // In the zone (bottom-centre x < 0.5), out of it for a second, back: one track all along.
        let xs = [10.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 70.0, 60.0, 50.0, 40.0, 30.0, 20.0, 10.0];
        let frames: Vec<Vec<Detection>> =
            xs.iter().map(|&x| vec![Detection { class_id: 0, score: 0.9, bbox: [x, 0.0, x + 60.0, 80.0] }]).collect();
        let (ev, reasons) = drive(&mut set, &frames, 100, &|_| true);
        assert_eq!(ev, vec![('A', 0, 1, 0), ('C', 0, 1, 5)]);
        assert_eq!(reasons[14].as_deref(), Some("already_alerted"));
    }

    #[test]
    fn a_schedule_gates_alerts_by_the_injected_local_time() {
        let mut set = rules("[[rule]]\nname = \"night\"\nconfirm = \"1/1\"\nschedule = [\"22:00-06:00\"]\n");
        let mut tracker = Tracker::new(TrackConfig::default(), 8);
        let mut out = set.decisions(8);
        let dets = [person(10.0, 10.0)];
        // 21:58, 21:59 (outside), 22:00 (armed): the alert comes at 22:00.
        let mut got = Vec::new();
        for (i, minute) in [1318u16, 1319, 1320, 1321].into_iter().enumerate() {
            let m = meta(i as u64, 100);
            tracker.update(&dets, m.pts_ms);
            set.update(&tracker, &dets, m, minute, true, &mut out);
            got.push((out.reason(0, 0).unwrap().to_string(), out.alerts.len()));
        }
        let want = [("outside_schedule", 0), ("outside_schedule", 0), ("alert", 1), ("already_alerted", 0)];
        assert_eq!(got, want.map(|(r, n)| (r.to_string(), n)));
    }

    #[test]
    fn zone_dwell_and_reasons() {
        let mut set = rules(
            "[[rule]]\nname = \"lawn\"\nconfirm = \"1/1\"\ndwell_ms = 500\nzone = [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]\n",
        );
        // Walks down 5 px a frame from y = 0 (bottom at 20 px = 0.2): the bottom-centre enters the zone
        // (y >= 50 px) at frame 6, and has dwelt 500 ms at frame 11.
        let frames: Vec<Vec<Detection>> = (0..14).map(|i| vec![person(40.0, i as f32 * 5.0)]).collect();
        let (ev, reasons) = drive(&mut set, &frames, 100, &|_| true);
        assert_eq!(ev, vec![('A', 0, 1, 11)]);
        assert_eq!(reasons[5].as_deref(), Some("outside_zone"));
        assert_eq!(reasons[6].as_deref(), Some("dwell:0/500"));
        assert_eq!(reasons[10].as_deref(), Some("dwell:400/500"));
        assert_eq!(reasons[11].as_deref(), Some("alert"));
    }

    #[test]
    fn class_score_area_and_disarmed() {
        let mut set = rules(
            "[[rule]]\nname = \"cars\"\nclasses = [\"car\"]\nmin_score = 0.8\nmin_area = 150\nconfirm = \"1/1\"\n",
        );
        let car = |score: f32, w: f32| Detection { class_id: 1, score, bbox: [10.0, 10.0, 10.0 + w, 20.0] };
        let frames = vec![
            vec![person(50.0, 50.0)],
            vec![car(0.7, 20.0)],
            vec![car(0.9, 10.0)],
            vec![car(0.9, 20.0)],
            vec![car(0.9, 20.0)],
        ];
        // Disarmed in frame 3, armed again in frame 4.
        let (ev, reasons) = drive(&mut set, &frames, 100, &|i| i != 3);
        let r: Vec<&str> = reasons.iter().map(|r| r.as_deref().unwrap()).collect();
        assert_eq!(r, ["class", "score", "area", "disarmed", "alert"]);
        assert_eq!(ev.len(), 1);
    }

    #[test]
    fn cooldown_is_a_gap_between_tracks_not_a_repeat() {
        let mut set = rules("[[rule]]\nname = \"door\"\nconfirm = \"1/1\"\ncooldown_ms = 1000\n");
        // Two people far apart: the second arrives 300 ms after the first alerted, the third 1500 ms after.
        let mut frames = Vec::new();
        for i in 0..25u64 {
            let mut f = vec![person(0.0, 0.0)];
            if i >= 3 {
                f.push(person(40.0, 0.0));
            }
            if i >= 15 {
                f.push(person(80.0, 60.0));
            }
            frames.push(f);
        }
        let (ev, _) = drive(&mut set, &frames, 100, &|_| true);
        // Track 2 waits for the cooldown (alerts at 1000 ms, frame 10), track 3 for 1000 ms after that.
        assert_eq!(ev, vec![('A', 0, 1, 0), ('A', 0, 2, 10), ('A', 0, 3, 20)]);
    }

    #[test]
    fn a_line_crossing_alerts_once_with_its_direction() {
        let toml = |dir: &str| {
            format!("[[rule]]\nname = \"path\"\nconfirm = \"1/1\"\nline = [[0.5, 0.0], [0.5, 1.0]]\ndirection = \"{dir}\"\n")
        };
        // Walks right across x = 50 px and back, 4 px a frame, once standing right on the line.
        let xs: Vec<f32> =
            (0..10).map(|i| 18.0 + i as f32 * 4.0).chain((0..10).map(|i| 58.0 - i as f32 * 4.0)).collect();
        assert_eq!((xs[8], xs[12]), (50.0, 50.0));
        let frames: Vec<Vec<Detection>> = xs.iter().map(|&x| vec![person(x - 5.0, 50.0)]).collect();
        let mut set = rules(&toml("left_to_right"));
        let (ev, reasons) = drive(&mut set, &frames, 100, &|_| true);
        // On the line at frame 8 (x = 50): crossed at frame 9 (x = 54).
        assert_eq!(ev, vec![('A', 0, 1, 9)], "{reasons:?}");
        assert_eq!(reasons[8].as_deref(), Some("not_crossed"));
        let mut set = rules(&toml("right_to_left"));
        let (ev, _) = drive(&mut set, &frames, 100, &|_| true);
        // Back: x = 54 at frame 11, on the line at 12, 46 at 13.
        assert_eq!(ev, vec![('A', 0, 1, 13)]);
        let mut set = rules(&toml("any"));
        let mut tracker = Tracker::new(TrackConfig::default(), 8);
        let mut out = set.decisions(8);
        let mut dirs = Vec::new();
        for (i, dets) in frames.iter().enumerate() {
            let m = meta(i as u64, 100);
            tracker.update(dets, m.pts_ms);
            set.update(&tracker, dets, m, 0, true, &mut out);
            dirs.extend(out.alerts.iter().map(|a| a.direction));
        }
        assert_eq!(dirs, vec![Some(Direction::LeftToRight)], "once: the way back is the same track, alerted");
    }

    #[test]
    fn finish_clears_what_stands_and_unknown_labels_are_errors() {
        let mut set = rules("[[rule]]\nname = \"a\"\nconfirm = \"1/1\"\n[[rule]]\nname = \"b\"\nconfirm = \"1/1\"\n");
        let (ev, _) = drive(&mut set, &[vec![person(0.0, 0.0)]], 100, &|_| true);
        assert_eq!(ev, vec![('A', 0, 1, 0), ('A', 1, 1, 0)]);
        let mut out = set.decisions(8);
        set.finish(meta(1, 100), &mut out);
        let c: Vec<(usize, u32)> = out.clears.iter().map(|c| (c.rule, c.track)).collect();
        assert_eq!(c, vec![(0, 1), (1, 1)]);
        let cfg = Config::parse("[[rule]]\nname = \"x\"\nclasses = [\"unicorn\"]\n", "t.toml", Path::new("/")).unwrap();
        let e = RuleSet::new(&cfg.rule_configs(), &labels(), &[], 0.5).unwrap_err();
        assert_eq!((e.table.as_str(), e.key.as_str(), e.label.as_str()), ("rule[0]", "classes", "unicorn"));
    }

    #[test]
    fn the_older_table_is_one_implicit_rule_with_per_class_cooldown() {
        let mut set = rules("[rules]\nconfirm_frames = 1\ncooldown_ms = 1000\n");
        assert_eq!(set.name(0), "default");
        let frames: Vec<Vec<Detection>> = (0..15)
            .map(|i| if i < 3 { vec![person(0.0, 0.0)] } else { vec![person(0.0, 0.0), person(60.0, 60.0)] })
            .collect();
        let (ev, _) = drive(&mut set, &frames, 100, &|_| true);
        assert_eq!(ev, vec![('A', 0, 1, 0), ('A', 0, 2, 10)]);
    }
}
