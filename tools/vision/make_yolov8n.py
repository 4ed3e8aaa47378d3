"""Build a YOLOv8n detection model as ONNX, without downloading any weights.

The graph is the Ultralytics YOLOv8n topology as `yolo export model=yolov8n.pt format=onnx
dynamic=True` writes it for a fixed image size: Conv (BatchNorm folded into the convolution, SiLU
as Sigmoid*Mul), C2f, SPPF, the PAN neck with nearest 2x upsampling, and the Detect head (box
branch cv2 and class branch cv3 per level, DFL over 16 bins, anchor decoding to xywh in input
pixels, class sigmoid). Signature: `images` float32 [N,3,S,S] (N dynamic), `output0` float32
[N,4+nc,A], and Ultralytics' metadata (`names`, `stride`, `imgsz`, `task`, ...).

Weights are seeded and deterministic. Each Conv gets the BatchNorm a trained model would fold
in, fit layer by layer to scikit-image's sample photos; the class biases are then calibrated on
the same photos so that they yield a realistic handful of candidates above 0.25 (the busiest
photo 40 anchors over the threshold, calmer ones a few or none), with a Zipf prior over classes
so that `person` is the most frequent, as in COCO.

    python make_yolov8n.py [--out models/yolov8n.onnx] [--imgsz 640] [--seed 8]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

COCO = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
]  # fmt: skip

REG_MAX = 16
STRIDES = (8, 16, 32)
TARGET_CANDIDATES = 40  # the busiest photo's anchors above conf 0.25


class Graph:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self.n = 0
        # (weight, bias, output, channels) of every Conv whose BatchNorm is folded in.
        self.folded: list[tuple[str, str, str, int]] = []
        self.cls_biases: list[str] = []

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"/{prefix}_{self.n}"

    def const(self, array: np.ndarray, prefix: str = "const") -> str:
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, inputs: list[str], prefix: str | None = None, outputs: int = 1, **attrs):
        base = self.name(prefix or op_type)
        outs = [f"{base}_output_{k}" for k in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=base, **attrs))
        return outs[0] if outputs == 1 else outs

    def conv2d(self, x, c1, c2, k, s=1, bias=None, weight_std=None, prefix="conv"):
        """A plain convolution (with bias: BatchNorm folded in, as the export does)."""
        fan_in = c1 * k * k
        std = weight_std if weight_std is not None else np.sqrt(2.0 / fan_in)
        w = self.rng.normal(0.0, std, (c2, c1, k, k)).astype(np.float32)
        b = bias if bias is not None else self.rng.normal(0.0, 0.05, c2).astype(np.float32)
        wn = self.const(w, f"{prefix}.weight")
        bn = self.const(b.astype(np.float32), f"{prefix}.bias")
        p = k // 2
        y = self.op("Conv", [x, wn, bn], prefix, kernel_shape=[k, k], strides=[s, s], pads=[p, p, p, p], dilations=[1, 1], group=1)
        return y, wn, bn

    def conv(self, x, c1, c2, k=1, s=1):
        """Ultralytics Conv: Conv2d + BN (folded later, see `fold_batchnorm`) + SiLU."""
        y, wn, bn = self.conv2d(x, c1, c2, k, s, bias=np.zeros(c2, np.float32))
        self.folded.append((wn, bn, y, c2))
        return self.op("Mul", [y, self.op("Sigmoid", [y])], "act")

    def bottleneck(self, x, c1, c2, shortcut):
        y = self.conv(self.conv(x, c1, c2, 3), c2, c2, 3)
        return self.op("Add", [x, y]) if shortcut and c1 == c2 else y

    def c2f(self, x, c1, c2, n, shortcut):
        c = int(c2 * 0.5)
        y = self.conv(x, c1, 2 * c, 1)
        a, b = self.op("Split", [y, self.const(np.array([c, c], np.int64))], outputs=2, axis=1)
        ys = [a, b]
        for _ in range(n):
            ys.append(self.bottleneck(ys[-1], c, c, shortcut))
        return self.conv(self.op("Concat", ys, axis=1), (2 + n) * c, c2, 1)

    def sppf(self, x, c1, c2, k=5):
        c_ = c1 // 2
        y = [self.conv(x, c1, c_, 1)]
        for _ in range(3):
            y.append(self.op("MaxPool", [y[-1]], kernel_shape=[k, k], strides=[1, 1], pads=[k // 2] * 4, dilations=[1, 1], ceil_mode=0))
        return self.conv(self.op("Concat", y, axis=1), c_ * 4, c2, 1)

    def upsample(self, x):
        roi = self.const(np.array([], np.float32))
        scales = self.const(np.array([1, 1, 2, 2], np.float32))
        return self.op("Resize", [x, roi, scales], coordinate_transformation_mode="asymmetric", cubic_coeff_a=-0.75, mode="nearest", nearest_mode="floor")


def anchors_for(imgsz: int):
    points, strides = [], []
    for s in STRIDES:
        h = w = imgsz // s
        sx = np.arange(w, dtype=np.float32) + 0.5
        sy = np.arange(h, dtype=np.float32) + 0.5
        yy, xx = np.meshgrid(sy, sx, indexing="ij")
        points.append(np.stack((xx, yy), -1).reshape(-1, 2))
        strides.append(np.full((h * w, 1), s, np.float32))
    return np.concatenate(points).T[None], np.concatenate(strides).T  # [1,2,A], [1,A]


def build(seed: int, imgsz: int, nc: int):
    g = Graph(seed)
    x = "images"
    # Backbone (yolov8n: width 0.25, depth 0.33).
    x = g.conv(x, 3, 16, 3, 2)  # 0 P1/2
    x = g.conv(x, 16, 32, 3, 2)  # 1 P2/4
    x = g.c2f(x, 32, 32, 1, True)  # 2
    x = g.conv(x, 32, 64, 3, 2)  # 3 P3/8
    p3 = g.c2f(x, 64, 64, 2, True)  # 4
    x = g.conv(p3, 64, 128, 3, 2)  # 5 P4/16
    p4 = g.c2f(x, 128, 128, 2, True)  # 6
    x = g.conv(p4, 128, 256, 3, 2)  # 7 P5/32
    x = g.c2f(x, 256, 256, 1, True)  # 8
    p5 = g.sppf(x, 256, 256, 5)  # 9
    # PAN neck.
    x = g.op("Concat", [g.upsample(p5), p4], axis=1)  # 10, 11
    h12 = g.c2f(x, 384, 128, 1, False)  # 12
    x = g.op("Concat", [g.upsample(h12), p3], axis=1)  # 13, 14
    out3 = g.c2f(x, 192, 64, 1, False)  # 15 (P3/8-small)
    x = g.op("Concat", [g.conv(out3, 64, 64, 3, 2), h12], axis=1)  # 16, 17
    out4 = g.c2f(x, 192, 128, 1, False)  # 18 (P4/16-medium)
    x = g.op("Concat", [g.conv(out4, 128, 128, 3, 2), p5], axis=1)  # 19, 20
    out5 = g.c2f(x, 384, 256, 1, False)  # 21 (P5/32-large)
    # Detect head.
    no = nc + 4 * REG_MAX
    c2, c3 = max(16, 64 // 4, REG_MAX * 4), max(64, min(nc, 100))
    flat = []
    for feat, ch in zip((out3, out4, out5), (64, 128, 256)):
        b = g.conv(g.conv(feat, ch, c2, 3), c2, c2, 3)
        # Unit-variance features (BatchNorm) times these spreads: DFL bins and class logits
        # with a std of about 1.5, so boxes vary in size and scores in confidence.
        b, *_ = g.conv2d(b, c2, 4 * REG_MAX, 1, bias=np.ones(4 * REG_MAX, np.float32), weight_std=2.0 / np.sqrt(c2), prefix="box")
        c = g.conv(g.conv(feat, ch, c3, 3), c3, c3, 3)
        c, _, cls_bias = g.conv2d(c, c3, nc, 1, bias=np.zeros(nc, np.float32), weight_std=1.0 / np.sqrt(c3), prefix="cls")
        g.cls_biases.append(cls_bias)
        cat = g.op("Concat", [b, c], axis=1)
        flat.append(g.op("Reshape", [cat, g.const(np.array([0, no, -1], np.int64))]))
    x_cat = g.op("Concat", flat, axis=2)
    box, cls = g.op("Split", [x_cat, g.const(np.array([4 * REG_MAX, nc], np.int64))], outputs=2, axis=1)
    # DFL: softmax over the 16 bins of each side, expectation via a fixed 1x1 conv of arange(16).
    d = g.op("Reshape", [box, g.const(np.array([0, 4, REG_MAX, -1], np.int64))])
    d = g.op("Transpose", [d], perm=[0, 2, 1, 3])
    d = g.op("Softmax", [d], axis=1)
    dfl_w = g.const(np.arange(REG_MAX, dtype=np.float32).reshape(1, REG_MAX, 1, 1), "dfl.conv.weight")
    d = g.op("Conv", [d, dfl_w], "dfl", kernel_shape=[1, 1], strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 1], group=1)
    d = g.op("Reshape", [d, g.const(np.array([0, 4, -1], np.int64))])
    lt, rb = g.op("Split", [d, g.const(np.array([2, 2], np.int64))], outputs=2, axis=1)
    anchors, strides = anchors_for(imgsz)
    a = g.const(anchors, "anchors")
    x1y1 = g.op("Sub", [a, lt])
    x2y2 = g.op("Add", [a, rb])
    c_xy = g.op("Div", [g.op("Add", [x1y1, x2y2]), g.const(np.array(2, np.float32))])
    wh = g.op("Sub", [x2y2, x1y1])
    dbox = g.op("Mul", [g.op("Concat", [c_xy, wh], axis=1), g.const(strides, "strides")])
    y = g.op("Concat", [dbox, g.op("Sigmoid", [cls])], axis=1)
    g.nodes.append(helper.make_node("Identity", [y], ["output0"], name="/output"))

    anchors_n = anchors.shape[2]
    graph = helper.make_graph(
        g.nodes,
        "main_graph",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, imgsz, imgsz])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 4 + nc, anchors_n])],
        g.inits,
    )
    model = helper.make_model(graph, producer_name="pytorch", producer_version="2.5.1", opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    names = {i: COCO[i] if i < len(COCO) else f"class{i}" for i in range(nc)}
    meta = {
        "description": "Ultralytics YOLOv8n model (Switchyard's seeded stand-in: topology exact, weights random)",
        "author": "Switchyard tools/vision/make_yolov8n.py",
        "date": "2026-12-02",
        "version": "8.3.0",
        "license": "AGPL-3.0 License (https://ultralytics.com/license)",
        "docs": "https://docs.ultralytics.com",
        "stride": max(STRIDES),
        "task": "detect",
        "batch": 1,
        "imgsz": [imgsz, imgsz],
        "names": names,
        "args": {"batch": 1, "half": False, "dynamic": True, "simplify": True, "opset": 17, "nms": False},
        "channels": 3,
        "seed": seed,
    }
    for k, v in meta.items():
        p = model.metadata_props.add()
        p.key, p.value = k, str(v)
    onnx.checker.check_model(model)
    return model, g.folded, g.cls_biases


def fold_batchnorm(model: onnx.ModelProto, folded, images: np.ndarray) -> None:
    """Gives every Conv the BatchNorm a trained model would fold in: per output channel,
    w / sigma and beta - mu / sigma, with mu and sigma measured on the calibration photos, one
    layer at a time in graph order (so each sees its inputs already normalised), and beta a
    small seeded shift. Without it, random weights shrink the activations layer by layer
    until the head sees nothing but its biases."""
    import onnxruntime as ort

    index = {t.name: i for i, t in enumerate(model.graph.initializer)}
    rng = np.random.default_rng(12345)
    for weight, bias, output, channels in folded:
        del model.graph.output[1:]
        model.graph.output.append(helper.make_tensor_value_info(output, TensorProto.FLOAT, None))
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        y = session.run([output], {"images": images})[0]
        mu = y.mean(axis=(0, 2, 3)).astype(np.float64)
        sigma = y.std(axis=(0, 2, 3)).astype(np.float64) + 1e-3
        beta = rng.normal(0.0, 0.3, channels)
        w = numpy_helper.to_array(model.graph.initializer[index[weight]]).astype(np.float64)
        b = numpy_helper.to_array(model.graph.initializer[index[bias]]).astype(np.float64)
        w /= sigma[:, None, None, None]
        b = beta + (b - mu) / sigma
        model.graph.initializer[index[weight]].CopyFrom(numpy_helper.from_array(w.astype(np.float32), weight))
        model.graph.initializer[index[bias]].CopyFrom(numpy_helper.from_array(b.astype(np.float32), bias))
    del model.graph.output[1:]


def calibration_images():
    from skimage import data

    for name in ("astronaut", "coffee", "chelsea", "rocket", "cat", "hubble_deep_field", "immunohistochemistry", "camera", "coins"):
        try:
            img = getattr(data, name)()
        except Exception:  # noqa: BLE001  (an image missing from this skimage version)
            continue
        if img.ndim == 2:
            img = np.stack([img] * 3, -1)
        yield np.ascontiguousarray(img[..., :3][..., ::-1])  # RGB -> BGR, as cv2 reads


def set_class_bias(model: onnx.ModelProto, names: list[str], bias: np.ndarray) -> None:
    index = {t.name: i for i, t in enumerate(model.graph.initializer)}
    for name in names:
        model.graph.initializer[index[name]].CopyFrom(numpy_helper.from_array(bias.astype(np.float32), name))


def calibrate_class_bias(model: onnx.ModelProto, images: list[np.ndarray], nc: int) -> np.ndarray:
    """The class bias that puts the busiest photo at TARGET_CANDIDATES anchors over 0.25.

    Random weights make the score spread follow the image's texture, so a bias fit to the
    median photo floods busy ones with hundreds of boxes; fit to the busiest, calmer photos get
    a few or none, as a real detector's would."""
    import onnxruntime as ort

    zipf = -0.35 * np.log1p(np.arange(nc, dtype=np.float64))  # person first, as in COCO
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    logits = []
    for img in images:
        scores = session.run(None, {"images": img[None]})[0][0, 4:]
        scores = np.clip(scores.astype(np.float64), 1e-12, 1 - 1e-12)
        logits.append(np.log(scores / (1 - scores)))
    threshold = np.log(0.25 / 0.75)

    def most_candidates(offset: float) -> float:
        return float(max(((lg + (zipf + offset)[:, None]).max(0) > threshold).sum() for lg in logits))

    lo, hi = -40.0, 40.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if most_candidates(mid) > TARGET_CANDIDATES:
            hi = mid
        else:
            lo = mid
    return zipf + lo


def generate(seed: int, imgsz: int, nc: int) -> onnx.ModelProto:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import yolo_ref

    photos = [yolo_ref.preprocess([img], (imgsz, imgsz))[0] for img in calibration_images()]
    model, folded, cls_biases = build(seed, imgsz, nc)
    fold_batchnorm(model, folded, np.stack(photos))
    set_class_bias(model, cls_biases, calibrate_class_bias(model, photos, nc))
    onnx.checker.check_model(model)
    return model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="models/yolov8n.onnx")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--seed", type=int, default=8)
    ap.add_argument("--nc", type=int, default=80)
    args = ap.parse_args()
    if args.imgsz % 32:
        ap.error("--imgsz must be a multiple of 32")
    model = generate(args.seed, args.imgsz, args.nc)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    onnx.save(model, tmp)
    os.replace(tmp, args.out)
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    print(f"wrote {args.out}: {params} parameters, imgsz {args.imgsz}, nc {args.nc}, seed {args.seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
