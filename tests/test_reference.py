"""amd_nb against values computed once from the LoRS reference code on the same seeded float64 inputs.

`reference_values.json` (next to this file) holds them, with their source (silicx/LoRS_Distill at 8a712af: file and
function per component) and a description of the script that computed them; that script runs the reference's own
modules and stays outside this repository. Compared here: the logits, the low-rank S (values and gradients), InfoNCE,
weighted BCE, the matching loss, the minibatch walk, and the whole TESLA meta-gradient (data, S and η gradients, the
reported loss) with merged branches off and on. Large tensors are compared by their norm and two seeded random
projections, small ones value by value. `python tests/test_reference.py` prints the largest error of each component.
Last, the GPU presets build the reference's student (whole NFNet-l0 trainable, no image head) and run a step on a CPU.
"""
import hashlib, json
from pathlib import Path
import numpy as np, pytest, torch, torch.nn as nn, torch.nn.functional as F
from amd_nb.models import DualEncoder, ImageTower, TextTower, InfoNCE, WeightedBCE, LowRankSim, logits_from
from amd_nb.matching import Student, Segment, SynLeaves, matching_loss, minibatches, tesla

REF = json.loads((Path(__file__).parent/'reference_values.json').read_text())
S = REF['settings']
TAU, D, DIN, RANK = S['tau'], S['embed_dim'], S['text_dim'], S['rank']
EPS = 1e-6        # the reference WBCE's constant: inside both logs and added to the group counts (02_models, WeightedBCE)
EXACT = 1e-12     # relative tolerance of the components the project computes as the reference does

# ---------------------------------------------------------------- the inputs (as the reference script drew them)

def checksum(*arrays): return hashlib.sha256(b''.join(np.ascontiguousarray(a, dtype=np.float64).tobytes() for a in arrays)).hexdigest()[:16]

def loss_inputs(seed:int, b:int)->dict:
    rs = np.random.RandomState(1000 + seed)
    img, txt = rs.standard_normal((b, D)), rs.standard_normal((b, D))
    n = b + 3
    a, L, R = 1 + 0.1 * rs.standard_normal(n), rs.standard_normal((n, RANK)), 0.5 * rs.standard_normal((n, RANK))
    idx = rs.permutation(n)[:b]
    W = rs.standard_normal((b, b))
    return dict(img=img, txt=txt, n=n, a=a, L=L, R=R, idx=idx, W=W)

def image_backbone()->nn.Sequential:
    "A tiny conv net whose pooled feature is the embedding (no image head, like the reference's NFNet)."
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GELU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, D))

def student(loss:nn.Module)->Student:
    model = DualEncoder(ImageTower(image_backbone(), D, D, head=False), TextTower(DIN, D, dropout=0.0), TAU).double()
    return Student(model, loss)

def meta_inputs(seed:int, B:int, batch:int, N:int)->dict:
    rs = np.random.RandomState(2000 + seed)
    images, text = rs.standard_normal((B, 3, 6, 6)), rs.standard_normal((B, DIN))
    st = student(InfoNCE())
    n_img, n_txt = st.layouts['image'].numel, st.layouts['text'].numel
    start_img, start_txt = 0.3 * rs.standard_normal(n_img), 0.3 * rs.standard_normal(n_txt)
    target_img, target_txt = start_img + 0.05 * rs.standard_normal(n_img), start_txt + 0.05 * rs.standard_normal(n_txt)
    a, L, R = 1 + 0.1 * rs.standard_normal(B), rs.standard_normal((B, RANK)), 0.5 * rs.standard_normal((B, RANK))
    batches = [rs.permutation(B)[:batch] for _ in range(N)]
    return dict(images=images, text=text, start_img=start_img, start_txt=start_txt, target_img=target_img, target_txt=target_txt,
                a=a, L=L, R=R, batches=batches, lr_img=0.1, lr_txt=0.05, alpha=1.0 if seed % 2 else 3.0)

T = lambda a: torch.tensor(np.asarray(a, dtype=np.float64))

def lowrank(n:int, alpha:float, a, L, R)->LowRankSim:
    s = LowRankSim(n, rank=RANK, alpha=alpha).double()
    with torch.no_grad(): s.a.copy_(T(a)); s.L.copy_(T(L)); s.R.copy_(T(R))
    return s

# ---------------------------------------------------------------- comparing with a stored value

