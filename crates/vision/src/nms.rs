//! Ultralytics' `non_max_suppression` (`multi_label=False`, no masks) for one image's
//! `[4 + nc, anchors]` output, then `scale_boxes` and `clip_boxes` back to the original image.
//!
//! Semantics kept exactly: an anchor is a candidate when its best class score is above `conf`
//! (strictly), its class is the first best; at most 30,000 candidates enter NMS (the best
//! ones); NMS is class-aware by Ultralytics' offset trick (boxes shifted by `class × 7680`, in
//! `f32`, so IoUs round as theirs do) and suppresses at IoU strictly above `iou`
//! (torchvision's rule); `max_det` of what survives, best first. Equal scores keep anchor
//! order (a stable sort; torchvision leaves ties unspecified).

use crate::letterbox::Geometry;

const MAX_WH: f32 = 7680.0;
const MAX_NMS: usize = 30_000;

/// Ultralytics' predict defaults: conf 0.25, IoU 0.7, max_det 300, every class.
#[derive(Clone, Debug, PartialEq)]
pub struct NmsParams {
    pub conf: f32,
    pub iou: f32,
    pub max_det: usize,
    /// Keep only these class ids.
    pub classes: Option<Vec<u32>>,
}

impl Default for NmsParams {
    fn default() -> Self {
        NmsParams {
            conf: 0.25,
            iou: 0.7,
            max_det: 300,
            classes: None,
        }
    }
}

/// One detection in the original image's pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Box {
    pub class_id: u32,
    pub score: f32,
    /// `[x1, y1, x2, y2]`.
    pub xyxy: [f32; 4],
}

/// Postprocesses one image. `output` is `[4 + nc, anchors]` row-major (the model's `output0`
/// for that image); `geometry` is how it was letterboxed.
///
/// # Panics
/// When `output` is not `(4 + nc) × anchors` long (a caller bug).
pub fn postprocess(
    output: &[f32],
    nc: usize,
    anchors: usize,
    params: &NmsParams,
    geometry: &Geometry,
) -> Vec<Box> {
    assert_eq!(
        output.len(),
        (4 + nc) * anchors,
        "output is not [4 + nc, anchors]"
    );
    if nc == 0 || anchors == 0 {
        return Vec::new();
    }
    let (best, arg) = best_classes(output, nc, anchors);
    let mut candidates: Vec<Candidate> = (0..anchors)
        .filter(|&a| best[a] > params.conf)
        .filter(|&a| {
            params
                .classes
                .as_ref()
                .is_none_or(|keep| keep.contains(&arg[a]))
        })
        .map(|a| {
            let (cx, cy) = (output[a], output[anchors + a]);
            let (hw, hh) = (output[2 * anchors + a] / 2.0, output[3 * anchors + a] / 2.0);
            Candidate {
                class_id: arg[a],
                score: best[a],
                xyxy: [cx - hw, cy - hh, cx + hw, cy + hh],
            }
        })
        .collect();
    // Best first; a stable sort keeps anchor order among equal scores.
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    candidates.truncate(MAX_NMS);
    let kept = nms(&candidates, params.iou, params.max_det);
    let (gain, pad_x, pad_y) = geometry.unscale();
    let (w0, h0) = (geometry.src_width as f32, geometry.src_height as f32);
    kept.into_iter()
        .map(|c| {
            let [x1, y1, x2, y2] = c.xyxy;
            Box {
                class_id: c.class_id,
                score: c.score,
                xyxy: [
                    ((x1 - pad_x) / gain).clamp(0.0, w0),
                    ((y1 - pad_y) / gain).clamp(0.0, h0),
                    ((x2 - pad_x) / gain).clamp(0.0, w0),
                    ((y2 - pad_y) / gain).clamp(0.0, h0),
                ],
            }
        })
        .collect()
}

/// The best score and its class for every anchor, one class row at a time (rows are
/// contiguous; anchors are not): most of postprocessing's time.
fn best_classes(output: &[f32], nc: usize, anchors: usize) -> (Vec<f32>, Vec<u32>) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        #[expect(unsafe_code, reason = "calling a target_feature function")]
        // SAFETY: the only requirement is a CPU with AVX2, detected just above.
        unsafe {
            return best_classes_avx2(output, nc, anchors);
        }
    }
    best_classes_portable(output, nc, anchors)
}

