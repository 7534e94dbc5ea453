/* Fault injection (issue 9): model loading, the three front-ends, a
 * training step and a server request, each run once to count its
 * allocations and then once for every N from 1 to that count with the
 * N-th allocation (and every later one) failing. Each run must return an
 * error with a message (never crash) and, under the ASan build, leak
 * nothing (LeakSanitizer checks at exit).
 *
 * tm_alloc counts the library's own allocations; cJSON's are routed
 * through it too (cJSON_InitHooks below), so JSON parsing fails as well.
 * Allocations inside stb_image, libsndfile, libsamplerate and FFTW go
 * through plain malloc and are not injected. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "trimodal/audio.h"
#include "trimodal/io.h"
#include "trimodal/model.h"
#include "trimodal/optim.h"
#include "trimodal/serve.h"
#include "trimodal/text.h"
#include "trimodal/vision.h"

static void *json_alloc(size_t n) { return tm_alloc(n); }
static void json_free(void *p) { tm_free(p); }

typedef tm_status (*scenario)(void *ctx);

/* Runs s once to warm caches (thread pool, tables), once to count, then
 * with every allocation number failing in turn. */
static void fault_loop(const char *name, scenario s, void *ctx)
{
    tm_alloc_fail_after(0);
    CHECK_OK(s(ctx));
    tm_alloc_fail_after(0);
    tm_status st = s(ctx);
    long total = tm_alloc_fail_after(0);
    CHECK_OK(st);
    long failed = 0, ok = 0;
    for (long n = 1; n <= total; n++) {
        tm_alloc_fail_after(n);
        st = s(ctx);
        tm_alloc_fail_after(0);
        if (st) {
            failed++;
            const char *msg = tm_last_error();
            test_checks++;
            if (!msg || !msg[0]) {
                test_failures++;
                fprintf(stderr, "%s: allocation %ld failed with %s and no message\n", name, n,
                        tm_status_name(st));
            }
        } else {
            ok++; /* the failed allocation had a fallback (a cache, a retry) */
        }
    }
    /* the first allocation fails every scenario below */
    CHECK(total > 0 && failed > 0);
    printf("fault: %-16s %5ld allocations, %5ld runs failed cleanly, %ld recovered\n", name, total,
           failed, ok);
    fflush(stdout);
}

/* ------------------------------------------------------------ loading */

static char tmp_dir[256];
static char *model_config; /* the serving test model's config.json */
static size_t model_config_len;

static tm_status load_model(void *ctx)
{
    (void)ctx;
    tm_model *m = NULL;
    tm_status st = tm_model_load(&m, tmp_dir);
    if (!st) CHECK(tm_model_tensor_count(m) > 0);
    else CHECK(m == NULL);
    tm_model_free(m);
    return st;
}

static tm_status model_from_json(void *ctx)
{
    (void)ctx;
    tm_model *m = NULL;
    tm_status st = tm_model_new_from_json(&m, model_config, model_config_len, "fault.json");
    if (!st) st = tm_model_init_weights(m, 7);
    tm_model_free(m);
    return st;
}

/* ------------------------------------------------------- front-ends */

static char *png, *wav, *tok_json;
static size_t png_len, wav_len, tok_json_len;

static tm_status prep_text(void *ctx)
{
    (void)ctx;
    tm_tokenizer *t = NULL;
    tm_status st = tm_tokenizer_load_json_memory(&t, tok_json, tok_json_len);
    if (st) return st;
    tm_text_encoding *e = NULL;
    const char *text = "a red sneaker with white laces";
    st = tm_tokenizer_encode(t, text, strlen(text), NULL, &e);
    if (!st) CHECK(e->length > 0);
    tm_text_encoding_free(e);
    tm_tokenizer_free(t);
    return st;
}

static tm_status prep_image(void *ctx)
{
    (void)ctx;
    tm_image *img = NULL;
    tm_status st = tm_image_decode(&img, png, png_len, tm_image_decode_default_params());
    if (st) return st;
    tm_image_params p = tm_image_default_params();
    int nd;
    int64_t shape[3];
    st = tm_image_preprocess_shape(&nd, shape, p);
    float *out = NULL;
    size_t n = 0;
    if (!st) {
        n = (size_t)(shape[0] * shape[1] * (nd == 3 ? shape[2] : 1));
        out = tm_alloc(n * sizeof *out);
        if (!out) st = TM_ERR_NOMEM;
    }
    if (!st) st = tm_image_preprocess(out, n, img, p);
    tm_free(out);
    tm_image_free(img);
    return st;
}

static tm_status prep_audio(void *ctx)
{
    (void)ctx;
    tm_audio *a = NULL;
    tm_status st = tm_audio_load_memory(&a, wav, wav_len, tm_audio_load_default_params());
    if (st) return st;
    tm_audio_params p = tm_audio_default_params();
    p.sample_rate = 8000; /* a resample as well */
    tm_tensor *mel = NULL;
    st = tm_audio_preprocess(&mel, a, p);
    tm_tensor_free(mel);
    tm_audio_free(a);
    return st;
}

/* --------------------------------------------------------- training */

