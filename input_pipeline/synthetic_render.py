"""Synthetic mini-InterHand in 3-D: rendered two-hand solids in the official InterHand2.6M layout.

The project's embedded default dataset (nothing is downloaded). It writes exactly what the real
data's reader expects (docs/coordinates.md; the genuine fixture frames for the schema), and
beside it what real data lacks:

  DIR/annotations/{split}/InterHand2.6M_{split}_data.json      images, annotations
  DIR/annotations/{split}/InterHand2.6M_{split}_camera.json    capture -> campos/camrot/...
  DIR/annotations/{split}/InterHand2.6M_{split}_joint_3d.json  capture -> frame_idx -> ...
  DIR/images/{split}/Capture{c}/{seq_name}/cam{camera}/image{frame_idx}.jpg
  DIR/depth/{split}/<file_name with .png>   uint16 camera depth (mm) of the nearest surface, 0 none
  DIR/parts/{split}/<file_name with .png>   uint8 exact part labels (0 background, 1-16 right,
                                            17-32 left, the pseudo segmentation's classes)
  DIR/shapes/{split}/Capture{c}/frame{frame_idx}.npz   each hand's solid (world mm;
                                            input_pipeline/hand_shape.py: mesh, inside test,
                                            occupancy samples)

    python -m input_pipeline.synthetic --out DIR --num_images 2000 --seed 0 [--split train]
    python -m input_pipeline.synthetic --out DIR --splits train:2000,val:200 --style wild

Scene model (our choices, written down here):
- Hands: the kinematic hand of ``hand_model`` (fixture-mean bones, per-subject scale) as a 3-D
  solid of round cones and thick triangles (``hand_shape``): phalanges, metacarpals in a palm
  fan, a thenar bulge, a thumb web, an optional forearm (sometimes sleeved; not part of the hand's
  shape, label 0). Joints lie on the bones' axes, so each lies inside its own hand.
- Poses (``gestures``): ``gesture_fraction`` of the frames (default 0.5) use common gestures
  (fist, pinch, point, open, ...) and interactions (pray, fingertips, clasp, hold) with noise, the
  rest poses drawn within the joint limits and hands placed at random. Two hands that
  interpenetrate by more than ``MAX_PENETRATION_MM`` (exact inside test) are pushed apart along
  the line between them, or the frame is drawn again.
- Frames: 50% interacting, 25% right, 25% left; one subject per capture; each frame seen by
  ``views_per_frame`` cameras of its capture's rig (``synthetic_style.RIGS``), as in InterHand.
- Rendering: ray casting of the solids through every pixel centre (exact analytic hits; no
  rasteriser, no GPU): the nearest surface gives the pixel's depth, part and normal, so depth and
  labels have true occlusion. Shading: Lambert with wrap and ambient, Blinn-Phong highlights; the
  palm side lighter and pinker with palm creases, the back darker and speckled with knuckle
  wrinkles, finger creases, fingernails on the back of the fingertips; no cast shadows, one ray
  per pixel (no anti-aliasing beyond the camera blur).
- Styles (``--style``, ``synthetic_style``): 'studio' (InterHand-like: dark background, soft
  frontal light, 8-camera rig, some grey cameras) or 'wild' (textured backgrounds, colour casts,
  hard light, blur, noise, JPEG artefacts).
- Deterministic: geometry comes from one generator seeded by (seed, split); each image's
  appearance from (seed, split, image id), so the worker count never changes a byte.
"""

import argparse
import concurrent.futures
import json
import math
import multiprocessing
import os
import pathlib
import sys
import time
import zlib

import cv2
import numpy as np

from dfl_jax import conventions, errors
from input_pipeline import gestures, hand_model, hand_shape, interhand, synthetic_style

HAND_TYPES = ("interacting", "right", "left")
PLACEHOLDER = 1.0      # world_coord of absent joints, as in the real data
MAX_OUT_OF_IMAGE = 3   # joints of one view allowed outside the image (they become invalid)
BBOX_ENLARGE = 1.2
MAX_PENETRATION_MM = 1.5
companion_path = interhand.companion_path   # where an image's depth and parts PNGs live


