"""Choose distillation settings on the validation split: a grid of `--set` values, each distilled and judged on val.

    python benchmarks/sweep.py --experts runs/demo/experts --method mtt_vl \
        --grid distill.lr_image=1,10,100 --grid distill.lr_text=0.1,1 [--set KEY=VALUE ...] [--sets 2] [--out runs/sweep]

Every combination of the grid values is distilled from the same experts (`--sets` sets, seeds seed..seed+sets−1)
into `<out>/<method>/<combination>[/s<k>]/` and judged by the evaluation protocol on the **val** split
(`eval.split=val`: the test split is never looked at). Finished combinations are read back, so an
interrupted sweep resumes. Prints one row per combination: val r_mean ± std over the retrained
models of all its sets, the matching loss and the student–expert cosines over the last 10% of iterations, the
learned η, how far the set left its spaces (pixel std, mean text norm), and the step cosines (image / text) by
start epoch over the second half of the run (`t:cos_V/cos_L`, sync runs; async runs give each modality's by its own t).
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

def by_start(log:list[dict])->dict:
    "Mean step cosine per modality by its start epoch, over the second half of the run."
    out = {}
    for m in ('image', 'text'):
        rs = [r for r in log[len(log) // 2:] if r.get('ok', True)]
        for t in sorted({r[f't_{m}'] for r in rs}):
            v = [r[f'cos_{m}'] for r in rs if r[f't_{m}'] == t]
            out.setdefault(str(t), {})[m] = round(sum(v) / len(v), 3)
    return out

def run_one(cfg, store, train, val, out:Path, progress:bool)->dict:
    from amd_nb.distill import distill
    from amd_nb.evaluate import synthetic_set, evaluate_set, _eval_cfg
    t0 = time.time(); syn = distill(cfg, store, out, train, progress=progress)
    log = [json.loads(l) for l in (out/'log.jsonl').read_text().splitlines() if l.strip()]
    res = evaluate_set(synthetic_set(syn), _eval_cfg(cfg, store), val, progress=False)
    return dict(val=res['mean'], val_std=res['std'], runs=[r['r_mean'] for r in res['runs']], seconds=round(time.time() - t0, 1),
                loss=tail(log, 'loss'), cos_image=tail(log, 'cos_image'), cos_text=tail(log, 'cos_text'), cos_by_start=by_start(log),
                eta=[syn.lr_image.item(), syn.lr_text.item()], pixel_std=float(syn.images.detach().std()),
                text_norm=float(syn.text.detach().norm(dim=1).mean()), offdiag=log[-1].get('sim_offdiag'))

def merged(rs:list[dict])->dict:
    "One row from the results of several sets: r_mean over all their models, the other columns averaged."
    import statistics
    runs = [v for r in rs for v in r['runs']]
    avg = lambda k: sum(r[k] for r in rs) / len(rs)
    cos = {}
    for r in rs:
        for t, d in r['cos_by_start'].items():
            for m, v in d.items(): cos.setdefault(t, {}).setdefault(m, []).append(v)
    return dict(r_mean=statistics.fmean(runs), r_std=statistics.pstdev(runs) if len(runs) > 1 else 0.,
                IR10=avg_key(rs, 'IR@10'), TR10=avg_key(rs, 'TR@10'), loss=avg('loss'), cos_image=avg('cos_image'), cos_text=avg('cos_text'),
                eta=[sum(r['eta'][j] for r in rs) / len(rs) for j in (0, 1)], pixel_std=avg('pixel_std'), text_norm=avg('text_norm'),
                offdiag=rs[-1]['offdiag'], seconds=sum(r['seconds'] for r in rs),
                cos_by_start={t: {m: round(sum(v) / len(v), 2) for m, v in d.items()} for t, d in cos.items()}, models=len(runs))

def avg_key(rs, k): return sum(r['val'][k] for r in rs) / len(rs)

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--experts', default='runs/demo/experts'); ap.add_argument('--preset', default='demo')
    ap.add_argument('--method', default='mtt_vl'); ap.add_argument('--out', default='runs/sweep')
    ap.add_argument('--grid', action='append', default=[], metavar='KEY=V1,V2,...')
    ap.add_argument('--set', dest='overrides', action='append', default=[], metavar='KEY=VALUE')
    ap.add_argument('--sets', type=int, default=1, help='distilled sets per combination (seeds seed, seed+1, ...)')
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
    print('| setting | val r_mean | models | val IR@10 | val TR@10 | loss (last 10%) | cos img/txt | cos by start t (img/txt) | η_V/η_L | pixel std | text norm | |S| off | s |')
    print('|---|---|---|---|---|---|---|---|---|---|---|---|---|')
    for c in combos(a.grid):
        rs = []
        for k in range(a.sets):
            out = Path(a.out)/a.method.replace('+', '_')/name(c)
            if a.sets > 1 or k: out = out/f"s{k}"
            f = out/'sweep.json'
            if f.exists(): rs.append(json.loads(f.read_text())); continue
            cfg = base.override(c); cfg = cfg.override({'seed': cfg.seed + k})
            r = run_one(cfg, store, train, val, out, not a.quiet); atomic_write_json(f, r); rs.append(r)
        r = merged(rs)
        cos = ' '.join(f"{t}:{d.get('image', '–')}/{d.get('text', '–')}" for t, d in sorted(r['cos_by_start'].items(), key=lambda x: int(x[0])))
        print(f"| {name(c)} | {r['r_mean']:.2f} ± {r['r_std']:.2f} | {r['models']} | {r['IR10']:.1f} | {r['TR10']:.1f} | "
              f"{r['loss']:.3f} | {r['cos_image']:.2f}/{r['cos_text']:.2f} | {cos} | {r['eta'][0]:.3g}/{r['eta'][1]:.3g} | {r['pixel_std']:.2f} | "
              f"{r['text_norm']:.2f} | {r['offdiag'] if r['offdiag'] is not None else '–'} | {r['seconds']} |", flush=True)

if __name__ == '__main__': main()
