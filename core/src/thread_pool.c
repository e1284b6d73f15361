/* thread_pool.c: see thread_pool.h. POSIX threads and C11 atomics.
 *
 * Waking a sleeping thread and waiting for it to sleep again costs some 27 µs a loop on a 2-core VM
 * (a futex each way), as much as a share of many layers' rows takes. So threads spin a while
 * before they sleep: a worker that has finished a loop watches for the next for SPIN_NS, and the
 * caller watches for its loop's end as long, before either waits on a condition variable. Loops that
 * follow each other closely, a network's layers, then cost about a microsecond. After its last loop
 * the owner lets the threads sleep at once (mlff_thread_pool_rest), so that they do not spin on
 * cores that the rest of an MD step (OpenMM's other forces, on their own threads) may want. */
#define _POSIX_C_SOURCE 200809L
#include "thread_pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"

/* How long a thread spins for the next loop, or the caller for the end of its loop, before it sleeps. */
#define SPIN_NS 200000LL

typedef struct {
    mlff_thread_pool *pool;
    int index; /* 1 .. size - 1: the caller is thread 0 */
} worker_start;

struct mlff_thread_pool {
    int size;                 /* threads, the caller's included */
    int started;              /* threads started (size - 1 once created) */
    pthread_t *threads;       /* (size - 1) */
    worker_start *starts;     /* (size - 1) */
    atomic_ulong generation;  /* bumped for each loop, so that a thread takes each loop once */
    atomic_int busy;          /* the pool's threads still on the current loop */
    atomic_int stopping;
    atomic_int resting;       /* set by mlff_thread_pool_rest: sleep now rather than spin */
    /* the sleepers, and what wakes them */
    pthread_mutex_t lock;
    pthread_cond_t loop_ready, loop_done;
    int sleeping_workers;     /* under lock */
    int caller_sleeping;      /* under lock */
    /* the current loop: written before generation is bumped, read after it is seen */
    mlff_rows_task task;
    void *context;
    size_t count;
    int shares;
};

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void pause_briefly(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Spins while done(pool, argument) is false, for up to SPIN_NS; whether it became true. */
static int spin_until(int (*done)(mlff_thread_pool *, unsigned long), mlff_thread_pool *pool, unsigned long argument) {
    long long deadline = 0;
    for (unsigned spins = 1;; spins++) {
        if (done(pool, argument)) return 1;
        if (spins % 256 == 0) { /* the clock now and then: it costs more than a spin */
            long long t = now_ns();
            if (deadline == 0) deadline = t + SPIN_NS;
            else if (t > deadline) return 0;
        }
        pause_briefly();
    }
}

static int next_loop_or_stop(mlff_thread_pool *pool, unsigned long seen) {
    return atomic_load_explicit(&pool->generation, memory_order_acquire) != seen ||
           atomic_load_explicit(&pool->stopping, memory_order_acquire);
}

static int next_loop_or_rest(mlff_thread_pool *pool, unsigned long seen) {
    return next_loop_or_stop(pool, seen) || atomic_load_explicit(&pool->resting, memory_order_relaxed);
}

static int loop_done(mlff_thread_pool *pool, unsigned long unused) {
    (void)unused;
    return atomic_load_explicit(&pool->busy, memory_order_acquire) == 0;
}

/* Share k of the current loop: rows [count k / shares, count (k + 1) / shares); none past the shares. */
static void run_share(mlff_thread_pool *pool, int k) {
    if (k >= pool->shares) return;
    size_t begin = pool->count * (size_t)k / (size_t)pool->shares;
    size_t end = pool->count * (size_t)(k + 1) / (size_t)pool->shares;
    pool->task(pool->context, begin, end, k);
}

static void *worker(void *argument) {
    worker_start *start = argument;
    mlff_thread_pool *pool = start->pool;
    unsigned long seen = 0;
    for (;;) {
        if (!spin_until(next_loop_or_rest, pool, seen) || !next_loop_or_stop(pool, seen)) {
            pthread_mutex_lock(&pool->lock);
            pool->sleeping_workers++;
            while (!next_loop_or_stop(pool, seen)) pthread_cond_wait(&pool->loop_ready, &pool->lock);
            pool->sleeping_workers--;
            pthread_mutex_unlock(&pool->lock);
        }
        if (atomic_load_explicit(&pool->stopping, memory_order_acquire)) break;
        seen = atomic_load_explicit(&pool->generation, memory_order_acquire);
        run_share(pool, start->index); /* the loop's fields do not change until every thread is done */
        if (atomic_fetch_sub_explicit(&pool->busy, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&pool->lock); /* the last one out wakes the caller if it sleeps */
            if (pool->caller_sleeping) pthread_cond_signal(&pool->loop_done);
            pthread_mutex_unlock(&pool->lock);
        }
    }
    return NULL;
}

mlff_status mlff_thread_pool_create(int num_threads, mlff_thread_pool **created, mlff_error *error) {
    *created = NULL;
    if (num_threads < 1)
        return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT, "the number of threads is %d, expected >= 1", num_threads);
    mlff_thread_pool *pool = calloc(1, sizeof(mlff_thread_pool));
    if (pool == NULL)
        return mlff_fail(error, MLFF_ERROR_OUT_OF_MEMORY, "out of memory for a pool of %d threads", num_threads);
    pool->size = num_threads;
    atomic_init(&pool->generation, 0);
    atomic_init(&pool->busy, 0);
    atomic_init(&pool->stopping, 0);
    atomic_init(&pool->resting, 0);
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->loop_ready, NULL);
    pthread_cond_init(&pool->loop_done, NULL);
    if (num_threads > 1) {
        pool->threads = calloc((size_t)num_threads - 1, sizeof(pthread_t));
        pool->starts = calloc((size_t)num_threads - 1, sizeof(worker_start));
        if (pool->threads == NULL || pool->starts == NULL) {
            mlff_thread_pool_free(pool);
            return mlff_fail(error, MLFF_ERROR_OUT_OF_MEMORY, "out of memory for a pool of %d threads", num_threads);
        }
    }
    for (int k = 1; k < num_threads; k++) {
        pool->starts[k - 1] = (worker_start){pool, k};
        int failed = pthread_create(&pool->threads[k - 1], NULL, worker, &pool->starts[k - 1]);
        if (failed) {
            mlff_thread_pool_free(pool);
            return mlff_fail(error, MLFF_ERROR_OUT_OF_MEMORY, "could not start thread %d of %d: %s", k + 1,
                             num_threads, strerror(failed));
        }
        pool->started++;
    }
    *created = pool;
    return MLFF_OK;
}

