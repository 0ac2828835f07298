"""Execute notebooks and save their outputs (the way the docs site shows them).

    python scripts/run_notebook.py nbs/09_viz.ipynb [more.ipynb ...]

Runs every code cell with nbdev's notebook runner (execnb), skipping cells marked `#| eval: false`
or with a test flag of settings.ini (`notest`, `slow`), writes the outputs back into the notebook and
cleans it with `nbdev_clean`. Plotly figures are saved with `amd_nb.viz.setup_docs_renderer`'s renderer:
the figure's JSON, which JupyterLab draws offline (also in a reopened notebook), plus small HTML that loads
plotly.js from the CDN, which the Quarto docs site shows. Widget outputs are dropped: without the kernel that
made them they show only "model not found".
"""
import json, os, re, sys
from pathlib import Path

WIDGET = 'application/vnd.jupyter.widget-view+json'
SKIP = re.compile(r'^#\|\s*(eval:\s*false|notest|slow)\b', re.M)

def _join_sources(o):
    "Plotly image traces have a `source` key: execnb's writer splits every `source` into lines, which it cannot read back."
    if isinstance(o, dict): return {k: ''.join(v) if k == 'source' and isinstance(v, list) else _join_sources(v) for k, v in o.items()}
    if isinstance(o, list): return [_join_sources(v) for v in o]
    return o

def run(fn:Path):
    from execnb.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    from nbdev.clean import clean_nb
    nb = read_nb(fn)
    for c in nb.cells:
        if c.cell_type == 'code': c.outputs, c.execution_count = [], None
    cwd = Path.cwd(); os.chdir(fn.parent)
    try:
        shell = CaptureShell(fn)
        shell.run_cell('import amd_nb.viz; amd_nb.viz.setup_docs_renderer()')
        shell.run_all(nb, exc_stop=True, preproc=lambda c: c.cell_type != 'code' or bool(SKIP.search(c.source)))
    finally: os.chdir(cwd)
    for c in nb.cells:
        if c.cell_type == 'code': c.outputs = [o for o in c.outputs if WIDGET not in o.get('data', {})]
    clean_nb(nb)
    write_nb(nb, fn)
    d = json.loads(fn.read_text())
    for c in d['cells']:
        for o in c.get('outputs', []):
            if 'data' in o: o['data'] = _join_sources(o['data'])
    fn.write_text(json.dumps(d, indent=1, ensure_ascii=False) + '\n')
    print(f"{fn}: {fn.stat().st_size/1024:.0f} KiB with outputs")

if __name__ == '__main__':
    for f in sys.argv[1:]: run(Path(f))
