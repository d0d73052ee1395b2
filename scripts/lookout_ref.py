"""Independent Python reference for lookout's model path, used to make test fixtures.

Everything here is written from the model notes (../shared/models/README.md) and the documented
preprocessing contract, not translated from the Rust code: MJPEG splitting, bilinear resize with
half-pixel centres (no anti-aliasing), per-channel normalization, onnxruntime inference with graph
optimizations off (exact QDQ arithmetic for int8), and the FastestDet / UltraFace / YuNet decoders with
class-aware greedy NMS. JPEG frames are decoded with Pillow (libjpeg-turbo), a different decoder from
lookout's zune-jpeg, so comparisons use tolerances.
"""
import io
import pathlib
import tomllib

import numpy as np
import onnxruntime as ort
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parent.parent


def mjpeg_frames(path):
    """Yields each JPEG of an MJPEG stream as bytes, cut by walking markers."""
    data = pathlib.Path(path).read_bytes()
    i = 0
    n = len(data)
    while True:
        s = data.find(b"\xff\xd8", i)
        if s < 0:
            return
        j = s + 2
        while j < n:
            while data[j] != 0xFF:
                j += 1
            while data[j] == 0xFF:
                j += 1
            m = data[j]
            j += 1
            if m == 0xD9:
                break
            if m == 0x01 or 0xD0 <= m <= 0xD7:
                continue
            seg = int.from_bytes(data[j:j + 2], "big")
            j += seg
            if m == 0xDA:
                # entropy-coded data until a marker that is not FF00 or RSTn
                while True:
                    k = data.index(b"\xff", j)
                    nxt = data[k + 1]
                    if nxt == 0x00 or 0xD0 <= nxt <= 0xD7 or nxt == 0xFF:
                        j = k + 1 if nxt == 0xFF else k + 2
                        continue
                    j = k
                    break
        yield data[s:j]
        i = j


def decode_rgb(jpeg):
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))


def geometry(src_w, src_h, out_w, out_h, resize):
    """(scale_x, scale_y, pad_x, pad_y) mapping source pixels into the model input, in float32."""
    f32 = np.float32
    if resize == "stretch":
        return f32(out_w) / f32(src_w), f32(out_h) / f32(src_h), f32(0), f32(0)
    s = min(f32(out_w) / f32(src_w), f32(out_h) / f32(src_h))
    return s, s, np.floor((f32(out_w) - s * f32(src_w)) / f32(2)), np.floor((f32(out_h) - s * f32(src_h)) / f32(2))


def resize_bilinear(img, out_w, out_h, resize="stretch", pad_value=0.0):
    """HxWx3 -> out_h x out_w x 3 float32: half-pixel centres, edge clamp, no anti-aliasing.

    Every step is float32 in the order lookout's contract states (source coordinate
    ((o + 0.5 - pad) / scale) - 0.5; top = p00 + (p10 - p00) * fx, likewise bottom;
    v = top + (bottom - top) * fy), then rounded to a whole level with ties to even. Rounding matters:
    the int8 models quantize their input with step 1/255, and unrounded bilinear averages of integer
    pixels land exactly on half steps, where tract and onnxruntime round differently. `letterbox`
    scales uniformly, centres, and fills the rest with `pad_value`.
    """
    f32 = np.float32
    h, w = img.shape[:2]
    img = img.astype(f32)
    sx, sy, px, py = geometry(w, h, out_w, out_h, resize)

    def taps(out_len, src_len, scale, pad):
        o = np.arange(out_len, dtype=f32)
        s = ((o + f32(0.5) - pad) / scale - f32(0.5)).astype(f32)
        s = np.clip(s, f32(0), f32(src_len - 1)).astype(f32)
        i0 = np.floor(s).astype(np.int64)
        i1 = np.minimum(i0 + 1, src_len - 1)
        content = np.round(f32(src_len) * scale)
        inside = (o >= pad) & (o < pad + content)
        return i0, i1, (s - i0.astype(f32)).astype(f32), inside

    x0, x1, fx, xin = taps(out_w, w, sx, px)
    y0, y1, fy, yin = taps(out_h, h, sy, py)
    fx = fx[None, :, None]
    fy = fy[:, None, None]
    p00, p10 = img[y0][:, x0], img[y0][:, x1]
    p01, p11 = img[y1][:, x0], img[y1][:, x1]
    top = p00 + (p10 - p00) * fx
    bot = p01 + (p11 - p01) * fx
    # rounded to whole 8-bit levels, ties to even (as lookout does, and cv2.resize on uint8)
    out = np.rint(top + (bot - top) * fy).astype(f32)
    out[~(yin[:, None] & xin[None, :])] = f32(pad_value)
    return out


