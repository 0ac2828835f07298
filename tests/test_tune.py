"amd-tune: the search space as data, one-line errors, a tiny study end to end, resume after a kill or Ctrl-C, processes sharing one study, pruned and diverged trials."
import contextlib, csv, io, os, re, signal, sqlite3, subprocess, sys, time
from pathlib import Path
import optuna, pytest
from optuna.distributions import FloatDistribution
from amd_nb.config import get_preset, load_config
from amd_nb.io import RunLayout
from amd_nb import tune as T

BIN = Path(sys.executable).parent
ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}


@pytest.fixture(scope='module')
def experts(tmp_path_factory):
    "A tiny expert store shared by the module's tunings (`--experts`)."
    from amd_nb.experts import train_experts
    path = tmp_path_factory.mktemp('tune')/'experts'
    train_experts(get_preset('tiny'), path, progress=False)
    return path


def tune_args(out, experts, *more, trials=3):
    return ['--preset', 'tiny', '--method', 'mtt_vl', '--trials', str(trials), '--out', str(out), '--experts', str(experts), '--quiet', *map(str, more)]

def popen(args, **kw):
    return subprocess.Popen([str(BIN/'amd-tune'), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, **kw)

def run(args):
    return subprocess.run([str(BIN/'amd-tune'), *args], capture_output=True, text=True, env=ENV)

def rows(folder:Path)->list[dict]:
    with open(folder/'trials.csv', newline='') as f: return list(csv.DictReader(f))

def db_trials(db:Path)->list[tuple]:
    "(number, state) of every trial in a study's SQLite file, read without Optuna."
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as c: return c.execute('select number, state from trials order by number').fetchall()

def finished(rs): return [r for r in rs if r['state'] in ('complete', 'pruned', 'diverged')]


# ---- the search space ----

def test_space_per_method_family():
    demo = get_preset('demo')
    space = lambda m, **kw: T.search_space(demo.override({'distill.method': m}), 10, **kw)
    common = {'distill.lr_image', 'distill.lr_text', 'distill.lr_lr'}
    assert set(space('mtt_vl')) == common | {'distill.max_start_epoch', 'distill.nce_scale'}
    assert set(space('lors')) == common | {'distill.max_start_epoch', 'distill.wbce_scale', 'distill.lr_sim'}
    amd = set(space('amd'))
    assert common | {'distill.max_gap', 'distill.wbce_scale', 'distill.lr_sim'} <= amd
    for k in ('distill.window_rule', 'distill.window_map'): assert (k in amd) == T.has_key(demo, k)   # only where the config has them
    assert ('distill.max_start_epoch' in amd) == T.has_key(demo, 'distill.window_map')
    assert space('mtt_vl')['distill.lr_image'] == FloatDistribution(1.0, 900.0, log=True)           # around the preset's 30
    assert T.search_space(get_preset('tiny'), 2)['distill.lr_image'] == FloatDistribution(1 / 30, 30.0, log=True)
    assert 'distill.lr_text' not in space('lors', fixed={'distill.lr_text'})


def test_adding_a_key_is_one_line(monkeypatch):
    monkeypatch.setitem(T.SEARCH_SPACE, '*', {**T.SEARCH_SPACE['*'], 'distill.sim_alpha': T.LogAround(10), 'distill.not_yet_there': T.LogAround(2)})
    s = T.search_space(get_preset('demo').override({'distill.method': 'amd'}), 10)
    assert s['distill.sim_alpha'] == FloatDistribution(0.1, 10.0, log=True) and 'distill.not_yet_there' not in s


def cli_error(*argv)->str:
    "The stderr of an `amd-tune` that must fail with status 2 (run in this process)."
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()): rc = T.amd_tune(list(argv))
    assert rc == 2, err.getvalue()
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('amd-tune: error: '), lines
    return lines[0]


