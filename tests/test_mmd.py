"MMD dynamic sampling on real (tiny) stores: caching, recomputation, estimator formulas against brute force."
import json, math, warnings
from pathlib import Path
import pytest, torch
import amd_nb.mmd
from amd_nb.config import get_preset
from amd_nb.data import load_split
from amd_nb.experts import train_experts, TrajectoryStore, StoreError
from amd_nb.models import MODALITIES
from amd_nb.models import ParamLayout
from amd_nb.mmd import (mmd_linear, mmd_rbf, median_bandwidth, update_magnitude, param_rows, windows_from_ratio,
                        mmd_curves, mmd_windows, mmd_file, MMDCurves)

CFG = get_preset('tiny').override({'expert.eval_every': 0, 'expert.epochs': 4})

@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "A real 2-expert × 4-epoch store and its training split (embedding cache in a temp dir)."
    root = tmp_path_factory.mktemp('mmd')
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('AMD_NB_CACHE', str(root/'cache'))
        train = load_split(CFG.data, 'train', progress=False)
        store = train_experts(CFG, root/'experts', train, progress=False)
        yield store, train

@pytest.fixture
def store(tiny, tmp_path):
    "A private copy of the tiny store (tests may add files to it)."
    src, _ = tiny
    dst = tmp_path/'experts'; dst.mkdir()
    for p in src.path.iterdir():
        if p.name == 'manifest.json' or p.name.startswith('expert_'): (dst/p.name).write_bytes(p.read_bytes())
    return TrajectoryStore(dst)

# --- estimators against brute-force formulas -------------------------------------------------

def k(a, b, s): return math.exp(-float(((a - b)**2).sum()) / (2 * s * s))

def brute(x, y, s, mode):
    "MMD² by explicit sums: 'biased' (V), 'unbiased' (U, independent samples), 'paired' (U over distinct pairs)."
    n, m = len(x), len(y)
    xx = [k(x[i], x[j], s) for i in range(n) for j in range(n) if mode == 'biased' or i != j]
    yy = [k(y[i], y[j], s) for i in range(m) for j in range(m) if mode == 'biased' or i != j]
    xy = [k(x[i], y[j], s) for i in range(n) for j in range(m) if mode != 'paired' or i != j]
    return sum(xx) / len(xx) + sum(yy) / len(yy) - 2 * sum(xy) / len(xy)

@pytest.mark.parametrize('mode', ['biased', 'unbiased', 'paired'])
def test_rbf_matches_brute_force(mode):
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g) + 0.3
    s = median_bandwidth(x, y)
    d = torch.pdist(torch.cat([x, y]).double()).sort().values                    # 66 distinct pairs
    assert s == pytest.approx(float(d[32] + d[33]) / 2, rel=1e-9)
    got = float(mmd_rbf(x, y, unbiased=mode != 'biased', paired=mode == 'paired'))
    assert got == pytest.approx(brute(x.double(), y.double(), s, mode), rel=1e-9, abs=1e-12)
    assert float(mmd_rbf(x, y, bandwidth=s, unbiased=mode != 'biased', paired=mode == 'paired')) == pytest.approx(got)

def test_rbf_unequal_sizes_and_errors():
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(4, 2, generator=g), torch.randn(7, 2, generator=g)
    assert float(mmd_rbf(x, y, 0.8)) == pytest.approx(brute(x.double(), y.double(), 0.8, 'unbiased'), rel=1e-9)
    with pytest.raises(ValueError, match='paired samples need n = m'): mmd_rbf(x, y, paired=True)
    with pytest.raises(ValueError, match='different dimensions'): mmd_rbf(x, torch.randn(4, 3))
    with pytest.raises(ValueError, match='bandwidth must be > 0'): mmd_rbf(x, y, bandwidth=0.)

def test_linear_is_mean_difference():
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(9, 4, generator=g), torch.randn(3, 4, generator=g)
    assert float(mmd_linear(x, y)) == pytest.approx(float((x.mean(0) - y.mean(0)).norm()), rel=1e-6)
    assert float(mmd_linear(x, y)) == float(mmd_linear(y, x))

