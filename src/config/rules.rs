//! The rule tables: `[[rule]]` (named rules with zones, lines, confirmation, dwell, clear and schedules),
//! the older single `[rules]` table (read as one implicit rule named `default`), and `[track]`.
//!
//! Why validated here, in full: a rule that cannot work must stop the sensor at start with the file, line
//! and field, not run for months without ever alerting. So a zone with fewer than 3 points, a
//! self-crossing polygon, a point outside the frame, an `N/M` that cannot be met, a time window that is
//! not one, or a rule name that would break the serial sentence are refused while the file is read. Labels
//! are checked later, against the model ([`crate::rules::RuleSet::new`]).

// Input reaches this code (files, drivers, the wire): no panic path. Arithmetic is checked, saturating
// or provably bounded (each `allow` says why), and indexing goes through `get`.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::collections::BTreeMap;

use serde::Deserialize;

use super::Score;
use crate::rules::zone::{self, Point};

/// Most rules one config may have (each costs a fixed table of per-track state).
pub const MAX_RULES: usize = 16;
/// Most points in a zone polygon.
pub const MAX_ZONE_POINTS: usize = 32;
/// Longest `dwell_ms`, `cooldown_ms`, `clear_ms`: one day.
pub const MAX_RULE_MS: u64 = 86_400_000;
/// Largest `M` of a `confirm = "N/M"` window (a 64-bit history); `N/N` (consecutive) may go up to 10000.
pub const MAX_CONFIRM_WINDOW: u32 = 64;

/// Per-label overrides inside the older `[rules]` table (`[rules.class.person]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassRule {
    pub min_score: Option<Score>,
    pub min_area: Option<f32>,
    pub confirm_frames: Option<u32>,
    pub cooldown_ms: Option<u64>,
}

/// The older single `[rules]` table. Still read, as one implicit rule named `default` over the whole
/// frame; `cooldown_ms` keeps its old meaning (per class) but no longer repeats an alert for an object
/// that stays: each track alerts once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Labels (from the model manifest) that may raise alerts. Default: the manifest's `alert_classes`
    /// (person, bicycle, car, motorbike, bus, truck for FastestDet; face for the face models).
    pub classes: Option<Vec<String>>,
    /// Minimum detection score (0..1) for a detection to count. Default: the manifest's score threshold.
    pub min_score: Option<Score>,
    /// Minimum box area in source pixels² (filters far-away specks). Default 0.
    pub min_area: f32,
    /// Consecutive analysed frames a track must be seen in before it alerts. Default 2.
    pub confirm_frames: u32,
    /// After an alert, a new track of the same class alerts only this much later (stream time, ms).
    /// Default 0.
    pub cooldown_ms: u64,
    /// Per-label overrides of the four values above, e.g. `[rules.class.person] min_score = 0.5`.
    pub class: BTreeMap<String, ClassRule>,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            classes: None,
            min_score: None,
            min_area: 0.0,
            confirm_frames: 2,
            cooldown_ms: 0,
            class: BTreeMap::new(),
        }
    }
}

/// A rule name: it goes into the `$LKALR`/`$LKCLR` sentences, so 1..=32 of A-Z a-z 0-9 - _.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct RuleName(pub String);
impl TryFrom<String> for RuleName {
    type Error = String;
    fn try_from(v: String) -> Result<Self, String> {
        let ok = !v.is_empty() && v.len() <= 32 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
        if ok {
            Ok(RuleName(v))
        } else {
            Err(format!("{v:?} is not a rule name (1-32 characters of A-Z a-z 0-9 - _)"))
        }
    }
}

fn point(p: [f64; 2], what: &str) -> Result<Point, String> {
    if p.iter().all(|c| c.is_finite() && (0.0..=1.0).contains(c)) {
        Ok(Point { x: p[0] as f32, y: p[1] as f32 })
    } else {
        Err(format!("{what} [{}, {}] is outside the frame (x and y are fractions of it, 0..1)", p[0], p[1]))
    }
}

