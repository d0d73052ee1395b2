//! Tracking: following each object from one analysed frame to the next, so it alerts once.
//!
//! Why: without it a rule only sees "a car in this frame", so a parked van alerts once per cooldown for
//! as long as it stays, and two people who arrive together are one event. A track id says "the same car
//! as before". The method is the simple one that holds at a few to 30 analysed frames a second: each
//! track predicts where its box is now (constant velocity of the box centre), and detections are matched
//! to predictions greedily by IoU, best pair first. A detection of the same class continues a track from
//! `min_iou`; one of another class only from the higher `class_flip_iou` (a car seen once as a truck is
//! still the same object). A track keeps the class it has been seen as most (summed score), so a flip
//! does not change what it alerts as. A track not seen for `max_coast_ms` ends (`stationary_coast_ms` for
//! one that has stayed in place: a parked van hidden by a passing bus is still the same van); until then
//! it coasts on its velocity, so an object missed for a few frames keeps its id. The tracker is fed from
//! a lower score than the rules count (`[track] min_score`), so an object whose score wavers around the
//! threshold keeps its track. Capacity is fixed ([`MAX_TRACKS`],
//! heapless); when it is full, a new detection replaces the longest-unseen coasting track, or stays
//! untracked (counted). No allocation per frame.

// Input reaches this code (files, drivers, the wire): no panic path. Arithmetic is checked, saturating
// or provably bounded (each `allow` says why), and indexing goes through `get`.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use crate::config::TrackConfig;
use crate::detect::{iou, Detection};

/// Most objects followed at once.
pub const MAX_TRACKS: usize = 64;
/// Overlap with its last box a stationary track unseen for longer than `max_coast_ms` needs to be
/// picked up again.
const REACQUIRE_IOU: f32 = 0.6;
/// Longest prediction ahead of the last sighting (ms of stream time).
const PREDICT_MS: u64 = 250;
/// An unmatched detection lying this much (of its own area) inside the box a track of its class was
/// matched to in the same frame, or holding that box this much, is that object seen twice (a whole body
/// and its upper half), not a new object.
const NESTED: f32 = 0.8;

fn centre(b: &[f32; 4]) -> [f32; 2] {
    [(b[0] + b[2]) * 0.5, (b[1] + b[3]) * 0.5]
}

/// How much of box `a` lies inside box `b` (intersection over a's area).
fn inside(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let area = (a[2] - a[0]).max(0.0) * (a[3] - a[1]).max(0.0);
    if area > 0.0 {
        iw * ih / area
    } else {
        0.0
    }
}

/// Classes a track remembers votes for.
const VOTES: usize = 4;

/// One followed object.
#[derive(Debug, Clone)]
pub struct Track {
    pub id: u32,
    /// The class it has been seen as most (summed score).
    pub class_id: u16,
    /// The last seen box, source pixels.
    pub bbox: [f32; 4],
    /// Velocity of the box centre, pixels per millisecond of stream time.
    velocity: [f32; 2],
    /// Stream time it was last seen, and first seen.
    pub last_pts: u64,
    pub first_pts: u64,
    /// Frames it was seen in.
    pub hits: u32,
    /// Centre of the box when first seen.
    first_centre: [f32; 2],
    /// The detection (index into this frame's list) it was matched to, if seen in this frame.
    pub det: Option<usize>,
    votes: heapless::Vec<(u16, f32), VOTES>,
}

impl Track {
    /// Where the box should be at `pts_ms`. The velocity is trusted for [`PREDICT_MS`] at most: beyond
    /// that a missed object is as likely to have stopped as to have gone on.
    fn predict(&self, pts_ms: u64) -> [f32; 4] {
        let dt = pts_ms.saturating_sub(self.last_pts).min(PREDICT_MS) as f32;
        let [dx, dy] = [self.velocity[0] * dt, self.velocity[1] * dt];
        let b = self.bbox;
        [b[0] + dx, b[1] + dy, b[2] + dx, b[3] + dy]
    }

    /// Seen often and still where it was first seen (within half its size): a parked car, a person
    /// waiting. Such a track may stay unseen longer before it ends.
    pub fn stationary(&self) -> bool {
        let b = self.bbox;
        let c = centre(&b);
        let size = (b[2] - b[0]).max(b[3] - b[1]).max(1.0);
        self.hits >= 5 && (c[0] - self.first_centre[0]).hypot(c[1] - self.first_centre[1]) < 0.5 * size
    }

