/* data: manifests (every field, every class of problem with its line),
 * dataset.json, file reading limits, and media checks. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"
#include "trimodal/data.h"

static char tmpdir[256];

static void write_text(const char *name, const char *text)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    FILE *f = fopen(p, "wb");
    CHECK(f != NULL);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static const char *tpath(const char *name)
{
    static char p[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", tmpdir, name);
    return p[k];
}

/* A mono 16-bit PCM WAV of n samples of a tone. */
static void write_wav(const char *name, int rate, int n)
{
    FILE *f = fopen(tpath(name), "wb");
    if (!f) return;
    uint32_t data = (uint32_t)n * 2, riff = 36 + data, fmt = 16, br = (uint32_t)rate * 2;
    uint16_t pcm = 1, ch = 1, align = 2, bits = 16;
    fwrite("RIFF", 1, 4, f);
    fwrite(&riff, 4, 1, f);
    fwrite("WAVEfmt ", 1, 8, f);
    fwrite(&fmt, 4, 1, f);
    fwrite(&pcm, 2, 1, f);
    fwrite(&ch, 2, 1, f);
    uint32_t r = (uint32_t)rate;
    fwrite(&r, 4, 1, f);
    fwrite(&br, 4, 1, f);
    fwrite(&align, 2, 1, f);
    fwrite(&bits, 2, 1, f);
    fwrite("data", 1, 4, f);
    fwrite(&data, 4, 1, f);
    for (int i = 0; i < n; i++) {
        int16_t v = (int16_t)(8000 * ((i / 20) % 2 ? 1 : -1));
        fwrite(&v, 2, 1, f);
    }
    fclose(f);
}

static void write_png(const char *name, int w, int h)
{
    tm_image *img;
    if (tm_image_new(&img, w, h, 3)) return;
    for (int i = 0; i < w * h * 3; i++)
        img->data[i] = (uint8_t)(i * 7);
    CHECK_OK(tm_image_save_png(img, tpath(name)));
    tm_image_free(img);
}

static tm_manifest *parse(const char *text, int keep_going, tm_status want)
{
    tm_manifest_params p = tm_manifest_default_params();
    p.keep_going = keep_going;
    tm_manifest *m = NULL;
    CHECK_STATUS(tm_manifest_parse(&m, text, strlen(text), "m.jsonl", "media", &p), want);
    return m;
}

/* The load fails with `want`, and the message holds `needle`. */
static void expect_error(const char *text, tm_status want, const char *needle)
{
    tm_manifest *m = parse(text, 0, want);
    CHECK(m == NULL);
    const char *e = tm_last_error();
    test_checks++;
    if (!strstr(e, needle)) {
        test_failures++;
        fprintf(stderr, "expected '%s' in the message: %s\n", needle, e);
    }
    tm_manifest_free(m);
}

