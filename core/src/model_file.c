/*
 * model_file.c: reads a student-painn model file (safetensors, docs/model-file.md) into an
 * mlff_model, checking everything: a malformed file gets an error naming the file, the
 * tensor and what was expected versus found, never a crash, a hang or a leak.
 *
 * Layout: 8-byte little-endian header length N, N bytes of JSON header, then the data
 * section. Each header entry other than "__metadata__" is a tensor
 * {"dtype": "F32"|"F64", "shape": [...], "data_offsets": [begin, end]} with offsets
 * relative to the data section.
 *
 * Every size is bounded by the file size before it is multiplied, so no computation overflows.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "model.h"

#define FORMAT_NAME "openmm-mlff"
#define FORMAT_VERSION "1"
#define LENGTH_UNIT "angstrom"
#define ENERGY_UNIT "eV"
#define MAX_RANK 8 /* dims kept for messages; known tensors have rank 1 or 2 */

/* ------------------------------------------------------------------------------------ */
/* The tensors of the architecture                                                      */

/* A dimension as a multiple of a hyperparameter: size = factor * symbol / divisor. */
typedef enum { SYM_ONE, SYM_H, SYM_K, SYM_ZROWS } dim_symbol;
typedef struct {
    dim_symbol symbol;
    int factor, divisor;
} dim_spec;

typedef struct {
    const char *name; /* global name, or suffix after "interactions.l." */
    int rank;
    dim_spec dims[2];
    const char *shape_text; /* for messages */
} tensor_spec;

enum {
    G_EMBEDDING, G_RBF_CENTERS, G_RBF_WIDTHS,
    G_HEAD_W0, G_HEAD_B0, G_HEAD_W2, G_HEAD_B2, G_HEAD_W4, G_HEAD_B4,
    NUM_GLOBAL
};
enum {
    B_FILTER_W0, B_FILTER_B0, B_FILTER_W2, B_FILTER_B2,
    B_UPDATE_W0, B_UPDATE_B0, B_UPDATE_W2, B_UPDATE_B2, B_MIXING,
    NUM_BLOCK_KINDS
};

static const tensor_spec global_specs[NUM_GLOBAL] = {
    {"embedding.weight", 2, {{SYM_ZROWS, 1, 1}, {SYM_H, 1, 1}}, "[Z_max+1, H]"},
    {"rbf.centers", 1, {{SYM_K, 1, 1}}, "[K]"},
    {"rbf.widths", 1, {{SYM_K, 1, 1}}, "[K]"},
    {"energy_head.0.weight", 2, {{SYM_H, 1, 2}, {SYM_H, 1, 1}}, "[H/2, H]"},
    {"energy_head.0.bias", 1, {{SYM_H, 1, 2}}, "[H/2]"},
    {"energy_head.2.weight", 2, {{SYM_H, 1, 4}, {SYM_H, 1, 2}}, "[H/4, H/2]"},
    {"energy_head.2.bias", 1, {{SYM_H, 1, 4}}, "[H/4]"},
    {"energy_head.4.weight", 2, {{SYM_ONE, 1, 1}, {SYM_H, 1, 4}}, "[1, H/4]"},
    {"energy_head.4.bias", 1, {{SYM_ONE, 1, 1}}, "[1]"},
};

static const tensor_spec block_specs[NUM_BLOCK_KINDS] = {
    {"message.rbf_to_scalar.0.weight", 2, {{SYM_H, 1, 1}, {SYM_K, 1, 1}}, "[H, K]"},
    {"message.rbf_to_scalar.0.bias", 1, {{SYM_H, 1, 1}}, "[H]"},
    {"message.rbf_to_scalar.2.weight", 2, {{SYM_H, 3, 1}, {SYM_H, 1, 1}}, "[3H, H]"},
    {"message.rbf_to_scalar.2.bias", 1, {{SYM_H, 3, 1}}, "[3H]"},
    {"update.update_mlp.0.weight", 2, {{SYM_H, 1, 1}, {SYM_H, 2, 1}}, "[H, 2H]"},
    {"update.update_mlp.0.bias", 1, {{SYM_H, 1, 1}}, "[H]"},
    {"update.update_mlp.2.weight", 2, {{SYM_H, 3, 1}, {SYM_H, 1, 1}}, "[3H, H]"},
    {"update.update_mlp.2.bias", 1, {{SYM_H, 3, 1}}, "[3H]"},
    {"update.mixing_matrix", 2, {{SYM_ONE, 3, 1}, {SYM_ONE, 3, 1}}, "[3, 3]"},
};

