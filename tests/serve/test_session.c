/* Inference sessions and the search index against independent references:
 * tests/data/serve/ (scripts/gen_serve_vectors.py) holds a small model
 * folder, raw images and sounds, and what PyTorch (torchvision, torchaudio,
 * the BPE reference and the model's twin, in float64) makes of them: the
 * model inputs, class probabilities, embeddings and greedy captions.
 * Then batching, errors on bad input and folders, and the index (build,
 * exact search against a brute-force double reference, file round trip,
 * corrupt files). */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "testutil.h"
#include "trimodal/io.h"
#include "trimodal/serve.h"

#define NCASES 8
#define T 8
#define CHW 64
#define MF 96
#define C 4
#define M 3
#define E 8
#define TC 5 /* caption ids: max_tokens - 1 */

static char model_dir[1100], data_dir[1024], tmp_dir[64];

typedef struct {
    char *text;
    char *image, *audio; /* file names, NULL when absent */
    char *img_bytes, *aud_bytes;
    size_t img_len, aud_len;
} test_case;

static test_case cases[NCASES];
static tm_safetensors *vec;

static const float *vf(const char *what, int k)
{
    char name[64];
    snprintf(name, sizeof name, "%s.%d", what, k);
    tm_tensor t;
    if (tm_safetensors_get(vec, name, &t)) {
        fprintf(stderr, "missing vector %s: %s\n", name, tm_last_error());
        exit(1);
    }
    return t.data;
}

static const int32_t *vi(const char *what, int k)
{
    return (const int32_t *)vf(what, k);
}

static char *read_all(const char *path, size_t *n)
{
    char *d = NULL;
    size_t len = 0;
    if (tm_read_file(path, (size_t)1 << 30, &d, &len)) {
        fprintf(stderr, "cannot read %s: %s\n", path, tm_last_error());
        exit(1);
    }
    if (n) *n = len;
    return d;
}

static void load_cases(void)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/cases.json", data_dir);
    char *text = read_all(path, NULL);
    cJSON *root = cJSON_Parse(text);
    tm_free(text);
    if (!cJSON_IsArray(root) || cJSON_GetArraySize(root) != NCASES) {
        fprintf(stderr, "bad cases.json\n");
        exit(1);
    }
    int k = 0;
    for (cJSON *it = root->child; it; it = it->next, k++) {
        cJSON *t = cJSON_GetObjectItem(it, "text"), *im = cJSON_GetObjectItem(it, "image"),
              *au = cJSON_GetObjectItem(it, "audio");
        if (t) cases[k].text = strdup(t->valuestring);
        if (im) {
            cases[k].image = strdup(im->valuestring);
            snprintf(path, sizeof path, "%s/%s", data_dir, im->valuestring);
            cases[k].img_bytes = read_all(path, &cases[k].img_len);
        }
        if (au) {
            cases[k].audio = strdup(au->valuestring);
            snprintf(path, sizeof path, "%s/%s", data_dir, au->valuestring);
            cases[k].aud_bytes = read_all(path, &cases[k].aud_len);
        }
    }
    cJSON_Delete(root);
}

static tm_session_input input_of(int k)
{
    tm_session_input in = {0};
    if (cases[k].text) in.text = cases[k].text, in.text_len = strlen(cases[k].text);
    if (cases[k].image) in.image = cases[k].img_bytes, in.image_len = cases[k].img_len;
    if (cases[k].audio) in.audio = cases[k].aud_bytes, in.audio_len = cases[k].aud_len;
    return in;
}

static unsigned present_bits(int k)
{
    const int32_t *p = vi("present", k);
    return (p[0] ? TM_MODALITY_TEXT : 0) | (p[1] ? TM_MODALITY_IMAGE : 0) |
           (p[2] ? TM_MODALITY_AUDIO : 0);
}

/* -------------------------------------------------------- against PyTorch */

