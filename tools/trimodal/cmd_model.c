/* trimodal init, inspect (of a model or a config) and bench: the model
 * commands of the CLI, over the public API only. Exit status: 0 ok, 1 bad
 * input or failure, 2 bad usage. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "trimodal/graph.h"
#include "trimodal/model.h"
#include "trimodal/optim.h"

static int usage(const char *cmd, const char *fmt, const char *arg)
{
    fprintf(stderr, "trimodal %s: ", cmd);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nRun 'trimodal %s --help' for usage.\n", cmd);
    return 2;
}

static int failed(const char *cmd)
{
    fprintf(stderr, "trimodal %s: %s\n", cmd, tm_last_error());
    return 1;
}

static void json_str(const char *s)
{
    putchar('"');
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

/* 12345678 -> "12,345,678" */
static const char *commas(int64_t v, char *buf)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%lld", (long long)(v < 0 ? -v : v)), k = 0;
    if (v < 0) buf[k++] = '-';
    for (int i = 0; i < n; i++) {
        buf[k++] = tmp[i];
        if ((n - i - 1) % 3 == 0 && i < n - 1) buf[k++] = ',';
    }
    buf[k] = 0;
    return buf;
}

static int is_dir(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* A model from a folder (config.json + model.safetensors) or a config. */
static tm_status open_model(const char *path, int weights, tm_model **m)
{
    if (is_dir(path)) {
        if (weights) return tm_model_load(m, path);
        char cfg[4096];
        snprintf(cfg, sizeof cfg, "%s/config.json", path);
        return tm_model_new_from_config(m, cfg);
    }
    return tm_model_new_from_config(m, path);
}

static int parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

/* ------------------------------------------------------------------ init */

static const char *init_help =
    "usage: trimodal init --config CONFIG -o MODEL_DIR [--seed S] [--json]\n"
    "\n"
    "Writes a model folder with fresh weights: MODEL_DIR/config.json (the config,\n"
    "with every default filled in) and MODEL_DIR/model.safetensors.\n"
    "Initialisation follows PyTorch's defaults (see docs/models.md): Linear and Conv\n"
    "weights and biases uniform in +-1/sqrt(fan_in); LayerNorm 1 and 0; token\n"
    "embeddings N(0, 1); CLS tokens, learned positions and type embeddings\n"
    "N(0, 0.02); logit_scale its configured start; fixed positional tables by\n"
    "formula. The weights are a pure function of the seed (default 0).\n";

int cmd_init(int argc, char **argv, int json)
{
    const char *config = NULL, *out = NULL;
    int64_t seed = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(init_help, stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--config") || !strcmp(a, "-o") || !strcmp(a, "--output") ||
                   !strcmp(a, "--seed")) {
            if (i + 1 >= argc) return usage("init", "%s needs a value", a);
            const char *v = argv[++i];
            if (!strcmp(a, "--config")) config = v;
            else if (!strcmp(a, "--seed")) {
                if (!parse_i64(v, 0, INT64_MAX, &seed))
                    return usage("init", "--seed must be a non-negative integer, got '%s'", v);
            } else {
                out = v;
            }
        } else {
            return usage("init", "unknown argument '%s'", a);
        }
    }
    if (!config) return usage("init", "%s", "give --config CONFIG");
    if (!out) return usage("init", "%s", "give -o MODEL_DIR");
    tm_model *m = NULL;
    if (tm_model_new_from_config(&m, config) || tm_model_init_weights(m, (uint64_t)seed) ||
        tm_model_save(m, out)) {
        tm_model_free(m);
        return failed("init");
    }
    char b1[32];
    size_t n = tm_model_trainable_count(m), total;
    tm_model_params(m, &total);
    if (json) {
        printf("{\"model_dir\":");
        json_str(out);
        printf(",\"config\":");
        json_str(config);
        printf(",\"params\":%zu,\"fixed\":%zu,\"tensors\":%d,\"seed\":%lld}\n", n, total - n,
               tm_model_tensor_count(m), (long long)seed);
    } else {
        printf("wrote %s: %s parameters in %d tensors (%.1f MB), seed %lld\n", out,
               commas((int64_t)n, b1), tm_model_tensor_count(m), (double)total * 4 / 1e6,
               (long long)seed);
    }
    tm_model_free(m);
    return 0;
}

/* --------------------------------------------------------------- inspect */

/* The module a tensor belongs to, for the table: "text.layers" for every
 * block of the text stack, "text.tok_emb", ..., "proj_text", "logit_scale". */
