"""The quickstart and its report as a user sees them: JupyterLab 4 in headless Chromium, with the network blocked.

One JupyterLab server on a free port serves a copy of the quickstart; Playwright drives Debian's Chromium
(`make browser`, a prerequisite of `make test`, installs it), runs every cell on the `tiny` preset (IN_TEST), saves,
reloads the page, then opens the run's `report.html` from disk. It fails when a plotly figure is not drawn (no SVG) in
the notebook, after the reload or in the report, when plotly.js is missing (`Plotly is not defined`), when a widget
model cannot be found, when the page raises an error, or when the page asks the network for anything. A second notebook
runs a live dashboard (`await dash.run_async(run_demo, run)`, 300 iterations) and presses Kernel → Interrupt at
iteration 45: the run must stop within a few iterations (its `log.jsonl` lines are counted), end in a one-line error, and
show its synthetic images while it runs. It skips, saying why, only where Chromium or Playwright is missing (see
`make browser`).
"""
import json, os, re, shutil, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHROMIUM = os.environ.get('CHROMIUM', '/usr/bin/chromium')
ARGS = ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']
BAD = re.compile(r'Plotly is not defined|model not found|Failed to initialize model|Error displaying widget|ERR_NAME_NOT_RESOLVED', re.I)

def _missing()->str|None:
    "Why the browser test cannot run here, or None."
    if not os.access(CHROMIUM, os.X_OK): return f"{CHROMIUM} missing: `make browser` installs Debian's chromium (needs apt-get as root)"
    try: import playwright.sync_api  # noqa: F401
    except ImportError: return 'playwright missing: `make env` installs it (settings.ini dev requirements)'
    return None

pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or '')