/// The same code compiled for AVX2: eight anchors per compare instead of SSE2's four.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn best_classes_avx2(output: &[f32], nc: usize, anchors: usize) -> (Vec<f32>, Vec<u32>) {
    best_classes_portable(output, nc, anchors)
}

#[inline(always)]
fn best_classes_portable(output: &[f32], nc: usize, anchors: usize) -> (Vec<f32>, Vec<u32>) {
    let mut best: Vec<f32> = output[4 * anchors..5 * anchors].to_vec();
    let mut arg = vec![0u32; anchors];
    for class in 1..nc {
        let row = &output[(4 + class) * anchors..(5 + class) * anchors];
        for ((b, a), &v) in best.iter_mut().zip(arg.iter_mut()).zip(row) {
            // Strictly greater: ties keep the first class, as torch.max does. Selects, not a
            // branch, so that the loop vectorises.
            let greater = v > *b;
            *b = if greater { v } else { *b };
            *a = if greater { class as u32 } else { *a };
        }
    }
    (best, arg)
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Candidate {
    class_id: u32,
    score: f32,
    xyxy: [f32; 4],
}

/// Greedy NMS over candidates sorted best first; returns the kept ones, best first.
fn nms(sorted: &[Candidate], iou: f32, max_det: usize) -> Vec<Candidate> {
    // The offset boxes and their areas, as Ultralytics hands them to torchvision.
    let boxes: Vec<[f32; 4]> = sorted
        .iter()
        .map(|c| {
            let o = c.class_id as f32 * MAX_WH;
            [c.xyxy[0] + o, c.xyxy[1] + o, c.xyxy[2] + o, c.xyxy[3] + o]
        })
        .collect();
    let areas: Vec<f32> = boxes
        .iter()
        .map(|b| (b[2] - b[0]) * (b[3] - b[1]))
        .collect();
    let mut suppressed = vec![false; sorted.len()];
    let mut kept = Vec::new();
    for i in 0..sorted.len() {
        if suppressed[i] {
            continue;
        }
        kept.push(sorted[i]);
        if kept.len() == max_det {
            break;
        }
        let bi = boxes[i];
        for j in i + 1..sorted.len() {
            // Boxes of different classes are 7680 px apart after the offset: never overlapping.
            if suppressed[j] || sorted[j].class_id != sorted[i].class_id {
                continue;
            }
            let bj = boxes[j];
            let w = (bi[2].min(bj[2]) - bi[0].max(bj[0])).max(0.0);
            let h = (bi[3].min(bj[3]) - bi[1].max(bj[1])).max(0.0);
            let inter = w * h;
            if inter / (areas[i] + areas[j] - inter) > iou {
                suppressed[j] = true;
            }
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output with one class row per entry of `classes` and the given anchors
    /// (`[cx, cy, w, h, score per class...]`).
    fn output(nc: usize, anchors: &[[f32; 4]], scores: &[Vec<f32>]) -> Vec<f32> {
        let n = anchors.len();
        let mut out = vec![0.0; (4 + nc) * n];
        for (a, (b, s)) in anchors.iter().zip(scores).enumerate() {
            for k in 0..4 {
                out[k * n + a] = b[k];
            }
            for c in 0..nc {
                out[(4 + c) * n + a] = s[c];
            }
        }
        out
    }

    fn identity() -> Geometry {
        Geometry::new((640, 640), (640, 640))
    }

    #[test]
    fn zero_candidates_give_no_boxes() {
        let out = output(2, &[[10.0, 10.0, 4.0, 4.0]], &[vec![0.25, 0.1]]);
        // 0.25 is not above 0.25.
        assert!(postprocess(&out, 2, 1, &NmsParams::default(), &identity()).is_empty());
    }

    #[test]
    fn overlapping_boxes_of_one_class_keep_the_best() {
        let out = output(
            1,
            &[
                [100.0, 100.0, 50.0, 50.0],
                [102.0, 100.0, 50.0, 50.0],
                [300.0, 300.0, 20.0, 20.0],
            ],
            &[vec![0.5], vec![0.9], vec![0.3]],
        );
        let kept = postprocess(&out, 1, 3, &NmsParams::default(), &identity());
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].score, 0.9);
        assert_eq!(kept[0].xyxy, [77.0, 75.0, 127.0, 125.0]);
        assert_eq!(kept[1].score, 0.3);
    }

    #[test]
    fn classes_are_suppressed_separately() {
        // The same box twice, best as class 0 once and class 1 once: both stay.
        let out = output(
            2,
            &[[100.0, 100.0, 50.0, 50.0], [100.0, 100.0, 50.0, 50.0]],
            &[vec![0.9, 0.1], vec![0.1, 0.8]],
        );
        let kept = postprocess(&out, 2, 2, &NmsParams::default(), &identity());
        assert_eq!(kept.iter().map(|b| b.class_id).collect::<Vec<_>>(), [0, 1]);
    }

    #[test]
    fn ties_keep_anchor_order_and_suppress_the_later() {
        let out = output(
            1,
            &[[100.0, 100.0, 50.0, 50.0], [101.0, 100.0, 50.0, 50.0]],
            &[vec![0.6], vec![0.6]],
        );
        let kept = postprocess(&out, 1, 2, &NmsParams::default(), &identity());
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].xyxy[0], 75.0);
    }

    #[test]
    fn iou_exactly_at_the_threshold_is_kept() {
        // Two 10x10 boxes sharing half: IoU = 50 / 150 = 1/3; suppressed only above it.
        let out = output(
            1,
            &[[5.0, 5.0, 10.0, 10.0], [10.0, 5.0, 10.0, 10.0]],
            &[vec![0.9], vec![0.8]],
        );
        let at = |iou| {
            let params = NmsParams {
                iou,
                ..NmsParams::default()
            };
            postprocess(&out, 1, 2, &params, &identity()).len()
        };
        assert_eq!(at(0.34), 2);
        assert_eq!(at(0.33), 1);
    }

    #[test]
    fn all_suppressed_but_the_first_and_max_det_caps() {
        let anchors: Vec<[f32; 4]> = (0..50)
            .map(|i| [100.0 + i as f32 * 0.1, 100.0, 40.0, 40.0])
            .collect();
        let scores: Vec<Vec<f32>> = (0..50).map(|i| vec![0.9 - i as f32 * 0.01]).collect();
        let out = output(1, &anchors, &scores);
        assert_eq!(
            postprocess(&out, 1, 50, &NmsParams::default(), &identity()).len(),
            1
        );
        let params = NmsParams {
            iou: 1.0,
            max_det: 7,
            ..NmsParams::default()
        };
        assert_eq!(postprocess(&out, 1, 50, &params, &identity()).len(), 7);
    }

    #[test]
    fn the_class_filter_and_the_first_best_class() {
        let out = output(3, &[[50.0, 50.0, 10.0, 10.0]], &[vec![0.2, 0.7, 0.7]]);
        let kept = postprocess(&out, 3, 1, &NmsParams::default(), &identity());
        assert_eq!(kept[0].class_id, 1);
        // The filter applies to the best class: class 2 ties but is not the anchor's class.
        let params = NmsParams {
            classes: Some(vec![2]),
            ..NmsParams::default()
        };
        assert!(postprocess(&out, 3, 1, &params, &identity()).is_empty());
    }

    #[test]
    fn boxes_scale_back_and_clip_to_the_original_image() {
        // 320x160 letterboxed into 640: gain 2, 160 px above.
        let geometry = Geometry::new((320, 160), (640, 640));
        let out = output(
            1,
            &[[320.0, 320.0, 200.0, 100.0], [10.0, 150.0, 40.0, 40.0]],
            &[vec![0.9], vec![0.8]],
        );
        let kept = postprocess(&out, 1, 2, &NmsParams::default(), &geometry);
        assert_eq!(kept[0].xyxy, [110.0, 55.0, 210.0, 105.0]);
        // Partly above the image and off its left edge: clipped to 0.
        assert_eq!(kept[1].xyxy, [0.0, 0.0, 15.0, 5.0]);
    }
}
