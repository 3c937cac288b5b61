#!/usr/bin/env bash
# Runs the test-suite against an AddressSanitizer + UndefinedBehaviorSanitizer build of
# the C core (in place), then restores the normal build.
#
#     bash scripts/asan-test.sh            # whole suite
#     bash scripts/asan-test.sh tests/native -x
#
# Python itself is not instrumented, so the sanitizer runtimes are preloaded; leak
# checking is off because CPython keeps memory until exit by design.  PYTHONMALLOC=malloc
# makes small Python buffers (cffi's too) real malloc blocks that ASan watches.  The
# sanitizer build keeps the C core's assert()s (no -DNDEBUG, see pylog/_native/build.py).
set -euo pipefail
cd "$(dirname "$0")/.."
restore() { python setup.py -q build_ext --inplace --force -t build/normal >/dev/null 2>&1 || true; }
trap restore EXIT
PYLOG_SANITIZE=1 python setup.py -q build_ext --inplace --force -t build/asan
asan="$(gcc -print-file-name=libasan.so)"
ubsan="$(gcc -print-file-name=libubsan.so)"
PYLOG_SANITIZE=1 PYTHONMALLOC=malloc LD_PRELOAD="$asan:$ubsan" \
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  python -m pytest -q -p no:cacheprovider -n 0 "${@:-tests}"