def shape_path(root, split, capture, frame_idx):
  return pathlib.Path(root) / "shapes" / split / f"Capture{capture}" / f"frame{frame_idx}.npz"


# ------------------------------------------------------------------------------------ frames

def _forearm(rng):
  if rng.random() >= 0.85:
    return None
  return (rng.uniform(120.0, 320.0), rng.uniform(0.2, 0.5) if rng.random() < 0.5 else None)


def _place(angles, scale, left, rot, shift, forearm):
  solid, joints = hand_shape.hand_solid(angles, scale, left, forearm)
  return solid.transformed(rot, shift), joints @ np.asarray(rot).T + shift


def _separate(right, left, scale):
  """Pushes the left solid (and joints) away from the right one until neither reaches into the
  other more than MAX_PENETRATION_MM. Returns (left solid, left joints) or None."""
  solid_l, joints_l = left
  solid_r, joints_r = right
  direction = hand_model.normalize(joints_l.mean(0) - joints_r.mean(0))
  for _ in range(12):
    depth = max(hand_shape.penetration(solid_r, solid_l), hand_shape.penetration(solid_l, solid_r))
    if depth <= MAX_PENETRATION_MM:
      return solid_l, joints_l
    step = direction * (depth + 0.5 * scale)   # at most this far apart along the line
    solid_l = solid_l.transformed(np.eye(3), step)
    joints_l = joints_l + step
  return None


def sample_frame(rng, hand_type, scale, centre, gesture_fraction=0.5):
  """One frame: world joints [42, 3] (mm; absent hand at the placeholder), presence [2], the
  solids {'right', 'left'} (world mm, with forearms; None if absent) and the pose's name."""
  present = np.array([hand_type != "left", hand_type != "right"])
  forearms = [_forearm(rng), _forearm(rng)]
  if hand_type != "interacting":
    h = 0 if hand_type == "right" else 1
    if rng.random() < gesture_fraction:
      name, angles = gestures.sample_gesture(rng, scale)
    else:
      name, angles = "uniform", hand_model.sample_angles(rng)
    solid, joints = _place(angles, scale, bool(h), hand_model.random_rotation(rng), 0.0,
                           forearms[h])
    shift = centre + rng.uniform(-40.0, 40.0, 3) - joints.mean(0)
    world = np.full((42, 3), PLACEHOLDER)
    world[21 * h:21 * h + 21] = joints + shift
    solids = {conventions.HANDS[h]: solid.transformed(np.eye(3), shift),
              conventions.HANDS[1 - h]: None}
    return world, present, solids, name
  for _ in range(50):
    if rng.random() < gesture_fraction:
      name, ang_r, ang_l, rot, shift = gestures.sample_interaction(rng, scale)
      rot_r = np.eye(3)
    else:
      name, ang_r, ang_l = "uniform", hand_model.sample_angles(rng), hand_model.sample_angles(rng)
      rot_r, rot = hand_model.random_rotation(rng), hand_model.random_rotation(rng)
      shift = hand_model.normalize(rng.normal(size=3)) * rng.uniform(40.0, 150.0) * scale
    right = _place(ang_r, scale, False, rot_r, np.zeros(3), forearms[0])
    left = _place(ang_l, scale, True, rot, shift, forearms[1])
    left = _separate(right, left, scale)
    if left is not None:
      break
  else:
    raise RuntimeError("could not place two hands without interpenetration")
  turn = hand_model.random_rotation(rng)
  joints = np.concatenate([right[1], left[1]]) @ turn.T
  shift = centre + rng.uniform(-40.0, 40.0, 3) - joints.mean(0)
  solids = {"right": right[0].transformed(turn, shift), "left": left[0].transformed(turn, shift)}
  return joints + shift, present, solids, name


# ----------------------------------------------------------------------------------- cameras

def _f32(x):
  """Round to float32 and back, as the real annotations store their numbers."""
  return np.asarray(x, np.float32).astype(np.float64)


