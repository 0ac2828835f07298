"""Retrain on distilled sets with InfoNCE and identity targets instead of their learned similarity targets.

    python benchmarks/eval_without_targets.py --out runs/demo lors amd

For each method and seed of a finished comparison (`amd-compare ... --out OUT`, sets in
`OUT/comparison/distill/<method>_B<budget>_s<k>/synthetic`), trains the preset's `eval.n_eval` fresh models on
the set's pixels, texts and learned inner lrs, but with InfoNCE against identity targets, and prints
IR@10 / TR@10 / r_mean (mean ± std over the models). Compare with the same sets' rows in
`OUT/comparison/comparison.md`, which use the learned targets and weighted BCE.
"""
import argparse, dataclasses
from pathlib import Path
from amd_nb.config import get_preset
from amd_nb.experts import TrajectoryStore
from amd_nb.io import RunLayout
from amd_nb.data import load_split
from amd_nb.synthetic import SyntheticSet
from amd_nb.evaluate import synthetic_set, evaluate_set, _eval_cfg, format_result

p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
p.add_argument('methods', nargs='+')
p.add_argument('--out', default='runs/demo')
p.add_argument('--preset', default='demo')
p.add_argument('--budget', type=int, default=100)
p.add_argument('--sets', type=int, default=2)
a = p.parse_args()
cfg, out = get_preset(a.preset), Path(a.out)
store = TrajectoryStore(out/'experts')
test = load_split(store.config.data, 'test', progress=False, seed=store.config.seed)
for m in a.methods:
    for k in range(a.sets):
        d = RunLayout(out).cell_run(m, a.budget, k)/'synthetic'
        ts = dataclasses.replace(synthetic_set(SyntheticSet.load(d), m), targets=None, loss='infonce', name=f"{m} set {k}, InfoNCE")
        print(format_result(evaluate_set(ts, _eval_cfg(cfg, store), test, progress=False), ('IR@10', 'TR@10', 'r_mean')), flush=True)
