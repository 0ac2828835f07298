"The built wheel carries the embedded dataset and loads it from the installed package."
import json, subprocess, sys, zipfile
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp('dist')
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '-q', '-w', str(out), str(ROOT)], check=True)
    (w,) = out.glob('amd_nb-*.whl')
    return w

def test_wheel_contains_asset(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for f in ('images_64.png', 'emoji.json', 'NOTICE.md'): assert f'amd_nb/assets/emoji/{f}' in names
    assert 'amd_nb/experts.py' in names and 'amd_nb/data.py' in names
    size = sum(i.file_size for i in zipfile.ZipFile(wheel).infolist() if '/assets/' in i.filename)
    assert size <= 8 * 2**20

def test_installed_package_loads_emoji(wheel, tmp_path):
    target = tmp_path/'site'
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--target', str(target), str(wheel)], check=True)
    code = ("import amd_nb, json; from amd_nb.data import load_pairs; "
            "ps = {s: load_pairs('emoji', s) for s in ('train', 'val', 'test')}; "
            "print(json.dumps({'file': amd_nb.__file__, 'n': {s: len(p) for s, p in ps.items()}, 'shape': list(ps['test'].images.shape)}))")
    r = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env={'PYTHONPATH': str(target), 'PATH': '/usr/bin:/bin', 'HOME': str(tmp_path)},
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info['file'].startswith(str(target))
    assert sum(info['n'].values()) >= 1800 and min(info['n'].values()) > 0
    assert info['shape'][1:] == [3, 64, 64]

def test_make_docs_without_quarto_says_how_to_get_it(tmp_path):
    "`make docs` checks for Quarto before anything else: no install attempt (sudo, pip into another Python), a clear message."
    import shutil, time
    path = '/usr/bin:/bin'
    if shutil.which('quarto', path=path): pytest.skip(f"quarto is installed on {path}: nothing to check here")
    t0 = time.time()
    r = subprocess.run(['make', '-s', 'docs'], cwd=ROOT, capture_output=True, text=True, env={'PATH': path, 'HOME': str(tmp_path)})
    assert r.returncode != 0 and time.time() - t0 < 20
    assert 'Quarto is not installed' in r.stdout and 'quarto.org' in r.stdout and "'make test' already checks the docs" in r.stdout
    assert 'pip' not in r.stdout + r.stderr and 'sudo' not in r.stderr and not (ROOT/'_docs').exists() or (ROOT/'_docs').stat().st_mtime < t0