static void test_front_ends(tm_session *s, tm_example **ex)
{
    for (int k = 0; k < NCASES; k++) {
        tm_session_input in = input_of(k);
        CHECK_OK(tm_session_prepare(s, &in, &ex[k]));
        if (!ex[k]) exit(1);
        CHECK(tm_example_present(ex[k]) == present_bits(k));
        const int32_t *want = vi("tokens", k);
        int same = 1;
        for (int i = 0; i < T; i++)
            same &= tm_example_tokens(ex[k])[i] == want[i];
        CHECK(same);
        char what[64];
        if (cases[k].image) {
            snprintf(what, sizeof what, "image of case %d", k);
            check_close(what, tm_example_image(ex[k]), vf("image", k), CHW, 1e-5, 1e-5);
        }
        if (cases[k].audio) {
            snprintf(what, sizeof what, "log-mel of case %d", k);
            check_close(what, tm_example_mel(ex[k]), vf("mel", k), MF, 2e-4, 1e-4);
        }
    }
}

static void test_outputs(tm_session *s, tm_example **ex)
{
    float probs[NCASES * C], emb[NCASES * M * E];
    /* every case in one call (one graph of 8), then one by one (graphs of 1) */
    CHECK_OK(tm_session_classify(s, ex, NCASES, probs));
    CHECK_OK(tm_session_embed(s, ex, NCASES, emb));
    for (int k = 0; k < NCASES; k++) {
        char what[64];
        snprintf(what, sizeof what, "probs of case %d (batch 8)", k);
        check_close(what, probs + k * C, vf("probs", k), C, 2e-5, 1e-4);
        snprintf(what, sizeof what, "embeddings of case %d (batch 8)", k);
        check_close(what, emb + k * M * E, vf("emb", k), M * E, 2e-5, 1e-4);
        float p1[C], e1[M * E];
        CHECK_OK(tm_session_classify(s, &ex[k], 1, p1));
        CHECK_OK(tm_session_embed(s, &ex[k], 1, e1));
        snprintf(what, sizeof what, "probs of case %d (batch 1)", k);
        check_close(what, p1, vf("probs", k), C, 2e-5, 1e-4);
        snprintf(what, sizeof what, "embeddings of case %d (batch 1)", k);
        check_close(what, e1, vf("emb", k), M * E, 2e-5, 1e-4);
    }
    /* odd batches: 7 = 4 + 2 + 1, 5 = 4 + 1 (from case 1 on) */
    float p7[7 * C];
    CHECK_OK(tm_session_classify(s, ex + 1, 7, p7));
    check_close("probs of cases 1..7 (batch 7)", p7, probs + C, 7 * C, 1e-6, 1e-5);
    float e5[5 * M * E];
    CHECK_OK(tm_session_embed(s, ex + 3, 5, e5));
    check_close("embeddings of cases 3..7 (batch 5)", e5, emb + 3 * M * E, 5 * M * E, 1e-6, 1e-5);
    /* captions: greedy ids exactly, scores */
    tm_caption_result cap[NCASES];
    CHECK_OK(tm_session_caption(s, ex, NCASES, cap));
    for (int k = 0; k < NCASES; k++) {
        int32_t len = vi("caption_len", k)[0];
        const int32_t *ids = vi("caption", k);
        CHECK(cap[k].n_ids == len);
        int same = cap[k].n_ids == len;
        for (int i = 0; same && i < len; i++)
            same = cap[k].ids[i] == ids[i];
        CHECK(same);
        CHECK_NEAR(cap[k].score, vf("caption_score", k)[0], 1e-4, 1e-4);
        /* the text is the tokenizer's decoding of the ids */
        CHECK(cap[k].text != NULL);
        if (!same) fprintf(stderr, "caption %d: got %d ids, want %d\n", k, cap[k].n_ids, len);
        tm_caption_result_clear(&cap[k]);
    }
}

/* prepare from several threads while the model runs */
typedef struct {
    tm_session *s;
    int k;
    int ok;
} prep_arg;

static void *prep_thread(void *v)
{
    prep_arg *a = v;
    a->ok = 1;
    for (int rep = 0; rep < 4; rep++) {
        tm_session_input in = input_of(a->k);
        tm_example *e = NULL;
        if (tm_session_prepare(a->s, &in, &e)) {
            a->ok = 0;
            break;
        }
        float p[C];
        if (tm_session_classify(a->s, &e, 1, p) ||
            !check_close("threaded probs", p, vf("probs", a->k), C, 2e-5, 1e-4))
            a->ok = 0;
        tm_example_free(e);
    }
    return NULL;
}

