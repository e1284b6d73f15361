/*
 * async_copy.cu: copies from global into shared memory that run while the thread goes on
 * (cp.async, sm_80 and later), in groups that a thread commits and then waits for: the matrix
 * products' tiles (matmul.cu) and the messages' backward rows (student_painn/row_messages.cu).
 * Before sm_80 a copy is a plain load and store, done when the call returns, and the commits and
 * waits do nothing. On the host (tests/cuda/host_emulation, MLFF_COPIES_ON_HOST) a copy lands as
 * late as the waits allow, so that the tests see a wait missing or one group short.
 */
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define MLFF_ASYNC_COPIES 1
#endif

/** Copies Bytes (4 or 16) from global to shared memory asynchronously; zeros instead where !valid. */
template <int Bytes>
DEVICE inline void mlffCopyAsync(void* shared, const void* global, bool valid) {
#ifdef MLFF_ASYNC_COPIES
    const unsigned int to = (unsigned int) __cvta_generic_to_shared(shared);
    if (Bytes == 16)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(to), "l"(global), "r"(valid ? 16 : 0));
    else
        asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(to), "l"(global), "r"(valid ? 4 : 0));
#elif defined(MLFF_COPIES_ON_HOST)
    cudaOnHostCopyAsync(shared, global, Bytes, valid);
#else
    for (int k = 0; k < Bytes / 4; k++)
        ((int*) shared)[k] = valid ? ((const int*) global)[k] : 0;
#endif
}

DEVICE inline void mlffCommitCopies() {
#ifdef MLFF_ASYNC_COPIES
    asm volatile("cp.async.commit_group;");
#elif defined(MLFF_COPIES_ON_HOST)
    cudaOnHostCommitCopies();
#endif
}

/**
 * Waits until at most Pending of this thread's committed groups of copies are still in flight. A
 * barrier for the compiler too ("memory"): no read of what the copies write moves above it.
 */
template <int Pending>
DEVICE inline void mlffWaitCopies() {
#ifdef MLFF_ASYNC_COPIES
    asm volatile("cp.async.wait_group %0;" ::"n"(Pending) : "memory");
#elif defined(MLFF_COPIES_ON_HOST)
    cudaOnHostWaitCopies(Pending);
#endif
}
