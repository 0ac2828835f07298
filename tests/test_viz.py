"amd_nb.viz: figure structure (trace names, axes, data lengths, window bounds, counts), the window distribution, the dashboard (text, widget, Stop, background) and the window explorer."
import asyncio, base64, dataclasses, io, json, math, os, re, threading, time
import numpy as np
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

def test_setup_docs_renderer(monkeypatch):
    "Ours replaces plotly's automatic defaults only; a renderer the user chose stays unless forced."
    monkeypatch.delenv('PLOTLY_RENDERER', raising=False)
    monkeypatch.setattr(pio.renderers, 'default', 'plotly_mimetype')              # plotly's default in a Jupyter kernel
    assert setup_docs_renderer() == DOCS_RENDERER == 'plotly_mimetype+cdn_html' == pio.renderers.default
    monkeypatch.setattr(pio.renderers, 'default', 'browser')
    assert setup_docs_renderer() == 'browser' == pio.renderers.default
    assert setup_docs_renderer('notebook', force=True) == 'notebook'
    monkeypatch.setenv('PLOTLY_RENDERER', 'plotly_mimetype')                       # chosen in the environment: kept
    monkeypatch.setattr(pio.renderers, 'default', 'plotly_mimetype')
    assert setup_docs_renderer() == 'plotly_mimetype'

def test_docs_renderer_draws_offline_in_jupyterlab_and_online_in_quarto():
    "The JSON mimetype (JupyterLab's plotly extension, no network) and a small HTML that loads plotly.js from the CDN (Quarto)."
    b = pio.renderers._build_mime_bundle(mmd_figure(CURVES).to_dict(), DOCS_RENDERER)
    assert b['application/vnd.plotly.v1+json']['data'][0]['name'].endswith('expert 0')
    assert 'cdn.plot.ly' in b['text/html'] and len(b['text/html']) < 100_000

def test_docs_renderer_adds_no_output_of_its_own(monkeypatch):
    "notebook_connected puts a CDN-only <script> output before the first figure (an error offline); ours does not."
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output
    InteractiveShell.instance()
    monkeypatch.setattr(pio.renderers, 'default', DOCS_RENDERER)
    with capture_output() as cap: go.Figure(go.Bar(y=[1])).show()
    assert [set(o.data) >= {'application/vnd.plotly.v1+json', 'text/html'} for o in cap.outputs] == [True]

# ---------------------------------------------------------------- prototypes

def test_prototype_figure_traces():
    xy, labels = torch.randn(30, 2), torch.arange(30) % 5
    caps = [f"caption {i}" for i in range(30)]
    fig = prototype_figure(xy, labels, torch.tensor([0, 6, 12]), [1, 2, 3], caps)
    assert names(fig) == ['pairs, coloured by K-means cluster (K = 5)', 'SPM prototypes', 'random']    # the colours say what they are
    assert [len(t.x) for t in fig.data] == [30, 3, 3]
    assert list(fig.data[1].x) == pytest.approx(xy[[0, 6, 12], 0].tolist())
    assert fig.data[1].text == ('cluster 0 · caption 0', 'cluster 1 · caption 6', 'cluster 2 · caption 12')
    assert len(set(fig.data[0].marker.color)) == 5
    assert 'caption' in fig.data[0].hovertemplate or '%{text}' in fig.data[0].hovertemplate

def test_prototype_figure_many_clusters_and_defaults():
    fig = prototype_figure(torch.randn(60, 2), torch.arange(60), [0])         # 60 clusters: the palette cycles
    assert len(set(fig.data[0].marker.color)) == len(PALETTE)
    assert names(prototype_figure(torch.randn(4, 2), None, [0, 1])) == ['pairs', 'SPM prototypes']
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

def window_rows(fig)->dict: return {t.name: (list(t.x), set(t.y), t.yaxis) for t in fig.data if 'window' in t.name}

