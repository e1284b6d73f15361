/* thread_pool.c: see thread_pool.h. POSIX threads; one mutex guards the loop in hand. */
#include "thread_pool.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

typedef struct {
    mlff_thread_pool *pool;
    int index; /* 1 .. size - 1: the caller is thread 0 */
} worker_start;

struct mlff_thread_pool {
    int size;                /* threads, the caller's included */
    int started;             /* threads started (size - 1 once created) */
    pthread_t *threads;      /* (size - 1) */
    worker_start *starts;    /* (size - 1) */
    pthread_mutex_t lock;
    pthread_cond_t loop_ready, loop_done;
    unsigned long generation; /* bumped for each loop, so that a thread takes each loop once */
    int busy;                 /* the pool's threads still on the current loop */
    int stopping;
    /* the current loop */
    mlff_rows_task task;
    void *context;
    size_t count;
    int shares;
};

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
    pthread_mutex_lock(&pool->lock);
    for (;;) {
        while (pool->generation == seen && !pool->stopping) pthread_cond_wait(&pool->loop_ready, &pool->lock);
        if (pool->stopping) break;
        seen = pool->generation;
        pthread_mutex_unlock(&pool->lock);
        run_share(pool, start->index); /* the loop's fields do not change until every thread is done */
        pthread_mutex_lock(&pool->lock);
        if (--pool->busy == 0) pthread_cond_signal(&pool->loop_done);
    }
    pthread_mutex_unlock(&pool->lock);
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
    pthread_mutex_lock(&pool->lock);
    pool->stopping = 1;
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
    pthread_mutex_lock(&pool->lock);
    pool->task = task;
    pool->context = context;
    pool->count = count;
    pool->shares = (int)shares;
    pool->busy = pool->size - 1; /* every thread takes the loop; those past the shares do nothing */
    pool->generation++;
    pthread_cond_broadcast(&pool->loop_ready);
    pthread_mutex_unlock(&pool->lock);
    run_share(pool, 0);
    pthread_mutex_lock(&pool->lock);
    while (pool->busy > 0) pthread_cond_wait(&pool->loop_done, &pool->lock);
    pthread_mutex_unlock(&pool->lock);
}
