"amd_nb.viz: figure structure (trace names, axes, data lengths, window bounds, counts), the window distribution, the dashboard (text, widget, Stop, background) and the window explorer."
import dataclasses, io, json, math, re
from pathlib import Path
from types import SimpleNamespace
import pytest, torch
import plotly.graph_objects as go
import plotly.io as pio
from amd_nb.config import get_preset
from amd_nb.data import load_split
from amd_nb.experts import train_experts
from amd_nb.distill import Distiller, Callback
from amd_nb.matching import start_epoch_sampler
from amd_nb.mmd import MMDCurves
from amd_nb.models import HALF_MEAN, HALF_STD
from amd_nb.synthetic import SyntheticSet
from amd_nb.evaluate import METRICS
from amd_nb.viz import *

# ---------------------------------------------------------------- inputs built by hand

def syn_set(B=6, size=8, d=4, seed=0)->SyntheticSet:
    g = torch.Generator().manual_seed(seed)
    return SyntheticSet(torch.randn(B, 3, size, size, generator=g), torch.randn(B, d, generator=g), 0.1, 0.1,
                        meta={'mean': list(HALF_MEAN), 'std': list(HALF_STD)})

def fake_split(texts:torch.Tensor, captions:list[str]):
    "What `nearest_captions` reads of an EncodedSplit: text embeddings, captions, encoder."
    return SimpleNamespace(text=texts, encoder=None, pairs=SimpleNamespace(flat_captions=captions))

def record(i, tv=0, tl=0, ok=True, loss=1.0, **kw):
    return dict(iteration=i, expert=0, t_image=tv, t_text=tl, ok=ok, loss=loss, loss_image=loss / 2, loss_text=loss / 2,
                lr_image=0.1, lr_text=0.1, seconds=0.01, **kw)

CURVES = MMDCurves.from_magnitudes({'image': [[1., .5, .1, .05, .02], [1.2, .4, .12, .04, .03]],
                                    'text': [[.1, .1, .12, .1, .1], [.1, .12, .1, .1, .09]]}, expert_epochs=1)

def names(fig): return [t.name for t in fig.data]

# ---------------------------------------------------------------- renderer

def test_setup_docs_renderer():
    old = pio.renderers.default
    try:
        assert setup_docs_renderer() == old and pio.renderers.default == 'notebook_connected'
        setup_docs_renderer('plotly_mimetype+notebook_connected')
        assert pio.renderers.default == 'plotly_mimetype+notebook_connected'
    finally: pio.renderers.default = old

def test_connected_html_is_small():
    "A figure under the docs renderer is HTML that loads plotly.js from the CDN, not a multi-MB inline copy."
    fig = mmd_figure(CURVES)
    html = pio.renderers['notebook_connected'].to_mimebundle(fig.to_dict())['text/html']
    assert 'cdn.plot.ly' in html and len(html) < 100_000

# ---------------------------------------------------------------- prototypes

def test_prototype_figure_traces():
    xy, labels = torch.randn(30, 2), torch.arange(30) % 5
    caps = [f"caption {i}" for i in range(30)]
    fig = prototype_figure(xy, labels, torch.tensor([0, 6, 12]), [1, 2, 3], caps)
    assert names(fig) == ['points', 'SPM prototypes', 'random']
    assert [len(t.x) for t in fig.data] == [30, 3, 3]
    assert list(fig.data[1].x) == pytest.approx(xy[[0, 6, 12], 0].tolist())
    assert fig.data[1].text == ('caption 0', 'caption 6', 'caption 12')
    assert len(set(fig.data[0].marker.color)) == 5
    assert 'caption' in fig.data[0].hovertemplate or '%{text}' in fig.data[0].hovertemplate

def test_prototype_figure_many_clusters_and_defaults():
    fig = prototype_figure(torch.randn(60, 2), torch.arange(60), [0])         # 60 clusters: the palette cycles
    assert len(set(fig.data[0].marker.color)) == len(PALETTE)
    assert names(prototype_figure(torch.randn(4, 2), None, [0, 1])) == ['points', 'SPM prototypes']
    big = prototype_figure(torch.randn(500, 2), torch.arange(500), [7, 420], random=[1, 2], max_points=50)
    assert [len(t.x) for t in big.data] == [50, 2, 2] and len(big.data[0].marker.color) == 50     # background subsampled, marks kept
    assert len(set(big.data[0].customdata.tolist())) == 50
    with pytest.raises(ValueError, match='3 captions for 4 points'): prototype_figure(torch.randn(4, 2), None, [0], captions=['a'] * 3)
    with pytest.raises(ValueError, match=r'coords must be \[N, 2\]'): prototype_figure(torch.randn(4), None, [0])