static void group_of(const char *name, char *out, size_t size)
{
    const char *d1 = strchr(name, '.');
    if (!d1) {
        snprintf(out, size, "%s", name);
        return;
    }
    const char *d2 = strchr(d1 + 1, '.');
    size_t n = d2 ? (size_t)(d2 - name) : strlen(name);
    /* names ending in .weight/.bias belong to their layer */
    if (!d2 && (!strcmp(d1, ".weight") || !strcmp(d1, ".bias"))) n = (size_t)(d1 - name);
    if (n >= size) n = size - 1;
    memcpy(out, name, n);
    out[n] = 0;
}

typedef struct {
    char name[96];
    int64_t params;
    int tensors;
    int fixed;
    int blocks; /* for ".layers" groups */
} group;

/* Bytes a graph of this model and mode needs for its activations. */
static double arena_mb(tm_model *m, int64_t batch, tm_model_mode mode)
{
    tm_model_graph *g = NULL;
    if (tm_model_graph_new(&g, m, batch, mode)) return -1;
    double mb = (double)tm_graph_arena_bytes(tm_model_graph_graph(g)) / 1e6;
    tm_model_graph_free(g);
    return mb;
}

int cmd_inspect_model(const char *path, int json)
{
    tm_model *m = NULL;
    /* a folder's weights are checked against the config as they load */
    if (open_model(path, is_dir(path), &m)) return failed("inspect");
    tm_model_info in = tm_model_get_info(m);
    int nt = tm_model_tensor_count(m);
    group *gs = calloc((size_t)nt + 1, sizeof *gs);
    int ng = 0;
    if (!gs) {
        tm_model_free(m);
        fprintf(stderr, "trimodal inspect: out of memory\n");
        return 1;
    }
    for (int i = 0; i < nt; i++) {
        tm_model_tensor t;
        tm_model_tensor_at(m, i, &t);
        char gname[96];
        group_of(t.name, gname, sizeof gname);
        int k = 0;
        while (k < ng && strcmp(gs[k].name, gname)) k++;
        if (k == ng) snprintf(gs[ng++].name, sizeof gs[0].name, "%s", gname);
        gs[k].params += (int64_t)t.numel;
        gs[k].tensors++;
        gs[k].fixed |= t.frozen;
        const char *ly = strstr(t.name, ".layers.");
        if (ly) {
            int b = atoi(ly + 8) + 1;
            if (b > gs[k].blocks) gs[k].blocks = b;
        }
    }
    size_t trainable = tm_model_trainable_count(m), total;
    tm_model_params(m, &total);
    double w_mb = (double)total * 4 / 1e6, t_mb = (double)trainable * 4 / 1e6;
    double inf32 = in.num_classes ? arena_mb(m, 32, TM_MODEL_CLASSIFY)
                                  : arena_mb(m, 32, TM_MODEL_EMBED);
    double inf1 = in.num_classes ? arena_mb(m, 1, TM_MODEL_CLASSIFY) : arena_mb(m, 1, TM_MODEL_EMBED);
    double tr32 = arena_mb(m, 32, TM_MODEL_TRAIN);
    /* training: weights, gradients, AdamW's two moments, activations */
    double train_total = w_mb + 3 * t_mb + tr32;
    char *cfg = tm_model_config_json(m), *flat = NULL;
    cJSON *cj = cfg ? cJSON_Parse(cfg) : NULL;
    if (cj) flat = cJSON_PrintUnformatted(cj);
    cJSON_Delete(cj);
    if (json) {
        printf("{\"path\":");
        json_str(path);
        printf(",\"name\":");
        json_str(in.name);
        printf(",\"modalities\":[");
        for (int i = 0; i < in.n_modalities; i++) printf("%s\"%s\"", i ? "," : "", in.modality[i]);
        printf("],\"fusion\":\"%s\",\"dim\":%lld,\"num_classes\":%lld,\"embed_dim\":%lld,"
               "\"params\":%zu,\"fixed\":%zu,\"tensors\":%d,\"modules\":[",
               in.fusion, (long long)in.dim, (long long)in.num_classes, (long long)in.embed_dim,
               trainable, total - trainable, nt);
        for (int k = 0; k < ng; k++) {
            printf("%s{\"module\":", k ? "," : "");
            json_str(gs[k].name);
            printf(",\"params\":%lld,\"tensors\":%d,\"fixed\":%s", (long long)gs[k].params,
                   gs[k].tensors, gs[k].fixed ? "true" : "false");
            if (gs[k].blocks) printf(",\"blocks\":%d", gs[k].blocks);
            printf("}");
        }
        printf("],\"memory_mb\":{\"weights\":%.1f,\"infer_batch1\":%.1f,\"infer_batch32\":%.1f,"
               "\"train_batch32\":%.1f,\"train_activations_batch32\":%.1f},\"config\":%s}\n",
               w_mb, w_mb + inf1, w_mb + inf32, train_total, tr32, flat ? flat : "null");
    } else {
        char b1[32], b2[32];
        printf("model %s (%s fusion, width %lld)\n", in.name && *in.name ? in.name : path,
               in.fusion, (long long)in.dim);
        printf("inputs:");
        if (in.text_tokens)
            printf(" tokens (B, %lld) of %lld ids (pad %d);", (long long)in.text_tokens,
                   (long long)in.vocab_size, (int)in.pad_id);
        if (in.image_h)
            printf(" image (B, %lld, %lld, %lld);", (long long)in.image_channels,
                   (long long)in.image_h, (long long)in.image_w);
        if (in.n_mels)
            printf(" log-mel (B, %lld, %lld);", (long long)in.n_mels, (long long)in.n_frames);
        printf("\nheads:%s", in.num_classes ? "" : " no classifier;");
        if (in.num_classes) printf(" classifier (%lld classes);", (long long)in.num_classes);
        if (in.embed_dim) printf(" contrastive (%lld-d, %d modalities)", (long long)in.embed_dim,
                                 in.n_modalities);
        printf("\n\n%-28s %8s %14s\n", "module", "tensors", "parameters");
        for (int k = 0; k < ng; k++) {
            char label[128];
            if (gs[k].blocks) snprintf(label, sizeof label, "%s (%d blocks)", gs[k].name, gs[k].blocks);
            else snprintf(label, sizeof label, "%s%s", gs[k].name, gs[k].fixed ? " (fixed)" : "");
            printf("%-28s %8d %14s\n", label, gs[k].tensors, commas(gs[k].params, b1));
        }
        printf("\n%s trainable parameters, %s fixed (%d tensors)\n", commas((int64_t)trainable, b1),
               commas((int64_t)(total - trainable), b2), nt);
        printf("\nmemory (f32):\n");
        printf("  weights                    %9.1f MB\n", w_mb);
        printf("  inference, batch 1         %9.1f MB (weights + %.1f MB activations)\n",
               w_mb + inf1, inf1);
        printf("  inference, batch 32        %9.1f MB (weights + %.1f MB activations)\n",
               w_mb + inf32, inf32);
        printf("  training, batch 32         %9.1f MB (weights, gradients, AdamW moments %.1f MB,"
               " activations %.1f MB)\n",
               train_total, 2 * t_mb, tr32);
    }
    tm_free(cfg);
    cJSON_free(flat);
    free(gs);
    tm_model_free(m);
    return 0;
}

