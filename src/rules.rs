//! Rules: deciding, frame by frame, whether what the detector sees is worth an alarm.
//!
//! Why plain, explicit rules: whoever wires a relay to this sensor must be able to predict it. A detection
//! counts for its class when its score and box area pass that class's minimums. A class alerts once it has
//! counted in `confirm_frames` consecutive analysed frames (one flickering frame never trips the relay), and
//! then stays quiet for `cooldown_ms` of stream time (a parked car does not ring every frame). Time is the
//! frame's presentation time, not the wall clock, so a clip gives the same alerts however fast it is read.
//! Zones and tracking come later.

use crate::config::RulesConfig;
use crate::detect::Detection;

/// The decision thresholds for one class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassPolicy {
    pub enabled: bool,
    pub min_score: f32,
    pub min_area: f32,
    pub confirm_frames: u32,
    pub cooldown_ms: u64,
}

/// A confirmed detection that passed every rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Alert {
    /// Wall clock of the frame's capture, Unix milliseconds.
    pub unix_ms: u64,
    /// Stream time of the frame, milliseconds.
    pub pts_ms: u64,
    pub frame: u64,
    pub class_id: u16,
    pub score: f32,
    /// x1, y1, x2, y2 in source pixels.
    pub bbox: [f32; 4],
}

/// A rule names a label the model does not have. `table` and `key` locate it in the config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{label:?} is not a label of this model")]
pub struct RulesError {
    pub table: String,
    pub key: String,
    pub label: String,
}

#[derive(Debug)]
pub struct Rules {
    policies: Vec<ClassPolicy>,
    streak: Vec<u32>,
    last_alert_pts: Vec<Option<u64>>,
    best: Vec<Option<Detection>>,
}

impl Rules {
    /// Builds per-class policies from the config for a model with `labels`; `default_classes` and
    /// `default_min_score` come from the model manifest and apply where the config is silent. Unknown
    /// label names in the config are errors (a typo would silently disable an alarm).
    pub fn new(
        cfg: &RulesConfig,
        labels: &[String],
        default_classes: &[String],
        default_min_score: f32,
    ) -> Result<Rules, RulesError> {
        let classes = cfg.classes.as_deref().unwrap_or(default_classes);
        let min_score = cfg.min_score.map_or(default_min_score, |s| s.0);
        let unknown = |name: &str| !labels.iter().any(|l| l == name);
        if let Some(name) = classes.iter().find(|n| unknown(n)) {
            return Err(RulesError { table: "rules".into(), key: "classes".into(), label: name.clone() });
        }
        if let Some(name) = cfg.class.keys().find(|n| unknown(n)) {
            return Err(RulesError { table: "rules.class".into(), key: name.clone(), label: name.clone() });
        }
        let policies = labels
            .iter()
            .map(|l| {
                let o = cfg.class.get(l).cloned().unwrap_or_default();
                ClassPolicy {
                    enabled: classes.is_empty() || classes.contains(l),
                    min_score: o.min_score.map_or(min_score, |s| s.0),
                    min_area: o.min_area.unwrap_or(cfg.min_area),
                    confirm_frames: o.confirm_frames.unwrap_or(cfg.confirm_frames).max(1),
                    cooldown_ms: o.cooldown_ms.unwrap_or(cfg.cooldown_ms),
                }
            })
            .collect();
        let n = labels.len();
        Ok(Rules { policies, streak: vec![0; n], last_alert_pts: vec![None; n], best: vec![None; n] })
    }

    pub fn policy(&self, class_id: u16) -> Option<&ClassPolicy> {
        self.policies.get(class_id as usize)
    }