def make_rig(rng, centre, names, style="studio"):
  """A capture's cameras: dict name -> (campos, camrot, focal, princpt, (w, h), grey)."""
  params = synthetic_style.RIGS[style]
  rig = {}
  down = np.array([0.0, 1.0, 0.0])   # InterHand's world y points down, like a camera's
  for name in names:
    w, h = (334, 512) if rng.random() < 0.7 else (512, 334)
    f = rng.uniform(*params["focal"])
    focal = np.array([f, f * (1.0 + rng.normal(0.0, 5e-4))])
    princpt = np.array([w / 2, h / 2]) + np.clip(rng.normal(0.0, 12.0, 2), -30.0, 30.0)
    az, el = np.radians(rng.uniform(-75.0, 75.0)), np.radians(rng.uniform(-45.0, 45.0))
    direction = np.array([np.sin(az) * np.cos(el), -np.sin(el), -np.cos(az) * np.cos(el)])
    campos = centre + direction * rng.uniform(*params["distance"])
    z = hand_model.normalize(centre + rng.normal(0.0, 15.0, 3) - campos)
    x = hand_model.normalize(np.cross(down, z))
    camrot = hand_model.rotation(2, rng.normal(0.0, 0.1)) @ np.stack([x, np.cross(z, x), z])
    rig[name] = (_f32(campos), _f32(camrot), _f32(focal), _f32(princpt), (w, h),
                 bool(rng.random() < params["grey"]))
  return rig


def world_to_camera(world, campos, camrot):
  """InterHand: X_cam = R @ (X_world - campos), for points [..., 3]."""
  return (np.asarray(world) - campos) @ np.asarray(camrot).T


def project(cam, focal, princpt):
  """Pinhole projection of camera points [..., 3] to pixels [..., 2]."""
  return cam[..., :2] / cam[..., 2:] * np.asarray(focal) + np.asarray(princpt)


def bbox_from_joints(uv, valid, enlarge=BBOX_ENLARGE):
  """xywh: tight box of the valid joints enlarged ``enlarge`` times about its centre."""
  pts = uv[np.asarray(valid, bool)]
  lo, hi = pts.min(0), pts.max(0)
  size = (hi - lo) * enlarge
  return np.concatenate([(lo + hi) / 2 - size / 2, size])


# --------------------------------------------------------------------------------- rendering

DISTAL_PARTS = np.array([4, 7, 10, 13, 16])
NAIL_BGR = np.array([190.0, 200.0, 232.0])


def _smoothstep(lo, hi, x):
  t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
  return t * t * (3.0 - 2.0 * t)


def _palm_coords(points, joints):
  """(u, v): across the palm (index MCP ~ +0.5, pinky ~ -0.5) and wrist (0) to MCPs (1)."""
  wrist, across = joints[20], joints[7] - joints[19]
  a = across / np.linalg.norm(across)
  d = joints[11] - wrist
  d_len = np.linalg.norm(d)
  d = d - (d @ a) * a
  d /= np.linalg.norm(d)
  rel = points - wrist
  return rel @ a / np.linalg.norm(across), rel @ d / d_len


def _palm_creases(u, v):
  """Darkening factor of the three main palm creases (heart, head, life line)."""
  width = 0.022
  heart = (np.abs(v - (0.80 + 0.1 * (u + 0.6) ** 2)) < width) & (u > -0.65) & (u < 0.3)
  head = (np.abs(v - (0.56 + 0.15 * (u + 0.45))) < width) & (u > -0.45) & (u < 0.62)
  life = (np.abs(np.hypot(u - 0.8, v - 0.12) - 0.45) < width) & (v > 0.15) & (v < 0.66)
  return np.where(heart | head | life, 0.8, 1.0)


