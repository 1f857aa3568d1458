"""Part segmentation scored against its labels: the 33-class confusion matrix and what it says.

The part segmentation (paper Sec. 3.2, Eq. 8-9) is not scored in the paper; these figures say
how far an encoder has learned what the initialisation stage (Eq. 1) reads from it. Classes are
the pipeline's: 0 background, 1-16 the right hand's parts, 17-32 the left hand's, in the same
part order, so ``(c - 1) % 16`` is a pixel's part and ``(c - 1) // 16`` its side.

Labels are the data's exact part masks where it has them (the synthetic world) and the pseudo
segmentation drawn from the joints otherwise (real InterHand2.6M frames), at the segmentation
head's resolution; the prediction is the arg-max class. All figures come from one confusion
matrix ``counts[gt, pred]`` accumulated over valid pixels, so they do not depend on batching:

- ``seg_foreground_accuracy``: pixels whose hand-or-background call is right, of all pixels;
- ``seg_part_accuracy``: labelled hand pixels predicted as exactly their class (part and side);
- ``seg_found``: labelled hand pixels predicted as any hand class;
- ``seg_part_either_side``: of the found pixels, those with the right part on either hand;
- ``seg_side_accuracy``: of the found pixels, those on the right hand side (right or left);
- ``seg_miou``: mean intersection over union of the classes present in labels or predictions.

NumPy, int64 counts.
"""

import numpy as np

NUM_CLASSES = 33
PARTS_PER_HAND = 16


class SegmentationMetrics:
  """Accumulates ``counts[gt, pred]`` over batches; ``result()`` reports (see module doc)."""

  def __init__(self, num_classes: int = NUM_CLASSES):
    self.num_classes = num_classes
    self.counts = np.zeros((num_classes, num_classes), np.int64)

  def update(self, logits, labels, valid=None):
    """Adds a batch. logits: [N, H, W, C]; labels: [N, H, W] ints in [0, C); valid: [N]
    (rows with 0, padding or frames without labels, are ignored)."""
    logits = np.asarray(logits)
    if logits.ndim != 4 or logits.shape[-1] != self.num_classes:
      raise ValueError(f"segmentation logits must be [N, H, W, {self.num_classes}], got "
                       f"{logits.shape}")
    self.update_predicted(logits.argmax(axis=-1), labels, valid)

  def update_predicted(self, predicted, labels, valid=None):
    """Adds a batch of predicted classes [N, H, W] (the logits' arg-max, taken where they are:
    ``runner.make_predict_fn`` does it on the device so that only labels travel)."""
    predicted = np.asarray(predicted).astype(np.int64)
    labels = np.asarray(labels).astype(np.int64)
    if labels.shape != predicted.shape or labels.ndim != 3:
      raise ValueError(f"segmentation labels {labels.shape} do not match the predictions "
                       f"{predicted.shape} ([N, H, W])")
    if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
      raise ValueError(f"segmentation labels must lie in [0, {self.num_classes}), got "
                       f"[{labels.min()}, {labels.max()}]")
    rows = (np.ones(labels.shape[0], bool) if valid is None
            else np.asarray(valid).reshape(labels.shape[0]) > 0)
    pred = predicted[rows].ravel()
    gt = labels[rows].ravel()
    self.counts += np.bincount(gt * self.num_classes + pred,
                               minlength=self.num_classes ** 2).reshape(self.counts.shape)

  def result(self) -> dict:
    """JSON-ready dict of the module doc's figures (None where nothing was counted) and
    ``seg_num_pixels``."""
    c = self.counts
    total = c.sum()
    hand_gt = c[1:].sum()
    found = c[1:, 1:]
    part = (np.arange(self.num_classes) - 1) % PARTS_PER_HAND
    side = (np.arange(self.num_classes) - 1) // PARTS_PER_HAND
    same_part = part[1:, None] == part[None, 1:]
    same_side = side[1:, None] == side[None, 1:]
    union = c.sum(0) + c.sum(1) - np.diag(c)

    def ratio(num, den):
      return float(num) / float(den) if den else None

    present = union > 0
    return {
        "seg_foreground_accuracy": ratio(c[0, 0] + found.sum(), total),
        "seg_part_accuracy": ratio(np.trace(c) - c[0, 0], hand_gt),
        "seg_found": ratio(found.sum(), hand_gt),
        "seg_part_either_side": ratio(found[same_part].sum(), found.sum()),
        "seg_side_accuracy": ratio(found[same_side].sum(), found.sum()),
        "seg_miou": (float(np.mean(np.diag(c)[present] / union[present])) if present.any()
                     else None),
        "seg_num_pixels": int(total),
    }


__all__ = ["NUM_CLASSES", "SegmentationMetrics"]
