"""Export a trained DFL for serving: a TensorFlow SavedModel (jax2tf) or a jax.export artifact.

    python -m dfl_jax.export (--workdir DIR | --checkpoint DIR/checkpoints/STEP) --out OUT \
        [--format auto|saved_model|jax_export]

Both take a batch of crops ``images`` float32 [B, S, S, 3], RGB in [0, 1] (S =
config.data.image_size; the crop of ``inference.crop_image``), B any size, and return
``joints`` [B, 42, 3] (crop pixels x, y; depth in 256 units over 400 mm), and with the
extension heads ``hand_presence_logits`` [B, 2] and ``rel_root_depth`` [B] (256 units); see
``dfl_jax.network.model``. Decoding to image pixels and millimetres is ``inference.decode``.

  saved_model  OUT/saved_model: jax2tf with native serialization (StableHLO inside TF), the
               parameters as tf.Variables, signature ``serving_default`` (input ``images``).
               Needs TensorFlow; serve with TF Serving or ``tf.saved_model.load``.
  jax_export   OUT/model.jax_export (``jax.export`` serialized, batch size symbolic) and
               OUT/variables.msgpack (flax.serialization); ``load_jax_export(OUT)`` returns the
               callable. Needs only JAX.
``auto`` picks saved_model when TensorFlow with jax2tf imports, jax_export otherwise.
OUT/export.json records the format, input size, outputs, checkpoint and configuration.
"""

import json
import pathlib

from absl import app, flags, logging
import flax
import jax
import jax.numpy as jnp
import numpy as np

from dfl_jax import errors
from dfl_jax.serving import inference

OUTPUTS = ("joints", "hand_presence_logits", "rel_root_depth")
FORMATS = ("auto", "saved_model", "jax_export")


def serving_fn(model):
  """(variables, images float32 [B, S, S, 3] in [0, 1]) -> {output name: array}."""
  def fn(variables, images):
    out = model.apply(variables, images, train=False)
    return {k: out[k] for k in OUTPUTS if k in out}
  return fn


def _host_variables(variables):
  return jax.tree.map(np.asarray, flax.core.unfreeze(jax.device_get(variables)))


def export_saved_model(net, out_dir) -> pathlib.Path:
  """OUT/saved_model with a ``serving_default`` signature; see the module docstring."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from jax.experimental import jax2tf  # pylint: disable=import-outside-toplevel
  size = net.image_size
  tf_variables = tf.nest.map_structure(tf.Variable, _host_variables(net.variables))
  converted = jax2tf.convert(serving_fn(net.model), with_gradient=False,
                             polymorphic_shapes=[None, f"(b, {size}, {size}, 3)"])
  module = tf.Module()
  module.variables_tree = tf_variables
  module.serve = tf.function(
      lambda images: converted(tf_variables, images), autograph=False,
      input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="images")])
  path = pathlib.Path(out_dir) / "saved_model"
  tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
  return path


def load_saved_model(path):
  """The SavedModel's serving function as images (NumPy) -> {name: NumPy array}."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  serve = tf.saved_model.load(str(path)).signatures["serving_default"]
  return lambda images: {k: v.numpy() for k, v in serve(
      images=tf.constant(np.asarray(images, np.float32))).items()}


def export_jax(net, out_dir) -> pathlib.Path:
  """OUT/model.jax_export and OUT/variables.msgpack; see the module docstring."""
  out_dir = pathlib.Path(out_dir)
  size = net.image_size
  variables = _host_variables(net.variables)
  (b,) = jax.export.symbolic_shape("b")
  args = (jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), variables),
          jax.ShapeDtypeStruct((b, size, size, 3), jnp.float32))
  exported = jax.export.export(jax.jit(serving_fn(net.model)))(*args)
  path = out_dir / "model.jax_export"
  path.write_bytes(exported.serialize())
  (out_dir / "variables.msgpack").write_bytes(flax.serialization.msgpack_serialize(variables))
  return path


def load_jax_export(out_dir):
  """The jax.export artifact as images -> {name: NumPy array}."""
  out_dir = pathlib.Path(out_dir)
  exported = jax.export.deserialize(bytearray((out_dir / "model.jax_export").read_bytes()))
  variables = flax.serialization.msgpack_restore((out_dir / "variables.msgpack").read_bytes())
  return lambda images: jax.tree.map(np.asarray, exported.call(
      variables, jnp.asarray(images, jnp.float32)))


def tensorflow_available() -> bool:
  try:
    import tensorflow  # pylint: disable=import-outside-toplevel,unused-import
    from jax.experimental import jax2tf  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    return False
  return True


def export(net, out_dir, fmt: str = "auto") -> dict:
  """Writes the export and OUT/export.json; returns that record."""
  if fmt not in FORMATS:
    raise ValueError(f"--format must be one of {FORMATS}, got {fmt!r}")
  if fmt == "auto":
    fmt = "saved_model" if tensorflow_available() else "jax_export"
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  path = export_saved_model(net, out_dir) if fmt == "saved_model" else export_jax(net, out_dir)
  record = {"format": fmt, "path": path.name, "input": {
      "name": "images", "shape": [None, net.image_size, net.image_size, 3],
      "dtype": "float32", "range": [0.0, 1.0], "layout": "RGB crops (inference.crop_image)"},
            "outputs": list(OUTPUTS) if net.config.model.get("hand_heads", False)
                       else ["joints"],
            "checkpoint": net.checkpoint, "step": net.step, "config": net.config.to_dict()}
  with open(out_dir / "export.json", "w", encoding="utf-8") as f:
    json.dump(record, f, indent=1, default=str)
  return record


def define_flags():
  inference.define_run_flags()
  flags.DEFINE_string("out", None, "Output folder.")
  flags.DEFINE_enum("format", "auto", list(FORMATS), "Export format.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax's INFO chatter
  if bool(FLAGS.workdir) == bool(FLAGS.checkpoint) or not FLAGS.out:
    raise app.UsageError("give --out and exactly one of --workdir and --checkpoint")
  net = inference.load_model(FLAGS.workdir, FLAGS.checkpoint, FLAGS.config)
  record = export(net, FLAGS.out, FLAGS.format)
  print(f"exported step {record['step']} as {record['format']}: "
        f"{pathlib.Path(FLAGS.out) / record['path']}")


def command():
  """Console script ``dfl-export`` and ``python -m dfl_jax.export``."""
  define_flags()
  errors.run(main)