static void test_fields(void)
{
    const char *text =
        "\xEF\xBB\xBF{\"id\": \"a\", \"text\": \"a Red sneaker\", \"image\": \"i/a.png\", "
        "\"audio\": \"/abs/a.wav\", \"label\": \"sneaker\", \"split\": \"train\", "
        "\"transcript\": \"a red sneaker\", \"words\": [{\"w\": \"red\", \"start\": 0.1, "
        "\"end\": 0.25}, {\"w\": \"sneaker\", \"start\": 0.3, \"end\": 0.7}, {\"w\": \"zzz\", "
        "\"start\": 0.8, \"end\": 0.9}], \"region\": [1, 2, 10.5, 20], \"voice\": \"f1\", "
        "\"age\": 31, \"meta\": {\"k\": [1, true]}}\r\n"
        "\n"
        "   \n"
        "{\"id\": 7, \"image\": \"b.png\", \"label\": \"boot\", \"split\": \"holdout\", "
        "\"voice\": null}\n"
        "{\"id\": \"c\", \"text\": \"only text\", \"label\": null, \"split\": \"train\"}\n"
        "{\"id\": \"d\", \"audio\": \"d.wav\", \"label\": \"boot\"}"; /* no final newline */
    tm_manifest *m = parse(text, 0, TM_OK);
    if (!m) return;
    CHECK(tm_manifest_count(m) == 4);
    const tm_manifest_row *r = tm_manifest_row_at(m, 0);
    CHECK(r->line == 1 && !strcmp(r->id, "a"));
    CHECK(r->text_len == 13 && !strcmp(r->text, "a Red sneaker"));
    CHECK(!strcmp(r->image, "i/a.png") && !strcmp(r->image_path, "media/i/a.png"));
    CHECK(!strcmp(r->audio_path, "/abs/a.wav"));
    CHECK(r->present == (TM_MODALITY_TEXT | TM_MODALITY_IMAGE | TM_MODALITY_AUDIO));
    CHECK(!strcmp(r->split, "train") && !strcmp(r->transcript, "a red sneaker"));
    /* names without dataset.json: sorted, so boot = 0, sneaker = 1 */
    CHECK(tm_manifest_num_classes(m) == 2);
    CHECK(r->label == 1 && tm_manifest_row_at(m, 1)->label == 0);
    CHECK(!strcmp(tm_manifest_class_name(m, 0), "boot"));
    CHECK(r->n_words == 3 && !strcmp(r->words[1].w, "sneaker"));
    CHECK(r->words[0].start == 0.1 && r->words[0].end == 0.25);
    /* found in the text case-insensitively, in order; "zzz" is not there */
    CHECK(r->words[0].text_begin == 2 && r->words[0].text_end == 5);
    CHECK(r->words[1].text_begin == 6 && r->words[1].text_end == 13);
    CHECK(r->words[2].text_begin == -1);
    CHECK(r->has_region && r->region[0] == 1 && r->region[2] == 10.5f && r->region[3] == 20);
    /* extra fields as text */
    CHECK(!strcmp(tm_manifest_field(m, 0, "voice"), "f1"));
    CHECK(!strcmp(tm_manifest_field(m, 0, "age"), "31"));
    CHECK(!strcmp(tm_manifest_field(m, 0, "meta"), "{\"k\":[1,true]}"));
    CHECK(!strcmp(tm_manifest_field(m, 0, "label"), "sneaker"));
    CHECK(!strcmp(tm_manifest_field(m, 0, "split"), "train"));
    CHECK(!strcmp(tm_manifest_field(m, 1, "voice"), "null"));
    CHECK(tm_manifest_field(m, 2, "voice") == NULL);
    CHECK(tm_manifest_field(m, 0, "nope") == NULL);
    CHECK(tm_manifest_field_count(m) == 3 && !strcmp(tm_manifest_field_name(m, 1), "age"));
    /* row 2: id 7 on line 4 (blank lines counted) */
    r = tm_manifest_row_at(m, 1);
    CHECK(r->line == 4 && !strcmp(r->id, "7") && r->present == TM_MODALITY_IMAGE);
    CHECK(tm_manifest_find(m, "7") == 1 && tm_manifest_find(m, "c") == 2);
    CHECK(tm_manifest_find(m, "zz") == -1);
    r = tm_manifest_row_at(m, 2);
    CHECK(r->label == TM_LABEL_NONE && r->image == NULL && r->audio == NULL);
    CHECK(tm_manifest_field(m, 2, "label") == NULL);
    r = tm_manifest_row_at(m, 3);
    CHECK(r->line == 6 && r->split == NULL && r->present == TM_MODALITY_AUDIO);
    /* splits */
    CHECK(tm_manifest_split_count(m) == 2);
    CHECK(tm_manifest_split_size(m, "train") == 2 && tm_manifest_split_size(m, "holdout") == 1);
    CHECK(tm_manifest_split_known(m, "train") && !tm_manifest_split_known(m, "holdout"));
    int64_t *rows, n;
    CHECK_OK(tm_manifest_split_rows(m, "train", &rows, &n));
    CHECK(n == 2 && rows[0] == 0 && rows[1] == 2);
    tm_free(rows);
    CHECK_OK(tm_manifest_split_rows(m, NULL, &rows, &n));
    CHECK(n == 4);
    tm_free(rows);
    CHECK_OK(tm_manifest_split_rows(m, "none", &rows, &n));
    CHECK(n == 0 && rows == NULL);
    CHECK(tm_manifest_row_at(m, 4) == NULL && tm_manifest_row_at(m, -1) == NULL);
    tm_manifest_free(m);

    /* numbers: classes = 1 + the largest */
    m = parse("{\"id\":1,\"label\":3}\n{\"id\":2,\"label\":12}\n", 0, TM_OK);
    if (m) {
        CHECK(tm_manifest_num_classes(m) == 13 && tm_manifest_class_name(m, 3) == NULL);
        CHECK(!strcmp(tm_manifest_field(m, 1, "label"), "12"));
    }
    tm_manifest_free(m);
    m = parse("", 0, TM_OK);
    CHECK(m && tm_manifest_count(m) == 0);
    tm_manifest_free(m);
}

