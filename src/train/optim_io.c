/*
 * Optimizer files: the state buffer of a tm_optim as named safetensors
 * tensors, plus the step count and settings as metadata, for checkpoints.
 * Uses only the public optim and io APIs.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trimodal/io.h"
#include "trimodal/optim.h"

#define OPTIM_FORMAT "trimodal-optim-1"

static const char *kind_name(tm_optim_kind k) { return k == TM_OPTIM_ADAMW ? "adamw" : "sgd"; }

/* The names of the state tensors, in buffer order. */
static int state_names(const tm_optim_params *p, size_t count, size_t n, const char **names)
{
    if (count == 0) return 0;
    if (p->kind == TM_OPTIM_ADAMW) {
        names[0] = "exp_avg";
        names[1] = "exp_avg_sq";
        return count == 2 * n ? 2 : -1;
    }
    names[0] = "momentum_buffer";
    return count == n ? 1 : -1;
}

tm_status tm_optim_save(const tm_optim *opt, const char *path)
{
    if (!opt || !path) return tm_fail(TM_ERR_INVALID, "optim_save: opt or path is NULL");
    tm_optim *o = (tm_optim *)opt; /* tm_optim_state is read here, never written */
    tm_optim_params p = tm_optim_get_params(opt);
    size_t n = tm_optim_num_params(opt), count = 0;
    float *state = tm_optim_state(o, &count);
    const char *names[2];
    int nt = state_names(&p, count, n, names);
    if (nt < 0) return tm_fail(TM_ERR_INTERNAL, "optim_save: unexpected state size %zu", count);

    tm_tensor t[2];
    tm_named_tensor nts[2];
    for (int i = 0; i < nt; i++) {
        memset(&t[i], 0, sizeof t[i]);
        t[i].dtype = TM_F32;
        t[i].ndim = 1;
        t[i].shape[0] = (int64_t)n;
        t[i].stride[0] = 1;
        t[i].data = state + (size_t)i * n;
        nts[i].name = names[i];
        nts[i].tensor = &t[i];
    }
    char v[9][64];
    snprintf(v[0], sizeof v[0], "%s", OPTIM_FORMAT);
    snprintf(v[1], sizeof v[1], "%s", kind_name(p.kind));
    snprintf(v[2], sizeof v[2], "%" PRId64, tm_optim_step_count(opt));
    snprintf(v[3], sizeof v[3], "%zu", n);
    snprintf(v[4], sizeof v[4], "%.9g", (double)p.lr);
    snprintf(v[5], sizeof v[5], "%.9g", (double)p.weight_decay);
    snprintf(v[6], sizeof v[6], "%.17g,%.17g", p.beta1, p.beta2);
    snprintf(v[7], sizeof v[7], "%.9g", (double)p.eps);
    snprintf(v[8], sizeof v[8], "%.9g,%.9g,%d", (double)p.momentum, (double)p.dampening,
             p.nesterov);
    const char *keys[9] = {"format", "kind", "step", "n_params", "lr", "weight_decay", "betas",
                           "eps", "momentum,dampening,nesterov"};
    const char *vals[9] = {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8]};
    return tm_safetensors_write(path, nts, nt, keys, vals, 9);
}

/* A non-negative decimal integer of the metadata. */
static int parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s || *s == '-' || *s == '+') return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return 0;
    *out = v;
    return 1;
}

tm_status tm_optim_load(tm_optim *opt, const char *path)
{
    if (!opt || !path) return tm_fail(TM_ERR_INVALID, "optim_load: opt or path is NULL");
    tm_safetensors *st = NULL;
    tm_status s = tm_safetensors_open(&st, path);
    if (s) return s;
    tm_optim_params p = tm_optim_get_params(opt);
    size_t n = tm_optim_num_params(opt), count = 0;
    float *state = tm_optim_state(opt, &count);
    const char *names[2];
    int nt = state_names(&p, count, n, names);
    const char *fmt = tm_safetensors_metadata(st, "format");
    const char *kind = tm_safetensors_metadata(st, "kind");
    uint64_t step = 0, fn = 0;
    if (!fmt || strcmp(fmt, OPTIM_FORMAT)) {
        s = tm_fail(TM_ERR_FORMAT, "%s: not an optimizer file (metadata format is %s%s%s, want %s)",
                    path, fmt ? "'" : "", fmt ? fmt : "missing", fmt ? "'" : "", OPTIM_FORMAT);
        goto done;
    }
    if (!parse_u64(tm_safetensors_metadata(st, "step"), &step) || step > INT64_MAX ||
        !parse_u64(tm_safetensors_metadata(st, "n_params"), &fn)) {
        s = tm_fail(TM_ERR_FORMAT, "%s: bad or missing 'step' or 'n_params' metadata", path);
        goto done;
    }
    if (!kind || strcmp(kind, kind_name(p.kind))) {
        s = tm_fail(TM_ERR_INVALID, "%s: holds a '%s' optimizer, this run uses '%s'", path,
                    kind ? kind : "?", kind_name(p.kind));
        goto done;
    }
    if (fn != n) {
        s = tm_fail(TM_ERR_INVALID, "%s: state for %" PRIu64 " parameters, this model trains %zu",
                    path, fn, n);
        goto done;
    }
    if (nt < 0 || tm_safetensors_count(st) != nt) {
        s = tm_fail(TM_ERR_INVALID,
                    "%s: %d state tensor(s), this optimizer keeps %d (SGD momentum on in one and "
                    "off in the other?)",
                    path, tm_safetensors_count(st), nt < 0 ? 0 : nt);
        goto done;
    }
    tm_tensor t[2];
    for (int i = 0; i < nt; i++) {
        if ((s = tm_safetensors_get(st, names[i], &t[i]))) goto done;
        if (t[i].dtype != TM_F32 || t[i].ndim != 1 || t[i].shape[0] != (int64_t)n) {
            s = tm_fail(TM_ERR_FORMAT, "%s: tensor '%s' should be F32 of shape (%zu)", path,
                        names[i], n);
            goto done;
        }
    }
    /* Everything checked: only now change opt. */
    for (int i = 0; i < nt; i++)
        if (n) memcpy(state + (size_t)i * n, t[i].data, n * sizeof(float));
    s = tm_optim_set_step_count(opt, (int64_t)step);
done:
    tm_safetensors_close(st);
    return s;
}
