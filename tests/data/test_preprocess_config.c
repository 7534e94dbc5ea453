/* data: preprocess.json parsing, validation and round trip. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "trimodal/data.h"

/* Two configs are the same when they write the same JSON: it holds every
 * field, floats with 9 significant digits (exact for f32). Comparing the
 * structs' bytes would also compare their padding. */
static int same(const tm_preprocess_config *a, const tm_preprocess_config *b)
{
    char *ja = NULL, *jb = NULL;
    int eq = tm_preprocess_config_to_json(a, &ja) == TM_OK &&
             tm_preprocess_config_to_json(b, &jb) == TM_OK && strcmp(ja, jb) == 0;
    tm_free(ja);
    tm_free(jb);
    return eq;
}

static tm_status parse(tm_preprocess_config *c, const char *json)
{
    return tm_preprocess_config_parse(c, json, strlen(json));
}

static void test_defaults_and_overrides(void)
{
    tm_preprocess_config c;
    CHECK_OK(parse(&c, "{}"));
    tm_preprocess_config d = tm_preprocess_default_config();
    CHECK(same(&c, &d));
    CHECK(d.text.max_length == 32 && d.text.pad_to_max_length == 1);
    CHECK(d.audio.n_mels == 64 && d.audio.target_frames == 100 && d.audio.sample_rate == 16000);
    CHECK(d.image.height == 32 && d.image.width == 32 && d.image.channels == 1);

    CHECK_OK(parse(&c, "{\"text\": {\"max_length\": 77, \"add_bos\": true},"
                       " \"image\": {\"size\": 224, \"height\": 224, \"width\": 224, \"channels\": 3,"
                       "  \"filter\": \"bicubic\", \"mean\": [0.48, 0.45, 0.40], \"std\": [0.26],"
                       "  \"patch\": 16},"
                       " \"audio\": {\"n_mels\": 80, \"frames\": 3000, \"mel_scale\": \"htk\","
                       "  \"mel_norm\": \"none\", \"log\": \"db\", \"top_db\": 80, \"whisper_norm\": false,"
                       "  \"resampler\": \"linear\", \"window\": \"hamming\", \"pad_mode\": \"constant\"}}"));
    CHECK(c.text.max_length == 77 && c.text.add_bos == 1);
    CHECK(c.image.height == 224 && c.image.channels == 3 && c.image.filter == TM_FILTER_BICUBIC);
    CHECK(c.image.mean[1] == 0.45f && c.image.std[2] == 0.26f && c.image.patch == 16);
    CHECK(c.audio.n_mels == 80 && c.audio.target_frames == 3000 && c.audio.mel_scale == TM_MEL_HTK);
    CHECK(c.audio.log == TM_LOG_DB && c.audio.whisper_norm == 0);
    CHECK(c.audio.resampler == TM_RESAMPLE_LINEAR && c.audio.window == TM_WINDOW_HAMMING);

    /* the written JSON reads back to the same config */
    char *json;
    CHECK_OK(tm_preprocess_config_to_json(&c, &json));
    tm_preprocess_config back;
    CHECK_OK(tm_preprocess_config_parse(&back, json, strlen(json)));
    CHECK(same(&c, &back));
    tm_free(json);

    char dir[] = "/tmp/tm_pp_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[64];
    snprintf(path, sizeof path, "%s/preprocess.json", dir);
    CHECK_OK(tm_preprocess_config_save(&c, path));
    CHECK_OK(tm_preprocess_config_load(&back, path));
    CHECK(same(&c, &back));
    unlink(path);
    rmdir(dir);
    CHECK_STATUS(tm_preprocess_config_load(&back, "/nonexistent/preprocess.json"), TM_ERR_IO);
}

static void test_errors(void)
{
    struct {
        const char *json, *message;
        tm_status status;
    } bad[] = {
        {"{", "not valid JSON", TM_ERR_FORMAT},
        {"[]", "top level", TM_ERR_INVALID},
        {"{\"video\": {}}", "unknown section \"video\"", TM_ERR_INVALID},
        {"{\"text\": 3}", "text must be an object", TM_ERR_INVALID},
        {"{\"text\": {\"max_lenght\": 3}}", "text.max_lenght: unknown key", TM_ERR_INVALID},
        {"{\"text\": {\"max_length\": 2.5}}", "text.max_length: must be a whole number", TM_ERR_INVALID},
        {"{\"text\": {\"max_length\": -1}}", "text.max_length", TM_ERR_INVALID},
        {"{\"text\": {\"add_bos\": 1}}", "text.add_bos: must be true or false", TM_ERR_INVALID},
        {"{\"text\": {\"max_length\": 0}}", "pad_to_max_length needs", TM_ERR_INVALID},
        {"{\"image\": {\"filter\": \"lanczos\"}}", "image.filter: must be one of", TM_ERR_INVALID},
        {"{\"image\": {\"channels\": 2}}", "image.channels", TM_ERR_INVALID},
        {"{\"image\": {\"mean\": []}}", "image.mean", TM_ERR_INVALID},
        {"{\"image\": {\"mean\": [1, 2, 3, 4]}}", "image.mean", TM_ERR_INVALID},
        {"{\"image\": {\"std\": [0]}}", "image", TM_ERR_INVALID},
        {"{\"image\": {\"patch\": 5}}", "image", TM_ERR_INVALID},
        {"{\"audio\": {\"sample_rate\": 0}}", "audio.sample_rate", TM_ERR_INVALID},
        {"{\"audio\": {\"sample_rate\": 10000000}}", "audio.sample_rate", TM_ERR_INVALID},
        {"{\"audio\": {\"n_fft\": 400, \"win_length\": 800}}", "audio", TM_ERR_INVALID},
        {"{\"audio\": {\"mel_scale\": \"bark\"}}", "audio.mel_scale", TM_ERR_INVALID},
        {"{\"audio\": {\"power\": \"2\"}}", "audio.power: must be a finite number", TM_ERR_INVALID},
        {"{\"audio\": {\"log_floor\": 0}}", "audio", TM_ERR_INVALID},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        tm_preprocess_config c = tm_preprocess_default_config(), before = c;
        tm_status s = parse(&c, bad[i].json);
        test_checks++;
        if (s != bad[i].status || !strstr(tm_last_error(), bad[i].message)) {
            test_failures++;
            fprintf(stderr, "case %zu (%s): got %s '%s', want %s containing '%s'\n", i, bad[i].json,
                    tm_status_name(s), tm_last_error(), tm_status_name(bad[i].status),
                    bad[i].message);
        }
        CHECK(same(&c, &before)); /* unchanged on failure */
    }
    /* a huge document is refused before parsing */
    size_t n = (1 << 20) + 10;
    char *big = malloc(n);
    memset(big, ' ', n);
    big[0] = '{';
    big[n - 1] = '}';
    tm_preprocess_config c;
    CHECK_STATUS(tm_preprocess_config_parse(&c, big, n), TM_ERR_LIMIT);
    free(big);
}

int main(void)
{
    test_defaults_and_overrides();
    test_errors();
    return test_finish("preprocess_config");
}
