//! Ultralytics' `LetterBox(auto=False, scaleup=True, center=True)` and `BasePredictor.preprocess`,
//! bit for bit: the image scaled by `min(H/h, W/w)` with OpenCV's `INTER_LINEAR` (its fixed-point
//! arithmetic, so the tensor equals the reference's exactly), padded with 114 split around it,
//! RGB, `/255` in `f32`, written straight into one image's slot of an NCHW batch tensor.
//!
//! The sizes and pads use Python's `round` (half to even) where Ultralytics does.

/// Where the scaled image sits inside the model's input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Geometry {
    pub src_width: u32,
    pub src_height: u32,
    pub dst_width: u32,
    pub dst_height: u32,
    /// The scaled image's size (`new_unpad`).
    pub width: u32,
    pub height: u32,
    pub left: u32,
    pub top: u32,
}

impl Geometry {
    /// `src` into a `dst` input (both width, height). Ultralytics computes a zero size for an
    /// extreme aspect ratio (a 1×10000 image) and OpenCV then fails; here the side stays at one
    /// pixel instead.
    pub fn new(src: (u32, u32), dst: (u32, u32)) -> Geometry {
        let (w, h) = (f64::from(src.0), f64::from(src.1));
        let r = (f64::from(dst.1) / h).min(f64::from(dst.0) / w);
        let width = ((w * r).round_ties_even() as u32).clamp(1, dst.0);
        let height = ((h * r).round_ties_even() as u32).clamp(1, dst.1);
        let dw = f64::from(dst.0 - width) / 2.0;
        let dh = f64::from(dst.1 - height) / 2.0;
        Geometry {
            src_width: src.0,
            src_height: src.1,
            dst_width: dst.0,
            dst_height: dst.1,
            width,
            height,
            left: (dw - 0.1).round_ties_even() as u32,
            top: (dh - 0.1).round_ties_even() as u32,
        }
    }

    /// Ultralytics' `scale_boxes` inverse: the gain and pads it derives from the two shapes
    /// (not from the rounded size above, as Ultralytics does not either).
    pub fn unscale(&self) -> (f32, f32, f32) {
        let (w0, h0) = (f64::from(self.src_width), f64::from(self.src_height));
        let (w1, h1) = (f64::from(self.dst_width), f64::from(self.dst_height));
        let gain = (h1 / h0).min(w1 / w0);
        let pad_x = ((w1 - w0 * gain) / 2.0 - 0.1).round_ties_even();
        let pad_y = ((h1 - h0 * gain) / 2.0 - 0.1).round_ties_even();
        (gain as f32, pad_x as f32, pad_y as f32)
    }
}

/// OpenCV's `INTER_RESIZE_COEF_BITS`.
const COEF_BITS: u32 = 11;
const COEF_SCALE: f32 = (1 << COEF_BITS) as f32;
/// 114 / 255 as `numpy.float32` computes it.
const PAD: f32 = 114.0 / 255.0;

/// One output coordinate's source index and fixed-point weights, as `cv::resize` computes them.
/// Columns clamp the index and zero the weight at the edges; rows keep their weights and are
/// clamped when read (OpenCV clips the row, not the weight), hence `clamp_edges`.
fn taps(src: u32, dst: u32, clamp_edges: bool) -> Vec<(i64, i32, i32)> {
    let scale = 1.0 / (f64::from(dst) / f64::from(src));
    (0..dst)
        .map(|d| {
            let f = ((f64::from(d) + 0.5) * scale - 0.5) as f32;
            let mut s = f.floor() as i64;
            let mut f = f - s as f32;
            if clamp_edges {
                if s < 0 {
                    s = 0;
                    f = 0.0;
                }
                if s >= i64::from(src) - 1 {
                    s = i64::from(src) - 1;
                    f = 0.0;
                }
            }
            let a0 = ((1.0 - f) * COEF_SCALE).round_ties_even() as i32;
            let a1 = (f * COEF_SCALE).round_ties_even() as i32;
            (s, a0, a1)
        })
        .collect()
}

/// Writes the tensor's rows: padding where the image is not, and each image row (interleaved
/// RGB8, `width` pixels) split into the three planes.
struct Planes<'a> {
    out: &'a mut [f32],
    geometry: &'a Geometry,
}

