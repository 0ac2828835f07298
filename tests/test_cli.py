"The console scripts' shared manners: `--version`, `--seed N`, `--print-config` (the resolved config as YAML, nothing run), and `--help` that lists the choices of `--method(s)`/`--coresets` with their defaults (read from the registries) and ends on examples."
import contextlib, io, re
import pytest, yaml
import amd_nb
from amd_nb.cli import amd_buffer, amd_distill, amd_compare, amd_eval, amd_demo, base_parser
from amd_nb.config import get_preset
from amd_nb.evaluate import row_names
from amd_nb.registry import METHODS, SELECTORS

COMMANDS = {'amd-buffer': (amd_buffer, []), 'amd-distill': (amd_distill, []), 'amd-compare': (amd_compare, []),
            'amd-eval': (amd_eval, []), 'amd-demo': (amd_demo, [])}

def call(fn, *argv)->tuple[int, str, str]:
    "Run a command in-process: (exit status, stdout, stderr)."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: rc = fn([str(a) for a in argv])
        except SystemExit as e: rc = e.code
    return rc, out.getvalue(), err.getvalue()

@pytest.mark.parametrize('prog', COMMANDS)
def test_version(prog):
    assert call(COMMANDS[prog][0], '--version')[:2] == (0, f"{prog} {amd_nb.__version__}\n")

@pytest.mark.parametrize('prog', COMMANDS)
def test_seed_and_print_config(prog, tmp_path):
    "`--seed 7 --print-config` prints the resolved config (seed: 7, the --set applied) as YAML and exits 0 without touching --out."
    out = tmp_path/'run'
    rc, text, err = call(COMMANDS[prog][0], '--preset', 'demo', '--seed', 7, '--set', 'distill.iterations=11', '--out', out, '--print-config')
    assert (rc, err) == (0, ''), err
    cfg = yaml.safe_load(text)
    assert cfg['seed'] == 7 and cfg['distill']['iterations'] == 11 and cfg == get_preset('demo').override({'seed': 7, 'distill.iterations': 11}).to_dict()
    assert re.search(r'^seed: 7$', text, re.M) and not out.exists()                      # nothing ran

def test_seed_is_a_setting_in_command_line_order():
    assert yaml.safe_load(call(amd_buffer, '--preset', 'tiny', '--seed', 3, '--set', 'seed=5', '--print-config')[1])['seed'] == 5
    assert yaml.safe_load(call(amd_buffer, '--preset', 'tiny', '--set', 'seed=5', '--seed', 3, '--print-config')[1])['seed'] == 3
    rc, _, err = call(amd_buffer, '--seed', 'x')
    assert rc == 2 and "argument --seed: invalid int value: 'x'" in err

def test_print_config_applies_the_commands_own_settings():
    "amd-distill's --method and amd-demo's --budget are part of the config the command runs with, so --print-config shows them."
    assert yaml.safe_load(call(amd_distill, '--method', 'mtt_vl', '--print-config')[1])['distill']['method'] == 'mtt_vl'
    assert yaml.safe_load(call(amd_demo, '--preset', 'tiny', '--budget', 5, '--print-config')[1])['distill']['budget'] == 5
    rc, out, err = call(amd_distill, '--set', 'distill.iterationz=3', '--print-config')          # a bad setting: the usual one-line error
    assert rc == 2 and out == '' and err.strip().startswith("amd-distill: error: unknown key 'distill.iterationz'")
    rc, _, err = call(amd_eval, '--preset', 'tiny')                                               # amd-eval still wants a SET to run
    assert rc == 2 and 'the following arguments are required: SET' in err

def help_text(fn)->str:
    rc, out, _ = call(fn, '--help')
    assert rc == 0
    return ' '.join(out.split())                                                                  # argparse wraps lines

def test_help_lists_choices_and_defaults_from_the_registries():
    h = help_text(amd_distill)
    assert f"--method METHOD distillation method (sets distill.method): {', '.join(METHODS)} (default: the preset's, {get_preset('demo').distill.method} in demo)" in h
    h = help_text(amd_demo)
    assert f"any of: {', '.join(METHODS)} (default: amd lors)" in h and f"any of: {', '.join(SELECTORS)} (default: random)" in h
    assert "['amd', 'lors']" not in h and '--budget N' in h
    h = help_text(amd_compare)
    assert f"rows, any of: {', '.join(row_names())} (default: all of them)" in h
    assert '--n-syn-sets N ' in h and 'N_SYN_SETS' not in h and '(default: 50 100)' in h
    h = help_text(amd_eval)
    assert "SET a set to judge (one or more): a saved synthetic set's folder (runs/demo/distill/amd)" in h and 'random@100' in h

@pytest.mark.parametrize('prog', COMMANDS)
def test_every_help_has_the_shared_options_and_examples(prog):
    rc, out, _ = call(COMMANDS[prog][0], '--help')
    assert rc == 0 and all(o in out for o in ('--version', '--seed N', '--print-config', '--set KEY=VALUE'))
    ex = out[out.index('\nexamples:\n'):].splitlines()[2:]
    assert ex and all(l.startswith('  ') and prog in l for l in ex), ex                              # one command line per example

def test_a_new_command_gets_the_shared_options():
    "What `amd-tune` (or any new command) gets from `base_parser`."
    p = base_parser('amd-new', 'A new command.', examples='amd-new --preset tiny')
    a = p.parse_args(['--seed', '4', '--print-config'])
    assert (a.seed, a.overrides, a.print_config) == (4, ['seed=4'], True)
    with pytest.raises(SystemExit), contextlib.redirect_stdout(io.StringIO()) as out: p.parse_args(['--version'])
    assert out.getvalue() == f"amd-new {amd_nb.__version__}\n"