def _probes(n:int): return [np.random.RandomState(k).standard_normal(n) for k in (1, 2)]

def error(ref:dict, t:torch.Tensor, bound=None)->float:
    """Relative error of `t` against a stored fingerprint: per value over the norm, or of the norm and each projection over
    what a unit relative change could move them. With `bound` (an elementwise bound on |t - ref|), the error over the bound."""
    f = t.detach().double().reshape(-1).numpy()
    assert list(t.shape) == ref['shape'], (list(t.shape), ref['shape'])
    if 'values' in ref:
        v = np.array(ref['values'])
        if bound is not None: return float(np.max(np.abs(f - v) / (bound.reshape(-1) + 1e-300)))
        return float(np.max(np.abs(f - v)) / max(np.linalg.norm(v), 1e-300))
    ps = _probes(f.size)
    if bound is not None:
        b = bound.reshape(-1)
        return max(abs(np.linalg.norm(f) - ref['norm']) / (np.linalg.norm(b) + 1e-300),
                   *(abs(f @ p - ref[k]) / (np.abs(p) @ b + 1e-300) for p, k in zip(ps, ('p1', 'p2'))))
    return max(abs(np.linalg.norm(f) - ref['norm']) / ref['norm'],
               *(abs(f @ p - ref[k]) / (ref['norm'] * np.linalg.norm(p)) for p, k in zip(ps, ('p1', 'p2'))))

def rel(x, ref:float)->float: return abs(float(x) - ref) / max(abs(ref), 1e-300)

def with_grad(f, x:torch.Tensor):
    x = x.detach().clone().requires_grad_(True)
    v = f(x); (g,) = torch.autograd.grad(v, x)
    return v.detach(), g

def wbce_bound(logits:torch.Tensor, targets:torch.Tensor)->tuple[float, np.ndarray]:
    """Bounds on |project - reference| for WBCE's value and its gradient in the logits, from the reference's constant:
    |log(q + ε) - log q| ≤ ε/q and the same for the gradient terms, entry by entry, over each group's count."""
    p, S = torch.sigmoid(logits), targets
    e = (S.abs() * EPS / p + (1 - S).abs() * EPS / (1 - p))
    pos = S > 0.5
    w = torch.where(pos, 1 / pos.sum().clamp_min(1), 1 / (~pos).sum().clamp_min(1)) / 2
    return float((e * w).sum()), (e * w).numpy()

# ---------------------------------------------------------------- the components

def loss_errors(case:dict)->dict:
    inp = loss_inputs(case['seed'], case['b'])
    assert checksum(inp['img'], inp['txt'], inp['a'], inp['L'], inp['R'], inp['idx'], inp['W']) == case['checksum'], 'inputs differ from the reference run'
    err = {}
    logits = logits_from(T(inp['img']), T(inp['txt']), TAU)
    err['logits'] = error(case['logits'], logits)
    sim = lowrank(inp['n'], case['alpha'], inp['a'], inp['L'], inp['R'])
    S = sim(torch.as_tensor(inp['idx']))
    (S * T(inp['W'])).sum().backward()
    err['lowrank S'] = error(case['sim'], S)
    err['lowrank S gradients'] = max(error(case[f'sim_grad_{k}'], p.grad) for k, p in zip('aLR', (sim.a, sim.L, sim.R)))
    v, g = with_grad(InfoNCE(), logits)
    err['InfoNCE'] = max(rel(v, case['infonce']), rel(v, case['infonce_multilabel']),
                         error(case['infonce_grad'], g), error(case['infonce_multilabel_grad'], g))
    S = S.detach()
    v, g = with_grad(lambda z: WeightedBCE()(z, S), logits)
    bv, bg = wbce_bound(logits, S)
    err['WBCE (over the ε bound)'] = max(abs(float(v) - case['wbce']) / (bv + EPS * abs(case['wbce'])), error(case['wbce_grad'], g, bound=bg + 1e-15))
    err['WBCE (relative)'] = max(rel(v, case['wbce']), error(case['wbce_grad'], g))
    zeros = torch.zeros_like(S)               # no positives: the reference still halves the negatives' mean, the project does not
    v, g = with_grad(lambda z: WeightedBCE()(z, zeros), logits)
    bv, bg = wbce_bound(logits, zeros)
    err['WBCE one group empty: project = 2 × reference'] = max(abs(float(v) - 2 * case['wbce_no_positives']) / (2 * bv + 2 * EPS * abs(case['wbce_no_positives'])),
                                                             error(case['wbce_no_positives_grad'], g / 2, bound=bg + 1e-15))
    return err