impl Planes<'_> {
    /// The padding: whole rows above and below, and the columns beside the image.
    fn pad(&mut self) {
        let g = self.geometry;
        let (dw, dh) = (g.dst_width as usize, g.dst_height as usize);
        let (w, h) = (g.width as usize, g.height as usize);
        let (left, top) = (g.left as usize, g.top as usize);
        for plane in self.out.chunks_exact_mut(dw * dh) {
            plane[..top * dw].fill(PAD);
            plane[(top + h) * dw..].fill(PAD);
            for row in plane[top * dw..(top + h) * dw].chunks_exact_mut(dw) {
                row[..left].fill(PAD);
                row[left + w..].fill(PAD);
            }
        }
    }

    /// The three planes' rows for image row `y`, `width` floats each.
    fn rows(&mut self, y: usize) -> [&mut [f32]; 3] {
        let g = self.geometry;
        let (dw, dh) = (g.dst_width as usize, g.dst_height as usize);
        let w = g.width as usize;
        let at = (g.top as usize + y) * dw + g.left as usize;
        let (r, rest) = self.out.split_at_mut(dw * dh);
        let (g, b) = rest.split_at_mut(dw * dh);
        [&mut r[at..at + w], &mut g[at..at + w], &mut b[at..at + w]]
    }

    /// Image row `y` from interleaved RGB8, split into the planes in one pass over it.
    fn row(&mut self, y: usize, rgb: &[u8]) {
        let [r, g, b] = self.rows(y);
        for (((px, r), g), b) in rgb.chunks_exact(3).zip(r).zip(g).zip(b) {
            *r = unit(px[0]);
            *g = unit(px[1]);
            *b = unit(px[2]);
        }
    }
}

/// `v / 255` in `f32`, as NumPy computes it. A division: multiplying by 1/255 rounds
/// differently for most bytes, a table is a gather that does not vectorise, and an `f64`
/// product (exact here too) measured slower.
#[inline]
fn unit(v: u8) -> f32 {
    f32::from(v) / 255.0
}

/// Letterboxes `rgb` (tightly packed RGB8, `width` × `height`) into `out`, one image's slot
/// (`3 × dst_height × dst_width` floats, planar R, G, B).
///
/// # Panics
/// When the buffers do not match the geometry (a caller bug).
pub fn letterbox_into(rgb: &[u8], geometry: &Geometry, out: &mut [f32]) {
    let (sw, sh) = (geometry.src_width as usize, geometry.src_height as usize);
    let (dw, dh) = (geometry.dst_width as usize, geometry.dst_height as usize);
    assert_eq!(
        rgb.len(),
        sw * sh * 3,
        "source buffer does not match the geometry"
    );
    assert_eq!(
        out.len(),
        3 * dw * dh,
        "tensor slot does not match the geometry"
    );
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        #[expect(unsafe_code, reason = "calling a target_feature function")]
        // SAFETY: the only requirement is a CPU with AVX2, detected just above.
        unsafe {
            return letterbox_avx2(rgb, geometry, out);
        }
    }
    letterbox(rgb, geometry, out);
}

/// The same code compiled for AVX2: the resize's integer arithmetic and the divisions by 255
/// run eight lanes wide instead of SSE2's four.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn letterbox_avx2(rgb: &[u8], geometry: &Geometry, out: &mut [f32]) {
    letterbox(rgb, geometry, out);
}