/* A tensor entry of the header, once its dtype, shape and offsets are known to be well formed. */
typedef struct {
    const char *name;     /* points into the parsed header */
    int present;
    size_t item_size;     /* 4 (F32) or 8 (F64) */
    int rank;
    size_t dims[MAX_RANK]; /* the first min(rank, MAX_RANK) */
    size_t count;          /* product of all dims */
    size_t begin, end;     /* byte offsets in the data section */
} tensor_entry;

/* Slot of a tensor: globals first, then NUM_BLOCK_KINDS per block. */
static size_t block_slot(size_t block, int kind) { return NUM_GLOBAL + block * NUM_BLOCK_KINDS + (size_t)kind; }

static const tensor_spec *slot_spec(size_t slot) {
    return slot < NUM_GLOBAL ? &global_specs[slot] : &block_specs[(slot - NUM_GLOBAL) % NUM_BLOCK_KINDS];
}

/* The state of one load: what to free, and the name to put in messages. */
typedef struct {
    const char *file;            /* path or caller's name, for messages */
    const unsigned char *bytes;  /* (size) */
    size_t size;
    const unsigned char *data;   /* the data section, (data_size) */
    size_t data_size;
    char *header_text;           /* (N + 1), NUL-terminated copy of the header */
    cJSON *header;
    tensor_entry *entries;       /* (num_slots) */
    size_t num_slots;
    size_t num_blocks_seen;      /* 1 + largest block index of any tensor, 0 if none */
    mlff_model *model;
} loader;

static void loader_free(loader *ld) {
    free(ld->header_text);
    cJSON_Delete(ld->header);
    free(ld->entries);
    mlff_model_free(ld->model);
}

/* ------------------------------------------------------------------------------------ */
/* Reading the header                                                                    */

static uint64_t read_le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}

static const char *json_type_name(const cJSON *item) {
    if (item == NULL) return "nothing";
    if (cJSON_IsString(item)) return "a string";
    if (cJSON_IsNumber(item)) return "a number";
    if (cJSON_IsArray(item)) return "an array";
    if (cJSON_IsObject(item)) return "an object";
    if (cJSON_IsBool(item)) return "a boolean";
    if (cJSON_IsNull(item)) return "null";
    return "an invalid value";
}

/* A JSON number that is a non-negative integer, exactly representable (<= 2^53) and a size_t. */
static int json_size(const cJSON *item, size_t *out) {
    if (!cJSON_IsNumber(item)) return 0;
    const double v = item->valuedouble;
    const double limit = (double)SIZE_MAX < 9007199254740992.0 ? (double)SIZE_MAX : 9007199254740992.0;
    if (!(v >= 0.0) || v > limit || v != floor(v)) return 0;
    *out = (size_t)v;
    return 1;
}

/* Parses "interactions.<l>.<suffix>" or a global name into a slot; 0 if the name is unknown.
 * Block indices larger than `max_block` can't be consecutive from 0 and count as unknown. */
static int parse_tensor_name(const char *name, size_t max_block, size_t *slot, int *bad_block_index) {
    *bad_block_index = 0;
    for (int g = 0; g < NUM_GLOBAL; ++g)
        if (strcmp(name, global_specs[g].name) == 0) {
            *slot = (size_t)g;
            return 1;
        }
    static const char prefix[] = "interactions.";
    if (strncmp(name, prefix, sizeof prefix - 1) != 0) return 0;
    const char *p = name + sizeof prefix - 1;
    if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] >= '0' && p[1] <= '9')) return 0; /* digits, no leading 0 */
    size_t block = 0;
    for (; *p >= '0' && *p <= '9'; ++p) {
        const size_t digit = (size_t)(*p - '0');
        if (digit > max_block || block > (max_block - digit) / 10) { /* would exceed max_block: not a consecutive block */
            *bad_block_index = 1;
            block = max_block + 1;
            while (*p >= '0' && *p <= '9') ++p;
            break;
        }
        block = block * 10 + digit;
    }
    if (*p != '.') return 0;
    ++p;
    for (int k = 0; k < NUM_BLOCK_KINDS; ++k)
        if (strcmp(p, block_specs[k].name) == 0) {
            if (*bad_block_index) return 0;
            *slot = block_slot(block, k);
            return 1;
        }
    *bad_block_index = 0;
    return 0;
}

static void format_shape(const tensor_entry *e, char *out, size_t out_size) {
    size_t used = 0;
    out[0] = '\0';
    used += (size_t)snprintf(out + used, out_size - used, "[");
    for (int d = 0; d < e->rank && d < MAX_RANK && used < out_size; ++d)
        used += (size_t)snprintf(out + used, out_size - used, "%s%zu", d ? ", " : "", e->dims[d]);
    if (used < out_size) snprintf(out + used, out_size - used, "%s]", e->rank > MAX_RANK ? ", ..." : "");
}

