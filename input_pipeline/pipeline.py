"""The tf.data pipeline: one call from the training code.

    train_iter, eval_ds, info = pipeline.create_datasets(config)

Training: this process's shard of the split (``tfds.even_splits`` by process), file and example
shuffling, parallel JPEG decoding, crop and affine warp to the input size with InterNet's
augmentation (``transforms.py``), 2.5D targets in the 256^3 space, validity after augmentation,
part segmentation at the segmentation head's resolution (input / 4): the exact part labels
where the data has them (the synthetic world), else the pseudo segmentation drawn from the
joints (real InterHand2.6M); with ``config.data.depth`` the depth map too, through the same crop,
warp and flip as the image (nearest neighbour, mm, 0 where none). Batched as
host-local NumPy dicts. Deterministic for ``config.seed``: augmentation draws come from
stateless RNGs seeded per example, and every stage keeps its order.

Evaluation: no augmentation; every example exactly once, the last batch padded with zeros and
marked by ``mask`` = 0.

Batch keys (B = per-process batch, S = image size):
  images uint8 [B,S,S,3]; joints [B,42,3]; joint_valid [B,42]; segmentation int32 [B,S/4,S/4];
  segmentation_valid [B]; hand_presence [B,2]; hand_presence_valid [B]; rel_root_depth [B];
  rel_root_depth_valid [B]; mask [B]; and for evaluation and inference: annotation_id [B],
  affine [B,3,3] (image -> crop), joint_cam [B,42,3] mm, joint_valid_ann [B,42] (the
  annotation's validity, used by the official metrics), focal [B,2], princpt [B,2],
  hand_type [B] (0 right, 1 left, 2 interacting); with config.data.depth: depth float32
  [B,S,S] mm and depth_valid [B].
"""

import cv2
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from input_pipeline import pseudo_segmentation, tfds_builder, transforms

SEG_STRIDE = 4
FRAMES = ("all", "single", "interacting")


def _filter_frames(frames):
  if frames not in FRAMES:
    raise ValueError(f"config.data.frames must be one of {FRAMES}, got {frames!r}")
  if frames == "single":
    return lambda ex: ex["hand_type"] < 2
  if frames == "interacting":
    return lambda ex: tf.equal(ex["hand_type"], 2)
  return None


# Part labels of the mirrored image: the two hands' classes swap (1..16 <-> 17..32).
FLIP_CLASSES = np.concatenate([[0], np.arange(17, 33), np.arange(1, 17)]).astype(np.int32)


