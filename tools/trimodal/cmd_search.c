/* trimodal search: build an index of a manifest's embeddings (search build),
 * describe one (search info), and query it with a text, an image or a sound
 * (search). Exit 0 ok, 1 failure, 2 usage. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "trimodal/io.h"
#include "trimodal/serve.h"

#define QUERY_MAX_BYTES ((size_t)1 << 30)

static const char *search_help =
    "usage: trimodal search --index INDEX --model DIR (--text TEXT | --image FILE | --audio FILE)\n"
    "                       [--modality text|image|audio|all] [-k K] [--json]\n"
    "       trimodal search build --model DIR --data MANIFEST -o INDEX [--split S]\n"
    "                       [--skip-bad] [--batch B] [--json]\n"
    "       trimodal search info INDEX [--json]\n"
    "\n"
    "build   embeds every item of a dataset manifest (JSON Lines: id, text, image,\n"
    "        audio; see docs/serving.md) with the model's contrastive heads, each\n"
    "        modality on its own, and writes the index file atomically.\n"
    "          --split S     only the rows of split S\n"
    "          --skip-bad    leave out rows whose media cannot be read (counted)\n"
    "          --batch B     examples per forward pass (default 32)\n"
    "search  embeds the query (exactly one of --text, --image, --audio) and lists\n"
    "        the K items (default 10) whose embeddings are most similar (cosine),\n"
    "        exactly (every row is compared, f32). By default it searches every\n"
    "        modality of the index except the query's own: a text finds images\n"
    "        and sounds. --modality picks one (or all).\n"
    "info    the index's model, size and modalities.\n"
    "  --threads N           threads for the kernels\n";

static int fail(const char *what)
{
    fprintf(stderr, "trimodal %s: %s\n", what, tm_last_error());
    return 1;
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) return 0;
    *out = (int)v;
    return 1;
}

static void print_notes(const char *notes)
{
    for (const char *p = notes; *p;) {
        const char *e = strchr(p, '\n');
        int n = e ? (int)(e - p) : (int)strlen(p);
        fprintf(stderr, "trimodal search: note: %.*s\n", n, p);
        p += n + (e != NULL);
    }
}

static const char *mod_name(unsigned bit)
{
    return bit == TM_MODALITY_TEXT ? "text" : bit == TM_MODALITY_IMAGE ? "image" : "audio";
}

static void mods_list(unsigned bits, char *buf, size_t n)
{
    buf[0] = 0;
    const unsigned all[3] = {TM_MODALITY_TEXT, TM_MODALITY_IMAGE, TM_MODALITY_AUDIO};
    for (int k = 0; k < 3; k++)
        if (bits & all[k]) {
            if (buf[0]) strncat(buf, ",", n - strlen(buf) - 1);
            strncat(buf, mod_name(all[k]), n - strlen(buf) - 1);
        }
}

/* ----------------------------------------------------------------- build */

static void progress(void *ctx, int64_t done, int64_t total)
{
    double *t0 = ctx;
    fprintf(stderr, "\rsearch build: %lld / %lld items (%.1f s)", (long long)done, (long long)total,
            tm_time_s() - *t0);
    if (done == total) fputc('\n', stderr);
}

