/* model_file.c: to come. */
#include "error.h"
