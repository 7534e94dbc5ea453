/*
 * The model layer: bench-small's exact parameter table, config validation
 * messages, init, save/load of the model folder (round trip, and the
 * errors of a file that does not fit the config), and missing modalities:
 * a missing modality's data, or another example's data, never changes an
 * example's outputs (so masked positions get no attention weight), and a
 * batch without a modality pair still gives a finite loss.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "trimodal/io.h"
#include "trimodal/model.h"
#include "trimodal/nn.h"

static char tmpdir[256];

/* --------------------------------------------------------- bench-small */

static void test_bench_small(void)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/configs/bench-small.json",
             getenv("TM_SOURCE_DIR") ? getenv("TM_SOURCE_DIR") : ".");
    tm_model *m = NULL;
    CHECK_OK(tm_model_new_from_config(&m, path));
    if (!m) return;
    CHECK(tm_model_trainable_count(m) == 13533707);
    size_t n;
    tm_model_params(m, &n);
    CHECK(n == 13533707 + 50 * 256); /* + the fixed audio positions */
    static const struct {
        const char *name;
        int ndim;
        int64_t s0, s1, s2;
    } want[] = {
        {"text.tok_emb.weight", 2, 8192, 256, 0},
        {"text.pos_emb", 2, 32, 256, 0},
        {"text.layers.0.ln1.weight", 1, 256, 0, 0},
        {"text.layers.3.attn.qkv.weight", 2, 768, 256, 0},
        {"text.layers.3.attn.qkv.bias", 1, 768, 0, 0},
        {"text.layers.2.attn.out.weight", 2, 256, 256, 0},
        {"text.layers.1.mlp.fc1.weight", 2, 1024, 256, 0},
        {"text.layers.1.mlp.fc2.weight", 2, 256, 1024, 0},
        {"text.ln.bias", 1, 256, 0, 0},
        {"vision.patch.weight", 4, 256, 1, 4},
        {"vision.patch.bias", 1, 256, 0, 0},
        {"vision.cls", 2, 1, 256, 0},
        {"vision.pos_emb", 2, 65, 256, 0},
        {"vision.layers.3.ln2.bias", 1, 256, 0, 0},
        {"audio.conv1.weight", 3, 256, 64, 3},
        {"audio.conv2.weight", 3, 256, 256, 3},
        {"audio.conv2.bias", 1, 256, 0, 0},
        {"audio.pos_emb", 2, 50, 256, 0},
        {"audio.layers.3.mlp.fc2.bias", 1, 256, 0, 0},
        {"fusion.cls", 2, 1, 256, 0},
        {"fusion.type_emb", 2, 4, 256, 0},
        {"fusion.layers.1.attn.qkv.weight", 2, 768, 256, 0},
        {"fusion.ln.weight", 1, 256, 0, 0},
        {"fusion.head.weight", 2, 10, 256, 0},
        {"fusion.head.bias", 1, 10, 0, 0},
        {"proj_text.weight", 2, 128, 256, 0},
        {"proj_vision.weight", 2, 128, 256, 0},
        {"proj_audio.weight", 2, 128, 256, 0},
        {"logit_scale", 0, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        int k = tm_model_find_tensor(m, want[i].name);
        tm_model_tensor t;
        if (k < 0 || tm_model_tensor_at(m, k, &t)) {
            fprintf(stderr, "bench-small: no tensor %s\n", want[i].name);
            CHECK(0);
            continue;
        }
        int64_t s[3] = {want[i].s0, want[i].s1, want[i].s2};
        int ok = t.ndim == want[i].ndim;
        for (int d = 0; ok && d < t.ndim && d < 3; d++) ok = t.shape[d] == s[d];
        if (!ok) fprintf(stderr, "bench-small: %s has the wrong shape\n", want[i].name);
        CHECK(ok);
    }
    /* 14 blocks of 12 tensors, and nothing else unexpected: 195 tensors */
    CHECK(tm_model_tensor_count(m) == 195);
    CHECK(tm_model_find_tensor(m, "audio.layers.4.ln1.weight") < 0);
    CHECK(tm_model_find_tensor(m, "fusion.layers.2.ln1.weight") < 0);
    /* the fixed table is last, frozen, Whisper's sinusoids */
    tm_model_tensor t;
    tm_model_tensor_at(m, tm_model_tensor_count(m) - 1, &t);
    CHECK(!strcmp(t.name, "audio.pos_emb") && t.frozen && t.offset == 13533707);
    float *tab = malloc(50 * 256 * sizeof(float));
    tm_nn_sinusoid_1d_fill(tab, 50, 256);
    CHECK(!memcmp(tab, tm_model_params(m, NULL) + t.offset, 50 * 256 * sizeof(float)));
    free(tab);
    tm_model_info info = tm_model_get_info(m);
    CHECK(info.n_modalities == 3 && !strcmp(info.modality[1], "vision"));
    CHECK(info.text_tokens == 32 && info.image_h == 32 && info.n_mels == 64 &&
          info.n_frames == 100 && info.num_classes == 10 && info.embed_dim == 128);
    tm_model_free(m);
}