class Manifest:
    def __init__(self, path):
        self.path = pathlib.Path(path)
        self.m = tomllib.loads(self.path.read_text())
        self.dir = self.path.parent
        inp = self.m["input"]
        _, _, self.h, self.w = inp["shape"]
        self.labels = self.m["labels"]
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.intra_op_num_threads = 1
        so.log_severity_level = 3
        self.sess = ort.InferenceSession(str(self.dir / self.m["file"]), so, providers=["CPUExecutionProvider"])

    def tensor(self, rgb_f32):
        """HxWx3 RGB float at model size -> 1x3xHxW normalized, in the model's channel order."""
        inp = self.m["input"]
        f32 = np.float32
        std = np.array(inp["std"], f32)
        mul = f32(inp["scale"]) / std
        add = -np.array(inp["mean"], f32) / std
        x = (rgb_f32.astype(f32) * mul + add).astype(f32)
        if inp["color"] == "bgr":
            x = x[:, :, ::-1]
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None]).astype(np.float32)

    def run(self, tensor):
        return self.sess.run(None, {self.sess.get_inputs()[0].name: tensor})

    def detect(self, rgb_u8):
        """Detections for one source frame: list of (class_id, score, [x1, y1, x2, y2]) in source pixels."""
        src_h, src_w = rgb_u8.shape[:2]
        inp = self.m["input"]
        resize = inp["resize"]
        img = resize_bilinear(rgb_u8, self.w, self.h, resize, inp.get("pad", 0.0))
        outs = self.run(self.tensor(img))
        d = self.m["decoder"]
        cands = decode(d["kind"], outs, len(self.labels), self.w, self.h, d["score_threshold"])
        kept = nms(cands, d["nms_iou"])
        sx, sy, px, py = (float(v) for v in geometry(src_w, src_h, self.w, self.h, resize))
        return [
            (c, s, [float(np.clip((b[0] - px) / sx, 0, src_w)), float(np.clip((b[1] - py) / sy, 0, src_h)),
                    float(np.clip((b[2] - px) / sx, 0, src_w)), float(np.clip((b[3] - py) / sy, 0, src_h))])
            for c, s, b in kept
        ]


def decode(kind, outs, classes, w, h, thr):
    res = []
    if kind == "fastestdet":
        f = outs[0][0]  # 85 x H x W
        gh, gw = f.shape[1:]
        obj = np.clip(f[0], 0, 1)
        cls = f[5:5 + classes]
        best = cls.argmax(0)
        best_s = np.clip(cls.max(0), 0, 1)
        score = obj ** 0.6 * best_s ** 0.4
        for y, x in zip(*np.nonzero(score > thr)):
            cx = (x + np.tanh(f[1, y, x])) / gw
            cy = (y + np.tanh(f[2, y, x])) / gh
            bw = 1 / (1 + np.exp(-f[3, y, x]))
            bh = 1 / (1 + np.exp(-f[4, y, x]))
            res.append((int(best[y, x]), float(score[y, x]),
                        [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]))
    elif kind == "ultraface":
        scores, boxes = outs[0][0], outs[1][0]
        for i in np.nonzero(scores[:, 1] > thr)[0]:
            b = boxes[i]
            res.append((0, float(scores[i, 1]), [b[0] * w, b[1] * h, b[2] * w, b[3] * h]))
    elif kind == "yunet":
        for k, s in enumerate((8, 16, 32)):
            cls, obj, bbox = outs[k][0, :, 0], outs[3 + k][0, :, 0], outs[6 + k][0]
            cols = w // s
            score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
            for i in np.nonzero(score > thr)[0]:
                row, col = i // cols, i % cols
                cx, cy = (col + bbox[i, 0]) * s, (row + bbox[i, 1]) * s
                bw, bh = np.exp(bbox[i, 2]) * s, np.exp(bbox[i, 3]) * s
                res.append((0, float(score[i]), [cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]))
    else:
        raise ValueError(kind)
    return res


def iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def nms(cands, thr):
    kept = []
    for c in sorted(cands, key=lambda d: -d[1]):
        if all(k[0] != c[0] or iou(k[2], c[2]) <= thr for k in kept):
            kept.append(c)
    return kept


def y4m_frames(path):
    """Yields each frame of a 4:2:0 Y4M file as float32 RGB (BT.601 limited range, chroma sampled at
    (x // 2, y // 2), clamped to 0..255, not rounded)."""
    data = pathlib.Path(path).read_bytes()
    end = data.index(b"\n")
    header = data[:end].decode().split(" ")
    w = int(next(f[1:] for f in header if f.startswith("W")))
    h = int(next(f[1:] for f in header if f.startswith("H")))
    assert any(f.startswith("C420") for f in header), "only 4:2:0 Y4M is supported here"
    cw, ch = (w + 1) // 2, (h + 1) // 2
    size = w * h + 2 * cw * ch
    pos = end + 1
    while pos < len(data):
        pos = data.index(b"\n", pos) + 1  # FRAME line
        f32 = np.float32
        buf = np.frombuffer(data, np.uint8, size, pos).astype(f32)
        pos += size
        y = buf[: w * h].reshape(h, w)
        u = buf[w * h: w * h + cw * ch].reshape(ch, cw).repeat(2, 0).repeat(2, 1)[:h, :w]
        v = buf[w * h + cw * ch:].reshape(ch, cw).repeat(2, 0).repeat(2, 1)[:h, :w]
        c = f32(1.164383) * (y - f32(16))
        d, e = u - f32(128), v - f32(128)
        rgb = np.stack([c + f32(1.596027) * e,
                        c - f32(0.391762) * d - f32(0.812968) * e,
                        c + f32(2.017232) * d], axis=-1)
        yield np.clip(rgb, f32(0), f32(255)).astype(f32)