@pytest.mark.parametrize('more, says', [
    (['--params', 'distill.lr_imag'], "unknown parameter 'distill.lr_imag'"),
    (['--space', 'distill.nope=float:1:2'], "unknown parameter 'distill.nope'"),
    (['--params', 'distill.sim_alpha'], "not in mtt_vl's search space"),
    (['--space', 'distill.lr_image=float:1:x'], "range 'float:1:x'"),
    (['--space', 'distill.syn_steps=float:0.5:2'], 'parameter distill.syn_steps'),
    (['--params', 'distill.lr_image', '--set', 'distill.lr_image=3'], 'empty search space for method mtt_vl'),
    (['--storage', 'nosuchdb://tuner:secret@db/amd'], '--storage nosuchdb://tuner:***@db/amd: cannot open it'),
    (['--pruner', 'hyperband'], "unknown pruner 'hyperband'"),
    (['--method', 'nope'], "unknown method 'nope'"),
])
def test_bad_input_is_one_line(tmp_path, experts, more, says):
    msg = cli_error(*tune_args(tmp_path/'run', experts), *more)
    assert says in msg, msg
    assert 'secret' not in msg


def test_storage_that_cannot_be_opened(tmp_path, experts):
    msg = cli_error(*tune_args(tmp_path/'run', experts), '--storage', f"sqlite:///{tmp_path}/missing/dir/study.db")
    assert 'cannot open it' in msg
    assert not (tmp_path/'run'/'tune').exists()


# ---- a study end to end ----

def tune_here(*argv)->str:
    "The stdout of an `amd-tune` run in this process that must succeed."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = T.amd_tune(list(argv))
    assert rc == 0, err.getvalue()
    return out.getvalue()

def test_tiny_study_then_more_trials(tmp_path, experts):
    out = tmp_path/'run'; folder = RunLayout(out).tune('mtt_vl')
    r = subprocess.CompletedProcess([], 0, tune_here(*tune_args(out, experts, trials=3)))
    assert {'best.yaml', 'trials.csv', 'tune.html', 'study.db'} <= {p.name for p in folder.iterdir()}
    first = rows(folder)
    assert [int(x['trial']) for x in first] == [0, 1, 2] and len(finished(first)) == 3
    tiny = get_preset('tiny').distill                                            # trial 0: the settings the study was given
    assert [float(first[0][f'distill.{k}']) for k in ('lr_image', 'lr_text', 'lr_lr')] == pytest.approx([tiny.lr_image, tiny.lr_text, tiny.lr_lr])
    # best.yaml is a config file that --config reads, holding the best trial's settings
    best = max((x for x in first if x['state'] == 'complete'), key=lambda x: float(x['val_r_mean']))
    cfg = load_config(folder/'best.yaml', base=get_preset('tiny'))
    assert cfg.distill.method == 'mtt_vl' and cfg.eval.split == 'test'          # the val split of the trials never leaks into it
    for k in ('lr_image', 'lr_text', 'lr_lr'): assert getattr(cfg.distill, k) == pytest.approx(float(best[f'distill.{k}']))
    assert f"best: trial {best['trial']}," in r.stdout
    # tune.html: offline, one plotly.js, Optuna's figures
    page = (folder/'tune.html').read_text()
    head, lib, body = re.split(r"<script type='text/javascript'>|</script></head>", page, maxsplit=2)
    assert len(lib) > 1e6 and 'plotly' in lib[:2000].lower()                      # plotly.js inlined once, in the head
    assert not re.search(r"<script[^>]+src=", page) and not re.search(r"""(src|href)=["']https?://""", head + body)
    assert page.count('Plotly.newPlot') >= 3 and 'Optimisation history' in page and 'Parallel coordinates' in page
    # the same command with more trials continues the study
    assert '3 of 5 trials finished' in tune_here(*tune_args(out, experts, trials=5))
    again = rows(folder)
    assert [int(x['trial']) for x in again] == [0, 1, 2, 3, 4] and len(finished(again)) == 5
    assert again[:3] == first
    assert '5 of 5 trials finished' in tune_here(*tune_args(out, experts, trials=5)) and len(rows(folder)) == 5   # nothing left to do


def test_other_settings_are_refused(tmp_path, experts):
    out = tmp_path/'run'
    tune_here(*tune_args(out, experts, trials=1))
    msg = cli_error(*tune_args(out, experts, '--set', 'distill.iterations=5', trials=2))
    assert "study 'mtt_vl'" in msg and 'distill.iterations: 4 → 5' in msg and '--study NAME' in msg


