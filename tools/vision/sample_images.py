"""Write the vision cross-check and benchmark images into a directory.

Real photos: scikit-image's sample files as its wheel ships them (PNG and JPEG), plus one of
them re-encoded as JPEG and as lossless WebP. Synthetic: odd sizes and layouts (1x1, very wide,
very tall, greyscale, with alpha, and an exact 2x reduction, which OpenCV resizes by area).

    python sample_images.py OUTDIR [--photos-only]

Prints the paths written, one per line.
"""

from __future__ import annotations

import os
import shutil
import sys

import cv2
import numpy as np
import skimage

PHOTOS = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg", "camera.png", "coins.png"]


def textured(h: int, w: int, channels: int, seed: int) -> np.ndarray:
    """Smooth gradients plus blobs plus noise: activations like a photo's, not a flat field."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.zeros((h, w, channels), np.float32)
    for c in range(channels):
        fx, fy = rng.uniform(2, 12, 2)
        out[..., c] = 128 + 60 * np.sin(x / max(w, 1) * fx * np.pi + c) * np.cos(y / max(h, 1) * fy * np.pi)
        for _ in range(6):
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(3, max(4, min(h, w) / 3 + 3))
            out[..., c] += 70 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r)) * rng.choice([-1, 1])
    out += rng.normal(0, 12, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = sys.argv[1]
    photos_only = "--photos-only" in sys.argv[2:]
    os.makedirs(out, exist_ok=True)
    data = os.path.join(os.path.dirname(skimage.__file__), "data")
    written = []
    for name in PHOTOS:
        src = os.path.join(data, name)
        if os.path.exists(src):
            dst = os.path.join(out, name)
            shutil.copyfile(src, dst)
            written.append(dst)
    astronaut = cv2.imread(os.path.join(data, "astronaut.png"), cv2.IMREAD_COLOR)
    if astronaut is not None:
        for name, params in (("astronaut_q90.jpg", [cv2.IMWRITE_JPEG_QUALITY, 90]), ("astronaut_lossless.webp", [cv2.IMWRITE_WEBP_QUALITY, 101])):
            path = os.path.join(out, name)
            cv2.imwrite(path, astronaut, params)
            written.append(path)
    if not photos_only:
        synthetic = {
            "one_pixel.png": textured(1, 1, 3, 1),
            "wide_2000x30.png": textured(30, 2000, 3, 2),
            "tall_25x1500.png": textured(1500, 25, 3, 3),
            "grey_300x200.png": textured(200, 300, 1, 4)[..., 0],
            "odd_333x517.png": textured(517, 333, 3, 6),
            "exact_half_1280x960.png": textured(960, 1280, 3, 7),
        }
        for name, img in synthetic.items():
            path = os.path.join(out, name)
            cv2.imwrite(path, img)
            written.append(path)
        rgba = np.dstack([textured(240, 320, 3, 5), np.linspace(0, 255, 320, dtype=np.uint8)[None, :].repeat(240, 0)])
        path = os.path.join(out, "alpha_320x240.png")
        cv2.imwrite(path, rgba)
        written.append(path)
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
