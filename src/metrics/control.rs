//! Controllability (condition fidelity): how well a generated image follows its input
//! condition, measured by re-extracting the condition from the generated image and
//! comparing it with the input (ControlNet++'s protocol; constants in
//! ../shared/notes/reference-metrics.md). Every function is pure, f64.
//!
//! - depth: RMSE on 0–255 between min–max normalised maps ([`depth_rmse`]);
//! - edges (hed, sketch, canny): pixel F1 of binary maps ([`edge_f1`]), SSIM
//!   ([`ssim`]: Gaussian window 11, σ 1.5, C1 = (0.01·255)², C2 = (0.03·255)², valid
//!   region — torchmetrics' definition) and PSNR capped at 100 ([`psnr`]);
//! - segmentation: mIoU over the whole set ([`IouAccumulator`]);
//! - pose: COCO OKS ([`oks`]) and its AP over OKS 0.50:0.05:0.95 ([`keypoint_ap`]).

/// COCO's per-keypoint OKS constants σᵢ (17 body keypoints, COCO order).
pub const COCO_SIGMAS: [f64; 17] = [
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107,
    0.087, 0.087, 0.089, 0.089,
];

fn min_max_255(v: &[u8]) -> Vec<f64> {
    let lo = v.iter().copied().min().unwrap_or(0) as f64;
    let hi = v.iter().copied().max().unwrap_or(0) as f64;
    if hi > lo {
        v.iter()
            .map(|&x| (x as f64 - lo) / (hi - lo) * 255.0)
            .collect()
    } else {
        vec![0.0; v.len()]
    }
}

/// RMSE on the 0–255 scale between two depth maps, each min–max normalised first.
pub fn depth_rmse(reference: &[u8], generated: &[u8]) -> f64 {
    let (a, b) = (min_max_255(reference), min_max_255(generated));
    let n = a.len().max(1) as f64;
    (a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        / n)
        .sqrt()
}

/// Pixel F1 of two edge maps binarised at `value ≥ threshold`; two empty maps agree (1).
pub fn edge_f1(reference: &[u8], generated: &[u8], threshold: u8) -> f64 {
    let (mut tp, mut fp, mut fneg) = (0u64, 0u64, 0u64);
    for (&r, &g) in reference.iter().zip(generated) {
        match (r >= threshold, g >= threshold) {
            (true, true) => tp += 1,
            (false, true) => fp += 1,
            (true, false) => fneg += 1,
            (false, false) => {}
        }
    }
    if tp + fp + fneg == 0 {
        1.0
    } else {
        2.0 * tp as f64 / (2 * tp + fp + fneg) as f64
    }
}

/// PSNR in dB for 8-bit maps, capped at 100 (identical maps).
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let n = a.len().max(1) as f64;
    let mse = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum::<f64>()
        / n;
    if mse == 0.0 {
        100.0
    } else {
        (10.0 * (255.0f64 * 255.0 / mse).log10()).min(100.0)
    }
}

/// The normalised 1-D Gaussian of SSIM: 11 taps, σ = 1.5.
fn gaussian11() -> [f64; 11] {
    let mut g = [0f64; 11];
    for (i, v) in g.iter_mut().enumerate() {
        let x = i as f64 - 5.0;
        *v = (-(x * x) / (2.0 * 1.5 * 1.5)).exp();
    }
    let s: f64 = g.iter().sum();
    g.map(|v| v / s)
}

/// Separable 11×11 Gaussian filter over the valid region: (w − 10) × (h − 10).
fn filter_valid(x: &[f64], w: usize, h: usize, g: &[f64; 11]) -> Vec<f64> {
    let (ow, oh) = (w - 10, h - 10);
    let mut rows = vec![0f64; ow * h];
    for y in 0..h {
        for xo in 0..ow {
            rows[y * ow + xo] = (0..11).map(|k| g[k] * x[y * w + xo + k]).sum();
        }
    }
    let mut out = vec![0f64; ow * oh];
    for yo in 0..oh {
        for xo in 0..ow {
            out[yo * ow + xo] = (0..11).map(|k| g[k] * rows[(yo + k) * ow + xo]).sum();
        }
    }
    out
}

