"""Is the matching problem real? How close a student gets to the expert, before and after distillation.

    python benchmarks/alignment.py --experts runs/demo/experts [--out runs/demo] [--methods mtt_vl lors]

For each method, `Distiller.probe` runs the student's N inner steps from expert segments drawn as
the run draws them and prints, per modality, the mean cosine between the student's displacement
and the expert's M epochs, their length ratio, the matching loss (1 = a student that does not
move) and the loss the best scalar inner lr would give (1 − cos²):

- `initial`: the set the run starts from (random or SPM real pairs, learned lrs at their start);
- `distilled`: the set of the comparison's first run of the method in `--out` (`RunLayout.cell_run(method, B, 0)`; skipped when missing);
- `full data`: the same student trained on the whole real split for M epochs from θ_t (the expert's
  own recipe, another order) — how much of an expert epoch is reproducible at all.
"""
import argparse, os, warnings
from pathlib import Path
warnings.filterwarnings('ignore')

def full_data_probe(d, segments:int, seed:int=0)->dict:
    "The probe's numbers for a student that passes over the real training rows for M epochs (batch and lr of the experts)."
    import torch
    from amd_nb.models import MODALITIES
    from amd_nb.matching import matching_loss, alignment, Segment
    from amd_nb.train import Pairs, batch_targets, image_inputs
    store, st, ec = d.store, d.student, d.store.config.expert
    x = image_inputs(st.model, d.train.images, d.device)
    pairs = Pairs(x, d.train.text.to(d.device), d.train.caption_image)
    g, done, rows = torch.Generator().manual_seed(seed), store.finished(), []
    for k in range(segments):
        seg = d._segment(done[k % len(done)], d.sampler(g, store.epochs, d.dc.expert_epochs))
        theta = {m: seg.start[m].clone() for m in MODALITIES}
        for _ in range(d.dc.expert_epochs):
            perm = torch.randperm(len(pairs), generator=g)
            for b in range(0, len(perm), ec.batch_size):
                r = perm[b:b + ec.batch_size]
                if len(r) < 2: continue
                t = batch_targets(pairs, r)
                gs, _ = st.grads(theta, x[pairs.row_image[r]], pairs.text[r], None if t is None else t.to(d.device))
                theta = {m: theta[m] - {'image': ec.lr_image, 'text': ec.lr_text}[m] * gs[m] for m in MODALITIES}
        _, parts = matching_loss(theta, seg); cos = alignment(theta, seg)
        ratio = {m: float((theta[m] - seg.start[m]).norm() / (seg.target[m] - seg.start[m]).norm()) for m in MODALITIES}
        rows.append({m: (cos[m], ratio[m], float(parts[m]), 1 - cos[m]**2) for m in MODALITIES})
    return {m: dict(zip(('cos', 'ratio', 'loss', 'best_loss'), (sum(r[m][j] for r in rows) / len(rows) for j in range(4)))) for m in MODALITIES}

def line(method:str, what:str, p:dict)->str:
    cells = [f"{p[m]['cos']:.3f} | {p[m]['ratio']:.2f} | {p[m]['loss']:.3f} | {p[m]['best_loss']:.3f}" for m in ('image', 'text')]
    return f"| {method} | {what} | " + ' | '.join(cells) + " |"

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--experts', default='runs/demo/experts'); ap.add_argument('--preset', default='demo')
    ap.add_argument('--out', default=None, help='the run folder whose comparison holds the distilled sets (default: the folder above --experts)')
    ap.add_argument('--methods', nargs='+', default=['mtt_vl', 'lors'])
    ap.add_argument('--segments', type=int, default=16)
    ap.add_argument('--set', dest='overrides', action='append', default=[], metavar='KEY=VALUE')
    a = ap.parse_args()
    import torch
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', torch.get_num_threads())))
    from amd_nb.config import get_preset
    from amd_nb.experts import TrajectoryStore
    from amd_nb.data import load_split
    from amd_nb.distill import Distiller
    from amd_nb.io import RunLayout
    store = TrajectoryStore(a.experts)
    train = load_split(store.config.data, 'train', progress=False, seed=store.config.seed)
    cfg = get_preset(a.preset).override(a.overrides)
    layout = RunLayout(a.out or Path(a.experts).parent)
    dc = cfg.distill
    print(f"preset {a.preset}, experts {a.experts} ({len(store)} × {store.epochs} epochs, {store.config.model.image_tower}), "
          f"B={dc.budget}, N={dc.syn_steps}, batch {dc.batch_syn}, M={dc.expert_epochs}, {a.segments} segments, seed 0")
    print('| student | set | image cos | image |Δθ̂|/|Δθ| | image loss | image best | text cos | text |Δθ̂|/|Δθ| | text loss | text best |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for m in a.methods:
        c = cfg.override({'distill.method': m})
        d = Distiller(c, store, train, progress=False)
        print(line(m, 'initial', d.probe(a.segments)), flush=True)
        out = layout.cell_run(m, dc.budget, 0)
        if (out/'checkpoint.safetensors').exists():
            print(line(m, f'distilled ({Distiller(c, store, train, out, progress=False).iteration} it)',
                       Distiller(c, store, train, out, progress=False).probe(a.segments)), flush=True)
        if m == a.methods[0]: print(line(m, 'full data, M epochs', full_data_probe(d, min(a.segments, 8))), flush=True)

if __name__ == '__main__': main()