def _default_sigint():
    "In the child: Ctrl-C as in a terminal (a suite started in the background inherits an ignored SIGINT)."
    signal.signal(signal.SIGINT, signal.SIG_DFL)

@pytest.mark.parametrize('sig', [signal.SIGKILL, signal.SIGINT])
def test_killed_mid_trial_then_resumed(tmp_path, experts, sig):
    "Stopped during its first trial, the same command continues: the interrupted trial's settings run again, nothing is counted twice."
    out = tmp_path/'run'; folder = RunLayout(out).tune('mtt_vl')
    args = tune_args(out, experts, '--set', 'distill.iterations=80', '--pruner', 'none', trials=2)
    p = popen(args, preexec_fn=_default_sigint)
    t0 = time.time()
    while not ((folder/'study.db').exists() and any(s == 'RUNNING' for _, s in _safe(db_trials, folder/'study.db'))):
        assert p.poll() is None and time.time() - t0 < 120, p.communicate()
        time.sleep(0.2)
    time.sleep(0.5)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    if sig == signal.SIGINT: assert p.returncode == 130 and 'run the same command again to resume' in err, err
    else: assert p.returncode == -signal.SIGKILL
    assert db_trials(folder/'study.db') == [(0, 'RUNNING' if sig == signal.SIGKILL else 'FAIL')]
    r = run(args)
    assert r.returncode == 0, r.stderr
    assert 'trial 0 interrupted: its settings run again' in r.stdout, r.stdout
    rs = rows(folder)
    assert [x['state'] for x in rs] == ['interrupted', 'complete', 'complete']
    assert rs[1]['retry_of'] == '0' and all(rs[1][k] == rs[0][k] for k in rs[0] if k.startswith('distill.'))
    assert len(finished(rs)) == 2 and [int(x['trial']) for x in rs] == [0, 1, 2]

def _safe(f, *a):
    try: return f(*a)
    except sqlite3.Error: return []


@pytest.mark.parametrize('storage', [None, 'study.journal'])
def test_two_processes_share_one_study(tmp_path, experts, storage):
    "Two processes on one study (SQLite in the run folder, or a journal file) finish N trials between them, each number once."
    out = tmp_path/'run'
    more = ['--set', 'distill.iterations=20', '--pruner', 'none'] + (['--storage', str(tmp_path/storage)] if storage else [])
    ps = [popen(tune_args(out, experts, *more, trials=5)) for _ in range(2)]
    res = [p.communicate(timeout=300) for p in ps]
    assert all(p.returncode == 0 for p in ps), [e for _, e in res]
    study = optuna.load_study(study_name='mtt_vl', storage=T.open_storage(str(tmp_path/storage) if storage else None, RunLayout(out).tune('mtt_vl')))
    nums = [t.number for t in study.trials]
    assert len(nums) == len(set(nums)) == len(study.trials)
    assert sum(t.state in T.FINISHED for t in study.trials) == 5
    assert all(t.state in T.FINISHED or t.user_attrs.get('surplus') for t in study.trials)
    assert len({t.user_attrs['worker'] for t in study.trials}) == 2                  # both took part
    done = [t for t in study.trials if t.state in T.FINISHED]
    assert len({tuple(sorted(t.params.items())) for t in done}) == len(done)         # and drew different settings



@pytest.mark.parametrize('storage', [None, 'study.journal'])
def test_only_the_process_that_creates_a_study_queues_its_first_trial(tmp_path, storage):
    "Processes starting together on a new study queue the config's settings once: only the one whose create succeeds does."
    st = T.open_storage(str(tmp_path/storage) if storage else None, tmp_path)
    first, where = {'distill.lr_image': 30.0}, 'here'
    a = T.open_study(st, 's', {'k': 1}, where, first=first)
    b = T.open_study(st, 's', {'k': 1}, where, first=first)                     # a second process: loads, queues nothing
    waiting = [t for t in b.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].system_attrs['fixed_params'] == first and waiting[0].user_attrs == {'from_config': True}
    optuna.create_study(storage=st, study_name='other', direction='maximize')    # created by another process, no trial yet
    assert T.open_study(st, 'other', {'k': 1}, where, first=first).get_trials() == []   # a loader never queues, even then
    assert T.open_study(st, 'new', {'k': 1}, where).get_trials() == []              # nothing to queue without `first`
    assert a.user_attrs['settings'] == {'k': 1}

