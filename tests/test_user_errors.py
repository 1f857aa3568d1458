"""One clear line for every user mistake (dfl_jax.errors), and nothing written by a refused run."""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

from ml_collections import ConfigDict
import pytest

from configs import shapes as shapes_config, shapes_tiny, tiny
from conftest import compilation_cache_env
from dfl_jax import errors
from dfl_jax.training import config_check, shapes
from input_pipeline import synthetic_dataset

ROOT = pathlib.Path(__file__).resolve().parents[1]
MAX_LINES = 8
# TensorFlow's C++ start-up lines are printed at import whatever TF_CPP_MIN_LOG_LEVEL says; they
# are not ours, and not counted.
TF_NOISE = ("All log messages before absl::InitializeLog()", "oneDNN custom operations",
            "cpu_feature_guard", "This TensorFlow binary is optimized")


def run_command(args, env=None, timeout=600):
  full = dict(os.environ)
  full.pop(errors.DEBUG_ENV, None)
  full.update(JAX_PLATFORMS="cpu", **(env or {}))
  env = full
  proc = subprocess.run([sys.executable] + args, cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=timeout, check=False)
  lines = [x for x in (proc.stdout + proc.stderr).splitlines()
           if x.strip() and not any(n in x for n in TF_NOISE)]
  return proc, lines


def assert_one_clear_error(proc, lines, *names, code=2):
  text = "\n".join(lines)
  assert proc.returncode == code, text
  assert "Traceback" not in text, text
  assert len(lines) <= MAX_LINES, text
  error = [x for x in lines if x.startswith("error: ")]
  assert len(error) == 1, text
  for name in names:
    assert name in error[0], (name, text)
  return error[0]


def train(workdir, *flags, env=None):
  return run_command(["main.py", "--config=configs/tiny.py", f"--workdir={workdir}"]
                     + list(flags), env=env)


def test_an_unknown_key_names_the_closest_valid_ones_and_writes_nothing(tmp_path):
  workdir = tmp_path / "run"
  proc, lines = train(workdir, "--config.train.batchsize=8")
  line = assert_one_clear_error(proc, lines, "--config.train.batchsize", "batch_size")
  assert "did you mean --config.train.batch_size" in line
  assert not workdir.exists()


def test_a_batch_size_of_zero_is_named_and_writes_nothing(tmp_path):
  workdir = tmp_path / "run"
  proc, lines = train(workdir, "--config.train.batch_size=0")
  assert_one_clear_error(proc, lines, "config.train.batch_size=0")
  assert not workdir.exists()


def test_a_wrong_shapes_value_is_named_before_anything_runs(tmp_path):
  # Through the command line once (the DFL it trains is named as the user wrote it) ...
  workdir = tmp_path / "shapes"
  proc, lines = run_command(["-m", "dfl_jax.shapes", "--config=configs/shapes_tiny.py",
                             f"--workdir={workdir}", "--config.dfl.train.learning_rate=0"])
  assert_one_clear_error(proc, lines, "config.dfl.train.learning_rate=0")
  assert not workdir.exists()


@pytest.mark.parametrize("key, value, named", [
    ("k.batch_size", 0, "config.k.batch_size=0"),   # was a ZeroDivisionError after DFL
    ("shapes.candidates", 5000, "config.shapes.candidates=5000"),   # > the 16^3 grid points
    ("shapes.mesh_format", "stl", "config.shapes.mesh_format='stl'"),
    ("shapes.image_size", 70, "config.shapes.image_size=70"),
    ("i.weight_decay", -1.0, "config.i.weight_decay=-1.0"),
])
def test_the_shapes_checks_name_the_key(key, value, named):
  # ... and the check it runs, in-process, for the other keys.
  config = shapes_tiny.get_config()
  section, name = key.split(".")
  config[section][name] = value
  with pytest.raises(errors.UserError) as info:
    config_check.check_shapes(config)
  assert str(info.value).startswith(named)


def test_the_shipped_shapes_configurations_pass_their_checks():
  for config in (shapes_config.get_config(), shapes_tiny.get_config()):
    config_check.check_shapes(config)
    config_check.check(shapes.dfl_config(config))
  config = shapes_tiny.get_config()
  config.shapes.num_points = 600           # more points than the 512 candidates
  with pytest.raises(errors.ConfigError, match="config.shapes.candidates=512: must lie between"):
    config_check.check_shapes(config)


def test_a_missing_data_dir_points_at_the_builder_and_writes_nothing(tmp_path):
  workdir, data_dir = tmp_path / "run", tmp_path / "no_such_data"
  proc, lines = train(workdir, "--config.data.source=interhand",
                      f"--config.data.data_dir={data_dir}")
  assert_one_clear_error(proc, lines, str(data_dir), "input_pipeline.build")
  assert not workdir.exists()


def test_the_traceback_comes_back_with_debug(tmp_path):
  proc, _ = train(tmp_path / "run", "--config.train.batch_size=0",
                  env={errors.DEBUG_ENV: "1"})
  assert proc.returncode == 2 and "Traceback" in proc.stderr
  assert "config.train.batch_size=0" in proc.stderr


