/*
 * Quantized model folders (tm_model_quantize, tm_model_load) and the
 * prepared weights of a model's inference graphs, on the tiny model of
 * tests/data/model/tiny:
 * - int8 folder: about 3x smaller, every quantized weight within half a
 *   step (max|row| / 254) of the f32 one; it loads with quantization
 *   "int8" and int8 graphs; its logits and embeddings are within 0.05 +
 *   5% of the largest |logit| of the f32 model's (embeddings: cosine >
 *   0.99 for every row);
 * - bf16 folder: 2x smaller on its weights, logits within 0.01 + 1%;
 * - f32 packed weights (tm_model_set_weights TM_WEIGHTS_F32) give the
 *   plain logits bit for bit; TRIMODAL_WEIGHTS picks the format at load;
 * - bad input: the output folder = the input folder, a bad format, a
 *   missing folder, and damaged int8 files (I8 without the metadata, an
 *   unknown quantization, scales of the wrong shape, a negative scale,
 *   scales with no weight) fail with messages that say what is wrong.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testutil.h"
#include "trimodal/io.h"
#include "trimodal/model.h"

#define BATCH 3
static char tmpdir[256];

typedef struct {
    float logits[BATCH * 64];
    float emb[4][BATCH * 64];
    int64_t C, D, M;
    int prepared;
} outputs;

static void fill(tm_model_graph *g, const tm_model_info *in)
{
    tm_model_inputs x = tm_model_graph_inputs(g);
    int64_t T = in->text_tokens;
    for (int64_t i = 0; i < BATCH * T; i++)
        x.tokens[i] = (i % T) < T - (i / T) ? (int32_t)(1 + (i * 7) % (in->vocab_size - 1)) : 0;
    test_fill_uniform(x.image, BATCH * in->image_channels * in->image_h * in->image_w, 11, -2, 2);
    test_fill_uniform(x.mel, BATCH * in->n_mels * in->n_frames, 12, -2, 2);
}

static int run(tm_model *m, outputs *o)
{
    memset(o, 0, sizeof *o);
    tm_model_info in = tm_model_get_info(m);
    o->C = in.num_classes;
    o->D = in.embed_dim;
    o->M = in.n_modalities;
    tm_model_graph *g = NULL;
    if (tm_model_graph_new(&g, m, BATCH, TM_MODEL_CLASSIFY)) return 0;
    o->prepared = tm_graph_prepared_count(tm_model_graph_graph(g));
    fill(g, &in);
    int ok = !tm_model_graph_forward(g);
    if (ok) memcpy(o->logits, tm_model_graph_logits(g), BATCH * o->C * sizeof(float));
    tm_model_graph_free(g);
    if (!ok || tm_model_graph_new(&g, m, BATCH, TM_MODEL_EMBED)) return 0;
    fill(g, &in);
    ok = !tm_model_graph_forward(g);
    for (int i = 0; ok && i < o->M; i++)
        memcpy(o->emb[i], tm_model_graph_embeddings(g, i), BATCH * o->D * sizeof(float));
    tm_model_graph_free(g);
    return ok;
}

static void compare(const char *what, const outputs *a, const outputs *ref, double atol,
                    double rtol_of_max)
{
    double mx = 0, worst = 0;
    for (int64_t i = 0; i < BATCH * ref->C; i++) mx = fmax(mx, fabs(ref->logits[i]));
    for (int64_t i = 0; i < BATCH * ref->C; i++)
        worst = fmax(worst, fabs(a->logits[i] - ref->logits[i]));
    double mincos = 1;
    for (int64_t m = 0; m < ref->M; m++)
        for (int64_t b = 0; b < BATCH; b++) {
            double d = 0, na = 0, nb = 0;
            for (int64_t j = 0; j < ref->D; j++) {
                double x = a->emb[m][b * ref->D + j], y = ref->emb[m][b * ref->D + j];
                d += x * y;
                na += x * x;
                nb += y * y;
            }
            mincos = fmin(mincos, d / sqrt(na * nb + 1e-30));
        }
    printf("%s: max |logit diff| %.5f (max |logit| %.3f), min embedding cosine %.6f\n", what,
           worst, mx, mincos);
    CHECK(worst <= atol + rtol_of_max * mx);
    CHECK(mincos > 0.99);
}

static uint64_t fsize(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 ? (uint64_t)sb.st_size : 0;
}

/* Copies the tensors of src's model.safetensors to dir/model.safetensors
 * (with config.json), changing the metadata value and/or replacing the
 * tensor `swap` by *with. */
