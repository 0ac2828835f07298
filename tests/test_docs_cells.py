"""The docs build (nbdev's `exec_show_docs`) executes every notebook cell that contains an import statement, so a
cell that imports *and* runs work would run again, outside its notebook's flow, whenever the docs are built.
Imports belong in the notebook's import cells; this test names any cell that mixes them with other code."""
import ast, json
from pathlib import Path
import pytest

NBS = sorted(p for p in (Path(__file__).parents[1]/'nbs').rglob('*.ipynb') if not any(q.startswith(('.', '_')) for q in p.parts))

def mixed_cells(nb:dict)->list[int]:
    "Indices of code cells nbdev's docs build would execute although they do more than import."
    out = []
    for i, c in enumerate(nb['cells']):
        src = ''.join(c['source'])
        if c['cell_type'] != 'code' or not src.strip(): continue
        dirs = {l.split(':')[0].replace('#|', '').strip() for l in src.splitlines() if l.startswith('#|')}
        if dirs & {'export', 'exports', 'exporti', 'exec_doc'} or any('eval: false' in l for l in src.splitlines() if l.startswith('#|')): continue
        try: tree = ast.parse('\n'.join(l for l in src.splitlines() if not l.lstrip().startswith(('%', '!'))))
        except SyntaxError: continue
        nodes = list(ast.walk(tree))
        if any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in nodes) and any(isinstance(n, (ast.Expr, ast.Assign)) for n in nodes): out.append(i)
    return out

def test_mixed_cells_are_found():
    nb = {'cells': [{'cell_type': 'code', 'source': ['import os\n', 'x = os.getcwd()']},
                    {'cell_type': 'code', 'source': ['import os\n', 'from pathlib import Path']},
                    {'cell_type': 'code', 'source': ['#| export\n', 'import os\n', 'X = 1']},
                    {'cell_type': 'code', 'source': ['#| eval: false\n', 'import os\n', 'os.getcwd()']}]}
    assert mixed_cells(nb) == [0]

@pytest.mark.parametrize('path', NBS, ids=lambda p: p.name)
def test_no_cell_mixes_imports_with_work(path):
    bad = mixed_cells(json.loads(path.read_text()))
    assert not bad, f"{path.name}: cells {bad} import and run code; the docs build would run them again (move the imports to the import cell)"
