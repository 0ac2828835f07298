"The main job end to end on the tiny preset: report and metrics, stage skipping, Ctrl-C and resume, `amd-eval`, `--help`."
import json, os, re, signal, subprocess, sys, time
from pathlib import Path
import pytest
from amd_nb.evaluate import METRICS
from amd_nb.report import STAGES

BIN = Path(sys.executable).parent
TINY = ['--preset', 'tiny', '--set', 'eval.n_eval=2']


def run(prog, *args, **kw):
    return subprocess.run([str(BIN/prog), *map(str, args)], capture_output=True, text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'}, **kw)


@pytest.fixture(scope='module')
def demo(tiny_demo):
    "A finished tiny main job and the output of running it twice (`conftest.tiny_demo`, shared with the bad-input suite)."
    return tiny_demo


def test_metrics_json(demo):
    out, *_ = demo
    m = json.loads((out/'metrics.json').read_text())
    assert (m['dataset'], m['preset'], m['seed'], m['budget']) == ('emoji', 'tiny', 0, 8)
    assert set(m['methods']) == {'full', 'random', 'amd', 'lors'}
    for name, r in m['methods'].items():
        assert set(METRICS) <= set(r) and set(r['std']) == set(METRICS), name
        assert all(0 <= r[k] <= 100 for k in METRICS if k != 'r_mean') and r['n'] == 2
    w = m['windows']
    assert set(w) == {'R_V', 'R_L', 'rule', 'map', 'mmd', 'literal', 'synchronous', 'trend_t', 'min_t'} and isinstance(w['R_V'], int) and isinstance(w['R_L'], int)
    assert (w['synchronous'], w['min_t'], w['trend_t']) == (False, None, None)   # no agreement check; 2 epochs cannot be split into halves
    assert (w['rule'], w['map']) == (m['config']['distill']['window_rule'], m['config']['distill']['window_map'])
    assert all(0 <= r <= m['config']['expert']['epochs'] - 1 for r in (w['R_V'], w['R_L'], *w['mmd'], *w['literal']))
    assert set(m['timings']) == set(STAGES) and all(v >= 0 for v in m['timings'].values())
    for name, r in m['methods'].items():   # modality collapse of each row's set in its retrained models
        c = r['collapse']
        assert set(c) == {'image_cos', 'text_cos', 'gap'} and -1 <= c['image_cos'] <= 1 and -1 <= c['text_cos'] <= 1 and 0 <= c['gap'] <= 2, (name, c)
    md = (out/'comparison'/'comparison.md').read_text()
    assert '| method | B | image cos | text cos | modality gap |' in md and md.count('\n| amd | 8 |') == 2


def test_report_is_self_contained(demo):
    out, *_ = demo
    page = (out/'report.html').read_text()
    head, lib, body = re.split(r"<script type='text/javascript'>|</script></head>", page, maxsplit=2)
    assert len(lib) > 1e6 and 'plotly' in lib[:2000].lower()        # plotly.js inlined once, in the head
    assert not re.search(r"<script[^>]+src=", page), 'the report must not load scripts from elsewhere'
    assert not re.search(r"""(src|href)=["']https?://""", head + body), 'the report must not load resources from elsewhere'
    assert page.count('Plotly.newPlot') >= 9                       # comparison, collapse, MMD, 2× sampling, prototypes, images, 2× runs
    for heading in ('Retrieval after retraining', 'Modality collapse', 'MMD curves and windows', 'Start epochs drawn: amd', 'SPM prototypes',
                    'Synthetic images: amd', 'Run curves: lors'):
        assert f"<h2>{heading}</h2>" in page, heading
    assert '<td>amd</td>' in page and '<td>random</td>' in page


def test_rerun_skips_finished_stages(demo):
    out, first, second = demo
    heads = [l for l in second.stdout.splitlines() if l.startswith('[')]
    assert all('skipped' in l for l in heads[:5]) and heads[5].startswith('[6/6] report'), heads
    assert not any('skipped' in l for l in first.stdout.splitlines() if l.startswith('['))
    assert json.loads((out/'stages.json').read_text()).keys() == set(STAGES)


def _default_sigint():
    "In the child: Ctrl-C as in a terminal. A test suite started in the background (`make test &`) inherits an ignored SIGINT."
    signal.signal(signal.SIGINT, signal.SIG_DFL)

def test_ctrl_c_then_resume(tmp_path):
    "SIGINT during distillation: exit 130 with a resume hint; the same command then finishes, keeping finished stages."
    out, args = tmp_path/'run', [*TINY, '--set', 'distill.iterations=150', '--set', 'distill.checkpoint_every=5', '--no-full']
    p = subprocess.Popen([str(BIN/'amd-demo'), *args, '--out', str(out), '--quiet'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=_default_sigint)
    log = out/'comparison'/'distill'/'amd_B8_s0'/'log.jsonl'
    t0 = time.time()
    while not (log.exists() and len(log.read_text().splitlines()) >= 10):
        assert p.poll() is None and time.time() - t0 < 120, p.communicate()
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and 'run the same command again to resume' in err, err
    done = len(log.read_text().splitlines())
    assert 10 <= done < 150
    r = run('amd-demo', *args, '--out', out, '--quiet')
    assert r.returncode == 0, r.stderr
    assert '[1/6] experts: done before' in r.stdout and '[3/6] prototypes: done before' in r.stdout
    its = [json.loads(l)['iteration'] for l in log.read_text().splitlines()]
    assert its == list(range(1, 151))                                # resumed, nothing lost or repeated
    assert set(json.loads((out/'metrics.json').read_text())['methods']) == {'random', 'amd', 'lors'}


def test_amd_eval(demo):
    out, *_ = demo
    syn = out/'comparison'/'distill'/'amd_B8_s0'
    r = run('amd-eval', *TINY, '--out', out, '--quiet', 'random@8', syn, 'full')
    assert r.returncode == 0, r.stderr
    files = sorted(p.name for p in (out/'eval').glob('*.json'))
    assert files == ['comparison_distill_amd_B8_s0.json', 'full.json', 'random_B8.json'], files
    res = json.loads((out/'eval'/'random_B8.json').read_text())
    assert res['n'] == 2 and set(res['mean']) == set(METRICS)
    # the set `amd-demo` evaluated and the one `amd-eval` evaluated are the same: same protocol, same seeds, same numbers
    m = json.loads((out/'metrics.json').read_text())['methods']['amd']
    ev = json.loads((out/'eval'/'comparison_distill_amd_B8_s0.json').read_text())['mean']
    assert all(abs(m[k] - ev[k]) < 1e-2 for k in METRICS)


@pytest.mark.parametrize('args, message', [
    (['not-a-set'], "not-a-set: not 'full', a coreset NAME@B"),
    (['random@x'], "coreset 'random@x': write NAME@BUDGET"),
    (['random@4', 'random@4'], "the same set given twice"),
])
def test_amd_eval_bad_sets(demo, args, message):
    out, *_ = demo
    r = run('amd-eval', *TINY, '--out', out, *args)
    assert r.returncode == 2 and r.stderr.startswith('amd-eval: error: ') and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize('prog', ['amd-demo', 'amd-buffer', 'amd-distill', 'amd-eval', 'amd-compare'])
def test_help_lists_defaults(prog):
    r = run(prog, '--help')
    assert r.returncode == 0 and '--preset' in r.stdout and '--set KEY=VALUE' in r.stdout and '--device' in r.stdout
    assert '(default: demo)' in r.stdout.replace('\n', ' ')


@pytest.mark.parametrize('prog', ['amd-demo', 'amd-eval'])
def test_bad_option_one_line(prog, tmp_path):
    r = run(prog, '--preset', 'tiny', '--set', 'distill.budgett=3', '--out', tmp_path, *(['full'] if prog == 'amd-eval' else []))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "unknown key 'distill.budgett'" in r.stderr, r.stderr


def test_every_registered_method_runs_end_to_end(tmp_path):
    "`mtt_vl+async` is only registered (one line in 07_distill): the CLI accepts it, it distils, evaluates and gets its row and its windows."
    out = tmp_path/'run'
    r = run('amd-demo', *TINY, '--methods', 'mtt_vl+async', '--no-full', '--out', out, '--quiet')
    assert r.returncode == 0, r.stderr
    assert set(json.loads((out/'metrics.json').read_text())['methods']) == {'random', 'mtt_vl+async'}
    assert 'Start epochs drawn: mtt_vl+async' in (out/'report.html').read_text() and 'inside the windows' in (out/'report.html').read_text()