static void write_variant(const char *src, const char *dir, const char *quant, const char *swap,
                          const tm_tensor *with)
{
    char p[512];
    mkdir(dir, 0777);
    snprintf(p, sizeof p, "%s/config.json", src);
    char *cfg = NULL;
    size_t n = 0;
    CHECK_OK(tm_read_file(p, 1 << 20, &cfg, &n));
    snprintf(p, sizeof p, "%s/config.json", dir);
    CHECK_OK(tm_write_file_atomic(p, cfg, n));
    tm_free(cfg);
    tm_safetensors *st;
    snprintf(p, sizeof p, "%s/model.safetensors", src);
    CHECK_OK(tm_safetensors_open(&st, p));
    int nt = tm_safetensors_count(st);
    tm_tensor *ts = calloc((size_t)nt, sizeof *ts);
    tm_named_tensor *named = calloc((size_t)nt, sizeof *named);
    for (int i = 0; i < nt; i++) {
        named[i].name = tm_safetensors_name(st, i);
        CHECK_OK(tm_safetensors_get_at(st, i, &ts[i]));
        named[i].tensor = swap && !strcmp(named[i].name, swap) ? with : &ts[i];
    }
    const char *k[] = {"quantization"}, *v[] = {quant};
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    CHECK_OK(tm_safetensors_write(p, named, nt, k, v, quant ? 1 : 0));
    free(ts);
    free(named);
    tm_safetensors_close(st);
}

