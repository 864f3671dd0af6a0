#!/usr/bin/env bash
# Builds everything AdaWM needs into ./.venv: pinned Python packages (ROS 2 Kilted wheels, CPU torch, ...),
# the interface packages (adawm_msgs, and carla_msgs / derived_object_msgs where none is installed), and
# this package in editable mode. Each step is skipped when its inputs have not changed since it last
# succeeded (stamp files under .venv/.adawm-stamps hold the hash of those inputs).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
stamps="$venv/.adawm-stamps"
build="$root/build/interfaces"
python_bin=${PYTHON:-python3.11}

die() { echo "setup: $*" >&2; exit 1; }
say() { echo "setup: $*"; }

# --- prerequisites: one clear line each -----------------------------------------------------------
command -v "$python_bin" >/dev/null 2>&1 \
  || die "needs Python 3.11 ('$python_bin' not found): install it, e.g. 'apt-get install python3.11 python3.11-venv python3.11-dev', or set PYTHON=/path/to/python3.11"
"$python_bin" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null \
  || die "needs Python 3.11, but '$python_bin' is $("$python_bin" --version 2>&1): set PYTHON=/path/to/python3.11"
"$python_bin" -c 'import venv, ensurepip' 2>/dev/null \
  || die "Python 3.11 has no venv/ensurepip module: install it, e.g. 'apt-get install python3.11-venv'"
py_include=$("$python_bin" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
[ -f "$py_include/Python.h" ] \
  || die "needs the Python 3.11 headers ($py_include/Python.h missing): install them, e.g. 'apt-get install python3.11-dev'"
command -v cc >/dev/null 2>&1 && command -v c++ >/dev/null 2>&1 \
  || die "needs a C and C++ compiler (cc, c++) to build the message packages: install them, e.g. 'apt-get install build-essential'"
# cmake itself is a pinned PyPI package (requirements.txt), so it needs no system install.

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }
fresh() { [ -f "$stamps/$1" ] && [ "$(cat "$stamps/$1")" = "$2" ]; }
mark() { mkdir -p "$stamps"; echo "$2" > "$stamps/$1"; }

# --- 1. venv --------------------------------------------------------------------------------------
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then
  say "creating .venv with $("$python_bin" --version)"
  rm -rf "$venv"
  "$python_bin" -m venv "$venv"
fi
vpy="$venv/bin/python"

# --- 2. pinned packages ---------------------------------------------------------------------------
req_hash=$(hash_of "$root/requirements.txt")
if ! fresh requirements "$req_hash"; then
  say "installing pinned packages (requirements.txt)"
  # (this machine's pip config lists local mirrors; their "is ignored" chatter is noise)
  if ! "$vpy" -m pip install --quiet --disable-pip-version-check -r "$root/requirements.txt" 2>&1 \
       | { grep -v "is ignored: it is neither a file nor a directory" || true; }; then
    die "pip could not install requirements.txt (torch must come as the local CPU wheel torch==2.13.0+cpu)"
  fi
  "$vpy" -c 'import torch, sys; sys.exit(0 if torch.version.cuda is None else 1)' \
    || die "a CUDA build of torch got installed; AdaWM needs the CPU build torch==2.13.0+cpu"
  rm -f "$stamps"/cmake-paths "$stamps"/iface-*   # new wheels: redo what was built on top of them
  mark requirements "$req_hash"
fi

# --- 3. repair the wheels' CMake exports (they name their build machine's include dirs) -------------
numpy_include=$("$vpy" -c 'import numpy; print(numpy.get_include())')
paths_key="$py_include|$numpy_include"
if ! fresh cmake-paths "$paths_key"; then
  say "pointing the ROS wheels' CMake exports at this interpreter"
  { grep -rlE '/opt/python/cp311-cp311' "$venv/share" --include='*.cmake' || true; } | while read -r f; do
    sed -i -E \
      -e "s#/opt/python/cp311-cp311/lib/python3\.11/site-packages/numpy/_core/include#$numpy_include#g" \
      -e "s#/opt/python/cp311-cp311/include/python3\.11#$py_include#g" "$f"
  done
  mark cmake-paths "$paths_key"
