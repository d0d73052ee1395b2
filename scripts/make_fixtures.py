#!/usr/bin/env python3
"""Makes the self-test fixtures named by every manifest in models/.

For each manifest: the fixture image (a frame of the shipped clip, resized to the model input and stored
as PPM) and the outputs onnxruntime computes for it, all outputs concatenated in graph order as
little-endian f32. lookout runs the same image through its own preprocessing and tract at start-up and
refuses the model if the outputs disagree beyond the manifest's tolerance.

usage: python3 scripts/make_fixtures.py   (needs: pip install onnxruntime==1.32.0 numpy pillow)
"""
import itertools
import sys

import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from lookout_ref import ROOT, Manifest, decode_rgb, mjpeg_frames, resize_bilinear  # noqa: E402

FRAME = 100  # a busy frame: cars, the taxi and the cyclist


def main():
    jpeg = next(itertools.islice(mjpeg_frames(ROOT / "tests/data/bikes.mjpeg"), FRAME, None))
    rgb = decode_rgb(jpeg)
    for path in sorted((ROOT / "models").glob("*.toml")):
        m = Manifest(path)
        st = m.m["selftest"]
        img = np.clip(np.rint(resize_bilinear(rgb, m.w, m.h)), 0, 255).astype(np.uint8)
        ppm = m.dir / st["input"]
        ppm.parent.mkdir(parents=True, exist_ok=True)
        ppm.write_bytes(f"P6\n{m.w} {m.h}\n255\n".encode() + img.tobytes())
        outs = m.run(m.tensor(img.astype(np.float32)))
        blob = b"".join(np.ascontiguousarray(o, dtype="<f4").tobytes() for o in outs)
        (m.dir / st["expected"]).write_bytes(blob)
        print(f"{path.name}: {ppm.name} + {st['expected']} ({len(blob)} bytes)")


if __name__ == "__main__":
    main()