def _free_port()->int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    "A JupyterLab server over a folder holding a copy of the quickstart; yields (url, token, folder)."
    root, token, port = tmp_path_factory.mktemp('lab'), 'amd-nb-test', _free_port()
    shutil.copy(ROOT/'nbs'/'tutorials'/'01_quickstart.ipynb', root/'quickstart.ipynb')
    settings = root/'.settings'/'@jupyterlab'/'apputils-extension'; settings.mkdir(parents=True)
    (settings/'notification.jupyterlab-settings').write_text('{"fetchNews": "false", "checkForUpdates": false}')   # no news pop-up
    env = {**os.environ, 'IN_TEST': '1', 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1', 'JUPYTERLAB_SETTINGS_DIR': str(root/'.settings'),
           'JUPYTERLAB_WORKSPACES_DIR': str(root/'.workspaces'), 'PATH': f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop('PLOTLY_RENDERER', None)
    log = open(root/'lab.log', 'w')
    p = subprocess.Popen([sys.executable, '-m', 'jupyterlab', '--no-browser', f'--port={port}', '--ServerApp.ip=127.0.0.1', '--ServerApp.allow_root=True',
                          f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={root}', '--LabApp.expose_app_in_browser=True',
                          '--LabApp.news_url=', '--LabServerApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate'],
                         env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f'http://127.0.0.1:{port}'
    try:
        for _ in range(240):
            try: urllib.request.urlopen(f'{url}/api/status?token={token}', timeout=1); break
            except OSError: time.sleep(0.25)
        else: pytest.fail(f"JupyterLab did not start: {(root/'lab.log').read_text()[-2000:]}")
        yield url, token, root
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        try: p.wait(10)
        except subprocess.TimeoutExpired: os.killpg(p.pid, signal.SIGKILL)

@pytest.fixture(scope='module')
def page(lab):
    "A Chromium page that may reach only the local server (anything else is refused and recorded)."
    from playwright.sync_api import sync_playwright
    url = lab[0]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = browser.new_page(viewport={'width': 1280, 'height': 900})
        pg.set_default_timeout(120_000)     # a loaded machine (other jobs on its cores) takes longer than playwright's 30 s to open a 5 MB report
        pg.messages, pg.blocked = [], []
        def route(r):
            if r.request.url.startswith((url, 'data:', 'blob:', 'file:')): r.continue_()
            else: pg.blocked.append(r.request.url); r.abort('namenotresolved')
        pg.route('**/*', route)
        pg.on('console', lambda m: pg.messages.append(f"{m.type}: {m.text}"))
        pg.on('pageerror', lambda e: pg.messages.append(f"pageerror: {e}"))
        yield pg
        browser.close()

FIGURES = """() => [...document.querySelectorAll('.jp-RenderedPlotly')].map(e => e.querySelectorAll('.main-svg, img').length)"""

def _wait_idle(pg):
    pg.wait_for_selector('.jp-Notebook .jp-Cell', timeout=120_000)
    pg.wait_for_function("() => document.querySelector('.jp-Notebook') && document.body.innerText.includes('| Idle')", timeout=120_000)

def _bad(pg)->list[str]: return [m for m in pg.messages if BAD.search(m) or m.startswith('pageerror')]

def test_quickstart_in_jupyterlab_offline(lab, page):
    url, token, root = lab
    t0 = time.time()
    page.goto(f'{url}/lab/tree/quickstart.ipynb?token={token}'); _wait_idle(page)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")     # resolves when every cell has run
    page.wait_for_function("() => ![...document.querySelectorAll('.jp-InputPrompt')].some(e => e.textContent.includes('*'))", timeout=300_000)
    errors = page.evaluate("() => [...document.querySelectorAll('[data-mime-type=\"application/vnd.jupyter.error\"]')].map(e => e.innerText.slice(0, 800))")
    assert not errors, errors
    figs = page.evaluate(FIGURES)
    print(f"\nbrowser: quickstart ran in JupyterLab in {time.time() - t0:.0f} s; plotly outputs drawn (SVG per output): {figs}")
    assert len(figs) == 4 and all(figs), f"a figure was not drawn offline: {figs}; console: {page.messages[-20:]}"   # MMD, images, 2 dashboards
    text = page.evaluate("() => document.querySelector('.jp-Notebook').textContent")
    assert 'amd finished: it' in text and 'lors finished: it' in text, 'the dashboards did not end as static figures'
    assert not _bad(page), _bad(page)
    page.screenshot(path=str(root/'quickstart.png'), full_page=True)

    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    page.reload(); _wait_idle(page); page.wait_for_timeout(3000)
    page.screenshot(path=str(root/'quickstart-reloaded.png'), full_page=True)
    after = page.evaluate(FIGURES)
    print(f"browser: after a reload: {after}")
    assert len(after) == len(figs) and all(after), f"figures lost on reload: {after}"
    saved = json.loads((root/'quickstart.ipynb').read_text())
    kinds = [set(o.get('data', {})) for c in saved['cells'] for o in c.get('outputs', [])]
    assert sum('application/vnd.plotly.v1+json' in k for k in kinds) >= 4, kinds                 # static figures saved with the notebook
    assert sum('text/html' in k and 'application/vnd.plotly.v1+json' in k for k in kinds) >= 2   # ... with HTML for the docs site
    assert not any('application/vnd.jupyter.widget-view+json' in k for k in kinds), kinds       # the dashboards' widgets were replaced
    assert not _bad(page), _bad(page)
    assert not page.blocked, f"the page asked the network for {page.blocked[:5]}"

def test_report_offline(lab, page):
    "The run's report.html (plotly.js inlined) draws every figure from a file, with no network."
    url, token, root = lab
    nb = json.loads((root/'quickstart.ipynb').read_text())
    text = ''.join(''.join(o.get('text', '')) for c in nb['cells'] for o in c.get('outputs', []) if o.get('output_type') == 'stream')
    rel = re.search(r'^(\S*report\.html) ', text, re.M)
    assert rel, f"the quickstart printed no report path: {text[-500:]}"
    report = (root/rel.group(1)).resolve()
    page.messages.clear()
    page.goto(report.as_uri()); page.wait_for_function("() => document.querySelectorAll('.plotly-graph-div').length > 0")
    page.wait_for_timeout(1000)
    divs = page.evaluate("() => [...document.querySelectorAll('.plotly-graph-div')].map(e => e.querySelectorAll('.main-svg').length)")
    print(f"browser: report {report.stat().st_size / 2**20:.1f} MiB, SVG per figure: {divs}")
    assert len(divs) >= 8 and all(divs), divs
    assert not _bad(page), _bad(page)
    page.screenshot(path=str(root/'report.png'))

LIVE = ['''from pathlib import Path
from amd_nb.config import get_preset
from amd_nb.report import DemoRun, run_demo
from amd_nb.viz import Dashboard''',
'''dash = Dashboard(every=5)
run = DemoRun(get_preset('tiny').override({'distill.iterations': 300}), Path('live_run'), 'tiny', methods=('amd',), coresets=(), full=False,
              callbacks=(dash,), progress=False)
await dash.run_async(run_demo, run)''']

IMAGES = """() => [...document.querySelectorAll('.jp-OutputArea img')].filter(i => i.complete && i.naturalWidth > 0 && i.closest('.widget-hbox'))
                                                                   .map(i => [i.naturalWidth, i.naturalHeight])"""
BUSY = "() => [...document.querySelectorAll('.jp-InputPrompt')].some(e => e.textContent.includes('*'))"

def test_live_dashboard_and_kernel_interrupt(lab, page):
    "The live dashboard shows its images while it runs, Kernel → Interrupt stops `run_async` within a few iterations, no page errors."
    url, token, root = lab
    nb = {'cells': [{'cell_type': 'code', 'metadata': {}, 'source': c, 'outputs': [], 'execution_count': None, 'id': f'c{i}'} for i, c in enumerate(LIVE)],
          'metadata': {'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}}, 'nbformat': 4, 'nbformat_minor': 5}
    (root/'live.ipynb').write_text(json.dumps(nb))
    logs = lambda: sum(len(f.read_text().splitlines()) for f in (root/'live_run').glob('**/log.jsonl'))
    page.goto(f'{url}/lab/workspaces/live/tree/live.ipynb?reset&token={token}'); _wait_idle(page)      # a workspace of its own: only this notebook
    assert page.evaluate("() => window.jupyterapp.shell.currentWidget.context.path") == 'live.ipynb'
    page.messages.clear()
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")     # not awaited: it resolves when the run ends
    images, t0, sent = [], time.time(), None
    while sent is None:
        if time.time() - t0 > 300:
            page.screenshot(path=str(root/'live-timeout.png'), full_page=True)
            pytest.fail(f"the run never logged 45 iterations; console: {page.messages[-10:]}")
        n = logs()
        if n >= 5 and not images: images = page.evaluate(IMAGES)
        if n >= 45:
            page.screenshot(path=str(root/'live.png'), full_page=True)
            page.evaluate("() => window.jupyterapp.commands.execute('kernelmenu:interrupt')"); sent = logs()   # Kernel → Interrupt
        else: page.wait_for_timeout(100)
    page.wait_for_function(f"() => !({BUSY})()", timeout=120_000)
    page.wait_for_timeout(1000)
    page.evaluate("() => { const o = document.querySelectorAll('.jp-OutputArea-child'); o[o.length - 1].scrollIntoView({block: 'end'}); }")
    page.wait_for_timeout(500); page.screenshot(path=str(root/'live-interrupted.png'), full_page=True)
    n = logs()
    errors = page.evaluate("""() => { const nb = window.jupyterapp.shell.currentWidget.content;
        return nb.model.cells.get(nb.model.cells.length - 1).outputs.toJSON().filter(o => o.output_type === 'error')
                 .map(o => o.traceback.join('\\n').replace(/\\x1b\\[[0-9;]*m/g, '')); }""")
    print(f"\nbrowser: live images {images}; Kernel → Interrupt at {sent} logged iterations, the run stopped at {n} of 300; error: {errors}")
    assert images and all(h >= 64 for w, h in images), f"no synthetic images on the page during the run: {images}"
    assert n <= sent + 10, f"Kernel → Interrupt at iteration {sent}: the run went on to {n}"
    assert len(errors) == 1 and len(errors[0].splitlines()) == 1 and errors[0].startswith('RunStopped: distilling amd stopped before its 300'), errors
    assert 'checkpoint is in' in errors[0] and list((root/'live_run').glob('**/checkpoint.safetensors'))
    assert not _bad(page), _bad(page)
    assert not page.blocked, f"the page asked the network for {page.blocked[:5]}"
