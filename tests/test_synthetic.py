"amd_nb.synthetic: initialisation from real pairs, save/load round trips and broken folders, nearest captions, export."
import dataclasses, json, shutil
import numpy as np
import pytest, torch
from PIL import Image
from amd_nb.config import get_preset
from amd_nb.data import EncodedSplit, load_split
from amd_nb.models import HALF_MEAN, HALF_STD, IMAGENET_MEAN, IMAGENET_STD, LowRankSim, FullSim, IdentitySim, denormalize
from amd_nb.synthetic import SyntheticSet, SyntheticSetError, random_indices, pick_captions

SIMS = {'identity': IdentitySim, 'lowrank': LowRankSim, 'full': FullSim}

@pytest.fixture(scope='module')
def train(tmp_path_factory)->EncodedSplit:
    "The tiny preset's training split (48 emoji at 16 px, MiniLM), embedded into a private cache."
    cfg = dataclasses.replace(get_preset('tiny').data, cache_dir=str(tmp_path_factory.mktemp('cache')))
    return load_split(cfg, 'train', progress=False)

def make(train, budget=8, seed=0, **kw)->SyntheticSet:
    "A synthetic set from `budget` random real pairs of `train`."
    g = torch.Generator().manual_seed(seed)
    kw = {'generator': g, **kw}
    return SyntheticSet.from_real(train, random_indices(len(train), budget, g), IMAGENET_MEAN, IMAGENET_STD, 0.1, 0.05, **kw)

def train_a_bit(s:SyntheticSet):
    "Move every parameter, as distillation would (the learned lrs stay ≥ 0)."
    with torch.no_grad():
        for p in s.parameters(): p.add_(0.1 * torch.randn_like(p))
        for lr in (s.lr_image, s.lr_text): lr.abs_()

# ---------------------------------------------------------------- initialisation

def test_random_indices_budget(train):
    g = torch.Generator().manual_seed(0)
    ix = random_indices(len(train), 48, g)
    assert sorted(ix.tolist()) == list(range(48))
    with pytest.raises(ValueError, match='budget 500 is larger than the 48 training images'): random_indices(48, 500, g)
    with pytest.raises(ValueError, match='budget 49 is larger than the 48'): make(train, budget=49)

def test_from_real_pixels_and_text(train):
    s = make(train)
    assert len(s) == 8 and s.images.dtype == torch.float32 and s.images.requires_grad
    assert (denormalize(s.images.detach(), IMAGENET_MEAN, IMAGENET_STD) - train.images[s.source] / 255).abs().max() <= 1/255
    assert (s.pixels() - train.images[s.source] / 255).abs().max() <= 1/255
    assert torch.equal(train.caption_image[s.source_caption], s.source)
    assert torch.equal(s.text.detach(), train.text[s.source_caption])
    assert s.meta['image_size'] == 16 and s.meta['encoder'] == 'minilm' and s.meta['fingerprint'] == train.fingerprint()
    assert s.meta['mean'] == list(IMAGENET_MEAN) and s.meta['std'] == list(IMAGENET_STD)

def test_caption_choice_seeded(train):
    a, b, c = make(train, seed=5), make(train, seed=5), make(train, seed=6)
    assert torch.equal(a.source_caption, b.source_caption) and torch.equal(a.source, b.source)
    assert not torch.equal(a.source, c.source)
    first = make(train, caption='first')
    assert torch.equal(first.source_caption, pick_captions(train.caption_image, first.source, 'first'))
    assert (torch.diff(train.caption_image)[first.source_caption[first.source > 0] - 1] == 1).all()  # the first caption of its image
    many = pick_captions(train.caption_image, torch.arange(48).repeat(200), 'random', torch.Generator().manual_seed(0))
    assert len(set(many.tolist())) == len(train.caption_image)          # every caption can be picked

def test_learnables_and_groups(train):
    s = make(train, sim='lowrank', rank=3, alpha=0.5)
    assert s.lr_image.shape == () == s.lr_text.shape and s.lr_image.dtype == torch.float32
    groups = s.param_groups()
    assert [len(groups[k]) for k in ('images', 'text', 'lrs', 'sim')] == [1, 1, 2, 3]
    assert sum(p.numel() for ps in groups.values() for p in ps) == sum(p.numel() for p in s.parameters())
    assert torch.allclose(s.targets(), torch.eye(8))
    s.targets(torch.tensor([0, 2, 4])).sum().backward()                 # targets are differentiable in S
    assert s.sim.R.grad is not None and s.sim.R.grad.abs().sum() > 0
    assert make(train, sim='identity').param_groups()['sim'] == []
    assert s.meta['sim'] == {'kind': 'lowrank', 'rank': 3, 'alpha': 0.5}

