#!/usr/bin/env python3
"""An integer-op int8 FastestDet for tract: QLinearConv instead of QDQ around float convolutions.

The shipped int8 files are QDQ: tract keeps every Conv in f32 between QuantizeLinear/DequantizeLinear
pairs (114 of them in FastestDet), which is why they are slower than fp32 in tract. This script makes the
other form, onnxruntime's QOperator format, where each Conv becomes a QLinearConv that tract runs as an
integer matrix product (i8 x u8 -> i32) with requantization, calibrated on frames of the shipped clip.

Measured with tract 0.23.9 on the 2-core x86-64 development machine (`lookout bench --ops` with a manifest
for the output and a loose self-test, atol 1.0, against onnxruntime's run): 66.7 ms a run, of which Im2col 25.4 ms (29
nodes: the depthwise convolutions become im2col + integer matmul), OptMatMul 15.8 ms (70, integer), the
44 QuantizeLinear 7.3 ms, QScale/Min/Max/Add/Sub (requantization) 12 ms; the lean fp32 graph takes
10-11 ms. So it is not shipped: on x86 tract's integer path costs more than it saves. On ARM with SDOT
(Pi 5, Orin) the matmul part would be cheaper, the im2col and requantization would not; not measured.

usage: python3 scripts/quantize_int8.py models/fastestdet-lean.onnx /tmp/fastestdet-lean.qop.onnx
       (needs: pip install onnx onnxruntime==1.32.0 opencv-python-headless numpy)
"""
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

CLIP = Path(__file__).resolve().parent.parent / "tests/data/bikes.mjpeg"


def jpegs(data):
    at = 0
    while True:
        s = data.find(b"\xff\xd8", at)
        e = data.find(b"\xff\xd9", s + 2)
        if s < 0 or e < 0:
            return
        yield np.frombuffer(data[s : e + 2], np.uint8)
        at = e + 2


class Frames(CalibrationDataReader):
    """Every 12th frame of the shipped clip, as the manifest preprocesses it (BGR, /255, stretch)."""

    def __init__(self, size):
        self.it = iter(list(jpegs(CLIP.read_bytes()))[::12])
        self.size = size

    def get_next(self):
        b = next(self.it, None)
        if b is None:
            return None
        img = cv2.resize(cv2.imdecode(b, cv2.IMREAD_COLOR), self.size, interpolation=cv2.INTER_LINEAR)
        return {"input.1": img.transpose(2, 0, 1)[None].astype(np.float32) / 255.0}


def main():
    src, dst = sys.argv[1], sys.argv[2]
    quantize_static(
        src,
        dst,
        Frames((352, 352)),
        quant_format=QuantFormat.QOperator,
        op_types_to_quantize=["Conv", "MatMul"],
        per_channel=False,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    print(dst, dict(Counter(n.op_type for n in onnx.load(dst).graph.node)))


if __name__ == "__main__":
    main()
