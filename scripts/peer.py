#!/usr/bin/env python3
"""The Python peer: what a user would run instead of lookout (the Frigate style), for scripts/bench-peer.sh.

OpenCV decodes each JPEG of an MJPEG file, resizes it to the model input (bilinear), onnxruntime runs the
same ONNX file lookout's manifest names, and the FastestDet output is decoded with lookout's rule
(score = obj^0.6 * cls^0.4 over the threshold, tanh offsets, sigmoid sizes) and a class-aware NMS. Every
frame is analysed, as fast as it goes. Prints one JSON line: fps, startup_ms (process start, from the
kernel's start time of the process, to the first inference done), per-frame latency p50/p99 (decode to
decision), peak_rss_kb, frames, detections.

With --infer-only N: onnxruntime alone, N runs on one fixed input (the first frame), and the median and
99th percentile of a run (what `lookout bench` calls inference).

usage: peer.py --model models/fastestdet.onnx --source tests/data/bikes.mjpeg [--threads 1] [--frames N]
       peer.py --model M --source S --infer-only 200
       (needs: pip install onnxruntime==1.32.0 opencv-python-headless numpy; scripts/bench-peer.sh installs them)
"""
import time

T_BOOT = time.clock_gettime(time.CLOCK_BOOTTIME)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402


def process_start_boottime():
    """The process's start, in seconds of CLOCK_BOOTTIME (the kernel counts it in clock ticks)."""
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[19]) / os.sysconf("SC_CLK_TCK")


def jpegs(data):
    at = 0
    while True:
        soi = data.find(b"\xff\xd8", at)
        if soi < 0:
            return
        eoi = data.find(b"\xff\xd9", soi + 2)
        if eoi < 0:
            return
        yield np.frombuffer(data, np.uint8, eoi + 2 - soi, soi)
        at = eoi + 2


def nms(boxes, scores, classes, iou):
    order = np.argsort(-scores)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
        o = inter / (area(boxes[i]) + area(boxes[rest]) - inter + 1e-9)
        order = rest[(o <= iou) | (classes[rest] != classes[i])]
    return keep


def decode(out, src_w, src_h, threshold=0.65, iou=0.45):
    f = out[0]  # 85 x g x g
    g = f.shape[1]
    obj = f[0]
    cls = f[5:].max(axis=0)
    cid = f[5:].argmax(axis=0)
    score = obj.clip(0, 1) ** 0.6 * cls.clip(0, 1) ** 0.4
    ys, xs = np.nonzero(score > threshold)
    if ys.size == 0:
        return []
    cx = (xs + np.tanh(f[1, ys, xs])) / g
    cy = (ys + np.tanh(f[2, ys, xs])) / g
    w = 1 / (1 + np.exp(-f[3, ys, xs]))
    h = 1 / (1 + np.exp(-f[4, ys, xs]))
    boxes = np.stack([(cx - w / 2) * src_w, (cy - h / 2) * src_h, (cx + w / 2) * src_w, (cy + h / 2) * src_h], 1)
    scores, classes = score[ys, xs], cid[ys, xs]
    return [(int(classes[i]), float(scores[i]), boxes[i].tolist()) for i in nms(boxes, scores, classes, iou)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (0 = its default)")
    ap.add_argument("--frames", type=int, default=0)
    ap.add_argument("--infer-only", type=int, default=0)
    a = ap.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    _, _, mh, mw = inp.shape
    data = open(a.source, "rb").read()
    if a.infer_only:
        img = cv2.imdecode(next(jpegs(data)), cv2.IMREAD_COLOR)
        x = cv2.resize(img, (mw, mh), interpolation=cv2.INTER_LINEAR)
        x = np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32) * (1 / 255.0)
        sess.run(None, {inp.name: x})
        runs = []
        for _ in range(a.infer_only):
            t0 = time.perf_counter()
            sess.run(None, {inp.name: x})
            runs.append(time.perf_counter() - t0)
        runs.sort()
        print(json.dumps({"infer_ms_p50": runs[len(runs) // 2] * 1e3, "infer_ms_p99": runs[int(len(runs) * 0.99)] * 1e3}))
        return
    lat, n, dets, first = [], 0, 0, None
    t_first = t_last = None
    for buf in jpegs(data):
        t0 = time.perf_counter()
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)  # BGR, the model's order
        if img is None:
            continue
        x = cv2.resize(img, (mw, mh), interpolation=cv2.INTER_LINEAR)
        x = np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32) * (1 / 255.0)
        out = sess.run(None, {inp.name: x})[0]
        if first is None:
            first = time.clock_gettime(time.CLOCK_BOOTTIME)
        dets += len(decode(out, img.shape[1], img.shape[0]))
        t_last = time.perf_counter()
        t_first = t_first or t_last
        lat.append(t_last - t0)
        n += 1
        if a.frames and n >= a.frames:
            break
    lat.sort()
    pct = lambda p: lat[min(len(lat) - 1, round((len(lat) - 1) * p))] * 1e3  # noqa: E731
    print(json.dumps({
        "peer": f"opencv {cv2.__version__} + onnxruntime {ort.__version__}, {a.threads or 'default'} thread(s)",
        "frames": n,
        # Frames a second from the first decision to the last (start-up is its own figure), as lookout bench.
        "fps": (n - 1) / (t_last - t_first) if n > 1 else 0.0,
        "startup_ms": (first - process_start_boottime()) * 1e3,
        "python_import_ms": (T_BOOT - process_start_boottime()) * 1e3,
        "e2e_ms_p50": pct(0.5),
        "e2e_ms_p99": pct(0.99),
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "detections": dets,
    }))


if __name__ == "__main__":
    main()
