"""Serving: inference on users' images, prepared weights, predict, export, detector, figures."""
