/* neighbors.c: to come. */
#include "error.h"