def test_mmd_figure_windows_are_RV_RL():
    fig = mmd_figure(CURVES)
    assert window_rows(fig) == {f'image window t_V ≤ {CURVES.R_V}': (list(range(CURVES.R_V + 1)), {'t_V'}, 'y3'),
                                f'text window t_L ≤ {CURVES.R_L}': (list(range(CURVES.R_L + 1)), {'t_L'}, 'y3')}
    assert CURVES.R_V != CURVES.R_L                        # the test tells the two apart
    assert fig.layout.shapes == ()                         # no band tints the curves or the gap between panels
    main = [n for n in names(fig) if 'expert' not in n and 'window' not in n]
    assert main == ['image', 'text', 'ratio', 'median']
    assert len(fig.data) == 6 + 2 * len(CURVES.experts)
    tr = {t.name: t for t in fig.data}
    assert list(tr['image'].x) == [1, 2, 3, 4, 5] and tuple(tr['ratio'].y) == tuple(CURVES.ratio)
    assert set(tr['median'].y) == {CURVES.median}
    assert fig.layout.yaxis.title.text == 'MMD' and fig.layout.yaxis2.title.text == 'ratio'
    assert fig.layout.xaxis3.title.text.startswith('epoch') and fig.layout.xaxis3.dtick == 1
    assert [a.text for a in fig.layout.annotations][-1] == 'start-epoch windows'

def test_mmd_figure_without_experts_and_rbf():
    c = dataclasses.replace(CURVES, kernel='rbf', R_V=0)
    fig = mmd_figure(c, per_expert=False)
    assert names(fig)[:4] == ['image', 'text', 'ratio', 'median']
    assert fig.layout.yaxis.title.text == 'MMD²' and window_rows(fig)['image window t_V ≤ 0'][0] == [0]

def test_mmd_figure_draws_two_window_rules():
    "Windows of two rules (a dict) as rows one under the other, named; the title gives both and the curves' own."
    fig = mmd_figure(CURVES, windows={'literal': (4, 1), 'intent': (1, 3)})
    rows = window_rows(fig)
    assert list(rows) == ['literal: image window t_V ≤ 4', 'literal: text window t_L ≤ 1', 'intent: image window t_V ≤ 1', 'intent: text window t_L ≤ 3']
    assert rows['intent: text window t_L ≤ 3'][:2] == ([0, 1, 2, 3], {'intent t_L'})
    assert fig.layout.yaxis3.categoryarray == ('intent t_L', 'intent t_V', 'literal t_L', 'literal t_V')
    assert fig.layout.title.text.startswith('MMD dynamic sampling: literal: R_V = 4, R_L = 1; intent: R_V = 1, R_L = 3 (the curves give')

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
    (box,) = fig.layout.shapes
    assert (box.x1, box.y1, box.name, box.showlegend) == (2.5, 3.5, 'windows t_V ≤ 2, t_L ≤ 3', True)   # named in the legend
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

def test_run_figure_reads_at_a_glance():
    "Whole iterations on a short run, one legend per panel (so loss_image and cos_image are not two blue lines in one legend), S in colours."
    hist = [{**record(i), 'cos_image': .1, 'cos_text': .2, 'sim_diag': 1., 'sim_offdiag': .01, 'sim_offdiag_max': .1} for i in (1, 2, 3)]
    fig = run_figure(hist)
    assert fig.layout.xaxis.dtick == 1 and fig.layout.xaxis4.dtick == 1
    by_legend = {}
    for t in fig.data: by_legend.setdefault(t.legend, []).append(t.name)
    assert by_legend == {'legend': ['loss', 'loss_image', 'loss_text', 'rejected'], 'legend2': ['cos_image', 'cos_text'],
                         'legend3': ['lr_image', 'lr_text'], 'legend4': ['mean diagonal', 'mean |off-diagonal|', 'max |off-diagonal|']}
    for i in range(1, 5):                                   # each legend at the top of its panel
        key = f"legend{i if i > 1 else ''}"
        assert fig.layout[key].y == fig.layout[f"yaxis{i if i > 1 else ''}"].domain[1]
    s = [t for t in fig.data if t.legend == 'legend4']
    assert len({(t.line.color, t.line.dash) for t in s}) == 3 and not {t.line.color for t in s} & {'grey', 'black', '#333333'}
    assert fig.layout.yaxis4.type == 'log' and fig.layout.yaxis4.title.text == 'value (log)'   # 1 and 0.01 on one axis: both readable
    assert run_figure([record(i) for i in range(1, 301)]).layout.xaxis.dtick is None     # long runs: plotly's own ticks