static void test_threads(tm_session *s)
{
    pthread_t th[4];
    prep_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (prep_arg){s, (i * 3) % NCASES, 0};
        pthread_create(&th[i], NULL, prep_thread, &args[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(args[i].ok);
    }
}

/* ----------------------------------------------------------- bad input */

static void expect_prepare_fail(tm_session *s, tm_session_input in, tm_status want,
                                const char *needle)
{
    tm_example *e = (tm_example *)1;
    CHECK_STATUS(tm_session_prepare(s, &in, &e), want);
    CHECK(e == NULL);
    if (needle && !strstr(tm_last_error(), needle)) {
        test_checks++;
        test_failures++;
        fprintf(stderr, "message '%s' lacks '%s'\n", tm_last_error(), needle);
    }
}

static void test_bad_inputs(tm_session *s)
{
    tm_session_input none = {0};
    expect_prepare_fail(s, none, TM_ERR_INVALID, "no input");
    expect_prepare_fail(s, (tm_session_input){.text = "", .text_len = 0}, TM_ERR_INVALID, "empty");
    char junk[300];
    for (int i = 0; i < 300; i++)
        junk[i] = (char)(i * 37 + 11);
    expect_prepare_fail(s, (tm_session_input){.image = junk, .image_len = sizeof junk},
                        TM_ERR_UNSUPPORTED, "image:");
    expect_prepare_fail(s, (tm_session_input){.audio = junk, .audio_len = sizeof junk},
                        TM_ERR_UNSUPPORTED, "audio:");
    /* a PNG cut in half; a WAV whose data chunk claims more than there is */
    expect_prepare_fail(
        s, (tm_session_input){.image = cases[0].img_bytes, .image_len = cases[0].img_len / 2},
        TM_ERR_FORMAT, "image:");
    expect_prepare_fail(s, (tm_session_input){.audio = cases[0].aud_bytes, .audio_len = 30},
                        TM_ERR_FORMAT, "audio:");
    expect_prepare_fail(s, (tm_session_input){.image = junk, .image_len = 0}, TM_ERR_INVALID,
                        "empty");
    /* a PNG header claiming 100000 x 100000 pixels: refused before decoding */
    unsigned char big[64];
    memcpy(big, cases[2].img_bytes, 33);
    big[16] = 0, big[17] = 1, big[18] = 0x86, big[19] = 0xA0;
    big[20] = 0, big[21] = 1, big[22] = 0x86, big[23] = 0xA0;
    memset(big + 33, 0, sizeof big - 33);
    tm_example *e = NULL;
    tm_status st =
        tm_session_prepare(s, &(tm_session_input){.image = big, .image_len = sizeof big}, &e);
    CHECK(st == TM_ERR_LIMIT || st == TM_ERR_FORMAT);
    CHECK(e == NULL);
    /* outputs need a model that has the head */
    float out[4];
    CHECK_STATUS(tm_session_classify(s, NULL, 1, out), TM_ERR_INVALID);
    CHECK_STATUS(tm_session_embed(s, (tm_example *const *)&e, 0, out), TM_ERR_INVALID);
}

/* ------------------------------------------------------ model folders */

static void copy_file(const char *from_dir, const char *name, const char *to_dir)
{
    char a[4200], b[4200];
    snprintf(a, sizeof a, "%s/%s", from_dir, name);
    snprintf(b, sizeof b, "%s/%s", to_dir, name);
    size_t n;
    char *d = read_all(a, &n);
    if (tm_write_file_atomic(b, d, n)) exit(1);
    tm_free(d);
}

static void write_text(const char *dir, const char *name, const char *text)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    if (tm_write_file_atomic(p, text, strlen(text))) exit(1);
}

