#include "error.h"

#include <stdarg.h>
#include <stdio.h>

mlff_status mlff_fail(mlff_error *error, mlff_status status, const char *format, ...) {
    if (error != NULL) {
        va_list args;
        va_start(args, format);
        error->status = status;
        vsnprintf(error->message, sizeof error->message, format, args);
        va_end(args);
    }
    return status;
}