def shade(hits, scene, sides, joints, skins, cloth, light, rng):
  """Colours [K, 3] (BGR float) of the K hit pixels of ``hits`` (``hand_shape.RayHits``).

  scene: the camera-frame solid; sides [N + M] the hand of each primitive; joints [42, 3]
  camera-frame joints; skins [2, 3], cloth [2, 3] BGR; light from ``synthetic_style.light``.
  """
  m = hits.index >= 0
  idx = hits.index[m]
  part = np.concatenate([scene.cone_part, scene.triangle_part])[idx]
  material = np.concatenate([scene.cone_material, scene.triangle_material])[idx]
  ref = np.concatenate([scene.cone_palmar, scene.triangle_palmar])[idx]
  side = sides[idx]
  n, p, s = hits.normal[m], hits.point[m], hits.axial[m]
  lengths = np.concatenate([np.linalg.norm(scene.cones[:, 3:6] - scene.cones[:, 0:3], axis=1),
                            np.zeros(len(scene.triangles))])[idx]
  palmar = np.sum(n * ref, -1)
  albedo = skins[side].copy()
  hand = part > 0
  # Palm side lighter and pinker, the back darker with a fine speckle.
  w = (_smoothstep(-0.15, 0.45, palmar) * hand)[:, None]
  speckle = rng.normal(0.0, 1.0, len(idx))
  palm_tone = albedo * np.array([1.0, 1.03, 1.1]) + np.array([10.0, 14.0, 20.0])
  back_tone = albedo * (0.93 + 0.05 * speckle)[:, None]
  albedo = w * palm_tone + (1.0 - w) * back_tone
  # Creases: palmar folds at the finger joints, wrinkles over the knuckles, the palm lines.
  finger = (part >= 2)
  seg = (part - 2) % 3
  dist_mm = np.minimum(np.abs(s), np.abs(1.0 - s)) * lengths
  fold = finger & (palmar > 0.3) & (dist_mm < 0.9) & ~((seg == 2) & (s > 0.5))
  wrinkle = finger & (palmar < -0.3) & (seg >= 1) & (s * lengths < 3.5) & (
      np.sin(s * lengths * 5.0) > 0.3)
  albedo *= np.where(fold, 0.72, np.where(wrinkle, 0.88, 1.0))[:, None]
  on_palm = (part == hand_shape.PALM) & (palmar > 0.5)
  for h in (0, 1):
    sel = on_palm & (side == h)
    if sel.any():
      u, v = _palm_coords(p[sel], joints[21 * h:21 * h + 21])
      albedo[sel] *= _palm_creases(u, v)[:, None]
  # Fingernails on the back of the fingertips, narrower towards their ends, a whiter free edge.
  nail = (np.isin(part, DISTAL_PARTS) & (s > 0.42) & (s < 1.06) &
          (palmar < -0.5 - 0.45 * ((s - 0.74) / 0.32) ** 2))
  nail_colour = 0.45 * albedo + 0.55 * NAIL_BGR
  nail_colour = np.where((s > 0.96)[:, None], 0.3 * albedo + 0.7 * np.array([225, 232, 240.]),
                         nail_colour)
  albedo = np.where(nail[:, None], nail_colour, albedo)
  albedo = np.where((~hand & (material == hand_shape.SKIN))[:, None], skins[side] * 0.95, albedo)
  albedo = np.where((material == hand_shape.CLOTH)[:, None],
                    cloth[side] * (0.9 + 0.1 * np.sin(s * 40.0))[:, None], albedo)
  # Light: wrapped Lambert, ambient, Blinn-Phong (nails glossier).
  to_light = light["direction"]
  view = -p / np.linalg.norm(p, axis=-1, keepdims=True)
  wrap = light["wrap"]
  diffuse = np.clip((n @ to_light + wrap) / (1.0 + wrap), 0.0, 1.0)
  half = hand_model.normalize(to_light[None] + view)
  gloss = np.where(nail, 2.5, 1.0) * np.where(material == hand_shape.CLOTH, 0.3, 1.0)
  spec = light["specular"] * gloss * np.clip(np.sum(n * half, -1), 0.0, 1.0) ** light["shininess"]
  ambient = light["ambient"]
  colour = albedo * (ambient + (1.0 - ambient) * diffuse)[:, None] * light["colour"]
  return colour + 255.0 * spec[:, None]