static void test_folders(void)
{
    char d[2048];
    snprintf(d, sizeof d, "%s/m2", tmp_dir);
    mkdir(d, 0755);
    copy_file(model_dir, "config.json", d);
    copy_file(model_dir, "model.safetensors", d);
    /* no tokenizer, no preprocess.json, no labels: notes, text refused */
    tm_session *s = NULL;
    CHECK_OK(tm_session_open(&s, d, NULL));
    if (s) {
        CHECK(strstr(tm_session_notes(s), "tokenizer.json") != NULL);
        CHECK(strstr(tm_session_notes(s), "preprocess.json") != NULL);
        CHECK(tm_session_class_name(s, 0) == NULL);
        CHECK(!tm_session_has_tokenizer(s));
        expect_prepare_fail(s, (tm_session_input){.text = "a boot", .text_len = 6},
                            TM_ERR_UNSUPPORTED, "tokenizer.json");
        /* the default front-ends adapt to the model: an image still works */
        tm_example *e = NULL;
        CHECK_OK(tm_session_prepare(
            s, &(tm_session_input){.image = cases[2].img_bytes, .image_len = cases[2].img_len},
            &e));
        if (e)
            check_close("image without preprocess.json", tm_example_image(e), vf("image", 2), CHW,
                        1e-5, 1e-5);
        tm_caption_result r;
        CHECK_OK(tm_session_caption(s, &e, 1, &r));
        CHECK(r.text == NULL && r.n_ids == vi("caption_len", 2)[0]);
        tm_caption_result_clear(&r);
        tm_example_free(e);
        tm_session_free(s);
    }
    /* labels of the wrong count, or not a list */
    write_text(d, "labels.json", "[\"a\", \"b\"]");
    CHECK_STATUS(tm_session_open(&s, d, NULL), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "labels.json") && strstr(tm_last_error(), "4 classes"));
    write_text(d, "labels.json", "{\"labels\": 3}");
    CHECK_STATUS(tm_session_open(&s, d, NULL), TM_ERR_FORMAT);
    write_text(d, "labels.json", "{\"labels\": [\"w\", \"x\", \"y\", \"z\"]}");
    CHECK_OK(tm_session_open(&s, d, NULL));
    if (s) CHECK(tm_session_class_name(s, 3) && !strcmp(tm_session_class_name(s, 3), "z"));
    tm_session_free(s);
    unlink(strcat(strcpy((char[4300]){0}, d), "/labels.json"));
    /* class names from a dataset.json */
    write_text(d, "dataset.json", "{\"name\": \"x\", \"classes\": [\"p\", \"q\", \"r\", \"s\"]}");
    CHECK_OK(tm_session_open(&s, d, NULL));
    if (s) CHECK(tm_session_class_name(s, 1) && !strcmp(tm_session_class_name(s, 1), "q"));
    tm_session_free(s);
    /* a preprocess.json that disagrees with the model */
    write_text(d, "preprocess.json",
               "{\"image\": {\"channels\": 3, \"height\": 8, \"width\": 8, \"size\": 8}}");
    CHECK_STATUS(tm_session_open(&s, d, NULL), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "channels") != NULL);
    write_text(d, "preprocess.json", "{\"audio\": {\"n_mels\": 16}}");
    CHECK_STATUS(tm_session_open(&s, d, NULL), TM_ERR_INVALID);
    write_text(d, "preprocess.json", "{\"imagee\": {}}");
    CHECK_STATUS(tm_session_open(&s, d, NULL), TM_ERR_INVALID);
    write_text(d, "preprocess.json", "{}");
    /* a tokenizer with more ids than the model's vocabulary */
    write_text(d, "tokenizer.json", "not json");
    CHECK(tm_session_open(&s, d, NULL) != TM_OK);
    /* not a model folder */
    snprintf(d, sizeof d, "%s/none", tmp_dir);
    CHECK(tm_session_open(&s, d, NULL) != TM_OK);
    CHECK(s == NULL);
    tm_session_params p = tm_session_default_params();
    p.max_batch = 0;
    CHECK_STATUS(tm_session_open(&s, model_dir, &p), TM_ERR_INVALID);
}

/* --------------------------------------------------------------- index */

static void write_manifest(const char *path)
{
    char line[8192];
    FILE *f = fopen(path, "w");
    if (!f) exit(1);
    for (int k = 0; k < NCASES; k++) {
        int n = snprintf(line, sizeof line, "{\"id\": \"case%d\"", k);
        if (cases[k].text) {
            cJSON *s = cJSON_CreateString(cases[k].text);
            char *t = cJSON_PrintUnformatted(s);
            n += snprintf(line + n, sizeof line - (size_t)n, ", \"text\": %s", t);
            free(t);
            cJSON_Delete(s);
        }
        if (cases[k].image)
            n += snprintf(line + n, sizeof line - (size_t)n, ", \"image\": \"%s/%s\"", data_dir,
                          cases[k].image);
        if (cases[k].audio)
            n += snprintf(line + n, sizeof line - (size_t)n, ", \"audio\": \"%s/%s\"", data_dir,
                          cases[k].audio);
        fprintf(f, "%s, \"split\": \"%s\"}\n", line, k < 6 ? "train" : "test");
    }
    fclose(f);
}

