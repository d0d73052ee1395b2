//! Zones and lines: the plane geometry of "where", in normalized frame coordinates (0..1 each way).
//!
//! Why normalized: a zone drawn once on a 640x480 snapshot must stay right when the camera is set to
//! 1280x720. An object's place is the bottom-centre of its box (where a person stands or a car's wheels
//! are), not the box centre, which for a tall person near the camera can be metres away from them.
//! Containment is the even-odd rule, with points on an edge counted as inside (so a zone that shares an
//! edge with the frame's border holds objects touching the border). All plain functions, no state.

// Input reaches this code (files, drivers, the wire): no panic path. Arithmetic is checked, saturating
// or provably bounded (each `allow` says why), and indexing goes through `get`.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]
// Float arithmetic cannot overflow into a panic; the lint is for integers here.
#![allow(clippy::arithmetic_side_effects)]

/// A point in normalized frame coordinates: x to the right, y down.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub x: f32,
    pub y: f32,
}

/// Where a box (x1, y1, x2, y2 in pixels of a `width` x `height` frame) stands: its bottom-centre,
/// normalized.
pub fn anchor(bbox: &[f32; 4], width: u32, height: u32) -> Point {
    let (w, h) = (width.max(1) as f32, height.max(1) as f32);
    Point { x: (bbox[0] + bbox[2]) * 0.5 / w, y: bbox[3] / h }
}

fn cross(o: Point, a: Point, b: Point) -> f32 {
    (a.x - o.x) * (b.y - o.y) - (a.y - o.y) * (b.x - o.x)
}

const EPS: f32 = 1e-6;

fn on_segment(p: Point, a: Point, b: Point) -> bool {
    cross(a, b, p).abs() <= EPS
        && p.x >= a.x.min(b.x) - EPS
        && p.x <= a.x.max(b.x) + EPS
        && p.y >= a.y.min(b.y) - EPS
        && p.y <= a.y.max(b.y) + EPS
}

/// Whether segments a-b and c-d meet (touching or overlapping counts).
pub fn segments_meet(a: Point, b: Point, c: Point, d: Point) -> bool {
    let (d1, d2) = (cross(c, d, a), cross(c, d, b));
    let (d3, d4) = (cross(a, b, c), cross(a, b, d));
    if ((d1 > EPS && d2 < -EPS) || (d1 < -EPS && d2 > EPS)) && ((d3 > EPS && d4 < -EPS) || (d3 < -EPS && d4 > EPS)) {
        return true;
    }
    on_segment(a, c, d) || on_segment(b, c, d) || on_segment(c, a, b) || on_segment(d, a, b)
}

fn edge(pts: &[Point], i: usize) -> Option<(Point, Point)> {
    let a = *pts.get(i)?;
    let b = *pts.get((i + 1) % pts.len().max(1))?;
    Some((a, b))
}

/// The first pair of non-adjacent edges of the closed polygon `pts` that meet, if any (edge i goes from
/// point i to point i+1). Adjacent edges share a point and meet there by construction; they are checked
/// only for folding back onto each other.
pub fn self_crossing(pts: &[Point]) -> Option<(usize, usize)> {
    let n = pts.len();
    for i in 0..n {
        let (a, b) = edge(pts, i)?;
        for j in i + 1..n {
            let (c, d) = edge(pts, j)?;
            let adjacent = j == i + 1 || (i == 0 && j == n - 1);
            if adjacent {
                // They share one point; they must not overlap along a line beyond it.
                let shared_is_b = j == i + 1;
                let (far_self, far_other) = if shared_is_b { (a, d) } else { (b, c) };
                let joint = if shared_is_b { b } else { a };
                if cross(joint, far_self, far_other).abs() <= EPS
                    && (far_self.x - joint.x) * (far_other.x - joint.x)
                        + (far_self.y - joint.y) * (far_other.y - joint.y)
                        > 0.0
                {
                    return Some((i, j));
                }
                continue;
            }
            if segments_meet(a, b, c, d) {
                return Some((i, j));
            }
        }
    }
    None
}

/// The (unsigned) area of the polygon `pts`.
pub fn area(pts: &[Point]) -> f32 {
    let twice: f32 = (0..pts.len()).filter_map(|i| edge(pts, i)).map(|(a, b)| a.x * b.y - b.x * a.y).sum();
    (twice * 0.5).abs()
}

