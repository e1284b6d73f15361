/* painn_network.c: to come. */
#include "error.h"
