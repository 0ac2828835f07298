"""Modality collapse of a comparison's sets in one shared reference space: the experts' own last-epoch models.

    python benchmarks/collapse.py --run runs/cmp [--methods random spm lors amd repblend amd+repblend] [--budget 100] [--sets 3] [--experts 0 1 2]

The comparison's `collapse` columns measure each set in the models retrained on it, and a contrastive model spreads
the few pairs it trained on: there every distilled set of 100 pairs shows a mean pairwise cosine near −1/(B−1), the
floor. RepBlend's diagnosis of collapse (arXiv 2505.14705, Fig. 1) embeds distilled sets with a model trained on real
data instead. This does the same with the run's experts at their last epoch (trained on the whole train split): per
set, the mean pairwise cosine of its images' and of its texts' embeddings, and the modality gap (distance between
the two centroids), averaged over the chosen experts and over the sets (± std over sets); `real test` is B random test
pairs, the spread of real data in the same space. Forward passes only: a minute on a CPU.
"""
import argparse, statistics as st, warnings
from pathlib import Path
warnings.filterwarnings('ignore')

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--run', required=True); ap.add_argument('--methods', nargs='+', default=['random', 'spm', 'lors', 'amd', 'repblend', 'amd+repblend'])
    ap.add_argument('--budget', type=int, default=100); ap.add_argument('--sets', type=int, default=3)
    ap.add_argument('--experts', type=int, nargs='+', default=[0, 1, 2])
    a = ap.parse_args()
    import torch
    from amd_nb.experts import TrajectoryStore, expert_model
    from amd_nb.data import load_split
    from amd_nb.evaluate import collapse_stats, synthetic_set, coreset_of, coreset, CORESETS
    from amd_nb.synthetic import SyntheticSet
    from amd_nb.io import RunLayout
    from amd_nb.spm import expert_embeddings
    torch.set_num_threads(1)
    run = Path(a.run); store = TrajectoryStore(run/'experts'); cfg = store.config
    train = load_split(cfg.data, 'train', progress=False, seed=cfg.seed); test = load_split(cfg.data, 'test', progress=False, seed=cfg.seed)
    layout, models, emb = RunLayout(run), [expert_model(store, i) for i in a.experts], None
    def sets(m):
        nonlocal emb
        for k in range(a.sets):
            if m == 'real test':
                ix = torch.randperm(len(test), generator=torch.Generator().manual_seed(k))[:a.budget]
                yield coreset(test, ix, torch.searchsorted(test.caption_image, ix), m)   # each image with its first caption
            elif m in CORESETS:
                if emb is None and m != 'random': emb = expert_embeddings(store, train)
                yield coreset_of(m, train, a.budget, cfg.seed + k, None if m == 'random' else emb)[0]
            else:
                d = layout.cell_run(m, a.budget, k)/'synthetic'
                if not d.exists(): print(f"{m}: no set {k} in {d.parent}"); continue
                yield synthetic_set(SyntheticSet.load(d), m)
    print(f"modality collapse in the experts' last-epoch spaces (experts {a.experts}), {run}, B = {a.budget}, mean ± std over sets")
    print('| set | images: mean pairwise cos | texts: mean pairwise cos | modality gap |'); print('|---|---|---|---|')
    for m in ['real test', *a.methods]:
        per = [{k: st.mean(collapse_stats(mod, ts)[k] for mod in models) for k in ('image_cos', 'text_cos', 'gap')} for ts in sets(m)]
        if not per: continue
        f = lambda k: f"{st.mean(p[k] for p in per):.3f} ± {(st.stdev(p[k] for p in per) if len(per) > 1 else 0):.3f}"
        print(f"| {m} | {f('image_cos')} | {f('text_cos')} | {f('gap')} |", flush=True)

if __name__ == '__main__': main()