/* Checks one tensor entry's dtype, shape and data_offsets, and stores them. */
static mlff_status read_tensor_entry(loader *ld, const cJSON *item, tensor_entry *e, mlff_error *error) {
    const char *name = item->string;
    if (!cJSON_IsObject(item))
        return mlff_fail(error, MLFF_ERROR_FORMAT,
                         "model file '%s': tensor '%.200s' is %s, expected an object with dtype, shape and data_offsets",
                         ld->file, name, json_type_name(item));

    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    if (!cJSON_IsString(dtype))
        return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': tensor '%.200s' has %s for dtype, expected a string "
                         "\"F32\" or \"F64\"", ld->file, name, dtype ? json_type_name(dtype) : "no dtype");
    if (strcmp(dtype->valuestring, "F32") == 0) e->item_size = 4;
    else if (strcmp(dtype->valuestring, "F64") == 0) e->item_size = 8;
    else
        return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': tensor '%.200s' has dtype '%.32s', expected F32 or F64",
                         ld->file, name, dtype->valuestring);

    /* Shape: non-negative integers whose product, times the item size, fits the data section. */
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    if (!cJSON_IsArray(shape))
        return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': tensor '%.200s' has %s for shape, expected an array of "
                         "non-negative integers", ld->file, name, shape ? json_type_name(shape) : "no shape");
    e->rank = 0;
    e->count = 1;
    int has_zero = 0;
    const cJSON *dim = NULL;
    cJSON_ArrayForEach(dim, shape) {
        size_t n = 0;
        if (!json_size(dim, &n))
            return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': tensor '%.200s' has %s in its shape, expected "
                             "non-negative integers", ld->file, name,
                             cJSON_IsNumber(dim) ? "a negative, fractional or huge number" : json_type_name(dim));
        if (e->rank == 1000)
            return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': tensor '%.200s' has more than 1000 dimensions",
                             ld->file, name);
        if (e->rank < MAX_RANK) e->dims[e->rank] = n;
        ++e->rank;
        /* Saturating product: SIZE_MAX means "more than fits", which no data section matches. */
        if (n == 0) has_zero = 1;
        else e->count = e->count > SIZE_MAX / n ? SIZE_MAX : e->count * n;
    }
    if (has_zero) e->count = 0;

    const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2)
        return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': tensor '%.200s' has %s for data_offsets, expected an "
                         "array [begin, end]", ld->file, name, offsets ? json_type_name(offsets) : "no data_offsets");
    const cJSON *begin = cJSON_GetArrayItem(offsets, 0), *end = cJSON_GetArrayItem(offsets, 1);
    if (!json_size(begin, &e->begin) || !json_size(end, &e->end))
        return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': tensor '%.200s' has data_offsets that are not two "
                         "non-negative integers", ld->file, name);
    if (e->begin > e->end)
        return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': tensor '%.200s' has decreasing data_offsets [%zu, %zu], "
                         "expected begin <= end", ld->file, name, e->begin, e->end);
    if (e->end > ld->data_size)
        return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': tensor '%.200s' has data_offsets [%zu, %zu] beyond the "
                         "end of the data section (%zu bytes)", ld->file, name, e->begin, e->end, ld->data_size);
    /* Now begin <= end <= data_size, so the byte count can't overflow. */
    const size_t bytes = e->end - e->begin;
    if (e->count > bytes / e->item_size || e->count * e->item_size != bytes) {
        char found[160];
        format_shape(e, found, sizeof found);
        return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': tensor '%.200s' has %zu bytes in data_offsets [%zu, %zu], "
                         "expected %s bytes for shape %s of %s", ld->file, name, bytes, e->begin, e->end,
                         e->count == SIZE_MAX ? "more than SIZE_MAX" : "shape * dtype size", found, dtype->valuestring);
    }
    e->name = name;
    e->present = 1;
    return MLFF_OK;
}