static void expect_load_error(const char *dir, const char *needle)
{
    tm_model *m = NULL;
    CHECK_STATUS(tm_model_load(&m, dir), TM_ERR_FORMAT);
    if (!strstr(tm_last_error(), needle))
        fprintf(stderr, "message '%s' lacks '%s'\n", tm_last_error(), needle);
    CHECK(strstr(tm_last_error(), needle) != NULL);
    CHECK(m == NULL);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/tm_test_quant_XXXXXX");
    CHECK(mkdtemp(tmpdir) != NULL);
    char src[400], d8[400], d16[400], p[512];
    snprintf(src, sizeof src, "%s", test_data_path("model/tiny"));
    snprintf(d8, sizeof d8, "%s/int8", tmpdir);
    snprintf(d16, sizeof d16, "%s/bf16", tmpdir);

    tm_model *f = NULL;
    CHECK_OK(tm_model_load(&f, src));
    if (!f) return test_finish("quant");
    CHECK(tm_model_quantization(f) == NULL && tm_model_weights(f) == TM_WEIGHTS_PLAIN);
    outputs ref, o;
    CHECK(run(f, &ref));
    CHECK(ref.prepared == 0);

    /* packed f32: the same bits */
    CHECK_OK(tm_model_set_weights(f, TM_WEIGHTS_F32));
    CHECK(run(f, &o));
    CHECK(o.prepared > 0);
    CHECK(!memcmp(o.logits, ref.logits, sizeof o.logits) && !memcmp(o.emb, ref.emb, sizeof o.emb));
    CHECK_STATUS(tm_model_set_weights(f, (tm_weights)7), TM_ERR_INVALID);
    CHECK_OK(tm_model_set_weights(f, TM_WEIGHTS_PLAIN));

    /* int8 */
    tm_quantize_report r;
    CHECK_OK(tm_model_quantize(src, d8, TM_WEIGHTS_I8, &r));
    printf("int8: %llu -> %llu bytes, %lld quantized, %lld kept, max error %g\n",
           (unsigned long long)r.bytes_before, (unsigned long long)r.bytes_after,
           (long long)r.tensors_quantized, (long long)r.tensors_kept, r.max_abs_error);
    CHECK(r.tensors_quantized > 10 && r.tensors_kept > 10);
    CHECK(r.bytes_after > 0 && r.bytes_after * 2.5 < r.bytes_before);
    snprintf(p, sizeof p, "%s/config.json", d8);
    CHECK(fsize(p) > 0);
    tm_model *q = NULL;
    CHECK_OK(tm_model_load(&q, d8));
    if (q) {
        CHECK(!strcmp(tm_model_quantization(q), "int8") && tm_model_weights(q) == TM_WEIGHTS_I8);
        /* every weight within half a quantisation step of the original */
        int ok = 1, changed = 0;
        for (int i = 0; i < tm_model_tensor_count(f); i++) {
            tm_model_tensor t;
            tm_model_tensor_at(f, i, &t);
            const float *a = tm_model_params(f, NULL) + t.offset, *b = tm_model_params(q, NULL) + t.offset;
            int64_t rows = t.ndim ? t.shape[0] : 1, inner = (int64_t)t.numel / rows;
            for (int64_t rr = 0; rr < rows; rr++) {
                float mx = 0;
                for (int64_t j = 0; j < inner; j++) mx = fmaxf(mx, fabsf(a[rr * inner + j]));
                for (int64_t j = 0; j < inner; j++) {
                    float d = fabsf(a[rr * inner + j] - b[rr * inner + j]);
                    ok &= d <= mx / 254.0f * 1.001f + 1e-12f;
                    changed |= d > 0;
                }
            }
        }
        CHECK(ok);
        CHECK(changed);
        CHECK(run(q, &o));
        CHECK(o.prepared == ref.prepared + 0 || o.prepared > 0);
        compare("int8 folder (int8 kernels)", &o, &ref, 0.05, 0.05);
        /* the same folder with plain f32 graphs: only the weights rounded */
        CHECK_OK(tm_model_set_weights(q, TM_WEIGHTS_PLAIN));
        outputs o2;
        CHECK(run(q, &o2));
        compare("int8 folder (f32 kernels)", &o2, &ref, 0.05, 0.05);
        tm_model_free(q);
    }
    /* an int8 folder quantizes again to the same values */
    char d8b[400];
    snprintf(d8b, sizeof d8b, "%s/int8b", tmpdir);
    tm_quantize_report r2;
    CHECK_OK(tm_model_quantize(d8, d8b, TM_WEIGHTS_I8, &r2));
    CHECK(r2.bytes_after == r.bytes_after);

    /* bf16 */
    CHECK_OK(tm_model_quantize(src, d16, TM_WEIGHTS_BF16, &r));
    printf("bf16: %llu -> %llu bytes\n", (unsigned long long)r.bytes_before,
           (unsigned long long)r.bytes_after);
    CHECK(r.bytes_after * 1.6 < r.bytes_before);
    CHECK_OK(tm_model_load(&q, d16));
    if (q) {
        CHECK(!strcmp(tm_model_quantization(q), "bf16") && tm_model_weights(q) == TM_WEIGHTS_BF16);
        CHECK(run(q, &o));
        CHECK(o.prepared > 0);
        compare("bf16 folder", &o, &ref, 0.01, 0.01);
        tm_model_free(q);
    }

    /* TRIMODAL_WEIGHTS */
    setenv("TRIMODAL_WEIGHTS", "int8", 1);
    CHECK_OK(tm_model_load(&q, src));
    CHECK(tm_model_weights(q) == TM_WEIGHTS_I8);
    tm_model_free(q);
    setenv("TRIMODAL_WEIGHTS", "int4", 1);
    CHECK_STATUS(tm_model_load(&q, src), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "TRIMODAL_WEIGHTS") != NULL);
    unsetenv("TRIMODAL_WEIGHTS");

    /* bad arguments */
    CHECK_STATUS(tm_model_quantize(src, src, TM_WEIGHTS_I8, NULL), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "input folder") != NULL);
    CHECK_STATUS(tm_model_quantize(src, d8, TM_WEIGHTS_F32, NULL), TM_ERR_INVALID);
    snprintf(p, sizeof p, "%s/none", tmpdir);
    CHECK(tm_model_quantize(p, d8, TM_WEIGHTS_I8, NULL) != TM_OK);
    CHECK(strstr(tm_last_error(), "none") != NULL);

    /* damaged int8 folders */
    snprintf(p, sizeof p, "%s/bad1", tmpdir);
    write_variant(d8, p, NULL, NULL, NULL);
    expect_load_error(p, "\"quantization\": \"int8\"");
    snprintf(p, sizeof p, "%s/bad2", tmpdir);
    write_variant(d8, p, "int4", NULL, NULL);
    expect_load_error(p, "int4");
    float bad_scale[7] = {1, 1, 1, 1, 1, 1, 1};
    tm_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = TM_F32;
    t.ndim = 1;
    t.shape[0] = 7;
    t.stride[0] = 1;
    t.data = bad_scale;
    snprintf(p, sizeof p, "%s/bad3", tmpdir);
    write_variant(d8, p, "int8", "text.layers.0.attn.qkv.weight.qscale", &t);
    expect_load_error(p, "must be F32 of shape (96)");
    float neg[96];
    for (int i = 0; i < 96; i++) neg[i] = i == 5 ? -1.0f : 0.01f;
    t.shape[0] = 96;
    t.data = neg;
    snprintf(p, sizeof p, "%s/bad4", tmpdir);
    write_variant(d8, p, "int8", "text.layers.0.attn.qkv.weight.qscale", &t);
    expect_load_error(p, "scales must be finite");
    snprintf(p, sizeof p, "%s/bad5", tmpdir);
    write_variant(d8, p, "int8", "text.layers.0.attn.qkv.bias", &t); /* F32 bias kept, fine */
    tm_model *ok_m = NULL;
    CHECK_OK(tm_model_load(&ok_m, p));
    tm_model_free(ok_m);

    tm_model_free(f);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_finish("quant");
}