/// A zone: a simple polygon (3..=32 points, not self-crossing, not flat) in normalized frame coordinates.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "Vec<[f64; 2]>")]
pub struct Zone(pub Vec<Point>);
impl TryFrom<Vec<[f64; 2]>> for Zone {
    type Error = String;
    fn try_from(v: Vec<[f64; 2]>) -> Result<Self, String> {
        if v.len() < 3 || v.len() > MAX_ZONE_POINTS {
            return Err(format!("a zone needs 3 to {MAX_ZONE_POINTS} points, not {}", v.len()));
        }
        let pts = v.into_iter().map(|p| point(p, "point")).collect::<Result<Vec<_>, _>>()?;
        if zone::area(&pts) < 1e-6 {
            return Err("the polygon has no area (its points are in a line)".into());
        }
        if let Some((i, j)) = zone::self_crossing(&pts) {
            return Err(format!("the polygon crosses itself (edge {i} meets edge {j}, counting from 0)"));
        }
        Ok(Zone(pts))
    }
}

/// A line across the frame: two distinct points in normalized frame coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "Vec<[f64; 2]>")]
pub struct Line(pub [Point; 2]);
impl TryFrom<Vec<[f64; 2]>> for Line {
    type Error = String;
    fn try_from(v: Vec<[f64; 2]>) -> Result<Self, String> {
        let [a, b] = <[[f64; 2]; 2]>::try_from(v.as_slice())
            .map_err(|_| format!("a line is two points [[x1, y1], [x2, y2]], not {}", v.len()))?;
        let (a, b) = (point(a, "point")?, point(b, "point")?);
        if (a.x - b.x).abs() + (a.y - b.y).abs() < 1e-3 {
            return Err("the line's two points are the same".into());
        }
        Ok(Line([a, b]))
    }
}

/// Which crossings of a line alert. Image coordinates: `up` is towards the top of the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Any,
    LeftToRight,
    RightToLeft,
    Up,
    Down,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Any => "any",
            Direction::LeftToRight => "left_to_right",
            Direction::RightToLeft => "right_to_left",
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

/// `confirm = "N/M"`: present in N of the last M analysed frames (1 <= N <= M <= 64, or N = M up to 10000:
/// N consecutive frames).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Confirm {
    pub n: u32,
    pub m: u32,
}
impl TryFrom<String> for Confirm {
    type Error = String;
    fn try_from(v: String) -> Result<Self, String> {
        let bad = || format!("{v:?} is not N/M (in N of the last M analysed frames, e.g. \"3/5\")");
        let (n, m) = v.split_once('/').ok_or_else(bad)?;
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        let m: u32 = m.trim().parse().map_err(|_| bad())?;
        Confirm::new(n, m)
    }
}
impl Confirm {
    pub fn new(n: u32, m: u32) -> Result<Confirm, String> {
        if n == 0 || n > m {
            return Err(format!("{n}/{m}: need 1 <= N <= M"));
        }
        if m > MAX_CONFIRM_WINDOW && n != m {
            return Err(format!("{n}/{m}: M is at most {MAX_CONFIRM_WINDOW} (or N = M, consecutive frames)"));
        }
        if n > 10_000 {
            return Err(format!("{n}/{m}: at most 10000 frames"));
        }
        Ok(Confirm { n, m })
    }
}

/// A daily window of local time, `"HH:MM-HH:MM"`; it may cross midnight (`"22:00-06:00"`). The end is
/// not included; `24:00` is allowed as an end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct TimeWindow {
    /// Minutes after local midnight, 0..1440.
    pub start: u16,
    pub end: u16,
}
impl TryFrom<String> for TimeWindow {
    type Error = String;
    fn try_from(v: String) -> Result<Self, String> {
        let bad = |why: &str| format!("{v:?} is not a time window \"HH:MM-HH:MM\" ({why})");
        let (a, b) = v.split_once('-').ok_or_else(|| bad("no '-'"))?;
        let minutes = |t: &str| -> Option<u16> {
            let (h, m) = t.trim().split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            let total = h.checked_mul(60)?.checked_add(m)?;
            (m < 60 && total <= 1440).then_some(total)
        };
        let start = minutes(a).ok_or_else(|| bad("start: hours 00-23, minutes 00-59"))?;
        let end = minutes(b).ok_or_else(|| bad("end: hours 00-24, minutes 00-59"))?;
        if start >= 1440 {
            return Err(bad("a window starts before 24:00"));
        }
        if start == end {
            return Err(bad("start and end are the same: leave `schedule` out for always"));
        }
        Ok(TimeWindow { start, end })
    }
}

