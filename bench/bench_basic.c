/* The simple ops' kernels (src/ops/basic.c) at bench-small's training
 * shapes (batch 32: fusion 32 x 148 = 4736 tokens, width 256, MLP 1024),
 * under the ISA the CPU has and under the plain C fallback, interleaved rep
 * by rep in one process so that a busy moment of the machine slows both.
 *
 * Usage: bench_basic [--threads 1,2] [--quick] [--only SUBSTR]
 * stdout: one JSON object per kernel and thread count:
 *   {"bench":"basic","kernel":"gelu.fwd","elements":...,"threads":1,
 *    "isa":"avx2","ns_per_elem":...,"plain_c_ns_per_elem":...,
 *    "speedup":...,"gb_per_s":...}
 * ns_per_elem is the best repetition's time over the output's elements
 * (CPU time at 1 thread, wall time at more: "clock"); gb_per_s counts the
 * bytes the kernel must read and write once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ops/basic.h"

#define T_TOK (32 * 148)
#define D 256
#define H 1024

typedef struct {
    float *x, *y, *g, *dx, *w, *b, *dw, *db, *mean, *rstd;
} bufs;

typedef struct {
    const char *name;
    int64_t elems; /* elements of the output */
    double bytes;  /* moved once per call */
    void (*run)(bufs *);
} kernel;

static void bias_add_fwd(bufs *m)
{
    tm_bcast bc;
    tm_bcast_init(&bc, 2, (int64_t[]){T_TOK, 3 * D}, 1, (int64_t[]){3 * D});
    tm_binary_forward(TM_BINARY_ADD, m->y, m->x, m->b, &bc);
}

static void bias_add_bwd(bufs *m)
{
    tm_bcast bc;
    tm_bcast_init(&bc, 2, (int64_t[]){T_TOK, 3 * D}, 1, (int64_t[]){3 * D});
    tm_binary_backward(TM_BINARY_ADD, m->dx, m->db, m->g, m->x, m->b, &bc, T_TOK * 3 * D, 3 * D);
}

static void residual_add(bufs *m)
{
    tm_bcast bc;
    tm_bcast_init(&bc, 2, (int64_t[]){T_TOK, D}, 2, (int64_t[]){T_TOK, D});
    tm_binary_forward(TM_BINARY_ADD, m->y, m->x, m->g, &bc);
}

static void gelu_fwd(bufs *m)
{
    tm_unary_forward(TM_UNARY_GELU, m->y, m->x, T_TOK * H, 0, 0);
}
static void gelu_bwd(bufs *m)
{
    tm_unary_backward(TM_UNARY_GELU, m->dx, m->g, m->x, m->y, T_TOK * H, 0);
}
static void gelu_tanh_fwd(bufs *m)
{
    tm_unary_forward(TM_UNARY_GELU_TANH, m->y, m->x, T_TOK * H, 0, 0);
}
static void gelu_tanh_bwd(bufs *m)
{
    tm_unary_backward(TM_UNARY_GELU_TANH, m->dx, m->g, m->x, m->y, T_TOK * H, 0);
}
static void ln_fwd(bufs *m)
{
    tm_layernorm_forward(m->y, m->mean, m->rstd, m->x, m->w, m->b, T_TOK, D, 1e-5f);
}
static void ln_bwd(bufs *m)
{
    tm_layernorm_backward(m->dx, m->dw, m->db, m->g, m->x, m->w, m->mean, m->rstd, T_TOK, D);
}
static void softmax_fwd(bufs *m)
{
    tm_softmax_forward(m->y, m->x, T_TOK, 148, 0);
}
static void softmax_bwd(bufs *m)
{
    tm_softmax_backward(m->dx, m->g, m->y, T_TOK, 148, 0);
}
static void permute_heads(bufs *m)
{
    /* (B, T, 3, H, 64) -> (3, B, H, T, 64): the attention's head split */
    tm_permute_copy(m->y, m->x, 5, (int64_t[]){32, 148, 3, 4, 64}, (int[]){2, 0, 3, 1, 4}, 0);
}