static void test_errors(void)
{
    /* each class of problem names the file and the line */
    expect_error("{\"id\":1}\n{\"id\":2,}\n", TM_ERR_FORMAT, "m.jsonl:2: not valid JSON");
    expect_error("{\"id\":1}\n\n[1,2]\n", TM_ERR_FORMAT,
                 "m.jsonl:3: a line must be one JSON object");
    expect_error("{\"id\":1} {\"id\":2}\n", TM_ERR_FORMAT, "m.jsonl:1: text after the JSON");
    expect_error("{\"text\":\"x\"}\n", TM_ERR_INVALID, "m.jsonl:1: no \"id\"");
    expect_error("{\"id\":\"\"}\n", TM_ERR_INVALID, "\"id\" is empty");
    expect_error("{\"id\":1.5}\n", TM_ERR_INVALID, "\"id\" must be a string or an integer");
    expect_error("{\"id\":\"a\"}\n{\"id\":\"b\"}\n{\"id\":\"a\"}\n", TM_ERR_INVALID,
                 "m.jsonl:3: duplicate id \"a\" (first on line 1)");
    expect_error("{\"id\":1,\"id\":2}\n", TM_ERR_INVALID, "the key \"id\" appears twice");
    expect_error("{\"id\":1,\"v\":2,\"v\":3}\n", TM_ERR_INVALID, "the key \"v\" appears twice");
    expect_error("{\"id\":1,\"text\":5}\n", TM_ERR_INVALID,
                 "\"text\" must be a string or null, not a number");
    expect_error("{\"id\":1,\"image\":\"\"}\n", TM_ERR_INVALID, "\"image\" is an empty path");
    expect_error("{\"id\":1,\"audio\":[1]}\n", TM_ERR_INVALID, "\"audio\" must be a path");
    expect_error("{\"id\":1,\"label\":-1}\n", TM_ERR_INVALID, "not a class index");
    expect_error("{\"id\":1,\"label\":2.5}\n", TM_ERR_INVALID, "not a class index");
    expect_error("{\"id\":1,\"label\":true}\n", TM_ERR_INVALID, "\"label\" must be a class index");
    expect_error("{\"id\":1,\"label\":1}\n{\"id\":2,\"label\":\"x\"}\n", TM_ERR_INVALID,
                 "m.jsonl:2: \"label\" is a name but earlier rows use numbers");
    expect_error("{\"id\":1,\"label\":5000000}\n", TM_ERR_INVALID, "over the limit");
    expect_error("{\"id\":1,\"split\":3}\n", TM_ERR_INVALID,
                 "\"split\" must be a non-empty string");
    expect_error("{\"id\":1,\"words\":[{\"w\":\"a\",\"start\":0,\"end\":1}]}\n", TM_ERR_INVALID,
                 "the row has no \"audio\"");
    expect_error(
        "{\"id\":1,\"audio\":\"a.wav\",\"words\":[{\"w\":\"a\",\"start\":0.5,\"end\":0.2}]}\n",
        TM_ERR_INVALID, "need 0 <= start <= end");
    expect_error("{\"id\":1,\"audio\":\"a.wav\",\"words\":[{\"w\":\"a\",\"start\":0.5,\"end\":0.6},"
                 "{\"w\":\"b\",\"start\":0.1,\"end\":0.2}]}\n",
                 TM_ERR_INVALID, "before the previous word");
    expect_error("{\"id\":1,\"audio\":\"a.wav\",\"words\":[{\"w\":1,\"start\":0,\"end\":1}]}\n",
                 TM_ERR_INVALID, "\"words\"[0] must be an object");
    expect_error("{\"id\":1,\"audio\":\"a.wav\",\"words\":{}}\n", TM_ERR_INVALID,
                 "\"words\" must be an array");
    expect_error("{\"id\":1,\"region\":[0,0,1,1]}\n", TM_ERR_INVALID, "the row has no \"image\"");
    expect_error("{\"id\":1,\"image\":\"a.png\",\"region\":[0,0,1]}\n", TM_ERR_INVALID,
                 "\"region\" must be [x0, y0, x1, y1]");
    expect_error("{\"id\":1,\"image\":\"a.png\",\"region\":[5,0,1,3]}\n", TM_ERR_INVALID,
                 "need 0 <= x0 < x1");
    /* max_rows and long lines */
    tm_manifest_params p = tm_manifest_default_params();
    p.max_rows = 2;
    tm_manifest *m = NULL;
    const char *three = "{\"id\":1}\n{\"id\":2}\n{\"id\":3}\n";
    CHECK_STATUS(tm_manifest_parse(&m, three, strlen(three), "m.jsonl", NULL, &p), TM_ERR_LIMIT);
    CHECK(strstr(tm_last_error(), "m.jsonl:3: more than 2 rows") != NULL);
    p = tm_manifest_default_params();
    p.max_line_bytes = 16;
    const char *lines = "{\"id\":1}\n{\"id\":2,\"text\":\"far too long\"}\n";
    CHECK_STATUS(tm_manifest_parse(&m, lines, strlen(lines), "m.jsonl", NULL, &p), TM_ERR_LIMIT);
    CHECK(strstr(tm_last_error(), "m.jsonl:2: the line is longer than 16 bytes") != NULL);
    p.max_bytes = 10;
    CHECK_STATUS(tm_manifest_parse(&m, lines, strlen(lines), "m.jsonl", NULL, &p), TM_ERR_LIMIT);
    p = tm_manifest_default_params();
    p.max_rows = 0;
    CHECK_STATUS(tm_manifest_parse(&m, lines, strlen(lines), "m.jsonl", NULL, &p), TM_ERR_INVALID);
    /* a NUL byte inside a line is not JSON */
    const char nul[] = "{\"id\":1}\n{\"id\":\0\"x\"}\n";
    CHECK_STATUS(tm_manifest_parse(&m, nul, sizeof nul - 1, "m.jsonl", NULL, NULL), TM_ERR_FORMAT);
    CHECK(strstr(tm_last_error(), "m.jsonl:2: a NUL byte at column 7") != NULL);
}