def test_a_malformed_predictions_file_is_one_line(tmp_path, fixtures):
  annotations = tmp_path / "ann"
  annotations.mkdir()
  for kind in ("data", "camera", "joint_3d"):
    shutil.copyfile(fixtures / "interhand26m_samples" / f"test_interhand2.6m_{kind}.json",
                    annotations / f"test_interhand2.6m_{kind}.json")
  bad = tmp_path / "pred.json"
  bad.write_text('{"326750": {"joints_cam_mm": [[1, 2, 3]')
  proc, lines = run_command(["-m", "dfl_jax.evaluate", f"--predictions={bad}",
                             f"--annotations={annotations}", "--split=test"])
  assert_one_clear_error(proc, lines, str(bad), "malformed JSON")
  bad.write_text(json.dumps({"326750": {"joints_cam_mm": [[1, 2]]}}))
  proc, lines = run_command(["-m", "dfl_jax.evaluate", f"--predictions={bad}",
                             f"--annotations={annotations}", "--split=test"])
  assert_one_clear_error(proc, lines, str(bad), "326750", "joints_cam_mm")


def test_predict_flag_errors_print_the_flag_not_the_docstring(tmp_path):
  proc, lines = run_command(["-m", "dfl_jax.predict", "--input=x.jpg", f"--out={tmp_path}",
                             "--workdir=somewhere", "--batch_size=many"])
  assert_one_clear_error(proc, lines, "--batch_size=many")
  proc, lines = run_command(["-m", "dfl_jax.predict", "--input=x.jpg", f"--out={tmp_path}"])
  assert_one_clear_error(proc, lines, "--workdir", "--checkpoint")


def test_a_workdir_without_checkpoints_is_one_line_and_left_as_it_was(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "config.json").write_text(tiny.get_config().to_json())
  proc, lines = run_command(["-m", "dfl_jax.pretrained_encoder", f"--workdir={workdir}",
                             f"--out={tmp_path / 'e.npz'}"])
  assert_one_clear_error(proc, lines, "no checkpoint", str(workdir / "checkpoints"))
  assert sorted(p.name for p in workdir.iterdir()) == ["config.json"]


def test_unknown_key_messages():
  config = ConfigDict({"train": {"batch_size": 1, "learning_rate": 0.1},
                       "data": {"image_size": 256}})
  assert errors.unknown_key_message(config, "train.batch_size") is None
  assert "did you mean --config.train.batch_size" in errors.unknown_key_message(
      config, "train.batchsize")
  assert "did you mean --config.train" in errors.unknown_key_message(config, "trian.batch_size")
  # the right name in the wrong group
  assert "--config.data.image_size" in errors.unknown_key_message(config, "train.image_size")
  # nothing close: the group's keys are listed
  message = errors.unknown_key_message(config, "train.zzz")
  assert "batch_size" in message and "learning_rate" in message
  assert "is a value" in errors.unknown_key_message(config, "train.batch_size.x")


def test_classify_keeps_bugs_and_names_files():
  assert errors.classify(errors.ConfigError("config.x=1: bad")) == ("config.x=1: bad", 2)
  assert errors.classify(KeyError("a bug")) is None
  assert errors.classify(ValueError("a bug too")) is None
  message, code = errors.classify(FileNotFoundError(2, "No such file or directory", "/a/b"))
  assert message.startswith("/a/b:") and code == 2
  assert errors.classify(PermissionError(13, "Permission denied", "/ro"))[1] == 3


def test_every_command_runs_through_the_error_style():
  """Each entry point's command() goes through errors.run or errors.call."""
  commands = ["dfl_jax/training/cli.py", "dfl_jax/evaluation/cli.py", "dfl_jax/serving/predict.py",
              "dfl_jax/serving/export.py", "dfl_jax/tools/bench.py", "dfl_jax/tools/aot.py",
              "dfl_jax/tools/doctor.py", "dfl_jax/tools/summary.py",
              "dfl_jax/weights/backbone_file.py", "dfl_jax/weights/encoder_export.py",
              "input_pipeline/dataset_build.py", "input_pipeline/synthetic_render.py",
              "input_pipeline/throughput.py"]
  for path in commands:
    text = (ROOT / path).read_text()
    body = text[text.index("def command("):]
    assert "errors.run(" in body or "errors.call(" in body, path
    assert "app.run(" not in body, path


@pytest.mark.slow
def test_a_second_training_in_a_busy_workdir_refuses_and_the_first_goes_on(
    tmp_path, shared_compilation_cache):
  config = tiny.get_config()
  config.data.synthetic_sizes = "train:8,val:4"
  data_dir = synthetic_dataset.ensure(config, tmp_path / "data")
  workdir = tmp_path / "run"
  flags = [f"--config.data.data_dir={data_dir}", "--config.data.image_size=64",
           "--config.train.batch_size=4", "--config.train.num_steps=4",
           "--config.train.eval_every_steps=100000", "--config.train.eval_at_start=False",
           "--config.data.shuffle_buffer=8"]
  first = subprocess.Popen([sys.executable, "main.py", "--config=configs/tiny.py",
                            f"--workdir={workdir}"] + flags, cwd=ROOT,
                           env=dict(os.environ, JAX_PLATFORMS="cpu",
                                    **compilation_cache_env(shared_compilation_cache)),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  try:
    lock = workdir / "run.lock"
    while not lock.exists():
      assert first.poll() is None, first.communicate()[0].decode()[-3000:]
      time.sleep(0.05)
    proc, lines = train(workdir, *flags, "--config.train.learning_rate=0.1")
    assert_one_clear_error(proc, lines, "in use by another training run",
                           f"PID {first.pid}", code=3)
    out, _ = first.communicate(timeout=1200)
  finally:
    if first.poll() is None:
      first.kill()
  assert first.returncode == 0, out.decode()[-3000:]
  assert json.loads((workdir / "config.json").read_text())["train"]["learning_rate"] != 0.1
  assert not lock.exists()
