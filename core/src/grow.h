/* grow.h: arrays that grow, for the core's buffers that are reused from call to call. */
#ifndef MLFF_GROW_H
#define MLFF_GROW_H

#include <stdint.h>
#include <stdlib.h>

/* Makes *array hold `count` elements of `size` bytes (at least one element), keeping what it held;
 * 0, with *array left as it was, where that memory cannot be had or its size overflows. */
static inline int mlff_grow(void **array, size_t count, size_t size) {
    if (count == 0) count = 1; /* realloc(p, 0) may free p */
    if (count > SIZE_MAX / size) return 0;
    void *grown = realloc(*array, count * size);
    if (grown == NULL) return 0;
    *array = grown;
    return 1;
}

#endif /* MLFF_GROW_H */
