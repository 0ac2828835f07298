"""Execute notebooks and save their outputs (the way the docs site shows them), or check that the saved ones are current.

    python scripts/run_notebook.py [--jobs 2] nbs/09_viz.ipynb [more.ipynb ...]   # refresh: run and save the outputs (and their record)
    python scripts/run_notebook.py --check [--jobs 2] nbs/0*.ipynb nbs/1*.ipynb   # test: run, fail on errors or stale outputs
    python scripts/run_notebook.py --real nbs/tutorials/01_quickstart.ipynb       # refresh a tutorial from the real run (no IN_TEST)

Runs every code cell with nbdev's notebook runner (execnb) the way `nbdev_test` does (IN_TEST set, in the
notebook's folder), skipping cells marked `#| eval: false` or with a test flag of settings.ini (`notest`, `slow`).

Refresh writes the outputs back into the notebook, cleans it with `nbdev_clean`, and records in the notebook's metadata
(`amd_nb_outputs`) what the outputs were made from: a digest of every code cell's source and of every library module
the notebook runs (the modules its cells import and, transitively, theirs). Plotly figures are saved with
`amd_nb.viz.setup_docs_renderer`'s renderer: the figure's JSON, which JupyterLab draws offline (also in a reopened
notebook), plus small HTML that loads plotly.js from the CDN, which the Quarto docs site shows. Widget outputs are
dropped: without the kernel that made them they show only "model not found".

`--check` is the notebooks' test in `make test`. It runs the notebook (its assertions are the tests) and fails, naming
the notebook and the cell or module, when
- a cell's source or a library module it runs changed since the outputs were saved (the record's digests differ): the
  outputs are stale, whatever numbers this machine prints;
- a cell now shows another kind of output than it saved (text, a figure with other kinds of traces, an image, an error;
  stderr, where warnings and progress bars go, is set aside);
- a cell marked `#| exact` shows other text than it saved (memory addresses, durations, sizes and temporary paths set
  aside). Mark only cells whose output is exact by construction: strings, shapes, counts from a fixed generator.
Floats, ranks, k-means medoids and rounded metrics are never compared: another CPU (another SIMD width, BLAS or thread
count) rounds differently, and the differences propagate. What they must satisfy is asserted in the notebook's tests,
with tolerances. The fix for a stale notebook is to refresh it.
"""
import ast, configparser, hashlib, json, os, re, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

WIDGET = 'application/vnd.jupyter.widget-view+json'
PLOTLY = 'application/vnd.plotly.v1+json'
RECORD = 'amd_nb_outputs'        # notebook metadata key (kept by nbdev_clean: settings.ini's allowed_metadata_keys)
SKIP = re.compile(r'^#\|\s*(eval:\s*false|notest|slow)\b', re.M)
EXACT = re.compile(r'^#\|\s*exact\s*$', re.M)

def _join_sources(o):
    "Plotly image traces have a `source` key: execnb's writer splits every `source` into lines, which it cannot read back."
    if isinstance(o, dict): return {k: ''.join(v) if k == 'source' and isinstance(v, list) else _join_sources(v) for k, v in o.items()}
    if isinstance(o, list): return [_join_sources(v) for v in o]
    return o

def _source(c)->str:
    s = c.get('source', '') if isinstance(c, dict) else c.source
    return ''.join(s) if isinstance(s, list) else s

def _code_cells(cells)->list: return [c for c in cells if (c.get('cell_type') if isinstance(c, dict) else c.cell_type) == 'code']

# ---- what the outputs were made from: cell sources and the library modules the notebook runs ----

def _digest(b:bytes)->str: return hashlib.sha256(b).hexdigest()[:16]

def _project(fn:Path):
    "(root, lib_name, lib folder) of the nbdev project holding notebook `fn` (nearest settings.ini above it), or None."
    for d in [fn.resolve().parent, *fn.resolve().parents]:
        if (d/'settings.ini').exists():
            cfg = configparser.ConfigParser(); cfg.read(d/'settings.ini')
            s = cfg['DEFAULT']
            lib = s.get('lib_name', '').replace('-', '_')
            return (d, lib, d/s.get('lib_path', lib)) if lib else None
    return None

def _module_file(libdir:Path, lib:str, name:str)->Path|None:
    "The file of module `name` (dotted, starting with `lib`) in `libdir`, if it is one."
    parts = name.split('.')[1:]
    p = libdir.joinpath(*parts)
    for f in (p.with_suffix('.py') if parts else None, p/'__init__.py'):
        if f is not None and f.is_file(): return f
    return None