/* ----------------------------------------------------------------- bench */

static const char *bench_help =
    "usage: trimodal bench infer|train --config CONFIG [--batch B] [--threads T]\n"
    "                     [--dtype DTYPE] [--reps N] [--warmup N] [--json]\n"
    "\n"
    "Times the model of CONFIG (a config file, or a model folder) on random inputs of\n"
    "its shapes and fresh weights (seed 0).\n"
    "  infer  the classification forward (the embedding forward for a model without\n"
    "         a classifier); reports latency p50/p95/p99 and samples/s\n"
    "  train  one training step: forward, loss, backward, AdamW update (lr 1e-3,\n"
    "         betas 0.9/0.999, eps 1e-8, weight decay 0.01); reports the step's median\n"
    "         and p95 and samples/s\n"
    "--dtype for train: the precision of the matmuls, linears and convs (mixed\n"
    "precision):\n"
    "  f32   everything in f32 (the default)\n"
    "  bf16  GEMM operands rounded to bf16, f32 accumulation, f32 master weights\n"
    "        (AVX-512-BF16 where the CPU has it, an exact emulation elsewhere)\n"
    "  f16   the same in f16; train adds dynamic loss scaling (skipped steps are\n"
    "        counted in the output)\n"
    "--dtype for infer: how the linear weights are prepared (docs/quantization.md):\n"
    "  f32    packed once into the f32 GEMM's panels (the default; the same\n"
    "         results as plain)\n"
    "  plain  f32, read from the parameter buffer at every product\n"
    "  bf16   bf16 weights, f32 activations and sums\n"
    "  int8   int8 weights per output channel, activations quantised per row,\n"
    "         exact i32 sums (AVX512-VNNI, AVX-VNNI or AVX2, else plain C)\n"
    "  f16    mixed precision as for train (operands rounded to f16)\n"
    "Defaults: batch 32, the library's thread count, f32, 10 timed repetitions\n"
    "(50 for infer at batch <= 4) after 2 warm-up ones.\n"
    "--json prints one line: {\"bench\",\"batch\",\"threads\",\"dtype\",\"params\",...}.\n";

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const double *sorted, int n, double q)
{
    double k = (n - 1) * q;
    int lo = (int)k, hi = lo + 1 < n ? lo + 1 : lo;
    return sorted[lo] + (sorted[hi] - sorted[lo]) * (k - lo);
}

