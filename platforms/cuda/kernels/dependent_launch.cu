/*
 * dependent_launch.cu: programmatic dependent launch (sm_90 and later). There the host launches
 * every kernel of this plugin so that its blocks may start before the launch ahead of it in the
 * stream has finished, and run what needs no result of it (shared memory set up, the cluster's
 * first barrier) while it does: a small system's step is a chain of short launches, and each
 * boundary costs about 2 us (docs/performance-log.md, "Exchanges by mbarrier").
 *
 * The rule that keeps this correct: every kernel calls mlffStartAfterPreviousLaunch() in every
 * block before it reads or writes global memory (tests/cuda/compile_kernels.sh checks each
 * kernel's PTX for it). Before sm_90 it compiles to nothing and launches are ordinary.
 */

/**
 * Waits until the launch ahead of this one in the stream has completed and its writes are
 * visible, then lets the launch behind this one start its blocks (which wait here in turn, so
 * at most two launches hold SMs at once). Called by all threads of the block.
 */
DEVICE inline void mlffStartAfterPreviousLaunch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/**
 * MLFF_CUDA_TIMING=timeline (CudaLaunchTimer): the GPU's clock (ns) once the launch ahead of this
 * one in the stream has finished, into *stamp; a block of one thread. It lets the launch behind it
 * start its blocks before it waits, so that those still start while the launch ahead runs, as they
 * do without stamps.
 */
KERNEL void mlffStampTime(unsigned long long* stamp) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
    unsigned long long now = 0; // 0 in the host emulation (tests/cuda/host_emulation), which never stamps
#if defined(__CUDA_ARCH__)
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
#endif
    *stamp = now;
}
