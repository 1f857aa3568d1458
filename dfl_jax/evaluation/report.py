"""The evaluation report: ``metrics.json``, the PCK curve (paper Fig. 4) and a console summary."""

import json
import os
import pathlib

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np

from dfl_jax.evaluation import metrics as metrics_lib


def plot_pck(metrics: dict, path) -> None:
  """PCK curve 0-50 mm with the AUC in the legend, as a PNG (matplotlib Agg, no pyplot)."""
  thresholds = np.asarray(metrics["pck_thresholds_mm"], np.float64)
  pck = np.array([np.nan if p is None else p for p in metrics["pck"]], np.float64)
  figure = Figure(figsize=(5, 4), dpi=100)
  FigureCanvasAgg(figure)
  axes = figure.add_subplot()
  auc = metrics.get("auc")
  label = f"AUC = {auc:.3f}" if auc is not None else "AUC = n/a"
  axes.plot(thresholds, pck, "-", lw=2, label=label)
  axes.set_xlim(thresholds[0], thresholds[-1])
  axes.set_ylim(0.0, 1.0)
  axes.set_xlabel("error threshold (mm)")
  axes.set_ylabel("3D PCK")
  axes.set_title(f"root-aligned 3D PCK ({metrics.get('protocol', metrics_lib.PROTOCOL)})",
                 fontsize=9)
  axes.grid(True, alpha=0.3)
  axes.legend(loc="lower right")
  figure.tight_layout()
  figure.savefig(os.fspath(path))


def write_report(metrics: dict, out_dir) -> dict[str, pathlib.Path]:
  """Writes ``metrics.json`` and (for a protocol with PCK) ``pck.png`` into ``out_dir``
  (created); returns their paths."""
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  paths = {"metrics": out_dir / "metrics.json"}
  with open(paths["metrics"], "w", encoding="utf-8") as f:
    json.dump(metrics, f, indent=2)
    f.write("\n")
  if "pck" in metrics:
    paths["pck"] = out_dir / "pck.png"
    plot_pck(metrics, paths["pck"])
  return paths


def _official_lines(metrics: dict, mm) -> list[str]:
  return [
      f"protocol: {metrics['protocol']}"
      + (f" ({metrics['filter']} frames)" if metrics.get("filter", "none") != "none" else ""),
      f"MPJPE single {mm(metrics['mpjpe_single'])} ({metrics['num_single']} frames), "
      f"two {mm(metrics['mpjpe_two'])} ({metrics['num_two']} frames), "
      f"all {mm(metrics['mpjpe_all'])}",
      "AUC 0-50 mm: " + ("n/a" if metrics["auc"] is None else f"{metrics['auc']:.4f}"),
      f"MRRPE: {mm(metrics['mrrpe'])} ({metrics['num_mrrpe']} frames)",
      "hand presence accuracy: " + ("n/a" if metrics["hand_presence_accuracy"] is None
                                    else f"{metrics['hand_presence_accuracy']:.4f}"),
  ]


def format_summary(metrics: dict) -> str:
  """A few lines for the console, for any protocol (``protocols.py``)."""
  def mm(x):
    return "n/a" if x is None else f"{x:.2f} mm"

  if metrics.get("protocol") == "hic":
    lines = ["protocol: hic",
             f"MPJPE {mm(metrics['mpjpe'])} (interacting {mm(metrics['mpjpe_two'])}, "
             f"{metrics['num_two']} frames; single {mm(metrics['mpjpe_single'])}, "
             f"{metrics['num_single']} frames)"]
  elif "mpjpe" in metrics:  # one-figure protocols (intaghand)
    lines = [f"protocol: {metrics['protocol']}",
             f"MPJPE {mm(metrics['mpjpe'])} (left {mm(metrics.get('mpjpe_left'))}, right "
             f"{mm(metrics.get('mpjpe_right'))}; {metrics['num_frames']} frames)"]
  elif "auc" not in metrics:  # interwild
    lines = [f"protocol: {metrics['protocol']}",
             f"MPJPE single {mm(metrics['mpjpe_single'])}, two {mm(metrics['mpjpe_two'])}, "
             f"all {mm(metrics['mpjpe_all'])} ({metrics['num_frames']} frames)",
             f"MRRPE: {mm(metrics['mrrpe'])} ({metrics['num_mrrpe']} frames)"]
  else:
    lines = _official_lines(metrics, mm)
  if metrics.get("seg_num_pixels"):
    def pct(key):
      return "n/a" if metrics[key] is None else f"{100 * metrics[key]:.1f}%"
    lines.append(f"part segmentation: hand/background {pct('seg_foreground_accuracy')}, "
                 f"part {pct('seg_part_accuracy')} of hand pixels, found "
                 f"{pct('seg_found')}, of those right part {pct('seg_part_either_side')} "
                 f"and right side {pct('seg_side_accuracy')}, mIoU {pct('seg_miou')}")
  if metrics.get("num_missing"):
    lines.append(f"WARNING: {metrics['num_missing']} annotations without a prediction "
                 f"(first: {metrics['missing_ids']})")
  if metrics.get("num_unknown"):
    lines.append(f"WARNING: {metrics['num_unknown']} predictions with unknown ids "
                 f"(first: {metrics['unknown_ids']})")
  return "\n".join(lines)
