"""Shared test set-up: CPU JAX, the fixtures folder, small model configurations."""

import os
import pathlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def fixtures_dir() -> pathlib.Path:
  """Genuine InterHand2.6M samples: $DFL_FIXTURES, default ../shared/fixtures."""
  return pathlib.Path(os.environ.get("DFL_FIXTURES", ROOT.parent / "shared" / "fixtures"))


@pytest.fixture
def fixtures():
  path = fixtures_dir()
  if not path.is_dir():
    raise FileNotFoundError(f"fixtures folder {path} not found; set DFL_FIXTURES")
  return path


def tiny_model_config(**overrides):
  """configs/tiny.py's model, with overrides."""
  from configs import tiny
  cfg = tiny.get_config().model
  cfg.update(overrides)
  return cfg
