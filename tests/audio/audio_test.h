/* Helpers shared by the audio tests: reading the reference vectors that
 * scripts/gen_audio_vectors.py wrote, and comparing with a relative
 * tolerance above an absolute floor while reporting the worst errors. */
#ifndef TM_AUDIO_TEST_H
#define TM_AUDIO_TEST_H

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "trimodal/audio.h"
#include "trimodal/io.h"

/* A tensor of the file (must exist, f32); NULL after a failed check. */
static inline const float *vec_get(tm_safetensors *st, const char *name, int64_t *n,
                                   int64_t *rows, int64_t *cols)
{
    if (n) *n = 0;
    if (rows) *rows = 0;
    if (cols) *cols = 0;
    tm_tensor t;
    tm_status s = tm_safetensors_get(st, name, &t);
    test_checks++;
    if (s != TM_OK || t.dtype != TM_F32) {
        test_failures++;
        fprintf(stderr, "vector %s: %s\n", name, tm_last_error());
        return NULL;
    }
    if (n) *n = tm_tensor_numel(&t);
    if (rows) *rows = t.ndim >= 1 ? t.shape[0] : 1;
    if (cols) *cols = t.ndim >= 2 ? t.shape[1] : 1;
    return t.data;
}

/* The case's settings: the JSON in the metadata under its name. */
static inline cJSON *vec_meta(tm_safetensors *st, const char *name)
{
    const char *m = tm_safetensors_metadata(st, name);
    cJSON *j = m ? cJSON_Parse(m) : NULL;
    CHECK(j != NULL);
    return j;
}

static inline double meta_num(const cJSON *j, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static inline const char *meta_str(const cJSON *j, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* The largest |x|. */
static inline double max_abs(const float *x, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        if (fabs(x[i]) > m) m = fabs(x[i]);
    return m;
}

/* Every |got - want| <= atol + rtol |want|; prints the largest relative
 * error among the values above the floor atol and the largest absolute
 * one, so the report can quote them. Returns the largest relative error. */
static inline double compare(const char *what, const float *got, const float *want, int64_t n,
                             double atol, double rtol, int verbose)
{
    double max_rel = 0, max_abs_err = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (d > max_abs_err) max_abs_err = d;
        if (fabs(want[i]) > atol && d / fabs(want[i]) > max_rel) max_rel = d / fabs(want[i]);
    }
    check_close(what, got, want, n, atol, rtol);
    if (verbose)
        printf("  %-22s n=%-6lld max rel err %.2e (|ref| > %.1e), max abs err %.2e\n", what,
               (long long)n, max_rel, atol, max_abs_err);
    return max_rel;
}

#endif