/* The reference: every row's score in double from PyTorch's embeddings,
 * an item's best row among the targets, sorted (ties: lower item). */
static int ref_search(const float *q, unsigned targets, int k, int64_t *items, double *scores)
{
    double best[NCASES];
    unsigned bits[3] = {TM_MODALITY_TEXT, TM_MODALITY_IMAGE, TM_MODALITY_AUDIO};
    for (int i = 0; i < NCASES; i++) {
        best[i] = -INFINITY;
        for (int m = 0; m < M; m++) {
            if (!(targets & bits[m]) || !(present_bits(i) & bits[m])) continue;
            const float *e = vf("emb", i) + m * E;
            double d = 0;
            for (int j = 0; j < E; j++)
                d += (double)q[j] * e[j];
            if (d > best[i]) best[i] = d;
        }
    }
    int n = 0;
    for (; n < k; n++) {
        int w = -1;
        for (int i = 0; i < NCASES; i++) {
            int used = 0;
            for (int j = 0; j < n; j++)
                used |= items[j] == i;
            if (!used && best[i] > -INFINITY && (w < 0 || best[i] > best[w])) w = i;
        }
        if (w < 0) break;
        items[n] = w;
        scores[n] = best[w];
    }
    return n;
}

static void compare_search(const tm_index *idx, const float *q, unsigned targets, int k)
{
    tm_search_hit hits[NCASES];
    int n = 0;
    int64_t items[NCASES];
    double scores[NCASES];
    int rn = ref_search(q, targets, k, items, scores);
    CHECK_OK(tm_index_search(idx, q, targets, k, hits, &n));
    CHECK(n == rn);
    for (int i = 0; i < n && i < rn; i++) {
        const char *id = tm_index_item(idx, hits[i].item, "id");
        char want[16];
        snprintf(want, sizeof want, "case%lld", (long long)items[i]);
        CHECK(id && !strcmp(id, want));
        CHECK_NEAR(hits[i].score, scores[i], 3e-5, 0);
        CHECK(hits[i].modality & targets);
    }
}

