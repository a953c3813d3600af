"""Is tf.io.decode_and_crop_jpeg of a widened window pixel-identical to the published full decode?

  python bench/jpeg_window_exactness.py [SEED]

For each window [y, x, h, w] of a frame it decodes a larger window, starting at the 16-px
boundary at least M px before the window's top and left and ending M px after its bottom and
right (clamped to the frame), cuts the window out, and compares with tf.io.decode_jpeg of the
whole frame cut the same way. JPEGs: synthetic frames (colour waves, hard-edged rectangles,
noise) of 7 sizes, odd ones included, encoded by Pillow as 4:4:4, 4:2:2 and 4:2:0, baseline
and progressive, greyscale, and by tf.io.encode_jpeg; both DCT methods the pipeline uses.
Margin None is the plain window (no widening): the negative control. Prints, per margin,
how many windows of each kind differ.
"""
import io, sys, numpy as np, tensorflow as tf
from PIL import Image
rng = np.random.default_rng(int(sys.argv[1]) if len(sys.argv) > 1 else 0)

def natural(h, w):
  # smooth colour field + edges + noise: chroma varies at every scale
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
  img = np.zeros((h, w, 3), np.float32)
  for c in range(3):
    for _ in range(4):
      fy, fx, ph = rng.uniform(0.01, 0.3), rng.uniform(0.01, 0.3), rng.uniform(0, 6)
      img[..., c] += 40 * np.sin(fy * yy + fx * xx + ph)
  img += 128 + rng.normal(0, 12, img.shape)
  for _ in range(6):  # hard-edged rectangles of random colour
    y0, x0 = rng.integers(0, h), rng.integers(0, w)
    img[y0:y0 + rng.integers(1, h), x0:x0 + rng.integers(1, w)] = rng.uniform(0, 255, 3)
  return np.clip(img, 0, 255).astype(np.uint8)

def encodings(img):
  out = {}
  for ss, name in ((0, '444'), (1, '422'), (2, '420')):
    for prog in (False, True):
      b = io.BytesIO(); Image.fromarray(img).save(b, 'JPEG', quality=int(rng.integers(60, 96)), subsampling=ss, progressive=prog)
      out[f'pil_{name}{"_prog" if prog else ""}'] = b.getvalue()
  b = io.BytesIO(); Image.fromarray(img).convert('L').save(b, 'JPEG', quality=85); out['pil_grey'] = b.getvalue()
  out['tf_420'] = tf.io.encode_jpeg(img, quality=90).numpy()
  out['tf_444'] = tf.io.encode_jpeg(img, quality=90, chroma_downsampling=False).numpy()
  return out

def window(y, x, h, w, H, W, M, align=16):
  if M is None:
    return y, x, h, w
  y0 = max(0, (y - M) // align * align); x0 = max(0, (x - M) // align * align)
  y1 = min(H, y + h + M); x1 = min(W, x + w + M)
  return y0, x0, y1 - y0, x1 - x0

sizes = [(256, 340), (255, 341), (240, 320), (17, 23), (256, 456), (33, 250), (129, 97)]
margins = [None, 0, 1, 2, 8]
stats = {}
for dct in ('INTEGER_FAST', 'INTEGER_ACCURATE'):
  for (H, W) in sizes:
    img = natural(H, W)
    for name, jpg in encodings(img).items():
      full = tf.io.decode_jpeg(jpg, channels=3, dct_method=dct).numpy()
      for t in range(12):
        if t == 0: y, x, h, w = 0, 0, H, W
        elif t == 1: h, w = max(1, H // 3), max(1, W // 3); y, x = H - h, W - w
        else:
          h = int(rng.integers(1, H + 1)); w = int(rng.integers(1, W + 1))
          y = int(rng.integers(0, H - h + 1)); x = int(rng.integers(0, W - w + 1))
        ref = full[y:y + h, x:x + w]
        for M in margins:
          y0, x0, hh, ww = window(y, x, h, w, H, W, M)
          got = tf.io.decode_and_crop_jpeg(jpg, [y0, x0, hh, ww], channels=3, dct_method=dct).numpy()
          got = got[y - y0:y - y0 + h, x - x0:x - x0 + w]
          k = (name, M)
          d, n = stats.get(k, (0, 0))
          stats[k] = (d + int(not np.array_equal(got, ref)), n + 1)
for M in margins:
  print(f'margin {M}:', ' '.join(f'{name}={d}/{n}' for (name, m), (d, n) in sorted(stats.items(), key=lambda kv: kv[0][0]) if m == M))