def test_prototype_figure_takes_selections():
    from amd_nb.spm import spm, random_coreset, toy_blobs
    x, _ = toy_blobs(sizes=(5, 8, 11), dim=4)
    sel = spm(x, 3)
    fig = prototype_figure(x[:, :2], sel.info['labels'], sel, random_coreset(len(x), 3))
    assert list(fig.data[1].customdata) == sel.indices.tolist()

# ---------------------------------------------------------------- MMD

def test_mmd_figure_windows_are_RV_RL():
    fig = mmd_figure(CURVES)
    bands = {s.name: (s.x0, s.x1) for s in fig.layout.shapes}
    assert bands == {'image window [0, R_V]': (0, CURVES.R_V), 'text window [0, R_L]': (0, CURVES.R_L)}
    assert CURVES.R_V != CURVES.R_L                        # the test tells the two apart
    main = [n for n in names(fig) if 'expert' not in n]
    assert main == ['image', 'text', 'ratio', 'median']
    assert len(fig.data) == 4 + 2 * len(CURVES.experts)
    tr = {t.name: t for t in fig.data}
    assert list(tr['image'].x) == [1, 2, 3, 4, 5] and tuple(tr['ratio'].y) == tuple(CURVES.ratio)
    assert set(tr['median'].y) == {CURVES.median}
    assert fig.layout.yaxis.title.text == 'MMD' and fig.layout.yaxis2.title.text == 'ratio'
    assert fig.layout.xaxis2.title.text.startswith('epoch')

def test_mmd_figure_without_experts_and_rbf():
    c = dataclasses.replace(CURVES, kernel='rbf', R_V=0)
    fig = mmd_figure(c, per_expert=False)
    assert names(fig) == ['image', 'text', 'ratio', 'median']
    assert fig.layout.yaxis.title.text == 'MMD²' and fig.layout.shapes[0].x1 == 0

# ---------------------------------------------------------------- sampling

@pytest.mark.parametrize('R_V,R_L,gap,T,M', [(2, 4, 1, 6, 1), (3, 1, None, 5, 2), (0, 5, None, 6, 1), (4, 4, 0, 5, 1)])
def test_window_distribution_matches_the_sampler(R_V, R_L, gap, T, M):
    P = window_distribution(R_V, R_L, gap, T, M)
    top = T - M
    assert P.shape == (top + 1, top + 1) and math.isclose(float(P.sum()), 1.0)
    tv, tl = torch.meshgrid(torch.arange(top + 1), torch.arange(top + 1), indexing='ij')
    outside = (tv > min(R_V, top)) | (tl > min(R_L, top)) | ((tv - tl).abs() > gap if gap is not None else torch.zeros_like(tv, dtype=torch.bool))
    assert (P[outside] == 0).all() and (P[~outside] == P[~outside][0]).all()     # uniform inside, zero outside
    s, g, n = start_epoch_sampler('amd', R_V=R_V, R_L=R_L, max_gap=gap), torch.Generator().manual_seed(1), 3000
    emp = torch.zeros_like(P)
    for _ in range(n):
        d = s(g, T, M); emp[d.image, d.text] += 1 / n
    p = float(P.max())
    assert (emp - P).abs().max() < 5 * math.sqrt(p * (1 - p) / n) + 1e-12

def test_window_distribution_sync_and_errors():
    assert torch.equal(window_distribution(1, 1, 0, 4), torch.diag(torch.tensor([.5, .5, 0., 0.], dtype=torch.float64)))
    with pytest.raises(ValueError, match='expert_epochs'): window_distribution(1, 1, None, 2, 3)
    with pytest.raises(ValueError, match='must be ≥ 0'): window_distribution(-1, 1, None, 4)
    with pytest.raises(ValueError, match='must be ≥ 0'): window_distribution(1, 1, -2, 4)

def test_sampling_figure_counts_and_diagonal():
    sync = [record(i + 1, i % 4, i % 4) for i in range(20)]
    fig = sampling_figure(sync, epochs=5)
    z = torch.tensor(fig.data[0].z)
    assert z.shape == (5, 5) and z.sum() == 20 and torch.equal(z, torch.diag(z.diagonal()))
    assert names(fig) == ['draws', 't_image', 't_text']
    assert fig.layout.xaxis.title.text == 'image start epoch t_V' and fig.layout.yaxis.title.text == 'text start epoch t_L'
    assert fig.layout.xaxis2.title.text == 'iteration' and len(fig.data[1].x) == 20