#[inline(always)]
fn letterbox(rgb: &[u8], geometry: &Geometry, out: &mut [f32]) {
    let (sw, sh) = (geometry.src_width as usize, geometry.src_height as usize);
    let (w, h) = (geometry.width as usize, geometry.height as usize);
    let mut planes = Planes { out, geometry };
    planes.pad();
    if (w, h) == (sw, sh) {
        for (y, row) in rgb.chunks_exact(sw * 3).enumerate() {
            planes.row(y, row);
        }
        return;
    }
    if sw == 2 * w && sh == 2 * h {
        // cv::resize turns an exact 2× reduction into INTER_AREA's fast path: the 2×2 mean.
        for y in 0..h {
            let r0 = &rgb[2 * y * sw * 3..(2 * y + 1) * sw * 3];
            let r1 = &rgb[(2 * y + 1) * sw * 3..(2 * y + 2) * sw * 3];
            let [r, g, b] = planes.rows(y);
            let pairs = r0.chunks_exact(6).zip(r1.chunks_exact(6));
            for (((above, below), r), (g, b)) in pairs.zip(r).zip(g.iter_mut().zip(b)) {
                let mean = |c: usize| {
                    let sum = u32::from(above[c])
                        + u32::from(above[c + 3])
                        + u32::from(below[c])
                        + u32::from(below[c + 3]);
                    unit(((sum + 2) >> 2) as u8)
                };
                *r = mean(0);
                *g = mean(1);
                *b = mean(2);
            }
        }
        return;
    }
    let xt: Vec<Tap> = taps(sw as u32, w as u32, true)
        .into_iter()
        .map(|(s, a0, a1)| {
            let s = s as usize;
            Tap {
                at0: s * 3,
                at1: (s + 1).min(sw - 1) * 3,
                a0,
                a1,
            }
        })
        .collect();
    let yt = taps(sh as u32, h as u32, false);
    // The horizontal pass of a source row (OpenCV's HResizeLinear, weights summing to 2048),
    // kept planar so that the vertical pass reads and writes each plane contiguously.
    let horizontal = |row: usize, planes: &mut [Vec<i32>; 3]| {
        let src = &rgb[row * sw * 3..(row + 1) * sw * 3];
        let [r, g, b] = planes;
        for (((tap, r), g), b) in xt.iter().zip(r).zip(g).zip(b) {
            let (p0, p1) = (&src[tap.at0..tap.at0 + 3], &src[tap.at1..tap.at1 + 3]);
            *r = i32::from(p0[0]) * tap.a0 + i32::from(p1[0]) * tap.a1;
            *g = i32::from(p0[1]) * tap.a0 + i32::from(p1[1]) * tap.a1;
            *b = i32::from(p0[2]) * tap.a0 + i32::from(p1[2]) * tap.a1;
        }
    };
    // The two source rows in use, each computed once while consecutive output rows share it.
    let fresh = || (usize::MAX, [vec![0i32; w], vec![0i32; w], vec![0i32; w]]);
    let mut rows = [fresh(), fresh()];
    let last = sh as i64 - 1;
    for (y, &(sy, b0, b1)) in yt.iter().enumerate() {
        let r0 = sy.clamp(0, last) as usize;
        let r1 = (sy + 1).clamp(0, last) as usize;
        if rows[0].0 != r0 {
            if rows[1].0 == r0 {
                rows.swap(0, 1);
            } else {
                horizontal(r0, &mut rows[0].1);
                rows[0].0 = r0;
            }
        }
        if rows[1].0 != r1 {
            horizontal(r1, &mut rows[1].1);
            rows[1].0 = r1;
        }
        let [top, bottom] = &rows;
        for ((dst, s0), s1) in planes.rows(y).into_iter().zip(&top.1).zip(&bottom.1) {
            for ((d, &s0), &s1) in dst.iter_mut().zip(s0).zip(s1) {
                // VResizeLinear<uchar, int, short>: the exact shifts of OpenCV's fixed-point cast.
                let value = (((b0 * (s0 >> 4)) >> 16) + ((b1 * (s1 >> 4)) >> 16) + 2) >> 2;
                *d = unit(value.clamp(0, 255) as u8);
            }
        }
    }
}

/// One output column's two source pixels (byte offsets into a row) and their weights.
struct Tap {
    at0: usize,
    at1: usize,
    a0: i32,
    a1: i32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_matches_ultralytics_rounding() {
        // 640x480 into 640: no scaling, 80 px above and below.
        let g = Geometry::new((640, 480), (640, 640));
        assert_eq!((g.width, g.height, g.left, g.top), (640, 480, 0, 80));
        // 451x300: r = 640/451; height 425.72 -> 426; dh = 107 -> top 107.
        let g = Geometry::new((451, 300), (640, 640));
        assert_eq!((g.width, g.height, g.left, g.top), (640, 426, 0, 107));
        // An odd pad splits with the extra pixel at the bottom: dh = 0.5 -> top 0.
        let g = Geometry::new((640, 639), (640, 640));
        assert_eq!((g.height, g.top), (639, 0));
        // Half to even: 2.5 -> 2 (Python), not 3.
        let g = Geometry::new((256, 5), (640, 640));
        assert_eq!(g.height, 12); // 5 * 2.5 = 12.5 -> 12
        // 1x1 scales up to the whole input.
        let g = Geometry::new((1, 1), (640, 640));
        assert_eq!((g.width, g.height, g.left, g.top), (640, 640, 0, 0));
        // An extreme aspect ratio keeps one row instead of none.
        let g = Geometry::new((10_000, 1), (640, 640));
        assert_eq!((g.width, g.height), (640, 1));
    }