static int compare_by_begin(const void *a, const void *b) {
    const tensor_entry *x = *(const tensor_entry *const *)a, *y = *(const tensor_entry *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static mlff_status check_no_overlap(loader *ld, mlff_error *error) {
    size_t n = 0;
    for (size_t s = 0; s < ld->num_slots; ++s) n += ld->entries[s].present && ld->entries[s].end > ld->entries[s].begin;
    if (n < 2) return MLFF_OK;
    const tensor_entry **sorted = malloc(n * sizeof *sorted); /* (n) */
    if (sorted == NULL) return mlff_fail(error, MLFF_ERROR_OUT_OF_MEMORY, "model file '%s': out of memory", ld->file);
    n = 0;
    for (size_t s = 0; s < ld->num_slots; ++s)
        if (ld->entries[s].present && ld->entries[s].end > ld->entries[s].begin) sorted[n++] = &ld->entries[s];
    qsort(sorted, n, sizeof *sorted, compare_by_begin);
    mlff_status status = MLFF_OK;
    for (size_t i = 1; i < n && status == MLFF_OK; ++i)
        if (sorted[i]->begin < sorted[i - 1]->end)
            status = mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': tensor '%.120s' (bytes [%zu, %zu)) overlaps tensor "
                               "'%.120s' (bytes [%zu, %zu)), expected disjoint data_offsets", ld->file, sorted[i]->name,
                               sorted[i]->begin, sorted[i]->end, sorted[i - 1]->name, sorted[i - 1]->begin, sorted[i - 1]->end);
    free(sorted);
    return status;
}

/* ------------------------------------------------------------------------------------ */
/* Metadata                                                                              */

static mlff_status metadata_string(loader *ld, const cJSON *metadata, const char *key, const char *expected,
                                   const char **value, mlff_error *error) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(metadata, key);
    if (item == NULL)
        return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': metadata has no '%s', expected \"%s\"", ld->file, key,
                         expected);
    if (!cJSON_IsString(item))
        return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': metadata '%s' is %s, expected the string \"%s\"",
                         ld->file, key, json_type_name(item), expected);
    *value = item->valuestring;
    return MLFF_OK;
}

/* A decimal number in JSON's grammar ("5", "5.0", "4.5e0"), read without the C locale's help. */
static int parse_decimal(const char *text, double *value) {
    const char *p = text;
    if (*p == '-') ++p;
    if (*p < '0' || *p > '9') return 0;
    while (*p >= '0' && *p <= '9') ++p;
    if (*p == '.') {
        ++p;
        if (*p < '0' || *p > '9') return 0;
        while (*p >= '0' && *p <= '9') ++p;
    }
    if (*p == 'e' || *p == 'E') {
        ++p;
        if (*p == '+' || *p == '-') ++p;
        if (*p < '0' || *p > '9') return 0;
        while (*p >= '0' && *p <= '9') ++p;
    }
    if (*p != '\0') return 0;
    cJSON *number = cJSON_Parse(text); /* cJSON converts the decimal point to the locale's */
    const int ok = cJSON_IsNumber(number);
    if (ok) *value = number->valuedouble;
    cJSON_Delete(number);
    return ok;
}

static mlff_status read_metadata(loader *ld, double *cutoff, mlff_error *error) {
    const cJSON *metadata = cJSON_GetObjectItemCaseSensitive(ld->header, "__metadata__");
    if (metadata == NULL)
        return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': header has no __metadata__, expected format \"%s\" "
                         "(is this an openmm-mlff model? convert it with tools/mlff-convert)", ld->file, FORMAT_NAME);
    if (!cJSON_IsObject(metadata))
        return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': __metadata__ is %s, expected an object of strings",
                         ld->file, json_type_name(metadata));
    const cJSON *item = NULL;
    cJSON_ArrayForEach(item, metadata) {
        if (!cJSON_IsString(item))
            return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': metadata '%.200s' is %s, expected a string",
                             ld->file, item->string, json_type_name(item));
    }

    const char *value = NULL;
    mlff_status status;
    if ((status = metadata_string(ld, metadata, "format", FORMAT_NAME, &value, error)) != MLFF_OK) return status;
    if (strcmp(value, FORMAT_NAME) != 0)
        return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': metadata format is \"%.100s\", expected \"%s\"", ld->file,
                         value, FORMAT_NAME);
    if ((status = metadata_string(ld, metadata, "format_version", FORMAT_VERSION, &value, error)) != MLFF_OK) return status;
    if (strcmp(value, FORMAT_VERSION) != 0)
        return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': format_version is \"%.100s\", expected \"%s\" (the only "
                         "version this library reads)", ld->file, value, FORMAT_VERSION);
    if ((status = metadata_string(ld, metadata, "architecture", MLFF_ARCHITECTURE_STUDENT_PAINN, &value, error)) != MLFF_OK)
        return status;
    if (strcmp(value, MLFF_ARCHITECTURE_STUDENT_PAINN) != 0)
        return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': architecture is \"%.100s\", expected \"%s\" (the only "
                         "architecture this library knows)", ld->file, value, MLFF_ARCHITECTURE_STUDENT_PAINN);
    if ((status = metadata_string(ld, metadata, "length_unit", LENGTH_UNIT, &value, error)) != MLFF_OK) return status;
    if (strcmp(value, LENGTH_UNIT) != 0)
        return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': length_unit is \"%.100s\", expected \"%s\"", ld->file,
                         value, LENGTH_UNIT);
    if ((status = metadata_string(ld, metadata, "energy_unit", ENERGY_UNIT, &value, error)) != MLFF_OK) return status;
    if (strcmp(value, ENERGY_UNIT) != 0)
        return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': energy_unit is \"%.100s\", expected \"%s\"", ld->file,
                         value, ENERGY_UNIT);
    if ((status = metadata_string(ld, metadata, "cutoff", "a cutoff in angstrom such as 5.0", &value, error)) != MLFF_OK)
        return status;
    if (!parse_decimal(value, cutoff))
        return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': cutoff is \"%.100s\", expected a decimal number of "
                         "angstrom such as \"5.0\"", ld->file, value);
    if (!isfinite(*cutoff) || !(*cutoff > 0.0))
        return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': cutoff is \"%.100s\", expected a finite number > 0",
                         ld->file, value);
    return MLFF_OK;
}

