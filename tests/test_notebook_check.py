"""The notebook staleness check (`scripts/run_notebook.py --check`): it must pass on outputs saved from a run whose floats
differ (another CPU rounds differently) and fail, naming the cell or module, when code changed without a refresh."""
import json, os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT/'scripts'/'run_notebook.py'

# A project of its own (settings.ini + a two-module library) so that the check's module tracking is exercised without
# the cost of importing amd_nb. `PERTURB` adds a tiny deliberate perturbation to near-tied floats: their values and
# their ranks change, as they do on a CPU with another SIMD width or thread count.
CORE = '''from .helper import ties
def scores(eps:float)->list:
    "Eight near-tied values; `eps` moves them by about eps."
    import random
    g = random.Random(0)
    return [t + eps * g.gauss(0, 1) for t in ties(8)]
'''
HELPER = 'def ties(n): return [i * 1e-9 for i in range(n)]\n'
CELLS = ["import os, sys\nsys.path.insert(0, '..')",
         "from toylib.core import scores",
         "#| exact\nprint('pairs:', 6)",
         "s = scores(float(os.environ.get('PERTURB', '0')))\nprint([round(v, 12) for v in s])\nsorted(range(8), key=s.__getitem__)",
         "from IPython.display import display, Markdown\ndisplay(Markdown('**done**'))"]

def _notebook(cells)->dict:
    return {'cells': [{'cell_type': 'code', 'execution_count': None, 'id': f'c{i}', 'metadata': {}, 'outputs': [],
                       'source': src} for i, src in enumerate(cells)],
            'metadata': {'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'}},
            'nbformat': 4, 'nbformat_minor': 5}

@pytest.fixture
def project(tmp_path):
    (tmp_path/'settings.ini').write_text('[DEFAULT]\nlib_name = toylib\nlib_path = toylib\n')
    (tmp_path/'toylib').mkdir()
    (tmp_path/'toylib'/'__init__.py').write_text('')
    (tmp_path/'toylib'/'core.py').write_text(CORE)
    (tmp_path/'toylib'/'helper.py').write_text(HELPER)
    (tmp_path/'nbs').mkdir()
    nb = tmp_path/'nbs'/'toy.ipynb'
    nb.write_text(json.dumps(_notebook(CELLS)))
    return nb

def _run(*args, perturb='0'):
    env = {**os.environ, 'PERTURB': perturb}
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=env, cwd=ROOT)

def _refresh(nb, perturb='0'):
    r = _run(nb, perturb=perturb); assert r.returncode == 0, r.stderr
    return json.loads(nb.read_text())

def _outputs(d:dict, i:int)->str:
    "The text the `i`-th code cell (1-based) saved."
    c = [c for c in d['cells'] if c['cell_type'] == 'code'][i - 1]
    return json.dumps(c['outputs'])

def _edit(nb, f):
    d = json.loads(nb.read_text()); f(d); nb.write_text(json.dumps(d, indent=1))

def test_record_lists_cells_and_the_modules_they_run(project):
    d = _refresh(project)
    rec = d['metadata']['amd_nb_outputs']
    assert len(rec['cells']) == len(CELLS)
    assert sorted(rec['modules']) == ['toylib/__init__.py', 'toylib/core.py', 'toylib/helper.py']   # helper: imported by core

def test_passes_on_outputs_saved_from_perturbed_floats(project, tmp_path):
    saved = _refresh(project, perturb='1e-7')                 # outputs saved on "another CPU"
    other = tmp_path/'nbs'/'other.ipynb'; other.write_text(project.read_text())
    fresh = _refresh(other, perturb='0')
    assert _outputs(saved, 4) != _outputs(fresh, 4)            # the floats and the ranks really differ ...
    assert _outputs(saved, 3) == _outputs(fresh, 3)
    r = _run('--check', project, perturb='0')                  # ... and the check still passes
    assert r.returncode == 0, r.stderr

def test_fails_naming_an_edited_cell(project):
    _refresh(project)
    _edit(project, lambda d: d['cells'][3].update(source=CELLS[3] + '\n# changed'))
    r = _run('--check', project)
    assert r.returncode == 1
    assert 'code cell 4 ("s = scores(float(os.environ.get(' in r.stderr and 'its source changed since the outputs were saved' in r.stderr
    assert 'code cell 3' not in r.stderr

def test_fails_naming_a_changed_module(project):
    _refresh(project)
    (project.parent.parent/'toylib'/'helper.py').write_text(HELPER + '# a comment changes the digest too\n')
    r = _run('--check', project)
    assert r.returncode == 1 and 'toylib/helper.py: changed since the outputs were saved (this notebook runs it)' in r.stderr
    assert 'toylib/core.py' not in r.stderr

def test_fails_without_a_record(project):
    _refresh(project)
    _edit(project, lambda d: d['metadata'].pop('amd_nb_outputs'))
    r = _run('--check', project)
    assert r.returncode == 1 and 'no record of what its saved outputs were made from' in r.stderr

def test_exact_cells_compare_their_text(project):
    _refresh(project)
    def wrong(d):
        c = [c for c in d['cells'] if c['cell_type'] == 'code'][2]
        c['outputs'][0]['text'] = ['pairs: 7\n']
    _edit(project, wrong)
    r = _run('--check', project)
    assert r.returncode == 1 and 'code cell 3' in r.stderr and 'shows other text than it saved' in r.stderr

def test_fails_when_a_cell_shows_another_kind_of_output(project):
    _refresh(project)
    _edit(project, lambda d: d['cells'][4].update(outputs=[]))
    r = _run('--check', project)
    assert r.returncode == 1 and 'code cell 5' in r.stderr and 'shows output the notebook did not save' in r.stderr

def test_fails_on_an_error(project):
    _refresh(project)
    _edit(project, lambda d: d['cells'][2].update(source="#| exact\nraise ValueError('boom')"))
    r = _run('--check', project)
    assert r.returncode == 1 and 'boom' in r.stderr and 'code cell 3' in r.stderr