def test_bad_init(train):
    with pytest.raises(ValueError, match='out of range'): SyntheticSet.from_real(train, torch.tensor([3, 99]), HALF_MEAN, HALF_STD, 0.1, 0.1)
    with pytest.raises(ValueError, match="unknown similarity"): make(train, sim='diagonal')
    with pytest.raises(ValueError, match="'first' or 'random'"): make(train, caption='best')
    with pytest.raises(SyntheticSetError, match='JSON-able'): make(train, meta={'bad': object()})

# ---------------------------------------------------------------- save / load

@pytest.mark.parametrize('kind', list(SIMS))
def test_save_load_roundtrip(train, tmp_path, kind):
    s = make(train, sim=kind, rank=4, alpha=2.0, meta={'method': 'lors', 'config': {'budget': 8, 'lrs': (0.1, 0.2)}})
    train_a_bit(s)
    state = torch.get_rng_state()
    t = SyntheticSet.load(s.save(tmp_path/'syn'))
    assert torch.equal(torch.get_rng_state(), state)                     # loading draws no random numbers
    assert isinstance(t.sim, SIMS[kind]) and t.meta == s.meta and t.meta['config']['lrs'] == [0.1, 0.2]
    a, b = s.state_dict(), t.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    idx = torch.tensor([7, 1, 1, 3])
    assert torch.equal(s.targets(idx), t.targets(idx))
    assert sorted(p.name for p in (tmp_path/'syn').iterdir()) == ['synthetic.json', 'synthetic.safetensors']
    h = json.loads((tmp_path/'syn'/'synthetic.json').read_text())
    assert (h['format'], h['version'], h['B'], h['sim']['kind']) == ('amd_nb.synthetic', 1, 8, kind)
    assert h['shapes']['images'] == [8, 3, 16, 16]

def test_save_overwrites(train, tmp_path):
    make(train, budget=8).save(tmp_path)
    s = make(train, budget=4, sim='full'); s.save(tmp_path)
    t = SyntheticSet.load(tmp_path)
    assert len(t) == 4 and torch.equal(t.images, s.images)

def test_no_pickle(train, tmp_path):
    "The tensor file is plain safetensors: readable by safetensors alone, no pickle opcodes anywhere."
    from safetensors.torch import load_file
    make(train, sim='lowrank').save(tmp_path)
    assert set(load_file(tmp_path/'synthetic.safetensors')) >= {'images', 'text', 'lr_image', 'lr_text', 'source', 'source_caption', 'sim.a', 'sim.L', 'sim.R'}

def _broken(train, tmp_path, kind='lowrank'):
    d = tmp_path/'syn'
    make(train, sim=kind).save(d)
    return d

def test_load_missing(tmp_path, train):
    with pytest.raises(SyntheticSetError, match='nowhere'): SyntheticSet.load(tmp_path/'nowhere')
    d = _broken(train, tmp_path); (d/'synthetic.safetensors').unlink()
    with pytest.raises(SyntheticSetError, match='synthetic.safetensors'): SyntheticSet.load(d)
    (d/'synthetic.json').unlink()
    with pytest.raises(SyntheticSetError, match='synthetic.json'): SyntheticSet.load(d)

def test_load_corrupt_json(tmp_path, train):
    d = _broken(train, tmp_path)
    (d/'synthetic.json').write_text('{"format": "amd_nb.synth')
    with pytest.raises(SyntheticSetError) as e: SyntheticSet.load(d)
    assert str(d/'synthetic.json') in str(e.value) and 'not valid JSON' in str(e.value)
    assert isinstance(e.value, ValueError)

@pytest.mark.parametrize('edit, msg', [
    (lambda h: h.update(format='amd_nb.trajectories'), 'not an amd_nb synthetic set'),
    (lambda h: h.update(version=99), 'version 99'),
    (lambda h: h.pop('shapes'), "lacks ['shapes']"),
    (lambda h: h['shapes']['text'].__setitem__(1, 7), 'text has shape'),
    (lambda h: h['shapes'].pop('sim.L'), "sim.L"),
    (lambda h: h['sim'].update(rank=5), 'synthetic.safetensors'),
    (lambda h: h.update(B=3), 'B=3'),
])
def test_load_inconsistent_header(tmp_path, train, edit, msg):
    d = _broken(train, tmp_path)
    h = json.loads((d/'synthetic.json').read_text()); edit(h)
    (d/'synthetic.json').write_text(json.dumps(h))
    with pytest.raises(SyntheticSetError, match=msg.replace('[', r'\[').replace(']', r'\]')): SyntheticSet.load(d)

