"""Bad input, hostile reruns and concurrent writers, tried as a new user would (issue 13), on the `tiny` preset.

Every case ends either in exactly one stderr line `<prog>: error: <message naming the value or file>` with exit
status 2 and no traceback, or in the correct behaviour (recomputed, refused, extended, left untouched). Commands
run in this process (`amd_nb.cli.amd_*(argv)`), so a traceback would fail the test as an uncaught exception; the
lock cases start real second processes.
"""
import contextlib, io, json, os, shutil, signal, struct, subprocess, sys, time, zlib
from pathlib import Path
import pytest, torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from amd_nb import cli
from amd_nb.checks import NonFiniteError
from amd_nb.config import get_preset
from amd_nb.data import embedding_cache_path, load_split
from amd_nb.experts import TrajectoryStore, expert_file
from amd_nb.models import recall_at_k
from amd_nb.report import STAGES
from amd_nb.synthetic import SyntheticSet

PROGS = {'amd-buffer': cli.amd_buffer, 'amd-distill': cli.amd_distill, 'amd-eval': cli.amd_eval,
         'amd-compare': cli.amd_compare, 'amd-demo': cli.amd_demo}


def run(prog, *args):
    "Run a command in this process on the tiny preset: (exit status, stdout, stderr)."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = PROGS[prog](['--preset', 'tiny', '--quiet', *map(str, args)])
    return rc, out.getvalue(), err.getvalue()


def one_line_error(prog, r, *names)->str:
    "Assert exit 2 and exactly one stderr line `prog: error: ...` that contains every one of `names`; return it."
    rc, _, err = r
    lines = [l for l in err.splitlines() if l.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith(f"{prog}: error: ") and 'Traceback' not in err, (rc, err)
    for n in names: assert str(n) in lines[0], (n, lines[0])
    return lines[0]


def ok(r):
    rc, out, err = r
    assert rc == 0, err
    return r


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    "A module folder with its own embedding cache (restored afterwards)."
    root = tmp_path_factory.mktemp('bad')
    old = os.environ.get('AMD_NB_CACHE')
    os.environ['AMD_NB_CACHE'] = str(root/'cache')
    yield root
    if old is None: os.environ.pop('AMD_NB_CACHE', None)
    else: os.environ['AMD_NB_CACHE'] = old


@pytest.fixture(scope='module')
def base(root):
    "A tiny expert store (2 experts × 2 epochs): `amd-buffer --out base`."
    ok(run('amd-buffer', '--out', root/'base', '--set', 'expert.eval_every=0'))
    return root/'base'/'experts'


@pytest.fixture(scope='module')
def distilled(root, base):
    "A finished 4-iteration `lors` distillation of `base`: `amd-distill --out mm`."
    ok(run('amd-distill', '--experts', base, '--out', root/'mm'))
    return root/'mm'/'distill'/'lors'


def copy_store(base, dest:Path)->Path:
    shutil.copytree(base, dest/'experts'); return dest/'experts'


def rewrite(path:Path, change):
    "Rewrite the safetensors file `path` with `change(tensors)` applied, keeping its metadata."
    with safe_open(str(path), framework='pt') as f: meta = f.metadata()
    t = load_file(str(path)); change(t); save_file(t, str(path), metadata=meta)


def same_set(a:SyntheticSet, b:SyntheticSet)->bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def png_header(path:Path, w:int, h:int)->Path:
    "A PNG whose header claims w×h pixels (a few dozen bytes)."
    chunk = lambda t, d: struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0)) + chunk(b'IEND', b''))
    return path


def csv_data(folder:Path, extra_rows=(), n:int=24)->Path:
    "A folder of `n` small PNGs with captions.csv (split column) plus `extra_rows` (image, caption, split)."
    folder.mkdir(parents=True, exist_ok=True)
    rows = ['image,caption,split']
    for i in range(n):
        Image.new('RGB', (8, 8), (10 * i, 0, 0)).save(folder/f'{i:02d}.png')
        rows.append(f"{i:02d}.png,red square number {i},{['train', 'train', 'val', 'test'][i % 4]}")
    rows += [','.join(r) for r in extra_rows]
    (folder/'captions.csv').write_text('\n'.join(rows) + '\n')
    return folder/'captions.csv'


# ---------------------------------------------------------------- 1. non-finite numbers are errors, never metrics

def test_recall_of_a_nan_model_is_an_error():
    with pytest.raises(NonFiniteError, match='image embeddings: 6 of 6 values are not finite'):
        recall_at_k(torch.full((3, 2), float('nan')), torch.eye(2)[[0, 1, 1]], torch.tensor([0, 1, 2]))


def test_eval_with_diverging_lr(root, base):
    "The issue's reproduction: `eval.lr_*=1e6` scored 100.0 ± 0.0 on every metric."
    out = root/'evlr'
    msg = one_line_error('amd-eval', run('amd-eval', '--experts', base, '--out', out, '--set', 'eval.lr_image=1e6', '--set', 'eval.lr_text=1e6', 'random@8'),
                         "set 'random@8'", 'not finite', 'lower eval.lr_image / eval.lr_text')
    assert '100.0' not in msg and not (out/'eval').exists()


@pytest.mark.parametrize('prog, key, value', [('amd-distill', 'distill.lr_image', 'inf'), ('amd-buffer', 'expert.lr_image', 'inf'),
                                              ('amd-eval', 'eval.lr_text', 'nan'), ('amd-distill', 'distill.text_radius', 'inf'),
                                              ('amd-buffer', 'model.temperature', '-inf')])
def test_nonfinite_settings(root, base, prog, key, value):
    extra = ['--experts', base] if prog != 'amd-buffer' else []
    one_line_error(prog, run(prog, *extra, '--out', root/'nonfinite', '--set', f'{key}={value}', *(['random@8'] if prog == 'amd-eval' else [])),
                   f"{key}: must be a finite number, got {value}")
    assert not (root/'nonfinite').exists()


def test_expert_that_diverges(root):
    "`expert.lr_image=inf` wrote NaN trajectories and printed val r_mean 100.0; a finite lr that diverges is stopped too."
    one_line_error('amd-buffer', run('amd-buffer', '--out', root/'x30', '--set', 'expert.lr_image=1e30'),
                   'expert 0: the training loss is nan', 'lower expert.lr_image')
    assert TrajectoryStore(root/'x30'/'experts').finished() == []


def test_nan_pixels_in_a_synthetic_set(root, base, distilled):
    "A set with 4 NaN pixels scored 100.0 (the intact set: r_mean ~10)."
    shutil.copytree(distilled/'synthetic', root/'nanset')
    rewrite(root/'nanset'/'synthetic.safetensors', lambda t: t['images'].view(-1)[:4].fill_(float('nan')))
    one_line_error('amd-eval', run('amd-eval', '--experts', base, '--out', root/'ev_nan', root/'nanset'),
                   f"{root/'nanset'/'synthetic.safetensors'}: images: 4 of", 'not finite')