    fn knows(&self, class_id: u16) -> bool {
        self.votes.iter().any(|(c, _)| *c == class_id)
    }

    fn vote(&mut self, class_id: u16, score: f32) {
        if let Some(v) = self.votes.iter_mut().find(|(c, _)| *c == class_id) {
            v.1 += score;
        } else if self.votes.push((class_id, score)).is_err() {
            // Full: the least-voted class makes room.
            if let Some(v) = self.votes.iter_mut().min_by(|a, b| a.1.total_cmp(&b.1)) {
                *v = (class_id, score);
            }
        }
        if let Some((c, _)) = self.votes.iter().max_by(|a, b| a.1.total_cmp(&b.1)) {
            self.class_id = *c;
        }
    }

    fn observe(&mut self, d: &Detection, pts_ms: u64) {
        let dt = pts_ms.saturating_sub(self.last_pts).max(1) as f32;
        let (old, new) = (centre(&self.bbox), centre(&d.bbox));
        let v = [(new[0] - old[0]) / dt, (new[1] - old[1]) / dt];
        self.velocity =
            if self.hits <= 1 { v } else { [0.5 * (self.velocity[0] + v[0]), 0.5 * (self.velocity[1] + v[1])] };
        if !self.velocity.iter().all(|x| x.is_finite()) {
            self.velocity = [0.0, 0.0];
        }
        self.bbox = d.bbox;
        self.last_pts = pts_ms;
        self.hits = self.hits.saturating_add(1);
        self.vote(d.class_id, d.score);
    }
}

/// The tracker: live tracks and this frame's assignment of detections to them.
#[derive(Debug)]
pub struct Tracker {
    cfg: TrackConfig,
    tracks: heapless::Vec<Track, MAX_TRACKS>,
    next_id: u32,
    /// For each detection of the last frame: the track it belongs to.
    assigned: Vec<Option<u32>>,
    /// Detections that found no room (capacity full of tracks seen in this frame).
    pub untracked: u64,
}

impl Tracker {
    /// A tracker for frames of at most `max_dets` detections.
    pub fn new(cfg: TrackConfig, max_dets: usize) -> Tracker {
        Tracker { cfg, tracks: heapless::Vec::new(), next_id: 1, assigned: Vec::with_capacity(max_dets), untracked: 0 }
    }

    /// The live tracks (seen in this frame or coasting).
    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    /// Whether detection `i` of the last frame is a second view of its track (not the one the track was
    /// matched to).
    pub fn is_duplicate(&self, i: usize) -> bool {
        self.track_of(i).is_some_and(|id| self.tracks.iter().any(|t| t.id == id && t.det != Some(i)))
    }

    /// The track of detection `i` of the last frame.
    pub fn track_of(&self, i: usize) -> Option<u32> {
        self.assigned.get(i).copied().flatten()
    }