def test_sampling_figure_axes_are_whole_start_epochs():
    fig = sampling_figure([record(i, 0, 0) for i in (1, 2, 3)], epochs=3)   # a sync run that only drew 0
    assert fig.layout.yaxis2.range == (-0.5, 2.5) and fig.layout.xaxis2.dtick == 1
    assert fig.layout.xaxis.range == fig.layout.yaxis.range == (-0.5, 2.5) and fig.layout.xaxis.constrain == 'domain'   # no −1 on the heatmap

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
    d = SimpleNamespace(history=[], syn=syn_set(), iteration=0, stopped=False, callbacks=[], method_name='amd',
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

def shown(view)->dict:
    "The figure an `Output` widget shows (plotly's JSON; arrays decoded)."
    fig = view.outputs[-1]['data']['application/vnd.plotly.v1+json']
    dec = lambda v: np.frombuffer(base64.b64decode(v['bdata']), v['dtype']).tolist() if isinstance(v, dict) and 'bdata' in v else v
    return {**fig, 'data': [{k: dec(v) for k, v in t.items()} for t in fig['data']]}

def test_dashboard_widget_mode_and_stop_button():
    d = fake_distiller(T=5, M=2)
    dash = Dashboard(every=2, mode='widget', images=4, redraw_seconds=0)
    dash.on_start(d)
    assert isinstance(dash.figure, go.Figure) and len(dash.figure.data[6].z) == 4      # T − M + 1
    assert not dash.button.disabled                                                     # pytest's main thread is no kernel: nothing blocks
    traces = [id(t) for t in dash.figure.data]
    for i in range(1, 5):
        rec = record(i, 1, 2); d.history.append(rec); d.iteration = i; dash.on_iteration(d, rec)
    assert len(dash.figure.data[0].x) == 4 and [id(t) for t in dash.figure.data] == traces
    assert shown(dash.view)['data'][0]['x'] == [1, 2, 3, 4]                             # the page draws the refreshed figure
    assert dash.status.value.startswith('it 4/7')
    dash.button.click()
    assert d.stopped and dash.button.disabled and dash.button.description == 'stopping…'
    dash.on_end(d)
    assert dash.button.description == 'stopped' and dash.status.value.startswith('amd stopped: it 4/7')
    snap = dash.snapshot()
    assert snap.layout.title.text == dash.status.value and list(snap.data[0].x) == list(dash.figure.data[0].x) and snap is not dash.figure
    assert 'application/vnd.plotly.v1+json' in dash._repr_mimebundle_()
    assert dash.stop() is False                                                         # nothing runs: Stop does nothing

def test_dashboard_live_images_and_redraws(monkeypatch):
    "The live images are a PNG in their own widget (a plotly image trace redrawn every few iterations stays an empty box); the figure redraws at most every `redraw_seconds`."
    from PIL import Image
    d = fake_distiller()
    dash = Dashboard(every=1, mode='widget', images=4, redraw_seconds=3600)
    dash.on_start(d)
    im = Image.open(io.BytesIO(dash.strip.value))
    assert im.size[1] >= 64 and im.size[0] > 3 * im.size[1]                               # 4 images in a row, at least 64 px high
    assert 'images' not in names(dash.figure) and names(dash.figure)[-1] == 'draws'         # the live figure has no image panel
    first = dash.view.outputs
    for i in (1, 2, 3):
        rec = record(i); d.history.append(rec); d.iteration = i; dash.on_iteration(d, rec)
    assert dash.view.outputs is first and dash.status.value.startswith('it 3/7')           # status every refresh, figure not yet
    dash.sent -= 3600
    rec = record(4); d.history.append(rec); d.iteration = 4; dash.on_iteration(d, rec)
    assert shown(dash.view)['data'][0]['x'] == [1, 2, 3, 4]
    dash.on_end(d)                                                                         # no kernel: the widget stays, with the last state
    assert shown(dash.view)['data'][0]['x'] == [1, 2, 3, 4] and 'images' in names(dash.snapshot())

def test_dashboard_reports_wall_seconds_per_iteration():
    "The status line's s/it is wall time (everything between refreshes), not the step's own `seconds` (compute only)."
    buf, d = io.StringIO(), fake_distiller(iterations=4)
    dash = Dashboard(every=2, mode='text', file=buf)
    dash.on_start(d)
    for i in range(1, 5):
        time.sleep(0.05); rec = record(i); d.history.append(rec); d.iteration = i; dash.on_iteration(d, rec)   # record: seconds=0.01
    dash.on_end(d)
    speeds = [float(re.search(r'\| ([\d.]+) s/it$', l).group(1)) for l in buf.getvalue().splitlines()]
    assert len(speeds) == 2 and all(0.045 < s < 0.5 for s in speeds), speeds

def test_stopped_run_shows_one_line_in_ipython():
    "Stop or Kernel → Interrupt ends the cell with its message only, not ~20 lines of library frames."
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output
    sh = InteractiveShell.instance()
    with capture_output() as cap:
        sh.run_cell("from amd_nb.viz import run_in_thread\n"
                    "def job(): raise KeyboardInterrupt('distilling amd stopped before its 300 iterations; its checkpoint is in runs/x: run the job again to resume')\n"
                    "await run_in_thread(job)")
    assert cap.stdout.strip() == '\x1b[0;31mRunStopped\x1b[0m: distilling amd stopped before its 300 iterations; its checkpoint is in runs/x: run the job again to resume'
    assert sh.custom_exceptions == (RunStopped,)
    with capture_output() as cap: sh.run_cell("1 / 0")                                        # other errors keep their traceback
    assert 'ZeroDivisionError' in cap.stdout and 'Traceback' in cap.stdout

def test_run_in_thread_hears_an_interrupt_queued_without_waking_the_loop():
    "ipykernel's SIGINT handler queues the cell's cancellation with a plain `call_soon`, which does not wake a loop asleep in select: the run "
    "went on to its end. The await wakes up every 0.1 s, so the interrupt arrives within a few iterations."
    import signal
    stop, heard = threading.Event(), []
    def work():
        for _ in range(2000):                               # 20 s unless stopped
            if stop.wait(0.01): return 'stopped'
        return 'ran to the end'
    def on_interrupt(): heard.append(time.time()); stop.set(); return True
    async def main():
        async def cell():                                   # the awaiting cell (a RunStopped is a KeyboardInterrupt: caught in its task)
            try: return await run_in_thread(work, on_interrupt=on_interrupt)
            except RunStopped: return 'stopped'
        loop, task = asyncio.get_running_loop(), asyncio.ensure_future(cell())
        old = signal.signal(signal.SIGINT, lambda *a: loop.call_soon(task.cancel))        # what ipykernel's handler does
        try:
            await asyncio.sleep(0.3); sent = time.time()
            threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGINT)).start()
            await task
            return sent
        finally: signal.signal(signal.SIGINT, old)
    sent = asyncio.run(main())
    assert heard and heard[0] - sent < 2, f"interrupt heard after {heard[0] - sent if heard else None} s"