/* ---------------------------------------------------------- validation */

static const char *TINY =
    "{\"dim\": 16, \"heads\": 2, \"mlp_dim\": 32,"
    " \"encoders\": ["
    "  {\"modality\": \"text\", \"layers\": 1, \"vocab_size\": 20, \"max_tokens\": 6},"
    "  {\"modality\": \"vision\", \"layers\": 1, \"channels\": 1, \"image_size\": 8, \"patch_size\": 4},"
    "  {\"modality\": \"audio\", \"layers\": 1, \"n_mels\": 4, \"n_frames\": 8,"
    "   \"stem\": [{\"kernel\": 3, \"padding\": 1}, {\"kernel\": 3, \"stride\": 2, \"padding\": 1}]}],"
    " \"fusion\": {\"type\": \"early\", \"layers\": 2},"
    " \"classifier\": {\"num_classes\": 3}, \"contrastive\": {\"dim\": 8}}";

/* TINY with the first `from` replaced by `to`. */
static tm_status try_edit(const char *from, const char *to, tm_model **out)
{
    char buf[4096];
    const char *p = strstr(TINY, from);
    if (!p) {
        fprintf(stderr, "test bug: '%s' not in TINY\n", from);
        return TM_ERR_INTERNAL;
    }
    snprintf(buf, sizeof buf, "%.*s%s%s", (int)(p - TINY), TINY, to, p + strlen(from));
    return tm_model_new_from_json(out, buf, strlen(buf), "tiny.json");
}

