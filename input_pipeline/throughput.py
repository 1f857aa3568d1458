"""Training-pipeline throughput: images/second per CPU core, full augmentation.

    python -m input_pipeline.bench [--num_images 512] [--threads N] [--image_size 256]
                                   [--data_dir DIR] [--seconds 20]

Without --data_dir it renders a synthetic set of real-size (512x334 and 334x512) JPEGs, builds
the TFDS dataset in a temporary folder and times ``pipeline.train_dataset`` (decode, crop and
warp, augmentation, 2.5D targets, pseudo segmentation, batching) after a warm-up. tf.data gets a
private pool of ``--threads`` threads (default: the cores this process may use); the figure per
core is the rate divided by that number.
"""

import json
import os
import pathlib
import tempfile
import time

from absl import flags
import ml_collections

from input_pipeline import dataset_build, pipeline, synthetic_render

from dfl_jax import errors

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_integer("num_images", 512, "Synthetic images to render when no --data_dir.")
  flags.DEFINE_string("data_dir", None, "An existing TFDS data_dir (interhand26m) to read.")
  flags.DEFINE_string("split", "train", "Split to read.")
  flags.DEFINE_integer("threads", None, "tf.data threads (default: available cores).")
  flags.DEFINE_integer("image_size", 256, "Crop size.")
  flags.DEFINE_integer("batch_size", 64, "Batch size.")
  flags.DEFINE_float("seconds", 20.0, "Measuring time after warm-up.")
  flags.DEFINE_string("json", None, "Write the result here as JSON.")


def measure(data_dir, split, threads, image_size=256, batch_size=64, seconds=20.0,
            warmup_batches=5):
  """Returns {'images_per_s', 'images_per_s_per_core', 'threads', ...}."""
  data = ml_collections.ConfigDict(dict(data_dir=str(data_dir), image_size=image_size,
                                        annotation="H+M", train_split=split, frames="all",
                                        shuffle_buffer=256, augment=True))
  it = pipeline.train_dataset(data, batch_size, seed=0, threads=threads).as_numpy_iterator()
  for _ in range(warmup_batches):
    next(it)
  n, start, cpu_start = 0, time.perf_counter(), time.process_time()
  while time.perf_counter() - start < seconds:
    next(it)
    n += batch_size
  elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
  rate = n / elapsed
  # Per core two ways: the rate over the threads given to tf.data, and images per CPU-second
  # of the whole process (every thread TensorFlow or OpenCV used, the consumer's included).
  return dict(images_per_s=rate, images_per_s_per_core=rate / threads,
              images_per_cpu_second=n / cpu, threads=threads, images=n, seconds=elapsed,
              cpu_seconds=cpu, image_size=image_size, batch_size=batch_size)


def main(argv):
  del argv
  threads = FLAGS.threads or len(os.sched_getaffinity(0))
  with tempfile.TemporaryDirectory() as tmp:
    data_dir = FLAGS.data_dir
    split = FLAGS.split
    if data_dir is None:
      source = pathlib.Path(tmp) / "synthetic"
      synthetic_render.generate(source, FLAGS.num_images, seed=0, split=split)
      data_dir = pathlib.Path(tmp) / "tfds"
      dataset_build.build(source, data_dir, splits=(split,), workers=threads)
    result = measure(data_dir, split, threads, FLAGS.image_size, FLAGS.batch_size,
                     FLAGS.seconds)
  print(f"{result['images_per_s']:.0f} images/s on {threads} threads = "
        f"{result['images_per_s_per_core']:.0f} images/s per core; "
        f"{result['images_per_cpu_second']:.0f} images per CPU-second "
        f"(crop {FLAGS.image_size}, full augmentation)")
  if FLAGS.json:
    pathlib.Path(FLAGS.json).write_text(json.dumps(result, indent=1))


def command():
  """Console script ``dfl-pipeline-bench`` and ``python -m input_pipeline.bench``."""
  define_flags()
  errors.run(main)