def test_dashboard_lr_traces_differ_from_losses():
    fig = dashboard_figure(size=3)
    tr = {t.name: t for t in fig.data}
    for m in ('image', 'text'):
        assert tr[f'lr_{m}'].line.color != tr[f'loss_{m}'].line.color and tr[f'lr_{m}'].line.dash == 'dot'
    assert {tr['lr_image'].legendgroup, tr['loss_image'].legendgroup} == {'lr', 'loss'}
    assert run_figure([record(1)]).data[3].line.dash == 'dot'

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
    assert dash.run_in_background(d) is None                                    # a cell ending on it shows nothing (no <Thread ...>)
    assert dash.wait(120) and dash.error is None and dash.result is d.syn and d.iteration == 5
    assert dash in d.callbacks
    assert re.findall(r'^it (\d)/5', capsys.readouterr().out, re.M) == ['2', '4', '5']

def test_run_async_stop_click_while_awaiting(tiny):
    "What JupyterLab does with `await dash.run_async(d.run)`: the event loop stays free, so a click stops the run."
    root, cfg, train, store = tiny
    dash = Dashboard(every=1, mode='widget')
    d = Distiller(cfg.override({'distill.method': 'amd', 'distill.iterations': 500}), store, train, root/'async', progress=False)
    async def click_after(n):
        while len(d.history) < n: await asyncio.sleep(0.01)
        dash.button.click()
    async def main(): return (await asyncio.gather(dash.run_async(d.run), click_after(2)))[0]
    syn = asyncio.run(main())
    assert syn is d.syn and 2 <= d.iteration < 500 and dash in d.callbacks
    assert (root/'async'/'checkpoint.safetensors').exists() and dash.button.description == 'stopped'

def test_run_async_interrupt_stops_the_distillation(tiny):
    "Kernel → Interrupt cancels the awaiting cell: the run stops after its iteration, and the cell gets a KeyboardInterrupt."
    root, cfg, train, store = tiny
    dash = Dashboard(every=1, mode='text', file=io.StringIO())
    d = Distiller(cfg.override({'distill.method': 'lors', 'distill.iterations': 500}), store, train, root/'interrupt', progress=False)
    async def main():
        task = asyncio.ensure_future(dash.run_async(d.run))
        while len(d.history) < 2: await asyncio.sleep(0.01)
        task.cancel()
        return await task
    with pytest.raises(KeyboardInterrupt, match='interrupted'): asyncio.run(main())
    assert 2 <= d.iteration < 500 and not dash.running and (root/'interrupt'/'checkpoint.safetensors').exists()

