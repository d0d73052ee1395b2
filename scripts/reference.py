#!/usr/bin/env python3
"""Reference detections for the shipped clip, made with onnxruntime, for tests/reference.rs.

Reads every frame of a clip (MJPEG: decoded with Pillow; Y4M 4:2:0: converted from BT.601 YUV), resizes and normalizes it as the model's
manifest says, runs onnxruntime (graph optimizations off), decodes and applies NMS in Python
(scripts/lookout_ref.py), and writes one JSON line per frame in the format of `lookout detect --json`.

usage: python3 scripts/reference.py MANIFEST CLIP OUT.jsonl
  python3 scripts/reference.py models/fastestdet-fp32.toml tests/data/bikes.mjpeg tests/data/reference-fastestdet-fp32.jsonl
  ffmpeg -i tests/data/bikes.mp4 -f yuv4mpegpipe -pix_fmt yuv420p bikes.y4m
  python3 scripts/reference.py models/fastestdet-int8.toml bikes.y4m tests/data/reference-fastestdet-int8.jsonl
       (needs: pip install onnxruntime==1.32.0 numpy pillow)
"""
import json
import sys

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from lookout_ref import Manifest, decode_rgb, mjpeg_frames, y4m_frames  # noqa: E402


def main():
    manifest, clip, out = sys.argv[1:4]
    m = Manifest(manifest)
    if clip.endswith(".y4m"):
        frames = y4m_frames(clip)
    else:
        frames = (decode_rgb(j) for j in mjpeg_frames(clip))
    with open(out, "w") as f:
        for n, rgb in enumerate(frames):
            dets = [
                {"class": m.labels[c], "class_id": c, "score": round(s, 5), "box": [round(v, 2) for v in b]}
                for c, s, b in m.detect(rgb)
            ]
            f.write(json.dumps({"frame": n, "pts_ms": n * 40, "detections": dets}) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