def test_nan_expert(root, base):
    store = copy_store(base, root/'nanexp')
    for i in (0, 1): rewrite(store/expert_file(i), lambda t: t['text'].fill_(float('nan')))
    one_line_error('amd-distill', run('amd-distill', '--experts', store, '--out', root/'nanexp'), 'expert_000', 'text trajectory', 'not finite')
    one_line_error('amd-eval', run('amd-eval', '--experts', store, '--out', root/'nanexp', 'spm@8'), expert_file(0), 'not finite')


def test_finite_garbage_in_an_expert(root, base):
    store = copy_store(base, root/'garbage')
    for i in (0, 1): rewrite(store/expert_file(i), lambda t: t['image'].mul_(1000))
    one_line_error('amd-distill', run('amd-distill', '--experts', store, '--out', root/'garbage'),
                   'image trajectory at epoch', 'does not match the checksum written with it', 'amd-buffer')


def test_nan_embedding_cache_is_recomputed(root, base):
    "A NaN text-embedding cache entry scored 100.0; now it is computed again and never used."
    tr = load_split(get_preset('tiny').data, 'train', progress=False)
    p = embedding_cache_path(tr.pairs.flat_captions, 'minilm', root/'cache')
    assert p.exists()
    save_file({'embeddings': torch.full_like(tr.text, float('nan'))}, str(p))
    rc, out, err = ok(run('amd-eval', '--experts', base, '--out', root/'ev_cache', 'random@8'))
    assert torch.equal(load_file(str(p))['embeddings'], tr.text)
    assert 0 < json.loads((root/'ev_cache'/'eval'/'random_B8.json').read_text())['mean']['r_mean'] < 100


# ---------------------------------------------------------------- 2. reruns never reuse results made under other settings

def test_distill_rerun_with_another_seed(root, base, distilled):
    "The issue's reproduction: exit 0 in 4 s, tensors of the seed-0 set, `synthetic.json` saying seed 5."
    before = {p.name: p.read_bytes() for p in (distilled/'synthetic').iterdir()}
    one_line_error('amd-distill', run('amd-distill', '--experts', base, '--out', root/'mm', '--set', 'seed=5'),
                   f"{distilled/'checkpoint.safetensors'} was made with other settings (seed: 0 → 5)", f"use a new --out or delete {distilled}")
    assert {p.name: p.read_bytes() for p in (distilled/'synthetic').iterdir()} == before


@pytest.mark.parametrize('key, old, new', [('distill.sim_rank', 10, 3), ('distill.budget', 8, 6), ('distill.lr_image', 1.0, 2.0)])
def test_distill_rerun_with_other_settings(root, base, distilled, key, old, new):
    "A new budget or `sim_rank` gave a traceback (size mismatch); any change of the set's settings is refused by name."
    one_line_error('amd-distill', run('amd-distill', '--experts', base, '--out', root/'mm', '--set', f'{key}={new}'), f"{key}: {old} → {new}")


def test_distill_rerun_with_fewer_iterations(root, base, distilled):
    one_line_error('amd-distill', run('amd-distill', '--experts', base, '--out', root/'mm', '--set', 'distill.iterations=2'),
                   'is at iteration 4, beyond distill.iterations 2')


def test_distill_more_iterations_extend_the_run(root, base, distilled):
    "More iterations continue from the checkpoint: the result equals an uninterrupted longer run, and says so."
    shutil.copytree(root/'mm', root/'mm_more')
    ok(run('amd-distill', '--experts', base, '--out', root/'mm_more', '--set', 'distill.iterations=6'))
    ok(run('amd-distill', '--experts', base, '--out', root/'mm6', '--set', 'distill.iterations=6'))
    a, b = (SyntheticSet.load(r/'distill'/'lors'/'synthetic') for r in (root/'mm_more', root/'mm6'))
    assert same_set(a, b) and a.meta['config']['distill']['iterations'] == 6


def test_buffer_rerun_with_another_lr(root, base):
    "Two `amd-buffer` runs with different lrs left a mixed store; a rerun names the change and trains nothing."
    copy_store(base, root/'lr')
    before = (root/'lr'/'experts'/expert_file(0)).read_bytes()
    one_line_error('amd-buffer', run('amd-buffer', '--out', root/'lr', '--set', 'expert.lr_image=0.05'),
                   'holds experts trained with other settings (expert.lr_image: 0.1 → 0.05)')
    assert (root/'lr'/'experts'/expert_file(0)).read_bytes() == before


def test_compare_rerun_with_other_eval_settings(root, base):
    args = ['--experts', base, '--out', root/'cmp', '--methods', 'random', '--budgets', 8, '--n-syn-sets', 1]
    ok(run('amd-compare', *args))
    one_line_error('amd-compare', run('amd-compare', *args, '--set', 'eval.epochs=4'),
                   f"{root/'cmp'/'comparison'/'cells'/'random_B8_s0.json'} was made with other settings (eval.epochs: 3 → 4)")
    (root/'cmp'/'comparison'/'cells'/'random_B8_s0.json').write_text('{"method": "random", "bud')
    one_line_error('amd-compare', run('amd-compare', *args), 'random_B8_s0.json is damaged (not valid JSON', 'delete it')


@pytest.mark.parametrize('key, value, msg', [('eval.epochs', 4, 'full.json was made with other settings (eval.epochs: 3 → 4)'),
                                             ('distill.iterations', 6, 'amd_B8_s0.json was made with other settings (distill.iterations: 4 → 6)'),
                                             ('distill.lr_image', 2.0, 'amd_B8_s0.json was made with other settings (distill.lr_image: 1.0 → 2.0)'),
                                             ('model.width', 4, 'holds experts trained with other settings (model.width: 8 → 4)')])
def test_demo_rerun_with_other_settings(tiny_demo, key, value, msg):
    "The issue's reproduction: every stage skipped, `metrics.json` stating the new config over old numbers."
    out = tiny_demo[0]
    before = {p.name: p.read_bytes() for p in (out/'metrics.json', out/'report.html', out/'comparison'/'comparison.json')}
    one_line_error('amd-demo', run('amd-demo', '--out', out, '--set', 'eval.n_eval=2', '--set', f'{key}={value}'), msg, 'use a new --out or delete')
    assert {p.name: p.read_bytes() for p in (out/'metrics.json', out/'report.html', out/'comparison'/'comparison.json')} == before


