"""What the live dashboard costs a distillation run.

    python benchmarks/dashboard.py --experts runs/demo/experts [--iters 60] [--every 10]

Two identical `demo` distillers step alternately; the second one also drives a widget-mode
`Dashboard` (a plotly FigureWidget refreshed every `--every` iterations, as in JupyterLab; here
nothing renders it, so this measures the Python-side update). Prints the median and mean seconds
per iteration of each and the overhead.
"""
import argparse, contextlib, io, statistics as st, time, warnings
warnings.filterwarnings('ignore')

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--experts', default='runs/demo/experts'); ap.add_argument('--preset', default='demo')
    ap.add_argument('--iters', type=int, default=60); ap.add_argument('--every', type=int, default=10)
    a = ap.parse_args()
    from amd_nb.config import get_preset
    from amd_nb.experts import TrajectoryStore
    from amd_nb.data import load_split
    from amd_nb.distill import Distiller
    from amd_nb.viz import Dashboard
    store = TrajectoryStore(a.experts)
    train = load_split(store.config.data, 'train', progress=False, seed=store.config.seed)
    cfg = get_preset(a.preset)
    plain, viewed = Distiller(cfg, store, train, progress=False), Distiller(cfg, store, train, progress=False)
    dash = Dashboard(every=a.every, mode='widget')
    with contextlib.redirect_stdout(io.StringIO()): dash.on_start(viewed)
    tp, tv = [], []
    for _ in range(a.iters):
        t0 = time.perf_counter(); plain.step(); tp.append(time.perf_counter() - t0)
        t0 = time.perf_counter(); rec = viewed.step(); dash.on_iteration(viewed, rec); tv.append(time.perf_counter() - t0)
    print(f"preset {a.preset}, method {cfg.distill.method}, {a.iters} alternating iterations, refresh every {a.every}")
    print(f"without dashboard: median {st.median(tp):.4f} s, mean {st.mean(tp):.4f} s per iteration")
    print(f"with dashboard:    median {st.median(tv):.4f} s, mean {st.mean(tv):.4f} s per iteration")
    print(f"overhead (mean): {(st.mean(tv) / st.mean(tp) - 1) * 100:+.1f}%")

if __name__ == '__main__': main()
