"""An independent reference of the Ultralytics YOLOv8 detection pipeline.

onnxruntime + NumPy + OpenCV only, written from Ultralytics' own code (ultralytics 8.3:
`data/augment.py` LetterBox, `engine/predictor.py` preprocess, `utils/ops.py`
non_max_suppression / scale_boxes / clip_boxes) so that the Rust worker can be checked against
it: same boxes, classes and scores.

    python yolo_ref.py --model M.onnx [--conf 0.25] [--iou 0.7] [--max-det 300] IMAGE...

prints one JSON line per image: {"path", "image": {"width", "height"}, "detections": [...]}.
`--bench` times the stages instead (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time

import cv2
import numpy as np
import onnxruntime as ort

MAX_WH = 7680  # Ultralytics' class offset for class-aware NMS
MAX_NMS = 30000


def imread(path: str) -> np.ndarray:
    """Ultralytics' imread: cv2.imdecode with IMREAD_COLOR (BGR, alpha dropped, gray to 3)."""
    data = np.fromfile(path, np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot decode {path}")
    return img


def letterbox(img: np.ndarray, new_shape: tuple[int, int]) -> np.ndarray:
    """LetterBox(new_shape, auto=False, scale_fill=False, scaleup=True, center=True)."""
    shape = img.shape[:2]  # h, w
    r = min(new_shape[0] / shape[0], new_shape[1] / shape[1])
    new_unpad = int(round(shape[1] * r)), int(round(shape[0] * r))
    dw, dh = new_shape[1] - new_unpad[0], new_shape[0] - new_unpad[1]
    dw /= 2
    dh /= 2
    if shape[::-1] != new_unpad:
        img = cv2.resize(img, new_unpad, interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    return cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114))


def preprocess(imgs: list[np.ndarray], imgsz: tuple[int, int]) -> np.ndarray:
    """BasePredictor.preprocess: letterbox, BGR->RGB, BHWC->BCHW, float32 / 255."""
    im = np.stack([letterbox(x, imgsz) for x in imgs])
    im = im[..., ::-1].transpose((0, 3, 1, 2))
    im = np.ascontiguousarray(im).astype(np.float32)
    im /= 255
    return im


def xywh2xyxy(x: np.ndarray) -> np.ndarray:
    y = np.empty_like(x)
    xy = x[..., :2]
    wh = x[..., 2:] / np.float32(2)
    y[..., :2] = xy - wh
    y[..., 2:] = xy + wh
    return y


def nms_indices(boxes: np.ndarray, scores: np.ndarray, iou_thres: float) -> list[int]:
    """torchvision.ops.nms on CPU: float32 IoU, suppress when IoU > threshold.

    Ties in score keep index order (a stable sort), which is what the Rust side does too.
    """
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (boxes[:, k] for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(len(scores), dtype=bool)
    keep = []
    for _i, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(int(i))
        rest = order[_i + 1 :]
        rest = rest[~suppressed[rest]]
        if rest.size == 0:
            continue
        xx1 = np.maximum(x1[i], x1[rest])
        yy1 = np.maximum(y1[i], y1[rest])
        xx2 = np.minimum(x2[i], x2[rest])
        yy2 = np.minimum(y2[i], y2[rest])
        w = np.maximum(np.float32(0), xx2 - xx1)
        h = np.maximum(np.float32(0), yy2 - yy1)
        inter = w * h
        ovr = inter / (areas[i] + areas[rest] - inter)
        suppressed[rest[ovr > np.float32(iou_thres)]] = True
    return keep


def non_max_suppression(pred: np.ndarray, nc: int, conf: float, iou: float, classes, max_det: int) -> np.ndarray:
    """ops.non_max_suppression for one image's [4 + nc, anchors] output (multi_label=False)."""
    scores_all = pred[4 : 4 + nc]
    xc = scores_all.max(0) > conf
    x = pred.T[xc]  # [n, 4 + nc]
    if x.shape[0] == 0:
        return np.zeros((0, 6), np.float32)
    box = xywh2xyxy(x[:, :4])
    cls = x[:, 4 : 4 + nc]
    j = cls.argmax(1)  # the first maximum, as torch.max
    c = cls[np.arange(len(j)), j]
    x = np.concatenate([box, c[:, None], j[:, None].astype(np.float32)], 1)[c > conf]
    if classes is not None:
        x = x[(x[:, 5:6] == np.array(classes, np.float32)).any(1)]
    if x.shape[0] == 0:
        return np.zeros((0, 6), np.float32)
    if x.shape[0] > MAX_NMS:
        x = x[np.argsort(-x[:, 4], kind="stable")[:MAX_NMS]]
    offset = x[:, 5:6] * np.float32(MAX_WH)
    keep = nms_indices(x[:, :4] + offset, x[:, 4], iou)[:max_det]
    return x[keep]


def scale_boxes(img1_shape, boxes: np.ndarray, img0_shape) -> np.ndarray:
    """ops.scale_boxes(padding=True, xywh=False) then clip_boxes."""
    gain = min(img1_shape[0] / img0_shape[0], img1_shape[1] / img0_shape[1])
    pad_x = round((img1_shape[1] - img0_shape[1] * gain) / 2 - 0.1)
    pad_y = round((img1_shape[0] - img0_shape[0] * gain) / 2 - 0.1)
    boxes = boxes.copy()
    boxes[:, [0, 2]] -= np.float32(pad_x)
    boxes[:, [1, 3]] -= np.float32(pad_y)
    boxes[:, :4] /= np.float32(gain)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, img0_shape[1])
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, img0_shape[0])
    return boxes


