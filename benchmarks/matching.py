"""Meta-gradient engines on a preset: seconds per iteration and peak memory for `unroll` and `tesla`.

    python benchmarks/matching.py --experts runs/demo/experts [--steps 5 10 20 40] [--iters 5]
    python benchmarks/matching.py --experts runs/demo/experts --agreement
    python benchmarks/matching.py --experts runs/demo/experts --methods lors repblend --steps 10 --engines unroll --iters 20

Each (engine, syn_steps) cell runs in its own process, one after the other in this run, so the two
engines are measured side by side under the same load. Per cell: the median wall time of an outer
iteration; the floor, what an iteration cannot avoid in the store's regime: N plain student training
steps on the same minibatches (no meta-gradient) plus one forward and backward pass of the synthetic
batch through the whole image tower, its frozen and its trained parts (pixels to embedding and back);
and the process's peak RSS (also above its RSS just before the first iteration). The store decides the
regime (head only, or the last `model.train_stages` stages of the trunk trained too). With several
`--methods` the cells of one N and engine run method after method, and each method's time is also
given as a ratio to the first method's (for example `repblend` against `lors` on the same store). `--agreement` prints the cosine similarity of the `tesla` and `unroll`
gradients on the same experts for several N and inner lrs.
"""
import argparse, json, os, resource, statistics as st, subprocess, sys, time, warnings
warnings.filterwarnings('ignore')

def rss_mib():
    with open('/proc/self/statm') as f: return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20

def child(a):
    import torch
    from amd_nb.config import get_preset
    from amd_nb.experts import TrajectoryStore
    from amd_nb.data import load_split
    from amd_nb.distill import Distiller
    from amd_nb.matching import minibatches, MODALITIES
    store = TrajectoryStore(a.experts)
    train = load_split(store.config.data, 'train', progress=False, seed=store.config.seed)
    cfg = get_preset(a.preset).override({'distill.engine': a.engine, 'distill.syn_steps': a.n, 'distill.method': a.method})
    d = Distiller(cfg, store, train, progress=False)
    d.step()                                                  # warm-up (allocator, lazy imports)
    base = rss_mib(); times, floors, passes = [], [], []
    for _ in range(a.iters):
        t0 = time.perf_counter(); d.step(); times.append(time.perf_counter() - t0)
        # floor: N plain SGD steps of the same student on minibatches of the same size
        i = d._next_expert(); ep = d.sampler(d.g, store.epochs, cfg.distill.expert_epochs); seg = d._segment(i, ep)
        batches = minibatches(len(d.syn), cfg.distill.batch_syn, a.n, d.g)
        x = d.student.image_inputs(d.syn.images).detach(); e = d.syn.text.detach()
        t0 = time.perf_counter()
        theta = {m: seg.start[m].clone() for m in MODALITIES}
        for idx in batches:
            tg = d.syn.targets(idx).detach() if list(d.syn.sim.parameters()) else None
            gs, _ = d.student.grads(theta, x[idx], e[idx], tg)
            theta = {m: theta[m] - 0.1 * gs[m] for m in MODALITIES}
        floors.append(time.perf_counter() - t0)
        px = d.syn.images.detach().requires_grad_(True)   # one forward and backward of the batch through the whole image tower
        t0 = time.perf_counter(); d.student.model.image(px).square().sum().backward(); passes.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(dict(engine=a.engine, n=a.n, sec=st.median(times), steps=st.median(floors), fb=st.median(passes),
                          floor=st.median(floors) + st.median(passes), peak=peak, base=base)))