/* Random inputs of the model's shapes: tokens 1..V-1 with padding at the
 * end of each example, N(0,1) images and mels, labels in range. */
static void random_inputs(tm_model_graph *g, const tm_model_info *in)
{
    tm_model_inputs x = tm_model_graph_inputs(g);
    int64_t B = tm_model_graph_batch(g);
    tm_rng r = tm_rng_new(1, 0);
    for (int64_t b = 0; x.tokens && b < B; b++) {
        int64_t T = in->text_tokens, real = T - (b * 5) % (T / 2 + 1);
        for (int64_t t = 0; t < T; t++) {
            int32_t id = (int32_t)(1 + tm_rng_u32(&r) % (uint32_t)(in->vocab_size - 1));
            if (id == in->pad_id) id = (id + 1) % (int32_t)in->vocab_size;
            x.tokens[b * T + t] = t < real ? id : in->pad_id;
        }
    }
    if (x.image)
        tm_rng_fill_normal(&r, x.image, B * in->image_channels * in->image_h * in->image_w, 0, 1);
    if (x.mel) tm_rng_fill_normal(&r, x.mel, B * in->n_mels * in->n_frames, 0, 1);
    for (int64_t b = 0; x.labels && b < B; b++)
        x.labels[b] = (int32_t)(tm_rng_u32(&r) % (uint32_t)in->num_classes);
}

