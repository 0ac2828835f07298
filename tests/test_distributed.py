"Expert training under torchrun (two CPU processes, gloo) against one process: shared experts, resume, data-parallel."
import hashlib, os, subprocess, sys
from pathlib import Path
import pytest, torch
from amd_nb.config import get_preset
from amd_nb.experts import TrajectoryStore, expert_file, train_experts

BIN = Path(sys.executable).parent
# 3 experts: an uneven split over 2 ranks; batch 15 on 48 images: shards of 8 + 7, and a last batch of 3 = 2 + 1
SETS = {'expert.n_experts': 3, 'expert.batch_size': 15}

def sha(p): return hashlib.sha256(Path(p).read_bytes()).hexdigest()

@pytest.fixture(scope='module')
def cache(tmp_path_factory): return tmp_path_factory.mktemp('cache')

@pytest.fixture(scope='module')
def env(cache):
    return {**os.environ, 'AMD_NB_CACHE': str(cache), 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1', 'PYTHONUNBUFFERED': '1'}

def single(cfg, out, **kw):
    "`train_experts` in this process with one thread (as each torchrun worker has)."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    try: return train_experts(cfg, out, progress=False, **kw)
    finally: torch.set_num_threads(n)

@pytest.fixture(scope='module')
def cfg(cache): return get_preset('tiny').override({**SETS, 'data.cache_dir': str(cache)})

@pytest.fixture(scope='module')
def reference(cfg, tmp_path_factory):
    "The experts trained by one process (also fills the embedding cache)."
    return single(cfg, tmp_path_factory.mktemp('ref')/'experts')

def torchrun(out, env, *extra, quiet=True, check=True):
    "Run `amd-buffer --preset tiny` as 2 torchrun workers; return the completed process."
    sets = [a for k, v in SETS.items() for a in ('--set', f"{k}={v}")]
    cmd = [str(BIN/'torchrun'), '--standalone', '--nproc_per_node', '2', '--no-python', str(BIN/'amd-buffer'),
           '--preset', 'tiny', *sets, '--out', str(out), *(['--quiet'] if quiet else []), *extra]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0 or not check, r.stdout[-3000:] + r.stderr[-3000:]
    return r

def assert_same(a:TrajectoryStore, b:TrajectoryStore):
    assert a.finished() == b.finished()
    for i in a.finished():
        assert torch.equal(a[i].image, b[i].image) and torch.equal(a[i].text, b[i].text), f"expert {i} differs"
        assert a[i].metrics['train_loss'] == b[i].metrics['train_loss']

def test_torchrun_splits_experts(tmp_path, env, reference):
    r = torchrun(tmp_path, env, quiet=False)
    store = TrajectoryStore(tmp_path/'experts')
    assert_same(store, reference)
    assert sorted(store.manifest['experts']) == ['0', '1', '2']     # rank 0 indexed every rank's file
    # rank 0 trains experts 0 and 2, rank 1 expert 1: only rank 0 draws progress bars
    assert 'experts (rank 0 of 2)' in r.stderr and 'expert 2:' in r.stderr and 'expert 1:' not in r.stderr
    assert not list((tmp_path/'experts').glob('.*.tmp'))

def test_torchrun_resumes_missing_experts(tmp_path, env, cfg, reference):
    single(cfg, tmp_path/'experts', experts=[1])                      # a store that already holds expert 1
    before = sha(tmp_path/'experts'/expert_file(1))
    torchrun(tmp_path, env)
    store = TrajectoryStore(tmp_path/'experts')
    assert sha(tmp_path/'experts'/expert_file(1)) == before           # kept, not retrained
    assert_same(store, reference)
    assert sorted(store.manifest['experts']) == ['0', '1', '2']

def test_data_parallel_matches_single_process(tmp_path, env, reference):
    torchrun(tmp_path, env, '--set', 'expert.data_parallel=true')
    store = TrajectoryStore(tmp_path/'experts')
    assert store.finished() == reference.finished() and store.config.expert.data_parallel
    for i in store.finished():
        a, b = store[i], reference[i]
        assert torch.allclose(a.image, b.image, rtol=1e-4, atol=1e-5) and torch.allclose(a.text, b.text, rtol=1e-4, atol=1e-5)
        assert a.metrics['train_loss'] == pytest.approx(b.metrics['train_loss'], rel=1e-4)
        assert not torch.equal(a.image[-1], a.image[0])               # the expert moved

def test_torchrun_store_error_reaches_every_rank(env, reference):
    # rank 0 refuses the incompatible store; rank 1 gets the same one-line error instead of waiting forever
    r = torchrun(reference.path.parent, env, '--set', 'model.width=4', check=False)
    msg = 'amd-buffer: error: ' + f"{reference.path} holds experts trained with other settings (model.width: "
    assert r.returncode != 0 and r.stderr.count(msg) == 2, r.stderr[-3000:]
