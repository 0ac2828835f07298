"""Cost of Semantics-aware Prototype Mining (K-means included) and of the coreset baselines.

    python benchmarks/spm.py [--experts /tmp/demo/experts] [--n 150000] [--k 1000] [--quick]

Prints one table. Rows:
- `large`: SPM on N random pairs (joint features of two seeded Gaussian [N, 512] blocks) with K
  prototypes (MiniBatchKMeans with the defaults of `amd_nb.spm.MINIBATCH_KMEANS`): the timing target;
- `clustered` (unless --quick): the same size, but the pairs are noisy copies of K random
  "concept" pairs with Zipf-like frequencies (1/rank), so that a clustering can be judged (on
  structureless random pairs every clustering has the same inertia): the inertia of the true
  partition is the reference, "hit" counts the concepts that got a prototype; random picks, the
  defaults, scikit-learn's reassignment ratio (0.01) and a fuller setting (20 epochs without
  early stopping, k-means++ on 3 batches) for comparison;
- `demo`: the emoji training split (K=100), features from the first expert of --experts
  (else random features of the same size), for SPM and the three baselines (median of 3 runs).
Set AMD_NB_CACHE to reuse cached caption embeddings.
"""
import argparse, statistics as st, time
import torch
from amd_nb.spm import joint_features, spm, select, expert_features, MINIBATCH_KMEANS

def random_pairs(n:int, d:int=512, seed:int=0)->torch.Tensor:
    "Joint features of two seeded Gaussian [n, d] blocks."
    g = torch.Generator().manual_seed(seed)
    return joint_features(torch.randn(n, d, generator=g), torch.randn(n, d, generator=g))

def clustered_pairs(n:int, k:int, d:int=512, noise:float=1.0, seed:int=0)->tuple[torch.Tensor, torch.Tensor]:
    "Joint features of noisy copies of k random concept pairs (frequency ∝ 1/rank) and each pair's concept."
    g = torch.Generator().manual_seed(seed)
    cv, cl = torch.randn(k, d, generator=g), torch.randn(k, d, generator=g)
    concept = torch.multinomial(1 / torch.arange(1., k + 1), n, replacement=True, generator=g)
    x = joint_features(cv[concept] + noise * torch.randn(n, d, generator=g), cl[concept] + noise * torch.randn(n, d, generator=g))
    return x, concept

def partition_inertia(x:torch.Tensor, labels:torch.Tensor, k:int)->float:
    "Sum of squared distances of the points to the mean of their true cluster."
    mean = torch.zeros(k, x.shape[1]).index_add_(0, labels, x) / torch.bincount(labels, minlength=k).clamp(min=1)[:, None]
    return float(sum(((x[i:i+8192] - mean[labels[i:i+8192]])**2).sum() for i in range(0, len(x), 8192)))

def demo_features(experts:str|None, seed:int=0)->tuple[torch.Tensor, str]:
    "Features of the emoji train split under the first demo expert, or random ones of the demo size."
    if experts:
        from amd_nb.data import load_split
        from amd_nb.experts import TrajectoryStore
        store = TrajectoryStore(experts)
        train = load_split(store.config.data, 'train', progress=False)
        return expert_features(store, train), f"expert {store.finished()[0]} of {experts}, last epoch"
    from amd_nb.config import get_preset
    return random_pairs(1461, get_preset('demo').model.embed_dim, seed), 'random (demo size)'

def fmt_params(p:dict)->str: return ', '.join(f"{k}={v}" for k, v in sorted(p.items()))

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--experts', default=None, help='trajectory store for the demo-size features')
    ap.add_argument('--n', type=int, default=150_000); ap.add_argument('--k', type=int, default=1000)
    ap.add_argument('--demo-k', type=int, default=100); ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--quick', action='store_true', help='only the default setting on random pairs and the demo rows')
    a = ap.parse_args()
    others = [dict(reassignment_ratio=0.01), dict(max_iter=20, max_no_improvement=None, init_size=3 * MINIBATCH_KMEANS['batch_size'])]
    rows = []
    def row(size, feats, sel, quality='', hit=''):
        i = sel.info
        q = i.get('inertia', i.get('radius', i.get('mean_gap', '')))
        steps = f"{i['n_iter']} / {i['n_steps']}" if 'n_iter' in i else ''
        rows.append((size, feats, sel.method, len(sel), sel.seconds, i.get('kmeans', ''), steps, q, quality, hit, fmt_params(i.get('params', {}))))
    x = random_pairs(a.n, seed=a.seed)
    what = f"random {a.n:,}×{x.shape[1]}"
    row('large', what, spm(x, a.k, seed=a.seed))
    if not a.quick:
        x, concept = clustered_pairs(a.n, a.k, seed=a.seed)
        what, ref = f"{a.k} concepts {a.n:,}×{x.shape[1]}", f"true partition {partition_inertia(x, concept, a.k):,.4g}"
        hit = lambda s: f"{len(set(concept[s.indices].tolist()))} of {len(set(concept.tolist()))}"
        r = select('random', x, a.k, seed=a.seed); row('clustered', what, r, hit=hit(r))
        for kw in ({}, *others):
            s = spm(x, a.k, seed=a.seed, **kw); row('clustered', what, s, ref, hit(s))
    del x
    y, src = demo_features(a.experts, a.seed)
    for name in ('spm', 'herding', 'kcenter', 'random'):
        runs = [select(name, y, a.demo_k, seed=a.seed) for _ in range(3)]
        runs[0].seconds = st.median(s.seconds for s in runs)
        row('demo', f"{src} {len(y):,}×{y.shape[1]}", runs[0])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; seed {a.seed} for data and selectors; demo times: median of 3")
    print('| size | features | method | K | seconds | k-means | epochs / steps | inertia / radius / mean gap | reference | hit | settings |')
    print('|---|---|---|---|---|---|---|---|---|---|---|')
    for size, feats, m, k, sec, km, steps, q, ref, hit, p in rows:
        q = f"{q:,.4g}" if isinstance(q, float) else q
        print(f"| {size} | {feats} | {m} | {k} | {sec:.3g} | {km} | {steps} | {q} | {ref} | {hit} | {p} |")

if __name__ == '__main__': main()
