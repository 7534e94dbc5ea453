/*
 * Accuracy of mixed precision on the demo task: trains the model of
 * configs/runs/example.json on its synthetic data (every modality, the
 * model's own loss weights, AdamW lr 2e-3, STEPS steps of batch 32, seed
 * fixed) in f32, bf16 and f16 (with dynamic loss scaling), then reports the
 * validation accuracy of each. Not part of the build:
 *
 *   cc -O2 -Iinclude bench/precision_accuracy.c build/h-precision/lib/libtrimodal.a \
 *     $(pkg-config --libs libcjson stb sndfile samplerate fftw3f libpcre2-8 \
 *       libmicrohttpd libsodium) -lm -lpthread
 *   ./a.out configs/runs/example.json [STEPS]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trimodal/graph.h"
#include "trimodal/model.h"
#include "trimodal/optim.h"
#include "trimodal/train.h"

#define TRY(x)                                                                                     \
    do {                                                                                           \
        if ((x) != TM_OK) {                                                                        \
            fprintf(stderr, "%s: %s\n", #x, tm_last_error());                                      \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static double run(const tm_run_config *cfg, tm_dtype prec, int64_t steps, int64_t *skipped)
{
    tm_model *m = NULL;
    TRY(tm_model_new_from_json(&m, cfg->model_json, strlen(cfg->model_json), "example"));
    TRY(tm_model_init_weights(m, cfg->init_seed));
    tm_model_graph_opts o = tm_model_graph_default_opts();
    o.precision = (int)prec;
    tm_model_graph *tg = NULL, *vg = NULL;
    TRY(tm_model_graph_new_opts(&tg, m, 32, TM_MODEL_TRAIN, &o));
    o.deterministic = 1;
    TRY(tm_model_graph_new_opts(&vg, m, 64, TM_MODEL_TRAIN, &o));
    tm_train_source tr, va;
    TRY(tm_train_synthetic_open(&cfg->data, cfg->data.train_split, cfg->seed, m, &tr));
    TRY(tm_train_synthetic_open(&cfg->data, cfg->data.val_split, cfg->seed, m, &va));
    size_t n = tm_model_trainable_count(m);
    tm_optim *opt = NULL;
    tm_optim_params op = tm_optim_default_params(TM_OPTIM_ADAMW);
    op.lr = 2e-3f;
    op.weight_decay = 0.01f;
    TRY(tm_optim_new(&opt, op, n));
    tm_loss_scaler ls;
    TRY(tm_loss_scaler_init(&ls, tm_loss_scaler_default_params()));
    tm_model_inputs in = tm_model_graph_inputs(tg);
    int64_t size = tr.size(tr.ctx);
    for (int64_t s = 0; s < steps; s++) {
        int64_t idx = (s * 32) % size, epoch = (s * 32) / size;
        if (idx + 32 > size) idx = 0;
        TRY(tr.fill(tr.ctx, epoch, idx, 32, &in, 32));
        if (prec == TM_F16) TRY(tm_graph_set_loss_scale(tm_model_graph_graph(tg), ls.scale));
        TRY(tm_model_graph_forward(tg));
        TRY(tm_model_graph_backward(tg));
        int apply = 1;
        if (prec == TM_F16) {
            int fin = 0;
            TRY(tm_loss_scaler_unscale(&ls, tm_model_grads(m, NULL), n, &fin));
            apply = tm_loss_scaler_update(&ls, fin);
        }
        if (apply)
            TRY(tm_optim_step(opt, tm_model_params(m, NULL), tm_model_grads(m, NULL),
                              TM_OPTIM_LR_DEFAULT));
    }
    *skipped = ls.skipped;
    tm_model_inputs vin = tm_model_graph_inputs(vg);
    int64_t vsize = va.size(va.ctx), right = 0, total = 0;
    int C = (int)tm_model_get_info(m).num_classes;
    for (int64_t i = 0; i + 64 <= vsize; i += 64) {
        TRY(va.fill(va.ctx, 0, i, 64, &vin, 64));
        TRY(tm_model_graph_forward(vg));
        const float *lg = tm_model_graph_logits(vg);
        for (int b = 0; b < 64; b++) {
            if (vin.labels[b] < 0) continue;
            int best = 0;
            for (int c = 1; c < C; c++)
                if (lg[b * C + c] > lg[b * C + best]) best = c;
            right += best == vin.labels[b];
            total++;
        }
    }
    if (tr.close) tr.close(tr.ctx);
    if (va.close) va.close(va.ctx);
    tm_optim_free(opt);
    tm_model_graph_free(tg);
    tm_model_graph_free(vg);
    tm_model_free(m);
    return total ? 100.0 * (double)right / (double)total : 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s RUN_CONFIG [STEPS]\n", argv[0]);
        return 2;
    }
    int64_t steps = argc > 2 ? atoll(argv[2]) : 200;
    tm_run_config *cfg = NULL;
    TRY(tm_run_config_load(&cfg, argv[1]));
    const tm_dtype ps[3] = {TM_F32, TM_BF16, TM_F16};
    for (int i = 0; i < 3; i++) {
        int64_t skipped = 0;
        double acc = run(cfg, ps[i], steps, &skipped);
        printf("%s: validation accuracy %.2f%% after %lld steps (skipped %lld)\n",
               tm_dtype_name(ps[i]), acc, (long long)steps, (long long)skipped);
        fflush(stdout);
    }
    tm_run_config_free(cfg);
    return 0;
}
