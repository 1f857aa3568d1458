"""Encoder weights exported from a run and loaded into another (config.train.encoder_init)."""

import pathlib

import flax.traverse_util
import jax
import numpy as np
import pytest

from configs import tiny
from dfl_jax import errors
from dfl_jax import workdir
from dfl_jax.network import model
from dfl_jax.training import checkpointing
from dfl_jax.training.state import create_optimizer, create_train_state
from dfl_jax.weights import encoder_export, encoder_file


def _config(**train_overrides):
  """configs/tiny.py at 64 px, from scratch unless an encoder file is given."""
  config = tiny.get_config()
  config.data.image_size = 64
  config.train.encoder_init = ""
  config.train.update(train_overrides)
  return config


def _flat(tree):
  return flax.traverse_util.flatten_dict(jax.device_get(tree), sep="/")


def _initial_variables(config, rng):
  """The variables a new run starts from: weight files are merged when its state is created."""
  _, state = create_train_state(config, rng, create_optimizer(config, 1))
  return {"params": state.params, "batch_stats": state.batch_stats}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """A 'pretraining run' (a checkpoint and its config.json) and its exported encoder file."""
  work = tmp_path_factory.mktemp("pretrain")
  config = _config()
  tx = create_optimizer(config, 1)
  _, state = create_train_state(config, jax.random.key(11), tx)
  # As after training: BatchNorm statistics away from their initial 0/1, so that a merge that
  # dropped them would be seen.
  noise = lambda x: x + 0.25 + 0.1 * jax.random.normal(jax.random.key(3), x.shape, x.dtype)
  state = state.replace(batch_stats=jax.tree.map(noise, state.batch_stats))
  ckpt = checkpointing.Checkpointer(work / "checkpoints")
  ckpt.save(5, state, force=True)
  ckpt.close()
  workdir.save_config(config, work)
  out = encoder_export.export_run(work, work / "encoder.npz")
  return state, pathlib.Path(out)


def test_export_then_encoder_init_copies_exactly_the_encoder(exported):
  state, path = exported
  flat, meta = encoder_file.load(path)
  assert meta["step"] == 5 and meta["modules"] == list(encoder_file.DEFAULT_MODULES)
  assert {k.split("/")[1] for k in flat} == {"backbone", "fpn", "segmentation"}
  assert any(k.startswith("batch_stats/backbone/") for k in flat)  # BN statistics travel too

  fresh = _initial_variables(_config(), jax.random.key(0))
  loaded = _initial_variables(_config(encoder_init=str(path)), jax.random.key(0))
  source, fresh_p, loaded_p = _flat(state.params), _flat(fresh["params"]), _flat(loaded["params"])
  assert set(loaded_p) == set(fresh_p)
  for key, value in loaded_p.items():
    if key.split("/")[0] in ("backbone", "fpn", "segmentation"):
      np.testing.assert_array_equal(value, source[key], err_msg=key)
    else:  # decoder, position features, hand heads: the new run's own initialisation
      np.testing.assert_array_equal(value, fresh_p[key], err_msg=key)
  stats = _flat(loaded["batch_stats"])
  for key, value in _flat(state.batch_stats).items():
    np.testing.assert_array_equal(stats[key], value, err_msg=key)
  assert any(not np.array_equal(source[k], fresh_p[k]) for k in source if k.startswith("fpn/"))


def test_encoder_of_another_model_size_is_refused_naming_the_file(exported, tmp_path):
  _, path = exported
  config = _config(encoder_init=str(path))
  config.model.fpn_features = 32
  with pytest.raises(ValueError, match=r"encoder\.npz.*fpn.*shape"):
    _initial_variables(config, jax.random.key(0))


def test_ablation_without_segmentation_loads_backbone_and_fpn(exported):
  """Supplement Table 1's variant without part segmentation takes the rest of the encoder."""
  state, path = exported
  config = _config(encoder_init=str(path))
  config.model.part_segmentation = False
  loaded = _initial_variables(config, jax.random.key(0))
  assert "segmentation" not in loaded["params"]
  source = _flat(state.params)
  for key, value in _flat(loaded["params"]).items():
    if key.startswith(("backbone/", "fpn/")):
      np.testing.assert_array_equal(value, source[key], err_msg=key)


def test_abstract_state_with_an_encoder_file(exported):
  """jax.eval_shape of the whole train state, encoder file merged, works (shapes only)."""
  _, path = exported
  config = _config(encoder_init=str(path))
  tx = create_optimizer(config, 1)
  abstract = jax.eval_shape(lambda k: create_train_state(config, k, tx)[1],
                            jax.random.key(0))
  assert abstract.params["fpn"] is not None


def test_missing_or_foreign_file_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="nothere.npz"):
    encoder_file.load(tmp_path / "nothere.npz")
  bad = tmp_path / "bad.npz"
  bad.write_bytes(b"not a zip file")
  with pytest.raises(ValueError, match="bad.npz"):
    encoder_file.load(bad)
  foreign = tmp_path / "foreign.npz"
  np.savez(foreign, arr_0=np.zeros(3))
  with pytest.raises(ValueError, match="foreign.npz.*arr_0"):
    encoder_file.load(foreign)
  with pytest.raises(errors.MissingFileError, match="empty/config.json not found"):
    encoder_export.main(["--workdir", str(tmp_path / "empty"), "--out", str(tmp_path / "x.npz")])


def test_restore_targets_and_the_network_do_not_read_the_encoder_file(tmp_path):
  """A trained run's config names its encoder file; the state a checkpoint is restored into
  (evaluation, inference, export) must not need that file (the checkpoint holds every weight),
  and the network alone never reads weight files."""
  missing = tmp_path / "moved-away.npz"
  config = _config(encoder_init=str(missing))
  state = workdir.abstract_train_state(config)
  assert "backbone" in state.params
  tx = create_optimizer(config, 1)
  _, real = create_train_state(config, jax.random.key(0), tx, weight_files=False)
  assert jax.tree.structure(real) == jax.tree.structure(state)
  _, variables = model.init_variables(config, jax.random.key(0))
  assert jax.tree.structure(variables["params"]) == jax.tree.structure(real.params)
  with pytest.raises(FileNotFoundError, match="moved-away.npz"):
    create_train_state(config, jax.random.key(0), tx)
