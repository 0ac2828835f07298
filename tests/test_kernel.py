"""Kernel → Interrupt on `await dash.run_async(run_demo, run)`, through a real Jupyter kernel (jupyter_client), no browser.

ipykernel turns SIGINT during an awaiting cell into a cancellation that it queues on the event loop without waking it: before
the fix the run went on to its last iteration (all 300 lines in `log.jsonl`) and only then raised. Now it stops within a few
iterations, after writing its checkpoint, and the cell's error is one line naming the checkpoint.
"""
import json, os, queue, re, sys, time
from pathlib import Path
import pytest

jc = pytest.importorskip('jupyter_client')

def _lines(out:Path)->int: return sum(len(f.read_text().splitlines()) for f in out.glob('**/log.jsonl'))

CODE = """
from pathlib import Path
from amd_nb.config import get_preset
from amd_nb.report import DemoRun, run_demo
from amd_nb.viz import Dashboard
dash = Dashboard(every=5)
run = DemoRun(get_preset('tiny').override({{'distill.iterations': 300}}), Path({out!r}), 'tiny', methods=('amd',), coresets=(), full=False,
              callbacks=(dash,), progress=False)
await dash.run_async(run_demo, run)
"""

def test_kernel_interrupt_stops_run_async_within_a_few_iterations(tmp_path):
    out, at = tmp_path/'run', 45
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1'}
    km, kc = jc.manager.start_new_kernel(kernel_name='python3', cwd=str(tmp_path), env=env)
    try:
        msg_id, t0, sent, error, streams = kc.execute(CODE.format(out=str(out))), time.time(), None, None, []
        while True:
            try: m = kc.get_iopub_msg(timeout=0.2)
            except queue.Empty: m = None
            if m is not None and m['parent_header'].get('msg_id') == msg_id:
                if m['msg_type'] == 'error': error = m['content']
                elif m['msg_type'] == 'stream': streams.append(m['content']['text'])
                elif m['msg_type'] == 'status' and m['content']['execution_state'] == 'idle': break
            if sent is None and _lines(out) >= at: km.interrupt_kernel(); sent = _lines(out)
            assert time.time() - t0 < 600, f"the run did not end; output: {''.join(streams)[-2000:]}"
    finally:
        kc.stop_channels(); km.shutdown_kernel(now=True)
    n = _lines(out)
    print(f"\nkernel: interrupt sent at {sent} logged iterations, the run stopped at {n} of 300")
    assert sent is not None, f"the run never logged {at} iterations: {''.join(streams)[-2000:]}"
    assert n <= sent + 10, f"Kernel → Interrupt at iteration {sent}: the run went on to {n}"
    assert error is not None and error['ename'] == 'RunStopped', error
    tb = [re.sub(r'\x1b\[[0-9;]*m', '', l) for l in error['traceback']]
    assert len(tb) == 1 and 'checkpoint is in' in tb[0] and 'run the job again to resume' in tb[0], tb     # one line, no library frames
    assert list(out.glob('**/checkpoint.safetensors'))