/* ------------------------------------------------------------------------------------ */
/* Tensors                                                                               */

/* Reads every tensor entry of the header into its slot; rejects unknown and repeated names. */
static mlff_status read_tensor_entries(loader *ld, mlff_error *error) {
    size_t num_entries = 0;
    const cJSON *item = NULL;
    cJSON_ArrayForEach(item, ld->header) num_entries += strcmp(item->string, "__metadata__") != 0;

    /* A block index can be at most num_entries: each block has at least one tensor. */
    const size_t max_block = num_entries;
    ld->num_slots = NUM_GLOBAL + (max_block + 1) * NUM_BLOCK_KINDS; /* <= 10 * header bytes: no overflow */
    ld->entries = calloc(ld->num_slots, sizeof *ld->entries);
    if (ld->entries == NULL) return mlff_fail(error, MLFF_ERROR_OUT_OF_MEMORY, "model file '%s': out of memory", ld->file);

    int metadata_seen = 0;
    cJSON_ArrayForEach(item, ld->header) {
        if (strcmp(item->string, "__metadata__") == 0) {
            if (metadata_seen++)
                return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': header has __metadata__ twice, expected once",
                                 ld->file);
            continue;
        }
        size_t slot = 0;
        int bad_block_index = 0;
        if (!parse_tensor_name(item->string, max_block, &slot, &bad_block_index))
            return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': unknown tensor '%.200s'%s, expected only the "
                             "student-painn parameters (docs/model-file.md)", ld->file, item->string,
                             bad_block_index ? " (block index beyond the number of blocks)" : "");
        tensor_entry *e = &ld->entries[slot];
        if (e->present)
            return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': tensor '%.200s' appears twice in the header, "
                             "expected once", ld->file, item->string);
        mlff_status status = read_tensor_entry(ld, item, e, error);
        if (status != MLFF_OK) return status;
        if (slot >= NUM_GLOBAL) {
            const size_t block = (slot - NUM_GLOBAL) / NUM_BLOCK_KINDS;
            if (block + 1 > ld->num_blocks_seen) ld->num_blocks_seen = block + 1;
        }
    }
    return check_no_overlap(ld, error);
}

static size_t expected_dim(dim_spec d, size_t H, size_t K, size_t z_rows) {
    size_t base = d.symbol == SYM_ONE ? 1 : d.symbol == SYM_H ? H : d.symbol == SYM_K ? K : z_rows;
    return base * (size_t)d.factor / (size_t)d.divisor;
}

static mlff_status check_shape(loader *ld, size_t slot, const char *name, size_t H, size_t K, size_t z_rows,
                               mlff_error *error) {
    const tensor_spec *spec = slot_spec(slot);
    const tensor_entry *e = &ld->entries[slot];
    int ok = e->rank == spec->rank;
    for (int d = 0; ok && d < spec->rank; ++d) ok = e->dims[d] == expected_dim(spec->dims[d], H, K, z_rows);
    if (ok) return MLFF_OK;
    char found[160], expected[64];
    format_shape(e, found, sizeof found);
    if (spec->rank == 1)
        snprintf(expected, sizeof expected, "[%zu]", expected_dim(spec->dims[0], H, K, z_rows));
    else
        snprintf(expected, sizeof expected, "[%zu, %zu]", expected_dim(spec->dims[0], H, K, z_rows),
                 expected_dim(spec->dims[1], H, K, z_rows));
    return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': tensor '%s' has shape %s, expected %s = %s "
                     "(H=%zu, K=%zu, Z_max=%zu)", ld->file, name, found, spec->shape_text, expected, H, K, z_rows - 1);
}