def test_demo_damaged_run_files(tiny_demo, tmp_path):
    "Damaged `stages.json`, `prototypes.json` and `comparison.json` are recomputed; a damaged cell is named."
    out = tmp_path/'run'; shutil.copytree(tiny_demo[0], out)
    for f in ('stages.json', 'prototypes.json', 'comparison/comparison.json'): (out/f).write_bytes(b'\xff{"x": ')
    rc, stdout, err = ok(run('amd-demo', '--out', out, '--set', 'eval.n_eval=2'))
    for f in ('stages.json', 'prototypes.json', 'comparison/comparison.json'): json.loads((out/f).read_text())
    assert '[3/6] prototypes: ' in stdout and 'skipped' not in [l for l in stdout.splitlines() if l.startswith('[3/6]')][-1]
    assert json.loads((out/'metrics.json').read_text())['methods'] == json.loads((tiny_demo[0]/'metrics.json').read_text())['methods']
    (out/'comparison'/'cells'/'random_B8_s0.json').write_text('{}x')
    one_line_error('amd-demo', run('amd-demo', '--out', out, '--set', 'eval.n_eval=2'), 'random_B8_s0.json is damaged')


# ---------------------------------------------------------------- 3. one writer per output folder

HOLD = ("import sys, time; from amd_nb.io import folder_lock\n"
        "with folder_lock(sys.argv[1], 'amd-distill --out held'):\n    print('held', flush=True); time.sleep(120)")


@pytest.fixture(scope='module')
def held(root):
    "An output folder whose lock another process holds."
    p = subprocess.Popen([sys.executable, '-c', HOLD, str(root/'held')], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == 'held'
    yield root/'held', p.pid
    p.kill(); p.wait()


@pytest.mark.parametrize('prog', list(PROGS))
def test_second_writer_is_refused(base, held, prog):
    out, pid = held
    extra = {'amd-buffer': [], 'amd-demo': [], 'amd-distill': ['--experts', base], 'amd-compare': ['--experts', base, '--budgets', 8],
             'amd-eval': ['--experts', base, 'random@8']}[prog]
    one_line_error(prog, run(prog, *extra, '--out', out), f"{out} is in use by another run (pid {pid} on ", 'amd-distill --out held', 'use another output folder')


def test_two_distills_on_one_folder(root, base):
    "The issue's reproduction: both exited 0 and `log.jsonl` had 211 lines for 120 iterations."
    cmd = [sys.executable, '-c', 'import sys; from amd_nb.cli import amd_distill; sys.exit(amd_distill(sys.argv[1:]))',
           '--preset', 'tiny', '--quiet', '--experts', str(base), '--out', str(root/'two'), '--set', 'distill.iterations=120']
    ps = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errs = [p.communicate()[1] for p in ps]
    res = sorted((p.returncode, e) for p, e in zip(ps, errs))
    assert [rc for rc, _ in res] == [0, 2], res
    assert 'amd-distill: error: ' in res[1][1] and 'is in use by another run' in res[1][1] and 'Traceback' not in res[1][1]
    log = [json.loads(l)['iteration'] for l in (root/'two'/'distill'/'lors'/'log.jsonl').read_text().splitlines()]
    assert log == list(range(1, 121))


def test_stale_lock_and_temp_files_of_a_killed_run(root, base):
    "A run killed while holding the lock leaves its record and temporary files; the next run takes over and cleans up."
    out = root/'stale'; (out/'eval').mkdir(parents=True)
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True).stdout.strip()
    (out/'.lock').write_text(json.dumps(dict(pid=int(dead), host='h', command='amd-eval', since='then')))
    stale = [out/'eval'/f'.random_B8.json.{dead}.tmp', out/f'.x.safetensors.{dead}.tmp']
    for p in stale: p.write_bytes(b'half a file')
    live = out/'.y.json.1.tmp'; live.write_bytes(b'pid 1 is alive')
    ok(run('amd-eval', '--experts', base, '--out', out, 'random@8'))
    assert not any(p.exists() for p in stale) and live.exists()


def test_torchrun_ranks_share_the_lock(tmp_path):
    "Under torchrun only rank 0 takes the lock: the other ranks of the job are not locked out."
    from amd_nb.io import folder_lock
    probe = ("import sys; from amd_nb.io import folder_lock\n"
             "with folder_lock(sys.argv[1]): print('in')")
    with folder_lock(tmp_path):
        r1 = subprocess.run([sys.executable, '-c', probe, str(tmp_path)], capture_output=True, text=True, env={**os.environ, 'RANK': '1'})
        r0 = subprocess.run([sys.executable, '-c', probe, str(tmp_path)], capture_output=True, text=True, env={**os.environ, 'RANK': '0'})
    assert r1.stdout.strip() == 'in' and 'FolderLocked' in r0.stderr


# ---------------------------------------------------------------- 4. paths stay inside the data folder

@pytest.fixture(scope='module')
def secret(root):
    (root/'x').mkdir(exist_ok=True)
    Image.new('RGB', (8, 8), (1, 2, 3)).save(root/'x'/'secret.png')
    return root/'x'/'secret.png'


@pytest.mark.parametrize('entry', ['../../x/secret.png', 'ABS', '/etc/passwd', '/etc/no-such-file'])
def test_csv_paths_outside_the_data_folder(root, secret, entry):
    entry = str(secret) if entry == 'ABS' else entry
    f = csv_data(root/'d'/'sub', [(entry, 'a secret', 'train')])
    msg = one_line_error('amd-buffer', run('amd-buffer', '--data', f, '--out', root/'esc'), f"image {entry!r} is outside the data folder")
    assert 'does not exist' not in msg                 # the same words whether or not the outside file exists


def test_missing_and_existing_outside_files_read_alike(root, secret):
    msgs = []
    for entry in ('/etc/passwd', '/etc/no-such-file'):
        f = csv_data(root/'alike', [(entry, 'x', 'train')])
        msgs.append(one_line_error('amd-buffer', run('amd-buffer', '--data', f, '--out', root/'esc')).replace(entry, 'ENTRY'))
    assert msgs[0] == msgs[1]


def test_symlink_out_of_the_data_folder(root, secret):
    f = csv_data(root/'sym')
    (root/'sym'/'link.png').symlink_to(secret)
    f.write_text(f.read_text() + 'link.png,a linked secret,train\n')
    one_line_error('amd-buffer', run('amd-buffer', '--data', f, '--out', root/'esc'), "image 'link.png' is outside the data folder")


@pytest.mark.parametrize('layout', ['blip', 'dataset'])
def test_karpathy_paths_outside_the_data_folder(root, secret, layout):
    d = root/f'k_{layout}'; d.mkdir()
    Image.new('RGB', (8, 8)).save(d/'a.png')
    if layout == 'blip':
        for s in ('train', 'val', 'test'):
            (d/f'flickr30k_{s}.json').write_text(json.dumps([{'image': 'a.png', 'caption': 'ok'}, {'image': '../x/secret.png', 'caption': 'no'}]))
    else:
        (d/'dataset_flickr30k.json').write_text(json.dumps({'images': [{'filename': f, 'split': s, 'sentences': [{'raw': 'x'}]}
                                                                        for s in ('train', 'val', 'test') for f in ('a.png', '../x/secret.png')]}))
    one_line_error('amd-buffer', run('amd-buffer', '--data', d, '--out', root/'esc'), "image '../x/secret.png' is outside the data folder")


