"""s/it of an AMD distillation on the demo preset at 1 and 2 torch threads, alternating, each in a fresh process.

    .venv/bin/amd-buffer --preset demo --out runs/demo   # the experts, once
    .venv/bin/python benchmarks/threads.py [ITERATIONS]

Measured on the 2-core development machine while another (niced) job kept one core busy, 6 iterations
after one warm-up, two rounds: 1 thread 1.61 and 1.55 s/it; 2 threads (torch's default there) 23.4 and
18.2 s/it. `amd_nb.config.set_threads` therefore defaults to one thread on machines with at most 4 cores.
"""
import os, subprocess, sys, json, time
CODE = r'''
import sys, time, json, torch
n = int(sys.argv[1]); torch.set_num_threads(n)
from amd_nb.config import get_preset
from amd_nb.experts import TrajectoryStore
from amd_nb.distill import Distiller
cfg = get_preset('demo').override({'distill.method': 'amd', 'distill.iterations': int(sys.argv[2])})
d = Distiller(cfg, TrajectoryStore('runs/demo/experts'), progress=False)
d.step()                                  # warm-up
t0 = time.perf_counter(); d.run()
print(json.dumps(dict(threads=n, s_per_it=(time.perf_counter() - t0) / (d.iteration - 1), load=__import__('os').getloadavg()[0])))
'''
its = int(sys.argv[1]) if len(sys.argv) > 1 else 6
env = {k: v for k, v in os.environ.items() if k not in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS')}
for rep in range(2):
    for n in (1, 2):
        r = subprocess.run([sys.executable, '-c', CODE, str(n), str(its)], capture_output=True, text=True, env=env)
        print(r.stdout.strip() or r.stderr[-2000:], flush=True)