    /// Feeds one analysed frame's detections; appends the alerts it raises to `out` (capacity: one per
    /// class, reserved by the caller).
    pub fn update(&mut self, dets: &[Detection], frame: u64, pts_ms: u64, unix_ms: u64, out: &mut Vec<Alert>) {
        self.best.iter_mut().for_each(|b| *b = None);
        for d in dets {
            let Some(p) = self.policies.get(d.class_id as usize) else { continue };
            if !p.enabled || d.score < p.min_score || d.area() < p.min_area {
                continue;
            }
            let slot = &mut self.best[d.class_id as usize];
            if slot.is_none_or(|b| d.score > b.score) {
                *slot = Some(*d);
            }
        }
        for c in 0..self.policies.len() {
            let Some(d) = self.best[c] else {
                self.streak[c] = 0;
                continue;
            };
            self.streak[c] = self.streak[c].saturating_add(1);
            let p = &self.policies[c];
            let cooled = self.last_alert_pts[c].is_none_or(|t| pts_ms.saturating_sub(t) >= p.cooldown_ms);
            if self.streak[c] >= p.confirm_frames && cooled && out.len() < out.capacity() {
                self.last_alert_pts[c] = Some(pts_ms);
                out.push(Alert { unix_ms, pts_ms, frame, class_id: c as u16, score: d.score, bbox: d.bbox });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        vec!["person".into(), "car".into(), "cat".into()]
    }

    fn cfg() -> RulesConfig {
        RulesConfig {
            classes: Some(vec!["person".into(), "car".into()]),
            min_score: Some(crate::config::Score(0.5)),
            confirm_frames: 2,
            cooldown_ms: 1000,
            ..Default::default()
        }
    }

    fn d(class_id: u16, score: f32) -> Detection {
        Detection { class_id, score, bbox: [0.0, 0.0, 10.0, 10.0] }
    }

    fn run(r: &mut Rules, frames: &[&[Detection]], step_ms: u64) -> Vec<(u16, u64)> {
        let mut all = Vec::new();
        let mut out = Vec::with_capacity(8);
        for (i, dets) in frames.iter().enumerate() {
            out.clear();
            r.update(dets, i as u64, i as u64 * step_ms, 0, &mut out);
            all.extend(out.iter().map(|a| (a.class_id, a.frame)));
        }
        all
    }

    #[test]
    fn a_single_frame_flicker_never_alerts() {
        let mut r = Rules::new(&cfg(), &labels(), &[], 0.9).unwrap();
        let p = [d(0, 0.9)];
        assert!(run(&mut r, &[&p, &[], &p, &[], &p], 100).is_empty());
    }

    #[test]
    fn confirmation_then_cooldown_then_again() {
        let mut r = Rules::new(&cfg(), &labels(), &[], 0.9).unwrap();
        let p = [d(0, 0.9)];
        // Present every 400 ms frame: confirmed at frame 1, quiet until 1000 ms later (frame 4 at 1600 ms).
        let got = run(&mut r, &[&p, &p, &p, &p, &p, &p], 400);
        assert_eq!(got, vec![(0, 1), (0, 4)]);
    }

    #[test]
    fn thresholds_and_disabled_classes_filter() {
        let mut c = cfg();
        c.class.insert("car".into(), crate::config::ClassRule { min_area: Some(200.0), ..Default::default() });
        let mut r = Rules::new(&c, &labels(), &[], 0.9).unwrap();
        let low = [d(0, 0.4)];
        let small_car = [d(1, 0.9)]; // area 100 < 200
        let cat = [d(2, 0.99)];
        assert!(run(&mut r, &[&low, &low, &small_car, &small_car, &cat, &cat], 10).is_empty());
    }

    #[test]
    fn manifest_defaults_apply_where_the_config_is_silent() {
        let r = Rules::new(&RulesConfig::default(), &labels(), &["car".to_string()], 0.7).unwrap();
        assert!(!r.policy(0).unwrap().enabled);
        assert_eq!(r.policy(1).unwrap().min_score, 0.7);
        assert!(r.policy(1).unwrap().enabled);
    }

    #[test]
    fn unknown_label_is_an_error() {
        let mut c = cfg();
        c.classes.as_mut().unwrap().push("unicorn".into());
        assert_eq!(Rules::new(&c, &labels(), &[], 0.9).unwrap_err().label, "unicorn");
    }
}
