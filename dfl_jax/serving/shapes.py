"""Im2Hands on a user's image: DFL's joints -> K -> I + R -> one mesh per hand, and a figure.

``ShapeReconstructor.load(SHAPES_WORKDIR)`` rebuilds K, I and R from a workdir of ``python -m
dfl_jax.shapes`` (its ``shapes_config.json`` and ``k.npz``, ``i.npz``, ``r.npz``);
``reconstruct(crop, camera, joints_cam_mm)`` takes the image's crop at the shapes' input size
(``inference.crop_image``, the box DFL used) with the camera DFL's decode placed the joints in
(given or assumed intrinsics), refines the joints with K, and returns each hand's mesh in that
camera's coordinates (mm) from I + R on a grid over the hand's box (``mesh_resolution`` points a
side, marching cubes at 0.5). Without the true camera the meshes, like the joints, are right up
to the unknown depth / focal ratio.

``draw_meshes`` paints the meshes over the image: each triangle projected with the camera,
filled with a shade from its normal's angle to the viewing ray (right hand red, left blue), far
triangles first, blended over the image.
"""

import dataclasses
import pathlib

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from dfl_jax import conventions, errors
from dfl_jax.evaluation import reconstruction, shapes as shape_evaluation
from dfl_jax.training import shapes as shapes_pipeline
from dfl_jax.weights import variables_file
from input_pipeline import geometry, shape_data

COLOURS = {"right": (230, 60, 50), "left": (50, 110, 230)}


@dataclasses.dataclass
class ShapeReconstructor:
  """K, I and R of a shapes workdir, jitted for one image at a time."""

  config: object
  k: tuple
  i: tuple
  r: tuple
  image_size: int
  workdir: pathlib.Path = None
  _refine: object = None
  _occupancy: object = None

  @classmethod
  def load(cls, workdir):
    workdir = pathlib.Path(workdir)
    config = shapes_pipeline.load_config(workdir)
    k_model, i_model, r_model = shapes_pipeline.models(config)
    variables = []
    for name in ("k", "i", "r"):
      path = workdir / f"{name}.npz"
      if not path.is_file():
        raise errors.MissingFileError(f"{path} does not exist: the shapes workdir {workdir} "
                                      f"has not trained {name.upper()} (python -m "
                                      "dfl_jax.shapes)")
      variables.append(variables_file.load(path)[0])
    variables = jax.device_put(variables)
    out = cls(config, (k_model, variables[0]), (i_model, variables[1]), (r_model, variables[2]),
              int(config.shapes.image_size), workdir)
    out._refine = jax.jit(lambda v, img, kp: k_model.apply(v, img, kp))
    out._occupancy = shape_evaluation.make_occupancy(i_model, r_model, config)
    return out

  def reconstruct(self, crop, camera, joints_cam_mm, hands=conventions.HANDS):
    """{'joints_refined_cam_mm': [42, 3], 'meshes': {side: (vertices, faces)}} for ``hands``."""
    if crop.pixels.shape[0] != self.image_size:
      raise ValueError(f"the shapes networks take {self.image_size}-pixel crops, got "
                       f"{crop.pixels.shape[0]}")
    focal, princpt = shape_data.crop_camera(camera.focal, camera.princpt, crop.crop_box,
                                            self.image_size)
    image = jnp.asarray(crop.pixels[None])
    joints = jnp.asarray(np.asarray(joints_cam_mm, np.float32)[None])
    refined = self._refine(self.k[1], image, joints)
    frame = {"image": image, "keypoints": refined,
             "focal": jnp.asarray(focal[None], jnp.float32),
             "princpt": jnp.asarray(princpt[None], jnp.float32)}
    res = int(self.config.shapes.mesh_resolution)
    grids, lo, hi = reconstruction.hand_grids(refined, res)
    _, logits = self._occupancy(self.i[1], self.r[1], frame, grids)
    meshes = {}
    for h, side in enumerate(conventions.HANDS):
      if side in hands:
        prob = jax.nn.sigmoid(logits[0, h]).reshape((res,) * 3)
        meshes[side] = reconstruction.mesh_from_grid(prob, lo[0, h], hi[0, h])
    return {"joints_refined_cam_mm": np.asarray(refined[0], np.float64), "meshes": meshes}


def draw_meshes(image, meshes, focal, princpt, scale=1.0, alpha=0.7):
  """The meshes (camera mm) painted over ``image`` (RGB uint8, shown at ``scale`` of the
  image the camera describes)."""
  canvas = np.array(image)
  paint = canvas.copy()
  triangles = []
  for side, (verts, faces) in meshes.items():
    if not len(faces):
      continue
    tri = np.asarray(verts)[np.asarray(faces)]                     # [F, 3, 3]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    centre = tri.mean(1)
    cos = -np.sum(normal * centre, -1) / np.maximum(
        np.linalg.norm(normal, axis=-1) * np.linalg.norm(centre, axis=-1), 1e-9)
    uv = geometry.camera_to_pixel(tri.reshape(-1, 3), focal, princpt)[:, :2].reshape(-1, 3, 2)
    uv = (uv + 0.5) * scale - 0.5
    for t in range(len(faces)):
      if cos[t] > 0:   # facing the camera
        triangles.append((centre[t, 2], uv[t], np.array(COLOURS[side]) * (0.35 + 0.65 * cos[t])))
  for _, uv, colour in sorted(triangles, key=lambda x: -x[0]):
    cv2.fillConvexPoly(paint, np.round(uv * 16).astype(np.int32), colour.tolist(),
                       lineType=cv2.LINE_AA, shift=4)
  return cv2.addWeighted(paint, alpha, canvas, 1.0 - alpha, 0.0)