def _warp_nearest_cv2(image, matrix, out_size):
  return cv2.warpAffine(image, matrix[:2], (int(out_size), int(out_size)),
                        flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def warp_nearest(image, matrix, out_size, dtype):
  """A one-channel map [H, W] warped by the 3x3 image->output affine, nearest neighbour."""
  out = tf.numpy_function(_warp_nearest_cv2, [image, tf.cast(matrix, tf.float32), out_size],
                          dtype, stateful=False)
  return tf.ensure_shape(out, [out_size, out_size])


def exact_segmentation(parts_png, affine, flip, seg_size):
  """Exact part labels (PNG bytes, image resolution) -> int32 [seg_size, seg_size] labels of the
  crop: sampled at each segmentation cell's centre, the hands' classes swapped when flipped."""
  labels = tf.io.decode_png(parts_png, channels=1, dtype=tf.uint8)[..., 0]
  k = 1.0 / SEG_STRIDE   # crop pixel q -> segmentation cell (q + 0.5) / stride - 0.5
  to_seg = tf.constant([[k, 0.0, 0.5 * k - 0.5], [0.0, k, 0.5 * k - 0.5], [0.0, 0.0, 1.0]])
  seg = tf.cast(warp_nearest(labels, to_seg @ affine, seg_size, tf.uint8), tf.int32)
  return tf.where(flip, tf.gather(FLIP_CLASSES, seg), seg)


def preprocess(example, seed, image_size, augment, depth=False):
  """Decoded TFDS example (image as JPEG bytes) -> one training/evaluation example."""
  aug = transforms.sample_augmentation(seed) if augment else transforms.no_augmentation()
  targets = transforms.make_targets(example, aug, image_size)
  image = tf.io.decode_jpeg(example["image"], channels=3)
  crop = transforms.warp_image(image, targets["affine"], image_size, aug["colour"])
  seg_size = image_size // SEG_STRIDE
  seg_xy = (targets["joints"][:, :2] + 0.5) / SEG_STRIDE - 0.5
  radius = transforms.capsule_radius(example, aug, image_size, SEG_STRIDE)

  def pseudo():
    return pseudo_segmentation.render(seg_xy, targets["joint_depth_mm"], targets["joint_valid"],
                                      radius, (seg_size, seg_size))

  parts = example.get("parts", tf.constant(b""))
  has_parts = tf.strings.length(parts) > 0
  segmentation = tf.cond(
      has_parts, lambda: exact_segmentation(parts, targets["affine"], aug["flip"], seg_size),
      pseudo)
  segmentation_valid = tf.where(
      has_parts, 1.0, tf.cast(tf.reduce_any(targets["joint_valid"] > 0), tf.float32))
  out = {
      "images": crop,
      "joints": targets["joints"],
      "joint_valid": targets["joint_valid"],
      "segmentation": segmentation,
      "segmentation_valid": segmentation_valid,
      "hand_presence": targets["hand_presence"],
      "hand_presence_valid": targets["hand_presence_valid"],
      "rel_root_depth": targets["rel_root_depth"],
      "rel_root_depth_valid": targets["rel_root_depth_valid"],
      "mask": tf.constant(1.0),
      "annotation_id": example["annotation_id"],
      "affine": targets["affine"],
      "joint_cam": tf.cast(example["joint_cam"], tf.float32),
      "joint_valid_ann": tf.cast(example["joint_valid"], tf.float32),
      "focal": tf.cast(example["focal"], tf.float32),
      "princpt": tf.cast(example["princpt"], tf.float32),
      "hand_type": tf.cast(example["hand_type"], tf.int32),
  }
  if depth:
    depth_png = example.get("depth", tf.constant(b""))
    has_depth = tf.strings.length(depth_png) > 0

    def warped_depth():
      mm = tf.io.decode_png(depth_png, channels=1, dtype=tf.uint16)[..., 0]
      return tf.cast(warp_nearest(mm, targets["affine"], image_size, tf.uint16), tf.float32)

    out["depth"] = tf.cond(has_depth, warped_depth,
                           lambda: tf.zeros([image_size, image_size], tf.float32))
    out["depth_valid"] = tf.cast(has_depth, tf.float32)
  return out


def _builder(data_cfg):
  config_name = tfds_builder.ANNOTATIONS[data_cfg.get("annotation", "H+M")]
  return tfds_builder.InterHand26M(config=config_name, data_dir=data_cfg.data_dir)


def _read(builder, split, shuffle, seed):
  read_config = tfds.ReadConfig(shuffle_seed=seed, interleave_cycle_length=16)
  return builder.as_dataset(split=split, shuffle_files=shuffle, read_config=read_config,
                            decoders={"image": tfds.decode.SkipDecoding()})


def _options(ds, threads=None):
  # tf.data parallelises over examples; OpenCV's own threads would only oversubscribe.
  cv2.setNumThreads(1)
  options = tf.data.Options()
  options.deterministic = True
  options.experimental_optimization.map_parallelization = True
  if threads:
    options.threading.private_threadpool_size = threads
  return ds.with_options(options)


def train_dataset(data_cfg, batch_size, seed, process_index=0, process_count=1,
                  start_step=0, threads=None):
  """Infinite training batches of this process (``batch_size`` is the per-process batch).

  ``start_step`` skips the batches already consumed, so a resumed run sees the same data as an
  uninterrupted one.
  """
  builder = _builder(data_cfg)
  split = tfds.even_splits(data_cfg.get("train_split", "train"), n=process_count)[process_index]
  ds = _read(builder, split, shuffle=True, seed=seed + process_index)
  keep = _filter_frames(data_cfg.get("frames", "all"))
  if keep is not None:
    ds = ds.filter(keep)
  ds = ds.repeat()
  ds = ds.shuffle(data_cfg.get("shuffle_buffer", 2048), seed=seed + process_index)
  seeds = tf.data.Dataset.random(seed=seed + 7919 * process_index).batch(2)
  ds = tf.data.Dataset.zip((ds, seeds))
  if start_step:  # before the map: skipped examples are neither decoded nor augmented
    ds = ds.skip(start_step * batch_size)
  size = data_cfg.image_size
  depth = data_cfg.get("depth", False)
  ds = ds.map(lambda ex, s: preprocess(ex, s, size, augment=data_cfg.get("augment", True),
                                       depth=depth),
              num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(batch_size, drop_remainder=True)
  return _options(ds.prefetch(tf.data.AUTOTUNE), threads)


def _pad_batch(batch, batch_size):
  n = tf.shape(batch["mask"])[0]

  def pad(x):
    paddings = [[0, batch_size - n]] + [[0, 0]] * (len(x.shape) - 1)
    return tf.ensure_shape(tf.pad(x, paddings), [batch_size] + x.shape[1:].as_list())

  return {k: pad(v) for k, v in batch.items()}


def eval_dataset(data_cfg, batch_size, split=None, process_index=0, process_count=1,
                 threads=None, num_batches=None):
  """Every example of this process's part of ``split`` once; the last batch padded, mask 0.

  ``num_batches`` pads with fully masked batches up to that count, so that every process of a
  multi-host run steps through the same number of batches.
  """
  builder = _builder(data_cfg)
  split = split or data_cfg.get("eval_split", "test")
  part = tfds.even_splits(split, n=process_count)[process_index]
  ds = _read(builder, part, shuffle=False, seed=0)
  keep = _filter_frames(data_cfg.get("frames", "all"))
  if keep is not None:
    ds = ds.filter(keep)
  size = data_cfg.image_size
  depth = data_cfg.get("depth", False)
  ds = ds.map(lambda ex: preprocess(ex, tf.zeros([2], tf.int64), size, augment=False,
                                    depth=depth),
              num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(batch_size).map(lambda b: _pad_batch(b, batch_size))
  if num_batches is not None:
    empty = ds.element_spec
    blank = tf.data.Dataset.from_tensors(
        {k: tf.zeros(v.shape, v.dtype) for k, v in empty.items()}).repeat()
    ds = ds.concatenate(blank).take(num_batches)
  return _options(ds.prefetch(tf.data.AUTOTUNE), threads)


def eval_batch_count(info, split, process_count, batch_size):
  """Batches every process steps through in a multi-host evaluation (None on one process)."""
  if process_count == 1:
    return None
  per_process = -(-info.splits[split].num_examples // process_count)
  return -(-per_process // batch_size)


def dataset_info(config):
  """The TFDS DatasetInfo of the configured dataset (split sizes, features)."""
  return _builder(config.data).info


def create_datasets(config, process_index=None, process_count=None, start_step=0):
  """(training iterator of NumPy batches, evaluation tf.data.Dataset, dataset info).

  ``config.train.batch_size`` is the global batch; each process gets its share.
  """
  if process_index is None or process_count is None:
    import jax  # pylint: disable=import-outside-toplevel
    process_index, process_count = jax.process_index(), jax.process_count()
  if config.train.batch_size % process_count:
    raise ValueError(f"config.train.batch_size={config.train.batch_size} does not divide "
                     f"among {process_count} processes")
  local = config.train.batch_size // process_count
  train = train_dataset(config.data, local, config.seed, process_index, process_count,
                        start_step)
  eval_batch = local
  info = _builder(config.data).info
  split = config.data.get("eval_split", "test")
  num_batches = eval_batch_count(info, split, process_count, eval_batch)
  evaluation = eval_dataset(config.data, eval_batch, split=split, process_index=process_index,
                            process_count=process_count, num_batches=num_batches)
  return train.as_numpy_iterator(), evaluation, info
