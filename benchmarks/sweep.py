"""Choose distillation settings on the validation split: a grid of `--set` values, each distilled and judged on val.

    python benchmarks/sweep.py --experts runs/demo/experts --method mtt_vl \
        --grid distill.lr_image=1,10,100 --grid distill.lr_text=0.1,1 [--set KEY=VALUE ...] [--out runs/sweep]

Every combination of the grid values is distilled from the same experts (seed 0 unless --set seed=K)
into `<out>/<method>/<combination>/` and judged by the evaluation protocol on the **val** split
(`eval.split=val`: the test split is never looked at). Finished combinations are read back, so an
interrupted sweep resumes. Prints one row per combination: val r_mean ± std over the retrained
models, the matching loss and the student–expert cosines over the last 10% of iterations, the
learned η, and how far the set left its spaces (pixel std, mean text norm).
"""
import argparse, itertools, json, os, re, time, warnings
from pathlib import Path
warnings.filterwarnings('ignore')

def combos(grid:list[str])->list[dict]:
    keys, values = [], []
    for g in grid:
        k, _, v = g.partition('='); keys.append(k.strip()); values.append([x.strip() for x in v.split(',') if x.strip()])
    return [dict(zip(keys, vs)) for vs in itertools.product(*values)]

def name(c:dict)->str: return re.sub(r'[^A-Za-z0-9.=_-]+', '_', ','.join(f"{k.split('.')[-1]}={v}" for k, v in c.items())) or 'default'

def tail(log:list[dict], key:str)->float:
    rs = [r[key] for r in log[-max(1, len(log) // 10):] if r.get('ok', True) and key in r]
    return sum(rs) / max(1, len(rs))

def run_one(cfg, store, train, val, out:Path, progress:bool)->dict:
    from amd_nb.distill import distill
    from amd_nb.evaluate import synthetic_set, evaluate_set, _eval_cfg
    t0 = time.time(); syn = distill(cfg, store, out, train, progress=progress)
    log = [json.loads(l) for l in (out/'log.jsonl').read_text().splitlines() if l.strip()]
    res = evaluate_set(synthetic_set(syn), _eval_cfg(cfg, store), val, progress=False)
    return dict(val=res['mean'], val_std=res['std'], seconds=round(time.time() - t0, 1),
                loss=tail(log, 'loss'), cos_image=tail(log, 'cos_image'), cos_text=tail(log, 'cos_text'),
                eta=[syn.lr_image.item(), syn.lr_text.item()], pixel_std=float(syn.images.detach().std()),
                text_norm=float(syn.text.detach().norm(dim=1).mean()), offdiag=log[-1].get('sim_offdiag'))

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--experts', default='runs/demo/experts'); ap.add_argument('--preset', default='demo')
    ap.add_argument('--method', default='mtt_vl'); ap.add_argument('--out', default='runs/sweep')
    ap.add_argument('--grid', action='append', default=[], metavar='KEY=V1,V2,...')
    ap.add_argument('--set', dest='overrides', action='append', default=[], metavar='KEY=VALUE')
    ap.add_argument('--quiet', action='store_true')
    a = ap.parse_args()
    from amd_nb.config import get_preset
    from amd_nb.experts import TrajectoryStore
    from amd_nb.io import atomic_write_json
    from amd_nb.data import load_split
    store = TrajectoryStore(a.experts)
    train, val = (load_split(store.config.data, s, progress=False, seed=store.config.seed) for s in ('train', 'val'))
    base = get_preset(a.preset).override(a.overrides + [f'distill.method={a.method}', 'eval.split=val'])
    print(f"method {a.method}, preset {a.preset} {' '.join(a.overrides)}; experts {a.experts}; judged on val ({len(val)} images), "
          f"{base.eval.n_eval} models each; seed {base.seed}")
    print('| setting | val r_mean | val IR@10 | val TR@10 | loss (last 10%) | cos img/txt | η_V/η_L | pixel std | text norm | |S| off | s |')
    print('|---|---|---|---|---|---|---|---|---|---|---|')
    for c in combos(a.grid):
        out = Path(a.out)/a.method.replace('+', '_')/name(c); f = out/'sweep.json'
        if f.exists(): r = json.loads(f.read_text())
        else:
            r = run_one(base.override(c), store, train, val, out, not a.quiet); atomic_write_json(f, r)
        print(f"| {name(c)} | {r['val']['r_mean']:.2f} ± {r['val_std']['r_mean']:.2f} | {r['val']['IR@10']:.1f} | {r['val']['TR@10']:.1f} | "
              f"{r['loss']:.3f} | {r['cos_image']:.2f}/{r['cos_text']:.2f} | {r['eta'][0]:.3g}/{r['eta'][1]:.3g} | {r['pixel_std']:.2f} | "
              f"{r['text_norm']:.2f} | {r['offdiag'] if r['offdiag'] is not None else '–'} | {r['seconds']} |", flush=True)

if __name__ == '__main__': main()