static double read_value(const unsigned char *p, size_t item_size) {
    if (item_size == 4) {
        uint32_t bits = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        float f;
        memcpy(&f, &bits, sizeof f);
        return (double)f;
    }
    uint64_t bits = read_le64(p);
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* Converts a tensor to double at `out`, rejecting NaN and Inf. */
static mlff_status convert_tensor(loader *ld, size_t slot, const char *name, double *out, mlff_error *error) {
    const tensor_entry *e = &ld->entries[slot];
    const unsigned char *p = ld->data + e->begin;
    for (size_t i = 0; i < e->count; ++i, p += e->item_size) {
        out[i] = read_value(p, e->item_size);
        if (!isfinite(out[i]))
            return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': tensor '%s' holds %s at flat index %zu, expected "
                             "finite values", ld->file, name, isnan(out[i]) ? "NaN" : out[i] > 0 ? "+Inf" : "-Inf", i);
    }
    return MLFF_OK;
}

static void slot_name(size_t slot, char *out, size_t out_size) {
    if (slot < NUM_GLOBAL) snprintf(out, out_size, "%s", global_specs[slot].name);
    else snprintf(out, out_size, "interactions.%zu.%s", (slot - NUM_GLOBAL) / NUM_BLOCK_KINDS, slot_spec(slot)->name);
}