static void test_keep_going(void)
{
    const char *text = "{\"id\":\"a\",\"label\":0}\n"
                       "not json\n"
                       "{\"id\":\"a\"}\n"
                       "{\"id\":\"b\",\"v\":1,\"v\":2}\n"
                       "{\"id\":\"c\",\"text\":1}\n"
                       "{\"id\":\"d\",\"label\":2,\"split\":\"weird\"}\n"
                       "{\"id\":\"b\",\"v\":\"ok\"}\n";
    tm_manifest_params p = tm_manifest_default_params();
    p.keep_going = 1;
    p.max_problems = 3;
    p.max_line_bytes = 64;
    tm_manifest *m = NULL;
    CHECK_OK(tm_manifest_parse(&m, text, strlen(text), "k.jsonl", NULL, &p));
    if (!m) return;
    /* good rows kept (b on line 7: its first try on line 4 was dropped) */
    CHECK(tm_manifest_count(m) == 3);
    CHECK(tm_manifest_find(m, "b") == 2 && tm_manifest_row_at(m, 2)->line == 7);
    CHECK(!strcmp(tm_manifest_field(m, 2, "v"), "ok"));
    CHECK(tm_manifest_problem_count(m) == 4);
    int64_t line;
    CHECK(strstr(tm_manifest_problem(m, 0, &line), "k.jsonl:2: not valid JSON") && line == 2);
    CHECK(strstr(tm_manifest_problem(m, 1, &line), "duplicate id") && line == 3);
    CHECK(tm_manifest_problem(m, 2, &line) && line == 4);
    CHECK(tm_manifest_problem(m, 3, NULL) == NULL); /* counted, not kept */
    CHECK(tm_manifest_split_count(m) == 1 && !tm_manifest_split_known(m, "weird"));
    tm_manifest_free(m);
}