def test_sampling_figure_async_orientation_and_outline():
    hist = [record(1, 0, 3), record(2, 0, 3, ok=False), record(3, 2, 1)]
    fig = sampling_figure(hist, epochs=4, windows=(2, 3))
    assert torch.equal(torch.tensor(fig.data[0].z).T, start_epoch_counts(hist, 4))
    assert start_epoch_counts(hist, 4)[0, 3] == 2                                # rejected iterations count too
    (box,) = [s for s in fig.layout.shapes if s.name == 'allowed']
    assert (box.x1, box.y1) == (2.5, 3.5)
    assert len(sampling_figure(hist).data[0].z) == 4                             # grid from the largest draw
    with pytest.raises(ValueError, match=r'iteration 1 drew \(t_image=0, t_text=3\), outside the 0..2 grid'): sampling_figure(hist, epochs=4, expert_epochs=2)

# ---------------------------------------------------------------- run curves

def test_run_figure():
    hist = [record(1, loss=2.), record(2, loss=float('nan'), ok=False), record(3, loss=1.5)]
    fig = run_figure(hist)
    assert names(fig) == ['loss', 'loss_image', 'loss_text', 'lr_image', 'lr_text', 'rejected']
    tr = {t.name: t for t in fig.data}
    assert tr['loss'].y[[0, 2]].tolist() == [2., 1.5] and math.isnan(tr['loss'].y[1])
    assert list(tr['rejected'].x) == [2] and list(tr['rejected'].y) == [2.]
    assert fig.layout.xaxis2.title.text == 'iteration'
    assert [a.text for a in fig.layout.annotations] == ['matching loss', 'learned inner learning rates']
    sim = run_figure([{**r, 'sim_diag': 1., 'sim_offdiag': .1} for r in hist])
    assert names(sim)[-3:] == ['mean diagonal', 'mean |off-diagonal|', 'rejected'] and sim.layout.xaxis3.title.text == 'iteration'
    assert len(run_figure([]).data) == 6

# ---------------------------------------------------------------- synthetic images

def test_synthetic_figure_grid_and_titles():
    syn = syn_set(B=6)
    caps = ['first caption', 'second caption here', 'third']
    split = fake_split(torch.stack([syn.text[2].detach(), -syn.text[2].detach(), torch.ones(4)]), caps)
    fig = synthetic_figure(syn, split, n=5, cols=3)
    assert len(fig.data) == 5 and {t.type for t in fig.data} == {'image'}
    assert all(t.source.startswith('data:image/png;base64,') for t in fig.data)
    assert fig.layout.annotations[2].text == 'first caption'                       # text 2 is nearest to caption 0
    assert 'first caption' in fig.data[2].hovertemplate
    assert fig.layout.xaxis.visible is False

def test_synthetic_figure_before_after():
    syn, before = syn_set(B=6, seed=0), syn_set(B=6, seed=1)
    fig = synthetic_figure(syn, n=4, cols=2, before=before)
    assert len(fig.data) == 8 and names(fig)[:4] == [f'synthetic {i}' for i in range(4)] and names(fig)[4:] == [f'initial {i}' for i in range(4)]
    assert [a.text for a in fig.layout.annotations] == ['#0', '#1', '#2', '#3', 'initial #0', 'initial #1', 'initial #2', 'initial #3']
    assert fig.data[0].source != fig.data[4].source
    assert len(synthetic_figure(syn, n=100).data) == 6                            # at most B

# ---------------------------------------------------------------- comparison

def row(m, b, v, n=3): return dict(method=m, budget=b, n=n, mean={k: v for k in METRICS}, std={k: v / 10 for k in METRICS})
RESULT = {'rows': {'full': row('full', None, 40.), 'random@50': row('random', 50, 4.), 'amd@50': row('amd', 50, 10.),
                   'random@100': row('random', 100, 6.), 'amd@100': row('amd', 100, 14.)}, 'protocol': 'protocol text'}

def test_comparison_figure(tmp_path):
    fig = comparison_figure(RESULT)
    assert names(fig) == ['IR@1', 'IR@5', 'IR@10'] and fig.layout.barmode == 'group'
    assert fig.data[0].x == tuple(RESULT['rows']) and fig.data[0].y == (40., 4., 10., 6., 14.)
    assert fig.data[0].error_y.array == (4., .4, 1., .6, 1.4)
    assert fig.layout.yaxis.title.text == 'recall@K (%)' and fig.layout.meta['protocol'] == 'protocol text'
    (tmp_path/'comparison.json').write_text(json.dumps(RESULT))
    for src in (tmp_path, tmp_path/'comparison.json', str(tmp_path)):
        assert comparison_figure(src, ('TR@5',)).data[0].y == (40., 4., 10., 6., 14.)