static void test_validation(void)
{
    tm_model *m = NULL;
    CHECK_OK(tm_model_new_from_json(&m, TINY, strlen(TINY), "tiny.json"));
    tm_model_free(m);
    static const struct {
        const char *from, *to, *msg;
    } bad[] = {
        {"\"heads\": 2", "\"heads\": 3", "\"heads\" 3 does not divide \"dim\" 16"},
        {"\"heads\": 2", "\"heads\": 2, \"depth\": 4", "unknown key \"depth\""},
        {"\"max_tokens\": 6", "\"max_tokens\": 6, \"vocab\": 3", "unknown key \"encoders[0].vocab\""},
        {"\"dim\": 16", "\"dim\": \"16\"", "\"dim\" must be an integer"},
        {"\"dim\": 16", "\"dim\": 16.5", "\"dim\" must be an integer"},
        {"\"patch_size\": 4", "\"patch_size\": 3", "\"encoders[1].patch_size\" 3 does not divide"},
        {"\"patch_size\": 4", "\"patch_size\": 3", "tiny.json"},
        {"\"type\": \"early\"", "\"type\": \"middle\"", "\"fusion.type\" must be one of"},
        {"\"modality\": \"audio\"", "\"modality\": \"text\"", "a second \"text\" encoder"},
        {"\"kernel\": 3, \"padding\": 1}", "\"kernel\": 30, \"padding\": 1}",
         "\"encoders[2].stem[0]\": kernel 30 does not fit 8 frames"},
        {"\"num_classes\": 3", "\"num_classes\": 0", "\"classifier.num_classes\" must be"},
        {"\"layers\": 2}", "\"layers\": 2, \"cls_token\": false}", "set \"fusion.cls_token\""},
        {"\"dim\": 16, \"heads\"", "\"heads\"", "missing key \"dim\""},
        {"{\"dim\"", "[{\"dim\"", "not valid JSON"},
        {"\"vocab_size\": 20", "\"vocab_size\": 20, \"positions\": \"spiral\"",
         "\"encoders[0].positions\" must be one of"},
        {"\"dim\": 8}", "\"dim\": 8, \"temperature\": 1}", "unknown key \"contrastive.temperature\""},
        {"\"image_size\": 8", "\"image_size\": [8]", "\"encoders[1].image_size\" must be"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        m = NULL;
        tm_status s = try_edit(bad[i].from, bad[i].to, &m);
        CHECK(s == TM_ERR_INVALID && m == NULL);
        if (!strstr(tm_last_error(), bad[i].msg)) {
            fprintf(stderr, "case %zu: message '%s' lacks '%s'\n", i, tm_last_error(), bad[i].msg);
            CHECK(0);
        }
        tm_model_free(m);
    }
    /* a non-square image and a text mean pool are fine */
    CHECK_OK(try_edit("\"image_size\": 8", "\"image_size\": [8, 12]", &m));
    tm_model_free(m);
    m = NULL;
    CHECK_OK(try_edit("\"max_tokens\": 6", "\"max_tokens\": 6, \"pool\": \"mean\"", &m));
    tm_model_free(m);
    m = NULL;
    CHECK_STATUS(tm_model_new_from_config(&m, "/nonexistent/config.json"), TM_ERR_IO);
}

/* ------------------------------------------------------------- folders */

static void test_save_load(void)
{
    tm_model *a = NULL, *b = NULL, *c = NULL;
    CHECK_OK(tm_model_new_from_json(&a, TINY, strlen(TINY), "tiny"));
    if (!a) return;
    CHECK_OK(tm_model_init_weights(a, 42));
    CHECK_OK(tm_model_new_from_json(&c, TINY, strlen(TINY), "tiny"));
    CHECK_OK(tm_model_init_weights(c, 42));
    size_t n;
    float *pa = tm_model_params(a, &n);
    CHECK(c && !memcmp(pa, tm_model_params(c, NULL), n * 4)); /* init is a pure function */
    /* LayerNorm weights start at 1, biases at 0, logit_scale at ln(1/0.07) */
    int k = tm_model_find_tensor(a, "fusion.layers.0.ln1.weight");
    tm_model_tensor t;
    tm_model_tensor_at(a, k, &t);
    CHECK(pa[t.offset] == 1.0f);
    tm_model_tensor_at(a, tm_model_find_tensor(a, "logit_scale"), &t);
    CHECK_NEAR(pa[t.offset], 2.6592600, 1e-6, 0);
    tm_model_tensor_at(a, tm_model_find_tensor(a, "text.layers.0.attn.qkv.weight"), &t);
    float mx = 0;
    for (size_t i = 0; i < t.numel; i++) mx = fmaxf(mx, fabsf(pa[t.offset + i]));
    CHECK(mx > 0.2f && mx <= 0.25f); /* U(+-1/sqrt(16)) */

    char dir[512];
    snprintf(dir, sizeof dir, "%s/m1", tmpdir);
    CHECK_OK(tm_model_save(a, dir));
    CHECK_OK(tm_model_load(&b, dir));
    if (b) {
        size_t nb;
        CHECK(!memcmp(pa, tm_model_params(b, &nb), n * 4) && nb == n);
        char *ja = tm_model_config_json(a), *jb = tm_model_config_json(b);
        CHECK(ja && jb && !strcmp(ja, jb));
        tm_free(ja);
        tm_free(jb);
    }
    tm_model_free(b);
    b = NULL;

    /* a file that does not fit: a missing, an unexpected and a misshapen tensor */
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    float zeros[64] = {0};
    tm_tensor *w = NULL, *x = NULL;
    tm_tensor_wrap(&w, zeros, TM_F32, 1, (int64_t[]){16});
    tm_tensor_wrap(&x, zeros, TM_F32, 1, (int64_t[]){7});
    int nt = tm_model_tensor_count(a);
    tm_named_tensor *list = calloc((size_t)nt + 1, sizeof *list);
    tm_tensor *views = calloc((size_t)nt + 1, sizeof *views);
    for (int i = 0; i < nt; i++) {
        tm_model_tensor e;
        tm_model_tensor_at(a, i, &e);
        views[i].dtype = TM_F32;
        views[i].ndim = e.ndim;
        int64_t st = 1;
        for (int d = e.ndim - 1; d >= 0; d--) {
            views[i].shape[d] = e.shape[d];
            views[i].stride[d] = st;
            st *= e.shape[d];
        }
        views[i].data = pa + e.offset;
        list[i].name = e.name;
        list[i].tensor = &views[i];
    }
    /* drop "text.ln.bias", add "text.extra" */
    int drop = tm_model_find_tensor(a, "text.ln.bias");
    tm_named_tensor keep = list[drop];
    list[drop].name = "text.extra";
    list[drop].tensor = w;
    CHECK_OK(tm_safetensors_write(path, list, nt, NULL, NULL, 0));
    CHECK_STATUS(tm_model_load(&b, dir), TM_ERR_FORMAT);
    CHECK(strstr(tm_last_error(), "1 tensor(s) missing (text.ln.bias)") != NULL);
    CHECK(strstr(tm_last_error(), "1 unexpected (text.extra)") != NULL);
    list[drop] = keep;
    int misshape = tm_model_find_tensor(a, "vision.patch.bias");
    list[misshape].tensor = x;
    CHECK_OK(tm_safetensors_write(path, list, nt, NULL, NULL, 0));
    CHECK_STATUS(tm_model_load(&b, dir), TM_ERR_FORMAT);
    CHECK(strstr(tm_last_error(), "'vision.patch.bias' has shape (7); the config implies (16)"));
    /* the fixed table may be absent: recomputed */
    list[misshape].tensor = &views[misshape];
    int fixed = tm_model_find_tensor(a, "audio.pos_emb");
    CHECK(fixed == nt - 1);
    CHECK_OK(tm_safetensors_write(path, list, nt - 1, NULL, NULL, 0));
    CHECK_OK(tm_model_load(&b, dir));
    if (b) CHECK(!memcmp(pa, tm_model_params(b, NULL), n * 4));
    tm_model_free(b);
    b = NULL;
    CHECK_STATUS(tm_model_load(&b, "/nonexistent-dir"), TM_ERR_IO);
    free(list);
    free(views);
    tm_tensor_free(w);
    tm_tensor_free(x);
    tm_model_free(a);
    tm_model_free(c);
}

/* ---------------------------------------------------- missing modality */

typedef struct {
    tm_model_graph *g;
    tm_model_inputs in;
    int64_t B, T, img, mel;
} rig;

static void fill(rig *r, uint64_t seed)
{
    for (int64_t i = 0; i < r->B * r->T; i++) r->in.tokens[i] = 1 + (int32_t)((i * 7 + seed) % 19);
    for (int64_t b = 0; b < r->B; b++) r->in.tokens[b * r->T + r->T - 1 - b % 3] = 0; /* padding */
    test_fill_uniform(r->in.image, r->B * r->img, seed + 1, -1, 1);
    test_fill_uniform(r->in.mel, r->B * r->mel, seed + 2, -1, 1);
    if (r->in.labels)
        for (int64_t b = 0; b < r->B; b++) r->in.labels[b] = (int32_t)(b % 3);
}

static void snap(rig *r, float *out, int n_mod)
{
    /* logits (B, 3), then embeddings (B, 8) per modality */
    const float *l = tm_model_graph_logits(r->g);
    memcpy(out, l, (size_t)r->B * 3 * 4);
    for (int i = 0; i < n_mod; i++) {
        const float *e = tm_model_graph_embeddings(r->g, i);
        if (e) memcpy(out + r->B * 3 + i * r->B * 8, e, (size_t)r->B * 8 * 4);
    }
}

static int same_example(const float *a, const float *b, int64_t B, int64_t ex, int n_mod)
{
    if (memcmp(a + ex * 3, b + ex * 3, 3 * 4)) return 0;
    for (int i = 0; i < n_mod; i++)
        if (memcmp(a + B * 3 + i * B * 8 + ex * 8, b + B * 3 + i * B * 8 + ex * 8, 8 * 4)) return 0;
    return 1;
}

static void test_missing(const char *fusion)
{
    tm_model *m = NULL;
    if (fusion) CHECK_OK(try_edit("\"fusion\": {\"type\": \"early\", \"layers\": 2}", fusion, &m));
    else CHECK_OK(tm_model_new_from_json(&m, TINY, strlen(TINY), "tiny"));
    if (!m) return;
    tm_model_init_weights(m, 3);
    rig r = {0};
    r.B = 4, r.T = 6, r.img = 64, r.mel = 32;
    CHECK_OK(tm_model_graph_new(&r.g, m, r.B, TM_MODEL_TRAIN));
    if (!r.g) goto done;
    r.in = tm_model_graph_inputs(r.g);
    float base[4 * 3 + 3 * 4 * 8], now[4 * 3 + 3 * 4 * 8];
    int M = 3;
    /* example 1 lacks audio, 2 lacks vision, 3 lacks text */
    memset(r.in.present, 1, 12);
    r.in.present[1 * M + 2] = 0;
    r.in.present[2 * M + 1] = 0;
    r.in.present[3 * M + 0] = 0;
    fill(&r, 1);
    CHECK_OK(tm_model_graph_forward(r.g));
    snap(&r, base, M);
    tm_model_loss l0 = tm_model_graph_loss(r.g);
    CHECK(isfinite(l0.total));

    /* a missing modality's data changes nothing at all */
    test_fill_uniform(r.in.mel + 1 * r.mel, r.mel, 99, -5, 5);
    test_fill_uniform(r.in.image + 2 * r.img, r.img, 98, -5, 5);
    for (int t = 0; t < r.T; t++) r.in.tokens[3 * r.T + t] = 1 + (t * 5) % 19;
    CHECK_OK(tm_model_graph_forward(r.g));
    snap(&r, now, M);
    /* the logits of every example, and the embeddings of present
     * modalities, are bitwise unchanged */
    CHECK(!memcmp(base, now, sizeof(float) * 12));
    CHECK(!memcmp(base + 12, now + 12, sizeof(float) * 8 * 3)); /* text: examples 0-2 */
    tm_model_loss l1 = tm_model_graph_loss(r.g);
    CHECK(l1.total == l0.total && l1.contrastive == l0.contrastive);

    /* another example's data changes nothing for the others */
    fill(&r, 1);
    CHECK_OK(tm_model_graph_forward(r.g));
    snap(&r, base, M);
    test_fill_uniform(r.in.image + 0 * r.img, r.img, 77, -3, 3);
    test_fill_uniform(r.in.mel + 0 * r.mel, r.mel, 78, -3, 3);
    r.in.tokens[0] = 11;
    CHECK_OK(tm_model_graph_forward(r.g));
    snap(&r, now, M);
    CHECK(!same_example(base, now, r.B, 0, M));
    for (int64_t b = 1; b < r.B; b++) CHECK(same_example(base, now, r.B, b, M));

    /* a batch where no example has both vision and audio: that pair drops
     * out, the loss stays finite and gradients flow */
    memset(r.in.present, 1, 12);
    for (int64_t b = 0; b < r.B; b++) r.in.present[b * M + (b % 2 ? 1 : 2)] = 0;
    CHECK_OK(tm_model_graph_forward(r.g));
    CHECK_OK(tm_model_graph_backward(r.g));
    tm_model_loss l2 = tm_model_graph_loss(r.g);
    CHECK(isfinite(l2.total) && isfinite(l2.contrastive));
    size_t n;
    const float *gr = tm_model_grads(m, &n);
    int finite = 1;
    for (size_t i = 0; i < n; i++) finite &= isfinite(gr[i]) != 0;
    CHECK(finite);
    /* everything missing but the CLS: still finite */
    memset(r.in.present, 0, 12);
    CHECK_OK(tm_model_graph_forward(r.g));
    CHECK(isfinite(tm_model_graph_logits(r.g)[0]));
    CHECK(tm_model_graph_loss(r.g).contrastive == 0.0f);
    /* all-padding text stays finite too */
    memset(r.in.present, 1, 12);
    memset(r.in.tokens, 0, (size_t)(r.B * r.T) * 4);
    CHECK_OK(tm_model_graph_forward(r.g));
    CHECK(isfinite(tm_model_graph_loss(r.g).total));
    /* a token outside the vocabulary is an error naming it */
    r.in.tokens[5] = 20;
    CHECK_STATUS(tm_model_graph_forward(r.g), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "20") != NULL);
done:
    tm_model_graph_free(r.g);
    tm_model_free(m);
}

