"""Build the docs site up to the point where Quarto takes over, and check what Quarto would get.

`nbdev_docs` = refresh `_quarto.yml`/`nbdev.yml` → module index → `sidebar.yml` → process every notebook into
`_proc/` (frontmatter, `show_doc` cells executed, directives applied) → `quarto render _proc`. nbdev's own
`nbdev_proc_nbs` first installs Quarto when it is missing, so this script calls the same steps without that one,
then checks the result. `make test` runs it, so a notebook that breaks the docs build fails the test command.
Where Quarto is installed, `make docs` (= `nbdev_docs`) builds the site into `_docs/`.
"""
import os, re, sys, json
from pathlib import Path
import yaml
import nbdev.doclinks
from nbdev.config import get_config
from nbdev.quarto import refresh_quarto_yml, nbdev_sidebar
from nbdev.serve import proc_nbs


def sidebar_files(node)->list[str]:
    "Every notebook path listed anywhere in a sidebar `contents` tree."
    if isinstance(node, str): return [node]
    if isinstance(node, list): return [f for n in node for f in sidebar_files(n)]
    if isinstance(node, dict): return [f for v in node.values() for f in sidebar_files(v)]
    return []


def problems(cfg)->list[str]:
    "What is wrong with the processed docs in `_proc`."
    nbs, proc = cfg.nbs_path, cfg.config_path/'_proc'
    notebooks = sorted(p.relative_to(nbs).as_posix() for p in nbs.rglob('*.ipynb')
                       if not any(part.startswith(('.', '_')) for part in p.relative_to(nbs).parts))
    bad = [f"{n}: not processed into {proc}" for n in notebooks if not (proc/n).exists()]
    listed = set(sidebar_files(yaml.safe_load((nbs/'sidebar.yml').read_text())))
    bad += [f"{n}: missing from sidebar.yml" for n in notebooks if n != 'index.ipynb' and n not in listed]
    if not any(n.startswith('tutorials/') for n in notebooks): bad.append('no tutorials found under nbs/tutorials')
    for n in notebooks:
        if n == 'index.ipynb' or not (proc/n).exists(): continue
        cells = json.loads((proc/n).read_text())['cells']
        if not any(c['cell_type'] == 'raw' and 'title:' in ''.join(c['source']) for c in cells[:2]):
            bad.append(f"{n}: no title (start the notebook with a markdown cell '# Title' and '> summary')")
    index = json.loads((proc/'index.ipynb').read_text())['cells'] if (proc/'index.ipynb').exists() else []
    if not any('{{< include ../README.md >}}' in ''.join(c['source']) for c in index): bad.append('index.ipynb does not include ../README.md')
    if not (proc.parent/'README.md').exists(): bad.append('README.md missing next to _proc')
    links = re.findall(r"\]\(([^)#:]+\.ipynb)\)", ''.join(''.join(c['source']) for c in index))
    bad += [f"index.ipynb links to missing {l}" for l in links if not (nbs/l).exists()]
    nav = yaml.safe_load((nbs/'_quarto.yml').read_text())['website']['navbar'].get('left', [])
    bad += [f"_quarto.yml navbar links to missing {i['href']}" for i in nav if not (nbs/i['href']).exists()]
    return bad


def main()->int:
    cfg = get_config()
    refresh_quarto_yml()
    nbdev.doclinks._build_modidx()
    nbdev_sidebar.__wrapped__(path=cfg.nbs_path)
    proc_nbs(cfg.nbs_path, n_workers=int(os.environ.get('DOCS_WORKERS', 2)), force=True)
    bad = problems(cfg)
    for b in bad: print(f"docs: {b}", file=sys.stderr)
    if not bad: print(f"docs: {len(list((cfg.config_path/'_proc').rglob('*.ipynb')))} notebooks processed into _proc; ready for quarto render")
    return 1 if bad else 0


if __name__ == '__main__': sys.exit(main())