def agreement(a):
    import torch
    from amd_nb.experts import TrajectoryStore
    from amd_nb.train import init_dual_encoder
    from amd_nb.data import load_split
    from amd_nb.models import normalize, LowRankSim
    from amd_nb.matching import Student, Segment, SynLeaves, minibatches, compare_engines, MODALITIES
    store = TrajectoryStore(a.experts); cfg = store.config
    train = load_split(cfg.data, 'train', progress=False, seed=cfg.seed)
    def problem(steps, lr, B=100, bs=50, seed=0):
        torch.manual_seed(seed)
        st_ = Student(init_dual_encoder(cfg, train.text.shape[1]), 'wbce')
        tr = store[store.finished()[0]]
        seg = Segment({'image': tr.image[1], 'text': tr.text[1]}, {'image': tr.image[2], 'text': tr.text[2]})
        idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:B]
        m = st_.model
        imgs = normalize(train.images[idx], m.image.mean, m.image.std).clone().requires_grad_(True)
        text = train.text[torch.searchsorted(train.caption_image, idx)].clone().requires_grad_(True)
        S = LowRankSim(B, 10, 1.0); torch.nn.init.normal_(S.R, std=0.1)
        lrs = {k: torch.tensor(lr, requires_grad=True) for k in MODALITIES}
        return st_, SynLeaves(st_.image_inputs(imgs), text, lrs, S, list(S.parameters())), seg, minibatches(B, bs, steps, torch.Generator().manual_seed(seed))
    print(f"tesla vs unroll on {a.experts} (expert {store.finished()[0]}, epochs 1->2, LoRS loss, B=100, batch 50): cosine similarity")
    print('| inner lr | N | pixels | texts | sim a | sim L | sim R | lr_image | lr_text |'); print('|---' * 9 + '|')
    for lr in (0.1, 0.01):
        for n in (1, 3, 5, 10):
            c = compare_engines(problem, steps=n, lr=lr)
            print(f"| {lr} | {n} | " + ' | '.join(f"{c[k]:.3f}" for k in ('images', 'text', 'sim0', 'sim1', 'sim2', 'lr_image', 'lr_text')) + ' |', flush=True)

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--experts', default='runs/demo/experts'); ap.add_argument('--preset', default='demo')
    ap.add_argument('--methods', nargs='+', default=['lors']); ap.add_argument('--steps', type=int, nargs='+', default=[5, 10, 20, 40])
    ap.add_argument('--engines', nargs='+', default=['unroll', 'tesla']); ap.add_argument('--method', help=argparse.SUPPRESS)
    ap.add_argument('--iters', type=int, default=5); ap.add_argument('--agreement', action='store_true')
    ap.add_argument('--child', nargs=2, metavar=('ENGINE', 'N'))
    a = ap.parse_args()
    if a.agreement: return agreement(a)
    if a.child: a.engine, a.n = a.child[0], int(a.child[1]); return child(a)
    if a.method: a.methods = [a.method]
    from amd_nb.experts import TrajectoryStore
    m = TrajectoryStore(a.experts).config.model
    regime = 'head only' if m.freeze_backbone and not m.train_stages else f"last {m.train_stages} stages + head" if m.freeze_backbone else 'whole backbone'
    print(f"preset {a.preset}, methods {' '.join(a.methods)}, experts {a.experts} ({m.image_tower}, {regime}), {a.iters} timed iterations per cell (median), "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')} on {os.cpu_count()} cores")
    rows = []
    for n in a.steps:
        for eng in a.engines:
            for meth in a.methods:
                r = subprocess.run([sys.executable, __file__, '--experts', a.experts, '--preset', a.preset, '--method', meth,
                                    '--iters', str(a.iters), '--child', eng, str(n)], capture_output=True, text=True)
                if r.returncode: print(r.stderr[-2000:]); sys.exit(1)
                rows.append(dict(method=meth, **json.loads(r.stdout.strip().splitlines()[-1]))); print(rows[-1], flush=True)
    first = {(r['engine'], r['n']): r['sec'] for r in rows if r['method'] == a.methods[0]}
    print(f"\n| method | engine | syn_steps | s / iteration | vs {a.methods[0]} | N plain steps s | tower fwd+bwd s | floor s | ratio to floor | peak RSS MiB | peak − pre-run RSS MiB |")
    print('|---|---|---|---|---|---|---|---|---|---|---|')
    for r in rows:
        print(f"| {r['method']} | {r['engine']} | {r['n']} | {r['sec']:.3f} | {r['sec']/first[r['engine'], r['n']]:.2f}× | {r['steps']:.3f} | {r['fb']:.3f} | {r['floor']:.3f} | {r['sec']/r['floor']:.1f}× | {r['peak']:.0f} | {r['peak']-r['base']:.0f} |")
    for eng in a.engines:
        by = {r['n']: r for r in rows if r['engine'] == eng and r['method'] == a.methods[0]}
        if 10 in by and 40 in by: print(f"{eng}: peak RSS at 40 steps / at 10 steps = {by[40]['peak']/by[10]['peak']:.2f} (above pre-run RSS: {(by[40]['peak']-by[40]['base'])/max(1e-9, by[10]['peak']-by[10]['base']):.2f})")

if __name__ == '__main__': main()
