#!/bin/sh
# Build the rfstreamtest SoapySDR module into tests/soapy_driver/build/.
# Usage: tests/soapy_driver/build.sh  -> prints the path of the built module.
# Needs g++, pkg-config and libsoapysdr-dev. Rebuilds only when the source is newer.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src="$here/rfstreamtest.cpp"
out="$here/build/librfstreamtest.so"
mkdir -p "$here/build"
if [ ! -f "$out" ] || [ "$src" -nt "$out" ]; then
    # shellcheck disable=SC2046  # pkg-config output is a list of flags
    ${CXX:-g++} -std=c++17 -O2 -Wall -Wextra -shared -fPIC -o "$out.tmp" "$src" \
        $(pkg-config --cflags --libs SoapySDR)
    mv "$out.tmp" "$out"
fi
echo "$out"