/// Mean SSIM of two 8-bit single-channel maps (w × h, both ≥ 11), Gaussian window 11,
/// σ 1.5, data range 255, over the valid region (torchmetrics' `structural_similarity_index_measure`
/// crops the padded border the same way). `None` when a side is under 11 pixels.
pub fn ssim(a: &[u8], b: &[u8], w: usize, h: usize) -> Option<f64> {
    if w < 11 || h < 11 || a.len() != w * h || b.len() != w * h {
        return None;
    }
    let g = gaussian11();
    let fa: Vec<f64> = a.iter().map(|&v| v as f64).collect();
    let fb: Vec<f64> = b.iter().map(|&v| v as f64).collect();
    let prod = |p: &[f64], q: &[f64]| p.iter().zip(q).map(|(x, y)| x * y).collect::<Vec<_>>();
    let mu_a = filter_valid(&fa, w, h, &g);
    let mu_b = filter_valid(&fb, w, h, &g);
    let aa = filter_valid(&prod(&fa, &fa), w, h, &g);
    let bb = filter_valid(&prod(&fb, &fb), w, h, &g);
    let ab = filter_valid(&prod(&fa, &fb), w, h, &g);
    let c1 = (0.01f64 * 255.0).powi(2);
    let c2 = (0.03f64 * 255.0).powi(2);
    let n = mu_a.len() as f64;
    let sum: f64 = (0..mu_a.len())
        .map(|i| {
            let (ma, mb) = (mu_a[i], mu_b[i]);
            let va = aa[i] - ma * ma;
            let vb = bb[i] - mb * mb;
            let cov = ab[i] - ma * mb;
            ((2.0 * ma * mb + c1) * (2.0 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))
        })
        .sum();
    Some(sum / n)
}

/// Per-class TP/FP/FN over a whole set; mIoU averages IoU over the classes that occur
/// (in either map), ignoring `ignore` (e.g. 255, unlabelled).
#[derive(Debug, Clone, Default)]
pub struct IouAccumulator {
    tp: Vec<u64>,
    fp: Vec<u64>,
    fneg: Vec<u64>,
    pub ignore: Option<u8>,
}

impl IouAccumulator {
    pub fn new(ignore: Option<u8>) -> Self {
        IouAccumulator {
            tp: vec![0; 256],
            fp: vec![0; 256],
            fneg: vec![0; 256],
            ignore,
        }
    }

    /// Add one pair of label maps (same size).
    pub fn add(&mut self, reference: &[u8], predicted: &[u8]) {
        for (&r, &p) in reference.iter().zip(predicted) {
            if Some(r) == self.ignore {
                continue;
            }
            if r == p {
                self.tp[r as usize] += 1;
            } else {
                self.fneg[r as usize] += 1;
                if Some(p) != self.ignore {
                    self.fp[p as usize] += 1;
                }
            }
        }
    }

    /// Mean IoU over the classes present; `None` if no labelled pixel was seen.
    pub fn miou(&self) -> Option<f64> {
        let ious: Vec<f64> = (0..256)
            .filter_map(|c| {
                let d = self.tp[c] + self.fp[c] + self.fneg[c];
                (d > 0).then(|| self.tp[c] as f64 / d as f64)
            })
            .collect();
        (!ious.is_empty()).then(|| ious.iter().sum::<f64>() / ious.len() as f64)
    }
}

/// A person as 17 (x, y, v) keypoints; for ground truth v > 0 marks a labelled keypoint,
/// for detections v is the keypoint score.
pub type Keypoints = [[f32; 3]; 17];

/// The OKS scale s² of a ground-truth person: the area of the bounding box of its labelled
/// keypoints (COCO uses the segmentation area, which prep's outputs do not carry).
pub fn keypoint_area(gt: &Keypoints) -> f64 {
    let vis: Vec<&[f32; 3]> = gt.iter().filter(|k| k[2] > 0.0).collect();
    if vis.is_empty() {
        return 0.0;
    }
    let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    for k in vis {
        x0 = x0.min(k[0] as f64);
        x1 = x1.max(k[0] as f64);
        y0 = y0.min(k[1] as f64);
        y1 = y1.max(k[1] as f64);
    }
    (x1 - x0) * (y1 - y0)
}