    /// Feeds one analysed frame's detections (source pixels) at stream time `pts_ms`.
    pub fn update(&mut self, dets: &[Detection], pts_ms: u64) {
        let (coast, still) = (self.cfg.max_coast_ms, self.cfg.stationary_coast_ms);
        self.tracks.retain(|t| pts_ms.saturating_sub(t.last_pts) <= if t.stationary() { still } else { coast });
        for t in self.tracks.iter_mut() {
            t.det = None;
        }
        self.assigned.clear();
        // Room for every detection was reserved at start; a larger list (cannot happen: the decoder's
        // own capacity is the same) leaves the rest untracked.
        let n = dets.len().min(self.assigned.capacity());
        self.assigned.resize(n, None);
        // Greedy: the best remaining (track, detection) pair first, until no pair qualifies.
        loop {
            let mut best: Option<(usize, usize, f32)> = None;
            for (ti, t) in self.tracks.iter().enumerate() {
                if t.det.is_some() {
                    continue;
                }
                let pred = t.predict(pts_ms);
                for (di, d) in dets.iter().enumerate().take(n) {
                    if self.assigned.get(di).copied().flatten().is_some() {
                        continue;
                    }
                    // Where it was predicted, or where it was last seen (it may have stopped).
                    let o = iou(&pred, &d.bbox).max(iou(&t.bbox, &d.bbox));
                    let same = t.class_id == d.class_id || t.knows(d.class_id);
                    // A track unseen for longer than max_coast_ms (a stationary one, kept) is picked up
                    // again only by a detection of its class right where it stood: someone walking
                    // through that spot later is someone else.
                    let long_gone = pts_ms.saturating_sub(t.last_pts) > self.cfg.max_coast_ms;
                    let need = match (long_gone, same) {
                        (true, true) => self.cfg.min_iou.max(REACQUIRE_IOU),
                        (true, false) => f32::INFINITY,
                        (false, true) => self.cfg.min_iou,
                        (false, false) => self.cfg.class_flip_iou,
                    };
                    // Same-class pairs win ties against flips.
                    let rank = if same { o } else { o - 0.25 };
                    if o >= need && best.is_none_or(|(_, _, r)| rank > r) {
                        best = Some((ti, di, rank));
                    }
                }
            }
            let Some((ti, di, _)) = best else { break };
            let (Some(t), Some(d)) = (self.tracks.get_mut(ti), dets.get(di)) else { break };
            t.observe(d, pts_ms);
            t.det = Some(di);
            if let Some(a) = self.assigned.get_mut(di) {
                *a = Some(t.id);
            }
        }
        // New tracks for the rest, best score first (the decoder's NMS sorted them so), unless a
        // detection and the box of a track of its class matched in this frame are nested: then it is a
        // duplicate view of that track.
        for (di, d) in dets.iter().enumerate().take(n) {
            if self.assigned.get(di).copied().flatten().is_some() {
                continue;
            }
            let host = self
                .tracks
                .iter()
                .filter(|t| t.det.is_some() && (t.class_id == d.class_id || t.knows(d.class_id)))
                .map(|t| (inside(&d.bbox, &t.bbox).max(inside(&t.bbox, &d.bbox)), t.id))
                .filter(|(o, _)| *o >= NESTED)
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, id)| id);
            if let Some(id) = host {
                if let Some(a) = self.assigned.get_mut(di) {
                    *a = Some(id);
                }
                continue;
            }
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            let mut votes = heapless::Vec::new();
            let _ = votes.push((d.class_id, d.score));
            let track = Track {
                id,
                class_id: d.class_id,
                bbox: d.bbox,
                velocity: [0.0, 0.0],
                last_pts: pts_ms,
                first_pts: pts_ms,
                hits: 1,
                first_centre: centre(&d.bbox),
                det: Some(di),
                votes,
            };
            let placed = match self.tracks.push(track) {
                Ok(()) => true,
                Err(track) => {
                    // Full: replace the longest-unseen track that is not in this frame.
                    let victim = self.tracks.iter_mut().filter(|t| t.det.is_none()).min_by_key(|t| t.last_pts);
                    match victim {
                        Some(v) => {
                            *v = track;
                            true
                        }
                        None => false,
                    }
                }
            };
            if placed {
                if let Some(a) = self.assigned.get_mut(di) {
                    *a = Some(id);
                }
            } else {
                self.untracked = self.untracked.saturating_add(1);
            }
        }
        self.untracked = self.untracked.saturating_add(dets.len().saturating_sub(n) as u64);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // tests may panic
mod tests {
    use super::*;

    fn d(class_id: u16, x: f32, y: f32) -> Detection {
        Detection { class_id, score: 0.8, bbox: [x, y, x + 40.0, y + 80.0] }
    }

    fn tracker() -> Tracker {
        Tracker::new(TrackConfig::default(), 16)
    }

    fn ids(t: &Tracker, n: usize) -> Vec<Option<u32>> {
        (0..n).map(|i| t.track_of(i)).collect()
    }