def test_rows_rbf_is_weighted_per_tensor():
    "Rows + RBF: each tensor gets its own median bandwidth and paired estimate, combined by size."
    lay = ParamLayout(['w', 'b', 'ln'], [(5, 2, 2), (5,), (3,)])
    g = torch.Generator().manual_seed(6)
    prev = torch.randn(lay.numel, generator=g); cur = prev + 0.3 * torch.randn(lay.numel, generator=g)
    P, C = lay.unflatten(prev), lay.unflatten(cur)
    for unbiased in (True, False):
        want = sum(s / lay.numel * float(mmd_rbf(param_rows(P[n]), param_rows(C[n]), unbiased=unbiased, paired=unbiased))
                   for n, s in zip(lay.names, lay.sizes))
        assert update_magnitude(prev, cur, lay, kernel='rbf', unbiased=unbiased) == pytest.approx(want, rel=1e-12)

def test_proportional_modalities_give_constant_ratio(tmp_path):
    "Text trajectory = ½ × image trajectory (same layout): linear ratio ≡ 2, RBF (scale-free) ≡ 1 → full windows."
    lay = ParamLayout(['w', 'b'], [(6, 4), (6,)])
    cfg = CFG.override({'expert.epochs': 6})
    st = TrajectoryStore.create(tmp_path/'s', cfg, 'fp', {'image': lay, 'text': lay}, text_dim=4)
    g = torch.Generator().manual_seed(7)
    for i in range(2):
        im = torch.cumsum(torch.randn(7, lay.numel, generator=g) * torch.tensor([1., 1, .5, .3, .2, .1, .1])[:, None], 0)
        st.write(i, im, im / 2)
    for kernel, samples, r in (('linear', 'rows', 2.), ('linear', 'flat', 2.), ('rbf', 'rows', 1.)):
        c = mmd_windows(st, expert_epochs=2, kernel=kernel, samples=samples, unbiased=False)
        assert c.ratio == pytest.approx([r] * 6, rel=1e-5), (kernel, samples)
        assert c.windows == (4, 4)                          # nothing above the median: R_V = R_L = T − M

# --- mmd_windows on a real store ---------------------------------------------------------------

@pytest.mark.parametrize('kernel,samples,unbiased', [('linear', 'rows', True), ('linear', 'flat', True), ('rbf', 'rows', False)])
def test_windows_on_real_store(store, kernel, samples, unbiased):
    T = store.epochs
    for M in (1, 2, T):
        c = mmd_windows(store, M, kernel, samples, unbiased)   # M > 1 reuses the M = 1 curves
        assert len(c.image) == len(c.text) == len(c.ratio) == T == c.epochs
        assert 0 <= c.R_V <= T - M and 0 <= c.R_L <= T - M
        assert c.experts == [0, 1] and len(c.per_expert['image']) == 2
        assert (store.path/mmd_file(kernel, samples, M, unbiased)).exists()
    assert all(v > 0 for v in c.image + c.text)
    for m in MODALITIES:   # the averages are the per-expert means
        assert getattr(c, m) == pytest.approx([sum(v) / 2 for v in zip(*c.per_expert[m])], rel=1e-12)
    assert MMDCurves.load(store.path/mmd_file(kernel, samples, T, unbiased)) == c

def test_curves_are_update_magnitudes(store):
    per = mmd_curves(store, samples='flat')
    for i in (0, 1):
        tr = store[i]
        for m in MODALITIES:
            want = [float((tr[m][t].double() - tr[m][t-1].double()).norm()) for t in range(1, store.epochs + 1)]
            assert per[m][i] == pytest.approx(want, rel=1e-9)
    rows = mmd_curves(store, experts=[1])
    assert rows['text'][0][0] == pytest.approx(update_magnitude(store[1].text[0], store[1].text[1], store.layouts['text']))

def test_cache_reuse_and_invalidation(store):
    f = store.path/mmd_file('linear', 'rows', 1)
    c1 = mmd_windows(store)
    stamp = f.stat().st_mtime_ns
    assert mmd_windows(store) == c1 and f.stat().st_mtime_ns == stamp           # reused, not rewritten
    mmd_windows(store, cache=False)
    assert f.stat().st_mtime_ns != stamp                                         # cache=False recomputes and saves
    stamp = f.stat().st_mtime_ns
    c_eps = mmd_windows(store, eps=1e-3)                                         # other settings: recomputed
    assert c_eps.eps == 1e-3 and f.stat().st_mtime_ns != stamp
    assert mmd_windows(store, experts=[0]).experts == [0]                        # another expert set: recomputed
    mmd_windows(store)
    stale = json.loads(f.read_text()); stale['R_V'] = stale['R_V'] + 1; f.write_text(json.dumps(stale))
    assert mmd_windows(store) == c1                                              # windows that don't follow from the ratio: redone
    f.write_text('{ not json')                                                   # a damaged file is recomputed
    assert mmd_windows(store) == c1
    assert MMDCurves.load(f) == c1