void mlff_thread_pool_free(mlff_thread_pool *pool) {
    if (pool == NULL) return;
    atomic_store(&pool->stopping, 1);
    pthread_mutex_lock(&pool->lock);
    pthread_cond_broadcast(&pool->loop_ready);
    pthread_mutex_unlock(&pool->lock);
    for (int k = 0; k < pool->started; k++) pthread_join(pool->threads[k], NULL);
    pthread_cond_destroy(&pool->loop_done);
    pthread_cond_destroy(&pool->loop_ready);
    pthread_mutex_destroy(&pool->lock);
    free(pool->threads);
    free(pool->starts);
    free(pool);
}

int mlff_thread_pool_size(const mlff_thread_pool *pool) {
    return pool != NULL ? pool->size : 1;
}

void mlff_thread_pool_for(mlff_thread_pool *pool, size_t count, size_t min_rows_per_share, mlff_rows_task task,
                          void *context) {
    size_t shares = count / (min_rows_per_share > 0 ? min_rows_per_share : 1);
    if (shares > (size_t)mlff_thread_pool_size(pool)) shares = (size_t)mlff_thread_pool_size(pool);
    if (shares <= 1) {
        if (count > 0) task(context, 0, count, 0);
        return;
    }
    pool->task = task;
    pool->context = context;
    pool->count = count;
    pool->shares = (int)shares;
    atomic_store_explicit(&pool->resting, 0, memory_order_relaxed);
    /* every thread takes the loop; those past the shares do nothing */
    atomic_store_explicit(&pool->busy, pool->size - 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&pool->generation, 1, memory_order_release); /* publishes the fields above */
    pthread_mutex_lock(&pool->lock);
    if (pool->sleeping_workers > 0) pthread_cond_broadcast(&pool->loop_ready);
    pthread_mutex_unlock(&pool->lock);
    run_share(pool, 0);
    if (!spin_until(loop_done, pool, 0)) {
        pthread_mutex_lock(&pool->lock);
        pool->caller_sleeping = 1;
        while (!loop_done(pool, 0)) pthread_cond_wait(&pool->loop_done, &pool->lock);
        pool->caller_sleeping = 0;
        pthread_mutex_unlock(&pool->lock);
    }
}

void mlff_thread_pool_rest(mlff_thread_pool *pool) {
    if (pool != NULL) atomic_store_explicit(&pool->resting, 1, memory_order_relaxed);
}
