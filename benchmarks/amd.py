"""AMD's overhead against sync matching, side by side in one run.

    python benchmarks/amd.py --experts runs/demo/experts [--iters 30]

Builds a `lors` (sync) and an `amd` distiller on the same store, data and seed and times their
iterations alternately (sync, async, sync, async, ...), so that both see the same machine load.
Prints the median seconds per iteration of each and their ratio, plus AMD's one-off costs: the MMD
windows (computed once per store, then read from its JSON cache) and SPM's prototype selection.
"""
import argparse, os, statistics as st, time, warnings
warnings.filterwarnings('ignore')

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--experts', default='runs/demo/experts'); ap.add_argument('--preset', default='demo')
    ap.add_argument('--iters', type=int, default=30)
    a = ap.parse_args()
    from amd_nb.config import get_preset
    from amd_nb.experts import TrajectoryStore
    from amd_nb.data import load_split
    from amd_nb.distill import Distiller
    from amd_nb.mmd import mmd_windows
    store = TrajectoryStore(a.experts)
    train = load_split(store.config.data, 'train', progress=False, seed=store.config.seed)
    cfg = get_preset(a.preset)
    t0 = time.perf_counter(); curves = mmd_windows(store, cfg.distill.expert_epochs, cache=False); t_mmd = time.perf_counter() - t0
    sync = Distiller(cfg.override({'distill.method': 'lors'}), store, train, progress=False)
    amd = Distiller(cfg.override({'distill.method': 'amd'}), store, train, progress=False)
    sync.step(); amd.step()                                       # warm-up
    ts, ta = [], []
    for _ in range(a.iters):
        t0 = time.perf_counter(); sync.step(); ts.append(time.perf_counter() - t0)
        t0 = time.perf_counter(); amd.step(); ta.append(time.perf_counter() - t0)
    ms, ma = st.median(ts), st.median(ta)
    print(f"preset {a.preset}, experts {a.experts}, seed {cfg.seed}, {a.iters} alternating iterations each, "
          f"B={cfg.distill.budget}, N={cfg.distill.syn_steps}, engine {cfg.distill.engine}")
    print(f"windows R_V={curves.R_V}, R_L={curves.R_L} (T={curves.epochs}, M={curves.expert_epochs}); MMD curves computed in {t_mmd:.2f} s (once per store)")
    print(f"SPM initialisation (features + K-means + medoids): {amd.init_seconds:.2f} s (once per run); random initialisation: {sync.init_seconds:.3f} s")
    print('| sampler | median s / iteration | mean s / iteration |'); print('|---|---|---|')
    print(f"| sync (lors) | {ms:.4f} | {st.mean(ts):.4f} |"); print(f"| async (amd) | {ma:.4f} | {st.mean(ta):.4f} |")
    print(f"per-iteration ratio amd / lors = {ma/ms:.3f} (median), {st.mean(ta)/st.mean(ts):.3f} (mean)")
    total = cfg.distill.iterations * ma
    print(f"one-off costs relative to a {cfg.distill.iterations}-iteration run: {(t_mmd + amd.init_seconds) / total * 100:.1f}%")

if __name__ == '__main__': main()
