#!/bin/sh
# CI's packaging check: installs a loom build, then builds and runs this
# consumer project against the installed package (CMake's find_package, then
# pkg-config), checks that libloom needs neither CUDA nor protobuf, and that
# add_subdirectory(loom) leaves the parent project alone.
#
#   tests/consumer/run.sh <loom build dir> <work dir>      (./build.sh consumer)
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "$1" && pwd)
mkdir -p "$2"
work=$(cd "$2" && pwd)
stage=$work/stage

echo "consumer: installing $build into $stage"
rm -rf "$stage"
cmake --install "$build" --prefix "$stage" >/dev/null
lib=$stage/lib

echo "consumer: what libloom needs"
readelf -d "$lib/libloom.so" | grep -E 'NEEDED|SONAME'
if readelf -d "$lib/libloom.so" | grep NEEDED | grep -E -i 'cuda|cublas|cudnn|protobuf|onnx'; then
  echo "consumer: libloom.so must not need CUDA, protobuf or ONNX" >&2
  exit 1
fi
for extra in libloom_cuda.so libloom_onnx.so; do
  [ -e "$lib/$extra" ] && readelf -d "$lib/$extra" | grep -E 'SONAME'
done

echo "consumer: CMake, find_package(loom)"
cmake -S "$root/tests/consumer" -B "$work/cmake" -DCMAKE_PREFIX_PATH="$stage" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$work/cmake" >/dev/null
"$work/cmake/consumer"

echo "consumer: pkg-config"
export PKG_CONFIG_PATH="$lib/pkgconfig"
pkgs=loom
[ -e "$lib/pkgconfig/loom-onnx.pc" ] && pkgs="$pkgs loom-onnx" && defs="-DCONSUMER_ONNX=1"
[ -e "$lib/pkgconfig/loom-cuda.pc" ] && pkgs="$pkgs loom-cuda" && defs="${defs:-} -DCONSUMER_CUDA=1"
echo "  pkg-config --cflags --libs $pkgs: $(pkg-config --cflags --libs $pkgs)"
# shellcheck disable=SC2046
c++ -std=c++20 -O1 -Wall -Wextra -Werror ${defs:-} "$root/tests/consumer/consumer.cpp" -o "$work/consumer-pc" \
  $(pkg-config --cflags --libs $pkgs) -Wl,-rpath,"$lib"
"$work/consumer-pc"

echo "consumer: add_subdirectory(loom) (configure only: the checks are CMake's)"
cmake -S "$root/tests/consumer" -B "$work/subdir" -DLOOM_SOURCE_DIR="$root" -DLOOM_CUDA=OFF >/dev/null
echo "consumer: all checks passed"