def matching_errors(case:dict, meta:tuple)->float:
    inp = meta_inputs(*meta)
    rs = np.random.RandomState(3000 + meta[0])
    fin_img = inp['target_img'] + 0.02 * rs.standard_normal(len(inp['target_img']))
    fin_txt = inp['target_txt'] + 0.02 * rs.standard_normal(len(inp['target_txt']))
    assert checksum(fin_img, fin_txt) == case['checksum'], 'inputs differ from the reference run'
    seg = Segment({'image': T(inp['start_img']), 'text': T(inp['start_txt'])}, {'image': T(inp['target_img']), 'text': T(inp['target_txt'])})
    total, parts = matching_loss({'image': T(fin_img), 'text': T(fin_txt)}, seg)
    merged, _ = matching_loss({'image': T(fin_img), 'text': T(fin_txt)}, seg, merge=True)
    return max(rel(parts['image'], case['image']), rel(parts['text'], case['text']), rel(total, case['total']), rel(merged, case['merged']))

class ReferenceFormWBCE(nn.Module):
    "Weighted BCE in the reference's documented form (02_models, `WeightedBCE`): ε inside both logs and added to the group counts."
    def forward(self, logits, targets):
        p = torch.sigmoid(logits)
        loss = -targets * torch.log(p + EPS) - (1 - targets) * torch.log(1 - p + EPS)
        pos = targets > 0.5
        count = lambda m: m.sum().to(logits.dtype) + EPS          # the reference script ran with float64 as torch's default dtype
        return ((loss * pos).sum() / count(pos) + (loss * ~pos).sum() / count(~pos)) / 2

def tesla_errors(case:dict, loss:nn.Module)->float:
    "Largest relative error of `tesla`'s loss and gradients against the reference's, with the student's loss `loss`."
    inp = meta_inputs(case['seed'], case['B'], case['batch'], case['N'])
    assert checksum(inp['images'], inp['text'], inp['start_img'], inp['start_txt'], inp['target_img'], inp['target_txt'],
                    inp['a'], inp['L'], inp['R'], *inp['batches']) == case['checksum'], 'inputs differ from the reference run'
    st = student(loss)
    sim = lowrank(case['B'], inp['alpha'], inp['a'], inp['L'], inp['R']) if case['loss_type'] == 'WBCE' else None
    lrs = {'image': torch.tensor(inp['lr_img'], dtype=torch.float64, requires_grad=True), 'text': torch.tensor(inp['lr_txt'], dtype=torch.float64, requires_grad=True)}
    leaves = SynLeaves(T(inp['images']).requires_grad_(True), T(inp['text']).requires_grad_(True), lrs, sim, list(sim.parameters()) if sim else [])
    seg = Segment({'image': T(inp['start_img']), 'text': T(inp['start_txt'])}, {'image': T(inp['target_img']), 'text': T(inp['target_txt'])})
    out = tesla(st, leaves, seg, [torch.as_tensor(b) for b in inp['batches']], merge=case['merge'])
    errs = [rel(out.loss, case['loss']), rel(out.parts['image'], case['loss_image']), rel(out.parts['text'], case['loss_text']),
            rel(lrs['image'].grad, case['grad_lr_image']), rel(lrs['text'].grad, case['grad_lr_text']),
            error(case['grad_images'], leaves.images.grad), error(case['grad_text'], leaves.text.grad)]
    if sim: errs += [error(case[f'grad_sim_{k}'], p.grad) for k, p in zip('aLR', (sim.a, sim.L, sim.R))]
    return max(errs)

_META = [(c['seed'], c['B'], c['batch'], c['N']) for c in REF['tesla'] if not c['merge'] and c['loss_type'] == 'WBCE']

def all_errors()->dict:
    "Component -> the largest error over the stored cases."
    out = {}
    def put(k, v): out[k] = max(out.get(k, 0.), v)
    for case in REF['losses']:
        for k, v in loss_errors(case).items(): put(k, v)
    for case, meta in zip(REF['matching'], _META): put('matching loss', matching_errors(case, meta))
    for case in REF['tesla']:
        tag = f"TESLA {case['loss_type']} merge {'on' if case['merge'] else 'off'}"
        if case['loss_type'] == 'WBCE':
            put(tag + ' (reference-form WBCE)', tesla_errors(case, ReferenceFormWBCE()))
            put(tag + ' (project WBCE, relative)', tesla_errors(case, WeightedBCE()))
        else: put(tag, tesla_errors(case, InfoNCE()))
    return out

