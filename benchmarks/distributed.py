"""Expert training with one process and with torchrun: wall time of `amd-buffer` for a preset's experts.

    python benchmarks/distributed.py --preset demo --out runs/bench-distributed [--nproc 2] [--set key=value ...]

Runs `amd-buffer` into a fresh store three ways: one process with 1 and with `--nproc` threads,
then `torchrun --nproc_per_node NPROC` with one thread per process (ranks split the experts).
Each time is the whole command (interpreter start, data loading from a warm embedding cache,
training with per-epoch validation, writing); the first, untimed run only warms the cache.
Prints one table and the speed-up of torchrun over the faster single-process run, and checks
that the torchrun store holds the same trajectories as the single-process one.
"""
import argparse, os, shutil, subprocess, sys, time
from pathlib import Path
import torch
from amd_nb.experts import TrajectoryStore

BIN = Path(sys.executable).parent

def run(cmd:list[str], threads:int)->float:
    "Wall seconds of `cmd` with OMP_NUM_THREADS=`threads` (raises if it fails)."
    env = {**os.environ, 'OMP_NUM_THREADS': str(threads)}
    t0 = time.perf_counter(); r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode: sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0

def buffer_args(a, out:Path)->list[str]:
    if out.exists(): shutil.rmtree(out)
    return ['--preset', a.preset, '--quiet', '--device', 'cpu', '--out', str(out), *[x for s in a.overrides for x in ('--set', s)]]

def per_expert(run:Path)->float:
    "Mean recorded training seconds per expert (val recall included, start-up and data loading not)."
    s = TrajectoryStore(run/'experts')
    return sum(s.metrics(i)['seconds'] for i in s.finished()) / len(s)

def same(a:Path, b:Path)->bool:
    sa, sb = TrajectoryStore(a/'experts'), TrajectoryStore(b/'experts')
    return sa.finished() == sb.finished() and all(torch.equal(sa[i].image, sb[i].image) and torch.equal(sa[i].text, sb[i].text) for i in sa.finished())

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--preset', default='demo'); ap.add_argument('--out', default='runs/bench-distributed')
    ap.add_argument('--nproc', type=int, default=2, help='torchrun processes (and threads of the second single-process run)')
    ap.add_argument('--set', action='append', default=[], dest='overrides')
    a = ap.parse_args(); root = Path(a.out)
    single = lambda out: [str(BIN/'amd-buffer'), *buffer_args(a, out)]
    multi = lambda out: [str(BIN/'torchrun'), '--standalone', '--nproc_per_node', str(a.nproc), '--no-python', *single(out)]
    run(single(root/'warm') + ['--set', 'expert.n_experts=1', '--set', 'expert.epochs=1'], 1)   # fill the embedding cache
    rows = [(f"1 process, 1 thread", run(single(root/'p1t1'), 1)),
            (f"1 process, {a.nproc} threads", run(single(root/f'p1t{a.nproc}'), a.nproc)),
            (f"torchrun {a.nproc} processes, 1 thread each", run(multi(root/f'p{a.nproc}t1'), 1))]
    store = TrajectoryStore(root/'p1t1'/'experts')
    print(f"preset {a.preset}: {len(store)} experts × {store.epochs} epochs, {os.cpu_count()} CPUs, torch {torch.__version__}")
    print('| run | wall s | s per expert (training) |'); print('|---|---|---|')
    for (name, t), d in zip(rows, ('p1t1', f'p1t{a.nproc}', f'p{a.nproc}t1')): print(f"| {name} | {t:.1f} | {per_expert(root/d):.1f} |")
    best = min(t for _, t in rows[:2])
    print(f"speed-up of torchrun over the faster single process: {best / rows[2][1]:.2f}× "
          f"(over 1 thread: {rows[0][1] / rows[2][1]:.2f}×); same trajectories: {same(root/'p1t1', root/f'p{a.nproc}t1')}")

if __name__ == '__main__': main()
