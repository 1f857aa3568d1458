"""Evaluation: metrics, scoring predictions files, running a trained model over a split."""