/* Derives H, K, Z_max, L, checks every tensor against them and fills ld->model. */
static mlff_status build_model(loader *ld, double cutoff, mlff_error *error) {
    const tensor_entry *embedding = &ld->entries[G_EMBEDDING], *centers = &ld->entries[G_RBF_CENTERS];
    if (!embedding->present)
        return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': missing tensor 'embedding.weight', expected shape "
                         "[Z_max+1, H]", ld->file);
    if (embedding->rank != 2 || embedding->dims[0] < 1 || embedding->dims[1] < 4 || embedding->dims[1] % 4 != 0 ||
        embedding->dims[1] > 100000000 || embedding->dims[0] > 100000000) {
        char found[160];
        format_shape(embedding, found, sizeof found);
        return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': tensor 'embedding.weight' has shape %s, expected "
                         "[Z_max+1, H] with Z_max >= 0 and H a positive multiple of 4 (the energy head has H/2 and H/4 "
                         "channels)", ld->file, found);
    }
    if (!centers->present)
        return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': missing tensor 'rbf.centers', expected shape [K]",
                         ld->file);
    if (centers->rank != 1 || centers->dims[0] < 1 || centers->dims[0] > 100000000) {
        char found[160];
        format_shape(centers, found, sizeof found);
        return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': tensor 'rbf.centers' has shape %s, expected [K] with "
                         "K >= 1", ld->file, found);
    }
    const size_t z_rows = embedding->dims[0], H = embedding->dims[1], K = centers->dims[0];

    /* L: blocks 0, 1, ... up to the first with no tensor at all. */
    size_t L = 0;
    for (;; ++L) {
        int any = 0;
        if (L >= ld->num_blocks_seen) break;
        for (int k = 0; k < NUM_BLOCK_KINDS; ++k) any |= ld->entries[block_slot(L, k)].present;
        if (!any) break;
    }
    if (L < ld->num_blocks_seen) {
        for (size_t s = block_slot(L, 0); s < ld->num_slots; ++s)
            if (ld->entries[s].present)
                return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': tensor '%.200s' belongs to a block after "
                                 "interactions.%zu, which has no tensors; expected blocks numbered 0, 1, ... without gaps",
                                 ld->file, ld->entries[s].name, L);
    }
    if (L > 10000)
        return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': %zu interaction blocks, expected at most 10000", ld->file, L);

    /* Every tensor present (except the last block's mixing matrix), with its shape. */
    const size_t num_used = NUM_GLOBAL + (L > 0 ? L : 1) * NUM_BLOCK_KINDS;
    size_t total = 9; /* doubles: 9 zeros for an absent last mixing matrix, then every tensor */
    for (size_t s = 0; s < num_used; ++s) {
        char name[96];
        slot_name(s, name, sizeof name);
        const int optional = s == block_slot(L > 0 ? L - 1 : 0, B_MIXING) && L > 0;
        if (!ld->entries[s].present) {
            if (optional) continue;
            return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': missing tensor '%s', expected shape %s",
                             ld->file, name, slot_spec(s)->shape_text);
        }
        mlff_status status = check_shape(ld, s, name, H, K, z_rows, error);
        if (status != MLFF_OK) return status;
        total += ld->entries[s].count; /* each count <= data_size / 4: the sum can't overflow */
    }

    mlff_model *model = calloc(1, sizeof *model);
    if (model == NULL) return mlff_fail(error, MLFF_ERROR_OUT_OF_MEMORY, "model file '%s': out of memory", ld->file);
    ld->model = model;
    model->values = total <= SIZE_MAX / sizeof(double) ? calloc(total, sizeof(double)) : NULL; /* (total) */
    model->blocks = calloc(L, sizeof *model->blocks); /* (L) */
    if (model->values == NULL || model->blocks == NULL)
        return mlff_fail(error, MLFF_ERROR_OUT_OF_MEMORY, "model file '%s': out of memory for %zu parameters", ld->file, total);

    const double *zeros = model->values; /* (9) */
    double *next = model->values + 9;
    const double *at[NUM_GLOBAL] = {0};
    for (size_t s = 0; s < num_used; ++s) {
        char name[96];
        slot_name(s, name, sizeof name);
        const double *where = zeros;
        if (ld->entries[s].present) {
            mlff_status status = convert_tensor(ld, s, name, next, error);
            if (status != MLFF_OK) return status;
            where = next;
            next += ld->entries[s].count;
        }
        if (s < NUM_GLOBAL) {
            at[s] = where;
            continue;
        }
        mlff_student_painn_block *b = &model->blocks[(s - NUM_GLOBAL) / NUM_BLOCK_KINDS];
        switch ((s - NUM_GLOBAL) % NUM_BLOCK_KINDS) {
        case B_FILTER_W0: b->filter_w0 = where; break;
        case B_FILTER_B0: b->filter_b0 = where; break;
        case B_FILTER_W2: b->filter_w2 = where; break;
        case B_FILTER_B2: b->filter_b2 = where; break;
        case B_UPDATE_W0: b->update_w0 = where; break;
        case B_UPDATE_B0: b->update_b0 = where; break;
        case B_UPDATE_W2: b->update_w2 = where; break;
        case B_UPDATE_B2: b->update_b2 = where; break;
        default: b->mixing = where; break;
        }
    }
    /* rbf widths divide: a zero would make NaN at d = center. */
    for (size_t k = 0; k < K; ++k)
        if (at[G_RBF_WIDTHS][k] == 0.0)
            return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': tensor 'rbf.widths' holds 0 at flat index %zu, "
                             "expected non-zero widths (they divide)", ld->file, k);

    strcpy(model->architecture, MLFF_ARCHITECTURE_STUDENT_PAINN);
    strcpy(model->length_unit, LENGTH_UNIT);
    strcpy(model->energy_unit, ENERGY_UNIT);
    mlff_student_painn *p = &model->painn;
    p->hidden_channels = (int)H;
    p->num_blocks = (int)L;
    p->num_rbf = (int)K;
    p->max_atomic_number = (int)(z_rows - 1);
    p->cutoff = cutoff;
    p->embedding = at[G_EMBEDDING];
    p->rbf_centers = at[G_RBF_CENTERS];
    p->rbf_widths = at[G_RBF_WIDTHS];
    p->blocks = model->blocks;
    p->head_w0 = at[G_HEAD_W0];
    p->head_b0 = at[G_HEAD_B0];
    p->head_w2 = at[G_HEAD_W2];
    p->head_b2 = at[G_HEAD_B2];
    p->head_w4 = at[G_HEAD_W4];
    p->head_b4 = at[G_HEAD_B4];
    return MLFF_OK;
}

/* ------------------------------------------------------------------------------------ */
/* Entry points                                                                          */

static mlff_status load(loader *ld, mlff_error *error) {
    if (ld->size < 8)
        return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s' is too short: %zu bytes, expected at least 8 (the "
                         "header length)", ld->file, ld->size);
    const uint64_t header_size = read_le64(ld->bytes);
    if (header_size > ld->size - 8)
        return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': header length %llu is larger than the %zu bytes after "
                         "it (truncated file, or not a safetensors file)", ld->file, (unsigned long long)header_size,
                         ld->size - 8);
    const size_t n = (size_t)header_size;
    ld->data = ld->bytes + 8 + n;
    ld->data_size = ld->size - 8 - n;

    ld->header_text = malloc(n + 1); /* (n + 1): n <= size - 8, no overflow */
    if (ld->header_text == NULL) return mlff_fail(error, MLFF_ERROR_OUT_OF_MEMORY, "model file '%s': out of memory", ld->file);
    memcpy(ld->header_text, ld->bytes + 8, n);
    ld->header_text[n] = '\0';
    if (strlen(ld->header_text) != n)
        return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': header holds a NUL byte at byte %zu, expected %zu bytes "
                         "of JSON text", ld->file, strlen(ld->header_text), n);
    const char *parse_end = NULL;
    ld->header = cJSON_ParseWithOpts(ld->header_text, &parse_end, 0);
    if (ld->header == NULL)
        return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': header is not valid JSON (error at byte %td of %zu)",
                         ld->file, parse_end ? parse_end - ld->header_text : (ptrdiff_t)0, n);
    for (const char *p = parse_end; *p; ++p) /* safetensors pads the header with spaces */
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': header has text after its JSON value at byte %td, "
                             "expected only whitespace", ld->file, p - ld->header_text);
    if (!cJSON_IsObject(ld->header))
        return mlff_fail(error, MLFF_ERROR_FORMAT, "model file '%s': header is %s, expected a JSON object", ld->file,
                         json_type_name(ld->header));

    double cutoff = 0.0;
    mlff_status status = read_metadata(ld, &cutoff, error);
    if (status == MLFF_OK) status = read_tensor_entries(ld, error);
    if (status == MLFF_OK) status = build_model(ld, cutoff, error);
    return status;
}

