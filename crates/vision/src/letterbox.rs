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

/// `v / 255` in `f32` for every byte: the same values as dividing, without a division per value.
const UNIT: [f32; 256] = {
    let mut table = [0.0f32; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = i as f32 / 255.0;
        i += 1;
    }
    table
};

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

    fn row(&mut self, y: usize, rgb: &[u8]) {
        let g = self.geometry;
        let (dw, dh) = (g.dst_width as usize, g.dst_height as usize);
        let w = g.width as usize;
        let at = (g.top as usize + y) * dw + g.left as usize;
        for (c, plane) in self.out.chunks_exact_mut(dw * dh).enumerate() {
            for (dst, px) in plane[at..at + w].iter_mut().zip(rgb.chunks_exact(3)) {
                *dst = UNIT[px[c] as usize];
            }
        }
    }
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
    let (w, h) = (geometry.width as usize, geometry.height as usize);
    let mut planes = Planes { out, geometry };
    planes.pad();
    if (w, h) == (sw, sh) {
        for (y, row) in rgb.chunks_exact(sw * 3).enumerate() {
            planes.row(y, row);
        }
        return;
    }
    let mut line = vec![0u8; w * 3];
    if sw == 2 * w && sh == 2 * h {
        // cv::resize turns an exact 2× reduction into INTER_AREA's fast path: the 2×2 mean.
        for y in 0..h {
            let r0 = &rgb[2 * y * sw * 3..(2 * y + 1) * sw * 3];
            let r1 = &rgb[(2 * y + 1) * sw * 3..(2 * y + 2) * sw * 3];
            for (i, v) in line.iter_mut().enumerate() {
                let (x, c) = (i / 3, i % 3);
                let j = 2 * x * 3 + c;
                let sum = u32::from(r0[j])
                    + u32::from(r0[j + 3])
                    + u32::from(r1[j])
                    + u32::from(r1[j + 3]);
                *v = ((sum + 2) >> 2) as u8;
            }
            planes.row(y, &line);
        }
        return;
    }
    let xt = taps(sw as u32, w as u32, true);
    let yt = taps(sh as u32, h as u32, false);
    // The horizontal pass of a source row (OpenCV's HResizeLinear, weights summing to 2048).
    let horizontal = |row: usize, buf: &mut Vec<i32>| {
        buf.clear();
        let src = &rgb[row * sw * 3..(row + 1) * sw * 3];
        for &(s, a0, a1) in &xt {
            let s = s as usize;
            let s1 = (s + 1).min(sw - 1);
            for c in 0..3 {
                buf.push(i32::from(src[s * 3 + c]) * a0 + i32::from(src[s1 * 3 + c]) * a1);
            }
        }
    };
    // The two source rows in use, each computed once while consecutive output rows share it.
    let mut rows: [(usize, Vec<i32>); 2] = [
        (usize::MAX, Vec::with_capacity(w * 3)),
        (usize::MAX, Vec::with_capacity(w * 3)),
    ];
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
        for ((v, &s0), &s1) in line.iter_mut().zip(&rows[0].1).zip(&rows[1].1) {
            // VResizeLinear<uchar, int, short>: the exact shifts of OpenCV's fixed-point cast.
            let value = (((b0 * (s0 >> 4)) >> 16) + ((b1 * (s1 >> 4)) >> 16) + 2) >> 2;
            *v = value.clamp(0, 255) as u8;
        }
        planes.row(y, &line);
    }
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
