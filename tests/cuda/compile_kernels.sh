#!/bin/bash
# Compiles platforms/cuda/kernels/*.cu the way OpenMM's CudaContext::createModule assembles a module
# (its typedefs of real/mixed for the precision, its KERNEL/DEVICE macros, then our defines, then the
# sources), in single, mixed and double precision and for a few model sizes, so that errors show
# without a GPU: with nvcc to a cubin (ptxas checks registers and shared memory too), and with
# NVRTC, OpenMM's runtime compiler, which rejects some code nvcc takes (a function without DEVICE,
# even one no kernel calls; a host header); and checks that every kernel waits for the launch ahead
# of it before it touches global memory (dependent_launch.cu). The parameter offsets are
# placeholders: only the code's validity is checked here.
#
# Usage: compile_kernels.sh KERNEL_DIR [NVCC [LIBNVRTC]]
#   LIBNVRTC defaults to the libnvrtc.so beside NVCC; CMake passes the toolkit's own, since the nvcc
#   on PATH may be a wrapper script outside the toolkit (as /usr/local/bin/nvcc is on CI).
#   With MLFF_KEEP_MODULES=DIR set, each variant's modules are kept there (nvcc's PTX and cubin,
#   NVRTC's PTX as .nvrtc.ptx), so that a change meant to leave the kernels as they were can be
#   shown to (cmp the files of two commits' runs). MLFF_KERNEL_DEFINES="NAME[=VALUE] ..." adds
#   defines to every variant, as the host adds a probe's (an #ifdef in the kernels, timed before it
#   is kept or taken out).
set -euo pipefail
kernels=${1:?kernel directory}
nvcc=${2:-nvcc}
nvrtc=${3:-}
if [ -z "$nvrtc" ]; then
    toolkit=$(dirname "$(dirname "$(command -v "$nvcc")")")
    nvrtc=$(ls "$toolkit"/lib64/libnvrtc.so "$toolkit"/targets/*/lib/libnvrtc.so 2>/dev/null | head -1 || true)
    [ -n "$nvrtc" ] || { echo "compile_kernels: no libnvrtc.so in $toolkit (beside $nvcc); pass LIBNVRTC" >&2; exit 1; }
fi
[ -f "$nvrtc" ] || { echo "compile_kernels: LIBNVRTC $nvrtc is not a file" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[ -z "${MLFF_KEEP_MODULES:-}" ] || mkdir -p "$MLFF_KEEP_MODULES"

preamble() { # precision
    case $1 in
        single) echo "typedef float real; typedef float2 real2; typedef float3 real3; typedef float4 real4;"
                echo "#define make_real4 make_float4"
                echo "typedef float mixed; typedef float2 mixed2; typedef float3 mixed3; typedef float4 mixed4;" ;;
        mixed)  echo "typedef float real; typedef float2 real2; typedef float3 real3; typedef float4 real4;"
                echo "#define make_real4 make_float4"
                echo "typedef double mixed; typedef double2 mixed2; typedef double3 mixed3; typedef double4 mixed4;" ;;
        double) echo "#define USE_DOUBLE_PRECISION"
                echo "typedef double real; typedef double2 real2; typedef double3 real3; typedef double4 real4;"
                echo "#define make_real4 make_double4"
                echo "typedef double mixed; typedef double2 mixed2; typedef double3 mixed3; typedef double4 mixed4;" ;;
    esac
    cat <<'COMMON'
#define KERNEL extern "C" __global__
#define DEVICE __device__
#define LOCAL __shared__
#define RESTRICT __restrict__
COMMON
}

defines() { # H K L batch block periodic tabulated precision replicas warpgroup
    local H=$1 K=$2 L=$3 define
    for define in ${MLFF_KERNEL_DEFINES:-}; do echo "#define ${define/=/ }"; done
    echo "#define MLFF_H $H"
    echo "#define MLFF_K $K"
    echo "#define MLFF_K_PADDED $(( (K + 31) / 32 * 32 ))"
    echo "#define MLFF_L $L"
    echo "#define MLFF_Z_MAX 100"
    echo "#define MLFF_CUTOFF 5"
    echo "#define MLFF_CUTOFF_SQUARED 25"
    echo "#define MLFF_EDGE_BATCH $4"
    echo "#define MLFF_BLOCK $5"
    echo "#define MLFF_NUM_ATOMS 12"
    echo "#define MLFF_NUM_REPLICAS 1"
    echo "#define MLFF_PADDED_NUM_ATOMS 32"
    echo "#define MLFF_KJ_PER_MOL_PER_EV 96.48533212331002"
    echo "#define MLFF_NUM_CELLS 128"
    echo "#define MLFF_CELL_SIZE 5.0005"
    echo "#define MLFF_CELL_SLICES 2"
    echo "#define MLFF_REPLICA_CELLS 128"
    echo "#define MLFF_BUCKET_BITS_XY 2"
    echo "#define MLFF_BUCKET_BITS_Z 3"
    # As the host sets them on sm_90 (which this script compiles for): tensor cores in float, and
    # clusters of the largest size up to 8 that gives each block whole fours of channels
    # (CudaCalcMLFFForceKernel::clusterSizeFor).
    [ "$8" != double ] && echo "#define MLFF_MATMUL_TENSOR_CORES 1"
    local size
    for size in 8 7 6 5 4 3 2; do
        local slice=$(( H / size ))
        if (( H % size == 0 && slice % 4 == 0 && $5 % slice == 0 && 4 * slice <= $5 )); then
            echo "#define MLFF_CLUSTER $size"; echo "#define MLFF_CLUSTER_FINDS_NEIGHBORS $(( 1 - $6 ))"; break
        fi
    done
    if [ "$6" = 1 ]; then
        echo "#define MLFF_PERIODIC 1"
        echo "#define MLFF_REDUCE_BY_WARP 1"
        echo "#define MLFF_REDUCE_THREADS 1024"
    else
        echo "#define MLFF_REDUCE_THREADS 256"
    fi
    # As CudaCalcMLFFForceKernel's readoutAtomsPerBlock: up to 32, A x 2.5H reals within 48 KB.
    local readout=32 real=$([ "$8" = double ] && echo 8 || echo 4)
    while (( readout > 4 && readout * 5 * H / 2 * real > 48 * 1024 )); do readout=$(( readout / 2 )); done
    echo "#define MLFF_READOUT_ATOMS $readout"
    if [ "$7" = 1 ]; then
        echo "#define MLFF_TABULATED 1"
        echo "#define MLFF_TABLE_NODES 1001"
        echo "#define MLFF_TABLE_SPACING 0.005"
        echo "#define MLFF_TABLE_INV_SPACING 200"
    fi
    # replica_messages.cu, as for benzenes: with the table, or with edge filters' rows
    [ "$9" = 1 ] && echo "#define MLFF_REPLICA_ATOMS 12" && echo "#define MLFF_REPLICA_SPLIT 2"
    # warpgroup_matmul.cu's products, as the host sets them on sm_90 in float: the update's
    # (${10} = update or all), and the filters' over pairs (all)
    if [ "${10}" != none ]; then
        echo "#define MLFF_WARPGROUPS 4"
        echo "#define MLFF_WARPGROUP_UPDATE 1"
        echo "#define MLFF_WARPGROUP_UPDATE_COLUMNS 64"
        # the readout's products too, at the H they take (CudaCalcMLFFForceKernel::chooseWarpgroupProducts)
        if [ "$H" = 64 ] || [ "$H" = 128 ]; then
            echo "#define MLFF_WARPGROUP_READOUT 1"; echo "#define MLFF_READOUT_WARPGROUPS 2"
        fi
    fi
    if [ "${10}" = all ]; then
        echo "#define MLFF_WARPGROUP_FILTER_FORWARD 1"
        echo "#define MLFF_WARPGROUP_FORWARD_COLUMNS $(( H % 128 == 0 ? 128 : 64 ))"
        echo "#define MLFF_WARPGROUP_FILTER_BACKWARD 1"
        echo "#define MLFF_WARPGROUP_BACKWARD_COLUMNS 64"
        # The filters' forward as one product (H = its columns here), as the plugin's default; its rows
        # stored through shared memory (the default with it) at H = 64, directly otherwise, so that
        # both ways of storing them compile
        echo "#define MLFF_FILTER_HIDDEN_IN_REGISTERS 1"
        [ "$H" = 64 ] && echo "#define MLFF_STAGED_FILTER_STORES 1"
    fi
    local n=0
    for name in EMBEDDING RBF_CENTERS RBF_WIDTHS HEAD_W0 HEAD_W0T HEAD_B0 HEAD_W2 HEAD_W2T HEAD_B2 HEAD_W4 HEAD_B4 BLOCKS BLOCK_STRIDE; do
        echo "#define MLFF_P_$name $((n += 1000))"
    done
    for name in FILTER_W0T FILTER_B0 FILTER_W0_PADDED FILTER_W2 FILTER_W2T FILTER_B2 UPDATE_W0T UPDATE_B0 UPDATE_W2 UPDATE_B2 MIXING \
                UPDATE_W2T_BY_CHANNEL UPDATE_B2_BY_CHANNEL UPDATE_W0_BY_CHANNEL UPDATE_W2T_SCALAR \
                FILTER_W2T_BY_FOURS FILTER_W2_BY_FOURS UPDATE_W0T_BY_FOURS UPDATE_W2T_BY_FOURS UPDATE_W2_BY_FOURS UPDATE_W0_BY_FOURS; do
        echo "#define MLFF_B_$name $((n += 1000))"
    done
}

# Every kernel may start before the launch ahead of it has finished (dependent_launch.cu), so
# each must wait for it (griddepcontrol.wait) before its first access to global memory: fails,
# naming the kernel, where a .entry of the PTX has none, or a global load, store or atomic first.
# The kernels named in the second argument may copy their weights in first, by bulk copies
# (cp.async.bulk; warpgroup_matmul.cu): the weights' images depend on no launch of a step.
waits_first() { # file.ptx [kernels that load weights first]
    awk -v weightsFirst=" ${2:-} " \
        '/^\.(visible )?\.entry/ { if (name != "" && !waited) bad = bad " " name; name = $NF; sub(/\(.*/, "", name); waited = 0; next }
         name != "" && !waited && /griddepcontrol\.wait/ { waited = 1; next }
         name != "" && !waited && /cp\.async\.bulk\.shared/ && index(weightsFirst, " " name " ") { next }
         name != "" && !waited && /(ld|st|atom|red)\.global|cp\.async/ { bad = bad " " name; name = ""; next }
         END { if (name != "" && !waited) bad = bad " " name
               if (bad != "") { print "kernels that touch global memory before griddepcontrol.wait, or never wait:" bad; exit 1 } }' "$1"
}

