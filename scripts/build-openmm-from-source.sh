#!/usr/bin/env bash
# Builds OpenMM 8.1.2 from Debian's source package into a prefix, the recipe of
# ../shared/deps/README.md: upstream sources of the trixie package `openmm`, the CUDA 13 patch,
# -O2 (GCC 12 crashes at -O3 in CommonKernels.cpp), the CUDA platform when nvcc exists,
# the C and Fortran wrappers and the Python package.
#
# usage: scripts/build-openmm-from-source.sh PREFIX
#   MLFF_OPENMM_BUILD_DIR  where sources and build tree go (default: a fresh /tmp/openmm-build.XXXXXX,
#                          removed on success)
#   MLFF_OPENMM_PYTHON     install the Python package: "system" (setup.py install into
#                          /usr/local/lib/python3.*/dist-packages), "prefix" (into PREFIX/python, put
#                          its dist-packages on PYTHONPATH) or "no". Default: system when PREFIX is
#                          /opt/openmm-8.1.2, the layout of the prebuilt tarball, else prefix, so a
#                          trial build never replaces the Python package others use.
# Needs root (or write access to PREFIX) and the build packages setup.sh installs first.
set -euo pipefail

readonly OPENMM_UPSTREAM_VERSION=8.1.2
readonly OPENMM_DEB_VERSION=${MLFF_OPENMM_DEB_VERSION:-8.1.2+dfsg-12}   # the revision ../shared/deps was built from
readonly DEFAULT_PREFIX=/opt/openmm-8.1.2
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() { echo "build-openmm-from-source: error: $*" >&2; exit 1; }
say() { echo "build-openmm-from-source: $*"; }

