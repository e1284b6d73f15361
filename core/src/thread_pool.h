/*
 * thread_pool.h: threads that run one loop over rows at a time, each a contiguous share of the
 * rows, for the layers whose rows are independent (a pair's filter, an atom's update).
 *
 * The caller is thread 0 and takes the first share; the pool's threads take the others, and
 * between loops spin a fraction of a millisecond, then sleep. A loop returns when every share is done, so what the threads wrote is the
 * caller's to read. The pool may not be used by two callers at once (it belongs to a workspace).
 */
#ifndef MLFF_THREAD_POOL_H
#define MLFF_THREAD_POOL_H

#include <stddef.h>

#include "mlff/mlff.h"

typedef struct mlff_thread_pool mlff_thread_pool;

/* task(context, begin, end, thread): rows [begin, end) on thread `thread` in [0, size). */
typedef void (*mlff_rows_task)(void *context, size_t begin, size_t end, int thread);

/* A pool of num_threads >= 1 threads, the caller's included (so num_threads - 1 are started).
 * MLFF_ERROR_OUT_OF_MEMORY where a thread cannot be started (the others are stopped again). */
mlff_status mlff_thread_pool_create(int num_threads, mlff_thread_pool **pool, mlff_error *error);

/* Stops and joins the threads. NULL is allowed. */
void mlff_thread_pool_free(mlff_thread_pool *pool);

/* The threads a loop runs on, the caller's included: 1 for NULL. */
int mlff_thread_pool_size(const mlff_thread_pool *pool);

/* Lets the threads sleep now rather than spin for a next loop that is not coming soon (a workspace
 * calls it when an evaluation ends). The next loop wakes them. NULL is allowed. */
void mlff_thread_pool_rest(mlff_thread_pool *pool);

/* Runs task over rows [0, count), split into contiguous shares of at least min_rows_per_share
 * rows (fewer shares than threads where the rows are few: waking a thread costs microseconds),
 * share k to thread k. With one share, or pool NULL, the caller runs all of it. */
void mlff_thread_pool_for(mlff_thread_pool *pool, size_t count, size_t min_rows_per_share, mlff_rows_task task,
                          void *context);

#endif /* MLFF_THREAD_POOL_H */
