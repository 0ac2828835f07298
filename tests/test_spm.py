"Prototype mining and coreset baselines: selection properties on toy blobs, features of real tiny experts, CLIP error paths, UMAP."
import json, os, subprocess, sys
import pytest, torch
from amd_nb.config import get_preset
from amd_nb.data import load_split
from amd_nb.experts import train_experts, expert_model, StoreError, TrajectoryStore
from amd_nb.spm import (joint_features, pair_features, expert_features, clip_features, Selection, prototypes, spm,
                        random_coreset, herding, k_center, SELECTORS, select, umap_2d, toy_blobs, _distinct_medoids, _scan)

CFG = get_preset('tiny').override({'expert.eval_every': 0})

@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "The tiny training split and a store holding only expert 1 (so 'first finished' is not 0)."
    root = tmp_path_factory.mktemp('spm')
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('AMD_NB_CACHE', str(root/'cache'))
        train = load_split(CFG.data, 'train', progress=False)
        store = train_experts(CFG, root/'experts', train, experts=[1], progress=False)
        yield store, train

@pytest.fixture(scope='module')
def blobs(): return toy_blobs()

def distinct_in_range(sel:Selection, n:int, k:int):
    idx = sel.indices
    return idx.dtype == torch.int64 and len(idx) == k and len(set(idx.tolist())) == k and 0 <= idx.min() and idx.max() < n

def n_hit(blob, idx): return len(set(blob[idx].tolist()))

# --- SPM -------------------------------------------------------------------------------------------

def test_spm_distinct_deterministic_and_seeded():
    x = torch.randn(300, 6, generator=torch.Generator().manual_seed(0))
    a, b = spm(x, 25, seed=0), spm(x, 25, seed=0)
    assert distinct_in_range(a, 300, 25) and torch.equal(a.indices, b.indices)
    assert any(not torch.equal(a.indices, spm(x, 25, seed=s).indices) for s in (1, 2, 3))
    assert a.method == 'spm' and a.seconds > 0 and a.info['kmeans'] == 'full'
    assert a.info['labels'].shape == (300,) and a.info['labels'].max() < 25 and a.info['centroids'].shape == (25, 6)
    assert torch.equal(prototypes(x, 25, seed=0), a.indices)

def test_spm_hits_every_blob_and_beats_random(blobs):
    x, blob = blobs
    spm_hits = [n_hit(blob, spm(x, 10, seed=s).indices) for s in range(5)]
    rnd_hits = [n_hit(blob, random_coreset(len(x), 10, seed=s).indices) for s in range(5)]
    assert spm_hits == [10] * 5
    assert all(s >= r for s, r in zip(spm_hits, rnd_hits)) and sum(rnd_hits) < sum(spm_hits)

def test_prototype_is_nearest_real_point_when_no_collision():
    x = torch.randn(500, 5, generator=torch.Generator().manual_seed(1))
    sel = spm(x, 40, seed=0)
    nearest = torch.cdist(sel.info['centroids'], x).argmin(1)
    counts = torch.bincount(nearest, minlength=len(x))
    alone = counts[nearest] == 1
    assert alone.sum() > 30 and torch.equal(sel.indices[alone], nearest[alone])
    # the labels are each point's nearest centroid, and the inertia their summed squared distances
    d2 = torch.cdist(x, sel.info['centroids'])**2
    assert torch.equal(sel.info['labels'], d2.argmin(1))
    assert sel.info['inertia'] == pytest.approx(d2.min(1).values.sum().item(), rel=1e-4)

def test_collisions_are_resolved_closest_first():
    x = torch.tensor([[0.], [1.], [2.], [10.]])
    c = torch.tensor([[0.3], [0.1], [0.2]])          # all three centroids want point 0
    _, _, ci, cd = _scan(x, c, m=2)                  # only 2 candidates each: the third must search again
    assert _distinct_medoids(x, c, ci, cd).tolist() == [2, 0, 1]

def test_minibatch_path_above_threshold():
    x, blob = toy_blobs(sizes=(40,) * 25, dim=6, seed=3)
    sel = spm(x, 25, seed=0, minibatch_threshold=500, batch_size=128)
    assert sel.info['kmeans'] == 'minibatch' and sel.info['params']['batch_size'] == 128
    assert distinct_in_range(sel, len(x), 25) and n_hit(blob, sel.indices) >= 23
    assert torch.equal(sel.indices, spm(x, 25, seed=0, minibatch_threshold=500, batch_size=128).indices)
    assert spm(x, 25, seed=0).info['kmeans'] == 'full'