    #[test]
    fn two_objects_crossing_keep_their_ids() {
        // A walks right, B walks left, 8 px per 40 ms frame each; they pass each other at x = 100.
        let mut t = tracker();
        let mut a_ids = Vec::new();
        let mut b_ids = Vec::new();
        for f in 0..30u64 {
            let step = f as f32 * 8.0;
            let a = d(0, -20.0 + step, 100.0);
            let b = d(0, 220.0 - step, 104.0);
            // List them in both orders, so the order of detections does not decide.
            let dets = if f % 2 == 0 { [a, b] } else { [b, a] };
            t.update(&dets, f * 40);
            let (ia, ib) = if f % 2 == 0 { (0, 1) } else { (1, 0) };
            a_ids.push(t.track_of(ia).unwrap());
            b_ids.push(t.track_of(ib).unwrap());
        }
        assert!(a_ids.iter().all(|&i| i == a_ids[0]), "{a_ids:?}");
        assert!(b_ids.iter().all(|&i| i == b_ids[0]), "{b_ids:?}");
        assert_ne!(a_ids[0], b_ids[0]);
    }

    #[test]
    fn an_object_missed_for_a_few_frames_keeps_its_id_and_coasts() {
        let mut t = tracker();
        let mut seen = Vec::new();
        for f in 0..20u64 {
            let dets = [d(1, 10.0 + f as f32 * 6.0, 50.0)];
            // Missed in frames 8..12 (200 ms at 40 ms a frame), where it keeps moving.
            let dets: &[Detection] = if (8..13).contains(&f) { &[] } else { &dets };
            t.update(dets, f * 40);
            if !dets.is_empty() {
                seen.push(t.track_of(0).unwrap());
            }
        }
        assert!(seen.iter().all(|&i| i == seen[0]), "{seen:?}");
        // Gone for longer than max_coast_ms: the track ends, the next sighting is a new object.
        t.update(&[], 2000);
        t.update(&[d(1, 130.0, 50.0)], 2100);
        assert_ne!(t.track_of(0), Some(seen[0]));
        assert_eq!(t.tracks().len(), 1);
    }

    #[test]
    fn a_class_flip_keeps_the_id_and_the_majority_class() {
        let mut t = tracker();
        let car = 2;
        let truck = 7;
        let mut seen = Vec::new();
        for f in 0..10u64 {
            let class = if f == 5 { truck } else { car };
            t.update(&[d(class, 300.0, 100.0)], f * 40);
            seen.push(t.track_of(0).unwrap());
            assert_eq!(t.tracks()[0].class_id, car, "frame {f}");
        }
        assert!(seen.iter().all(|&i| i == seen[0]), "{seen:?}");
        // A different class that only overlaps a little is another object.
        t.update(&[d(car, 300.0, 100.0), d(truck, 330.0, 100.0)], 400);
        assert_eq!(ids(&t, 2)[0], Some(seen[0]));
        assert_ne!(ids(&t, 2)[1], Some(seen[0]));
    }

    #[test]
    fn a_parked_object_survives_a_long_occlusion_a_moving_one_does_not() {
        let mut t = tracker();
        for f in 0..10u64 {
            t.update(&[d(2, 300.0 + (f % 2) as f32, 100.0), d(0, f as f32 * 30.0, 300.0)], f * 100);
        }
        let (van, walker) = (t.track_of(0).unwrap(), t.track_of(1).unwrap());
        assert!(t.tracks().iter().find(|x| x.id == van).unwrap().stationary());
        assert!(!t.tracks().iter().find(|x| x.id == walker).unwrap().stationary());
        // Both hidden for 5 s: the walker's track ends after 1 s, the van's lives on.
        t.update(&[], 6000);
        t.update(&[d(2, 300.0, 100.0)], 6100);
        assert_eq!(t.track_of(0), Some(van));
        assert_eq!(t.tracks().len(), 1);
        // Hidden again; what comes 3 s later half over its spot (IoU 1/3) is another object.
        t.update(&[d(2, 320.0, 100.0)], 9100);
        assert_ne!(t.track_of(0), Some(van));
    }

    #[test]
    fn capacity_is_fixed_and_overflow_is_counted() {
        let mut t = Tracker::new(TrackConfig::default(), 2 * MAX_TRACKS);
        let many: Vec<Detection> = (0..MAX_TRACKS + 3).map(|i| d(0, i as f32 * 100.0, 0.0)).collect();
        t.update(&many, 0);
        assert_eq!(t.tracks().len(), MAX_TRACKS);
        assert_eq!(t.untracked, 3);
        assert_eq!(t.track_of(MAX_TRACKS), None);
    }
}
