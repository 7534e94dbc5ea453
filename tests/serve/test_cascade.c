/* Cascades (src/serve/cascade.c) against independent references: the
 * PyTorch class probabilities of tests/data/serve (scripts/gen_serve_vectors.py,
 * the model's float64 twin) for examples with one or two modalities must be
 * what a stage of exactly those modalities answers (its sub-model skips the
 * other encoders), routing by threshold and presence, the full model for
 * the rest, bad cascade files, and the server's /v1/classify through a
 * cascade. */
#define _GNU_SOURCE
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "http_client.h"
#include "testutil.h"
#include "trimodal/io.h"
#include "trimodal/serve.h"

#define NCASES 8
#define C 4

static char data_dir[1024], model_dir[1100];
static tm_safetensors *vec;
static tm_example *ex[NCASES];
static char *texts[NCASES], *imgs[NCASES], *auds[NCASES];
static size_t img_len[NCASES], aud_len[NCASES];

static const float *ref_probs(int k)
{
    char name[32];
    snprintf(name, sizeof name, "probs.%d", k);
    tm_tensor t;
    if (tm_safetensors_get(vec, name, &t)) {
        fprintf(stderr, "missing %s\n", name);
        exit(1);
    }
    return t.data;
}

static char *read_all(const char *path, size_t *n)
{
    char *d = NULL;
    size_t len = 0;
    if (tm_read_file(path, (size_t)1 << 26, &d, &len)) {
        fprintf(stderr, "cannot read %s: %s\n", path, tm_last_error());
        exit(1);
    }
    if (n) *n = len;
    return d;
}

static void load_cases(tm_session *s)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/cases.json", data_dir);
    char *text = read_all(path, NULL);
    cJSON *root = cJSON_Parse(text);
    tm_free(text);
    if (!cJSON_IsArray(root) || cJSON_GetArraySize(root) != NCASES) exit(1);
    int k = 0;
    for (cJSON *it = root->child; it; it = it->next, k++) {
        cJSON *t = cJSON_GetObjectItem(it, "text"), *im = cJSON_GetObjectItem(it, "image"),
              *au = cJSON_GetObjectItem(it, "audio");
        tm_session_input in = {0};
        if (t) texts[k] = strdup(t->valuestring), in.text = texts[k], in.text_len = strlen(texts[k]);
        if (im) {
            snprintf(path, sizeof path, "%s/%s", data_dir, im->valuestring);
            imgs[k] = read_all(path, &img_len[k]);
            in.image = imgs[k], in.image_len = img_len[k];
        }
        if (au) {
            snprintf(path, sizeof path, "%s/%s", data_dir, au->valuestring);
            auds[k] = read_all(path, &aud_len[k]);
            in.audio = auds[k], in.audio_len = aud_len[k];
        }
        if (tm_session_prepare(s, &in, &ex[k])) {
            fprintf(stderr, "prepare %d: %s\n", k, tm_last_error());
            exit(1);
        }
    }
    cJSON_Delete(root);
}

static tm_cascade *make(tm_session *s, const char *json)
{
    tm_cascade *c = NULL;
    tm_status st = tm_cascade_new(&c, s, json, strlen(json), "test");
    if (st) fprintf(stderr, "cascade %s: %s\n", json, tm_last_error());
    CHECK(st == TM_OK && c);
    return c;
}

static const char *mods_json(unsigned bits, char *buf, size_t n)
{
    snprintf(buf, n, "[%s%s%s%s%s]", bits & TM_MODALITY_TEXT ? "\"text\"" : "",
             (bits & TM_MODALITY_TEXT) && (bits & (TM_MODALITY_IMAGE | TM_MODALITY_AUDIO)) ? ","
                                                                                             : "",
             bits & TM_MODALITY_IMAGE ? "\"vision\"" : "",
             (bits & TM_MODALITY_IMAGE) && (bits & TM_MODALITY_AUDIO) ? "," : "",
             bits & TM_MODALITY_AUDIO ? "\"audio\"" : "");
    return buf;
}

/* A stage of exactly an example's modalities answers what PyTorch's twin
 * of the whole model answers for that example (cases 1..7 cover all six
 * proper subsets). */
static void test_stages_match_reference(tm_session *s)
{
    for (int k = 1; k < NCASES; k++) {
        unsigned bits = tm_example_present(ex[k]);
        char mods[64], json[160];
        snprintf(json, sizeof json, "{\"stages\":[{\"modalities\":%s,\"threshold\":0}]}",
                 mods_json(bits, mods, sizeof mods));
        tm_cascade *c = make(s, json);
        if (!c) continue;
        CHECK(tm_cascade_stage_count(c) == 1);
        CHECK(!strcmp(tm_cascade_stage_name(c, 1), "full"));
        float p[C];
        int used = -1;
        CHECK_OK(tm_cascade_classify(c, &ex[k], 1, p, &used));
        CHECK(used == 0);
        char what[96];
        snprintf(what, sizeof what, "case %d on a %s stage", k, tm_cascade_stage_name(c, 0));
        check_close(what, p, ref_probs(k), C, 2e-5, 1e-4);
        tm_cascade_free(c);
    }
}