mlff_status mlff_model_load_memory(const void *bytes, size_t size, const char *name, mlff_model **model,
                                   mlff_error *error) {
    if (model == NULL)
        return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT, "mlff_model_load_memory: model (the output) is NULL");
    *model = NULL;
    if (name == NULL) name = "<memory>";
    if (bytes == NULL && size > 0)
        return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT, "mlff_model_load_memory: bytes of '%s' are NULL", name);
    loader ld = {0};
    ld.file = name;
    ld.bytes = bytes;
    ld.size = size;
    mlff_status status = load(&ld, error);
    if (status == MLFF_OK) {
        *model = ld.model;
        ld.model = NULL;
    }
    loader_free(&ld);
    return status;
}

mlff_status mlff_model_load_file(const char *path, mlff_model **model, mlff_error *error) {
    if (model == NULL)
        return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT, "mlff_model_load_file: model (the output) is NULL");
    *model = NULL;
    if (path == NULL) return mlff_fail(error, MLFF_ERROR_INVALID_ARGUMENT, "mlff_model_load_file: path is NULL");
    FILE *file = fopen(path, "rb");
    if (file == NULL)
        return mlff_fail(error, MLFF_ERROR_IO, "cannot open model file '%s': %s", path, strerror(errno));
    /* Read in growing chunks: works for pipes and special files, which have no size. */
    unsigned char *bytes = NULL; /* (capacity) */
    size_t size = 0, capacity = 0;
    mlff_status status = MLFF_OK;
    for (;;) {
        if (size == capacity) {
            const size_t grown = capacity < 65536 ? 65536 : capacity;
            unsigned char *more = capacity <= SIZE_MAX - grown ? realloc(bytes, capacity + grown) : NULL;
            if (more == NULL) {
                status = mlff_fail(error, MLFF_ERROR_OUT_OF_MEMORY, "model file '%s': out of memory after %zu bytes", path, size);
                break;
            }
            bytes = more;
            capacity += grown;
        }
        const size_t got = fread(bytes + size, 1, capacity - size, file);
        size += got;
        if (got == 0) {
            if (ferror(file))
                status = mlff_fail(error, MLFF_ERROR_IO, "cannot read model file '%s': %s", path, strerror(errno));
            break;
        }
    }
    fclose(file);
    if (status == MLFF_OK) status = mlff_model_load_memory(bytes, size, path, model, error);
    free(bytes);
    return status;
}

void mlff_model_free(mlff_model *model) {
    if (model == NULL) return;
    free(model->values);
    free(model->blocks);
    free(model);
}

const char *mlff_model_architecture(const mlff_model *model) { return model ? model->architecture : NULL; }
const char *mlff_model_length_unit(const mlff_model *model) { return model ? model->length_unit : NULL; }
const char *mlff_model_energy_unit(const mlff_model *model) { return model ? model->energy_unit : NULL; }
double mlff_model_cutoff(const mlff_model *model) { return model ? model->painn.cutoff : 0.0; }
int mlff_model_hidden_channels(const mlff_model *model) { return model ? model->painn.hidden_channels : 0; }
int mlff_model_num_blocks(const mlff_model *model) { return model ? model->painn.num_blocks : 0; }
int mlff_model_num_rbf(const mlff_model *model) { return model ? model->painn.num_rbf : 0; }
int mlff_model_max_atomic_number(const mlff_model *model) { return model ? model->painn.max_atomic_number : 0; }
const mlff_student_painn *mlff_model_student_painn(const mlff_model *model) { return model ? &model->painn : NULL; }
