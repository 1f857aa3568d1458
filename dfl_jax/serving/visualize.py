"""Figures of predictions: 2D skeleton overlay, 3D view, joints-image attention (Fig. 1 and 6).

The overlay is drawn with OpenCV on the image itself (no resampling, no axes), so its pixels
can be checked against the JSON: bones, then joint discs (no anti-aliasing) in one colour per
hand, over an optional thin grey box. The others are matplotlib figures (Agg, no pyplot).

Attention (paper Fig. 1 and 6, supplement Fig. 1): for one joint, one column per iteration, one
row per part of the joints-image attention: appearance (softmax of Q_a K_a^T alone), position
(Q_p K_p^T alone) and combined (the softmax of their sum, which the network uses), each
upsampled from its scale (16x16, 32x32, 64x64 for a 256 input) to the crop and laid over it;
the joint's predicted (or given) position is an orange cross. See
``dfl_jax.network.attention.attention_maps``.
"""

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dfl_jax.conventions import BONES, HAND_SLICES, NUM_JOINTS

HAND_COLOURS = {"right": (230, 60, 40), "left": (30, 120, 235)}  # RGB
BOX_COLOUR = (200, 200, 200)
FINGERS = ("thumb", "index", "middle", "ring", "pinky")
ROWS = (("appearance", "appearance"), ("position", "position"), ("fused", "combined"))
_SHIFT = 4  # cv2 sub-pixel bits: coordinates in 1/16 px


def joint_name(j: int) -> str:
  """'right index 2', 'left wrist', ... (InterHand2.6M order: tip to base, then the wrist)."""
  hand, k = ("right", j) if j < 21 else ("left", j - 21)
  if k == 20:
    return f"{hand} wrist"
  return f"{hand} {FINGERS[k // 4]} {('tip', '2', '3', 'base')[k % 4]}"


def stroke(box_side: float):
  """(line thickness, joint radius) in pixels for a hand box of this side."""
  return max(1, int(round(box_side / 120))), max(2, int(round(box_side / 55)))


def _point(p):
  return tuple(int(round(v * (1 << _SHIFT))) for v in p)


def draw_skeleton(image, joints_xy, hands=("right", "left"), box=None):
  """The two-hand skeleton over ``image`` (uint8 [H, W, 3] RGB, copied).

  joints_xy: [42, 2] pixels of ``image``; hands: which hands to draw; box: xywh to outline.
  """
  out = np.array(image, np.uint8, copy=True)
  joints_xy = np.asarray(joints_xy, np.float64)
  side = max(box[2], box[3]) if box is not None else 0.3 * max(out.shape[:2])
  thickness, radius = stroke(side)
  if box is not None:
    x, y, w, h = box
    cv2.rectangle(out, _point((x, y)), _point((x + w, y + h)), BOX_COLOUR, 1, cv2.LINE_8,
                  _SHIFT)
  for hand in hands:
    for child, parent in BONES:
      if child in range(NUM_JOINTS)[HAND_SLICES[hand]]:
        cv2.line(out, _point(joints_xy[child]), _point(joints_xy[parent]),
                 HAND_COLOURS[hand], thickness, cv2.LINE_AA, _SHIFT)
  for hand in hands:
    for j in range(NUM_JOINTS)[HAND_SLICES[hand]]:
      cv2.circle(out, _point(joints_xy[j]), radius << _SHIFT, HAND_COLOURS[hand], -1,
                 cv2.LINE_8, _SHIFT)
  return out


def _figure(width, height):
  figure = Figure(figsize=(width, height), dpi=100)
  FigureCanvasAgg(figure)
  return figure