static tm_status train_step(void *ctx)
{
    (void)ctx;
    tm_model *m = NULL;
    tm_model_graph *g = NULL;
    tm_optim *opt = NULL;
    tm_status st = tm_model_new_from_json(&m, model_config, model_config_len, "fault.json");
    if (!st) st = tm_model_init_weights(m, 3);
    if (!st) st = tm_model_graph_new(&g, m, 2, TM_MODEL_TRAIN);
    if (!st) {
        tm_model_info info = tm_model_get_info(m);
        tm_model_inputs in = tm_model_graph_inputs(g);
        for (int64_t i = 0; i < 2 * info.text_tokens; i++) in.tokens[i] = (int32_t)(3 + i % 20);
        test_fill_uniform(in.image, 2 * info.image_channels * info.image_h * info.image_w, 1, 0, 1);
        test_fill_uniform(in.mel, 2 * info.n_mels * info.n_frames, 2, -1, 1);
        in.labels[0] = 1, in.labels[1] = 3;
        for (int64_t i = 0; i < 2 * info.caption_tokens; i++)
            in.caption[i] = i % info.caption_tokens == 0 ? 1 : 5;
        st = tm_model_graph_forward(g);
    }
    if (!st) st = tm_model_graph_backward(g);
    size_t n = 0;
    float *w = m && !st ? tm_model_params(m, &n) : NULL;
    if (!st) st = tm_optim_new(&opt, tm_optim_default_params(TM_OPTIM_ADAMW),
                               tm_model_trainable_count(m));
    if (!st) st = tm_optim_step(opt, w, tm_model_grads(m, NULL), 1e-3f);
    tm_optim_free(opt);
    tm_model_graph_free(g);
    tm_model_free(m);
    return st;
}

/* ----------------------------------------------------------- serving */

static tm_session *session;
static char *wav_b, *png_b;
static size_t wav_b_len, png_b_len;

static tm_status open_session(void *ctx)
{
    (void)ctx;
    tm_session *s = NULL;
    tm_status st = tm_session_open(&s, test_data_path("serve/model"), NULL);
    if (st) CHECK(s == NULL);
    tm_session_free(s);
    return st;
}

/* One request as the server runs it: the front-ends, then the model. */
static tm_status request(void *ctx)
{
    (void)ctx;
    tm_session_input in = {"a brown boot", 12, png_b, png_b_len, wav_b, wav_b_len};
    tm_example *ex = NULL;
    tm_status st = tm_session_prepare(session, &in, &ex);
    if (st) {
        CHECK(ex == NULL);
        return st;
    }
    float probs[4];
    st = tm_session_classify(session, &ex, 1, probs);
    if (!st) CHECK_NEAR(probs[0] + probs[1] + probs[2] + probs[3], 1.0, 1e-5, 0);
    float emb[3 * 8];
    if (!st) st = tm_session_embed(session, &ex, 1, emb);
    tm_example_free(ex);
    return st;
}

static char *slurp(const char *rel, size_t *n)
{
    char *d = NULL;
    if (tm_read_file(test_data_path(rel), (size_t)1 << 24, &d, n)) {
        fprintf(stderr, "cannot read %s: %s\n", rel, tm_last_error());
        exit(1);
    }
    return d;
}

int main(void)
{
    cJSON_Hooks hooks = {json_alloc, json_free};
    cJSON_InitHooks(&hooks);
    model_config = slurp("serve/model/config.json", &model_config_len);
    tok_json = slurp("serve/model/tokenizer.json", &tok_json_len);
    png = slurp("serve/image_a.png", &png_len);
    png_b = slurp("serve/image_b.png", &png_b_len);
    wav = slurp("serve/sound_a.wav", &wav_len);
    wav_b = slurp("serve/sound_b.wav", &wav_b_len);

    /* a model folder made here: config.json + model.safetensors */
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/tm_fault_XXXXXX");
    CHECK(mkdtemp(tmp_dir) != NULL);
    tm_model *m = NULL;
    CHECK_OK(tm_model_new_from_json(&m, model_config, model_config_len, "fault.json"));
    CHECK_OK(tm_model_init_weights(m, 1));
    CHECK_OK(tm_model_save(m, tmp_dir));
    tm_model_free(m);

    fault_loop("model json", model_from_json, NULL);
    fault_loop("model load", load_model, NULL);
    fault_loop("text", prep_text, NULL);
    fault_loop("image", prep_image, NULL);
    fault_loop("audio", prep_audio, NULL);
    /* Every scenario fails at every allocation in turn (the training step
     * once reached build_decoder with a NULL node; guarded since).
     * TM_FAULT_QUICK=1 runs the training and serving scenarios once,
     * without injection, for a quick look. */
    int quick = getenv("TM_FAULT_QUICK") && getenv("TM_FAULT_QUICK")[0] == '1';
    CHECK_OK(tm_session_open(&session, test_data_path("serve/model"), NULL));
    if (!quick) {
        fault_loop("train step", train_step, NULL);
        fault_loop("session open", open_session, NULL);
        if (session) fault_loop("request", request, NULL);
    } else {
        CHECK_OK(train_step(NULL));
        CHECK_OK(open_session(NULL));
        if (session) CHECK_OK(request(NULL));
    }
    tm_session_free(session);

    char path[512];
    snprintf(path, sizeof path, "%s/config.json", tmp_dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/model.safetensors", tmp_dir);
    unlink(path);
    rmdir(tmp_dir);
    tm_free(model_config);
    tm_free(tok_json);
    tm_free(png);
    tm_free(png_b);
    tm_free(wav);
    tm_free(wav_b);
    cJSON_InitHooks(NULL);
    return test_finish("fault");
}
