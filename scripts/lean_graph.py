#!/usr/bin/env python3
"""Makes the lean FastestDet graphs: the same weights, less work that tract does badly.

What is cut, and where it went:
- The class Softmax at the end of the head (Transpose -> Softmax over 80 classes -> Transpose): 21% of a
  tract fp32 run (3.1 ms of 14.9), for a result the decoder needs at a handful of cells. The lean graph
  outputs the raw class logits in channels 5..85; the decoder (manifest `class_logits = true`) skips a cell
  whose objectness alone cannot pass the threshold (score = obj^0.6 * p^0.4 with p <= 1) and computes the
  softmax of the best class only for the cells left. Same scores, same boxes.
- Not cut: the stem MaxPool (8% of a run). Written as a 1x3 then a 3x1 MaxPool (`split_maxpool`, exact:
  the maximum over a 3x3 window is the maximum of its rows' maxima) tract took 1.06 ms for the pair
  against 1.09 ms for the one (`lookout bench --ops`), so the graph keeps the original.

For each graph written the script checks with onnxruntime that the lean graph gives the original's
outputs on a real frame (objectness, box channels and the softmax of the logits), then writes the model's
self-test fixture. The manifests (models/fastestdet-lean-*.toml) pin the files by sha256.

usage: python3 scripts/lean_graph.py   (needs: pip install onnx onnxruntime==1.32.0 numpy pillow)
"""
import hashlib
import sys

import numpy as np
import onnx
from onnx import helper

MODELS = __import__("pathlib").Path(__file__).resolve().parent.parent / "models"
JOBS = [
    ("fastestdet.onnx", "fastestdet-lean.onnx", "fastestdet-lean-fp32.expected.f32"),
    ("fastestdet.int8.onnx", "fastestdet-lean.int8.onnx", "fastestdet-lean-int8.expected.f32"),
]


def node_producing(g, name):
    return next(n for n in g.node if name in n.output)


def cut_softmax(g):
    """Transpose -> Softmax -> Transpose feeding the output Concat: the Concat takes the logits instead."""
    sm = next(n for n in g.node if n.op_type == "Softmax")
    t_in = node_producing(g, sm.input[0])
    t_out = next(n for n in g.node if sm.output[0] in n.input)
    assert t_in.op_type == "Transpose" and t_out.op_type == "Transpose", (t_in.op_type, t_out.op_type)
    concat = next(n for n in g.node if t_out.output[0] in n.input)
    assert concat.op_type == "Concat" and concat.output[0] == g.output[0].name
    logits = t_in.input[0]
    for i, x in enumerate(concat.input):
        if x == t_out.output[0]:
            concat.input[i] = logits
    for n in (t_in, sm, t_out):
        g.node.remove(n)


def split_maxpool(g):
    """MaxPool 3x3 (stride s, pad p) -> MaxPool 1x3 (1, s) then MaxPool 3x1 (s, 1)."""
    for mp in [n for n in g.node if n.op_type == "MaxPool"]:
        attrs = {a.name: helper.get_attribute_value(a) for a in mp.attribute}
        k, s, p = attrs["kernel_shape"], attrs.get("strides", [1, 1]), attrs.get("pads", [0, 0, 0, 0])
        if k != [3, 3] or attrs.get("ceil_mode", 0) != 0 or attrs.get("dilations", [1, 1]) != [1, 1]:
            continue
        mid = mp.output[0] + "_rows"
        a = helper.make_node(
            "MaxPool", [mp.input[0]], [mid], name=mp.name + "_1x3",
            kernel_shape=[1, 3], strides=[1, s[1]], pads=[0, p[1], 0, p[3]],
        )
        b = helper.make_node(
            "MaxPool", [mid], [mp.output[0]], name=mp.name + "_3x1",
            kernel_shape=[3, 1], strides=[s[0], 1], pads=[p[0], 0, p[2], 0],
        )
        at = list(g.node).index(mp)
        g.node.remove(mp)
        g.node.insert(at, b)
        g.node.insert(at, a)


def softmax_classes(out):
    x = out[:, 5:]
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return np.concatenate([out[:, :5], e / e.sum(axis=1, keepdims=True)], axis=1)


def run(path, x):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def main():
    # The originals' self-test image (scripts/make_fixtures.py: frame 100 of the shipped clip, 352x352).
    ppm = (MODELS / "selftest/bikes-352x352.ppm").read_bytes()
    assert ppm.startswith(b"P6\n352 352\n255\n")
    img = np.frombuffer(ppm[len(b"P6\n352 352\n255\n"):], np.uint8).reshape(352, 352, 3)
    x = (img[:, :, ::-1].astype(np.float32) / 255.0).transpose(2, 0, 1)[None].copy()  # BGR, NCHW
    for src, dst, expected in JOBS:
        m = onnx.load(str(MODELS / src))
        cut_softmax(m.graph)
        # split_maxpool(m.graph): measured no faster in tract (OptMaxPool 1.06 ms as two nodes, 1.09 as one)
        onnx.checker.check_model(m)
        onnx.save(m, str(MODELS / dst))
        ref, lean = run(MODELS / src, x), run(MODELS / dst, x)
        diff = np.abs(softmax_classes(lean) - ref).max()
        print(f"{dst}: max |softmax(lean) - original| = {diff:.2e} over {ref.size} values")
        assert diff < 1e-4, diff
        (MODELS / "selftest" / expected).write_bytes(np.ascontiguousarray(lean, dtype="<f4").tobytes())
        print(f"  sha256 {hashlib.sha256((MODELS / dst).read_bytes()).hexdigest()}")


if __name__ == "__main__":
    main()