def test_load_mixed_saves_and_garbage(tmp_path, train):
    d = _broken(train, tmp_path); other = tmp_path/'other'
    make(train, sim='lowrank', seed=1).save(other)
    shutil.copy(other/'synthetic.json', d/'synthetic.json')          # same shapes, another save
    with pytest.raises(SyntheticSetError, match='different saves'): SyntheticSet.load(d)
    (d/'synthetic.safetensors').write_bytes(b'\x00' * 20)
    with pytest.raises(SyntheticSetError, match='cannot read'): SyntheticSet.load(d)

# ---------------------------------------------------------------- looking at it

def test_nearest_captions(train):
    s = make(train, budget=6)
    caps = train.pairs.flat_captions
    near = s.nearest_captions(train, k=3)
    assert [len(n) for n in near] == [3]*6
    assert [n[0][0] for n in near] == [caps[i] for i in s.source_caption.tolist()]
    assert all(abs(n[0][1] - 1) < 1e-4 and n[0][1] >= n[1][1] >= n[2][1] for n in near)
    assert [n[0][0] for n in s.nearest_captions(train, k=1)] == [n[0][0] for n in near]
    assert [len(n) for n in s.nearest_captions(train, k=10_000)] == [len(caps)]*6
    other = dataclasses.replace(train, encoder='bert-base-uncased')
    with pytest.raises(SyntheticSetError, match="'minilm' embeddings"): s.nearest_captions(other)

def test_export(train, tmp_path):
    s = make(train, budget=5, sim='lowrank', meta={'method': 'lors'})
    (tmp_path/'out'/'images').mkdir(parents=True); Image.new('RGB', (4, 4)).save(tmp_path/'out'/'images'/'0009.png')
    out = s.export(tmp_path/'out', train, k=2, scale=3)
    assert out == tmp_path/'out'
    pngs = sorted((out/'images').glob('*.png'))
    assert [p.name for p in pngs] == [f'{i:04d}.png' for i in range(5)]   # the stale 0009.png is gone
    for i, p in enumerate(pngs):
        with Image.open(p) as im:
            assert im.size == (48, 48) and im.mode == 'RGB'
            assert np.array_equal(np.array(im)[::3, ::3], train.images[s.source[i]].permute(1, 2, 0).numpy())
    es = json.loads((out/'captions.json').read_text())
    caps = train.pairs.flat_captions
    assert [e['index'] for e in es] == list(range(5)) and [e['source'] for e in es] == s.source.tolist()
    assert [e['image'] for e in es] == [f'images/{i:04d}.png' for i in range(5)]
    assert [e['nearest'][0]['caption'] for e in es] == [caps[i] for i in s.source_caption.tolist()]
    assert all(abs(e['nearest'][0]['similarity'] - 1) < 1e-3 and len(e['nearest']) == 2 for e in es)
    page = (out/'index.html').read_text()
    assert page.startswith('<!doctype html>') and all(f"src='images/{i:04d}.png'" in page for i in range(5))
    assert 'lors' in page and 'http' not in page                        # self-contained, relative links only

def test_export_escapes(train, tmp_path):
    pairs = dataclasses.replace(train.pairs, captions=[['<script>alert("x")</script> & co'] + c[1:] for c in train.pairs.captions])
    evil = dataclasses.replace(train, pairs=pairs)
    s = make(evil, budget=48, caption='first')
    page = (s.export(tmp_path, evil, k=1)/'index.html').read_text()
    assert '<script>' not in page and '&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co' in page

def test_gallery_and_repr(train):
    s = make(train, budget=3)
    g = s.gallery(train, k=1, n=2)
    assert g._repr_html_().count('<img') == 2 and 'data:image/png;base64,' in g
    assert repr(s).startswith('SyntheticSet(B=3') and "sim 'identity'" in repr(s)

def test_pixels_need_stats():
    s = SyntheticSet(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3), 0.1, 0.1)
    with pytest.raises(SyntheticSetError, match="'mean'/'std'"): s.pixels()
    s2 = SyntheticSet(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3), 0.1, 0.1, meta={'mean': HALF_MEAN, 'std': HALF_STD})
    assert torch.allclose(s2.pixels(), torch.full((2, 3, 4, 4), 0.5))
