/* Positional encodings: learned tables, and fixed ones (Whisper's 1-D
 * sinusoids, MAE's 2-D sin-cos) held as frozen parameters. */
#include <math.h>
#include <string.h>

#include "nn_internal.h"

static const char *const POS_NAMES[TM_NN_POS_COUNT] = {"none", "learned", "sinusoidal",
                                                        "sincos2d"};

const char *tm_nn_pos_name(tm_nn_pos_kind k)
{
    return (unsigned)k < TM_NN_POS_COUNT ? POS_NAMES[k] : "invalid";
}

int tm_nn_pos_from_name(const char *name)
{
    for (int i = 0; name && i < TM_NN_POS_COUNT; i++)
        if (!strcmp(name, POS_NAMES[i])) return i;
    return -1;
}

void tm_nn_sinusoid_1d_fill(float *out, int64_t T, int64_t C)
{
    int64_t half = C / 2;
    double inc = log(10000.0) / (double)(half - 1);
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < half; i++) {
            double a = (double)t * exp(-inc * (double)i);
            out[t * C + i] = (float)sin(a);
            out[t * C + half + i] = (float)cos(a);
        }
}

/* One coordinate into D = C/2 channels: [sin(p o_i) | cos(p o_i)]. */
static void sincos_1d(float *out, double p, int64_t D)
{
    int64_t q = D / 2;
    for (int64_t i = 0; i < q; i++) {
        double a = p * pow(10000.0, -(double)i / (double)q);
        out[i] = (float)sin(a);
        out[q + i] = (float)cos(a);
    }
}

void tm_nn_sincos_2d_fill(float *out, int64_t grid_h, int64_t grid_w, int64_t C)
{
    for (int64_t h = 0; h < grid_h; h++)
        for (int64_t w = 0; w < grid_w; w++) {
            float *row = out + (h * grid_w + w) * C;
            sincos_1d(row, (double)w, C / 2);
            sincos_1d(row + C / 2, (double)h, C / 2);
        }
}

tm_status tm_nn_position_declare(tm_nn_position *p, tm_graph *g, const char *name,
                                 tm_nn_pos_kind kind, int64_t T, int64_t C, int64_t grid_h,
                                 int64_t grid_w)
{
    memset(p, 0, sizeof *p);
    p->kind = kind;
    p->T = T;
    p->C = C;
    p->grid_h = grid_h;
    p->grid_w = grid_w;
    if ((unsigned)kind >= TM_NN_POS_COUNT || T < 1 || C < 1) {
        tm_nn_fail(g, "positions '%s': unknown kind or empty table", name);
        return tm_nn_status(g);
    }
    if (kind == TM_NN_POS_NONE) return tm_nn_status(g);
    if (kind == TM_NN_POS_SINUSOID && (C % 2 || C < 4)) {
        tm_nn_fail(g, "positions '%s': sinusoidal positions need an even width >= 4, got %lld",
                   name, (long long)C);
        return tm_nn_status(g);
    }
    if (kind == TM_NN_POS_SINCOS_2D) {
        if (C % 4 || grid_h < 1 || grid_w < 1 || grid_h * grid_w > T) {
            tm_nn_fail(g, "positions '%s': 2-D sin-cos positions need a width divisible by 4 "
                          "and a %lldx%lld grid within %lld rows", name, (long long)grid_h,
                       (long long)grid_w, (long long)T);
            return tm_nn_status(g);
        }
        p->extra = T - grid_h * grid_w;
    }
    p->table = tm_nn_param(g, name, NULL, 2, (int64_t[]){T, C});
    if (p->table && kind != TM_NN_POS_LEARNED) tm_param_freeze(g, p->table, 1);
    return tm_nn_status(g);
}

tm_node *tm_nn_position_forward(tm_graph *g, const tm_nn_position *p, tm_node *x)
{
    if (p->kind == TM_NN_POS_NONE) return x;
    return tm_add(g, x, p->table);
}

tm_status tm_nn_position_fill(const tm_nn_position *p, float *out)
{
    switch (p->kind) {
    case TM_NN_POS_SINUSOID:
        tm_nn_sinusoid_1d_fill(out, p->T, p->C);
        return TM_OK;
    case TM_NN_POS_SINCOS_2D:
        memset(out, 0, (size_t)(p->extra * p->C) * sizeof *out);
        tm_nn_sincos_2d_fill(out + p->extra * p->C, p->grid_h, p->grid_w, p->C);
        return TM_OK;
    default:
        return tm_fail(TM_ERR_INVALID, "position_fill: '%s' positions are not a fixed table",
                       tm_nn_pos_name(p->kind));
    }
}
