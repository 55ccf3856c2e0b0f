#!/usr/bin/env bash
# The library as a runtime finds it: installs the project into a fresh prefix,
# builds examples/ against that prefix alone, once with find_package(minicriu)
# and once with pkg-config, checks they load the installed libminicriu.so.0
# (its soname), and runs them: runtime_rank checkpoints and restores a rank,
# runtime_checkpoint checkpoints the counter example.
#   install_test.sh BUILD_DIR SOURCE_DIR C_COMPILER WORK_DIR
set -euo pipefail
build=$(realpath "$1") src=$(realpath "$2") cc=$3 work=$4
rm -rf "$work"
mkdir -p "$work"
work=$(realpath "$work")
prefix=$work/prefix
fail() { echo "install_test: $*" >&2; exit 1; }
# The examples checkpoint their children: a pipe they inherit from whoever
# runs this (a fd left open by the caller, a $(...) capture) would be outside
# the dumped tree. Only stdio is kept; outputs go to files.
for fd in /proc/$$/fd/*; do
  fd=${fd##*/}
  if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi
done

cmake --install "$build" --prefix "$prefix" >/dev/null
lib=$(find "$prefix" -name 'libminicriu.so.0' -print -quit)
[ -n "$lib" ] || fail "no libminicriu.so.0 installed"
libdir=$(dirname "$lib")
readelf -d "$lib" | grep -q 'SONAME.*\[libminicriu\.so\.0\]' || fail "libminicriu.so has no versioned soname"
[ -f "$prefix/share/man/man1/minicriu.1" ] || fail "no manual page installed"
[ -x "$prefix/bin/minicriu" ] || fail "no minicriu tool installed"
# Nothing installed may lead back into the build or the source tree.
if grep -rlF -e "$build" -e "$src" "$libdir/cmake" "$libdir/pkgconfig"; then fail "the package names the build tree"; fi

# Each binary must take libminicriu.so.0 from the prefix.
check_loads_installed() {
  local out
  out=$(LD_LIBRARY_PATH=${2:-} ldd "$1") || fail "ldd $1"
  grep -q "libminicriu.so.0 => $libdir/libminicriu.so.0" <<<"$out" || fail "$1 does not load $libdir/libminicriu.so.0: $out"
}

# find_package(minicriu), from the example sources as a project of their own.
cmake -S "$src/examples" -B "$work/cmake" -G Ninja -DCMAKE_C_COMPILER="$cc" \
  -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/cmake" >/dev/null
check_loads_installed "$work/cmake/runtime_rank"
check_loads_installed "$work/cmake/runtime_checkpoint"

# pkg-config minicriu.
mkdir -p "$work/pc"
export PKG_CONFIG_PATH=$libdir/pkgconfig
for example in runtime_rank runtime_checkpoint; do
  # shellcheck disable=SC2046
  "$cc" "$src/examples/$example.c" -o "$work/pc/$example" $(pkg-config --cflags --libs minicriu)
  check_loads_installed "$work/pc/$example" "$libdir"
done
"$cc" "$src/examples/counter.c" -o "$work/pc/counter"

# Run them.
for build_kind in cmake pc; do
  libpath=""
  [ "$build_kind" = pc ] && libpath=$libdir
  mkdir -p "$work/run-$build_kind/rank" "$work/run-$build_kind/counter"
  run=$work/run-$build_kind
  LD_LIBRARY_PATH=$libpath "$work/$build_kind/runtime_rank" "$run/rank" </dev/null >"$run/rank.out" 2>&1 ||
    fail "$build_kind runtime_rank failed: $(cat "$run/rank.out")"
  grep -q "exited with 0 after 1 checkpoint(s)" "$run/rank.out" || fail "$build_kind runtime_rank: $(cat "$run/rank.out")"
  "$work/pc/counter" "$run/counter.log" </dev/null >/dev/null 2>&1 &
  counter=$!
  sleep 0.5
  LD_LIBRARY_PATH=$libpath "$work/$build_kind/runtime_checkpoint" "$counter" "$run/counter" </dev/null \
    >"$run/checkpoint.out" 2>&1 || { kill -9 "$counter"; fail "$build_kind runtime_checkpoint failed: $(cat "$run/checkpoint.out")"; }
  kill -9 "$counter"
  wait "$counter" 2>/dev/null || true
  [ -f "$run/counter/inventory.img" ] || fail "$build_kind runtime_checkpoint wrote no checkpoint"
done
rm -rf "$work"
echo "install_test: ok"