/// COCO OKS between a ground-truth person (its labelled keypoints) and a detection:
/// mean over labelled i of exp(−dᵢ² / (2·s²·kᵢ²)), kᵢ = 2σᵢ, s² = `area`.
/// `None` when the person has no labelled keypoint.
pub fn oks(gt: &Keypoints, det: &Keypoints, area: f64) -> Option<f64> {
    let mut sum = 0.0;
    let mut n = 0usize;
    for i in 0..17 {
        if gt[i][2] <= 0.0 {
            continue;
        }
        let dx = det[i][0] as f64 - gt[i][0] as f64;
        let dy = det[i][1] as f64 - gt[i][1] as f64;
        let k2 = (2.0 * COCO_SIGMAS[i]).powi(2);
        sum += (-(dx * dx + dy * dy) / (2.0 * (area + f64::EPSILON) * k2)).exp();
        n += 1;
    }
    (n > 0).then(|| sum / n as f64)
}

/// One image for [`keypoint_ap`]: ground-truth persons and scored detections.
pub struct PoseImage {
    pub gt: Vec<Keypoints>,
    /// (keypoints, detection score)
    pub det: Vec<(Keypoints, f64)>,
}

/// COCO keypoint AP: for each OKS threshold 0.50, 0.55 … 0.95, detections (all images,
/// by descending score) are greedily matched to the unmatched ground truth of highest OKS
/// ≥ threshold; AP is the 101-point interpolated precision; the result is the mean over
/// thresholds. Ground-truth persons without labelled keypoints are ignored. `None` when
/// there is no ground-truth person at all.
pub fn keypoint_ap(images: &[PoseImage]) -> Option<f64> {
    let n_gt: usize = images
        .iter()
        .map(|im| {
            im.gt
                .iter()
                .filter(|g| g.iter().any(|k| k[2] > 0.0))
                .count()
        })
        .sum();
    if n_gt == 0 {
        return None;
    }
    let thresholds: Vec<f64> = (0..10).map(|i| 0.5 + 0.05 * i as f64).collect();
    let mut aps = Vec::with_capacity(thresholds.len());
    for &t in &thresholds {
        // (score, is true positive) of every detection.
        let mut dets: Vec<(f64, bool)> = Vec::new();
        for im in images {
            let gts: Vec<(&Keypoints, f64)> = im
                .gt
                .iter()
                .filter(|g| g.iter().any(|k| k[2] > 0.0))
                .map(|g| (g, keypoint_area(g)))
                .collect();
            let mut taken = vec![false; gts.len()];
            let mut order: Vec<usize> = (0..im.det.len()).collect();
            order.sort_by(|&a, &b| im.det[b].1.total_cmp(&im.det[a].1));
            for di in order {
                let (d, score) = &im.det[di];
                let mut best: Option<(usize, f64)> = None;
                for (gi, (g, area)) in gts.iter().enumerate() {
                    if taken[gi] {
                        continue;
                    }
                    if let Some(o) = oks(g, d, *area) {
                        if o >= t && best.is_none_or(|(_, b)| o > b) {
                            best = Some((gi, o));
                        }
                    }
                }
                if let Some((gi, _)) = best {
                    taken[gi] = true;
                }
                dets.push((*score, best.is_some()));
            }
        }
        dets.sort_by(|a, b| b.0.total_cmp(&a.0));
        let (mut tp, mut fp) = (0usize, 0usize);
        let mut prec = Vec::with_capacity(dets.len());
        let mut rec = Vec::with_capacity(dets.len());
        for (_, ok) in &dets {
            if *ok {
                tp += 1
            } else {
                fp += 1
            }
            prec.push(tp as f64 / (tp + fp) as f64);
            rec.push(tp as f64 / n_gt as f64);
        }
        // Monotone precision envelope, then 101 recall points (COCOeval).
        for i in (0..prec.len().saturating_sub(1)).rev() {
            prec[i] = prec[i].max(prec[i + 1]);
        }
        let mut sum = 0.0;
        for r in 0..=100 {
            let r = r as f64 / 100.0;
            let idx = rec.partition_point(|&x| x < r);
            if idx < prec.len() {
                sum += prec[idx];
            }
        }
        aps.push(sum / 101.0);
    }
    Some(aps.iter().sum::<f64>() / aps.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_rmse_ignores_affine_changes_and_measures_differences() {
        let a: Vec<u8> = (0..=255).collect();
        let b: Vec<u8> = a.iter().map(|&v| v / 2 + 10).collect(); // affine → same after min–max
        assert!(depth_rmse(&a, &b) < 1.5);
        let inv: Vec<u8> = a.iter().map(|&v| 255 - v).collect();
        // x vs 255 − x over 0..255: RMSE = sqrt(mean((2x − 255)²)) = 255·sqrt((n+1)/(3(n−1)))·…
        let want = ((0..=255)
            .map(|x| ((2 * x - 255) as f64).powi(2))
            .sum::<f64>()
            / 256.0)
            .sqrt();
        assert!((depth_rmse(&a, &inv) - want).abs() < 1e-9);
        assert_eq!(depth_rmse(&a, &a), 0.0);
    }

    #[test]
    fn edge_f1_counts_pixels() {
        let r = [255u8, 255, 0, 0, 255, 0];
        let g = [255u8, 0, 255, 0, 255, 0];
        // tp 2, fp 1, fn 1 → 4 / 6
        assert!((edge_f1(&r, &g, 128) - 4.0 / 6.0).abs() < 1e-12);
        assert_eq!(edge_f1(&[0; 4], &[0; 4], 128), 1.0);
        assert_eq!(edge_f1(&[255; 4], &[0; 4], 128), 0.0);
    }

    #[test]
    fn psnr_and_ssim_of_identical_and_different_maps() {
        let (w, h) = (24, 20);
        let a: Vec<u8> = (0..w * h).map(|i| ((i * 37) % 251) as u8).collect();
        assert_eq!(psnr(&a, &a), 100.0);
        assert!((ssim(&a, &a, w, h).unwrap() - 1.0).abs() < 1e-12);
        let b: Vec<u8> = a.iter().map(|&v| v.saturating_add(10)).collect();
        let p = psnr(&a, &b);
        assert!(p > 20.0 && p < 30.0, "{p}");
        let s = ssim(&a, &b, w, h).unwrap();
        assert!(s < 1.0 && s > 0.9, "{s}");
        let inv: Vec<u8> = a.iter().map(|&v| 255 - v).collect();
        assert!(ssim(&a, &inv, w, h).unwrap() < 0.0);
        assert!(ssim(&a[..100], &a[..100], 10, 10).is_none());
    }

    #[test]
    fn miou_over_classes_present() {
        let mut acc = IouAccumulator::new(Some(255));
        // class 1: tp 2, fn 1; class 2: fp 1, tp 1; 255 ignored.
        acc.add(&[1, 1, 1, 2, 255], &[1, 1, 2, 2, 7]);
        // IoU(1) = 2/3, IoU(2) = 1/2 → 7/12
        assert!((acc.miou().unwrap() - 7.0 / 12.0).abs() < 1e-12);
        assert!(IouAccumulator::new(None).miou().is_none());
    }

    fn person(dx: f32) -> Keypoints {
        std::array::from_fn(|i| {
            [
                100.0 + 10.0 * (i % 5) as f32 + dx,
                50.0 + 12.0 * i as f32,
                2.0,
            ]
        })
    }

    #[test]
    fn oks_and_ap() {
        let g = person(0.0);
        assert_eq!(oks(&g, &g, keypoint_area(&g)), Some(1.0));
        let far = oks(&g, &person(40.0), keypoint_area(&g)).unwrap();
        assert!(far < 0.5, "{far}");
        let perfect = [PoseImage {
            gt: vec![g],
            det: vec![(g, 0.9)],
        }];
        assert_eq!(keypoint_ap(&perfect), Some(1.0));
        // One image found, one missed (no detection): recall caps at 0.5 → AP ≈ 51/101.
        let half = [
            PoseImage {
                gt: vec![g],
                det: vec![(g, 0.9)],
            },
            PoseImage {
                gt: vec![g],
                det: vec![],
            },
        ];
        assert!((keypoint_ap(&half).unwrap() - 51.0 / 101.0).abs() < 1e-12);
        // A false positive with a higher score than the true one halves early precision.
        let fp = [
            PoseImage {
                gt: vec![g],
                det: vec![(g, 0.5)],
            },
            PoseImage {
                gt: vec![],
                det: vec![(g, 0.9)],
            },
        ];
        assert!((keypoint_ap(&fp).unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(
            keypoint_ap(&[PoseImage {
                gt: vec![],
                det: vec![]
            }]),
            None
        );
    }
}