impl TimeWindow {
    /// Whether `minute` (after local midnight) is inside the window.
    pub fn contains(&self, minute: u16) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

fn default_confirm() -> Confirm {
    Confirm { n: 2, m: 3 }
}
fn default_clear_ms() -> u64 {
    3000
}

/// One `[[rule]]`: which objects, where, for how long, when.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Goes into the sentences. Required, unique.
    pub name: RuleName,
    /// Labels that may alert. Default: the manifest's `alert_classes`.
    #[serde(default)]
    pub classes: Option<Vec<String>>,
    /// Default: the manifest's score threshold.
    #[serde(default)]
    pub min_score: Option<Score>,
    /// Minimum box area in source pixels². Default 0.
    #[serde(default)]
    pub min_area: f32,
    /// Polygon, normalized x,y; an object is in it when the bottom-centre of its box is. Default: the
    /// whole frame.
    #[serde(default)]
    pub zone: Option<Zone>,
    /// Instead of a zone: alert when a track's bottom-centre crosses this segment.
    #[serde(default)]
    pub line: Option<Line>,
    /// For a line: which crossings alert. Default `any`.
    #[serde(default)]
    pub direction: Option<Direction>,
    /// In the zone in N of the last M analysed frames. Default "2/3".
    #[serde(default = "default_confirm")]
    pub confirm: Confirm,
    /// And in the zone this long, stream time (loitering). Default 0.
    #[serde(default)]
    pub dwell_ms: u64,
    /// Minimum gap, stream time, before this rule alerts again for a new track. Default 0.
    #[serde(default)]
    pub cooldown_ms: u64,
    /// Not in the zone this long: the alert is cleared (`$LKCLR`). Default 3000.
    #[serde(default = "default_clear_ms")]
    pub clear_ms: u64,
    /// Local time windows when the rule is armed. Default: always.
    #[serde(default)]
    pub schedule: Vec<TimeWindow>,
    /// Where the rule is in the file (`rule[0]`, or `rules` for the older table), for error messages.
    #[serde(skip)]
    pub table: String,
    /// Per-label overrides (the older `[rules.class.*]` tables only).
    #[serde(skip)]
    pub class: BTreeMap<String, ClassRule>,
    /// Per-class cooldown (the older table's `cooldown_ms`), stream time.
    #[serde(skip)]
    pub class_cooldown_ms: u64,
}

impl RuleConfig {
    /// The implicit rule the older `[rules]` table (or no rule at all) stands for.
    pub fn from_legacy(r: &RulesConfig) -> RuleConfig {
        RuleConfig {
            name: RuleName("default".into()),
            classes: r.classes.clone(),
            min_score: r.min_score,
            min_area: r.min_area,
            zone: None,
            line: None,
            direction: None,
            confirm: Confirm { n: r.confirm_frames.max(1), m: r.confirm_frames.max(1) },
            dwell_ms: 0,
            cooldown_ms: 0,
            clear_ms: default_clear_ms(),
            schedule: Vec::new(),
            table: "rules".into(),
            class: r.class.clone(),
            class_cooldown_ms: r.cooldown_ms,
        }
    }
}