def test_other_M_reuses_saved_curves(store, monkeypatch):
    c1 = mmd_windows(store, expert_epochs=1, kernel='rbf', unbiased=False)
    def fail(*a, **kw): raise AssertionError('recomputed')
    monkeypatch.setattr(amd_nb.mmd, 'mmd_curves', fail)
    c3 = mmd_windows(store, expert_epochs=3, kernel='rbf', unbiased=False)     # windows from the M=1 file's curves
    assert c3.per_expert == c1.per_expert and c3.expert_epochs == 3 and c3.windows == (1, 1)
    assert (store.path/mmd_file('rbf', 'rows', 3, False)).exists()
    with pytest.raises(AssertionError, match='recomputed'): mmd_windows(store, expert_epochs=3, kernel='rbf')  # unbiased: other curves
    with pytest.raises(AssertionError, match='recomputed'): mmd_windows(store, expert_epochs=2, kernel='rbf', unbiased=False, cache=False)

def test_settings_get_their_own_files(store):
    names = {mmd_file(k, s, 1, u) for k, s, u in [('linear', 'rows', True), ('linear', 'flat', True),
                                                 ('rbf', 'rows', True), ('rbf', 'rows', False)]}
    assert len(names) == 4
    assert mmd_windows(store, kernel='linear', unbiased=True).unbiased is False   # linear: plug-in estimate
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')                                           # tiny tensors: unbiased RBF may dip below 0
        assert mmd_windows(store, kernel='rbf').unbiased is True
    assert mmd_windows(store, kernel='rbf', unbiased=False).unbiased is False
    assert {p.name for p in store.path.glob('mmd_*.json')} == {'mmd_linear_rows_M1_intent.json', 'mmd_rbf_rows_M1_intent.json', 'mmd_rbf-biased_rows_M1_intent.json'}
    assert mmd_windows(store, rule='literal').rule == 'literal' and (store.path/'mmd_linear_rows_M1.json').exists()   # each rule its own file

def test_recompute_after_new_expert(store, tiny):
    _, train = tiny
    c2 = mmd_windows(store, expert_epochs=2)
    f = store.path/mmd_file('linear', 'rows', 2)
    stamp = f.stat().st_mtime_ns
    train_experts(CFG.override({'expert.n_experts': 3}), store.path, train, progress=False)
    store = TrajectoryStore(store.path)
    c3 = mmd_windows(store, expert_epochs=2)
    assert c3.experts == [0, 1, 2] and len(c3.per_expert['text']) == 3 and f.stat().st_mtime_ns != stamp
    assert c3.per_expert['image'][:2] == c2.per_expert['image']                  # old experts' curves unchanged
    assert MMDCurves.load(f) == c3

def test_unsaved_when_store_is_read_only(store, monkeypatch):
    import amd_nb.mmd
    def refuse(path, obj): raise PermissionError(f"read-only: {path}")
    monkeypatch.setattr(amd_nb.mmd, 'atomic_write_json', refuse)
    with pytest.warns(UserWarning, match='MMD curves not saved'): c = mmd_windows(store)
    assert len(c.ratio) == store.epochs and not list(store.path.glob('mmd_*.json'))

def test_bad_requests(store):
    with pytest.raises(StoreError, match=r'experts \[5\] are not in'): mmd_windows(store, experts=[5])
    with pytest.raises(ValueError, match='degenerate'): mmd_windows(store, kernel='rbf', samples='flat')
    with pytest.raises(ValueError, match='expert_epochs must be in 1..4'): mmd_windows(store, expert_epochs=5)
    with pytest.raises(StoreError, match='no trajectory store'): mmd_windows(store.path/'nope')
    assert mmd_windows(str(store.path)).epochs == 4                                # a path works too
