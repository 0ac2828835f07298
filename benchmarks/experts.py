"""Expert training on a preset: wall time, file size per expert, load time, and full-data retrieval.

    python benchmarks/experts.py --preset demo --out runs/bench-experts [--set key=value ...]

Prints one table. The test-split recall of each expert's last epoch is the full-data sanity
check (no selection: the last epoch is taken as it is); chance level is K / #test images.
"""
import argparse, json, os, shutil, statistics as st, time
from pathlib import Path
import torch
from amd_nb.config import get_preset
from amd_nb.data import load_split
from amd_nb.experts import TrajectoryStore, train_experts, expert_model, expert_file
from amd_nb.train import evaluate_retrieval

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--preset', default='demo'); ap.add_argument('--out', default='runs/bench-experts')
    ap.add_argument('--set', action='append', default=[], dest='overrides')
    ap.add_argument('--fresh', action='store_true', help='delete --out first so every expert is trained')
    a = ap.parse_args()
    cfg = get_preset(a.preset).override(a.overrides)
    out = Path(a.out)/'experts'
    if a.fresh and out.exists(): shutil.rmtree(out)
    t0 = time.time(); train, val, test = (load_split(cfg.data, s, progress=False, seed=cfg.seed) for s in ('train', 'val', 'test'))
    t_data = time.time() - t0
    t0 = time.time(); store = train_experts(cfg, out, train, val, progress=False); t_train = time.time() - t0
    secs = [store.metrics(i)['seconds'] for i in store.finished()]
    sizes = [(out/expert_file(i)).stat().st_size for i in store.finished()]
    loads = []
    for _ in range(5):
        t0 = time.perf_counter(); tr = store[0]; loads.append(time.perf_counter() - t0)
    t0 = time.perf_counter(); store.epoch(0, 'image', store.epochs); t_row = time.perf_counter() - t0
    rec = [evaluate_retrieval(expert_model(store, i), test) for i in store.finished()]
    keys = ['TR@1', 'TR@5', 'TR@10', 'IR@1', 'IR@5', 'IR@10', 'r_mean']
    print(f"preset {a.preset}: {len(store)} experts × {store.epochs} epochs, {len(train)} train images, "
          f"params image {store.layouts['image'].numel:,} text {store.layouts['text'].numel:,}, dtype {store.manifest['dtype']}, seed {cfg.seed}")
    print(f"data load + embed: {t_data:.1f} s;  training this call: {t_train:.1f} s;  per expert (recorded): {st.mean(secs):.1f} ± {st.pstdev(secs):.1f} s")
    print(f"file per expert: {st.mean(sizes)/2**20:.2f} MiB;  load one expert: {1e3*st.median(loads):.1f} ms;  one epoch row: {1e3*t_row:.1f} ms")
    print(f"test split ({len(test)} images, {len(test.text)} captions); chance R@1/5/10 ≈ {100/len(test):.2f}/{500/len(test):.2f}/{1000/len(test):.2f}")
    print('| expert | ' + ' | '.join(keys) + ' |'); print('|---' * (len(keys) + 1) + '|')
    for i, r in zip(store.finished(), rec): print(f"| {i} | " + ' | '.join(f"{r[k]:.1f}" for k in keys) + ' |')
    print('| mean | ' + ' | '.join(f"{st.mean(r[k] for r in rec):.1f}" for k in keys) + ' |')

if __name__ == '__main__': main()