static void test_index(tm_session *s)
{
    char man[4200], path[4200];
    snprintf(man, sizeof man, "%s/manifest.jsonl", tmp_dir);
    snprintf(path, sizeof path, "%s/index.tmi", tmp_dir);
    write_manifest(man);
    tm_manifest *m = NULL;
    CHECK_OK(tm_manifest_load(&m, man, NULL));
    if (!m) return;
    tm_index *idx = NULL;
    int64_t skipped = -1;
    CHECK_OK(tm_index_build(&idx, s, m, NULL, &skipped));
    if (!idx) return;
    CHECK(skipped == 0);
    CHECK(tm_index_count(idx) == NCASES);
    CHECK(tm_index_dim(idx) == E);
    CHECK(tm_index_rows(idx, TM_MODALITY_TEXT) == 4);
    CHECK(tm_index_rows(idx, TM_MODALITY_IMAGE) == 5);
    CHECK(tm_index_rows(idx, TM_MODALITY_AUDIO) == 5);
    CHECK(!strcmp(tm_index_item(idx, 5, "text"), cases[5].text));
    CHECK_OK(tm_index_check(idx, s));
    /* queries: each case's embeddings from PyTorch, against each target set */
    unsigned targets[] = {0, TM_MODALITY_IMAGE, TM_MODALITY_AUDIO, TM_MODALITY_TEXT,
                          TM_MODALITY_IMAGE | TM_MODALITY_AUDIO};
    for (int k = 0; k < NCASES; k++)
        for (int m2 = 0; m2 < M; m2++) {
            if (!(present_bits(k) & (1u << m2))) continue;
            for (size_t t = 0; t < sizeof targets / sizeof *targets; t++)
                compare_search(idx, vf("emb", k) + m2 * E, targets[t] ? targets[t] : 7, 3 + (int)t);
        }
    /* save, load, the same answers */
    CHECK_OK(tm_index_save(idx, path));
    tm_index *l = NULL;
    CHECK_OK(tm_index_load(&l, path));
    if (l) {
        CHECK(tm_index_count(l) == NCASES);
        CHECK(!strcmp(tm_index_fingerprint(l), tm_session_fingerprint(s)));
        CHECK(!strcmp(tm_index_model(l), "serve-tiny"));
        CHECK_OK(tm_index_check(l, s));
        compare_search(l, vf("emb", 0), TM_MODALITY_IMAGE | TM_MODALITY_AUDIO, 8);
        compare_search(l, vf("emb", 4) + E, 7, 2);
        tm_search_hit h[2];
        int n;
        CHECK_STATUS(tm_index_search(l, vf("emb", 0), 7, 0, h, &n), TM_ERR_INVALID);
        float nanq[E] = {NAN};
        CHECK_STATUS(tm_index_search(l, nanq, 7, 2, h, &n), TM_ERR_INVALID);
        tm_index_free(l);
    }
    /* a split; a row whose image is missing, with and without skip_bad */
    tm_index_build_params bp = tm_index_build_default_params();
    bp.split = "test";
    tm_index *sp = NULL;
    CHECK_OK(tm_index_build(&sp, s, m, &bp, NULL));
    if (sp) CHECK(tm_index_count(sp) == 2 && !strcmp(tm_index_item(sp, 0, "id"), "case6"));
    tm_index_free(sp);
    tm_manifest_free(m);
    FILE *f = fopen(man, "a");
    fprintf(f, "{\"id\": \"gone\", \"image\": \"%s/no_such.png\"}\n", tmp_dir);
    fclose(f);
    CHECK_OK(tm_manifest_load(&m, man, NULL));
    CHECK_STATUS(tm_index_build(&sp, s, m, NULL, NULL), TM_ERR_IO);
    CHECK(strstr(tm_last_error(), ":9:") != NULL); /* names the manifest line */
    bp = tm_index_build_default_params();
    bp.skip_bad = 1;
    CHECK_OK(tm_index_build(&sp, s, m, &bp, &skipped));
    CHECK(skipped == 1 && sp && tm_index_count(sp) == NCASES);
    tm_index_free(sp);
    tm_manifest_free(m);
    tm_index_free(idx);
}

