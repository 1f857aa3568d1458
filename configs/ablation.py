"""The paper's ablations as named variants of configs/dfl.py (or of configs/tiny.py).

    python main.py --config=configs/ablation.py:table1_id3 --workdir=...
    python main.py --config=configs/ablation.py:table3_iter5,tiny --workdir=...

Table 1 (decoder baselines without decoupling), Table 2 (which features each stage uses),
Table 3 (number of iterations) and supplement Table 1 (multi-scale, part segmentation). Each
variant is configs/dfl.py with exactly the fields below changed (tests/test_ablation.py checks
the resolved configs and the module trees).

Table 1, row by row (the paper's baselines "do not employ the feature decoupling strategy in
the decoder", Sec. 4.3.1; dfl_jax/network/decoder.py):

- id 1: ``decoder='pooled'``: the 2.5D joints regressed from average-pooled encoder features;
  no queries, no attention, no intermediate loss (Eq. 11's L_2D has nothing to supervise).
- id 2: learnable queries and J-I cross-attention only: ``use_jj=False``, ``use_spr=False``, and
  J-I coupled (``ji_relation='coupled'``: the position added to the queries and keys after their
  projections, as DETR does, instead of DFL's per-type relationships summed).
- id 3: id 2 plus J-J, also coupled (``jj_relation='coupled'``).
- id 4: id 3 plus SPR: DFL with coupled J-J and J-I, nothing else changed.

Ids 2-4 keep DFL's initialisation stage (Eq. 1-2), scale schedule, iterations, value streams,
heads (on J^p) and losses, and the same parameters (id 4 has exactly DFL's count plus the J-J
appearance query and key projections that 'position' J-J does not use).
"""

from configs import default, tiny

ABLATIONS = {
    # Table 1: ids 1-4, no decoupling (see the module doc).
    "table1_id1": dict(decoder="pooled"),
    "table1_id2": dict(ji_relation="coupled", use_jj=False, use_spr=False),
    "table1_id3": dict(ji_relation="coupled", jj_relation="coupled", use_spr=False),
    "table1_id4": dict(ji_relation="coupled", jj_relation="coupled"),
    # Table 2: DFL ("best model") with one stage using other features.
    "table2_init_position": dict(init_relation="position"),
    "table2_init_both": dict(init_relation="both"),
    "table2_ji_appearance": dict(ji_relation="appearance"),
    "table2_ji_position": dict(ji_relation="position"),
    "table2_jj_appearance": dict(jj_relation="appearance"),
    "table2_jj_both": dict(jj_relation="both"),
    "table2_regression_appearance": dict(regression_features="appearance"),
    "table2_regression_both": dict(regression_features="both"),
    # Table 3: iterations (T = N - 1 for 2; scales cycle for 4 and 5).
    "table3_iter2": dict(num_iterations=2, num_scales=3),
    "table3_iter3": dict(num_iterations=3),
    "table3_iter4": dict(num_iterations=4),
    "table3_iter5": dict(num_iterations=5),
    # Supplement Table 1.
    "supp_no_multiscale": dict(multi_scale=False),
    "supp_no_segmentation": dict(part_segmentation=False),
    "supp_no_both": dict(multi_scale=False, part_segmentation=False),
}


def get_config(arg: str = "table1_id4"):
  name, _, base = arg.partition(",")
  if name not in ABLATIONS:
    raise ValueError(f"unknown ablation {name!r}; choose from {sorted(ABLATIONS)}")
  config = (tiny if base == "tiny" else default).get_config()
  config.model.update(ABLATIONS[name])
  return config
