"""Execute notebooks and save their outputs (the way the docs site shows them), or check that the saved ones are current.

    python scripts/run_notebook.py nbs/09_viz.ipynb [more.ipynb ...]     # refresh: run and save the outputs
    python scripts/run_notebook.py --check [--jobs 2] nbs/0*.ipynb nbs/1*.ipynb   # test: run, fail on errors or stale outputs
    python scripts/run_notebook.py --real nbs/tutorials/01_quickstart.ipynb       # refresh a tutorial from the real run (no IN_TEST)

Runs every code cell with nbdev's notebook runner (execnb) the way `nbdev_test` does (IN_TEST set, in the
notebook's folder), skipping cells marked `#| eval: false` or with a test flag of settings.ini (`notest`, `slow`).

Refresh writes the outputs back into the notebook and cleans it with `nbdev_clean`. Plotly figures are saved with
`amd_nb.viz.setup_docs_renderer`'s renderer: the figure's JSON, which JupyterLab draws offline (also in a reopened
notebook), plus small HTML that loads plotly.js from the CDN, which the Quarto docs site shows. Widget outputs are
dropped: without the kernel that made them they show only "model not found".

`--check` is the notebooks' test in `make test`: besides failing on an error, it compares what each cell shows now
with what the notebook saved — text and printed output (with memory addresses, durations, progress bars and the
last digits of floats set aside) and the traces of plotly figures — and fails, naming the notebook and the cell,
when they differ or when a cell shows something the notebook did not save. The fix is to refresh the notebook.
"""
import json, os, re, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

WIDGET = 'application/vnd.jupyter.widget-view+json'
PLOTLY = 'application/vnd.plotly.v1+json'
SKIP = re.compile(r'^#\|\s*(eval:\s*false|notest|slow)\b', re.M)

def _join_sources(o):
    "Plotly image traces have a `source` key: execnb's writer splits every `source` into lines, which it cannot read back."
    if isinstance(o, dict): return {k: ''.join(v) if k == 'source' and isinstance(v, list) else _join_sources(v) for k, v in o.items()}
    if isinstance(o, list): return [_join_sources(v) for v in o]
    return o

def execute(fn:Path, test:bool=True):
    "The notebook at `fn` after running its code cells as `nbdev_test` would (raises on the first error); `test=False`: without IN_TEST."
    from execnb.nbio import read_nb
    from execnb.shell import CaptureShell
    nb = read_nb(fn)
    for c in nb.cells:
        if c.cell_type == 'code': c.outputs, c.execution_count = [], None
    cwd = Path.cwd(); os.chdir(fn.parent)
    if test: os.environ['IN_TEST'] = '1'
    else: os.environ.pop('IN_TEST', None)
    try:
        shell = CaptureShell(fn)
        shell.run_cell('import amd_nb.viz; amd_nb.viz.setup_docs_renderer()')
        shell.run_all(nb, exc_stop=True, preproc=lambda c: c.cell_type != 'code' or bool(SKIP.search(c.source)))
        if shell.exc: raise RuntimeError(shell.prettytb(fname=fn))
    finally: os.chdir(cwd)
    for c in nb.cells:
        if c.cell_type == 'code': c.outputs = [o for o in c.outputs if WIDGET not in o.get('data', {})]
    return nb

def run(fn:Path, test:bool=True):
    "Refresh: run `fn` and save its outputs."
    from execnb.nbio import write_nb
    from nbdev.clean import clean_nb
    nb = execute(fn, test)
    clean_nb(nb)
    write_nb(nb, fn)
    d = json.loads(fn.read_text())
    for c in d['cells']:
        for o in c.get('outputs', []):
            if 'data' in o: o['data'] = _join_sources(o['data'])
    fn.write_text(json.dumps(d, indent=1, ensure_ascii=False) + '\n')
    print(f"{fn}: {fn.stat().st_size/1024:.0f} KiB with outputs")