def test_manifest_cache_dir_is_never_written(root, base, monkeypatch):
    "A crafted manifest's `config.data.cache_dir` made `amd-distill` write outside the output folder."
    store = copy_store(base, root/'crafted')
    mf = json.loads((store/'manifest.json').read_text()); mf['config']['data']['cache_dir'] = str(root/'evil')
    (store/'manifest.json').write_text(json.dumps(mf))
    monkeypatch.setenv('AMD_NB_CACHE', str(root/'fresh_cache'))          # an empty cache: the run must embed and write somewhere
    ok(run('amd-distill', '--experts', store, '--out', root/'crafted'))
    assert not (root/'evil').exists() and any((root/'fresh_cache'/'text').iterdir())


# ---------------------------------------------------------------- 5. one line naming the value or file

@pytest.mark.parametrize('kind', ['csv', 'jsonl', 'blip', 'yaml', 'json'])
def test_not_utf8(root, kind):
    d = root/f'latin_{kind}'; d.mkdir()
    latin = 'caf\xe9'.encode('latin-1')
    if kind in ('yaml', 'json'):
        f = d/f'run.{kind}'; f.write_bytes(b'seed: 1 # ' + latin + b'\n' if kind == 'yaml' else b'{"seed": 1, "x": "' + latin + b'"}')
        one_line_error('amd-buffer', run('amd-buffer', '--config', f, '--out', root/'esc'), f"config file {f} is not UTF-8 text")
        return
    Image.new('RGB', (8, 8)).save(d/'a.png')
    if kind == 'csv': f = d/'captions.csv'; f.write_bytes(b'image,caption\na.png,' + latin + b'\n')
    elif kind == 'jsonl': f = d/'captions.jsonl'; f.write_bytes(b'{"image": "a.png", "caption": "' + latin + b'"}\n')
    else:
        f = d/'flickr30k_train.json'
        for s in ('val', 'test'): (d/f'flickr30k_{s}.json').write_text('[]')
        f.write_bytes(b'[{"image": "a.png", "caption": "' + latin + b'"}]')
    one_line_error('amd-buffer', run('amd-buffer', '--data', d if kind == 'blip' else f, '--out', root/'esc'), f"{f}: not UTF-8 text", 'save it as UTF-8')


def test_dataset_json_with_sentences_not_a_list(root):
    d = root/'sent5'; d.mkdir()
    (d/'dataset_flickr30k.json').write_text(json.dumps({'images': [{'filename': 'a.jpg', 'split': 'train', 'sentences': 5}]}))
    one_line_error('amd-buffer', run('amd-buffer', '--data', d, '--out', root/'esc'), "dataset_flickr30k.json: image 0: 'sentences' must be a list, got 5")


@pytest.mark.parametrize('side, msg', [(20000, 'is too large to decode safely'), (7500, 'is 7500×7500 = 56.2 megapixels, above the decode limit')])
def test_decompression_bomb(root, side, msg):
    "A 316 KB 10000×10000 PNG added 1.5 GB of memory; above PIL's limit it was a traceback."
    f = csv_data(root/f'bomb{side}')
    png_header(root/f'bomb{side}'/'big.png', side, side)
    f.write_text(f.read_text() + 'big.png,a huge picture,train\n')
    one_line_error('amd-buffer', run('amd-buffer', '--data', f, '--out', root/'esc'), 'big.png', msg)


@pytest.mark.parametrize('prog, args, msg', [
    ('amd-demo', ['--budget', 5000], 'distill.budget: budget 5000 is larger than the 48 training images'),
    ('amd-demo', ['--budget', 0], '--budget: want a number of synthetic pairs ≥ 1, got 0'),
    ('amd-eval', ['random@5000'], 'random@5000: budget 5000 is larger than the 48 training images'),
    ('amd-eval', ['random@0'], 'random@0: a budget must be a whole number ≥ 1, got 0'),
    ('amd-compare', ['--budgets', -5], 'budgets: a budget must be a whole number ≥ 1, got -5'),
    ('amd-compare', ['--budgets', 5000], 'budgets: budget 5000 is larger than the 48 training images'),
    ('amd-compare', ['--budgets', 8, '--n-syn-sets', 0], 'n_syn_sets: want a whole number ≥ 1')])
def test_budgets(root, base, prog, args, msg):
    one_line_error(prog, run(prog, *([] if prog == 'amd-demo' else ['--experts', base]), '--out', root/'budget', *args), msg)


def test_truncated_expert_is_named_then_retrained(root, base):
    store = copy_store(base, root/'trunc')
    f = store/expert_file(1); f.write_bytes(f.read_bytes()[:-200])
    one_line_error('amd-distill', run('amd-distill', '--experts', store, '--out', root/'trunc'), f"{f} is damaged", 'amd-buffer')
    rc, _, err = ok(run('amd-buffer', '--out', root/'trunc'))
    assert 'training expert 1 again' in err
    assert torch.equal(TrajectoryStore(store)[1].image, TrajectoryStore(base)[1].image)


def test_truncated_checkpoint(root, base, distilled):
    shutil.copytree(root/'mm', root/'ck')
    ck = root/'ck'/'distill'/'lors'/'checkpoint.safetensors'; ck.write_bytes(ck.read_bytes()[:-100])
    one_line_error('amd-distill', run('amd-distill', '--experts', base, '--out', root/'ck'), f"{ck} is damaged", f'delete {ck}')


@pytest.mark.parametrize('content, msg', [('{}', 'is not a trajectory store manifest (it lacks config'), ('{"epochs": ', 'is damaged (not valid JSON')])
def test_damaged_manifest(root, base, content, msg):
    store = copy_store(base, root/f'mf{len(content)}')
    (store/'manifest.json').write_text(content)
    one_line_error('amd-distill', run('amd-distill', '--experts', store, '--out', root/'esc'), f"{store/'manifest.json'}", msg)


def test_store_of_other_data(root, base):
    "A store whose data fingerprint is not the data's (files changed, or made before content fingerprints): one line saying what to do."
    store = copy_store(base, root/'otherdata')
    m = json.loads((store/'manifest.json').read_text()); m['fingerprint'] = '0' * 64; (store/'manifest.json').write_text(json.dumps(m))
    one_line_error('amd-distill', run('amd-distill', '--experts', store, '--out', root/'od'), 'does not match the data the experts in',
                   f'{store}', 'fingerprint 000000000000', 'amd-buffer --out NEW')


def test_stray_copy_of_an_expert_file(root, base):
    store = copy_store(base, root/'copyfile')
    shutil.copy(store/expert_file(0), store/'expert_0000 (copy).safetensors')
    ok(run('amd-distill', '--experts', store, '--out', root/'copyfile'))
    assert TrajectoryStore(store).finished() == [0, 1]