/// `[track]`: how detections are followed from frame to frame.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackConfig {
    /// Overlap (IoU, 0.05..0.95) of a detection with a track's predicted box for it to continue the
    /// track. Default 0.3.
    pub min_iou: f32,
    /// Overlap a detection of another class needs to continue a track (a car seen once as a truck).
    /// min_iou..1. Default 0.5.
    pub class_flip_iou: f32,
    /// A track not seen for this long (stream time) ends; until then it coasts on its last velocity.
    /// 0..10000. Default 1000.
    pub max_coast_ms: u64,
    /// A track that has stayed in place (a parked car: seen 5 times or more, its centre within half its
    /// size of where it was first seen) ends only after this long unseen (occluded by a passing bus,
    /// missed by the detector): max_coast_ms..600000. Default 10000.
    pub stationary_coast_ms: u64,
    /// Detections from this score on keep tracks alive (and are shown by `replay`), though a rule
    /// counts only those above its own `min_score`: lowered, a parked car whose score wavers around the
    /// threshold stays seen (but weak detections can also carry a track onto another object: measure
    /// with `replay`). Default: the model's score threshold (no lowering); higher values are ignored.
    pub min_score: Option<Score>,
}

impl Default for TrackConfig {
    fn default() -> Self {
        TrackConfig {
            min_iou: 0.3,
            class_flip_iou: 0.5,
            max_coast_ms: 1000,
            stationary_coast_ms: 10_000,
            min_score: None,
        }
    }
}