_VOLATILE = [(re.compile(r'0x[0-9a-f]{6,}'), '0x…'),                                   # memory addresses
             (re.compile(r'\d+(\.\d+)?\s?(ms|µs|s|sec|secs|seconds)\b'), '<t>'),         # durations
             (re.compile(r'[\d.]+\s?(KiB|MiB|GiB|kB|MB|GB)\b'), '<size>'),               # sizes on disk
             (re.compile(r'/tmp/[^\s\'"),]+'), '<tmp>'),                                   # temporary folders
             (re.compile(r'[^\n]*\|[█▏▎▍▌▋▊▉ ]*\|[^\n]*it/s\][^\n]*'), '')]                # progress bars

def _float(m): return f"{float(m.group()):.3g}"

def _text(o:dict)->str:
    "What an output shows as text, with volatile parts set aside."
    t = o.get('text') if o.get('output_type') == 'stream' else (o.get('data') or {}).get('text/plain', '')
    t = ''.join(t) if isinstance(t, list) else (t or '')
    for rx, rep in _VOLATILE: t = rx.sub(rep, t)
    return re.sub(r'-?\d+\.\d+(e-?\d+)?', _float, t).strip()

def _shape(o:dict):
    "The comparable part of one output: a plotly figure's traces (type, name), else its text."
    d = o.get('data') or {}
    if PLOTLY in d:
        fig = d[PLOTLY]; fig = json.loads(fig) if isinstance(fig, str) else fig
        return ('plotly', [(t.get('type'), t.get('name')) for t in fig.get('data', [])])
    if 'image/png' in d and 'text/plain' not in d: return ('image',)
    return ('text', _text(o))

def _outputs(cells)->list:
    return [[s for o in (c.get('outputs') or []) if (s := _shape(o)) != ('text', '')] for c in cells if c.get('cell_type') == 'code']

def check(fn:Path)->tuple[Path, list, float]:
    "Run `fn`; the problems found (an error, or cells whose shown output differs from the saved one) and the seconds it took."
    t0 = time.time()
    saved = json.loads(fn.read_text())['cells']
    try: fresh = execute(fn).cells
    except Exception as e: return fn, [f"error while running:\n{e}"], time.time() - t0
    fresh = [dict(cell_type=c.cell_type, outputs=[dict(o) for o in c.get('outputs', [])]) for c in fresh]
    problems = []
    for i, (c, a, b) in enumerate(zip([c for c in saved if c['cell_type'] == 'code'], _outputs(saved), _outputs(fresh))):
        if SKIP.search(''.join(c['source'])) or a == b: continue
        first = ''.join(c['source']).splitlines()[:1]
        what = 'shows output the notebook did not save' if not a else 'saved output is stale'
        problems.append(f"code cell {i + 1} ({first[0][:60] if first else ''!r}): {what}\n    saved: {str(a)[:300]}\n    now:   {str(b)[:300]}")
    return fn, problems, time.time() - t0

def _check_in_subprocess(fn:Path)->tuple[Path, list, float]:
    "`check(fn)` in a fresh interpreter (as `nbdev_test` runs each notebook on its own)."
    r = subprocess.run([sys.executable, __file__, '--check-one', str(fn)], capture_output=True, text=True)
    try: _, problems, secs = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError): problems, secs = [f"the checker itself failed:\n{r.stderr[-3000:]}"], 0.
    return fn, problems, secs

def main(argv):
    if argv and argv[0] == '--check-one':
        fn, problems, secs = check(Path(argv[1])); print(json.dumps([str(fn), problems, secs])); return 0
    if argv and argv[0] == '--check':
        argv, jobs = argv[1:], 1
        if argv[:1] == ['--jobs']: jobs, argv = int(argv[1]), argv[2:]
        files = [Path(f) for f in argv]
        with ThreadPoolExecutor(jobs) as ex: results = list(ex.map(_check_in_subprocess, files))
        bad = [(f, p) for f, p, _ in results if p]
        for f, _, s in sorted(results, key=lambda r: -r[2]): print(f"{f}: {s:.0f} s{' — FAILED' if any(f == b for b, _ in bad) else ''}")
        for f, p in bad: print(f"\n{f}:\n  " + '\n  '.join(p) + f"\n  (refresh with: python scripts/run_notebook.py {f})", file=sys.stderr)
        return 1 if bad else 0
    test = argv[:1] != ['--real']
    for f in argv[0 if test else 1:]: run(Path(f), test)
    return 0

if __name__ == '__main__': sys.exit(main(sys.argv[1:]))
