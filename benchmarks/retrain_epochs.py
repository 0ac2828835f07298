"""Does the retrain protocol hide differences? Re-judge distilled sets with other numbers of epochs.

    python benchmarks/retrain_epochs.py --comparison runs/demo --budget 100 --epochs 10 30

Loads the synthetic sets that `amd-compare` left in `<comparison>/comparison/distill/<method>_B<budget>_s0`
(plus any `--extra NAME=DIR`) and a random coreset of the same size (seed 0), and evaluates each with
`eval.epochs` set to each given value (2 models per set, the demo preset's protocol otherwise).
"""
import argparse, warnings
warnings.filterwarnings('ignore')

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--comparison', default='runs/demo'); ap.add_argument('--budget', type=int, default=100)
    ap.add_argument('--epochs', type=int, nargs='+', default=[10, 30]); ap.add_argument('--methods', nargs='+', default=['mtt_vl', 'lors', 'amd'])
    ap.add_argument('--preset', default='demo'); ap.add_argument('--n-eval', type=int, default=2)
    ap.add_argument('--extra', nargs='*', default=[], metavar='NAME=DIR', help='more synthetic sets to judge (folders written by SyntheticSet.save)')
    a = ap.parse_args()
    from pathlib import Path
    from amd_nb.config import get_preset
    from amd_nb.experts import TrajectoryStore
    from amd_nb.data import load_split
    from amd_nb.synthetic import SyntheticSet
    from amd_nb.io import RunLayout
    from amd_nb.evaluate import evaluate_set, coreset_of, synthetic_set, _eval_cfg
    root = Path(a.comparison); store = TrajectoryStore(root/'experts'); sc = store.config
    train, test = (load_split(sc.data, s, progress=False, seed=sc.seed) for s in ('train', 'test'))
    sets = [coreset_of('random', train, a.budget, seed=0)[0]]
    sets += [synthetic_set(SyntheticSet.load(RunLayout(root).cell_run(m, a.budget, 0)/'synthetic'), m) for m in a.methods]
    sets += [synthetic_set(SyntheticSet.load(d), n) for n, d in (e.split('=', 1) for e in a.extra)]
    print(f"B={a.budget}, set 0 of each method, {a.n_eval} models per set, test split; mean over models")
    print('| epochs | set | IR@10 | TR@10 | r_mean |'); print('|---|---|---|---|---|')
    for ep in a.epochs:
        cfg = _eval_cfg(get_preset(a.preset).override({'eval.epochs': ep, 'eval.n_eval': a.n_eval}), store)
        for ts in sets:
            r = evaluate_set(ts, cfg, test, progress=False)['mean']
            print(f"| {ep} | {ts.name} | {r['IR@10']:.1f} | {r['TR@10']:.1f} | {r['r_mean']:.1f} |", flush=True)

if __name__ == '__main__': main()