int cmd_bench(int argc, char **argv, int json)
{
    const char *mode = NULL, *config = NULL, *dtype = "f32";
    int64_t batch = 32, threads = 0, reps = -1, warmup = 2;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(bench_help, stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--config") || !strcmp(a, "--batch") || !strcmp(a, "--threads") ||
                   !strcmp(a, "--dtype") || !strcmp(a, "--reps") || !strcmp(a, "--warmup")) {
            if (i + 1 >= argc) return usage("bench", "%s needs a value", a);
            const char *v = argv[++i];
            int ok = 1;
            if (!strcmp(a, "--config")) config = v;
            else if (!strcmp(a, "--dtype")) dtype = v;
            else if (!strcmp(a, "--batch")) ok = parse_i64(v, 1, 1 << 16, &batch);
            else if (!strcmp(a, "--threads")) ok = parse_i64(v, 1, 256, &threads);
            else if (!strcmp(a, "--reps")) ok = parse_i64(v, 1, 100000, &reps);
            else ok = parse_i64(v, 0, 100000, &warmup);
            if (!ok) return usage("bench", "bad value '%s'", v);
        } else if (!mode && (!strcmp(a, "infer") || !strcmp(a, "train"))) {
            mode = a;
        } else {
            return usage("bench", "unknown argument '%s'", a);
        }
    }
    if (!mode) return usage("bench", "%s", "say what to time: infer or train");
    if (!config) return usage("bench", "%s", "give --config CONFIG");
    int train = !strcmp(mode, "train");
    tm_dtype prec = TM_F32;
    tm_weights wfmt = TM_WEIGHTS_PLAIN; /* infer: prepared weights */
    if (!train && strcmp(dtype, "f16")) {
        int w = tm_weights_from_name(dtype);
        if (w < 0)
            return usage("bench", "unknown --dtype '%s' for infer (use f32, plain, bf16, int8 "
                         "or f16)", dtype);
        wfmt = (tm_weights)w;
    } else if (!strcmp(dtype, "bf16")) {
        prec = TM_BF16;
    } else if (!strcmp(dtype, "f16")) {
        prec = TM_F16;
    } else if (strcmp(dtype, "f32")) {
        return usage("bench", "unknown --dtype '%s' (use f32, bf16 or f16)", dtype);
    }
    if (reps < 0) reps = !train && batch <= 4 ? 50 : 10;
    if (threads && tm_set_num_threads((int)threads)) return failed("bench");
    tm_model *m = NULL;
    tm_model_graph *g = NULL;
    tm_optim *opt = NULL;
    double *ms = calloc((size_t)reps, sizeof *ms);
    int rc = 1;
    if (!ms || open_model(config, 0, &m) || tm_model_init_weights(m, 0) ||
        tm_model_set_weights(m, wfmt))
        goto done;
    tm_model_info in = tm_model_get_info(m);
    tm_model_mode gm = train ? TM_MODEL_TRAIN : in.num_classes ? TM_MODEL_CLASSIFY : TM_MODEL_EMBED;
    tm_model_graph_opts gopts = tm_model_graph_default_opts();
    gopts.precision = (int)prec;
    if (tm_model_graph_new_opts(&g, m, batch, gm, &gopts)) goto done;
    random_inputs(g, &in);
    tm_loss_scaler scaler;
    int scaled = train && prec == TM_F16;
    if (scaled && tm_loss_scaler_init(&scaler, tm_loss_scaler_default_params())) goto done;
    size_t n_train = tm_model_trainable_count(m);
    if (train) {
        tm_optim_params op = tm_optim_default_params(TM_OPTIM_ADAMW);
        op.lr = 1e-3f;
        op.weight_decay = 0.01f;
        if (tm_optim_new(&opt, op, n_train)) goto done;
    }
    for (int64_t i = 0; i < warmup + reps; i++) {
        double t0 = tm_time_s();
        if (scaled && tm_graph_set_loss_scale(tm_model_graph_graph(g),
                                              tm_loss_scaler_scale(&scaler)))
            goto done;
        if (tm_model_graph_forward(g)) goto done;
        if (train && tm_model_graph_backward(g)) goto done;
        int apply = train;
        if (scaled) {
            int finite = 0;
            if (tm_loss_scaler_unscale(&scaler, tm_model_grads(m, NULL), n_train, &finite))
                goto done;
            apply = tm_loss_scaler_update(&scaler, finite);
        }
        if (apply &&
            tm_optim_step(opt, tm_model_params(m, NULL), tm_model_grads(m, NULL),
                          TM_OPTIM_LR_DEFAULT))
            goto done;
        double dt = (tm_time_s() - t0) * 1e3;
        if (i >= warmup) ms[i - warmup] = dt;
    }
    qsort(ms, (size_t)reps, sizeof *ms, cmp_double);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double rss = (double)ru.ru_maxrss / 1024.0, med = pct(ms, (int)reps, 0.5);
    int nt = tm_get_num_threads();
    if (json) {
        printf("{\"bench\":\"%s\",\"batch\":%lld,\"threads\":%d,\"dtype\":\"%s\",\"params\":%zu,",
               mode, (long long)batch, nt, train ? tm_dtype_name(prec) : dtype, n_train);
        if (scaled)
            printf("\"loss_scale\":%g,\"skipped_steps\":%lld,", (double)scaler.scale,
                   (long long)scaler.skipped);
        if (train)
            printf("\"step_ms_median\":%.3f,\"step_ms_p95\":%.3f,", med, pct(ms, (int)reps, 0.95));
        else
            printf("\"latency_ms_p50\":%.3f,\"latency_ms_p95\":%.3f,\"latency_ms_p99\":%.3f,", med,
                   pct(ms, (int)reps, 0.95), pct(ms, (int)reps, 0.99));
        printf("\"samples_per_s\":%.2f,\"peak_rss_mb\":%.1f,\"reps\":%lld}\n",
               (double)batch * 1e3 / med, rss, (long long)reps);
    } else if (train) {
        printf("train %s: batch %lld, %d threads, %s: step %.1f ms median (p95 %.1f), "
               "%.1f samples/s, peak RSS %.0f MB\n", in.name && *in.name ? in.name : config,
               (long long)batch, nt, tm_dtype_name(prec), med, pct(ms, (int)reps, 0.95), (double)batch * 1e3 / med, rss);
    } else {
        printf("infer %s: batch %lld, %d threads, %s: latency %.2f ms p50, %.2f p95, %.2f p99; "
               "%.1f samples/s, peak RSS %.0f MB\n", in.name && *in.name ? in.name : config,
               (long long)batch, nt, dtype, med, pct(ms, (int)reps, 0.95), pct(ms, (int)reps, 0.99),
               (double)batch * 1e3 / med, rss);
    }
    rc = 0;
done:
    if (rc) failed("bench");
    free(ms);
    tm_optim_free(opt);
    tm_model_graph_free(g);
    tm_model_free(m);
    return rc;
}