def plot_3d(joints_mm, hands=("right", "left"), title=None):
  """3D view of camera-frame joints [42, 3] mm (x right, y down, z away), centred on the hands.

  Returns a matplotlib Figure; the axes show up as up and the camera looking into the page.
  """
  joints = np.asarray(joints_mm, np.float64)
  shown = np.concatenate([joints[HAND_SLICES[h]] for h in hands]) if hands else joints
  centre = shown.mean(axis=0)
  half = max(60.0, 0.55 * float(np.max(np.ptp(shown, axis=0))))
  figure = _figure(5, 5)
  ax = figure.add_subplot(projection="3d")
  to_plot = lambda p: (p[..., 0] - centre[0], p[..., 2] - centre[2], -(p[..., 1] - centre[1]))
  for hand in hands:
    colour = np.asarray(HAND_COLOURS[hand]) / 255.0
    for child, parent in BONES:
      if child in range(NUM_JOINTS)[HAND_SLICES[hand]]:
        x, z, y = to_plot(joints[[child, parent]])
        ax.plot(x, z, y, color=colour, lw=2)
    x, z, y = to_plot(joints[HAND_SLICES[hand]])
    ax.scatter(x, z, y, color=colour, s=12, label=hand)
  for setter in (ax.set_xlim, ax.set_ylim, ax.set_zlim):
    setter(-half, half)
  ax.set_box_aspect((1, 1, 1))
  ax.set_xlabel("x (mm)")
  ax.set_ylabel("depth z (mm)")
  ax.set_zlabel("up -y (mm)")
  ax.view_init(elev=15, azim=-70)
  if hands:
    ax.legend(loc="upper right")
  if title:
    ax.set_title(title, fontsize=9)
  return figure


def attention_rows(attention: dict):
  """[(label, [map [42, h, w] per iteration])] for the J-I parts present in every iteration."""
  ji = attention.get("ji") or []
  rows = []
  for key, label in ROWS:
    if ji and all(key in it for it in ji):
      rows.append((label, [np.asarray(it[key]) for it in ji]))
  return rows


def _upsample(m, size):
  m = np.asarray(m, np.float32)
  m = cv2.resize(m, (size, size), interpolation=cv2.INTER_LINEAR)
  peak = float(m.max())
  return m / peak if peak > 0 else m


def attention_figure(crop, attention: dict, joint: int, joint_xy=None, rows=None):
  """Per iteration, the joints-image attention of ``joint`` over the crop (Fig. 1 and 6).

  crop: uint8 [S, S, 3], the network input; attention: one example's ``out['attention']``
  (``inference.row``); joint_xy: [2] crop pixels to mark (the prediction or the ground truth);
  rows: override ``attention_rows(attention)``, e.g. to add a baseline model's row.
  Returns a matplotlib Figure.
  """
  crop = np.asarray(crop)
  size = crop.shape[0]
  rows = attention_rows(attention) if rows is None else rows
  if not rows:
    raise ValueError("no joints-image attention in these outputs (model without J-I "
                     "iterations, or return_attention=False)")
  num_iterations = len(rows[0][1])
  figure = _figure(2.2 * num_iterations + 0.6, 2.2 * len(rows) + 0.5)
  grey = np.repeat(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=-1)
  for r, (label, maps) in enumerate(rows):
    for t, m in enumerate(maps):
      ax = figure.add_subplot(len(rows), num_iterations, r * num_iterations + t + 1)
      ax.imshow(grey, extent=(-0.5, size - 0.5, size - 0.5, -0.5))
      ax.imshow(_upsample(m[joint], size), cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0,
                extent=(-0.5, size - 0.5, size - 0.5, -0.5))
      if joint_xy is not None:
        ax.plot([joint_xy[0]], [joint_xy[1]], "x", color="orange", ms=10, mew=2.5)
      ax.set_xlim(-0.5, size - 0.5)
      ax.set_ylim(size - 0.5, -0.5)
      ax.set_xticks([])
      ax.set_yticks([])
      if r == 0:
        ax.set_title(f"iteration {t + 1} ({m.shape[-2]}x{m.shape[-1]})", fontsize=9)
      if t == 0:
        ax.set_ylabel(label, fontsize=10)
  figure.suptitle(f"joints-image attention of joint {joint} ({joint_name(joint)})",
                  fontsize=10)
  figure.tight_layout()
  return figure


def save(figure, path, dpi: int = 100):
  """Writes a matplotlib Figure as PNG."""
  figure.savefig(str(path), dpi=dpi)


def write_rgb(path, image):
  """Writes a uint8 RGB image (PNG by the extension); raises OSError when it cannot."""
  if not cv2.imwrite(str(path), cv2.cvtColor(np.asarray(image, np.uint8), cv2.COLOR_RGB2BGR)):
    raise OSError(f"cannot write {path}")
