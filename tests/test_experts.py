"Expert training end to end: resume after SIGKILL, determinism, CLI errors."
import hashlib, os, signal, subprocess, sys, time
from pathlib import Path
import pytest, torch
from amd_nb.experts import TrajectoryStore, expert_file

RUN = "import sys; from amd_nb.cli import amd_buffer; sys.exit(amd_buffer(sys.argv[1:]))"
ARGS = ['--preset', 'tiny', '--quiet', '--set', 'expert.n_experts=4', '--set', 'expert.epochs=25']

def buffer_cmd(out, *extra): return [sys.executable, '-c', RUN, *ARGS, '--out', str(out), *extra]
def sha(p): return hashlib.sha256(Path(p).read_bytes()).hexdigest()

@pytest.fixture
def env(tmp_path):
    return {**os.environ, 'AMD_NB_CACHE': str(tmp_path/'cache'), 'PYTHONUNBUFFERED': '1'}

def test_resume_after_sigkill(tmp_path, env):
    # an uninterrupted reference run (also fills the embedding cache)
    ref = tmp_path/'ref'
    subprocess.run(buffer_cmd(ref), env=env, check=True, capture_output=True)
    # a run killed as soon as its first expert is on disk
    out = tmp_path/'run'
    p = subprocess.Popen(buffer_cmd(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = out/'experts'/expert_file(0)
    deadline = time.time() + 120
    while not first.exists() and p.poll() is None and time.time() < deadline: time.sleep(0.005)
    p.send_signal(signal.SIGKILL); p.wait()
    done = TrajectoryStore(out/'experts').finished()
    assert 0 in done and len(done) < 4, f"kill came too late to test resuming: {done}"
    kept = {i: sha(out/'experts'/expert_file(i)) for i in done}
    TrajectoryStore(out/'experts')[0]                       # the finished file loads
    # resume: only the missing experts are trained, finished files are untouched
    r = subprocess.run(buffer_cmd(out), env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    store = TrajectoryStore(out/'experts')
    assert store.finished() == [0, 1, 2, 3]
    assert all(sha(out/'experts'/expert_file(i)) == h for i, h in kept.items())
    # and the result equals the uninterrupted run
    reference = TrajectoryStore(ref/'experts')
    for i in range(4):
        assert torch.equal(store[i].image, reference[i].image) and torch.equal(store[i].text, reference[i].text)
    assert sorted(store.manifest['experts']) == ['0', '1', '2', '3']

def test_cli_errors_are_one_line(tmp_path, env):
    r = subprocess.run(buffer_cmd(tmp_path/'x', '--set', 'expert.lr_image=-1'), env=env, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip() == 'amd-buffer: error: expert.lr_image: must be > 0, got -1.0'
    r = subprocess.run(buffer_cmd(tmp_path/'x', '--data', str(tmp_path/'nope.csv')), env=env, capture_output=True, text=True)
    assert r.returncode == 2 and 'nope.csv' in r.stderr and 'Traceback' not in r.stderr

def test_store_refuses_other_settings(tmp_path, env):
    out = tmp_path/'run'
    subprocess.run(buffer_cmd(out, '--set', 'expert.n_experts=1', '--set', 'expert.epochs=1'), env=env, check=True, capture_output=True)
    r = subprocess.run(buffer_cmd(out, '--set', 'expert.n_experts=1', '--set', 'expert.epochs=1', '--set', 'model.width=4'),
                       env=env, capture_output=True, text=True)
    assert r.returncode == 2 and 'model.width' in r.stderr