/// A problem found after parsing: table, key, message.
pub type Problem = (String, &'static str, String);

/// Checks what one field cannot: the rule tables against each other and their own fields together.
pub fn validate(legacy: Option<&RulesConfig>, rules: &[RuleConfig], track: &TrackConfig) -> Result<(), Problem> {
    let p = |table: &str, key: &'static str, m: String| Err((table.to_string(), key, m));
    if !(0.05..=0.95).contains(&track.min_iou) {
        return p("track", "min_iou", format!("{} is not 0.05..0.95", track.min_iou));
    }
    if !(track.min_iou..=1.0).contains(&track.class_flip_iou) {
        return p("track", "class_flip_iou", format!("{} is not min_iou..1", track.class_flip_iou));
    }
    if track.max_coast_ms > 10_000 {
        return p("track", "max_coast_ms", "must be 0..10000".into());
    }
    if !(track.max_coast_ms..=600_000).contains(&track.stationary_coast_ms) {
        return p("track", "stationary_coast_ms", "must be max_coast_ms..600000 (10 minutes)".into());
    }
    if let Some(r) = legacy {
        if !rules.is_empty() {
            return p("rules", "classes", "use either the older [rules] table or [[rule]] entries, not both".into());
        }
        check_filters(&r.classes, r.min_area).map_err(|(k, m)| ("rules".to_string(), k, m))?;
        if !(1..=10_000).contains(&r.confirm_frames) {
            return p("rules", "confirm_frames", "must be 1..10000".into());
        }
        for (label, c) in &r.class {
            let table = format!("rules.class.{label}");
            if c.confirm_frames.is_some_and(|n| !(1..=10_000).contains(&n)) {
                return p(&table, "confirm_frames", "must be 1..10000".into());
            }
            check_filters(&None, c.min_area.unwrap_or(0.0)).map_err(|(k, m)| (table.clone(), k, m))?;
        }
    }
    if rules.len() > MAX_RULES {
        return p("rule", "name", format!("{} rules: at most {MAX_RULES}", rules.len()));
    }
    for (i, r) in rules.iter().enumerate() {
        let t = r.table.as_str();
        if rules.get(..i).unwrap_or(&[]).iter().any(|o| o.name == r.name) {
            return p(t, "name", format!("{:?} is the name of an earlier rule: names must be unique", r.name.0));
        }
        check_filters(&r.classes, r.min_area).map_err(|(k, m)| (t.to_string(), k, m))?;
        if r.zone.is_some() && r.line.is_some() {
            return p(t, "line", "a rule has a zone or a line, not both".into());
        }
        match (&r.line, r.direction) {
            (None, Some(_)) => return p(t, "direction", "only a `line` has a direction".into()),
            (Some(Line([a, b])), Some(d)) => {
                let steep = (b.y - a.y).abs() > (b.x - a.x).abs();
                let ok = match d {
                    Direction::Any => true,
                    Direction::LeftToRight | Direction::RightToLeft => steep,
                    Direction::Up | Direction::Down => !steep,
                };
                if !ok {
                    let which = if steep {
                        "a mostly vertical line is crossed left_to_right or right_to_left"
                    } else {
                        "a mostly horizontal line is crossed up or down"
                    };
                    return p(t, "direction", format!("{}: {which}", d.name()));
                }
            }
            _ => {}
        }
        if r.schedule.len() > 16 {
            return p(t, "schedule", format!("{} windows: at most 16", r.schedule.len()));
        }
        if r.line.is_some() && r.dwell_ms > 0 {
            return p(t, "dwell_ms", "a line is crossed, not dwelt on: dwell_ms needs a zone".into());
        }
        for (key, v, min) in
            [("dwell_ms", r.dwell_ms, 0), ("cooldown_ms", r.cooldown_ms, 0), ("clear_ms", r.clear_ms, 100)]
        {
            if !(min..=MAX_RULE_MS).contains(&v) {
                return p(t, key, format!("{v} is not {min}..{MAX_RULE_MS} (one day)"));
            }
        }
    }
    Ok(())
}

/// `classes` not empty, `min_area` a finite area.
fn check_filters(classes: &Option<Vec<String>>, min_area: f32) -> Result<(), (&'static str, String)> {
    if classes.as_ref().is_some_and(|c| c.is_empty()) {
        return Err((
            "classes",
            "is empty: name the labels that may alert (leave it out for the model's alert classes)".into(),
        ));
    }
    if !min_area.is_finite() || min_area < 0.0 {
        return Err(("min_area", format!("{min_area} is not an area (a finite number >= 0, in pixels²)")));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)] // tests may panic
mod tests {
    use super::*;

    #[test]
    fn time_windows_parse_and_cross_midnight() {
        let w = TimeWindow::try_from("22:00-06:00".to_string()).unwrap();
        assert_eq!((w.start, w.end), (1320, 360));
        assert!(w.contains(1320) && w.contains(1439) && w.contains(0) && w.contains(359));
        assert!(!w.contains(360) && !w.contains(720) && !w.contains(1319));
        let d = TimeWindow::try_from("08:30-24:00".to_string()).unwrap();
        assert!(d.contains(510) && d.contains(1439) && !d.contains(0) && !d.contains(509));
        for bad in ["8:00-9:00", "25:00-01:00", "10:60-11:00", "10:00", "10:00-10:00", "24:00-01:00", "aa:bb-cc:dd", ""]
        {
            assert!(TimeWindow::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }

    #[test]
    fn confirm_is_n_of_m() {
        assert_eq!(Confirm::try_from("3/5".to_string()).unwrap(), Confirm { n: 3, m: 5 });
        assert_eq!(Confirm::try_from("100/100".to_string()).unwrap(), Confirm { n: 100, m: 100 });
        for bad in ["0/5", "6/5", "3/65", "3", "a/b", "-1/2", "10001/10001"] {
            assert!(Confirm::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }

    #[test]
    fn zones_and_lines_are_checked() {
        let z = |v: &[[f64; 2]]| Zone::try_from(v.to_vec());
        assert!(z(&[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]).is_ok());
        assert!(z(&[[0.0, 0.0], [1.0, 0.0]]).unwrap_err().contains("3 to 32"));
        assert!(z(&[[0.0, 0.0], [1.1, 0.0], [1.0, 1.0]]).unwrap_err().contains("outside"));
        assert!(z(&[[0.0, 0.0], [f64::NAN, 0.0], [1.0, 1.0]]).is_err());
        // A bow tie crosses itself.
        assert!(z(&[[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.5]]).unwrap_err().contains("crosses itself"));
        assert!(z(&[[0.0, 0.0], [0.5, 0.5], [1.0, 1.0]]).unwrap_err().contains("no area"));
        let l = |v: &[[f64; 2]]| Line::try_from(v.to_vec());
        assert!(l(&[[0.1, 0.5], [0.9, 0.5]]).is_ok());
        assert!(l(&[[0.1, 0.5]]).is_err());
        assert!(l(&[[0.5, 0.5], [0.5, 0.5]]).is_err());
        assert!(RuleName::try_from("lawn-2_b".to_string()).is_ok());
        for bad in ["", "a,b", "a*b", "x$", "a b", &"x".repeat(33)] {
            assert!(RuleName::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }
}