# ---- pruned and diverged trials ----

class _Stub:
    "A trial whose pruner says stop at the first report."
    def __init__(self): self.reported, self.attrs = [], {}
    def report(self, v, step): self.reported.append((step, v))
    def should_prune(self): return True
    def set_user_attr(self, k, v): self.attrs[k] = v

def test_pruned_trial_stops_at_its_first_val_score(experts):
    from amd_nb.data import load_split
    from amd_nb.experts import TrajectoryStore
    store = TrajectoryStore(experts)
    train, val = (load_split(store.data_config(), s, progress=False) for s in ('train', 'val'))
    cfg = T.trial_config(get_preset('tiny').override({'distill.method': 'mtt_vl', 'distill.iterations': 9}), {})
    t = _Stub()
    with pytest.raises(optuna.TrialPruned, match='pruned at iteration 3'): T.run_trial(t, cfg, store, train, val, rungs=3)
    assert [s for s, _ in t.reported] == [3] and 'seconds' in t.attrs


def test_diverged_trials_are_recorded_not_scored(tmp_path, experts, monkeypatch):
    from amd_nb.distill import DistillError
    from amd_nb.checks import NonFiniteError
    from amd_nb.experts import TrajectoryStore
    calls = []
    class Diverging(T.Distiller):
        def run(self):
            calls.append(1)
            if len(calls) == 1: raise DistillError('5 consecutive non-finite iterations (last at 5)')
            if len(calls) == 2: raise NonFiniteError("set 'mtt_vl', evaluation model 0: loss: 1 of 1 values are not finite")
            return super().run()
    monkeypatch.setattr(T, 'Distiller', Diverging)
    run = T.TuneRun(get_preset('tiny').override({'distill.method': 'mtt_vl'}), TrajectoryStore(experts), tmp_path/'tune', trials=3, preset='tiny', say=None)
    study = T.tune(run)
    states = [T.trial_state(t) for t in study.trials]
    assert states == ['diverged', 'diverged', 'complete']
    assert all(t.value is None for t in study.trials[:2]) and study.best_trial.number == 2
    assert 'non-finite' in T.trials_table(study)[0]['note'] and T.trial_counts(study) == (3, 0)


# ---- amd-demo --tune ----

def test_demo_tunes_each_method_first(tmp_path, tiny_demo):
    "`amd-demo --tune N`: each method's settings chosen on val with N trials, then distilled and judged with them; a rerun reuses the tuning."
    import json, shutil
    out = tmp_path/'demo'
    shutil.copytree(tiny_demo[0]/'experts', out/'experts')     # the same experts and windows (tiny preset): the demo starts at its prototypes
    args = [str(BIN/'amd-demo'), '--preset', 'tiny', '--set', 'eval.n_eval=2', '--methods', 'mtt_vl', '--no-full', '--tune', '2', '--out', str(out), '--quiet']
    r = subprocess.run(args, capture_output=True, text=True, env=ENV)
    assert r.returncode == 0, r.stderr
    m = json.loads((out/'metrics.json').read_text())
    best = json.loads((RunLayout(out).tune('mtt_vl')/'best.json').read_text())
    assert m['tuned'] == {'mtt_vl': {'trials': 2, 'settings': best['params']}} and 'tune' in m['timings']
    cell = json.loads(RunLayout(out).cell('mtt_vl', 8, 0).read_text())
    assert all(cell['settings'][k] == v for k, v in best['params'].items())          # the judged set was distilled with them
    assert 'chosen on the val split (2 trials each' in (out/'report.html').read_text()
    again = subprocess.run(args, capture_output=True, text=True, env=ENV)
    assert again.returncode == 0, again.stderr
    assert 'tune: done before' in again.stdout and 'trial 0' not in again.stdout