static void test_files(void)
{
    /* a manifest over several read chunks (1 MiB), with dataset.json beside it */
    write_text("dataset.json",
               "{\"name\": \"tiny\", \"version\": \"1\", \"classes\": [\"cat\", \"dog\", \"eel\"],"
               " \"splits\": {\"train\": 30000, \"test\": 5}, \"recipe\": {\"seed\": 3},"
               " \"modalities\": [\"text\", \"image\"]}");
    char *big = malloc(64 * 40000);
    size_t at = 0;
    for (int i = 0; i < 30000; i++)
        at += (size_t)sprintf(
            big + at, "{\"id\":%d,\"text\":\"row %d\",\"label\":\"%s\",\"split\":\"train\"}\n", i,
            i,
            i % 3 == 0   ? "cat"
            : i % 3 == 1 ? "dog"
                         : "eel");
    at += (size_t)sprintf(big + at, "{\"id\":\"t\",\"label\":2,\"split\":\"test\"}");
    big[at] = '\0';
    write_text("m.jsonl", big);
    free(big);
    tm_manifest *m = NULL;
    CHECK_OK(tm_manifest_load(&m, tpath("m.jsonl"), NULL));
    if (m) {
        CHECK(tm_manifest_count(m) == 30001);
        CHECK(!strcmp(tm_manifest_dataset_name(m), "tiny"));
        CHECK(tm_manifest_dataset_path(m) && strstr(tm_manifest_dataset_path(m), "dataset.json"));
        CHECK(tm_manifest_num_classes(m) == 3 && !strcmp(tm_manifest_class_name(m, 2), "eel"));
        CHECK(tm_manifest_row_at(m, 29999)->label == 2 && tm_manifest_row_at(m, 30000)->label == 2);
        CHECK(!strcmp(tm_manifest_row_at(m, 12345)->text, "row 12345"));
        CHECK(tm_manifest_split_expected(m, "train") == 30000);
        CHECK(tm_manifest_split_expected(m, "test") == 5 && tm_manifest_split_size(m, "test") == 1);
        CHECK(tm_manifest_split_expected(m, "val") == -1);
        CHECK(!strcmp(tm_manifest_dataset_value(m, "recipe"), "{\"seed\":3}"));
        CHECK(!strcmp(tm_manifest_dataset_value(m, "version"), "1"));
        CHECK(tm_manifest_dataset_value(m, "nope") == NULL);
        CHECK(!strcmp(tm_manifest_dir(m), tmpdir));
    }
    tm_manifest_free(m);

    /* labels checked against dataset.json */
    write_text("l.jsonl", "{\"id\":1,\"label\":\"cat\"}\n{\"id\":2,\"label\":3}\n");
    CHECK_STATUS(tm_manifest_load(&m, tpath("l.jsonl"), NULL), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(),
                 "l.jsonl:2: \"label\" 3 is out of range: dataset.json lists 3 classes"));
    write_text("l.jsonl", "{\"id\":1,\"label\":\"cow\"}\n");
    CHECK_STATUS(tm_manifest_load(&m, tpath("l.jsonl"), NULL), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "l.jsonl:1: \"label\" \"cow\" is not one of the 3 classes"));
    /* dataset_json "" ignores it */
    tm_manifest_params p = tm_manifest_default_params();
    p.dataset_json = "";
    CHECK_OK(tm_manifest_load(&m, tpath("l.jsonl"), &p));
    CHECK(m && tm_manifest_dataset_path(m) == NULL && tm_manifest_num_classes(m) == 1);
    tm_manifest_free(m);

    /* bad dataset.json files */
    const char *bad[][2] = {
        {"[1]", "must be a JSON object"},
        {"{\"classes\": []}", "\"name\""},
        {"{\"name\": \"x\", \"classes\": [\"a\", \"a\"]}", "appears twice"},
        {"{\"name\": \"x\", \"classes\": [\"a\", 3]}", "\"classes\"[1]"},
        {"{\"name\": \"x\", \"splits\": {\"train\": -1}}", "\"splits\".\"train\""},
        {"{\"name\": \"x\", \"modalities\": [\"smell\"]}", "\"modalities\""},
        {"{\"name\": \"x\", \"version\": 2}", "\"version\" must be a string"},
        {"{\"name\": ", "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        write_text("dataset.json", bad[i][0]);
        CHECK_STATUS(tm_manifest_load(&m, tpath("l.jsonl"), NULL), TM_ERR_FORMAT);
        CHECK(strstr(tm_last_error(), bad[i][1]) != NULL);
        CHECK(strstr(tm_last_error(), "dataset.json") != NULL);
    }
    unlink(tpath("dataset.json"));
    p.dataset_json = tpath("none.json");
    CHECK_STATUS(tm_manifest_load(&m, tpath("l.jsonl"), &p), TM_ERR_IO);

    /* missing files, folders and FIFOs fail at once */
    CHECK_STATUS(tm_manifest_load(&m, tpath("missing.jsonl"), NULL), TM_ERR_IO);
    CHECK(strstr(tm_last_error(), "missing.jsonl") != NULL);
    CHECK_STATUS(tm_manifest_load(&m, tmpdir, NULL), TM_ERR_IO);
    if (mkfifo(tpath("fifo.jsonl"), 0600) == 0) {
        CHECK_STATUS(tm_manifest_load(&m, tpath("fifo.jsonl"), NULL), TM_ERR_IO);
        CHECK(strstr(tm_last_error(), "not a regular file") != NULL);
    }
    /* a file larger than max_bytes is refused before reading */
    p = tm_manifest_default_params();
    p.max_bytes = 100;
    CHECK_STATUS(tm_manifest_load(&m, tpath("m.jsonl"), &p), TM_ERR_LIMIT);
    /* one huge line with keep_going: recorded, skipped, never buffered whole */
    FILE *f = fopen(tpath("huge.jsonl"), "wb");
    if (f) {
        fputs("{\"id\":1}\n{\"id\":2,\"text\":\"", f);
        for (int i = 0; i < 3 << 20; i++)
            fputc('x', f);
        fputs("\"}\n{\"id\":3}\n", f);
        fclose(f);
    }
    p = tm_manifest_default_params();
    p.keep_going = 1;
    CHECK_OK(tm_manifest_load(&m, tpath("huge.jsonl"), &p));
    if (m) {
        CHECK(tm_manifest_count(m) == 2 && tm_manifest_problem_count(m) == 1);
        CHECK(strstr(tm_manifest_problem(m, 0, NULL), "huge.jsonl:2: the line is longer"));
        CHECK(tm_manifest_row_at(m, 1)->line == 3);
    }
    tm_manifest_free(m);
}

