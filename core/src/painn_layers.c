/* painn_layers.c: to come. */
#include "error.h"