static int cmd_build(int argc, char **argv, int json)
{
    const char *model = NULL, *data = NULL, *out = NULL, *split = NULL;
    int skip_bad = 0, batch = 32, threads = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(search_help, stdout);
            return 0;
        }
        if (!strcmp(a, "--skip-bad")) {
            skip_bad = 1;
            continue;
        }
        if (strcmp(a, "--model") && strcmp(a, "--data") && strcmp(a, "-o") &&
            strcmp(a, "--output") && strcmp(a, "--split") && strcmp(a, "--batch") &&
            strcmp(a, "--threads"))
            return cli_usage("search build: unknown option '%s'", a);
        if (i + 1 >= argc) return cli_usage("search build: %s needs a value", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--model"))
            model = v;
        else if (!strcmp(a, "--data"))
            data = v;
        else if (!strcmp(a, "--split"))
            split = v;
        else if (!strcmp(a, "--batch")) {
            if (!parse_int(v, 1, 1024, &batch))
                return cli_usage("search build: --batch needs 1..1024, got '%s'", v);
        } else if (!strcmp(a, "--threads")) {
            if (!parse_int(v, 1, 256, &threads))
                return cli_usage("search build: --threads needs 1..256, got '%s'", v);
        } else
            out = v;
    }
    if (!model || !data || !out)
        return cli_usage("search build: give --model DIR, --data MANIFEST and -o INDEX");
    if (threads && tm_set_num_threads(threads)) return fail("search build");
    tm_session_params sp = tm_session_default_params();
    sp.max_batch = batch;
    tm_session *s = NULL;
    tm_manifest *m = NULL;
    tm_index *idx = NULL;
    int rc = 0;
    if (tm_session_open(&s, model, &sp)) return fail("search build");
    print_notes(tm_session_notes(s));
    double t0 = tm_time_s();
    tm_index_build_params bp = tm_index_build_default_params();
    bp.split = split;
    bp.skip_bad = skip_bad;
    bp.progress = isatty(2) ? progress : NULL; /* a progress line only for people */
    bp.progress_ctx = &t0;
    int64_t skipped = 0;
    if (tm_manifest_load(&m, data, NULL) || tm_index_build(&idx, s, m, &bp, &skipped) ||
        tm_index_save(idx, out)) {
        rc = fail("search build");
    } else {
        double dt = tm_time_s() - t0;
        char mods[64];
        mods_list(tm_index_modalities(idx), mods, sizeof mods);
        if (json) {
            printf("{\"index\":");
            cli_json_string(stdout, out);
            printf(",\"model\":");
            cli_json_string(stdout, tm_session_name(s));
            printf(",\"items\":%lld,\"skipped\":%lld,\"dim\":%lld,\"rows\":{\"text\":%lld,"
                   "\"image\":%lld,\"audio\":%lld},\"seconds\":%.3f}\n",
                   (long long)tm_index_count(idx), (long long)skipped, (long long)tm_index_dim(idx),
                   (long long)tm_index_rows(idx, TM_MODALITY_TEXT),
                   (long long)tm_index_rows(idx, TM_MODALITY_IMAGE),
                   (long long)tm_index_rows(idx, TM_MODALITY_AUDIO), dt);
        } else {
            printf("indexed %lld items (%s; text %lld, image %lld, audio %lld rows) of %lld values "
                   "in %.1f s -> %s\n",
                   (long long)tm_index_count(idx), mods,
                   (long long)tm_index_rows(idx, TM_MODALITY_TEXT),
                   (long long)tm_index_rows(idx, TM_MODALITY_IMAGE),
                   (long long)tm_index_rows(idx, TM_MODALITY_AUDIO), (long long)tm_index_dim(idx),
                   dt, out);
            if (skipped) printf("%lld rows left out (--skip-bad)\n", (long long)skipped);
        }
    }
    tm_index_free(idx);
    tm_manifest_free(m);
    tm_session_free(s);
    return rc;
}

/* ------------------------------------------------------------------ info */

static int cmd_info_index(int argc, char **argv, int json)
{
    const char *path = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(search_help, stdout);
            return 0;
        }
        if (argv[i][0] == '-') return cli_usage("search info: unknown option '%s'", argv[i]);
        if (path) return cli_usage("search info: one INDEX only");
        path = argv[i];
    }
    if (!path) return cli_usage("search info: give INDEX");
    tm_index *idx;
    if (tm_index_load(&idx, path)) return fail("search info");
    char mods[64];
    mods_list(tm_index_modalities(idx), mods, sizeof mods);
    if (json) {
        printf("{\"index\":");
        cli_json_string(stdout, path);
        printf(",\"model\":");
        cli_json_string(stdout, tm_index_model(idx));
        printf(",\"fingerprint\":\"%s\",\"items\":%lld,\"dim\":%lld,\"rows\":{\"text\":%lld,"
               "\"image\":%lld,\"audio\":%lld}}\n",
               tm_index_fingerprint(idx), (long long)tm_index_count(idx),
               (long long)tm_index_dim(idx), (long long)tm_index_rows(idx, TM_MODALITY_TEXT),
               (long long)tm_index_rows(idx, TM_MODALITY_IMAGE),
               (long long)tm_index_rows(idx, TM_MODALITY_AUDIO));
    } else {
        printf("index %s\nmodel %s (fingerprint %s)\n%lld items, %lld values each, modalities %s "
               "(text %lld, image %lld, audio %lld rows)\n",
               path, tm_index_model(idx), tm_index_fingerprint(idx), (long long)tm_index_count(idx),
               (long long)tm_index_dim(idx), mods, (long long)tm_index_rows(idx, TM_MODALITY_TEXT),
               (long long)tm_index_rows(idx, TM_MODALITY_IMAGE),
               (long long)tm_index_rows(idx, TM_MODALITY_AUDIO));
    }
    tm_index_free(idx);
    return 0;
}

/* ---------------------------------------------------------------- query */