def _imported(src:str, lib:str, package:str|None=None)->set:
    "Dotted names of `lib`'s modules imported anywhere in `src` (`package`: the importing module's package, for relative imports)."
    code = '\n'.join(l for l in src.splitlines() if not l.lstrip().startswith(('%', '!', '?')))
    try: tree = ast.parse(code)
    except SyntaxError: return {m for m in re.findall(rf'(?:from|import)\s+({lib}(?:\.\w+)*)', src)}
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import): out |= {a.name for a in n.names if a.name.split('.')[0] == lib}
        elif isinstance(n, ast.ImportFrom):
            base = n.module or ''
            if n.level and package: base = '.'.join(package.split('.')[:len(package.split('.')) - n.level + 1] + ([base] if base else []))
            if base.split('.')[0] != lib: continue
            out.add(base); out |= {f"{base}.{a.name}" for a in n.names}   # `from lib import mod` names a module
    return out

def modules_run(fn:Path, cells)->dict:
    "{path relative to the project root: digest} of every library module the notebook's cells import, transitively (empty outside an nbdev project)."
    proj = _project(fn)
    if proj is None: return {}
    root, lib, libdir = proj
    todo = set().union(*[_imported(_source(c), lib) for c in _code_cells(cells)]) if cells else set()
    seen, files = set(), {}
    while todo:
        name = todo.pop()
        if name in seen: continue
        seen.add(name)
        todo |= {'.'.join(name.split('.')[:k]) for k in range(1, name.count('.') + 1)} - seen   # importing a.b.c runs a and a.b
        f = _module_file(libdir, lib, name)
        if f is None or f.name == '_modidx.py': continue
        files[f.relative_to(root).as_posix()] = _digest(f.read_bytes())
        pkg = name if f.name == '__init__.py' else name.rpartition('.')[0]
        todo |= _imported(f.read_text(encoding='utf-8'), lib, pkg) - seen
    return dict(sorted(files.items()))

def make_record(fn:Path, cells)->dict:
    "What the saved outputs were made from: a digest per code cell's source and per library module the notebook runs."
    return {'cells': [_digest(_source(c).encode()) for c in _code_cells(cells)], 'modules': modules_run(fn, cells)}

def _first_line(c)->str:
    first = [l for l in _source(c).splitlines() if not l.startswith('#|')][:1]
    return repr(first[0][:60]) if first else "''"

def stale(fn:Path, nb:dict)->list:
    "Why the outputs saved in notebook `nb` (a dict, as read from `fn`) are stale: changed cells or modules, or no record."
    rec = (nb.get('metadata') or {}).get(RECORD)
    if not isinstance(rec, dict) or not isinstance(rec.get('cells'), list) or not isinstance(rec.get('modules'), dict):
        return ["no record of what its saved outputs were made from (saved before records were kept, or by another tool)"]
    cells, now = _code_cells(nb['cells']), make_record(fn, nb['cells'])
    out = [f"code cell {i + 1} ({_first_line(c)}): its source changed since the outputs were saved"
           for i, (c, a) in enumerate(zip(cells, now['cells'])) if i >= len(rec['cells']) or rec['cells'][i] != a]
    if len(rec['cells']) > len(cells): out.append(f"{len(rec['cells']) - len(cells)} code cell(s) removed since the outputs were saved")
    for path, d in now['modules'].items():
        if path not in rec['modules']: out.append(f"{path}: runs in this notebook now, but did not when its outputs were saved")
        elif rec['modules'][path] != d: out.append(f"{path}: changed since the outputs were saved (this notebook runs it)")
    return out

# ---- running ----

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
        if (proj := _project(fn)) and proj[1] == 'amd_nb': shell.run_cell('import amd_nb.viz; amd_nb.viz.setup_docs_renderer()')
        shell.run_all(nb, exc_stop=True, preproc=lambda c: c.cell_type != 'code' or bool(SKIP.search(c.source)))
        if shell.exc: raise RuntimeError(shell.prettytb(fname=fn))
    finally: os.chdir(cwd)
    for c in nb.cells:
        if c.cell_type == 'code': c.outputs = [o for o in c.outputs if WIDGET not in o.get('data', {})]
    return nb

def run(fn:Path, test:bool=True):
    "Refresh: run `fn`, save its outputs and the record of what they were made from."
    from execnb.nbio import write_nb
    from nbdev.clean import clean_nb
    nb = execute(fn, test)
    clean_nb(nb, allowed_metadata_keys=[RECORD])
    write_nb(nb, fn)
    d = json.loads(fn.read_text())
    for c in d['cells']:
        for o in c.get('outputs', []):
            if 'data' in o: o['data'] = _join_sources(o['data'])
    d['metadata'][RECORD] = make_record(fn, d['cells'])
    d['metadata'] = dict(sorted(d['metadata'].items()))
    fn.write_text(json.dumps(d, indent=1, ensure_ascii=False) + '\n')
    print(f"{fn}: {fn.stat().st_size/1024:.0f} KiB with outputs")

