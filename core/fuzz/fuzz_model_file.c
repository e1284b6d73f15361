/*
 * fuzz_model_file: libFuzzer target for the model file loader. Any bytes must give either a
 * model or an error with a message, never a crash, a hang, undefined behaviour or a leak
 * (built with -fsanitize=fuzzer,address,undefined; see CMakeLists.txt).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "mlff/mlff.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mlff_model *model = NULL;
    mlff_error error;
    memset(&error, 0, sizeof error);
    const mlff_status status = mlff_model_load_memory(data, size, "<fuzz input>", &model, &error);
    if (status == MLFF_OK) {
        /* A loaded model is self-consistent: touch every parameter the getters promise. */
        const mlff_student_painn *p = mlff_model_student_painn(model);
        volatile double sum = p->cutoff + p->embedding[(size_t)(p->max_atomic_number + 1) * (size_t)p->hidden_channels - 1] +
                              p->rbf_widths[p->num_rbf - 1] + p->head_b4[0] +
                              p->blocks[p->num_blocks - 1].mixing[8] +
                              p->blocks[p->num_blocks - 1].update_b2[3 * p->hidden_channels - 1];
        (void)sum;
        mlff_model_free(model);
    } else if (model != NULL || error.message[0] == '\0' || memchr(error.message, '\0', sizeof error.message) == NULL) {
        __builtin_trap(); /* a failure must leave *model NULL and say why */
    }
    return 0;
}
