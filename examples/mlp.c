/* A two-layer MLP classifier trained with trimodal's public API.
 *
 * The data: three interleaved spirals in 2-D (600 training points, 300
 * held out), which a linear model cannot separate. The model: Linear(2, 64)
 * -> GELU -> Linear(64, 3), trained with AdamW and a warm-up + cosine
 * learning-rate schedule on full-batch cross-entropy.
 *
 *   build/bin/example_mlp [steps]
 *
 * It shows the life of a graph: build once, compile once, then fill inputs,
 * forward, backward and update as often as needed; and that parameters are
 * one flat buffer, so a second (inference) graph takes them with one copy. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trimodal/trimodal.h"

#define CLASSES 3
#define HIDDEN 64

/* Point i of a spiral dataset with noise from a counter-based RNG. */
static void make_spirals(float *x, int32_t *y, int n, uint64_t seed)
{
    for (int i = 0; i < n; i++) {
        int c = i % CLASSES;
        float t = (float)(i / CLASSES) / (float)(n / CLASSES); /* 0..1 along the arm */
        float r = 0.1f + 0.9f * t;
        float a = 4.0f * t + 2.0944f * (float)c + 0.2f * tm_rng_normal_at(seed, 0, (uint64_t)i);
        x[2 * i] = r * cosf(a);
        x[2 * i + 1] = r * sinf(a);
        y[i] = c;
    }
}

/* The model, built on any graph: returns the logits for input x. */
static tm_node *mlp(tm_graph *g, tm_node *x)
{
    tm_node *w1 = tm_param(g, "fc1.weight", 2, (int64_t[]){HIDDEN, 2});
    tm_node *b1 = tm_param(g, "fc1.bias", 1, (int64_t[]){HIDDEN});
    tm_node *w2 = tm_param(g, "fc2.weight", 2, (int64_t[]){CLASSES, HIDDEN});
    tm_node *b2 = tm_param(g, "fc2.bias", 1, (int64_t[]){CLASSES});
    return tm_linear(g, tm_gelu(g, tm_linear(g, x, w1, b1)), w2, b2);
}

static float accuracy(const float *logits, const int32_t *y, int n)
{
    int right = 0;
    for (int i = 0; i < n; i++) {
        int best = 0;
        for (int c = 1; c < CLASSES; c++)
            if (logits[i * CLASSES + c] > logits[i * CLASSES + best]) best = c;
        right += best == y[i];
    }
    return (float)right / (float)n;
}

static int fail(const char *what)
{
    fprintf(stderr, "example_mlp: %s: %s\n", what, tm_last_error());
    return 1;
}

int main(int argc, char **argv)
{
    int steps = argc > 1 ? atoi(argv[1]) : 400;
    if (steps < 1) {
        fprintf(stderr, "usage: example_mlp [steps >= 1]\n");
        return 2;
    }
    enum { NTRAIN = 600, NTEST = 300 };

    /* training graph: logits and loss for the whole training set */
    tm_graph *g = tm_graph_new();
    tm_node *x = tm_input(g, "x", TM_F32, 2, (int64_t[]){NTRAIN, 2});
    tm_node *y = tm_input(g, "y", TM_I32, 1, (int64_t[]){NTRAIN});
    tm_node *logits = mlp(g, x);
    tm_node *loss = tm_cross_entropy(g, logits, y, 0.0f, -100);
    tm_graph_keep(g, logits);
    if (tm_graph_compile(g, loss, TM_GRAPH_TRAIN) != TM_OK) return fail("compile");

    make_spirals(tm_node_data(g, x), tm_node_data(g, y), NTRAIN, 1);

    /* initialise like torch.nn.Linear: uniform(-1/sqrt(in), 1/sqrt(in)) */
    tm_rng rng = tm_rng_new(42, 0);
    for (int i = 0; i < tm_graph_param_count(g); i++) {
        tm_node *p = tm_graph_param_at(g, i);
        const int64_t *shape = tm_node_shape(p);
        float bound = 1.0f / sqrtf((float)(tm_node_ndim(p) == 2 ? shape[1] : HIDDEN));
        tm_rng_fill_uniform(&rng, tm_node_data(g, p), tm_node_numel(p), -bound, bound);
    }

    size_t np;
    float *params = tm_graph_params(g, &np);
    float *grads = tm_graph_grads(g, NULL);
    tm_optim_params op = tm_optim_default_params(TM_OPTIM_ADAMW);
    op.weight_decay = 1e-4f;
    tm_optim *opt;
    if (tm_optim_new(&opt, op, np) != TM_OK) return fail("optimizer");
    tm_lr_schedule sched = tm_lr_schedule_default_params(TM_LR_COSINE);
    sched.base_lr = 0.02f;
    sched.warmup_steps = steps / 20;
    sched.total_steps = steps;
    sched.min_lr = 0.001f;
    if (tm_lr_schedule_check(&sched) != TM_OK) return fail("schedule");

    printf("training a 2-64-3 MLP (%zu parameters) on 3 spirals, %d steps, %d thread(s)\n", np,
           steps, tm_get_num_threads());
    float first = 0, last = 0;
    for (int step = 0; step < steps; step++) {
        if (tm_graph_forward(g) != TM_OK || tm_graph_backward(g) != TM_OK) return fail("step");
        float norm;
        tm_clip_grad_norm(grads, np, 1.0f, &norm);
        if (tm_optim_step(opt, params, grads, tm_lr_at(&sched, step)) != TM_OK) return fail("update");
        last = *(float *)tm_node_data(g, loss);
        if (step == 0) first = last;
        if (step % (steps / 8 > 0 ? steps / 8 : 1) == 0 || step == steps - 1)
            printf("step %4d  loss %.4f  train acc %.3f  lr %.4f\n", step, last,
                   accuracy(tm_node_data(g, logits), tm_node_data(g, y), NTRAIN),
                   tm_lr_at(&sched, step));
    }

    /* inference graph on held-out points: same model, parameters copied */
    tm_graph *ig = tm_graph_new();
    tm_node *tx = tm_input(ig, "x", TM_F32, 2, (int64_t[]){NTEST, 2});
    tm_node *tlogits = mlp(ig, tx);
    if (tm_graph_compile(ig, tlogits, TM_GRAPH_INFER) != TM_OK) return fail("compile test");
    memcpy(tm_graph_params(ig, NULL), params, np * sizeof(float));
    int32_t ty[NTEST];
    make_spirals(tm_node_data(ig, tx), ty, NTEST, 2);
    if (tm_graph_forward(ig) != TM_OK) return fail("test forward");
    float test_acc = accuracy(tm_node_data(ig, tlogits), ty, NTEST);
    printf("loss %.4f -> %.4f; held-out accuracy %.3f\n", first, last, test_acc);

    tm_optim_free(opt);
    tm_graph_free(ig);
    tm_graph_free(g);
    /* a clear drop in loss and a model that generalises, or a failing exit */
    return last < 0.5f * first && test_acc > 0.8f ? 0 : 1;
}