# ---- what a cell shows: its kinds of output (always compared) and, for `#| exact` cells, its text ----

_VOLATILE = [(re.compile(r'0x[0-9a-f]{6,}'), '0x…'),                                   # memory addresses
             (re.compile(r'\d+(\.\d+)?\s?(ms|µs|s|sec|secs|seconds)\b'), '<t>'),         # durations
             (re.compile(r'[\d.]+\s?(KiB|MiB|GiB|kB|MB|GB)\b'), '<size>'),               # sizes on disk
             (re.compile(r'/tmp/[^\s\'"),]+'), '<tmp>'),                                   # temporary folders
             (re.compile(r'[^\n]*\|[█▏▎▍▌▋▊▉ ]*\|[^\n]*it/s\][^\n]*'), '')]                # progress bars

def _text(o:dict)->str:
    "What an output shows as text, with volatile parts set aside."
    t = o.get('text') if o.get('output_type') == 'stream' else (o.get('data') or {}).get('text/plain', '')
    t = ''.join(t) if isinstance(t, list) else (t or '')
    for rx, rep in _VOLATILE: t = rx.sub(rep, t)
    return t.strip()

def _kind(o:dict, exact:bool=False):
    "The comparable part of one output (None: set aside): its kind — text, a plotly figure's trace types, an image, an error — and, if `exact`, its text."
    if o.get('output_type') == 'error': return ('error', o.get('ename'))
    if o.get('output_type') == 'stream' and o.get('name') == 'stderr': return None
    d = o.get('data') or {}
    if PLOTLY in d:
        fig = d[PLOTLY]; fig = json.loads(fig) if isinstance(fig, str) else fig
        return ('plotly', sorted({t.get('type') or 'scatter' for t in fig.get('data', [])}))
    if 'image/png' in d and 'text/plain' not in d: return ('image',)
    t = _text(o)
    if not t: return None
    return ('text', t) if exact else ('text',)

def shown(cells)->list:
    "Per code cell, the comparable parts of what it shows."
    return [[k for o in (c.get('outputs') or []) if (k := _kind(o, bool(EXACT.search(_source(c))))) is not None] for c in _code_cells(cells)]

def differences(saved_cells, fresh_cells)->list:
    "The cells whose fresh output differs in kind (or, for `#| exact` cells, in text) from the saved one."
    problems = []
    for i, (c, a, b) in enumerate(zip(_code_cells(saved_cells), shown(saved_cells), shown(fresh_cells))):
        if SKIP.search(_source(c)) or a == b: continue
        what = ('shows output the notebook did not save' if not a else 'shows no output, but the notebook saved some' if not b
                else 'shows other text than it saved' if EXACT.search(_source(c)) and [k[0] for k in a] == [k[0] for k in b]
                else 'shows another kind of output than it saved')
        problems.append(f"code cell {i + 1} ({_first_line(c)}): {what}\n    saved: {str(a)[:300]}\n    now:   {str(b)[:300]}")
    return problems

def check(fn:Path)->tuple[Path, list, float]:
    "Run `fn`; the problems found (an error, stale outputs, cells that show another kind of output) and the seconds it took."
    t0 = time.time()
    saved = json.loads(fn.read_text())
    problems = stale(fn, saved)
    try: fresh = execute(fn).cells
    except Exception as e: return fn, problems + [f"error while running:\n{e}"], time.time() - t0
    fresh = [dict(cell_type=c.cell_type, source=c.source, outputs=[dict(o) for o in c.get('outputs', [])]) for c in fresh]
    return fn, problems + differences(saved['cells'], fresh), time.time() - t0

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
    argv, jobs = argv[0 if test else 1:], 1
    if argv[:1] == ['--jobs']: jobs, argv = int(argv[1]), argv[2:]
    if len(argv) == 1: run(Path(argv[0]), test); return 0
    def one(f):   # each notebook in a fresh interpreter, as the check runs it (module state must not leak between notebooks)
        r = subprocess.run([sys.executable, __file__, *([] if test else ['--real']), f], capture_output=True, text=True)
        print(r.stdout.strip() or f"{f}: FAILED\n{r.stderr[-3000:]}", flush=True)
        return r.returncode
    with ThreadPoolExecutor(jobs) as ex: codes = list(ex.map(one, argv))
    return 1 if any(codes) else 0

if __name__ == '__main__': sys.exit(main(sys.argv[1:]))