int cmd_search(int argc, char **argv, int json)
{
    if (argc > 0 && !strcmp(argv[0], "build")) return cmd_build(argc - 1, argv + 1, json);
    if (argc > 0 && !strcmp(argv[0], "info")) return cmd_info_index(argc - 1, argv + 1, json);
    const char *index = NULL, *model = NULL, *text = NULL, *image = NULL, *audio = NULL;
    const char *modality = NULL;
    int k = 10, threads = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(search_help, stdout);
            return 0;
        }
        if (strcmp(a, "--index") && strcmp(a, "--model") && strcmp(a, "--text") &&
            strcmp(a, "--image") && strcmp(a, "--audio") && strcmp(a, "--modality") &&
            strcmp(a, "-k") && strcmp(a, "--threads"))
            return cli_usage("search: unknown option '%s'", a);
        if (i + 1 >= argc) return cli_usage("search: %s needs a value", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--index"))
            index = v;
        else if (!strcmp(a, "--model"))
            model = v;
        else if (!strcmp(a, "--text"))
            text = v;
        else if (!strcmp(a, "--image"))
            image = v;
        else if (!strcmp(a, "--audio"))
            audio = v;
        else if (!strcmp(a, "--modality"))
            modality = v;
        else if (!strcmp(a, "--threads")) {
            if (!parse_int(v, 1, 256, &threads))
                return cli_usage("search: --threads needs 1..256, got '%s'", v);
        } else if (!parse_int(v, 1, 1000000, &k))
            return cli_usage("search: -k needs a positive integer, got '%s'", v);
    }
    if (!index || !model) return cli_usage("search: give --index INDEX and --model DIR");
    if ((text != NULL) + (image != NULL) + (audio != NULL) != 1)
        return cli_usage("search: give exactly one query: --text, --image or --audio");
    unsigned targets = 0;
    int all = 0;
    if (modality) {
        if (!strcmp(modality, "all"))
            all = 1;
        else if (!(targets = tm_modality_from_name(modality)))
            return cli_usage("search: --modality is text, image, audio or all, got '%s'", modality);
    }
    if (threads && tm_set_num_threads(threads)) return fail("search");
    tm_session_params sp = tm_session_default_params();
    sp.max_batch = 1;
    tm_session *s = NULL;
    tm_index *idx = NULL;
    tm_example *ex = NULL;
    char *buf = NULL;
    float *emb = NULL;
    tm_search_hit *hits = NULL;
    int rc = 0, n = 0;
    unsigned qbit = text ? TM_MODALITY_TEXT : image ? TM_MODALITY_IMAGE : TM_MODALITY_AUDIO;
    tm_session_input in = {0};
    tm_status st = tm_index_load(&idx, index);
    if (!st) st = tm_session_open(&s, model, &sp);
    if (!st) {
        print_notes(tm_session_notes(s));
        st = tm_index_check(idx, s);
    }
    if (!st) {
        if (text) {
            in.text = text;
            in.text_len = strlen(text);
        } else {
            size_t len = 0;
            st = tm_read_file(image ? image : audio, QUERY_MAX_BYTES, &buf, &len);
            if (image)
                in.image = buf, in.image_len = len;
            else
                in.audio = buf, in.audio_len = len;
        }
    }
    if (!st) st = tm_session_prepare(s, &in, &ex);
    tm_model_info info = s ? tm_session_info(s) : (tm_model_info){0};
    if (!st) {
        emb = malloc((size_t)(info.n_modalities * info.embed_dim) * sizeof *emb);
        hits = malloc((size_t)k * sizeof *hits);
        if (!emb || !hits) st = tm_fail(TM_ERR_NOMEM, "out of memory");
    }
    if (!st) st = tm_session_embed(s, &ex, 1, emb);
    if (!st) {
        unsigned have = tm_index_modalities(idx);
        if (all)
            targets = have;
        else if (!targets)
            targets = (have & ~qbit) ? (have & ~qbit) : have;
        int col = tm_session_column(s, qbit);
        st = tm_index_search(idx, emb + (int64_t)col * info.embed_dim, targets, k, hits, &n);
    }
    if (st) {
        rc = fail("search");
    } else if (json) {
        printf("{\"model\":");
        cli_json_string(stdout, tm_session_name(s));
        printf(",\"query_modality\":\"%s\",\"results\":[", mod_name(qbit));
        for (int i = 0; i < n; i++) {
            printf("%s{\"rank\":%d,\"id\":", i ? "," : "", i + 1);
            cli_json_string(stdout, tm_index_item(idx, hits[i].item, "id"));
            printf(",\"modality\":\"%s\",\"score\":%.9g", mod_name(hits[i].modality),
                   hits[i].score);
            static const char *const keys[] = {"text", "image", "audio"};
            for (int f = 0; f < 3; f++) {
                const char *v = tm_index_item(idx, hits[i].item, keys[f]);
                if (!v) continue;
                printf(",\"%s\":", keys[f]);
                cli_json_string(stdout, v);
            }
            printf("}");
        }
        printf("]}\n");
    } else {
        printf("%4s  %7s  %-6s  %-20s  %s\n", "rank", "score", "match", "id", "item");
        for (int i = 0; i < n; i++) {
            const char *what = tm_index_item(idx, hits[i].item, mod_name(hits[i].modality));
            if (!what) what = tm_index_item(idx, hits[i].item, "text");
            printf("%4d  %7.4f  %-6s  %-20s  %s\n", i + 1, hits[i].score,
                   mod_name(hits[i].modality), tm_index_item(idx, hits[i].item, "id"),
                   what ? what : "");
        }
    }
    free(hits);
    free(emb);
    tm_free(buf);
    tm_example_free(ex);
    tm_index_free(idx);
    tm_session_free(s);
    return rc;
}
