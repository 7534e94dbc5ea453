/* Quantized model folders (docs/quantization.md): writing an int8 or bf16
 * copy of a model folder, and the weight format of a model's inference
 * graphs. Reading such folders is tm_model_load's (model.c). */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model_internal.h"
#include "trimodal/io.h"

tm_status tm_model_set_weights(tm_model *m, tm_weights fmt)
{
    if (!m) return tm_fail(TM_ERR_INVALID, "model_set_weights: NULL model");
    if ((unsigned)fmt >= TM_WEIGHTS_COUNT)
        return tm_fail(TM_ERR_INVALID, "model_set_weights: unknown format %d", (int)fmt);
    m->weights = (int)fmt;
    return TM_OK;
}

tm_weights tm_model_weights(const tm_model *m) { return m ? (tm_weights)m->weights : TM_WEIGHTS_PLAIN; }

const char *tm_model_quantization(const tm_model *m)
{
    if (!m) return NULL;
    return m->quant == TM_WEIGHTS_I8 ? "int8" : m->quant == TM_WEIGHTS_BF16 ? "bf16" : NULL;
}

/* ------------------------------------------------------------ writing */

#define COPY_MAX ((size_t)1 << 30) /* largest side file copied (tokenizer, ...) */

static uint64_t file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
}

static tm_status path_join(char *buf, size_t size, const char *dir, const char *file)
{
    int n = snprintf(buf, size, "%s/%s", dir, file);
    if (n < 0 || (size_t)n >= size)
        return tm_fail(TM_ERR_INVALID, "quantize: path '%s/%s' too long", dir, file);
    return TM_OK;
}