fi

# --- 4. interface packages ------------------------------------------------------------------------
cmake_bin="$venv/bin/cmake"
[ -x "$cmake_bin" ] || cmake_bin=$(command -v cmake)

# carla_msgs / derived_object_msgs come from carla-ros-bridge when it is installed, ackermann_msgs and
# autoware_control_msgs from a ROS or Autoware install (a sourced ROS
# workspace puts it on AMENT_PREFIX_PATH); only then are the stand-ins in compat/ skipped.
provided_elsewhere() {
  local pkg=$1 prefix
  IFS=: read -ra prefixes <<< "${AMENT_PREFIX_PATH:-}"
  for prefix in "${prefixes[@]}"; do
    [ -n "$prefix" ] && [ "$prefix" != "$venv" ] && [ -e "$prefix/share/ament_index/resource_index/packages/$pkg" ] && return 0
  done
  return 1
}

build_interfaces() {
  local src=$1 name
  name=$(basename "$src")
  local key
  key=$(cd "$src" && find . -type f \( -name '*.msg' -o -name '*.srv' -o -name 'CMakeLists.txt' -o -name 'package.xml' \) | sort | xargs cat | sha256sum | cut -d' ' -f1)
  if fresh "iface-$name" "$key" && [ -e "$venv/share/ament_index/resource_index/packages/$name" ]; then
    return 0
  fi
  say "building interface package $name"
  local t0=$SECONDS log="$build/$name.log"
  mkdir -p "$build"
  if ! ( "$cmake_bin" -S "$src" -B "$build/$name" -DCMAKE_INSTALL_PREFIX="$venv" -DCMAKE_PREFIX_PATH="$venv" \
           -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$vpy" -DCMAKE_BUILD_TYPE=Release \
         && "$cmake_bin" --build "$build/$name" -j "$(nproc)" \
         && "$cmake_bin" --install "$build/$name" ) >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "building $name failed (full log: $log)"
  fi
  say "built $name in $((SECONDS - t0)) s"
  mark "iface-$name" "$key"
}

export PATH="$venv/bin:$PATH"
for pkg in carla_msgs derived_object_msgs ackermann_msgs autoware_control_msgs; do
  if provided_elsewhere "$pkg"; then
    say "$pkg is provided by the environment; not building compat/$pkg"
  else
    build_interfaces "$root/compat/$pkg"
  fi
done
build_interfaces "$root/adawm_msgs"

# --- 5. this package ------------------------------------------------------------------------------
pkg_hash=$(hash_of "$root/setup.py" "$root/setup.cfg" "$root/package.xml")
if ! fresh package "$pkg_hash" || ! "$vpy" -c 'import adawm_planner' 2>/dev/null; then
  say "installing adawm_planner (editable)"
  "$vpy" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e "$root" \
    || die "pip could not install this package"
  mark package "$pkg_hash"
fi

# The venv doubles as an ament prefix holding this package, as a colcon install would lay it out:
# `adawm launch` and $(find-pkg-share adawm_planner) find launch/ and config/ there, and nodes at
# lib/adawm_planner/<exec>. Links, so edits in the tree take effect without reinstalling.
mkdir -p "$venv/share/ament_index/resource_index/packages" "$venv/share/adawm_planner" "$venv/lib/adawm_planner"
touch "$venv/share/ament_index/resource_index/packages/adawm_planner"
for item in launch config checkpoints rviz package.xml; do ln -sfn "$root/$item" "$venv/share/adawm_planner/$item"; done
"$vpy" - "$venv" <<'PY'
import os, sys
from importlib.metadata import distribution
venv = sys.argv[1]
for ep in distribution('adawm_planner').entry_points.select(group='console_scripts'):
    link = os.path.join(venv, 'lib', 'adawm_planner', ep.name)
    if not os.path.lexists(link):
        os.symlink(os.path.join('..', '..', 'bin', ep.name), link)
PY

say "ready: $venv"