# ---------------------------------------------------------------- the tests

@pytest.fixture(scope='module')
def errors(): return all_errors()

def test_reference_values_say_where_they_come_from():
    src = REF['source']
    assert src['repository'] == 'silicx/LoRS_Distill' and src['commit'] == '8a712af'
    assert {'logits', 'sim', 'infonce', 'wbce', 'matching', 'tesla', 'walk'} <= set(src['functions'])
    assert 'outside' in REF['script'] and len(REF['losses']) == 5 and {c['b'] for c in REF['losses']} >= {4, 50}

@pytest.mark.parametrize('component', ['logits', 'lowrank S', 'lowrank S gradients', 'InfoNCE', 'matching loss',
                                       'TESLA InfoNCE merge off', 'TESLA InfoNCE merge on',
                                       'TESLA WBCE merge off (reference-form WBCE)', 'TESLA WBCE merge on (reference-form WBCE)'])
def test_same_as_reference(errors, component):
    assert errors[component] <= EXACT, (component, errors[component])

def test_wbce_differs_only_by_the_reference_constant(errors):
    """The project's WBCE has no ε: the difference stays inside the bound ε gives, and one empty group doubles the project's
    value. Through a whole TESLA meta-gradient the ε matters more where logits saturate: 7.1e-2 relative on these inputs."""
    assert errors['WBCE (over the ε bound)'] <= 1
    assert errors['WBCE one group empty: project = 2 × reference'] <= 1
    for merge in ('off', 'on'): assert errors[f'TESLA WBCE merge {merge} (project WBCE, relative)'] <= 0.1

def test_minibatch_walk_is_the_reference_walk(monkeypatch):
    "Which slice of which permutation each inner step takes, for the presets' shapes (torch.randperm replaced by a counter)."
    count = [0]
    def numbered_perm(n, generator=None):
        count[0] += 1; return torch.arange(n) + 1000 * (count[0] - 1)
    monkeypatch.setattr(torch, 'randperm', numbered_perm)
    for w in REF['walks']:
        count[0] = 0
        got = [[int(b[0]) // 1000, int(b[0]) % 1000] for b in minibatches(w['B'], w['batch'], w['steps'], torch.Generator())]
        assert got == w['slices'], (w['B'], w['batch'])

def test_no_minibatch_repeats_a_pair():
    g = torch.Generator().manual_seed(0)
    for n, size in ((99, 32), (100, 50), (99, 20)):
        for _ in range(200):
            for b in minibatches(n, size, 8, g): assert len(b.unique()) == size, (n, size)

# ---------------------------------------------------------------- the GPU presets build the reference's student

def test_gpu_presets_build_the_reference_student():
    "`flickr30k`/`coco` (untrained NFNet-l0, 32 px): the whole trunk trains, no image head, text head 768 → 2304 with dropout 0.1; a student step runs."
    from amd_nb.config import get_preset
    from amd_nb.models import build_dual_encoder
    cfgs = [get_preset(p).override({'model.pretrained': False}) for p in ('flickr30k', 'coco')]
    assert cfgs[0].model == cfgs[1].model
    torch.manual_seed(0)
    model = build_dual_encoder(cfgs[0].model, 768, 32)
    assert isinstance(model.image.head, nn.Identity) and model.image.embed_dim == model.text.embed_dim == 2304
    assert (model.text.proj.in_features, model.text.proj.out_features, model.text.drop.p) == (768, 2304, 0.1)
    st = Student(model, WeightedBCE(cfgs[0].distill.wbce_scale))
    assert not st.frozen and st.layouts['image'].numel == sum(p.numel() for p in model.image.backbone.parameters()) > 30_000_000
    assert st.layouts['text'].numel == sum(p.numel() for p in model.text.parameters())
    theta = {m: st.layouts[m].flatten(getattr(model, m)) for m in ('image', 'text')}
    gs, _ = st.grads(theta, torch.randn(4, 3, 32, 32), torch.randn(4, 768), torch.eye(4))
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in gs.values())

if __name__ == '__main__':
    for k, v in all_errors().items(): print(f"{k:55s} {v:.2e}")
