/* libFuzzer harness for dataset manifests (src/data/manifest.c). The input
 * is read as a JSON Lines manifest twice: failing at the first problem,
 * and with keep_going (bad rows left out). Every row that loads must keep
 * its promises (ids found back, words inside the text, labels in range);
 * what fails must say why and leave *out NULL. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "trimodal/data.h"

#define REQUIRE(x)                                                                       \
    do {                                                                                 \
        if (!(x)) __builtin_trap();                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const tm_manifest *m)
{
    int64_t n = tm_manifest_count(m);
    REQUIRE(n >= 0);
    for (int64_t i = 0; i < n; i++) {
        const tm_manifest_row *r = tm_manifest_row_at(m, i);
        REQUIRE(r && r->id);
        REQUIRE(tm_manifest_find(m, r->id) == i);
        REQUIRE(r->label == TM_LABEL_NONE || r->label >= 0);
        REQUIRE(r->n_words >= 0 && r->n_words <= TM_MANIFEST_MAX_WORDS);
        if (r->text) REQUIRE(r->text[r->text_len] == 0);
        for (int w = 0; w < r->n_words; w++) {
            const tm_manifest_word *wd = &r->words[w];
            REQUIRE(wd->w);
            if (wd->text_begin >= 0) REQUIRE(wd->text_begin <= wd->text_end);
        }
        if (r->image) REQUIRE(r->image_path);
        if (r->audio) REQUIRE(r->audio_path);
        for (int f = 0; f < tm_manifest_field_count(m); f++) {
            const char *name = tm_manifest_field_name(m, f);
            REQUIRE(name);
            (void)tm_manifest_field(m, i, name);
        }
    }
    REQUIRE(tm_manifest_find(m, "no such id \x01") < 0);
    for (int64_t i = 0; i < tm_manifest_problem_count(m) && i < 5; i++) {
        int64_t line = 0;
        const char *msg = tm_manifest_problem(m, i, &line);
        REQUIRE(msg && msg[0] && line >= 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tm_manifest_params p = tm_manifest_default_params();
    p.max_line_bytes = 4096;
    p.max_rows = 1000;
    for (int keep = 0; keep < 2; keep++) {
        p.keep_going = keep;
        p.max_problems = 5;
        tm_manifest *m = NULL;
        tm_status st = tm_manifest_parse(&m, (const char *)data, size, "fuzz.jsonl", "/nonexistent",
                                         &p);
        if (st != TM_OK) {
            REQUIRE(m == NULL && tm_last_error()[0]);
            continue;
        }
        check(m);
        tm_manifest_free(m);
    }
    return 0;
}
