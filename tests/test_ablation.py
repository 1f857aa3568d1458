"""The ablation configs (configs/ablation.py) differ from configs/dfl.py exactly where the paper's
rows differ: in the resolved configs and in the module trees."""

import flax.traverse_util
import pytest

from configs import ablation, dfl
from dfl_jax.tools import summary


def _flat_config(config):
  return flax.traverse_util.flatten_dict(config.to_dict(), sep=".")


def _param_shapes(config):
  params = summary.param_shapes(config)["params"]
  return {k: tuple(v.shape) for k, v in
          flax.traverse_util.flatten_dict(params, sep="/").items()}


@pytest.mark.parametrize("name", sorted(ablation.ABLATIONS))
def test_each_variant_changes_only_its_rows_fields(name):
  paper, variant = _flat_config(dfl.get_config()), _flat_config(ablation.get_config(name))
  assert paper.keys() == variant.keys()
  changed = {k for k in paper if paper[k] != variant[k]}
  named = {f"model.{k}" for k, v in ablation.ABLATIONS[name].items()
           if v != paper[f"model.{k}"]}  # table3_iter3 names the paper's own T = 3
  assert changed == named, changed
  assert named or name == "table3_iter3"


# Table 1 as the paper's rows read (Sec. 4.3.1), written out here rather than taken from
# configs/ablation.py: what each id changes in configs/dfl.py.
TABLE1_ROWS = {
    "table1_id1": {"model.decoder": "pooled"},
    "table1_id2": {"model.ji_relation": "coupled", "model.use_jj": False, "model.use_spr": False},
    "table1_id3": {"model.ji_relation": "coupled", "model.jj_relation": "coupled",
                   "model.use_spr": False},
    "table1_id4": {"model.ji_relation": "coupled", "model.jj_relation": "coupled"},
}


@pytest.mark.parametrize("name", sorted(TABLE1_ROWS))
def test_table1_rows_are_the_papers(name):
  paper, variant = _flat_config(dfl.get_config()), _flat_config(ablation.get_config(name))
  assert {k: variant[k] for k in paper if paper[k] != variant[k]} == TABLE1_ROWS[name]


def _modules(shapes, depth=2):
  return {"/".join(k.split("/")[:depth]) for k in shapes}


@pytest.fixture(scope="module")
def paper_shapes():
  return _param_shapes(dfl.get_config())


def test_table1_id4_is_dfl_with_coupled_attention(paper_shapes):
  """Id 4 has DFL's modules and every parameter of DFL with its shape; it adds only the J-J
  appearance query/key projections that DFL's position-only J-J has no use for."""
  shapes = _param_shapes(ablation.get_config("table1_id4"))
  assert _modules(shapes) == _modules(paper_shapes)
  assert all(shapes[k] == v for k, v in paper_shapes.items())
  extra = {k for k in shapes if k not in paper_shapes}
  assert extra and all(k.split("/")[1].startswith("jj") and k.split("/")[2] in
                       ("query_a", "key_a") for k in extra), sorted(extra)


@pytest.mark.parametrize("name, dropped", [
    ("table1_id3", ("spr",)),
    ("table1_id2", ("spr", "jj")),
])
def test_table1_ids_2_and_3_drop_only_their_stages(paper_shapes, name, dropped):
  id4 = _param_shapes(ablation.get_config("table1_id4"))
  shapes = _param_shapes(ablation.get_config(name))
  kept = {k: v for k, v in id4.items()
          if not (k.startswith("decoder/") and k.split("/")[1].startswith(dropped))}
  assert shapes == kept
  assert len(kept) < len(id4)
  # The shared parts (encoder, initialisation, J-I, heads) are DFL's, shape for shape.
  for k, v in shapes.items():
    if not k.split("/")[1].startswith("jj"):
      assert paper_shapes[k] == v, k


def test_table1_id1_has_no_decoder_stages(paper_shapes):
  shapes = _param_shapes(ablation.get_config("table1_id1"))
  assert {k for k in shapes if not k.startswith("decoder/")} == {
      k for k in paper_shapes if not k.startswith("decoder/")}
  assert _modules(shapes) - _modules(paper_shapes) == {"decoder/hidden"}