# The kernels that copy their weights in before the wait (warp-group products) where $1 = update or all.
weights_first() {
    local kernels=""
    [ "$1" != none ] && kernels="mlffUpdateHiddenForward mlffUpdateOutputForwardLast mlffUpdateHiddenBackward mlffUpdateHiddenBackwardLast"
    [ "$1" != none ] && kernels="$kernels mlffReadoutWarpgroup"
    [ "$1" = all ] && kernels="$kernels mlffEdgeFilterHidden mlffEdgeFilterOutput mlffEdgeFilterFromBasis"
    [ "$1" = all ] && kernels="$kernels mlffEdgeFilterBackwardToDistance mlffEdgeFilterBackwardToDistanceFirstBlock"
    echo "$kernels"
}

status=0
for precision in single mixed double; do
    batch=16; [ $precision = double ] && batch=4
    flags=""; [ $precision != double ] && flags="-ftz=true -prec-div=false -prec-sqrt=false"
    # The largest seed model (periodic, exact filters), the same with tabulated filters, the
    # trained defaults' size, all three with the tiled path, and the smallest test model (not
    # periodic; fused only: the tiled path needs H a multiple of 64); compiled to a cubin so that
    # ptxas checks registers and the 48 KB of static shared memory too. The last field: messages a
    # block per replica (replica_messages.cu), from the table or from edge filters' rows. In
    # single precision the tiled models take warp-group products (warpgroup_matmul.cu: the
    # update's, and the exact ones' filters too) and compile for sm_90a, as on an H100; in mixed,
    # mma.sync's.
    for model in "128 20 3 128 1 0 1 0" "128 20 3 128 0 1 1 1" "64 16 2 64 0 0 1 1" "8 6 2 32 0 0 0 0"; do
        set -- $model
        src=$work/mlff_${precision}_H$1_p$5_t$6.cu
        warpgroup=none; arch=sm_90
        if [ $precision = single ] && [ "$7" = 1 ]; then
            arch=sm_90a; warpgroup=$([ "$6" = 0 ] && echo all || echo update)
        fi
        { preamble $precision; defines $1 $2 $3 $batch $4 $5 $6 $precision $8 $warpgroup
          cat "$kernels/dependent_launch.cu" "$kernels/async_copy.cu" "$kernels/geometry.cu" "$kernels/neighbors.cu" \
              "$kernels/scan.cu" "$kernels/cell_list.cu" "$kernels/student_painn/layers.cu" \
              "$kernels/student_painn/forward.cu" "$kernels/student_painn/backward.cu" "$kernels/student_painn/cluster.cu"
          if [ "$7" = 1 ]; then
              cat "$kernels/matmul.cu"
              [ $warpgroup != none ] && cat "$kernels/warpgroup_matmul.cu"
              cat "$kernels/student_painn/tiled.cu" "$kernels/student_painn/edge_filters.cu" \
                  "$kernels/student_painn/table_rows.cu" "$kernels/student_painn/row_messages.cu" \
                  "$kernels/student_painn/replica_messages.cu"
          fi; } > "$src"
        label="$precision H=$1 K=$2 L=$3 periodic=$5 tabulated=$6 tiled=$7 replicas=$8 warpgroup=$warpgroup"
        # NVRTC with the options the plugin's modules get: OpenMM's -arch and --use_fast_math, then
        # the plugin's own -arch for warp-group products (CudaCalcMLFFForceKernel::initialize).
        nvrtc_options="-arch=compute_90 --use_fast_math"
        [ $arch = sm_90a ] && nvrtc_options="$nvrtc_options -arch=compute_90a"
        # ptxas reports warp-group products it had to serialize (C7520 for a divergent path, C7512
        # for too few registers, ...) as information, not as a warning: they would run, much
        # slower, so that fails here too.
        if "$nvcc" -cubin -arch=$arch $flags -Werror=all-warnings --keep --keep-dir "$work" -o "${src%.cu}.cubin" "$src" \
               2> "$work/err" && ! grep -q "wgmma.* serialized" "$work/err" &&
               waits_first "${src%.cu}.ptx" "$(weights_first $warpgroup)" > "$work/err" &&
               python3 "$(dirname "$0")/nvrtc_compile.py" "$nvrtc" "$src" --keep-ptx="${src%.cu}.nvrtc.ptx" \
                   $nvrtc_options > "$work/err" 2>&1; then
            echo "ok: $label"
            [ -z "${MLFF_KEEP_MODULES:-}" ] ||
                cp "${src%.cu}.ptx" "${src%.cu}.cubin" "${src%.cu}.nvrtc.ptx" "$MLFF_KEEP_MODULES"/
        else
            echo "FAILED: $label"
            cat "$work/err"; status=1
        fi
    done
done
exit $status