    #[test]
    fn unscale_inverts_the_padding() {
        let g = Geometry::new((451, 300), (640, 640));
        let (gain, pad_x, pad_y) = g.unscale();
        assert!((gain - 640.0 / 451.0).abs() < 1e-6);
        assert_eq!((pad_x, pad_y), (0.0, 107.0));
    }

    #[test]
    fn padding_is_114_and_the_image_sits_at_its_offset() {
        let rgb = vec![255u8; 640 * 480 * 3];
        let g = Geometry::new((640, 480), (640, 640));
        let mut out = vec![0.0; 3 * 640 * 640];
        letterbox_into(&rgb, &g, &mut out);
        assert_eq!(out[0], 114.0 / 255.0);
        assert_eq!(out[79 * 640], 114.0 / 255.0);
        assert_eq!(out[80 * 640], 1.0);
        assert_eq!(out[559 * 640 + 639], 1.0);
        assert_eq!(out[560 * 640], 114.0 / 255.0);
        // Planes: the blue plane starts after two full planes.
        assert_eq!(out[2 * 640 * 640 + 80 * 640], 1.0);
    }

    #[test]
    fn constant_images_stay_constant_through_any_resize() {
        for (w, h) in [(3, 7), (1000, 13), (1280, 960), (17, 1), (641, 640)] {
            let rgb: Vec<u8> = (0..w * h).flat_map(|_| [10u8, 128, 250]).collect();
            let g = Geometry::new((w, h), (64, 64));
            let mut out = vec![0.0; 3 * 64 * 64];
            letterbox_into(&rgb, &g, &mut out);
            let at = (g.top as usize + g.height as usize / 2) * 64 + g.left as usize;
            assert_eq!(out[at], 10.0 / 255.0, "{w}x{h}");
            assert_eq!(out[64 * 64 + at], 128.0 / 255.0, "{w}x{h}");
            assert_eq!(out[2 * 64 * 64 + at], 250.0 / 255.0, "{w}x{h}");
        }
    }

    /// An RGB8 image whose neighbouring bytes all differ, so a misplaced pixel or channel shows.
    fn pattern(w: usize, h: usize) -> Vec<u8> {
        (0..w * h * 3).map(|i| (i * 31 % 256) as u8).collect()
    }

    /// The bilinear resize one pixel at a time, straight from OpenCV's formulas: what the
    /// row-cached, planar implementation must equal exactly.
    fn one_pixel_at_a_time(rgb: &[u8], g: &Geometry) -> Vec<f32> {
        let (sw, sh) = (g.src_width as usize, g.src_height as usize);
        let (dw, dh) = (g.dst_width as usize, g.dst_height as usize);
        let mut out = vec![PAD; 3 * dw * dh];
        let xt = taps(g.src_width, g.width, true);
        let yt = taps(g.src_height, g.height, false);
        let at = |x: usize, y: usize, c: usize| rgb[(y * sw + x) * 3 + c];
        for (y, &(sy, b0, b1)) in yt.iter().enumerate() {
            let r0 = sy.clamp(0, sh as i64 - 1) as usize;
            let r1 = (sy + 1).clamp(0, sh as i64 - 1) as usize;
            for (x, &(sx, a0, a1)) in xt.iter().enumerate() {
                let (x0, x1) = (sx as usize, (sx as usize + 1).min(sw - 1));
                for c in 0..3 {
                    let row = |r| i32::from(at(x0, r, c)) * a0 + i32::from(at(x1, r, c)) * a1;
                    let value =
                        (((b0 * (row(r0) >> 4)) >> 16) + ((b1 * (row(r1) >> 4)) >> 16) + 2) >> 2;
                    let i = c * dw * dh + (g.top as usize + y) * dw + g.left as usize + x;
                    out[i] = f32::from(value.clamp(0, 255) as u8) / 255.0;
                }
            }
        }
        out
    }

