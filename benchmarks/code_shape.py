"""The shape of the library: function sizes, module sizes, the import graph, classes assembled by assignment.

    python benchmarks/code_shape.py [--rev GIT_REV] [--trace]   # the working tree, or the amd_nb/ of a commit

Prints the median / 90th percentile / largest function (lines, methods included), the functions over
40 lines, each module's `__all__` size and lines, the import edges between amd_nb modules (module-level,
and the ones made inside functions), whether they form a cycle, whether any goes against the design's
one-way order, and the `Class.attr = fn` lines.
"""
import argparse, ast, re, statistics, subprocess
from pathlib import Path

ORDER = ['registry', 'io', 'config', 'data', 'models', 'dist', 'train', 'experts', 'mmd', 'spm', 'matching', 'synthetic',
         'distill', 'evaluate', 'viz', 'report', 'cli']   # DESIGN's one-way order, with the helper modules in their place

def sources(rev:str|None)->dict:
    if rev is None: return {p.stem: p.read_text() for p in sorted(Path('amd_nb').glob('*.py')) if p.stem not in ('_modidx', '__init__')}
    names = subprocess.run(['git', 'ls-tree', '--name-only', f'{rev}:amd_nb'], capture_output=True, text=True, check=True).stdout.split()
    return {n[:-3]: subprocess.run(['git', 'show', f'{rev}:amd_nb/{n}'], capture_output=True, text=True, check=True).stdout
            for n in names if n.endswith('.py') and n not in ('_modidx.py', '__init__.py')}

def functions(tree)->list:
    return [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]

def imports(name:str, tree, mods:set)->tuple[set, set]:
    top, inner = set(), set()
    body_ids = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            m = node.module or ''
            tgt = m.split('.')[-1] if (node.level == 1 or m.startswith('amd_nb.')) else None
            if node.level == 1 and not m: tgt = None
            if tgt in mods and tgt != name: (top if id(node) in body_ids else inner).add(tgt)
    return top, inner

def cycle(edges:dict)->list|None:
    seen, stack = set(), []
    def dfs(u):
        if u in stack: return stack[stack.index(u):] + [u]
        if u in seen: return None
        seen.add(u); stack.append(u)
        for v in sorted(edges.get(u, ())):
            if (c := dfs(v)): return c
        stack.pop(); return None
    for u in sorted(edges):
        if (c := dfs(u)): return c
    return None

def trace_demo()->dict:
    "Cross-module calls into each amd_nb module while `run_demo` runs on the `tiny` preset (the package on sys.path is traced)."
    import sys, tempfile, collections
    from amd_nb.config import get_preset
    from amd_nb.report import DemoRun, run_demo
    calls = collections.Counter()
    def prof(frame, event, arg):
        if event != 'call': return
        mod = frame.f_globals.get('__name__', ''); back = frame.f_back
        caller = back.f_globals.get('__name__', '') if back else ''
        if mod.startswith('amd_nb.') and caller.startswith('amd_nb.') and mod != caller: calls[mod.split('.')[1]] += 1
    with tempfile.TemporaryDirectory() as d:
        sys.setprofile(prof)
        try: run_demo(DemoRun(get_preset('tiny'), d, 'tiny', progress=False, say=lambda *a: None))
        finally: sys.setprofile(None)
    return dict(calls)

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0]); ap.add_argument('--rev')
    ap.add_argument('--trace', action='store_true', help='also count the cross-module calls into each module during run_demo on tiny')
    a = ap.parse_args()
    src = sources(a.rev); mods = set(src)
    trees = {m: ast.parse(s) for m, s in src.items()}
    sizes = [(m, f, n) for m, t in trees.items() for f, n in functions(t)]
    ns = sorted(n for *_, n in sizes)
    print(f"{'working tree' if a.rev is None else a.rev}: {len(mods)} modules, {sum(s.count(chr(10)) for s in src.values())} lines, {len(ns)} functions")
    print(f"function lines: median {statistics.median(ns):.0f}, 90th percentile {ns[int(0.9 * (len(ns) - 1))]}, max {ns[-1]}")
    print("over 40 lines: " + (', '.join(f"{m}.{f} ({n})" for m, f, n in sorted(sizes, key=lambda x: -x[2]) if n > 40) or 'none'))
    print('| module | lines | `__all__` | imports (module level) | imports inside functions |'); print('|---|---|---|---|---|')
    edges, back = {}, []
    for m in sorted(mods, key=lambda x: ORDER.index(x) if x in ORDER else 99):
        top, inner = imports(m, trees[m], mods)
        edges[m] = top | inner
        alls = re.search(r'__all__ = \[(.*?)\]', src[m], re.S)
        n_all = len(re.findall(r"'[^']+'", alls.group(1))) if alls else 0
        for t in top | inner:
            if m in ORDER and t in ORDER and ORDER.index(t) > ORDER.index(m): back.append(f"{m} → {t}")
        print(f"| {m} | {src[m].count(chr(10))} | {n_all} | {', '.join(sorted(top)) or '–'} | {', '.join(sorted(inner - top)) or '–'} |")
    c = cycle(edges)
    print(f"import cycle: {' → '.join(c) if c else 'none'}; imports against the one-way order: {', '.join(back) or 'none'}")
    prov = sorted(set(re.findall(r"Registry\('([^']+)', 'amd_nb\.(\w+)'", src.get('registry', ''))), key=lambda x: x[1])
    if prov: print("registries that import their provider on first lookup (a name → the module that registers it): " +
                   ', '.join(f"{k} → {m}" for k, m in prov))
    assign = [l for s in src.values() for l in s.splitlines() if re.match(r'^[A-Z]\w*\.\w+(\s*,\s*[A-Z]\w*\.\w+)*\s*=\s*\S', l)]
    print(f"`Class.attr = fn` lines: {len(assign)}")
    if a.trace:
        t = trace_demo()
        print("calls into a module from another one during run_demo (tiny): " + ', '.join(f"{m} {n}" for m, n in sorted(t.items(), key=lambda x: -x[1])))

if __name__ == '__main__': main()
