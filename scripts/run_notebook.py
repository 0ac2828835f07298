"""Execute notebooks and save their outputs (the way the docs site shows them).

    python scripts/run_notebook.py nbs/09_viz.ipynb [more.ipynb ...]

Runs every code cell with nbdev's notebook runner (execnb), skipping cells marked `#| eval: false`
or with a test flag of settings.ini (`notest`, `slow`), writes the outputs back into the notebook and
cleans it with `nbdev_clean`. Plotly figures are saved with `amd_nb.viz.setup_docs_renderer`'s renderer:
the figure's JSON, which JupyterLab draws offline (also in a reopened notebook), plus small HTML that loads
plotly.js from the CDN, which the Quarto docs site shows. Widget outputs are dropped: without the kernel that
made them they show only "model not found".
"""
import os, re, sys
from pathlib import Path

WIDGET = 'application/vnd.jupyter.widget-view+json'
SKIP = re.compile(r'^#\|\s*(eval:\s*false|notest|slow)\b', re.M)

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
    print(f"{fn}: {fn.stat().st_size/1024:.0f} KiB with outputs")

if __name__ == '__main__':
    for f in sys.argv[1:]: run(Path(f))