    #[test]
    fn the_resize_equals_opencvs_formulas_pixel_for_pixel() {
        for (w, h) in [
            (512, 512),
            (451, 300),
            (3, 700),
            (1000, 13),
            (1280, 720),
            (641, 640),
        ] {
            let rgb = pattern(w as usize, h as usize);
            let g = Geometry::new((w, h), (640, 640));
            let mut out = vec![0.0; 3 * 640 * 640];
            letterbox_into(&rgb, &g, &mut out);
            let expected = one_pixel_at_a_time(&rgb, &g);
            let first = out.iter().zip(&expected).position(|(a, b)| a != b);
            assert_eq!(first, None, "{w}x{h}: first difference at this index");
            // The portable build of the same code, which CPUs without AVX2 run.
            let mut portable = vec![f32::NAN; 3 * 640 * 640];
            letterbox(&rgb, &g, &mut portable);
            assert_eq!(portable, expected, "{w}x{h}, portable");
        }
    }

    #[test]
    fn an_exact_halving_is_the_rounded_two_by_two_mean_everywhere() {
        let (w, h) = (1280usize, 720usize);
        let rgb = pattern(w, h);
        let g = Geometry::new((w as u32, h as u32), (640, 640));
        assert_eq!((g.width, g.height, g.top), (640, 360, 140));
        let mut out = vec![0.0; 3 * 640 * 640];
        letterbox_into(&rgb, &g, &mut out);
        let at = |x: usize, y: usize, c: usize| u32::from(rgb[(y * w + x) * 3 + c]);
        for c in 0..3 {
            for y in 0..360 {
                for x in 0..640 {
                    let sum = at(2 * x, 2 * y, c)
                        + at(2 * x + 1, 2 * y, c)
                        + at(2 * x, 2 * y + 1, c)
                        + at(2 * x + 1, 2 * y + 1, c);
                    let expected = ((sum + 2) >> 2) as f32 / 255.0;
                    assert_eq!(
                        out[c * 640 * 640 + (140 + y) * 640 + x],
                        expected,
                        "{x},{y},{c}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_element_of_a_reused_slot_is_overwritten() {
        // The batcher hands out slots that still hold an earlier image: nothing may survive.
        for (w, h) in [
            (640, 480),
            (451, 300),
            (1280, 1280),
            (3, 700),
            (640, 640),
            (1, 1),
        ] {
            let rgb = pattern(w as usize, h as usize);
            let g = Geometry::new((w, h), (640, 640));
            let mut out = vec![f32::NAN; 3 * 640 * 640];
            letterbox_into(&rgb, &g, &mut out);
            let mut fresh = vec![0.0; 3 * 640 * 640];
            letterbox_into(&rgb, &g, &mut fresh);
            assert!(out.iter().all(|v| v.is_finite()), "{w}x{h}");
            assert_eq!(out, fresh, "{w}x{h}");
        }
    }

    #[test]
    fn two_times_reduction_averages_two_by_two() {
        // 4x2 -> 2x1: each output is the rounded mean of a 2x2 block.
        let rows = [[0u8, 1, 2, 3], [4, 5, 6, 7]];
        let rgb: Vec<u8> = rows
            .iter()
            .flat_map(|r| r.iter().flat_map(|&v| [v, v, v]))
            .collect();
        let g = Geometry {
            src_width: 4,
            src_height: 2,
            dst_width: 2,
            dst_height: 1,
            width: 2,
            height: 1,
            left: 0,
            top: 0,
        };
        let mut out = vec![0.0; 3 * 2];
        letterbox_into(&rgb, &g, &mut out);
        // (0+1+4+5+2)>>2 = 3, (2+3+6+7+2)>>2 = 5
        assert_eq!(&out[..2], &[3.0 / 255.0, 5.0 / 255.0]);
    }
}