/// Whether `p` is inside the polygon `pts` or on its boundary.
pub fn contains(pts: &[Point], p: Point) -> bool {
    let mut inside = false;
    for i in 0..pts.len() {
        let Some((a, b)) = edge(pts, i) else { break };
        if on_segment(p, a, b) {
            return true;
        }
        if (a.y > p.y) != (b.y > p.y) {
            let x = a.x + (p.y - a.y) / (b.y - a.y) * (b.x - a.x);
            if p.x < x {
                inside = !inside;
            }
        }
    }
    inside
}

/// Which side of the line a→b the point p is on: 1 (left, looking from a to b in image coordinates),
/// -1, or 0 on the line.
pub fn side(a: Point, b: Point, p: Point) -> i8 {
    let c = cross(a, b, p);
    if c > EPS {
        1
    } else if c < -EPS {
        -1
    } else {
        0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)] // tests may panic
mod tests {
    use super::*;

    fn pts(v: &[(f32, f32)]) -> Vec<Point> {
        v.iter().map(|&(x, y)| Point { x, y }).collect()
    }
    fn p(x: f32, y: f32) -> Point {
        Point { x, y }
    }

    #[test]
    fn convex_polygon_contains_its_inside_and_its_edges() {
        let sq = pts(&[(0.2, 0.2), (0.8, 0.2), (0.8, 0.8), (0.2, 0.8)]);
        assert!(contains(&sq, p(0.5, 0.5)));
        assert!(contains(&sq, p(0.2, 0.5)), "left edge");
        assert!(contains(&sq, p(0.8, 0.8)), "corner");
        assert!(contains(&sq, p(0.5, 0.2)), "top edge");
        assert!(!contains(&sq, p(0.1, 0.5)));
        assert!(!contains(&sq, p(0.5, 0.81)));
        assert!(!contains(&sq, p(0.9, 0.9)));
    }

    #[test]
    fn concave_polygon_excludes_its_notch() {
        // A U shape: the notch between the arms (x 0.4..0.6, y 0..0.6) is outside.
        let u = pts(&[(0.0, 0.0), (0.4, 0.0), (0.4, 0.6), (0.6, 0.6), (0.6, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]);
        assert!(self_crossing(&u).is_none());
        assert!(contains(&u, p(0.2, 0.3)), "left arm");
        assert!(contains(&u, p(0.8, 0.3)), "right arm");
        assert!(contains(&u, p(0.5, 0.8)), "base");
        assert!(!contains(&u, p(0.5, 0.3)), "notch");
        assert!(contains(&u, p(0.5, 0.6)), "the notch's bottom edge");
        // A ray through a vertex (y = 0.6 passes two vertices) does not miscount.
        assert!(contains(&u, p(0.1, 0.6)) && contains(&u, p(0.9, 0.6)));
        assert!(!contains(&u, p(1.1, 0.6)));
    }

    #[test]
    fn self_crossing_and_area() {
        let bow = pts(&[(0.0, 0.0), (1.0, 1.0), (1.0, 0.0), (0.0, 1.0)]);
        assert_eq!(self_crossing(&bow), Some((0, 2)));
        let folded = pts(&[(0.0, 0.0), (1.0, 0.0), (0.5, 0.0)]);
        assert!(self_crossing(&folded).is_some());
        let tri = pts(&[(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)]);
        assert!(self_crossing(&tri).is_none());
        assert!((area(&tri) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn segments_and_sides() {
        let (a, b) = (p(0.5, 0.0), p(0.5, 1.0));
        assert!(segments_meet(p(0.4, 0.5), p(0.6, 0.5), a, b));
        assert!(!segments_meet(p(0.1, 0.5), p(0.4, 0.5), a, b));
        assert!(!segments_meet(p(0.4, 1.2), p(0.6, 1.2), a, b), "beyond the line's end");
        assert_eq!(side(a, b, p(0.4, 0.5)), -side(a, b, p(0.6, 0.5)));
        assert_eq!(side(a, b, p(0.5, 0.3)), 0);
        let b2 = anchor(&[100.0, 20.0, 300.0, 200.0], 400, 200);
        assert_eq!((b2.x, b2.y), (0.5, 1.0));
    }
}