def render_view(scene, sides, joints, focal, princpt, size, skins, cloth, grey, seed,
                style="studio", quality=90):
  """(image uint8 [h, w, 3] BGR, depth uint16 [h, w] mm, parts uint8 [h, w], JPEG quality) of
  one view (``quality`` the most the style may use).

  scene: the frame's solid in this camera's frame; the appearance depends only on ``seed``.
  """
  rng = np.random.default_rng(seed)
  w, h = size
  hits = hand_shape.raycast(scene, focal, princpt, size)
  img = synthetic_style.background(rng, style, h, w)
  light = synthetic_style.light(rng, style)
  m = hits.index >= 0
  if m.any():
    img[m] = shade(hits, scene, sides, joints, np.asarray(skins), np.asarray(cloth), light,
                   rng)
  image = synthetic_style.finish(img, rng, style, grey)
  depth = np.where(m, np.clip(np.round(hits.depth), 1, 65535), 0).astype(np.uint16)
  part = np.concatenate([scene.cone_part, scene.triangle_part])
  label = np.where(part > 0, part + 16 * sides, 0)
  parts = np.where(m, label[np.maximum(hits.index, 0)], 0).astype(np.uint8)
  return image, depth, parts, synthetic_style.jpeg_quality(rng, style, quality)


def _write(path, data):
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)


def _encode(ext, array, params=()):
  ok, buf = cv2.imencode(ext, array, list(params))
  if not ok:
    raise RuntimeError(f"{ext} encoding failed")
  return buf.tobytes()


def _render_job(job):
  """Render one view and write its JPEG, depth and parts PNGs (runs in the worker processes)."""
  paths, quality, style, args = job
  image, depth, parts, q = render_view(*args, style=style, quality=quality)
  jpeg = _encode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, q])
  _write(paths[0], jpeg)
  _write(paths[1], _encode(".png", depth, [cv2.IMWRITE_PNG_COMPRESSION, 1]))
  _write(paths[2], _encode(".png", parts, [cv2.IMWRITE_PNG_COMPRESSION, 1]))
  return len(jpeg)


def _worker_init():
  cv2.setNumThreads(1)


def _render_in_pool(jobs, workers, report) -> int:
  """Renders ``jobs`` in ``workers`` spawned processes; returns how many are done, in order.

  Worker processes that cannot start (a script calling this without an
  ``if __name__ == "__main__":`` guard re-runs itself in every spawned worker, which then dies;
  a machine that refuses new processes) end the pool at once: a warning says so and the caller
  renders the rest in this process (the jobs already done are kept; each writes its own files).
  """
  done = 0
  try:
    with concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_init) as pool:
      for _ in pool.map(_render_job, jobs, chunksize=8):
        done += 1
        report(done)
  except (concurrent.futures.process.BrokenProcessPool, OSError) as e:
    print(f"warning: the {workers} rendering worker processes could not run "
          f"({type(e).__name__}: {errors.one_line(e)}); a script that renders with workers > 1 "
          f"must call it under `if __name__ == \"__main__\":`. Rendering the remaining "
          f"{len(jobs) - done} images in this process.", file=sys.stderr, flush=True)
  return done


# -------------------------------------------------------------------------------- the dataset

def _split_code(split):
  return zlib.crc32(split.encode())


def _accept_view(world, present, cam):
  """(uv [42, 2], joint_valid [42]) of a usable view, or None."""
  campos, camrot, focal, princpt, (w, h), _ = cam
  xc = world_to_camera(world, campos, camrot)
  mask = np.repeat(present, 21)
  if (xc[mask, 2] < 200.0).any():
    return None
  uv = project(xc, focal, princpt)
  inside = (uv[:, 0] >= 0) & (uv[:, 0] <= w - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= h - 1)
  valid = mask & inside
  wrists = np.array(conventions.WRISTS)[present]
  if not valid[wrists].all() or (mask & ~inside).sum() > MAX_OUT_OF_IMAGE:
    return None
  return uv, valid


