"""Cost of the data fingerprint (`PairSet.fingerprint`: sha256 of every image file's bytes) on 30,000 generated 64-px images,
first run and rerun, each in a fresh process with its own digest cache.

    .venv/bin/python benchmarks/fingerprint.py [--n 30000] [--folder /tmp/amd_nb_fingerprint] [--rounds 2]

The folder gets `write_shapes` images (images/NNNNN.png, 64 px) and a captions.csv with 5 captions each, once. Each round:
- first run, files cached by the OS: no digest remembered, every file opened, read and hashed, right after the files were
  written or read (the usual case for a folder one has just prepared);
- first run, files not cached: the same after evicting the files from the OS page cache (posix_fadvise DONTNEED, these files
  only), as for a dataset not read lately;
- rerun: a new process, the digests read from the cache file written by the first run: one `stat` per file, no file read.
`stat only` is what the fingerprint cost before it hashed contents (relative path + size), for comparison. `load` is loading
the three splits (CSV parsing and the existence check of every image), which every command does anyway.

Measured on the 2-core development machine (load average 7 from other jobs, niced), 30,000 PNGs of 64 px (7.9 MiB), two rounds:
first run with the files in the page cache 3.08 / 3.17 s, first run with the files evicted 5.61 / 5.63 s, rerun 0.81 / 0.80 s
(the old path+size fingerprint: 0.45-0.59 s; loading the splits: 4.9-5.3 s); the digest cache is 4.6 MiB.
"""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path

CODE = r'''
import hashlib, json, os, sys, time
from pathlib import Path
folder, cache, evict = sys.argv[1], sys.argv[2], sys.argv[3] == 'evict'
os.environ['AMD_NB_CACHE'] = cache
from amd_nb.data import load_pairs, _rel, digest_cache_path
t0 = time.perf_counter()
sets = [load_pairs(Path(folder)/'captions.csv', s) for s in ('train', 'val', 'test')]
t_load = time.perf_counter() - t0
paths = [p for s in sets for p in s.paths]
if evict:
    os.sync()                                     # (a dirty page is not dropped)
    for p in paths:
        fd = os.open(p, os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)
t0 = time.perf_counter(); fps = [s.fingerprint() for s in sets]; t_fp = time.perf_counter() - t0
t0 = time.perf_counter()
for s in sets:                                   # the fingerprint before contents were hashed: relative path + size
    h = hashlib.sha256(json.dumps([s.name, s.split, s.ids, s.captions]).encode())
    for p in s.paths: h.update(f"{_rel(p, s.root)}\0{os.path.getsize(p)}\n".encode())
t_stat = time.perf_counter() - t0
cf = digest_cache_path(sets[0].root)
print(json.dumps(dict(images=len(paths), load_s=round(t_load, 2), fingerprint_s=round(t_fp, 2), stat_only_s=round(t_stat, 2),
                      cache_kb=round(cf.stat().st_size / 1024) if cf.exists() else 0, fingerprint=fps[0][:12])))
'''


def measure(folder:Path, cache:Path, evict:bool=False)->dict:
    r = subprocess.run([sys.executable, '-c', CODE, str(folder), str(cache), 'evict' if evict else 'keep'], capture_output=True, text=True)
    if r.returncode: sys.exit(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--n', type=int, default=30000, help='images')
    ap.add_argument('--folder', type=Path, default=Path(tempfile.gettempdir())/'amd_nb_fingerprint', help='where the images are (written once)')
    ap.add_argument('--rounds', type=int, default=2)
    a = ap.parse_args()
    from amd_nb.data import write_shapes
    if not (a.folder/'captions.csv').exists() or len(list((a.folder/'images').glob('*.png'))) != a.n:
        t0 = time.perf_counter(); write_shapes(a.folder, n=a.n, size=64)
        print(f"wrote {a.n} images of 64 px to {a.folder} in {time.perf_counter() - t0:.1f} s")
    size = sum(p.stat().st_size for p in (a.folder/'images').glob('*.png'))
    print(f"{a.n} PNGs, {size / 2**20:.1f} MiB, {os.cpu_count()} CPU cores; load = the three splits, stat only = the old path+size fingerprint")
    for r in range(a.rounds):
        with tempfile.TemporaryDirectory() as c1, tempfile.TemporaryDirectory() as c2:
            rows = [('first run, files cached by the OS', measure(a.folder, Path(c1))),
                    ('first run, files not cached', measure(a.folder, Path(c2), evict=True)),
                    ('rerun (digests from the cache)', measure(a.folder, Path(c1)))]
        for what, m in rows:
            print(f"round {r + 1}: {what:36s} fingerprint {m['fingerprint_s']:6.2f} s  (load {m['load_s']:.2f} s, stat only {m['stat_only_s']:.2f} s, "
                  f"{m['images']} images, digest cache {m['cache_kb']} KiB, fingerprint {m['fingerprint']})", flush=True)


if __name__ == '__main__': main()
