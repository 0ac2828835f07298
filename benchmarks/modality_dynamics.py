"""How each modality moves along expert trajectories, and the windows AMD derives from it.

    python benchmarks/modality_dynamics.py runs/demo/experts [OTHER_STORE ...] [--max-start-epoch 2]

For every store: the experts' val r_mean after their last epoch; the MMD update magnitudes (linear, rows) of the image
and text towers per epoch, their ratio and its median; the windows of the literal formula and of the intent rule, and
the intent windows mapped into the synchronous start range (`cap`, `scale`); each modality's step per epoch as a share
of its whole path (`amd_nb.mmd.step_shares`). Does the image tower keep moving after the text head has settled?
"""
import argparse, statistics

def describe(path:str, max_start_epoch:int):
    from amd_nb.experts import TrajectoryStore
    from amd_nb.mmd import mmd_windows, map_windows, step_shares
    st = TrajectoryStore(path)
    cfg = st.config
    c = mmd_windows(st, rule='intent')
    lit = c.with_rule('literal')
    val = [st.metrics(i).get('val', [{}])[-1].get('r_mean') for i in st.finished()]
    val = [v for v in val if v is not None]
    m = cfg.model
    print(f"\n## {path}: {cfg.model.image_tower}, {cfg.data.image_size} px, "
          f"{'head only' if m.freeze_backbone and not m.train_stages else f'last {m.train_stages} stages + head' if m.freeze_backbone else 'whole backbone'}"
          f" ({st.layouts['image'].numel:,} image / {st.layouts['text'].numel:,} text parameters); {len(st)} experts × {st.epochs} epochs")
    if val: print(f"experts' val r_mean after epoch {st.epochs}: {statistics.fmean(val):.1f} ± {statistics.pstdev(val):.1f}")
    f = lambda v: ' '.join(f"{x:.3g}" for x in v)
    print(f"MMD image  {f(c.image)}\nMMD text   {f(c.text)}\nratio      {' '.join(f'{x:.2f}' for x in c.ratio)}  (median {c.median:.2f})")
    print(f"windows (R_V, R_L): literal {lit.windows}, intent {c.windows}; intent mapped into t < {max_start_epoch}: "
          f"cap {map_windows(c.windows, 'cap', max_start_epoch, st.epochs)}, scale {map_windows(c.windows, 'scale', max_start_epoch, st.epochs)}")
    s = step_shares(st)
    for mod in ('image', 'text'): print(f"step / path {mod:5s} {' '.join(f'{x:.2f}' for x in s[mod])}")

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('stores', nargs='+')
    ap.add_argument('--max-start-epoch', type=int, default=2)
    a = ap.parse_args()
    for p in a.stores: describe(p, a.max_start_epoch)
