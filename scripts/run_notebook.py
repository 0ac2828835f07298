"""Execute notebooks and save their outputs (the way the docs site shows them).

    python scripts/run_notebook.py nbs/09_viz.ipynb [more.ipynb ...]

Runs every code cell with nbdev's notebook runner (execnb), skipping cells marked `#| eval: false`
or with a test flag of settings.ini (`notest`, `slow`), writes the outputs back into the notebook and
cleans it with `nbdev_clean`. Plotly figures are saved with the `notebook_connected` renderer
(`amd_nb.viz.setup_docs_renderer`): small HTML outputs that load plotly.js when the page is viewed.
"""
import os, re, sys
from pathlib import Path

SKIP = re.compile(r'^#\|\s*(eval:\s*false|notest|slow)\b', re.M)

def run(fn:Path):
    from execnb.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    from nbdev.clean import clean_nb
    os.environ.setdefault('PLOTLY_RENDERER', 'notebook_connected')
    nb = read_nb(fn)
    for c in nb.cells:
        if c.cell_type == 'code': c.outputs, c.execution_count = [], None
    cwd = Path.cwd(); os.chdir(fn.parent)
    try: CaptureShell(fn).run_all(nb, exc_stop=True, preproc=lambda c: c.cell_type != 'code' or bool(SKIP.search(c.source)))
    finally: os.chdir(cwd)
    clean_nb(nb)
    write_nb(nb, fn)
    print(f"{fn}: {fn.stat().st_size/1024:.0f} KiB with outputs")

if __name__ == '__main__':
    for f in sys.argv[1:]: run(Path(f))