/* Graphs of one model share its weights: an update is seen by all. */
static void test_shared(void)
{
    tm_model *m = NULL;
    CHECK_OK(tm_model_new_from_json(&m, TINY, strlen(TINY), "tiny"));
    if (!m) return;
    tm_model_init_weights(m, 5);
    tm_model_graph *a = NULL, *b = NULL;
    CHECK_OK(tm_model_graph_new(&a, m, 2, TM_MODEL_CLASSIFY));
    CHECK_OK(tm_model_graph_new(&b, m, 3, TM_MODEL_EMBED));
    CHECK(tm_model_graph_inputs(a).labels == NULL && tm_model_graph_logits(b) == NULL);
    CHECK(tm_model_graph_batch(b) == 3 && tm_model_graph_mode(b) == TM_MODEL_EMBED);
    CHECK(tm_model_grads(m, NULL) == NULL); /* no training graph yet */
    tm_model_graph *c = NULL;
    CHECK_STATUS(tm_model_graph_new(&c, m, 0, TM_MODEL_TRAIN), TM_ERR_INVALID);
    if (a) {
        rig r = {a, tm_model_graph_inputs(a), 2, 6, 64, 32};
        fill(&r, 4);
        CHECK_OK(tm_model_graph_forward(a));
        float l1 = tm_model_graph_logits(a)[0];
        tm_model_tensor t;
        tm_model_tensor_at(m, tm_model_find_tensor(m, "fusion.head.bias"), &t);
        tm_model_params(m, NULL)[t.offset] += 1.0f;
        CHECK_OK(tm_model_graph_forward(a));
        CHECK_NEAR(tm_model_graph_logits(a)[0], l1 + 1.0f, 1e-5, 0);
    }
    tm_model_graph_free(a);
    tm_model_graph_free(b);
    tm_model_free(m);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/tm_test_model_XXXXXX");
    CHECK(mkdtemp(tmpdir) != NULL);
    test_bench_small();
    test_validation();
    test_save_load();
    test_missing(NULL);
    test_missing("\"fusion\": {\"type\": \"late\", \"combine\": \"gated\", \"hidden\": 8}");
    test_missing("\"fusion\": {\"type\": \"late\", \"combine\": \"concat\"}");
    test_missing("\"fusion\": {\"type\": \"late\", \"combine\": \"sum\"}");
    test_missing("\"fusion\": {\"type\": \"cross\", \"layers\": 2}");
    test_missing("\"fusion\": {\"type\": \"bottleneck\", \"layers\": 2, \"tokens\": 3}");
    test_shared();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_finish("model");
}
