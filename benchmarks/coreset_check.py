"""Is the random coreset's score what its real pairs can give? A check to run before reading any comparison.

    python benchmarks/coreset_check.py --experts runs/demo/experts [--budget 100] [--sets 3] [--split test]

1. Pairing, checked from the tensors that training receives (not from the indices that built them): for every
   pair of `random@B`, its image tensor is found among the split's images and its text row among the split's
   caption embeddings, and the caption's *string* must be one of that image's captions in the raw data.
2. Scores under the comparison's retrain protocol (same eval settings and model seeds as `amd-compare`), r_mean
   mean ± std over sets × models:
   - `random@B` as the comparison builds it (B images, one own caption each);
   - the same B images with their captions shuffled among them (what a pairing bug gives: near chance);
   - the same B images with *all* their captions (≈ 4.8 B rows: the convention the comparison does not use);
   - random coresets of 2B, 4B and 8B pairs, and the full split: the learning curve the B row sits on.
"""
import argparse, math, os, statistics, warnings
warnings.filterwarnings('ignore')

def pairing_errors(ts, train)->tuple[int, list]:
    "Pairs of `ts` whose caption string is not one of its image's raw captions; and a few pairs to look at."
    import torch
    flat = [c for caps in train.pairs.captions for c in caps]
    bad, shown = 0, []
    for i in range(len(ts)):
        imgs = (train.images == ts.images[i]).flatten(1).all(1).nonzero().flatten().tolist()
        rows = (train.text == ts.text[i]).all(1).nonzero().flatten().tolist()
        caption = flat[rows[0]] if rows else None
        ok = bool(imgs) and caption is not None and any(caption in train.pairs.captions[j] for j in imgs)
        bad += not ok
        if len(shown) < 5: shown.append((imgs[:1], caption, train.pairs.captions[imgs[0]] if imgs else None))
    return bad, shown

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--experts', required=True)
    ap.add_argument('--preset', default='demo')
    ap.add_argument('--budget', type=int, default=100)
    ap.add_argument('--sets', type=int, default=3)
    ap.add_argument('--split', default='test', choices=['test', 'val'])
    a = ap.parse_args()
    import torch
    from amd_nb.config import get_preset, set_threads
    from amd_nb.data import load_split
    from amd_nb.experts import TrajectoryStore
    from amd_nb.evaluate import TrainingSet, coreset_of, evaluate_set, real_set, _eval_cfg
    set_threads()
    store = TrajectoryStore(a.experts)
    cfg = get_preset(a.preset).override({'eval.split': a.split})
    data, seed = store.data_config(cfg.data.cache_dir), store.config.seed
    train, judge, val = (load_split(data, s, progress=False, seed=seed) for s in ('train', a.split, 'val'))
    ecfg = _eval_cfg(cfg, store)
    def score(sets)->str:
        r = [run['r_mean'] for ts in sets for run in evaluate_set(ts, ecfg, judge, val, progress=False, min_steps=ecfg.eval.epochs * math.ceil(B / ecfg.eval.batch_size))['runs']]
        return f"{statistics.fmean(r):5.1f} ± {statistics.pstdev(r):.1f}  ({len(r)} models)"

    B, k = a.budget, range(a.sets)
    paired = [coreset_of('random', train, B, cfg.seed + s)[0] for s in k]
    print(f"experts {a.experts}; {len(train)} train images, {len(train.text)} captions; judged on {a.split} ({len(judge)} images)")
    for s, ts in zip(k, paired):
        bad, shown = pairing_errors(ts, train)
        print(f"random@{B} set {s}: {len(ts)} pairs, {bad} whose caption is not one of its image's captions")
    for img, cap, own in shown: print(f"   image {img}: {cap!r}  (its captions: {own})")

    def shuffled(ts, s):
        g = torch.Generator().manual_seed(1000 + s)
        return TrainingSet(f'{ts.name}-shuffled', ts.images, ts.text[torch.randperm(len(ts), generator=g)])
    def every_caption(ts):
        imgs = [(train.images == x).flatten(1).all(1).nonzero()[0, 0].item() for x in ts.images]
        rows = [r for r in range(len(train.text)) if int(train.caption_image[r]) in set(imgs)]
        where = {j: i for i, j in enumerate(imgs)}
        return TrainingSet(f'{ts.name}-all', ts.images, train.text[rows], torch.tensor([where[int(train.caption_image[r])] for r in rows]))
    print(f"\n| training set | rows | r_mean on {a.split} |\n|---|---|---|")
    print(f"| random@{B}, one own caption per image (as compared) | {B} | {score(paired)} |")
    print(f"| the same, captions shuffled among the {B} images | {B} | {score([shuffled(ts, s) for s, ts in zip(k, paired)])} |")
    allc = [every_caption(ts) for ts in paired]
    print(f"| the same {B} images with all their captions | {statistics.fmean(len(t) for t in allc):.0f} | {score(allc)} |")
    for m in (2, 4, 8):
        if m * B <= len(train): print(f"| random@{m * B} | {m * B} | {score([coreset_of('random', train, m * B, cfg.seed + s)[0] for s in k])} |")
    print(f"| full split (until val r_mean stops improving) | {len(train.text)} | {score([real_set(train)])} |")

if __name__ == '__main__': main()