[ $# -eq 1 ] || die "usage: $0 PREFIX"
prefix=$1
case "$prefix" in /*) ;; *) die "PREFIX must be an absolute path, got '$prefix'" ;; esac
python_mode=${MLFF_OPENMM_PYTHON:-}
if [ -z "$python_mode" ]; then
    if [ "$prefix" = "$DEFAULT_PREFIX" ]; then python_mode=system; else python_mode=prefix; fi
fi
case "$python_mode" in system|prefix|no) ;; *) die "MLFF_OPENMM_PYTHON must be system, prefix or no, got '$python_mode'" ;; esac
patch_file=$script_dir/openmm-8.1.2-cuda13.patch
[ -f "$patch_file" ] || die "missing $patch_file"
for tool in apt-get dpkg-source cmake ninja patch /usr/bin/python3; do
    command -v "$tool" >/dev/null || die "'$tool' not found: run scripts/setup.sh (it installs the build packages)"
done

if [ -n "${MLFF_OPENMM_BUILD_DIR:-}" ]; then
    work=$MLFF_OPENMM_BUILD_DIR
    mkdir -p "$work"
    keep_work=1
else
    work=$(mktemp -d /tmp/openmm-build.XXXXXX)
    keep_work=0
fi
say "building OpenMM $OPENMM_UPSTREAM_VERSION into $prefix (work dir $work, Python package: $python_mode)"

# 1. deb-src entries in a private list, on the mirror this machine already uses, so the
#    system's apt configuration stays as it is.
sources=/etc/apt/sources.list.d/debian.sources
mirror=""
if [ -f "$sources" ]; then
    # The first URI that is not the security archive (which holds no trixie/main Sources).
    mirror=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' "$sources")
fi
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
    mirror=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' /etc/apt/sources.list)
fi
[ -n "$mirror" ] || die "no Debian mirror found in $sources or /etc/apt/sources.list"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -f "$keyring" ] || die "missing $keyring (package debian-archive-keyring)"

apt_dir=$work/apt
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
# trixie as the README says; unstable too, because the README's revision (-12) went there after
# trixie's release and some mirrors keep only the newest revision's files.
for suite in trixie unstable; do
    echo "deb-src [signed-by=$keyring] $mirror $suite main"
done > "$apt_dir/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
          -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache")
say "fetching the source indexes of trixie and unstable from $mirror"
apt-get "${apt_opts[@]}" -q update

# 2. The source package: the README's revision first, then any other revision of the same upstream
#    version. Every revision shares one upstream tarball, the only part used here.
versions=$(apt-cache "${apt_opts[@]}" showsrc openmm | awk '/^Version:/ { print $2 }' \
           | grep "^$OPENMM_UPSTREAM_VERSION+dfsg-" | sort -u || true)
candidates="$(grep -Fx -e "$OPENMM_DEB_VERSION" <<< "$versions" || true) $(grep -Fvx -e "$OPENMM_DEB_VERSION" <<< "$versions" || true)"
dsc=""
for deb_version in $candidates; do
    say "downloading the source package openmm $deb_version"
    rm -f "$work"/openmm_*
    if (cd "$work" && apt-get "${apt_opts[@]}" -q source --download-only "openmm=$deb_version"); then
        dsc=$work/openmm_$deb_version.dsc
        break
    fi
    say "could not download openmm $deb_version, trying the next revision"
done
[ -n "$dsc" ] || die "no source package openmm $OPENMM_UPSTREAM_VERSION+dfsg-* could be downloaded from $mirror (found: ${candidates:-none})"
src=$work/openmm-src
rm -rf "$src"
# dpkg-source checks every file against the .dsc (whose checksums come from the signed index).
# Debian's own patches are skipped: they fit Debian's layout (system SIMDe, a plugin directory under
# /usr/lib/<multiarch>), not a prefix; the prebuilt tarball has none of them either.
dpkg-source --skip-patches -x "$dsc" "$src" >/dev/null
(cd "$src" && patch -p1 --forward < "$patch_file")

# 3. Configure and build.
cuda_lib=OFF
cuda_opts=()
nvcc_path=$(command -v nvcc || true)
[ -n "$nvcc_path" ] || [ ! -x /usr/local/cuda/bin/nvcc ] || nvcc_path=/usr/local/cuda/bin/nvcc
if [ -n "$nvcc_path" ]; then
    cuda_lib=ON
    cuda_opts=(-DCUDAToolkit_ROOT="$(dirname "$(dirname "$(readlink -f "$nvcc_path")")")")
    say "CUDA platform: on (nvcc at $nvcc_path)"
else
    say "CUDA platform: off (no nvcc found)"
fi
build=$work/build
cmake -S "$src" -B "$build" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CXX_FLAGS_RELEASE="-O2 -DNDEBUG" -DCMAKE_C_FLAGS_RELEASE="-O2 -DNDEBUG" \
    -DCMAKE_INSTALL_PREFIX="$prefix" \
    -DOPENMM_BUILD_OPENCL_LIB=OFF -DOPENMM_BUILD_PME_PLUGIN=OFF \
    -DOPENMM_BUILD_EXAMPLES=OFF -DBUILD_TESTING=OFF \
    -DOPENMM_BUILD_C_AND_FORTRAN_WRAPPERS=ON \
    -DOPENMM_BUILD_CUDA_LIB="$cuda_lib" "${cuda_opts[@]}" \
    -DOPENMM_BUILD_AMOEBA_PLUGIN=ON -DOPENMM_BUILD_RPMD_PLUGIN=ON -DOPENMM_BUILD_DRUDE_PLUGIN=ON \
    -DOPENMM_BUILD_PYTHON_WRAPPERS="$([ "$python_mode" = no ] && echo OFF || echo ON)" \
    -DPython3_EXECUTABLE=/usr/bin/python3 -DPYTHON_EXECUTABLE=/usr/bin/python3
jobs=${MLFF_OPENMM_JOBS:-$(nproc)}
ninja -C "$build" -j "$jobs"
ninja -C "$build" install

# 4. The Python package.
case "$python_mode" in
    system) ninja -C "$build" PythonInstall ;;
    prefix)
        rm -rf "$prefix/python"
        DESTDIR=$prefix/python ninja -C "$build" PythonInstall
        site=$(ls -d "$prefix"/python/usr/local/lib/python3*/dist-packages 2>/dev/null | head -n 1)
        [ -n "$site" ] && [ -d "$site/openmm" ] || die "the Python package was not installed under $prefix/python"
        say "Python package in $site: export PYTHONPATH=$site\${PYTHONPATH:+:\$PYTHONPATH}" ;;
    no) ;;
esac

[ -f "$prefix/include/OpenMM.h" ] && [ -e "$prefix/lib/libOpenMM.so" ] || die "install into $prefix is incomplete"
[ "$cuda_lib" = OFF ] || [ -f "$prefix/include/openmm/cuda/CudaContext.h" ] \
    || die "CUDA platform headers missing from $prefix/include/openmm/cuda"
[ "$keep_work" = 1 ] || rm -rf "$work"
say "done: OpenMM $OPENMM_UPSTREAM_VERSION in $prefix"
