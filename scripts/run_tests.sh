#!/usr/bin/env bash
# Every test stage of `make test`, run to the end even when one fails; a summary of all stages at the end.
#   scripts/run_tests.sh BIN     (BIN: the venv's bin folder)
# Exit status 1 if any stage failed.
set -u
BIN=${1:-.venv/bin}
names=(); codes=(); secs=()
stage() {   # stage NAME COMMAND...: run it, remember how it ended
  local name=$1; shift
  printf '\n==> %s\n' "$name"
  local t0=$SECONDS
  "$@"; local rc=$?
  names+=("$name"); codes+=("$rc"); secs+=($((SECONDS - t0)))
}
stage "API notebooks: tests and saved outputs (run_notebook.py --check)" \
  "$BIN/python" scripts/run_notebook.py --check --jobs 2 nbs/[0-9]*.ipynb
stage "tutorials (nbdev_test)" "$BIN/nbdev_test" --n_workers 2 --timing --path nbs/tutorials
# pytest in as many worker processes as there are cores (at most 4), one test file per worker at a time (its module fixtures built once)
workers=$("$BIN/python" -c 'import os; print(min(len(os.sched_getaffinity(0)), 4))')   # not nproc: it reports $OMP_NUM_THREADS (1 here)
stage "pytest ($workers workers)" "$BIN/python" -m pytest -q -n "$workers" --dist loadfile tests --ignore=tests/test_browser.py
stage "browser test (JupyterLab in headless Chromium)" "$BIN/python" -m pytest -q -s -rs tests/test_browser.py
stage "docs up to Quarto (check_docs.py)" "$BIN/python" scripts/check_docs.py
printf '\n==> summary\n'
failed=0
for i in "${!names[@]}"; do
  if [ "${codes[$i]}" = 0 ]; then status=passed; else status="FAILED (exit ${codes[$i]})"; failed=1; fi
  printf '  %-70s %-16s %5s s\n' "${names[$i]}" "$status" "${secs[$i]}"
done
[ "$failed" = 0 ] && echo "make test: all stages passed" || echo "make test: some stages failed (their output is above)"
exit $failed
