/*
 * cluster_exchange.cu: what the cluster kernels (student_painn/cluster.cu, a cluster of blocks per
 * atom; student_painn/replica_cluster.cu, a cluster per replica) share: the block's rank, the
 * cluster's barrier, and exchanges of arrays through distributed shared memory (sm_90 and later;
 * the host compiles this file, and defines MLFF_CLUSTER, only there).
 *
 * An exchange: each block writes its slice of an array into every block of the cluster with
 * st.async, which counts the bytes on the receiving block's mbarrier for that array; a block waits
 * on its own mbarrier until the whole array has arrived. No cluster-wide barrier, so no block waits
 * for the others' global stores or for a block that is not sending to it. An mbarrier that serves
 * several exchanges of one array completes a phase for each (parity 0, 1, 0, ...): the receiver
 * arms the next phase only after every one of its threads has seen this one complete.
 */

/** This block's rank in its cluster (1-D clusters of consecutive blocks). */
DEVICE inline int mlffClusterRank() {
    return blockIdx.x % MLFF_CLUSTER;
}

/**
 * The two halves of a cluster barrier that only says that every block of the cluster has started
 * and set up its mbarriers (no block may write into another's shared memory before): arrive once
 * they are set up, wait before the first write, so that the wait overlaps other work.
 */
DEVICE inline void mlffClusterArrive() {
    asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory");
}

DEVICE inline void mlffClusterWait() {
    asm volatile("barrier.cluster.wait.aligned;" ::: "memory");
}

/** The 32-bit shared-memory address of a pointer into this block's shared memory. */
DEVICE inline unsigned int mlffSharedAddress(const void* pointer) {
    unsigned int address;
    asm volatile("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }"
                 : "=r"(address) : "l"((unsigned long long) pointer));
    return address;
}

/** Arms this block's mbarrier `arrived` for its next phase: it completes once `bytes` have arrived (one thread). */
DEVICE inline void mlffExpectBytes(unsigned long long* arrived, unsigned int bytes) {
    asm volatile("{ .reg .b64 state; mbarrier.arrive.expect_tx.shared::cta.b64 state, [%0], %1; }"
                 ::"r"(mlffSharedAddress(arrived)), "r"(bytes) : "memory");
}

/**
 * By one thread, before the cluster's barrier that precedes every exchange: the mbarrier
 * `arrived` of an array, armed for its first phase (`bytes`). Follow the last call with
 * mlffPublishExchanges().
 */
DEVICE inline void mlffInitExchange(unsigned long long* arrived, unsigned int bytes) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(mlffSharedAddress(arrived)) : "memory");
    mlffExpectBytes(arrived, bytes);
}

/** Makes the mbarriers' initialisation visible to the other blocks' st.async (the thread that initialised them). */
DEVICE inline void mlffPublishExchanges() {
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}

/** array[index] = value in every block of the cluster, this one included, counted on their mbarrier `arrived`. */
DEVICE inline void mlffClusterSend(real* array, int index, real value, unsigned long long* arrived) {
    const unsigned int local = mlffSharedAddress(&array[index]), bar = mlffSharedAddress(arrived);
#pragma unroll
    for (int rank = 0; rank < MLFF_CLUSTER; rank++) {
        unsigned int remote, remoteBar;
        asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(local), "r"(rank));
        asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remoteBar) : "r"(bar), "r"(rank));
#ifdef USE_DOUBLE_PRECISION
        asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.b64 [%0], %1, [%2];"
                     ::"r"(remote), "l"(__double_as_longlong(value)), "r"(remoteBar) : "memory");
#else
        asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.b32 [%0], %1, [%2];"
                     ::"r"(remote), "r"(__float_as_uint(value)), "r"(remoteBar) : "memory");
#endif
    }
}

/**
 * Waits until the phase `parity` (0 for an array's first exchange, then 1, 0, ...) of this block's
 * mbarrier `arrived` is complete, then a block barrier (callers reuse scratch after it).
 */
DEVICE inline void mlffClusterReceive(unsigned long long* arrived, int parity = 0) {
    const unsigned int bar = mlffSharedAddress(arrived);
    asm volatile("{\n\t.reg .pred done;\n"
                 "MLFF_WAIT:\n\t"
                 "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n\t"
                 "@!done bra MLFF_WAIT;\n}" ::"r"(bar), "r"(parity) : "memory");
    __syncthreads();
}