def test_kmeans_overrides_and_bad_input():
    x = torch.randn(60, 4)
    assert spm(x, 5, n_init=3).info['params']['n_init'] == 3
    with pytest.raises(ValueError, match='k=61 from 60'): prototypes(x, 61)
    with pytest.raises(ValueError, match='k=0 from 60'): prototypes(x, 0)
    with pytest.raises(ValueError, match='2-D'): prototypes(torch.randn(60), 5)
    with pytest.raises(ValueError, match='non-finite'): prototypes(torch.full((6, 2), float('nan')), 2)

def test_chunked_scan_equals_direct():
    x, c = torch.randn(1000, 7), torch.randn(13, 7)
    full, parts = _scan(x, c, m=4), _scan(x, c, m=4, chunk=37)
    assert torch.equal(full[0], parts[0]) and torch.equal(full[2], parts[2])

# --- baselines -------------------------------------------------------------------------------------

def test_herding_first_pick_nearest_mean_and_matches_mean(blobs):
    x, _ = blobs
    h = herding(x, 20)
    assert h.indices[0] == (x - x.mean(0)).norm(dim=1).argmin()
    gap = lambda idx: (x[idx].mean(0) - x.mean(0)).norm()
    assert gap(h.indices) < min(gap(random_coreset(len(x), 20, seed=s).indices) for s in range(5))
    assert h.info['mean_gap'] == pytest.approx(gap(h.indices).item(), rel=1e-4)

def test_kcenter_picks_are_far_apart(blobs):
    x, blob = blobs
    mind = lambda idx: torch.pdist(x[idx]).min()
    for s in range(3):
        kc = k_center(x, 10, seed=s)
        assert mind(kc.indices) >= mind(random_coreset(len(x), 10, seed=s).indices)
        assert n_hit(blob, kc.indices) == 10
    a, b = k_center(x, 10, seed=0), k_center(x, 10, seed=1)
    assert a.indices[0] != b.indices[0] or not torch.equal(a.indices, b.indices)
    assert k_center(x, 10, seed=4).info['radius'] > 0

@pytest.mark.parametrize('name', sorted(SELECTORS))
def test_every_selector(name, blobs):
    x, _ = blobs
    for k in (1, 7, len(x)):
        assert distinct_in_range(select(name, x, k, seed=5), len(x), k)
    assert torch.equal(select(name, x, 7, seed=5).indices, select(name, x, 7, seed=5).indices)
    with pytest.raises(ValueError, match=f'k={len(x)+1} from {len(x)}'): select(name, x, len(x) + 1)

@pytest.mark.filterwarnings('ignore:Number of distinct clusters')
def test_duplicates_still_give_distinct_picks():
    x = torch.zeros(20, 3)                          # every point identical
    for name in SELECTORS: assert len(set(select(name, x, 5).indices.tolist())) == 5

def test_unknown_selector():
    with pytest.raises(ValueError, match=r"unknown selector 'bogus'; known: herding, kcenter, random, spm"):
        select('bogus', torch.zeros(3, 2), 1)

# --- features --------------------------------------------------------------------------------------

def test_joint_features():
    f = joint_features(torch.randn(5, 3), torch.randn(5, 4))
    assert f.shape == (5, 7) and torch.allclose(f.norm(dim=1), torch.full((5,), 2**.5))

def test_expert_features_are_pair_features_of_the_expert(tiny):
    store, train = tiny
    d = CFG.model.embed_dim
    f = expert_features(store, train)
    assert f.shape == (len(train), 2*d) and f.dtype == torch.float32
    assert torch.allclose(f[:, :d].norm(dim=1), torch.ones(len(train)), atol=1e-5)
    assert torch.allclose(f[:, d:].norm(dim=1), torch.ones(len(train)), atol=1e-5)
    assert torch.allclose(f, pair_features(expert_model(store, 1, -1), train), atol=1e-6)
    assert not torch.allclose(f, expert_features(store, train, epoch=0), atol=1e-3)
    with pytest.raises(StoreError, match='expert 0 is not in'): expert_features(store, train, expert=0)

def test_pair_features_text_half_is_caption_mean(tiny):
    store, train = tiny
    m, d = expert_model(store, 1), CFG.model.embed_dim
    t = torch.nn.functional.normalize(m.encode_text(train.text).detach(), dim=-1)
    i = 3; mean = t[train.caption_image == i].mean(0)
    assert torch.allclose(pair_features(m, train)[i, d:], mean / mean.norm(), atol=1e-5)

