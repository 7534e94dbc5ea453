/*
 * Learning-rate schedules: closed forms of a step index, so a resumed run
 * gets the same rate from the restored step count alone (no scheduler
 * state to checkpoint), unlike torch's recursive schedulers whose values
 * these match.
 */
#include "trimodal/optim.h"

#include <math.h>
#include <string.h>

tm_lr_schedule tm_lr_schedule_default_params(tm_lr_kind kind)
{
    tm_lr_schedule s;
    memset(&s, 0, sizeof s);
    s.kind = kind;
    s.base_lr = 1e-3f;
    s.warmup_steps = 0;
    s.warmup_start_factor = 0.0f;
    s.min_lr = 0.0f;
    s.total_steps = 1000;
    s.step_size = 1000;
    s.gamma = 0.1f;
    return s;
}

/* Validates; records a message with tm_fail only when report is set, so
 * tm_lr_at stays free of side effects. */
static tm_status validate(const tm_lr_schedule *s, int report)
{
#define BAD(...) (report ? tm_fail(TM_ERR_INVALID, __VA_ARGS__) : TM_ERR_INVALID)
    if (!s) return BAD("lr schedule: NULL");
    if ((int)s->kind < 0 || s->kind >= TM_LR_KIND_COUNT)
        return BAD("lr schedule: unknown kind %d", (int)s->kind);
    if (!isfinite(s->base_lr) || s->base_lr < 0)
        return BAD("lr schedule: base_lr must be finite and >= 0 (got %g)", s->base_lr);
    if (s->warmup_steps < 0)
        return BAD("lr schedule: warmup_steps must be >= 0 (got %lld)",
                   (long long)s->warmup_steps);
    if (!(s->warmup_start_factor >= 0 && s->warmup_start_factor <= 1))
        return BAD("lr schedule: warmup_start_factor must be in [0, 1] (got %g)",
                   s->warmup_start_factor);
    if (s->kind == TM_LR_COSINE) {
        if (!(s->min_lr >= 0 && s->min_lr <= s->base_lr))
            return BAD("lr schedule: min_lr must be in [0, base_lr = %g] (got %g)", s->base_lr,
                       s->min_lr);
        if (s->total_steps < s->warmup_steps)
            return BAD("lr schedule: total_steps (%lld) must be >= warmup_steps (%lld)",
                       (long long)s->total_steps, (long long)s->warmup_steps);
    }
    if (s->kind == TM_LR_STEP) {
        if (s->step_size < 1)
            return BAD("lr schedule: step_size must be >= 1 (got %lld)", (long long)s->step_size);
        if (!(s->gamma > 0 && s->gamma <= 1))
            return BAD("lr schedule: gamma must be in (0, 1] (got %g)", s->gamma);
    }
    return TM_OK;
#undef BAD
}

tm_status tm_lr_schedule_check(const tm_lr_schedule *s) { return validate(s, 1); }

float tm_lr_at(const tm_lr_schedule *s, int64_t step)
{
    if (validate(s, 0) != TM_OK) return NAN;
    if (step < 0) step = 0;
    const double base = s->base_lr;
    const int64_t w = s->warmup_steps;
    if (step < w) {
        double f = s->warmup_start_factor;
        return (float)(base * (f + (1.0 - f) * (double)step / (double)w));
    }
    const int64_t k = step - w; /* steps since the warm-up ended */
    switch (s->kind) {
    case TM_LR_CONSTANT:
        return (float)base;
    case TM_LR_COSINE: {
        const int64_t d = s->total_steps - w; /* decay length */
        const double lo = s->min_lr;
        if (k >= d) return (float)lo;
        const double pi = 3.14159265358979323846;
        return (float)(lo + (base - lo) * (1.0 + cos(pi * (double)k / (double)d)) * 0.5);
    }
    case TM_LR_STEP:
        return (float)(base * pow((double)s->gamma, (double)(k / s->step_size)));
    default:
        return NAN;
    }
}