/* Copies every regular file of src but model.safetensors into dst. */
static tm_status copy_side_files(const char *src, const char *dst)
{
    DIR *d = opendir(src);
    if (!d) return tm_fail(TM_ERR_IO, "%s: cannot list the folder: %s", src, strerror(errno));
    tm_status s = TM_OK;
    struct dirent *e;
    while (!s && (e = readdir(d))) {
        if (e->d_name[0] == '.' || !strcmp(e->d_name, "model.safetensors")) continue;
        char from[PATH_MAX], to[PATH_MAX];
        struct stat sb;
        if ((s = path_join(from, sizeof from, src, e->d_name))) break;
        if (stat(from, &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
        if ((s = path_join(to, sizeof to, dst, e->d_name))) break;
        char *data = NULL;
        size_t size = 0;
        s = tm_read_file(from, COPY_MAX, &data, &size);
        if (!s) s = tm_write_file_atomic(to, data, size);
        tm_free(data);
    }
    closedir(d);
    return s;
}

/* Per-row symmetric int8 (rows along axis 0): the rule of tm_qweights_init,
 * so the prepared int8 weights of a loaded folder are exactly these q. */
static double quantize_rows(int8_t *q, float *scale, const float *w, int64_t rows, int64_t inner)
{
    double err = 0;
    for (int64_t r = 0; r < rows; r++) {
        const float *x = w + r * inner;
        float mx = 0.0f;
        for (int64_t j = 0; j < inner; j++) mx = fabsf(x[j]) > mx ? fabsf(x[j]) : mx;
        scale[r] = mx / 127.0f;
        float inv = mx > 0.0f ? 127.0f / mx : 0.0f;
        for (int64_t j = 0; j < inner; j++) {
            float v = nearbyintf(x[j] * inv);
            v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
            q[r * inner + j] = (int8_t)v;
            double e = fabs((double)x[j] - (double)((float)q[r * inner + j] * scale[r]));
            err = e > err ? e : err;
        }
    }
    return err;
}

static void contiguous(tm_tensor *t, tm_dtype dtype, int ndim, const int64_t *shape, void *data)
{
    memset(t, 0, sizeof *t);
    t->dtype = dtype;
    t->ndim = ndim;
    int64_t st = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        t->shape[d] = shape[d];
        t->stride[d] = st;
        st *= shape[d];
    }
    t->data = data;
}

static int quantizable(const tm_model_tensor *t)
{
    return t->ndim >= 2 && t->numel >= 1024 && !t->frozen;
}

tm_status tm_model_quantize(const char *src, const char *dst, tm_weights fmt,
                            tm_quantize_report *report)
{
    tm_quantize_report rep;
    memset(&rep, 0, sizeof rep);
    if (report) *report = rep;
    if (!src || !dst) return tm_fail(TM_ERR_INVALID, "quantize: NULL folder");
    if (fmt != TM_WEIGHTS_I8 && fmt != TM_WEIGHTS_BF16)
        return tm_fail(TM_ERR_INVALID, "quantize: the format must be int8 or bf16, not %s",
                       tm_weights_name(fmt));
    char rs[PATH_MAX], rd[PATH_MAX];
    if (realpath(src, rs) && realpath(dst, rd) && !strcmp(rs, rd))
        return tm_fail(TM_ERR_INVALID, "quantize: the output folder '%s' is the input folder; "
                                       "choose another (-o DIR)", dst);
    tm_model *m = NULL;
    tm_status s = tm_model_load(&m, src);
    if (s) return s;
    if (mkdir(dst, 0777) != 0 && errno != EEXIST) {
        s = tm_fail(TM_ERR_IO, "%s: cannot create the folder: %s", dst, strerror(errno));
        tm_model_free(m);
        return s;
    }
    int nt = tm_model_tensor_count(m);
    float *params = tm_model_params(m, NULL);
    tm_tensor *ts = tm_calloc((size_t)nt * 2 + 1, sizeof *ts);
    tm_named_tensor *named = tm_calloc((size_t)nt * 2 + 1, sizeof *named);
    char **scale_names = tm_calloc((size_t)nt + 1, sizeof *scale_names);
    void **bufs = tm_calloc((size_t)nt * 2 + 1, sizeof *bufs);
    int n = 0, nb = 0;
    if (!ts || !named || !scale_names || !bufs) {
        s = tm_fail(TM_ERR_NOMEM, "quantize: out of memory");
        goto done;
    }
    for (int i = 0; i < nt && !s; i++) {
        tm_model_tensor t;
        if ((s = tm_model_tensor_at(m, i, &t))) break;
        const float *w = params + t.offset;
        if (!quantizable(&t)) {
            contiguous(&ts[n], TM_F32, t.ndim, t.shape, (void *)w);
            named[n].name = t.name;
            named[n].tensor = &ts[n];
            n++;
            rep.tensors_kept++;
            continue;
        }
        rep.tensors_quantized++;
        if (fmt == TM_WEIGHTS_BF16) {
            tm_bf16 *h = tm_alloc(t.numel * sizeof *h);
            if (!h) {
                s = tm_fail(TM_ERR_NOMEM, "quantize: out of memory");
                break;
            }
            bufs[nb++] = h;
            for (size_t k = 0; k < t.numel; k++) {
                h[k] = tm_f32_to_bf16(w[k]);
                double e = fabs((double)w[k] - (double)tm_bf16_to_f32(h[k]));
                rep.max_abs_error = e > rep.max_abs_error ? e : rep.max_abs_error;
            }
            contiguous(&ts[n], TM_BF16, t.ndim, t.shape, h);
            named[n].name = t.name;
            named[n].tensor = &ts[n];
            n++;
            continue;
        }
        int64_t rows = t.shape[0], inner = (int64_t)t.numel / rows;
        int8_t *q = tm_alloc(t.numel);
        float *sc = tm_alloc((size_t)rows * sizeof *sc);
        size_t len = strlen(t.name) + sizeof ".qscale";
        char *sn = tm_alloc(len);
        if (q) bufs[nb++] = q;
        if (sc) bufs[nb++] = sc;
        if (!q || !sc || !sn) {
            tm_free(sn);
            s = tm_fail(TM_ERR_NOMEM, "quantize: out of memory");
            break;
        }
        snprintf(sn, len, "%s.qscale", t.name);
        scale_names[i] = sn;
        for (size_t k = 0; k < t.numel; k++)
            if (!isfinite(w[k])) {
                s = tm_fail(TM_ERR_INVALID, "quantize: '%s' holds a NaN or inf at %zu", t.name, k);
                break;
            }
        if (s) break;
        double e = quantize_rows(q, sc, w, rows, inner);
        rep.max_abs_error = e > rep.max_abs_error ? e : rep.max_abs_error;
        contiguous(&ts[n], TM_I8, t.ndim, t.shape, q);
        named[n].name = t.name;
        named[n].tensor = &ts[n];
        n++;
        contiguous(&ts[n], TM_F32, 1, &rows, sc);
        named[n].name = sn;
        named[n].tensor = &ts[n];
        n++;
    }
    if (!s) s = copy_side_files(src, dst);
    char path[PATH_MAX];
    if (!s) s = path_join(path, sizeof path, dst, "model.safetensors");
    if (!s) {
        const char *keys[] = {"format", "producer", "quantization"};
        const char *vals[] = {"pt", "trimodal", fmt == TM_WEIGHTS_I8 ? "int8" : "bf16"};
        s = tm_safetensors_write(path, named, n, keys, vals, 3);
    }
    if (!s) {
        char in[PATH_MAX];
        if (!path_join(in, sizeof in, src, "model.safetensors")) rep.bytes_before = file_size(in);
        rep.bytes_after = file_size(path);
        if (report) *report = rep;
    }
done:
    for (int i = 0; i < nb; i++) tm_free(bufs[i]);
    if (scale_names)
        for (int i = 0; i < nt; i++) tm_free(scale_names[i]);
    tm_free(bufs);
    tm_free(scale_names);
    tm_free(named);
    tm_free(ts);
    tm_model_free(m);
    return s;
}