static const kernel KERNELS[] = {
    {"bias_add.fwd", T_TOK * 3 * D, 4.0 * 2 * T_TOK * 3 * D, bias_add_fwd},
    {"bias_add.bwd", T_TOK * 3 * D, 4.0 * 3 * T_TOK * 3 * D, bias_add_bwd},
    {"residual_add.fwd", T_TOK *D, 4.0 * 3 * T_TOK *D, residual_add},
    {"gelu.fwd", T_TOK *H, 4.0 * 2 * T_TOK *H, gelu_fwd},
    {"gelu.bwd", T_TOK *H, 4.0 * 3 * T_TOK *H, gelu_bwd},
    {"gelu_tanh.fwd", T_TOK *H, 4.0 * 2 * T_TOK *H, gelu_tanh_fwd},
    {"gelu_tanh.bwd", T_TOK *H, 4.0 * 3 * T_TOK *H, gelu_tanh_bwd},
    {"layernorm.fwd", T_TOK *D, 4.0 * 2 * T_TOK *D, ln_fwd},
    {"layernorm.bwd", T_TOK *D, 4.0 * 4 * T_TOK *D, ln_bwd},
    {"softmax.fwd", T_TOK * 148, 4.0 * 2 * T_TOK * 148, softmax_fwd},
    {"softmax.bwd", T_TOK * 148, 4.0 * 4 * T_TOK * 148, softmax_bwd},
    {"permute.heads", T_TOK * 3 * D, 4.0 * 2 * T_TOK * 3 * D, permute_heads},
};
#define NKERNELS ((int)(sizeof KERNELS / sizeof KERNELS[0]))

static float *buf(int64_t n, uint64_t seed, float lo, float hi)
{
    float *p = tm_alloc((size_t)n * sizeof(float));
    tm_rng r = tm_rng_new(seed, 0);
    tm_rng_fill_uniform(&r, p, n, lo, hi);
    return p;
}

/* Seconds: on one thread the process's CPU time, which a shared machine
 * inflates far less than the wall clock; on more, the wall clock. */
static double now(int threads)
{
    if (threads > 1) return tm_time_s();
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void bench(const kernel *k, int threads, int quick, tm_isa best, bufs *m)
{
    int reps = quick ? 3 : 15;
    double t_best = 1e30, t_c = 1e30;
    for (int r = 0; r < reps + 1; r++) {
        double t0 = now(threads);
        k->run(m);
        double t1 = now(threads);
        tm_force_isa(TM_ISA_SCALAR);
        k->run(m);
        double t2 = now(threads);
        tm_force_isa(-1);
        if (r == 0) continue; /* warm-up */
        if (t1 - t0 < t_best) t_best = t1 - t0;
        if (t2 - t1 < t_c) t_c = t2 - t1;
    }
    printf("{\"bench\":\"basic\",\"kernel\":\"%s\",\"elements\":%lld,\"threads\":%d,"
           "\"isa\":\"%s\",\"ns_per_elem\":%.3f,\"plain_c_ns_per_elem\":%.3f,"
           "\"speedup\":%.2f,\"gb_per_s\":%.1f,\"clock\":\"%s\"}\n",
           k->name, (long long)k->elems, threads, tm_isa_name(best), t_best * 1e9 / k->elems,
           t_c * 1e9 / k->elems, t_c / t_best, k->bytes / t_best / 1e9,
           threads > 1 ? "wall" : "cpu");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    const char *thread_list = "1,2", *only = NULL;
    int quick = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            thread_list = argv[++i];
        } else if (!strcmp(argv[i], "--only") && i + 1 < argc) {
            only = argv[++i];
        } else if (!strcmp(argv[i], "--quick")) {
            quick = 1;
        } else {
            fprintf(stderr, "usage: %s [--threads 1,2] [--quick] [--only SUBSTR]\n", argv[0]);
            return 2;
        }
    }
    int64_t n = (int64_t)T_TOK * H;
    bufs m = {
        .x = buf(n, 1, -3, 3),
        .y = buf(n, 2, 0, 1),
        .g = buf(n, 3, -1, 1),
        .dx = buf(n, 4, 0, 0),
        .w = buf(3 * D, 5, 0.5f, 1.5f),
        .b = buf(3 * D, 6, -1, 1),
        .dw = buf(3 * D, 7, 0, 0),
        .db = buf(3 * D, 8, 0, 0),
        .mean = buf(T_TOK, 9, 0, 0),
        .rstd = buf(T_TOK, 10, 0, 0),
    };
    tm_isa best = tm_cpu_isa();
    fprintf(stderr, "bench_basic: isa %s beside the plain C kernels\n", tm_isa_name(best));
    for (const char *p = thread_list; *p;) {
        int threads = atoi(p);
        if (threads < 1 || tm_set_num_threads(threads) != TM_OK) {
            fprintf(stderr, "bench_basic: bad thread count in %s\n", thread_list);
            return 2;
        }
        for (int k = 0; k < NKERNELS; k++)
            if (!only || strstr(KERNELS[k].name, only))
                bench(&KERNELS[k], threads, quick, best, &m);
        p = strchr(p, ',');
        if (!p) break;
        p++;
    }
    tm_free(m.x), tm_free(m.y), tm_free(m.g), tm_free(m.dx), tm_free(m.w), tm_free(m.b);
    tm_free(m.dw), tm_free(m.db), tm_free(m.mean), tm_free(m.rstd);
    return 0;
}