/* Routing: presence picks the first stage, the threshold decides. */
static void test_routing(tm_session *s)
{
    tm_cascade *c = make(s, "{\"stages\":[{\"modalities\":[\"text\"],\"threshold\":0},"
                            "{\"modalities\":[\"vision\"],\"threshold\":0}]}");
    if (!c) return;
    CHECK(!strcmp(tm_cascade_stage_name(c, 0), "text"));
    CHECK(!strcmp(tm_cascade_stage_name(c, 1), "vision"));
    CHECK(tm_cascade_stage_name(c, 3) == NULL);
    float p[NCASES * C], full[NCASES * C];
    int used[NCASES];
    CHECK_OK(tm_cascade_classify(c, ex, NCASES, p, used));
    /* presence: 0 tva, 1 t, 2 v, 3 a, 4 va, 5 tv, 6 ta, 7 va */
    static const int want[NCASES] = {0, 0, 1, 2, 1, 0, 0, 1};
    for (int k = 0; k < NCASES; k++)
        CHECK(used[k] == want[k]);
    check_close("batch: case 1 (text stage)", p + 1 * C, ref_probs(1), C, 2e-5, 1e-4);
    check_close("batch: case 2 (vision stage)", p + 2 * C, ref_probs(2), C, 2e-5, 1e-4);
    check_close("batch: case 3 (full model)", p + 3 * C, ref_probs(3), C, 2e-5, 1e-4);
    /* the text stage sees only case 0's text: as the full model given only the text */
    tm_session_input in = {.text = texts[0], .text_len = strlen(texts[0])};
    tm_example *t0 = NULL;
    CHECK_OK(tm_session_prepare(s, &in, &t0));
    float pt[C];
    CHECK_OK(tm_session_classify(s, &t0, 1, pt));
    check_close("case 0 on the text stage", p, pt, C, 1e-5, 1e-4);
    tm_example_free(t0);

    /* threshold 1: nothing is that sure, the full model answers everything */
    CHECK_OK(tm_cascade_set_threshold(c, 0, 1.0));
    CHECK_OK(tm_cascade_set_threshold(c, 1, 1.0));
    CHECK(tm_cascade_threshold(c, 1) == 1.0);
    CHECK_OK(tm_cascade_classify(c, ex, NCASES, p, used));
    CHECK_OK(tm_session_classify(s, ex, NCASES, full));
    for (int k = 0; k < NCASES; k++)
        CHECK(used[k] == 2);
    check_close("threshold 1 = the full model", p, full, NCASES * C, 0, 0);
    for (int k = 0; k < NCASES; k++) {
        char what[64];
        snprintf(what, sizeof what, "case %d through the full stage", k);
        check_close(what, p + k * C, ref_probs(k), C, 2e-5, 1e-4);
    }
    /* just above / at the text stage's confidence for case 1 */
    float best = 0;
    for (int j = 0; j < C; j++)
        best = ref_probs(1)[j] > best ? ref_probs(1)[j] : best;
    CHECK_OK(tm_cascade_set_threshold(c, 0, best + 1e-3));
    CHECK_OK(tm_cascade_classify(c, &ex[1], 1, p, used));
    CHECK(used[0] == 2);
    CHECK_OK(tm_cascade_set_threshold(c, 0, best - 1e-3));
    CHECK_OK(tm_cascade_classify(c, &ex[1], 1, p, used));
    CHECK(used[0] == 0);
    CHECK_STATUS(tm_cascade_set_threshold(c, 0, 1.5), TM_ERR_INVALID);
    CHECK_STATUS(tm_cascade_set_threshold(c, 2, 0.5), TM_ERR_INVALID);
    CHECK_STATUS(tm_cascade_classify(c, ex, 0, p, used), TM_ERR_INVALID);
    tm_cascade_free(c);
}

