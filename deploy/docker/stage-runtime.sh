#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Used by the Dockerfile's builder stage to work out what the runtime image needs.
#
#   stage-runtime.sh ROOT PACKAGES BINARY...
#
# Installs each BINARY into ROOT/usr/local/bin. For every shared library the binaries load (ldd):
# when a Debian package owns it, the package's name goes to the file PACKAGES (sorted, one per
# line) for the runtime stage to apt-get install; when none does (a library built from source
# into /usr/local), the library itself is copied under ROOT at the same path. Libraries ldd
# cannot find are skipped with a note: libcuda.so.1 comes from the host's driver at run time.
# Builder and runtime images must be the same distribution release, so the names match.
set -euo pipefail
if (($# < 3)); then
  echo "usage: $0 ROOT PACKAGES BINARY..." >&2
  exit 2
fi
root=$1
package_list=$2
shift 2

mkdir -p "$root/usr/local/bin"
for bin in "$@"; do
  install -m 0755 "$bin" "$root/usr/local/bin/"
done

mapfile -t libs < <(ldd "$@" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u)
ldd "$@" | awk '$2 == "=>" && $3 == "not" {print "stage-runtime: not found at build time: " $1}' \
  | sort -u >&2

# dpkg records a file under the path its package shipped it at, which on merged-/usr systems may
# be /lib/... or /usr/lib/... whatever ldd printed: ask about the printed and the resolved path,
# each spelled both ways, in one dpkg-query call.
spellings() {
  local path
  for path in "$1" "$(readlink -f "$1")"; do
    echo "$path"
    case "$path" in
      /usr/*) echo "${path#/usr}" ;;
      *) echo "/usr$path" ;;
    esac
  done
}
candidates=()
for lib in "${libs[@]}"; do
  mapfile -t -O "${#candidates[@]}" candidates < <(spellings "$lib")
done
declare -A owner_of=()
# Lines "pkg[:arch][, pkg2...]: /path"; "diversion by ..." lines name no owner. dpkg-query exits
# 1 when some path has no owner, which is expected here.
while IFS= read -r line; do
  case "$line" in diversion*) continue ;; esac
  pkg=${line%%: /*}
  pkg=${pkg%%,*}
  owner_of["/${line#*: /}"]=${pkg%%:*}
done < <(dpkg-query -S "${candidates[@]}" 2>/dev/null || true)

packages=()
for lib in "${libs[@]}"; do
  owner=""
  while IFS= read -r path; do
    owner=${owner_of[$path]:-}
    [ -n "$owner" ] && break
  done < <(spellings "$lib")
  if [ -n "$owner" ]; then
    packages+=("$owner")
  else
    echo "stage-runtime: copying unpackaged $lib" >&2
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  fi
done
if ((${#packages[@]})); then
  printf '%s\n' "${packages[@]}" | sort -u > "$package_list"
else
  : > "$package_list"
fi
echo "stage-runtime: ${#libs[@]} libraries from $(wc -l < "$package_list") packages" >&2