def test_run_in_thread_interrupts_any_blocking_call():
    "Outside a distillation (experts, evaluation) an interrupt reaches the worker as a KeyboardInterrupt."
    seen = []
    def busy():
        try:
            t0 = time.time()
            while time.time() - t0 < 30: sum(range(1000))
        except KeyboardInterrupt: seen.append('interrupted'); raise
    async def main():
        task = asyncio.ensure_future(run_in_thread(busy)); await asyncio.sleep(0.2); task.cancel(); return await task
    t0 = time.time()
    with pytest.raises(KeyboardInterrupt): asyncio.run(main())
    assert seen == ['interrupted'] and time.time() - t0 < 10
    assert asyncio.run(run_in_thread(lambda x, y=1: x + y, 2, y=3)) == 5             # plain calls return their value
    with pytest.raises(ZeroDivisionError): asyncio.run(run_in_thread(lambda: 1 / 0))

def test_ended_dashboard_replaces_its_widget_by_a_static_figure(monkeypatch):
    "In a kernel the run's cell keeps a static figure: the widget's display is updated in place with a raw plotly bundle."
    import amd_nb.viz as viz
    calls = []
    class Handle:
        def update(self, obj, **kw): calls.append((obj, kw))
    monkeypatch.setattr(viz, 'in_notebook', lambda: True)
    monkeypatch.setattr('IPython.display.display', lambda *a, **k: Handle() if k.get('display_id') else None)
    dash, d = Dashboard(every=2, mode='widget'), fake_distiller(iterations=3)
    dash.thread = threading.Thread(target=lambda: None)                      # as in run_async's worker: Stop can be heard
    drive(dash, d, 3)
    (obj, kw), = calls
    assert kw == {'raw': True} and 'application/vnd.plotly.v1+json' in obj
    assert obj['application/vnd.plotly.v1+json']['layout']['title']['text'].startswith('amd finished: it 3/3')

def test_foreground_dashboard_in_a_kernel_disables_stop(monkeypatch):
    "A plain `d.run()` in a kernel keeps it busy: Stop could not be heard, so it is disabled and says why."
    import amd_nb.viz as viz
    monkeypatch.setattr(viz, 'in_notebook', lambda: True)
    monkeypatch.setattr('IPython.display.display', lambda *a, **k: None)
    dash = Dashboard(mode='widget'); dash.on_start(fake_distiller())
    assert dash.button.disabled and 'Kernel → Interrupt' in dash.button.tooltip and 'run_async' in dash.button.tooltip

def test_run_in_background_reports_errors(tiny):
    root, cfg, train, store = tiny
    class Boom(Callback):
        def on_iteration(self, d, rec): raise RuntimeError('boom')
    buf = io.StringIO()
    dash = Dashboard(mode='text', file=buf)
    d = Distiller(cfg.override({'distill.method': 'mtt_vl', 'distill.iterations': 5}), store, train, callbacks=[Boom()], progress=False)
    dash.run_in_background(d); dash.wait(120)
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
    views = ex.children[1].children
    def check(R_V, R_L, gap):
        "Everything on screen agrees with the sliders: heatmap, its title, the window rows, the MMD title."
        mf, fw = ex.figures
        assert torch.equal(torch.tensor(fw.data[0].z, dtype=torch.float64).T, window_distribution(R_V, R_L, gap, CURVES.epochs, CURVES.expert_epochs))
        assert fw.layout.title.text.startswith(f'R_V={R_V}, R_L={R_L}, max_gap={gap}:')
        assert [(max(t.x), t.name.split()[-1]) for t in mf.data if 'window' in t.name] == [(R_V, str(R_V)), (R_L, str(R_L))]
        assert mf.layout.title.text.startswith(f'MMD dynamic sampling: R_V = {R_V}, R_L = {R_L}')
        assert [shown(v)['layout']['title']['text'] for v in views] == [mf.layout.title.text, fw.layout.title.text]
        assert shown(views[1])['data'][0]['z'] == fw.data[0].z or list(map(list, fw.data[0].z)) == shown(views[1])['data'][0]['z']
    check(CURVES.R_V, CURVES.R_L, top)
    ex.sliders['max_gap'].value = 1; check(CURVES.R_V, CURVES.R_L, 1)
    ex.sliders['R_V'].value = 3; check(3, CURVES.R_L, 1)
    ex.sliders['R_L'].value = 2; check(3, 2, 1)

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