static void test_index_files(tm_session *s)
{
    char path[4200], bad[4200];
    snprintf(path, sizeof path, "%s/index.tmi", tmp_dir);
    snprintf(bad, sizeof bad, "%s/bad.tmi", tmp_dir);
    size_t n;
    char *d = read_all(path, &n);
    tm_index *idx = NULL;
    /* cut short */
    tm_write_file_atomic(bad, d, n - 7);
    CHECK_STATUS(tm_index_load(&idx, bad), TM_ERR_FORMAT);
    CHECK(idx == NULL);
    /* not an index: a model file */
    char mf[4200];
    snprintf(mf, sizeof mf, "%s/model.safetensors", model_dir);
    CHECK_STATUS(tm_index_load(&idx, mf), TM_ERR_FORMAT);
    CHECK(strstr(tm_last_error(), "trimodal index") != NULL);
    CHECK_STATUS(tm_index_load(&idx, "/nonexistent/x.tmi"), TM_ERR_IO);
    tm_free(d);
    /* hand-made files: a bad item number, a NaN, a missing pair, wrong dims */
    float embv[2 * E];
    for (int i = 0; i < 2 * E; i++)
        embv[i] = 0.25f;
    int32_t items[2] = {0, 5};
    tm_tensor te, ti;
    tm_tensor *pe = NULL, *pi = NULL;
    tm_tensor_wrap(&pe, embv, TM_F32, 2, (int64_t[]){2, E});
    tm_tensor_wrap(&pi, items, TM_I32, 1, (int64_t[]){2});
    te = *pe;
    ti = *pi;
    const char *keys[] = {"format", "version", "dim", "count", "items", "fingerprint", "model"};
    const char *vals[] = {
        "trimodal-index", "1", "8", "2", "[{\"id\":\"a\"},{\"id\":\"b\"}]", "x", "y"};
    tm_named_tensor nt[2] = {{"emb.vision", &te}, {"item.vision", &ti}};
    CHECK_OK(tm_safetensors_write(bad, nt, 2, keys, vals, 7));
    CHECK_STATUS(tm_index_load(&idx, bad), TM_ERR_FORMAT);
    CHECK(strstr(tm_last_error(), "item") != NULL);
    items[1] = 1;
    embv[3] = NAN;
    CHECK_OK(tm_safetensors_write(bad, nt, 2, keys, vals, 7));
    CHECK_STATUS(tm_index_load(&idx, bad), TM_ERR_FORMAT);
    embv[3] = 0.5f;
    CHECK_OK(tm_safetensors_write(bad, nt, 1, keys, vals, 7));
    CHECK_STATUS(tm_index_load(&idx, bad), TM_ERR_FORMAT);
    vals[2] = "4";
    CHECK_OK(tm_safetensors_write(bad, nt, 2, keys, vals, 7));
    CHECK_STATUS(tm_index_load(&idx, bad), TM_ERR_FORMAT);
    vals[2] = "8";
    vals[4] = "[{\"id\":\"a\"}]";
    CHECK_OK(tm_safetensors_write(bad, nt, 2, keys, vals, 7));
    CHECK_STATUS(tm_index_load(&idx, bad), TM_ERR_FORMAT);
    vals[4] = "[{\"id\":\"a\"},{\"id\":\"b\"}]";
    vals[1] = "2";
    CHECK_OK(tm_safetensors_write(bad, nt, 2, keys, vals, 7));
    CHECK_STATUS(tm_index_load(&idx, bad), TM_ERR_FORMAT);
    vals[1] = "1";
    /* a well-formed index of another model */
    CHECK_OK(tm_safetensors_write(bad, nt, 2, keys, vals, 7));
    CHECK_OK(tm_index_load(&idx, bad));
    if (idx) {
        CHECK_STATUS(tm_index_check(idx, s), TM_ERR_INVALID);
        CHECK(strstr(tm_last_error(), "another model") != NULL);
        tm_index_free(idx);
    }
    tm_tensor_free(pe);
    tm_tensor_free(pi);
}

int main(void)
{
    const char *src = getenv("TM_SOURCE_DIR");
    snprintf(data_dir, sizeof data_dir, "%s/tests/data/serve", src && *src ? src : ".");
    snprintf(model_dir, sizeof model_dir, "%s/model", data_dir);
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/tm_session_XXXXXX");
    if (!mkdtemp(tmp_dir)) return 1;
    char vp[4200];
    snprintf(vp, sizeof vp, "%s/vectors.safetensors", data_dir);
    if (tm_safetensors_open(&vec, vp)) {
        fprintf(stderr, "%s\n", tm_last_error());
        return 1;
    }
    load_cases();
    tm_session *s = NULL;
    CHECK_OK(tm_session_open(&s, model_dir, NULL));
    if (!s) return test_finish("serve_session");
    CHECK(!strcmp(tm_session_notes(s), ""));
    CHECK(!strcmp(tm_session_name(s), "serve-tiny"));
    CHECK(tm_session_can_classify(s) && tm_session_can_embed(s) && tm_session_can_caption(s));
    CHECK(tm_session_class_name(s, 1) && !strcmp(tm_session_class_name(s, 1), "boot"));
    CHECK(tm_session_class_name(s, 4) == NULL);
    CHECK(tm_session_column(s, TM_MODALITY_AUDIO) == 2);
    CHECK(strlen(tm_session_fingerprint(s)) == 16);

    tm_example *ex[NCASES] = {0};
    test_front_ends(s, ex);
    test_outputs(s, ex);
    test_threads(s);
    test_bad_inputs(s);
    test_folders();
    test_index(s);
    test_index_files(s);

    for (int k = 0; k < NCASES; k++) {
        tm_example_free(ex[k]);
        free(cases[k].text);
        free(cases[k].image);
        free(cases[k].audio);
        tm_free(cases[k].img_bytes);
        tm_free(cases[k].aud_bytes);
    }
    tm_session_free(s);
    tm_safetensors_close(vec);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp_dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", tmp_dir);
    return test_finish("serve_session");
}