def test_pair_features_with_frozen_backbone(tiny, tmp_path):
    _, train = tiny
    cfg = CFG.override({'model.freeze_backbone': True})
    store = train_experts(cfg, tmp_path/'frozen', train, experts=[0], progress=False)
    m = expert_model(store, 0)
    f = pair_features(m, train, batch_size=5)
    assert m.image.frozen and f.shape == (len(train), 2*cfg.model.embed_dim) and torch.isfinite(f).all()
    assert torch.allclose(f, expert_features(store, train), atol=1e-5)

def test_expert_features_needs_a_finished_expert(tiny, tmp_path):
    store, train = tiny
    empty = TrajectoryStore.create(tmp_path/'empty', store.config, store.manifest['fingerprint'], store.layouts, store.manifest['text_dim'])
    with pytest.raises(StoreError, match='no finished expert'): expert_features(empty, train)

def test_clip_features_random_tiny_model(tiny, tmp_path):
    import open_clip
    _, train = tiny
    (tmp_path/'clip-tiny-test.json').write_text(json.dumps({'embed_dim': 8,
        'vision_cfg': {'image_size': 24, 'layers': 1, 'width': 16, 'patch_size': 12, 'head_width': 8},
        'text_cfg': {'context_length': 77, 'vocab_size': 49408, 'width': 16, 'heads': 2, 'layers': 1}}))
    open_clip.add_model_config(tmp_path)
    f = clip_features(train, 'clip-tiny-test', pretrained=None, batch_size=10)   # 16 px images resized to 24
    assert f.shape == (len(train), 16) and torch.allclose(f[:, :8].norm(dim=1), torch.ones(len(train)), atol=1e-5)

def test_clip_features_unavailable_weights(tiny):
    _, train = tiny
    with pytest.raises(RuntimeError, match='ViT-B-32/no-such-tag'): clip_features(train, 'ViT-B-32', 'no-such-tag')
    with pytest.raises(ValueError, match="unknown open_clip architecture 'NoSuchNet'"): clip_features(train, 'NoSuchNet', None)

def test_clip_features_offline_openai_weights(tiny):
    "The real default (ViT-B-32/openai) offline: a clear RuntimeError, no traceback noise from a silent fallback."
    _, train = tiny
    code = ("import torch; from amd_nb.spm import clip_features; from types import SimpleNamespace as N\n"
            "from amd_nb.data import PairSet\n"
            "s = N(pairs=PairSet('x', 'train', [['a cat']], ['0']), images=torch.zeros(1, 3, 8, 8, dtype=torch.uint8))\n"
            "try: clip_features(s)\n"
            "except RuntimeError as e: print('ERR', e)\n")
    env = {**os.environ, 'HF_HUB_OFFLINE': '1'}
    r = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=120)
    if 'ERR' not in r.stdout and r.returncode == 0: pytest.skip('ViT-B-32/openai weights are cached here')
    assert 'ERR could not load open_clip weights ViT-B-32/openai' in r.stdout, r.stdout + r.stderr

# --- UMAP ------------------------------------------------------------------------------------------

def test_umap_2d(blobs):
    x, _ = blobs
    n = torch.get_num_threads()
    u = umap_2d(x[::5], seed=0)
    assert torch.get_num_threads() == n          # numba's OpenMP pool would have set it to the core count
    assert u.shape == (len(x[::5]), 2) and u.dtype == torch.float32 and torch.isfinite(u).all()
    assert torch.equal(u, umap_2d(x[::5], seed=0))
    assert umap_2d(x[:3]).shape == (3, 2)
    with pytest.raises(ValueError, match='at least 3 points'): umap_2d(x[:2])

@pytest.mark.slow   # compiles umap-learn from scratch into an empty cache: ~1-3 min on 2 cores
def test_umap_2d_keeps_torch_threads_and_caches_compiled_code(blobs, tmp_path):
    "numba's OpenMP start-up put torch on one thread per core (a distillation after it ran ~8x slower on 2 shared cores); "
    "umap-learn's compiled code persists across processes in `numba_cache_dir()`."
    code = ("import torch; torch.set_num_threads(1)\n"
            "from amd_nb.spm import umap_2d, numba_cache_dir\n"
            "umap_2d(torch.randn(60, 8, generator=torch.Generator().manual_seed(0)))\n"
            "print(torch.get_num_threads(), numba_cache_dir())")
    env = {**os.environ, 'NUMBA_CACHE_DIR': str(tmp_path/'numba'), 'OMP_NUM_THREADS': '1'}
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ['1', str(tmp_path/'numba')]
    cached = {p.parent.name.split('_')[0] for p in (tmp_path/'numba').rglob('*.nbi')}
    assert cached == {'umap', 'pynndescent'}, cached                     # umap-learn's own functions too (it declares few cacheable)
