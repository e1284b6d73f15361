#!/usr/bin/env bash
# Set-up for openmm-mlff on Debian 12: installs the Debian packages the build and tests need (by
# name, with apt-get, only those missing) and provides OpenMM >= 8.1 with its CUDA platform headers.
# Idempotent: a second run changes nothing and takes seconds.
#
# OpenMM, the first that applies:
#   1. OPENMM_DIR is set (for example OPENMM_DIR=$CONDA_PREFIX): use it as it is.
#   2. The prefix (MLFF_OPENMM_PREFIX, default /opt/openmm-8.1.2) already holds include/OpenMM.h
#      and lib/libOpenMM.so: nothing to do.
#   3. MLFF_OPENMM_TARBALL names a prebuilt tarball (the one of ../shared/deps): check it against
#      MLFF_OPENMM_SHA256SUMS (default: SHA256SUMS beside it) and unpack it at /.
#   4. Else build OpenMM 8.1.2 from Debian's source package into the prefix
#      (scripts/build-openmm-from-source.sh; about 10 minutes on 2 cores).
#
# usage: scripts/setup.sh                    set up
#        scripts/setup.sh --print-openmm-dir print the OpenMM folder the build should use, and stop
set -euo pipefail

readonly DEFAULT_PREFIX=/opt/openmm-8.1.2
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() { echo "setup: error: $*" >&2; exit 1; }
say() { echo "setup: $*"; }

openmm_prefix=${MLFF_OPENMM_PREFIX:-$DEFAULT_PREFIX}
openmm_dir=${OPENMM_DIR:-$openmm_prefix}
if [ "${1:-}" = --print-openmm-dir ]; then
    echo "$openmm_dir"
    exit 0
fi
[ $# -eq 0 ] || die "unknown argument '$1' (usage: $0 [--print-openmm-dir])"

# What the build, the tests and the tools need (clang-14 for the loader's fuzz target).
build_packages=(cmake ninja-build g++ libgtest-dev libcjson-dev swig doxygen python3-dev
                python3-numpy python3-pytest python3-onnx clang-14 xz-utils)
# What building OpenMM from its source package needs on top of those.
openmm_source_packages=(cython3 python3-setuptools dpkg-dev patch debian-archive-keyring)

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else die "'$*' needs root, and sudo is not installed"
    fi
}

# Installs those of the named packages that dpkg does not list as installed; runs apt-get update
# first, since a fresh machine may have no package lists at all.
install_missing() {
    local missing=() package
    for package in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$package")
        fi
    done
    if [ ${#missing[@]} -eq 0 ]; then
        return 0
    fi
    say "installing Debian packages: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

openmm_installed_at() { [ -f "$1/include/OpenMM.h" ] && [ -e "$1/lib/libOpenMM.so" ]; }

# OpenMM's version from the soname of libOpenMM (libOpenMM.so.8.1): OpenMM has no version header.
openmm_version_at() {
    readelf -d "$1/lib/libOpenMM.so" 2>/dev/null | sed -n 's/.*Library soname: \[libOpenMM\.so\.\([0-9.]*\)\].*/\1/p'
}

check_openmm() {
    local dir=$1 version major minor
    openmm_installed_at "$dir" || die "no OpenMM at $dir (expected include/OpenMM.h and lib/libOpenMM.so)"
    version=$(openmm_version_at "$dir")
    [ -n "$version" ] || die "cannot read OpenMM's version from the soname of $dir/lib/libOpenMM.so"
    major=${version%%.*}
    minor=${version#*.}; minor=${minor%%.*}
    if [ "$major" -lt 8 ] || { [ "$major" -eq 8 ] && [ "${minor:-0}" -lt 1 ]; }; then
        die "OpenMM at $dir is $version; openmm-mlff needs 8.1 or newer"
    fi
    if [ -f "$dir/include/openmm/cuda/CudaContext.h" ]; then
        say "OpenMM $version at $dir (with the CUDA platform headers)"
    else
        say "OpenMM $version at $dir, without the CUDA platform headers (include/openmm/cuda): the CUDA plugin will not be built"
    fi
}

unpack_tarball() {
    local tarball=$1 sums=${MLFF_OPENMM_SHA256SUMS:-$(dirname "$1")/SHA256SUMS} name expected actual
    [ -f "$tarball" ] || die "MLFF_OPENMM_TARBALL=$tarball does not exist"
    [ -f "$sums" ] || die "no checksum file for $tarball: expected $sums (set MLFF_OPENMM_SHA256SUMS)"
    name=$(basename "$tarball")
    expected=$(awk -v name="$name" '$2 == name || $2 == "*" name { print $1; exit }' "$sums")
    [ -n "$expected" ] || die "$sums has no checksum for $name"
    actual=$(sha256sum "$tarball" | awk '{ print $1 }')
    [ "$actual" = "$expected" ] || die "checksum mismatch for $tarball: $sums says $expected, the file is $actual"
    # The tarball holds /opt/openmm-8.1.2 (absolute library paths) and the Python package of
    # /usr/bin/python3; it serves only that prefix.
    tar -tJf "$tarball" "${DEFAULT_PREFIX#/}/include/OpenMM.h" >/dev/null 2>&1 \
        || die "$tarball does not hold ${DEFAULT_PREFIX#/}/include/OpenMM.h"
    say "unpacking $tarball (checksum ok) at /"
    as_root tar -C / -xJf "$tarball"
}

install_missing "${build_packages[@]}"

if [ -n "${OPENMM_DIR:-}" ]; then
    say "using OPENMM_DIR=$OPENMM_DIR"
elif openmm_installed_at "$openmm_prefix"; then
    : # already there
elif [ -n "${MLFF_OPENMM_TARBALL:-}" ] && [ "$openmm_prefix" = "$DEFAULT_PREFIX" ]; then
    unpack_tarball "$MLFF_OPENMM_TARBALL"
else
    if [ -n "${MLFF_OPENMM_TARBALL:-}" ]; then
        say "not using MLFF_OPENMM_TARBALL: it unpacks to $DEFAULT_PREFIX, and the prefix is $openmm_prefix"
    fi
    say "building OpenMM from source into $openmm_prefix (about 10 minutes on 2 cores)"
    install_missing "${openmm_source_packages[@]}"
    as_root "$script_dir/build-openmm-from-source.sh" "$openmm_prefix"
fi
check_openmm "$openmm_dir"