static void test_bad_files(tm_session *s)
{
    static const struct {
        const char *json;
        tm_status want;
        const char *says;
    } bad[] = {
        {"{\"stages\": [", TM_ERR_FORMAT, "not valid JSON"},
        {"[]", TM_ERR_FORMAT, "stages"},
        {"{\"stages\": []}", TM_ERR_FORMAT, "1 to"},
        {"{\"stages\": [{\"modalities\": [\"text\"], \"threshold\": 0.9}], \"x\": 1}",
         TM_ERR_FORMAT, "unknown key \"x\""},
        {"{\"stages\": [{\"modalities\": [\"smell\"], \"threshold\": 0.9}]}", TM_ERR_FORMAT,
         "unknown modality"},
        {"{\"stages\": [{\"modalities\": [\"text\"], \"threshold\": 1.5}]}", TM_ERR_FORMAT,
         "threshold"},
        {"{\"stages\": [{\"modalities\": [\"text\"]}]}", TM_ERR_FORMAT, "threshold"},
        {"{\"stages\": [{\"modalities\": [], \"threshold\": 0.5}]}", TM_ERR_FORMAT, "modalities"},
        {"{\"stages\": [{\"modalities\": [\"text\"], \"threshold\": 0.5, \"k\": 1}]}",
         TM_ERR_FORMAT, "unknown key \"k\""},
        {"{\"stages\": [{\"modalities\": [\"text\", \"vision\", \"audio\"], \"threshold\": 0.5}]}",
         TM_ERR_INVALID, "full model"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        tm_cascade *c = (tm_cascade *)1;
        tm_status st = tm_cascade_new(&c, s, bad[i].json, strlen(bad[i].json), "bad.json");
        CHECK(st == bad[i].want);
        CHECK(c == NULL);
        if (!strstr(tm_last_error(), bad[i].says) || !strstr(tm_last_error(), "bad.json"))
            fprintf(stderr, "case %zu: message '%s' lacks '%s'\n", i, tm_last_error(),
                    bad[i].says);
        CHECK(strstr(tm_last_error(), bad[i].says) && strstr(tm_last_error(), "bad.json"));
    }
    tm_cascade *c = NULL;
    CHECK_STATUS(tm_cascade_load(&c, s, "/nonexistent/cascade.json"), TM_ERR_IO);
    CHECK(c == NULL);
    tm_cascade_free(NULL);
}

/* /v1/classify through a cascade names the stage. */
static void test_server(tm_session *s)
{
    tm_cascade *c = make(s, "{\"stages\":[{\"modalities\":[\"text\"],\"threshold\":0}]}");
    if (!c) return;
    tm_server_params p = tm_server_default_params();
    p.port = 0;
    p.cascade = c;
    tm_server *srv = NULL;
    CHECK_OK(tm_server_start(&srv, s, NULL, &p));
    if (srv) {
        int fd = hc_connect(tm_server_port(srv));
        CHECK(fd >= 0);
        char *b64 = hc_base64(imgs[2], img_len[2]);
        char body[8192];
        const char *reqs[2];
        reqs[0] = "{\"text\": \"red boot\"}";
        snprintf(body, sizeof body, "{\"image\": \"%s\"}", b64 ? b64 : "");
        reqs[1] = body;
        static const char *const want_stage[2] = {"text", "full"};
        for (int i = 0; i < 2 && fd >= 0; i++) {
            hc_response r;
            int rc = hc_request(fd, "POST", "/v1/classify", "Content-Type: application/json\r\n",
                                reqs[i], strlen(reqs[i]), &r, 20);
            CHECK(rc == 0 && r.status == 200);
            cJSON *root = rc == 0 ? cJSON_Parse(r.body) : NULL;
            const cJSON *st = root ? cJSON_GetObjectItem(root, "stage") : NULL;
            CHECK(cJSON_IsString(st) && !strcmp(st->valuestring, want_stage[i]));
            if (i == 1) { /* the image alone: the full model, as PyTorch's case 2 */
                const cJSON *pr = root ? cJSON_GetObjectItem(root, "probs") : NULL;
                float got[C] = {0};
                for (int j = 0; j < C && cJSON_GetArrayItem(pr, j); j++)
                    got[j] = (float)cJSON_GetArrayItem(pr, j)->valuedouble;
                check_close("server: image through the cascade", got, ref_probs(2), C, 2e-5,
                            1e-4);
            }
            cJSON_Delete(root);
            hc_response_free(&r);
        }
        free(b64);
        if (fd >= 0) close(fd);
        CHECK(tm_server_shutdown(srv, 5) == 0);
        tm_server_free(srv);
    }
    tm_cascade_free(c);
}

int main(void)
{
    const char *src = getenv("TM_SOURCE_DIR");
    snprintf(data_dir, sizeof data_dir, "%s/tests/data/serve", src && *src ? src : ".");
    snprintf(model_dir, sizeof model_dir, "%s/model", data_dir);
    char vp[4200];
    snprintf(vp, sizeof vp, "%s/vectors.safetensors", data_dir);
    if (tm_safetensors_open(&vec, vp)) {
        fprintf(stderr, "%s\n", tm_last_error());
        return 1;
    }
    tm_session *s = NULL;
    CHECK_OK(tm_session_open(&s, model_dir, NULL));
    if (!s) return test_finish("serve_cascade");
    load_cases(s);
    test_stages_match_reference(s);
    test_routing(s);
    test_bad_files(s);
    test_server(s);
    for (int k = 0; k < NCASES; k++) {
        tm_example_free(ex[k]);
        free(texts[k]);
        tm_free(imgs[k]);
        tm_free(auds[k]);
    }
    tm_session_free(s);
    tm_safetensors_close(vec);
    return test_finish("serve_cascade");
}
