/* Helpers of the eval tests: reading the JSON reference vectors written by
 * scripts/gen_eval_vectors.py (tests/data/eval/, one JSON file per metric family). */
#ifndef TM_EVAL_TEST_H
#define TM_EVAL_TEST_H

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "trimodal/eval.h"
#include "trimodal/io.h"

/* The parsed file, or NULL after printing why. */
static inline cJSON *load_json(const char *rel)
{
    const char *path = test_data_path(rel);
    char *text;
    size_t size;
    if (tm_read_file(path, (size_t)16 << 20, &text, &size)) {
        fprintf(stderr, "cannot read %s: %s (set TM_SOURCE_DIR)\n", path, tm_last_error());
        return NULL;
    }
    cJSON *j = cJSON_ParseWithLength(text, size);
    tm_free(text);
    if (!j) fprintf(stderr, "%s: not valid JSON\n", path);
    return j;
}

static inline cJSON *jget(const cJSON *o, const char *key)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) fprintf(stderr, "missing key \"%s\" in the vectors\n", key);
    return v;
}

static inline double jnum(const cJSON *o, const char *key)
{
    cJSON *v = jget(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static inline const char *jstr(const cJSON *o, const char *key)
{
    cJSON *v = jget(o, key);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* Arrays as new malloc'ed buffers (free them); *n gets the length. JSON
 * null becomes NaN in the double variant. */
static inline double *jdoubles(const cJSON *arr, int *n)
{
    int k = cJSON_GetArraySize(arr);
    double *v = calloc((size_t)k + 1, sizeof *v);
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) v[i++] = cJSON_IsNumber(e) ? e->valuedouble : NAN;
    if (n) *n = k;
    return v;
}

static inline float *jfloats(const cJSON *arr, int *n)
{
    int k = cJSON_GetArraySize(arr);
    float *v = calloc((size_t)k + 1, sizeof *v);
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) v[i++] = (float)e->valuedouble;
    if (n) *n = k;
    return v;
}

static inline int64_t *jint64s(const cJSON *arr, int *n)
{
    int k = cJSON_GetArraySize(arr);
    int64_t *v = calloc((size_t)k + 1, sizeof *v);
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) v[i++] = (int64_t)e->valuedouble;
    if (n) *n = k;
    return v;
}

static inline int32_t *jint32s(const cJSON *arr, int *n)
{
    int k = cJSON_GetArraySize(arr);
    int32_t *v = calloc((size_t)k + 1, sizeof *v);
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) v[i++] = (int32_t)e->valuedouble;
    if (n) *n = k;
    return v;
}

/* |got - want| <= atol + rtol |want| for each of n doubles (NaN == NaN);
 * prints the first mismatch; one check. */
static inline int check_doubles(const char *what, const double *got, const double *want, int n,
                                double atol, double rtol)
{
    test_checks++;
    for (int i = 0; i < n; i++) {
        double g = got[i], w = want[i];
        int ok = (isnan(g) && isnan(w)) || fabs(g - w) <= atol + rtol * fabs(w) ||
                 (isinf(w) && g == w);
        if (!ok) {
            test_failures++;
            fprintf(stderr, "MISMATCH %s[%d]: got %.17g want %.17g\n", what, i, g, w);
            return 0;
        }
    }
    return 1;
}

#endif