def _scene(solids):
  """(one solid of the frame, hand index [N + M] of its primitives in raycast order)."""
  parts = [(h, solids[side]) for h, side in enumerate(conventions.HANDS)
           if solids[side] is not None]
  scene = hand_shape.concatenate([s for _, s in parts])
  sides = np.concatenate([np.full(len(s.cones), h) for h, s in parts] +
                         [np.full(len(s.triangles), h) for h, s in parts]).astype(np.int64)
  return scene, sides


def _plan(num_images, seed, split, views_per_frame, cameras_per_capture, num_captures,
          capture_offset, image_id_offset, hand_type_probs, root, style, gesture_fraction):
  """All geometry and JSON of a split, the shapes, and one render job per image."""
  rng = np.random.default_rng([seed, _split_code(split)])
  if num_captures is None:
    num_captures = int(np.clip(math.ceil(num_images / 250), 2, 20))
  num_captures = max(1, min(num_captures, num_images))
  per_capture = np.diff(np.linspace(0, num_images, num_captures + 1).round().astype(int))
  planned = math.ceil(num_images / views_per_frame) + num_captures
  counts = np.floor(np.asarray(hand_type_probs) / np.sum(hand_type_probs) * planned).astype(int)
  counts[0] += planned - counts.sum()
  types = rng.permutation(np.repeat(np.arange(3), counts))
  image_dir = pathlib.Path(root) / "images" / split
  images, annotations, cameras, joint_3d, jobs, scales, shapes = [], [], {}, {}, [], {}, []
  n_frames, type_counts, pose_counts = 0, {t: 0 for t in HAND_TYPES}, {}
  for ci in range(num_captures):
    capture = capture_offset + ci
    subject = capture
    scale = float(rng.uniform(*hand_model.HAND_SCALE_RANGE))
    skin = synthetic_style.skin(rng)
    scales[subject] = scale
    centre = np.array([0.0, 0.0, 1000.0]) + rng.normal(0.0, 50.0, 3)
    names = [str(n) for n in sorted(rng.choice(np.r_[400000:400080, 410000:410080],
                                               cameras_per_capture, replace=False))]
    rig = make_rig(rng, centre, names, style)
    cameras[str(capture)] = {
        "campos": {n: rig[n][0].tolist() for n in names},
        "camrot": {n: rig[n][1].tolist() for n in names},
        "focal": {n: rig[n][2].tolist() for n in names},
        "princpt": {n: rig[n][3].tolist() for n in names}}
    joint_3d[str(capture)] = {}
    frame_idx = int(rng.integers(0, 2000))
    seq_counts = {t: 0 for t in HAND_TYPES}
    done = 0
    while done < per_capture[ci]:
      hand_type = HAND_TYPES[types[n_frames % len(types)]]
      for _ in range(200):
        world, present, solids, pose = sample_frame(rng, hand_type, scale, centre,
                                                    gesture_fraction)
        world = _f32(world)
        views = [(n, v) for n in rng.permutation(names)
                 if (v := _accept_view(world, present, rig[n])) is not None]
        if views:
          break
      else:
        raise RuntimeError("no camera sees a sampled frame; check the rig parameters")
      views = views[:min(views_per_frame, per_capture[ci] - done)]
      frame_idx += int(rng.integers(1, 40))
      seq_no = {"right": 0, "left": 100, "interacting": 200}[hand_type]
      tag = {"right": "rh", "left": "lh", "interacting": "dh"}[hand_type]
      seq_name = f"{seq_no + seq_counts[hand_type] // 40:04d}_{tag}_synthetic"
      seq_counts[hand_type] += 1
      pose_counts[pose] = pose_counts.get(pose, 0) + 1
      mask = np.repeat(present, 21)
      joint_3d[str(capture)][str(frame_idx)] = {
          "world_coord": world.tolist(),
          "joint_valid": [[bool(v)] for v in mask],
          "hand_type": hand_type,
          "hand_type_valid": True}
      shapes.append((shape_path(root, split, capture, frame_idx),
                     {k: None if v is None else v.hand_only() for k, v in solids.items()}))
      skins = np.stack([skin * (1.0 + rng.normal(0.0, 0.04, 3)) for _ in range(2)])
      cloth = rng.uniform(20, 230, (2, 3)) * (np.ones((2, 1)) if rng.random() < 0.5 else 1.0)
      scene, sides = _scene(solids)
      for name, (uv, valid) in views:
        image_id = image_id_offset + len(images)
        campos, camrot, focal, princpt, (w, h), grey = rig[name]
        file_name = f"Capture{capture}/{seq_name}/cam{name}/image{frame_idx}.jpg"
        images.append({"id": image_id, "file_name": file_name, "width": w, "height": h,
                       "capture": capture, "subject": subject, "seq_name": seq_name,
                       "camera": name, "frame_idx": frame_idx})
        annotations.append({"id": image_id, "image_id": image_id,
                            "bbox": _f32(bbox_from_joints(uv, valid)).tolist(),
                            "joint_valid": [[int(v)] for v in valid],
                            "hand_type": hand_type, "hand_type_valid": 1})
        xc = world_to_camera(world, campos, camrot)
        cam_scene = scene.transformed(camrot, -np.asarray(camrot) @ campos)
        seed_i = [seed, _split_code(split), image_id]
        paths = (str(image_dir / file_name), str(companion_path(root, split, file_name, "depth")),
                 str(companion_path(root, split, file_name, "parts")))
        jobs.append((paths, None, style,
                     (cam_scene, sides, xc, focal, princpt, (w, h), skins, cloth, grey,
                      seed_i)))
        type_counts[hand_type] += 1
      done += len(views)
      n_frames += 1
  data = {"images": images, "annotations": annotations}
  return (data, cameras, joint_3d, jobs, shapes, scales, n_frames, type_counts, pose_counts,
          num_captures)


