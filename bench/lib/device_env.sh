# device_env.sh — sourced by the scripts that run on the GPU machine
# (bench/gpu-check.sh, bench/recipe-gpu.sh), from the repository root.
#
# find_lib NAME: finds a shared library in the loader's cache, else in the
# folders where CUDA images and PyTorch wheels put it (that folder is added
# to LD_LIBRARY_PATH); prints where, or "NAME: NOT FOUND" and returns 1.
#
# device_binaries: makes the binaries scripts/devpack.sh carried usable here
# (unpacks .devcarry/lib.tar.xz onto LD_LIBRARY_PATH; links the packing
# checkout's path, baked into the build, to this checkout) and sets
# device_bin to their folder; without .devcarry, to build/ when it holds
# bertrun. Returns 1 when there are none. Call it in the script's own shell
# (not in $(...)): it exports LD_LIBRARY_PATH.

find_lib() {
  local name=$1 hit d
  hit=$(ldconfig -p 2>/dev/null | awk -v n="$name" '$1 == n { print $NF; exit }')
  if [ -n "$hit" ]; then echo "$name: $hit"; return 0; fi
  for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/local/cuda/lib64 \
           /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/lib64 \
           /opt/torch/.venv/lib/python3*/site-packages/nvidia/cu13/lib \
           /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib \
           /usr/local/lib/python3*/dist-packages/nvidia/cu13/lib; do
    if [ -e "$d/$name" ]; then
      export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      echo "$name: $d/$name (added to LD_LIBRARY_PATH)"
      return 0
    fi
  done
  echo "$name: NOT FOUND"
  return 1
}

device_binaries() {
  local root packed l
  root=$(pwd)
  for l in libcuda.so.1 libnvrtc.so.13 libcublas.so.13 libcublasLt.so.13 libnccl.so.2; do
    find_lib "$l" >&2 || true
  done
  if [ ! -x .devcarry/build/bertrun ]; then
    [ -x build/bertrun ] || return 1
    device_bin=$root/build
    return 0
  fi
  if [ -f .devcarry/lib.tar.xz ] && [ ! -d .devcarry/lib ]; then tar -C .devcarry -xJf .devcarry/lib.tar.xz || return 1; fi
  [ -d .devcarry/lib ] && export LD_LIBRARY_PATH="$root/.devcarry/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  packed=$(sed -n 's/^source_dir=//p' .devcarry/MANIFEST 2>/dev/null | head -1)
  if [ -n "$packed" ] && [ "$(realpath -m "$packed")" != "$root" ]; then
    if [ ! -e "$packed" ] || [ -L "$packed" ]; then
      mkdir -p "$(dirname "$packed")" && ln -sfn "$root" "$packed" || return 1
    else
      echo "device_env: $packed exists and is not this checkout" >&2
      return 1
    fi
  fi
  device_bin=$root/.devcarry/build
}
