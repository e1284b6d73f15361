/* compute.c: to come. */
#include "error.h"