@pytest.mark.parametrize('tower, msg', [('timm:no_such_net', "unknown timm model 'no_such_net'"), ('no_such_tower', "model.image_tower: unknown image tower 'no_such_tower'")])
def test_unknown_image_tower(root, tower, msg):
    one_line_error('amd-buffer', run('amd-buffer', '--out', root/'tower', '--set', f'model.image_tower={tower}'), msg)


def test_device_this_machine_lacks(root):
    dev = f'cuda:{torch.cuda.device_count()}' if torch.cuda.is_available() else 'cuda'
    one_line_error('amd-buffer', run('amd-buffer', '--out', root/'dev', '--device', dev), f"device {dev!r}")
    assert not (root/'dev').exists()


def test_out_is_a_file(root):
    (root/'afile').write_text('not a folder')
    one_line_error('amd-buffer', run('amd-buffer', '--out', root/'afile'), f"{root/'afile'} is a file, not a folder")


def test_read_only_output_folder(root):
    if os.geteuid() == 0: out = Path('/sys')             # root writes anywhere chmod allows; sysfs refuses even root
    else: (root/'ro').mkdir(); (root/'ro').chmod(0o500); out = root/'ro'
    one_line_error('amd-buffer', run('amd-buffer', '--out', out), f"cannot write {out}")


def test_toml_config(root):
    "A `.toml` config was parsed as JSON."
    f = root/'run.toml'; f.write_text('[expert]\nepochs = 1\neval_every = 0\n')
    ok(run('amd-buffer', '--config', f, '--out', root/'toml'))
    assert TrajectoryStore(root/'toml'/'experts').epochs == 1
    (root/'run.ini').write_text('[expert]\n')
    one_line_error('amd-buffer', run('amd-buffer', '--config', root/'run.ini', '--out', root/'toml'), "unknown format '.ini'")


# ---------------------------------------------------------------- 6. dropout: reproducible runs and exact resume

def test_dropout_runs_are_reproducible(root):
    "`model.text_dropout > 0` made two identical distillations differ."
    drop = ['--set', 'model.text_dropout=0.1']
    ok(run('amd-buffer', '--out', root/'drop', '--set', 'expert.eval_every=0', *drop))
    store = root/'drop'/'experts'
    for out, its in (('d1', 4), ('d2', 4), ('d3', 2)): ok(run('amd-distill', '--experts', store, '--out', root/out, *drop, '--set', f'distill.iterations={its}'))
    ok(run('amd-distill', '--experts', store, '--out', root/'d3', *drop, '--set', 'distill.iterations=4'))   # resumed from iteration 2
    a, b, c = (SyntheticSet.load(root/o/'distill'/'lors'/'synthetic') for o in ('d1', 'd2', 'd3'))
    assert same_set(a, b) and same_set(a, c)


# ================================================================ issue 21: data identity by content, every Ctrl-C honoured, hostile files named

TINY_DEMO = ['--preset', 'tiny', '--set', 'eval.n_eval=2']   # the settings of `conftest.tiny_demo`
DEEP = '[' * 100_000 + ']' * 100_000          # a JSON text nested 100,000 levels deep (Python's parser: RecursionError)
BIG = '9' * 5000                               # a 5,000-digit integer (Python: ValueError, "Exceeds the limit")


# ---------------------------------------------------------------- 7. the data's fingerprint is its content

def test_swapped_images_of_the_same_size_are_other_data(root):
    "The issue's reproduction: two images of the same byte size swapped, rerun: exit 0 in 1.9 s, the old experts reused."
    f = csv_data(root/'swap')
    a, b = root/'swap'/'00.png', root/'swap'/'04.png'           # both in the train split
    for p, c in ((a, (200, 0, 0)), (b, (0, 0, 200))): Image.new('RGB', (8, 8), c).save(p, compress_level=0)   # stored: the size depends on the shape only
    assert a.stat().st_size == b.stat().st_size and a.read_bytes() != b.read_bytes()
    args = ('--data', f, '--out', root/'swap_run', '--set', 'expert.eval_every=0')
    ok(run('amd-buffer', *args))
    before = (root/'swap_run'/'experts'/expert_file(0)).read_bytes()
    ok(run('amd-buffer', *args))                                  # unchanged data: the experts are reused
    a.rename(root/'swap'/'tmp.png'); b.rename(a); (root/'swap'/'tmp.png').rename(b)
    one_line_error('amd-buffer', run('amd-buffer', *args), f"{root/'swap_run'/'experts'} holds experts trained on other data (fingerprint")
    assert (root/'swap_run'/'experts'/expert_file(0)).read_bytes() == before


def test_image_rewritten_in_place_keeping_size_and_mtime(root):
    "Same size, same modification time, new bytes: the digest cache sees the new change time and reads the file again."
    from amd_nb.data import load_pairs
    f, p = csv_data(root/'inplace'), root/'inplace'/'00.png'
    Image.new('RGB', (8, 8), (200, 0, 0)).save(p, compress_level=0)
    fp = load_pairs(f, 'train').fingerprint()
    st = p.stat(); Image.new('RGB', (8, 8), (0, 0, 200)).save(p, compress_level=0); os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert p.stat().st_size == st.st_size and p.stat().st_mtime_ns == st.st_mtime_ns
    assert load_pairs(f, 'train').fingerprint() != fp


# ---------------------------------------------------------------- 8. every stage stops on Ctrl-C (exit 130) and resumes

INTERRUPT = r'''
import ctypes, os, signal, sys, importlib
signal.signal(signal.SIGINT, signal.default_int_handler)   # Ctrl-C as in a terminal (a background test run ignores SIGINT)
stage, argv = sys.argv[1], sys.argv[2:]
# experts, distill: they run in worker processes at once; Ctrl-C reaches the job while the workers run (distill: once they logged iterations)
where = {'experts': ('amd_nb.experts', '_written'), 'windows': ('amd_nb.mmd', 'mmd_curves'), 'distill': ('amd_nb.distill', '_done_iterations'),
         'evaluate': ('amd_nb.evaluate', 'train_model'), 'report': ('amd_nb.report', 'report_sections'), 'prototypes': ('umap', 'UMAP.fit_transform')}
mod, name = where[stage]
owner = importlib.import_module(mod)
*path, attr = name.split('.')
for p in path: owner = getattr(owner, p)
orig = getattr(owner, attr)
if stage == 'prototypes':   # as numba does when a SIGINT lands while it compiles: raised inside a ctypes callback, printed, swallowed
    cb = ctypes.CFUNCTYPE(None)(lambda: os.kill(os.getpid(), signal.SIGINT) or sum(range(100)))
    def hooked(*a, **k): cb(); return orig(*a, **k)
elif stage in ('experts', 'distill'):
    def hooked(*a, **k):
        n = orig(*a, **k)
        if stage == 'experts' or n >= 1: os.kill(os.getpid(), signal.SIGINT)
        return n
else:
    def hooked(*a, **k): os.kill(os.getpid(), signal.SIGINT); return orig(*a, **k)
setattr(owner, attr, hooked)
from amd_nb.cli import amd_demo
sys.exit(amd_demo(argv))
'''

