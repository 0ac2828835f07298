"Shared pytest fixtures. Data: Karpathy-layout and folder/CSV fixtures written with PIL, a counting text encoder."
import json, os, subprocess, sys
from pathlib import Path
import pytest, torch
from PIL import Image

KARPATHY_TRAIN = 4  # images in the train split of the Karpathy fixture (3 captions each, one item per caption)

def write_image(path:Path, size=(8, 8), color=(255, 0, 0), fmt=None):
    "Write a solid-colour RGB image (format from the suffix unless `fmt`)."
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new('RGB', size, color).save(path, fmt)
    return path

@pytest.fixture
def karpathy_root(tmp_path):
    "A Flickr30k-style Karpathy fixture: train items one per caption, val/test items with caption lists."
    root = tmp_path/'flickr'
    imgs = [f'flickr30k-images/{1000+i}.jpg' for i in range(KARPATHY_TRAIN + 4)]
    for i, rel in enumerate(imgs): write_image(root/rel, size=(12 + 2*i, 8), color=(30*i, 100, 200 - 20*i))
    train = [{'image': imgs[i], 'caption': f'a photo number {i}, caption {k}.', 'image_id': str(1000+i)}
             for k in range(3) for i in range(KARPATHY_TRAIN)]  # interleaved: grouping must keep first-seen order
    val = [{'image': imgs[i], 'caption': [f'val image {i} caption {k}' for k in range(5)]} for i in (4, 5)]
    test = [{'image': imgs[i], 'caption': [f'test image {i} caption {k}' for k in range(5)]} for i in (6, 7)]
    for split, items in (('train', train), ('val', val), ('test', test)):
        (root/f'flickr30k_{split}.json').write_text(json.dumps(items))
    return root

@pytest.fixture
def csv_root(tmp_path):
    "A folder with 40 PNGs (all three hash splits non-empty) and a `captions.csv` (image,caption; no split column; two rows per image)."
    root = tmp_path/'mine'
    rows = ['image,caption']
    for i in range(40):
        write_image(root/f'img/{i:02d}.png', color=(5*i, 0, 0))
        rows += [f'img/{i:02d}.png,"red, shade {i}"', f'img/{i:02d}.png,second caption {i}']
    (root/'captions.csv').write_text('\n'.join(rows) + '\n')
    return root

class CountingEncoder:
    "A tiny deterministic text encoder that counts its `encode` calls."
    name, dim = 'test-count', 3
    def __init__(self): self.calls = 0
    def encode(self, texts, batch_size=256):
        self.calls += 1
        return torch.tensor([[len(t), sum(map(ord, t)) % 97, 1.0] for t in texts])

@pytest.fixture
def counting_encoder():
    "Register 'test-count' (a fresh `CountingEncoder`) and return the instance."
    from amd_nb.data import register_text_encoder
    enc = CountingEncoder()
    register_text_encoder('test-count')(lambda name, device: enc)
    return enc


TINY_DEMO = ['--preset', 'tiny', '--set', 'eval.n_eval=2']

def run_prog(prog, *args, **kw):
    "Run console script `prog` of this environment in a subprocess (one thread)."
    return subprocess.run([str(Path(sys.executable).parent/prog), *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, 'OMP_NUM_THREADS': '1'}, **kw)

def _tiny_demo(out:Path):
    first = run_prog('amd-demo', *TINY_DEMO, '--out', out, '--quiet')
    assert first.returncode == 0, first.stderr
    second = run_prog('amd-demo', *TINY_DEMO, '--out', out, '--quiet')
    assert second.returncode == 0, second.stderr
    return out, first, second

@pytest.fixture(scope='session')
def tiny_demo(tmp_path_factory):
    "A finished `amd-demo` on the tiny preset and the output of running it twice: (out, first, second). Tests copy it before changing it."
    if not os.environ.get('PYTEST_XDIST_WORKER'): return _tiny_demo(tmp_path_factory.mktemp('demo')/'run')
    # pytest -n: the workers share one run (made by whichever asks first), as pytest-xdist's docs show for session fixtures
    from filelock import FileLock
    shared = tmp_path_factory.getbasetemp().parent
    record = shared/'tiny_demo.json'
    with FileLock(str(shared/'tiny_demo.lock')):
        if not record.exists():
            out, *runs = _tiny_demo(shared/'tiny_demo'/'run')
            record.write_text(json.dumps([{'args': r.args, 'returncode': r.returncode, 'stdout': r.stdout, 'stderr': r.stderr} for r in runs]))
        first, second = (subprocess.CompletedProcess(**r) for r in json.loads(record.read_text()))
    return shared/'tiny_demo'/'run', first, second