def test_comparison_figure_by_budget_and_errors(tmp_path):
    fig = comparison_figure(RESULT, ('IR@10',), group='budget')
    assert [(t.name, t.x) for t in fig.data] == [('all data', ('full',)), ('B=50', ('random', 'amd')), ('B=100', ('random', 'amd'))]
    assert fig.layout.yaxis.title.text == 'IR@10 (%)'
    with pytest.raises(ValueError, match='one metric'): comparison_figure(RESULT, group='budget')
    with pytest.raises(ValueError, match="group must be 'metric' or 'budget'"): comparison_figure(RESULT, group='method')
    with pytest.raises(ValueError, match=r"unknown metrics \['R@1'\]"): comparison_figure(RESULT, ('R@1',))
    (tmp_path/'bad.json').write_text('{"rows": ')
    with pytest.raises(ValueError, match='cannot read a comparison from'): comparison_figure(tmp_path/'bad.json')
    (tmp_path/'other.json').write_text('{}')
    with pytest.raises(ValueError, match='is not a comparison.json'): load_comparison(tmp_path/'other.json')

# ---------------------------------------------------------------- dashboard

def fake_distiller(T=4, M=1, iterations=7):
    d = SimpleNamespace(history=[], syn=syn_set(), iteration=0, stopped=False, callbacks=[],
                        dc=SimpleNamespace(iterations=iterations, expert_epochs=M), store=SimpleNamespace(epochs=T))
    d.stop = lambda: setattr(d, 'stopped', True)
    return d

def drive(dash, d, n):
    "What `Distiller.run` does with a callback, for n iterations."
    dash.on_start(d)
    for i in range(1, n + 1):
        rec = record(i, i % 3, (i + 1) % 4, ok=i != 4, loss=float('nan') if i == 4 else 1 / i)
        d.history.append(rec); d.iteration = i
        dash.on_iteration(d, rec)
    dash.on_end(d)

def test_dashboard_figure_updates_in_place():
    hist = [record(i, i % 2, 1) for i in range(1, 31)]
    fig = dashboard_figure(size=3)
    assert names(fig) == ['loss', 'loss_image', 'loss_text', 'lr_image', 'lr_text', 'rejected', 'draws', 'images']
    traces = [id(t) for t in fig.data]
    out = update_dashboard(fig, hist, syn_set())
    assert out is fig and [id(t) for t in fig.data] == traces
    assert len(fig.data[0].x) == 30 and torch.tensor(fig.data[6].z).sum() == 30
    assert fig.data[7].source.startswith('data:image/png')
    src = fig.data[7].source
    update_dashboard(fig, hist[:5])                        # no set given: the images stay
    assert len(fig.data[0].x) == 5 and fig.data[7].source == src

def test_dashboard_text_mode():
    buf, d = io.StringIO(), fake_distiller()
    dash = Dashboard(every=3, mode='text', file=buf)
    drive(dash, d, 7)
    lines = buf.getvalue().splitlines()
    assert [l.split(' |')[0] for l in lines] == ['it 3/7', 'it 6/7', 'it 7/7']      # every 3, and the last
    assert '1 rejected' in lines[1] and 't=(' in lines[0] and dash.figure is None and not dash.widget
    assert summary_line(record(2, 1, 3), 10, 0).startswith('it 2/10 | loss 1 (image 0.5, text 0.5)')

def test_dashboard_arguments_and_auto_mode():
    assert not in_notebook()                                # pytest has no kernel
    assert not Dashboard().widget and Dashboard(mode='widget').widget
    with pytest.raises(ValueError, match="mode must be"): Dashboard(mode='html')
    with pytest.raises(ValueError, match='every must be'): Dashboard(every=0)

def test_dashboard_widget_mode_and_stop_button():
    d = fake_distiller(T=5, M=2)
    dash = Dashboard(every=2, mode='widget', images=4)
    dash.on_start(d)
    assert isinstance(dash.figure, go.FigureWidget) and len(dash.figure.data[6].z) == 4      # T − M + 1
    traces = [id(t) for t in dash.figure.data]
    for i in range(1, 5):
        rec = record(i, 1, 2); d.history.append(rec); d.iteration = i; dash.on_iteration(d, rec)
    assert len(dash.figure.data[0].x) == 4 and [id(t) for t in dash.figure.data] == traces
    assert dash.status.value.startswith('it 4/7')
    dash.button.click()
    assert d.stopped and dash.button.disabled
    dash.on_end(d)
    assert dash.button.description == 'stopped'

# ---------------------------------------------------------------- with a real distiller