class Model:
    def __init__(self, path: str, threads: int = 0):
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        self.names = {int(k): v for k, v in ast.literal_eval(meta["names"]).items()}
        imgsz = ast.literal_eval(meta.get("imgsz", "[640, 640]"))
        self.imgsz = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(imgsz)
        self.input = self.session.get_inputs()[0].name
        self.nc = len(self.names)

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: tensor})[0]

    def detect(self, imgs, conf=0.25, iou=0.7, classes=None, max_det=300):
        tensor = preprocess(imgs, self.imgsz)
        out = self.infer(tensor)
        results = []
        for img, pred in zip(imgs, out):
            det = non_max_suppression(pred, self.nc, conf, iou, classes, max_det)
            det[:, :4] = scale_boxes(self.imgsz, det[:, :4], img.shape[:2])
            results.append(det)
        return results


def to_json(path, img, det, names):
    h, w = img.shape[:2]
    return {
        "path": path,
        "image": {"width": w, "height": h},
        "detections": [
            {
                "class_id": int(d[5]),
                "class_name": names.get(int(d[5]), str(int(d[5]))),
                "confidence": float(d[4]),
                "bbox": [float(v) for v in d[:4]],
            }
            for d in det
        ],
    }


def bench(model: Model, paths: list[str], batch: int, rounds: int) -> dict:
    """Per-stage seconds per image over `rounds` passes of the images in batches of `batch`."""
    blobs = [np.fromfile(p, np.uint8) for p in paths]
    stages = {"decode": 0.0, "preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
    images = 0
    start = time.perf_counter()
    for _ in range(rounds):
        for b in range(0, len(blobs), batch):
            chunk = blobs[b : b + batch]
            t0 = time.perf_counter()
            imgs = [cv2.imdecode(x, cv2.IMREAD_COLOR) for x in chunk]
            t1 = time.perf_counter()
            tensor = preprocess(imgs, model.imgsz)
            t2 = time.perf_counter()
            out = model.infer(tensor)
            t3 = time.perf_counter()
            for img, pred in zip(imgs, out):
                det = non_max_suppression(pred, model.nc, 0.25, 0.7, None, 300)
                det[:, :4] = scale_boxes(model.imgsz, det[:, :4], img.shape[:2])
            t4 = time.perf_counter()
            stages["decode"] += t1 - t0
            stages["preprocess"] += t2 - t1
            stages["inference"] += t3 - t2
            stages["postprocess"] += t4 - t3
            images += len(chunk)
    wall = time.perf_counter() - start
    return {
        "batch": batch,
        "images": images,
        "images_per_second": images / wall,
        "ms_per_image": {k: 1000 * v / images for k, v in stages.items()},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument("--iou", type=float, default=0.7)
    ap.add_argument("--max-det", type=int, default=300)
    ap.add_argument("--classes", type=int, nargs="*")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0: ORT's default)")
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tensor-dir", help="also write each image's preprocessed tensor there, as <name>.npy")
    ap.add_argument("images", nargs="+")
    args = ap.parse_args()
    model = Model(args.model, args.threads)
    if args.bench:
        print(json.dumps(bench(model, args.images, args.batch, args.rounds)))
        return 0
    for path in args.images:
        img = imread(path)
        if args.tensor_dir:
            import os

            np.save(os.path.join(args.tensor_dir, os.path.basename(path) + ".npy"), preprocess([img], model.imgsz))
        det = model.detect([img], args.conf, args.iou, args.classes, args.max_det)[0]
        print(json.dumps(to_json(path, img, det, model.names)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