static void test_media(void)
{
    write_png("a.png", 12, 8);
    write_wav("a.wav", 8000, 4000); /* 0.5 s */
    write_text("bad.png", "not a png at all");
    write_text("empty.wav", "");
    write_text(
        "media.jsonl",
        "{\"id\":0,\"image\":\"a.png\",\"audio\":\"a.wav\",\"region\":[0,0,12,8],"
        "\"words\":[{\"w\":\"x\",\"start\":0.1,\"end\":0.5}]}\n"
        "{\"id\":1,\"image\":\"missing.png\"}\n"
        "{\"id\":2,\"image\":\"bad.png\",\"audio\":\"empty.wav\"}\n"
        "{\"id\":3,\"image\":\"a.png\",\"region\":[0,0,13,8]}\n"
        "{\"id\":4,\"audio\":\"a.wav\",\"words\":[{\"w\":\"x\",\"start\":0.1,\"end\":0.6}]}\n"
        "{\"id\":5,\"text\":\"no media\"}\n");
    tm_manifest *m;
    CHECK_OK(tm_manifest_load(&m, tpath("media.jsonl"), NULL));
    if (!m) return;
    tm_media_check_params p = tm_media_check_default_params();
    tm_media_report *r;
    /* existence only */
    CHECK_OK(tm_manifest_check_media(&r, m, &p));
    CHECK(tm_media_report_failures(r) == 2);
    CHECK(tm_media_report_row(r, 0)->error == NULL);
    CHECK(tm_media_report_row(r, 1)->image_status == TM_ERR_IO);
    CHECK(strstr(tm_media_report_row(r, 1)->error, "media.jsonl:2: image \"missing.png\""));
    CHECK(tm_media_report_row(r, 2)->image_status == TM_OK); /* exists; not decoded */
    CHECK(tm_media_report_row(r, 2)->audio_status == TM_ERR_FORMAT);
    CHECK(tm_media_report_row(r, 3)->error == NULL);
    CHECK(tm_media_report_row(r, 6) == NULL);
    tm_media_report_free(r);
    /* decoding, at 1 and 3 threads: the same report */
    for (int t = 1; t <= 3; t += 2) {
        p.decode = 1;
        p.threads = t;
        CHECK_OK(tm_manifest_check_media(&r, m, &p));
        CHECK(tm_media_report_failures(r) == 4);
        const tm_media_info *i0 = tm_media_report_row(r, 0);
        CHECK(i0->has_image && i0->width == 12 && i0->height == 8 && i0->channels == 3);
        CHECK(!strcmp(i0->image_format, "png"));
        CHECK(i0->has_audio && i0->sample_rate == 8000 && i0->audio_channels == 1);
        CHECK_NEAR(i0->seconds, 0.5, 1e-9, 0);
        CHECK(tm_media_report_row(r, 2)->image_status == TM_ERR_UNSUPPORTED ||
              tm_media_report_row(r, 2)->image_status == TM_ERR_FORMAT);
        CHECK(strstr(tm_media_report_row(r, 2)->error, "media.jsonl:3: image \"bad.png\""));
        CHECK(strstr(tm_media_report_row(r, 3)->error, "reaches outside the 12 x 8 image"));
        CHECK(
            strstr(tm_media_report_row(r, 4)->error, "end at 0.600 s but the audio lasts 0.500 s"));
        const tm_media_info *i5 = tm_media_report_row(r, 5);
        CHECK(!i5->has_image && !i5->has_audio && !i5->error);
        tm_media_report_free(r);
    }
    tm_manifest_free(m);
}

int main(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/tm_manifest_XXXXXX", base && base[0] ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_fields();
    test_errors();
    test_keep_going();
    test_files();
    test_media();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_finish("data_manifest");
}