def generate(out_dir, num_images, seed, split="train", *, style="studio", gesture_fraction=0.5,
             views_per_frame=None, cameras_per_capture=None, num_captures=None,
             capture_offset=0, image_id_offset=0, hand_type_probs=(0.5, 0.25, 0.25), workers=2,
             quality=90, verbose=False):
  """Write ``num_images`` synthetic views of one split; returns a summary dict.

  ``style`` is 'studio' or 'wild' (``synthetic_style``); ``views_per_frame`` and
  ``cameras_per_capture`` default to the style's rig. ``gesture_fraction`` of the frames use
  ``gestures``' poses. ``hand_type_probs`` are the shares of (interacting, right, left) frames.
  ``workers`` > 1 renders in that many spawned processes; the output bytes do not depend on it.
  """
  synthetic_style.check(style)
  if not 0.0 <= gesture_fraction <= 1.0:
    raise ValueError(f"gesture_fraction must be in [0, 1], got {gesture_fraction}")
  rig = synthetic_style.RIGS[style]
  views_per_frame = views_per_frame or rig["views"]
  cameras_per_capture = cameras_per_capture or rig["cameras"]
  start = time.time()
  out_dir = pathlib.Path(out_dir)
  ann_dir = out_dir / "annotations" / split
  image_dir = out_dir / "images" / split
  (data, cameras, joint_3d, jobs, shapes, scales, n_frames, type_counts, pose_counts,
   n_captures) = _plan(num_images, seed, split, views_per_frame, cameras_per_capture,
                       num_captures, capture_offset, image_id_offset, hand_type_probs, out_dir,
                       style, gesture_fraction)
  ann_dir.mkdir(parents=True, exist_ok=True)
  paths = {}
  for kind, obj in (("data", data), ("camera", cameras), ("joint_3d", joint_3d)):
    paths[kind] = ann_dir / f"InterHand2.6M_{split}_{kind}.json"
    with open(paths[kind], "w") as f:
      json.dump(obj, f, separators=(",", ":"))
  for path, solids in shapes:
    hand_shape.save(path, solids)
  for d in sorted({os.path.dirname(p) for j in jobs for p in j[0]}):
    os.makedirs(d, exist_ok=True)
  jobs = [(p, quality, st, args) for p, _, st, args in jobs]
  step = max(1, len(jobs) // 10)

  def report(i):
    if verbose and (i % step == 0 or i == len(jobs)):
      el = time.time() - start
      print(f"[{split}] {i}/{len(jobs)} images  {el:.1f} s  ({i / max(el, 1e-9):.1f} images/s)",
            flush=True)

  done = 0
  if workers > 1 and len(jobs) > 32:
    done = _render_in_pool(jobs, workers, report)
  for i, job in enumerate(jobs[done:], done + 1):
    _render_job(job)
    report(i)
  seconds = time.time() - start
  return {"split": split, "out_dir": str(out_dir), "image_dir": str(image_dir),
          "depth_dir": str(out_dir / "depth" / split), "parts_dir": str(out_dir / "parts" / split),
          "shape_dir": str(out_dir / "shapes" / split), "style": style,
          "data_json": str(paths["data"]), "camera_json": str(paths["camera"]),
          "joint_3d_json": str(paths["joint_3d"]), "num_images": len(jobs),
          "num_frames": n_frames, "num_captures": n_captures, "hand_types": type_counts,
          "poses": pose_counts, "subject_scales": scales, "seconds": seconds,
          "images_per_second": len(jobs) / max(seconds, 1e-9)}


def generate_splits(out_dir, counts, seed, **kwargs):
  """``generate`` for several splits ({'train': n, ...}) with disjoint captures, subjects, ids."""
  summaries, capture_offset, image_id_offset = {}, 0, 0
  for split, n in counts.items():
    s = generate(out_dir, n, seed, split, capture_offset=capture_offset,
                 image_id_offset=image_id_offset, **kwargs)
    summaries[split] = s
    capture_offset += s["num_captures"]
    image_id_offset += n
  return summaries


def _parse_splits(text):
  counts = {}
  for part in text.split(","):
    name, _, n = part.partition(":")
    if not name.strip() or not n.strip().isdigit():
      raise errors.ConfigError(f"--splits must look like 'train:2000,val:200', got {text!r}")
    counts[name.strip()] = int(n)
  return counts


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m input_pipeline.synthetic",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True, help="output root (annotations/, images/, ...)")
  parser.add_argument("--num_images", type=int, default=2000)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--split", default="train")
  parser.add_argument("--splits", default=None, help="e.g. train:2000,val:200,test:200")
  parser.add_argument("--style", default="studio", choices=synthetic_style.STYLES)
  parser.add_argument("--gesture_fraction", type=float, default=0.5,
                      help="share of frames posed as gestures and interactions (0..1)")
  parser.add_argument("--workers", type=int, default=2)
  parser.add_argument("--views_per_frame", type=int, default=None,
                      help="default: the style's rig (studio 2, wild 1)")
  parser.add_argument("--quality", type=int, default=90)
  errors.add_debug_argument(parser)
  args = parser.parse_args(argv)
  counts = _parse_splits(args.splits) if args.splits else {args.split: args.num_images}
  if not 0.0 <= args.gesture_fraction <= 1.0:
    raise errors.ConfigError(f"--gesture_fraction must be in [0, 1], got {args.gesture_fraction}")
  start = time.time()
  summaries = generate_splits(args.out, counts, args.seed, workers=args.workers,
                              views_per_frame=args.views_per_frame, quality=args.quality,
                              style=args.style, gesture_fraction=args.gesture_fraction,
                              verbose=True)
  total = sum(s["num_images"] for s in summaries.values())
  seconds = time.time() - start
  for s in summaries.values():
    print(f"[{s['split']}] {s['num_images']} images, {s['num_frames']} frames, "
          f"{s['num_captures']} captures, hand types {s['hand_types']}, poses {s['poses']} "
          f"-> {s['data_json']}")
  print(f"done: {total} images in {seconds:.1f} s ({total / max(seconds, 1e-9):.1f} images/s)")
  return summaries


def command():
  """Console script ``dfl-synthetic`` and ``python -m input_pipeline.synthetic``."""
  errors.call(main, sys.argv[1:])
