/* Dynamic loss scaling for f16 mixed precision (see trimodal/optim.h). */
#include <math.h>

#include "trimodal/optim.h"

tm_loss_scaler_params tm_loss_scaler_default_params(void)
{
    tm_loss_scaler_params p;
    p.init_scale = 65536.0f;
    p.growth_factor = 2.0f;
    p.backoff_factor = 0.5f;
    p.growth_interval = 2000;
    p.min_scale = ldexpf(1.0f, -24);
    p.max_scale = ldexpf(1.0f, 24);
    return p;
}

static int finite_pos(float x)
{
    return x > 0.0f && isfinite(x);
}

tm_status tm_loss_scaler_init(tm_loss_scaler *s, tm_loss_scaler_params p)
{
    if (!s) return tm_fail(TM_ERR_INVALID, "loss_scaler_init: NULL scaler");
    if (!finite_pos(p.min_scale) || !finite_pos(p.max_scale) || p.min_scale > p.max_scale)
        return tm_fail(TM_ERR_INVALID,
                       "loss_scaler_init: need 0 < min_scale (%g) <= max_scale (%g), both finite",
                       (double)p.min_scale, (double)p.max_scale);
    if (!finite_pos(p.init_scale) || p.init_scale < p.min_scale || p.init_scale > p.max_scale)
        return tm_fail(TM_ERR_INVALID,
                       "loss_scaler_init: init_scale %g must be finite and in [min_scale %g, "
                       "max_scale %g]",
                       (double)p.init_scale, (double)p.min_scale, (double)p.max_scale);
    if (!(p.growth_factor > 1.0f) || !isfinite(p.growth_factor))
        return tm_fail(TM_ERR_INVALID, "loss_scaler_init: growth_factor %g must be finite and > 1",
                       (double)p.growth_factor);
    if (!(p.backoff_factor > 0.0f && p.backoff_factor < 1.0f))
        return tm_fail(TM_ERR_INVALID, "loss_scaler_init: backoff_factor %g must be in (0, 1)",
                       (double)p.backoff_factor);
    if (p.growth_interval < 1)
        return tm_fail(TM_ERR_INVALID, "loss_scaler_init: growth_interval %lld must be >= 1",
                       (long long)p.growth_interval);
    s->p = p;
    s->scale = p.init_scale;
    s->good_steps = 0;
    s->skipped = 0;
    s->steps = 0;
    return TM_OK;
}

float tm_loss_scaler_scale(const tm_loss_scaler *s)
{
    return s ? s->scale : 1.0f;
}

tm_status tm_loss_scaler_unscale(const tm_loss_scaler *s, float *grads, size_t n, int *finite_out)
{
    if (finite_out) *finite_out = 0;
    if (!s || !finite_out || (!grads && n))
        return tm_fail(TM_ERR_INVALID, "loss_scaler_unscale: NULL argument");
    const float inv = 1.0f / s->scale;
    /* x - x is 0 for every finite x and NaN for inf and NaN: one branch-free
     * accumulator tells whether all of them were finite */
    float acc = 0.0f;
    for (size_t i = 0; i < n; i++) {
        float g = grads[i] * inv;
        grads[i] = g;
        acc += g - g;
    }
    *finite_out = acc == 0.0f;
    return TM_OK;
}

int tm_loss_scaler_update(tm_loss_scaler *s, int finite)
{
    if (!s) return 0;
    s->steps++;
    if (!finite) {
        float next = s->scale * s->p.backoff_factor;
        s->scale = next < s->p.min_scale ? s->p.min_scale : next;
        s->good_steps = 0;
        s->skipped++;
        return 0;
    }
    if (++s->good_steps >= s->p.growth_interval) {
        float next = s->scale * s->p.growth_factor;
        s->scale = next > s->p.max_scale || !isfinite(next) ? s->p.max_scale : next;
        s->good_steps = 0;
    }
    return 1;
}