def test_ctrl_c_in_every_stage_then_resume(tiny_demo, tmp_path):
    """SIGINT inside each stage of `amd-demo` in turn, from an empty folder: each run finishes the stages before it, stops
    inside its stage with exit 130 and the resume hint; the same command then finishes with an uninterrupted run's results."""
    out = tmp_path/'run'
    args = [*TINY_DEMO, '--out', str(out), '--quiet']
    for k, stage in enumerate(STAGES, 1):
        r = subprocess.run([sys.executable, '-c', INTERRUPT, stage, *args], capture_output=True, text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'})
        assert r.returncode == 130 and 'amd-demo: interrupted; finished work is saved, run the same command again to resume' in r.stderr, (stage, r.returncode, r.stderr[-2000:])
        lines = r.stdout.splitlines()
        assert [l for l in lines if l.startswith(f'[{k}/6]')] == [f"[{k}/6] {stage} …"], (stage, r.stdout)   # it stopped inside the stage
        if k > 1:   # the stage interrupted last time ran to its end in this run
            prev = [l for l in lines if l.startswith(f'[{k - 1}/6]')]
            assert len(prev) == 2 and prev[0] == f"[{k - 1}/6] {STAGES[k - 2]} …" and prev[1].endswith(' s'), (stage, r.stdout)
        if stage == 'prototypes': assert 'Exception ignored' in r.stderr and not (out/'prototypes.json').exists()
        if stage == 'distill':   # the workers stopped (a tiny run may finish one first) and left their checkpoints, no temp files
            d = out/'comparison'/'distill'
            assert 'in 2 processes at once' in r.stdout and any((d/f'{m}_B8_s0'/'checkpoint.safetensors').exists() for m in ('amd', 'lors')), r.stdout
            assert not list(d.rglob('*.tmp'))
    r2 = subprocess.run([str(Path(sys.executable).parent/'amd-demo'), *args], capture_output=True, text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r2.returncode == 0, r2.stderr
    assert json.loads((out/'metrics.json').read_text())['methods'] == json.loads((tiny_demo[0]/'metrics.json').read_text())['methods']
    for m in ('amd', 'lors'):
        s = out/'comparison'/'distill'/f'{m}_B8_s0'/'synthetic'
        assert same_set(SyntheticSet.load(s), SyntheticSet.load(tiny_demo[0]/'comparison'/'distill'/f'{m}_B8_s0'/'synthetic'))


@pytest.mark.parametrize('wait', [0, 2])
def test_workers_die_with_a_sigkilled_job(tmp_path, wait):
    "A job killed with SIGKILL leaves none of its worker processes (distillations, experts) running and writing on: killed at once, while the worker starts, or later."
    (tmp_path/'job.py').write_text("import time, amd_nb.dist\nif __name__ == '__main__': amd_nb.dist.run_processes(time.sleep, [('nap', (120,))], workers=1)\n")
    p = subprocess.Popen([sys.executable, str(tmp_path/'job.py')])
    children, t0 = Path(f'/proc/{p.pid}/task/{p.pid}/children'), time.time()
    cmdline = lambda pid: Path(f'/proc/{pid}/cmdline').read_bytes() if Path(f'/proc/{pid}').exists() else b''
    while not any(b'multiprocessing.spawn' in cmdline(c) for c in children.read_text().split()):   # the worker (the first child is multiprocessing's resource tracker)
        assert p.poll() is None and time.time() - t0 < 60
        time.sleep(0.02)
    kids = [int(c) for c in children.read_text().split()]
    time.sleep(wait)                                                              # 0: the worker is still starting (importing torch)
    p.kill(); p.wait()
    alive = lambda pid: Path(f'/proc/{pid}').exists() and Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0] != 'Z'
    t0 = time.time()
    while any(alive(k) for k in kids):
        assert time.time() - t0 < 10, f"processes of the SIGKILLed job still run: {[cmdline(k)[:80] for k in kids if alive(k)]}"
        time.sleep(0.05)


def test_sigkill_before_the_first_checkpoint_resumes_exactly(tiny_demo, tmp_path):
    "The issue's reproduction: SIGKILL while `amd` distils, before its first checkpoint; the rerun's sets differed by up to 6e-8 (UMAP had left torch on 2 threads)."
    for attempt in range(4):   # the tiny run takes milliseconds per iteration: a busy machine can reach the end before the kill; then try again
        out = tmp_path/f'run{attempt}'; shutil.copytree(tiny_demo[0]/'experts', out/'experts')
        args = [str(Path(sys.executable).parent/'amd-demo'), *TINY_DEMO, '--set', 'distill.checkpoint_every=0', '--out', str(out), '--quiet']   # a checkpoint only at the end
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, 'OMP_NUM_THREADS': '1'})
        log, t0 = out/'comparison'/'distill'/'amd_B8_s0'/'log.jsonl', time.time()
        while not log.exists():
            assert p.poll() is None and time.time() - t0 < 300
            time.sleep(0.01)
        p.kill(); p.wait()
        if not (log.parent/'checkpoint.safetensors').exists() and not (log.parent/'synthetic').exists(): break
    else: raise AssertionError("four runs reached their checkpoint before the kill")
    r = subprocess.run(args, capture_output=True, text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr
    for m in ('amd', 'lors'):
        s = out/'comparison'/'distill'/f'{m}_B8_s0'/'synthetic'
        assert same_set(SyntheticSet.load(s), SyntheticSet.load(tiny_demo[0]/'comparison'/'distill'/f'{m}_B8_s0'/'synthetic')), m
    assert not list(out.rglob('*.tmp'))


# ---------------------------------------------------------------- 9. hostile JSON: 100,000 levels deep, 5,000-digit integers, wrong types

@pytest.mark.parametrize('kind', ['deep', 'bigint'])
def test_hostile_jsonl_captions(root, kind):
    d = root/f'jsonl_{kind}'; d.mkdir()
    Image.new('RGB', (8, 8)).save(d/'a.png')
    f = d/'captions.jsonl'
    f.write_text('{"image": "a.png", "caption": "fine"}\n' + (DEEP if kind == 'deep' else '{"image": "a.png", "caption": "x", "n": ' + BIG + '}') + '\n')
    one_line_error('amd-buffer', run('amd-buffer', '--data', f, '--out', root/'esc'), f"{f}:2: malformed JSON line",
                   'nested deeper than 64 levels' if kind == 'deep' else 'an integer of 5000 digits')


@pytest.mark.parametrize('kind', ['deep', 'bigint'])
def test_hostile_karpathy_split_file(root, kind):
    d = root/f'karpathy_{kind}'; d.mkdir()
    Image.new('RGB', (8, 8)).save(d/'a.png')
    for s in ('train', 'val', 'test'): (d/f'flickr30k_{s}.json').write_text(json.dumps([{'image': 'a.png', 'caption': 'ok', 'image_id': 1}]))
    f = d/'flickr30k_train.json'
    f.write_text(DEEP if kind == 'deep' else '[{"image": "a.png", "caption": "ok", "image_id": ' + BIG + '}]')
    one_line_error('amd-buffer', run('amd-buffer', '--data', d, '--out', root/'esc'), f"{f}: malformed JSON",
                   'nested deeper than 64 levels' if kind == 'deep' else 'an integer of 5000 digits')


HOSTILE = {'deep': DEEP, 'bigint': '{"B": ' + BIG + '}', 'shapes-a-list': None}


@pytest.mark.parametrize('kind', list(HOSTILE))
def test_hostile_synthetic_json(root, base, distilled, kind):
    s = root/f'syn_{kind}'; shutil.copytree(distilled/'synthetic', s)
    h = s/'synthetic.json'
    if kind == 'shapes-a-list':
        d = json.loads(h.read_text()); d['shapes'] = list(d['shapes'].values()); h.write_text(json.dumps(d))
    else: h.write_text(HOSTILE[kind])
    msg = {'deep': 'not valid JSON: nested deeper than 64 levels', 'bigint': 'not valid JSON: an integer of 5000 digits',
           'shapes-a-list': 'shapes: expected an object, got [['}[kind]
    one_line_error('amd-eval', run('amd-eval', '--experts', base, '--out', root/'ev_hostile', s), f"{h} is damaged ({msg}")


@pytest.mark.parametrize('kind, content, msg', [('deep', DEEP, 'not valid JSON: nested deeper than 64 levels'),
                                                ('bigint', None, 'not valid JSON: an integer of 5000 digits'),
                                                ('epochs-a-string', None, 'epochs: expected a whole number in [1, 1e+06], got "two"')])
def test_hostile_manifest(root, base, kind, content, msg):
    store = copy_store(base, root/f'mf_{kind}'); mf = store/'manifest.json'
    if content is None:
        text = mf.read_text()
        content = text.replace('"epochs": 2', '"epochs": ' + BIG) if kind == 'bigint' else text.replace('"epochs": 2', '"epochs": "two"')
        assert content != text
    mf.write_text(content)
    one_line_error('amd-distill', run('amd-distill', '--experts', store, '--out', root/f'mf_{kind}'), f"{mf} is damaged ({msg}")


def rewrite_meta(path:Path, key:str, value:str):
    "Rewrite the safetensors file `path` with its metadata entry `key` replaced by `value`."
    with safe_open(str(path), framework='pt') as f: meta = f.metadata()
    save_file(load_file(str(path)), str(path), metadata={**meta, key: value})


@pytest.mark.parametrize('key, kind', [('metrics', 'deep'), ('metrics', 'bigint'), ('row_sums', 'deep'), ('row_sums', 'bigint'), ('row_sums', 'text-a-number')])
def test_hostile_expert_metadata(root, base, key, kind):
    "Read by `amd-eval` (the expert behind an SPM coreset: every epoch and its metrics) and `amd-distill` (the rows it matches); `amd-buffer` trains such an expert again." 
    store = copy_store(base, root/f'meta_{key}_{kind}'); f = store/expert_file(0)
    value = {'deep': DEEP, 'bigint': '{"seed": ' + BIG + '}', 'text-a-number': '{"image": [1.0, 2.0, 3.0], "text": 5}'}[kind]
    rewrite_meta(f, key, value)
    what = {'metrics': 'metrics', 'row_sums': 'row checksums'}[key]
    msg = {'deep': 'not valid JSON: nested deeper', 'bigint': 'not valid JSON: an integer of 5000 digits', 'text-a-number': 'text: expected a list, got 5'}[kind]
    prog, extra = ('amd-eval', ['spm@8']) if key == 'metrics' else ('amd-distill', [])
    one_line_error(prog, run(prog, '--experts', store, '--out', root/f'meta_{key}_{kind}', *extra), f"{f} is damaged ({what}: {msg}", 'amd-buffer')


@pytest.mark.parametrize('kind, msg', [('deep', 'state: not valid JSON: nested deeper than 64 levels'), ('bigint', 'state: not valid JSON: an integer of 5000 digits'),
                                       ('iteration-two', 'state: iteration: expected a whole number in [0, 2**63), got "two"')])
def test_hostile_checkpoint_state(root, base, distilled, kind, msg):
    shutil.copytree(root/'mm', root/f'ck_{kind}')
    ck = root/f'ck_{kind}'/'distill'/'lors'/'checkpoint.safetensors'
    with safe_open(str(ck), framework='pt') as f: state = json.loads(f.metadata()['state'])
    value = DEEP if kind == 'deep' else json.dumps({**state, 'iteration': 'two'}) if kind == 'iteration-two' else json.dumps(state).replace('"iteration": 4', '"iteration": ' + BIG)
    rewrite_meta(ck, 'state', value)
    one_line_error('amd-distill', run('amd-distill', '--experts', base, '--out', root/f'ck_{kind}'), f"{ck} is damaged ({msg}", f'delete {ck}')


@pytest.mark.parametrize('kind', ['deep', 'bigint'])
def test_hostile_stages_json_is_recomputed(tiny_demo, tmp_path, kind):
    "`stages.json` holds only timings: a hostile one is named in a notice and started afresh (as a damaged one is), never a traceback."
    out = tmp_path/'run'; shutil.copytree(tiny_demo[0], out)
    (out/'stages.json').write_text(DEEP if kind == 'deep' else '{"experts": ' + BIG + '}')
    rc, stdout, err = ok(run('amd-demo', '--out', out, '--set', 'eval.n_eval=2'))
    assert f"{out/'stages.json'} is damaged (not valid JSON" in stdout and 'stage timings start afresh' in stdout and 'Traceback' not in err
    assert set(json.loads((out/'stages.json').read_text())) == {'report'}


@pytest.mark.parametrize('kind, content, msg', [('deep', DEEP, 'not valid JSON: nested deeper than 64 levels'),
                                                ('bigint', '{"method": "random", "n": ' + BIG + '}', 'not valid JSON: an integer of 5000 digits'),
                                                ('wrong-types', '{"settings": 5, "r_mean": "x"}', "missing key 'method'"),
                                                ('settings-5', None, 'settings: expected an object or null, got 5'),
                                                ('r_mean-x', None, 'runs[0].r_mean: expected a number, got "x"')])
def test_hostile_comparison_cell(tiny_demo, tmp_path, kind, content, msg):
    out = tmp_path/'run'; shutil.copytree(tiny_demo[0], out)
    cell = out/'comparison'/'cells'/'random_B8_s0.json'
    if content is None:
        d = json.loads(cell.read_text())
        if kind == 'settings-5': d['settings'] = 5
        else: d['runs'][0]['r_mean'] = 'x'
        content = json.dumps(d)
    cell.write_text(content)
    one_line_error('amd-demo', run('amd-demo', '--out', out, '--set', 'eval.n_eval=2'), f"{cell} is damaged ({msg}", 'delete it')


@pytest.mark.parametrize('kind', ['deep', 'bigint'])
def test_hostile_config_file(root, kind):
    f = root/f'hostile_{kind}.json'
    f.write_text(DEEP if kind == 'deep' else '{"seed": ' + BIG + '}')
    one_line_error('amd-buffer', run('amd-buffer', '--config', f, '--out', root/'esc'), f"config file {f} is not valid JSON",
                   'nested deeper than 64 levels' if kind == 'deep' else 'an integer of 5000 digits')


# ---------------------------------------------------------------- 10. values: overflow, threads, devices, empty options, sections

@pytest.mark.parametrize('args, msg', [
    (['--set', 'seed=99999999999999999999999'], 'seed: 99999999999999999999999 is out of range (|value| < 2**63)'),
    (['--set', 'seed=4294967296'], 'seed: must be in [0, 2**31), got 4294967296'),
    (['--set', f'distill.iterations={BIG}'], "distill.iterations: cannot parse '9999999999"),
    (['--threads', 100000], 'threads: want a number of threads in 1..'),
    (['--device', 'cpu:9'], "device 'cpu:9': the CPU is one device (cpu or cpu:0)"),
    (['--data', ''], '--data: empty; give a value or leave the option out'),
    (['--out', ''], '--out: empty; give a value or leave the option out'),
    (['--set', 'expert=1'], "'expert' is a section of settings, not a setting; set one of its keys, e.g. expert.batch_size=… (keys: batch_size, data_parallel,"),
])
def test_bad_values_are_named(root, args, msg):
    out, default_out = [] if '--out' in args else ['--out', root/'values'], Path('runs/tiny')
    existed = default_out.exists()
    msg_line = one_line_error('amd-buffer', run('amd-buffer', *out, *args), msg)
    assert 'valid keys here' not in msg_line
    assert not (root/'values').exists() and default_out.exists() == existed


def test_threads_from_the_environment(root, monkeypatch):
    monkeypatch.setenv('AMD_NB_THREADS', '100000')
    one_line_error('amd-buffer', run('amd-buffer', '--out', root/'values'), '$AMD_NB_THREADS: want a number of threads in 1..')


def test_empty_method(root, base):
    one_line_error('amd-distill', run('amd-distill', '--experts', base, '--out', root/'values', '--method', ''), '--method: empty')


@pytest.mark.parametrize('key, value, msg', [('distill.max_start_epoch', 50, 'distill.max_start_epoch: 50 is more than the 2 start epochs experts of 2 epochs allow'),
                                             ('distill.batch_syn', 1000, 'distill.batch_syn: 1000 pairs per inner step is more than the 8 synthetic pairs')])
@pytest.mark.parametrize('prog', ['amd-distill', 'amd-demo'])
def test_settings_the_experts_or_budget_cannot_honour(root, base, prog, key, value, msg):
    "Accepted without a word before: the sync sampler clamped the start epoch, the minibatch was the whole set."
    extra = ['--experts', base] if prog == 'amd-distill' else []
    one_line_error(prog, run(prog, *extra, '--out', root/'honour', '--set', f'{key}={value}'), msg)
    assert not list((root/'honour').rglob('*.safetensors'))                 # nothing trained or distilled


# ---------------------------------------------------------------- 11. accepted silently before

def test_negative_learned_lr_in_a_synthetic_set(root, base, distilled):
    "It was trained with and scored (r_mean 9.8)."
    s = root/'neg_lr'; shutil.copytree(distilled/'synthetic', s)
    rewrite(s/'synthetic.safetensors', lambda t: t['lr_image'].fill_(-0.1))
    one_line_error('amd-eval', run('amd-eval', '--experts', base, '--out', root/'ev_neg', s), f"{s/'synthetic.safetensors'}: lr_image is -0.1; a learned lr is one number ≥ 0")


def test_nan_in_an_earlier_epoch_of_an_expert(root, base):
    "`amd-eval` read only the last epoch; the whole file of the expert it uses is checked now."
    store = copy_store(base, root/'nan_epoch0')
    rewrite(store/expert_file(0), lambda t: t['image'][0, :3].fill_(float('nan')))
    one_line_error('amd-eval', run('amd-eval', '--experts', store, '--out', root/'nan_epoch0', 'spm@8'), f"{store/expert_file(0)}: image trajectory: 3 of", 'not finite')


def test_unterminated_csv_quote(root):
    "The quote swallowed the rest of the file and the error said \"split 'val' is empty\"."
    f = csv_data(root/'quote')
    lines = f.read_text().splitlines(); lines[3] = lines[3].replace('red square', '"red square')
    f.write_text('\n'.join(lines) + '\n')
    one_line_error('amd-buffer', run('amd-buffer', '--data', f, '--out', root/'esc'), f"{f}:4: malformed CSV: a quote opened in the record on line 4 is never closed")


def test_image_path_that_is_the_folder(root):
    "It said \"does not exist\" of a folder."
    f = csv_data(root/'dot', [('.', 'the folder itself', 'train')])
    one_line_error('amd-buffer', run('amd-buffer', '--data', f, '--out', root/'esc'), "image '.' is a folder", 'not an image file')


# ---------------------------------------------------------------- 12. disk full during amd-buffer

@pytest.fixture
def small_disk(tmp_path):
    "A 2 MB tmpfs when this user may mount one (root), else None."
    d = tmp_path/'tmpfs'; d.mkdir()
    r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', str(d)], capture_output=True) if os.geteuid() == 0 else None
    yield d if r is not None and r.returncode == 0 else None
    if r is not None and r.returncode == 0: subprocess.run(['umount', str(d)], check=True)


def test_disk_full_during_amd_buffer(root, small_disk, monkeypatch):
    "Was a `SafetensorError … No space left on device` traceback; now one line naming the file, and no damaged or temporary file is left."
    if small_disk is None:      # no tmpfs here: the same error, as safetensors raises it, after 3 experts
        from safetensors import SafetensorError
        import amd_nb.experts as ex
        real, n = ex.save_file, [0]
        def full(t, p, metadata=None):
            n[0] += 1
            if n[0] > 3: raise SafetensorError('Error while serializing: I/O error: No space left on device (os error 28)')
            real(t, p, metadata=metadata)
        monkeypatch.setattr(ex, 'save_file', full)
    out = (small_disk or root/'full_disk')/'run'
    msg = one_line_error('amd-buffer', run('amd-buffer', '--out', out, '--set', 'expert.n_experts=20', '--set', 'expert.eval_every=0'),
                         f"cannot write {out/'experts'}/", ': No space left on device')
    store = TrajectoryStore(out/'experts')
    assert 0 < len(store.finished()) < 20 and store.damaged() == {} and not list(out.rglob('*.tmp')), msg