@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp('viz')
    cfg = get_preset('tiny').override({'expert.eval_every': 0, 'expert.epochs': 3, 'distill.max_start_epoch': 2})
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, cache_dir=str(root/'cache')))
    train = load_split(cfg.data, 'train', progress=False)
    store = train_experts(cfg, root/'experts', train, progress=False)
    return root, cfg, train, store

class Press(Callback):
    "Click the dashboard's Stop button at iteration `at`."
    def __init__(self, dash, at): self.dash, self.at = dash, at
    def on_iteration(self, d, rec):
        if rec['iteration'] == self.at: self.dash.button.click()

def test_stop_button_ends_a_real_run_with_a_checkpoint(tiny):
    root, cfg, train, store = tiny
    dash = Dashboard(every=2, mode='widget')
    d = Distiller(cfg.override({'distill.method': 'amd', 'distill.iterations': 20}), store, train, root/'stop', callbacks=[dash], progress=False)
    d.callbacks.append(Press(dash, 3))
    d.run()
    assert d.iteration == 3 and (root/'stop'/'checkpoint.safetensors').exists() and not (root/'stop'/'synthetic').exists()
    assert len(dash.figure.data[0].x) == 3 and torch.tensor(dash.figure.data[6].z).sum() == 3
    assert dash.button.description == 'stopped'
    sampling_figure(d.history, store.epochs, cfg.distill.expert_epochs, (d.sampler.R_V, d.sampler.R_L))
    run_figure(d.history); synthetic_figure(d.syn, train, n=4)

def test_run_in_background(tiny, capsys):
    root, cfg, train, store = tiny
    dash = Dashboard(every=2, mode='text')
    d = Distiller(cfg.override({'distill.method': 'lors', 'distill.iterations': 5}), store, train, progress=False)
    dash.run_in_background(d).join(timeout=120)
    assert not dash.thread.is_alive() and dash.error is None and dash.result is d.syn and d.iteration == 5
    assert dash in d.callbacks
    assert re.findall(r'^it (\d)/5', capsys.readouterr().out, re.M) == ['2', '4', '5']

def test_run_in_background_reports_errors(tiny):
    root, cfg, train, store = tiny
    class Boom(Callback):
        def on_iteration(self, d, rec): raise RuntimeError('boom')
    buf = io.StringIO()
    dash = Dashboard(mode='text', file=buf)
    d = Distiller(cfg.override({'distill.method': 'mtt_vl', 'distill.iterations': 5}), store, train, callbacks=[Boom()], progress=False)
    dash.run_in_background(d).join(timeout=120)
    assert isinstance(dash.error, RuntimeError) and dash.result is None and 'RuntimeError: boom' in buf.getvalue()

# ---------------------------------------------------------------- window explorer

def test_window_figure():
    fig = window_figure(1, 3, None, 5, 2)
    assert torch.equal(torch.tensor(fig.data[0].z).T, window_distribution(1, 3, None, 5, 2))
    assert fig.layout.title.text.endswith('8 pairs')

def test_window_explorer_sliders_drive_the_figures():
    ex = window_explorer(CURVES)
    top = CURVES.epochs - CURVES.expert_epochs
    assert [s.value for s in ex.sliders.values()] == [CURVES.R_V, CURVES.R_L, top] and all(s.max == top for s in ex.sliders.values())
    mf, fw = ex.figures
    ex.sliders['R_V'].value, ex.sliders['R_L'].value, ex.sliders['max_gap'].value = 3, 2, 1
    assert torch.equal(torch.tensor(fw.data[0].z).T, window_distribution(3, 2, 1, CURVES.epochs, CURVES.expert_epochs))
    assert (mf.layout.shapes[0].x1, mf.layout.shapes[1].x1) == (3, 2)
    assert fw.layout.title.text.startswith('R_V=3, R_L=2, max_gap=1')

def test_window_explorer_without_curves():
    ex = window_explorer(None, epochs=6, expert_epochs=2)
    assert len(ex.figures) == 1 and ex.sliders['R_V'].value == 4 and len(ex.figures[0].data[0].z) == 5
    with pytest.raises(ValueError, match='needs `epochs`'): window_explorer()

# ---------------------------------------------------------------- dependency direction

def test_nothing_else_imports_viz():
    pkg = Path(__import__('amd_nb').__file__).parent
    for f in pkg.glob('*.py'):
        if f.name in ('viz.py', 'report.py', '_modidx.py'): continue     # the report draws with viz, like a user would
        assert not re.search(r'(amd_nb\.viz|from \.viz|from \. import viz)', f.read_text()), f"{f.name} imports amd_nb.viz"
