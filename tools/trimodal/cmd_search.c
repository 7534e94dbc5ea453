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
    "usage: trimodal search [query] --index INDEX --model DIR\n"
    "                       (--text TEXT | --image FILE | --audio FILE)\n"
    "                       [--modality text|image|audio|all] [-k K]\n"
    "                       [--nprobe N | --ef-search E] [--json]\n"
    "       trimodal search build --model DIR --data MANIFEST -o INDEX [--split S]\n"
    "                       [--type exact|exact-int8|ivf|hnsw]\n"
    "                       [--nlist N --nprobe N |\n"
    "                        --hnsw-m M --ef-construction C --ef-search E]\n"
    "                       [--skip-bad] [--batch B] [--json]\n"
    "       trimodal search info INDEX [--json]\n"
    "\n"
    "build   embeds every item of a dataset manifest (JSON Lines: id, text, image,\n"
    "        audio; see docs/serving.md) with the model's contrastive heads, each\n"
    "        modality on its own, and writes the index file atomically.\n"
    "          --split S       only the rows of split S\n"
    "          --skip-bad      leave out rows whose media cannot be read (counted)\n"
    "          --batch B       examples per forward pass (default 32)\n"
    "          --type T        how the index searches (recorded in the file;\n"
    "                          docs/search.md):\n"
    "            exact         every row compared, f32 (default)\n"
    "            exact-int8    every row compared, rows stored as int8 with a\n"
    "                          scale each: 4x smaller, scores within ~1e-2\n"
    "            ivf           FAISS IVF-Flat: rows in k-means lists, a query\n"
    "                          scans nprobe of nlist lists (approximate)\n"
    "            hnsw          FAISS HNSW-Flat graph (approximate)\n"
    "                          ivf and hnsw need a trimodal built with FAISS\n"
    "                          (libfaiss-dev); for a million items and more\n"
    "          --nlist N       ivf: lists (default sqrt(rows))\n"
    "          --nprobe N      ivf: lists scanned per query (default nlist/8,\n"
    "                          at least 8); more: better recall, slower\n"
    "          --hnsw-m M      hnsw: links per node, 2..256 (default 32)\n"
    "          --ef-construction C\n"
    "                          hnsw: candidates kept while linking each node,\n"
    "                          1..65536 (default 40); more: a better graph\n"
    "                          (higher recall at every --ef-search) and a\n"
    "                          slower build; at 10^5 items 200 took 3.6x as\n"
    "                          long as 40 and raised recall@10 at ef_search 64\n"
    "                          from 0.975 to 1.0 (docs/search.md)\n"
    "          --ef-search E   hnsw: candidates kept per query, 1..65536\n"
    "                          (default 64); more: better recall, slower\n"
    "query   (the word is optional) embeds the query (exactly one of --text,\n"
    "        --image, --audio) and lists the K items (default 10) whose\n"
    "        embeddings are most similar (cosine), with the index's type:\n"
    "        exact types compare every row; ivf and hnsw are approximate, and\n"
    "        --nprobe / --ef-search override the settings stored in the index.\n"
    "        By default it searches every modality of the index except the\n"
    "        query's own: a text finds images and sounds. --modality picks one\n"
    "        (or all).\n"
    "info    the index's model, type, size and modalities.\n"
    "  --threads N             threads for the kernels\n";

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
    const char *model = NULL, *data = NULL, *out = NULL, *split = NULL, *type = NULL;
    int skip_bad = 0, batch = 32, threads = 0, nlist = 0, nprobe = 0, hnsw_m = 0, ef = 0, efc = 0;
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
            strcmp(a, "--threads") && strcmp(a, "--type") && strcmp(a, "--nlist") &&
            strcmp(a, "--nprobe") && strcmp(a, "--hnsw-m") && strcmp(a, "--ef-search") &&
            strcmp(a, "--ef-construction"))
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
        } else if (!strcmp(a, "--type")) {
            type = v;
        } else if (!strcmp(a, "--nlist")) {
            if (!parse_int(v, 1, 1 << 22, &nlist))
                return cli_usage("search build: --nlist needs 1..4194304, got '%s'", v);
        } else if (!strcmp(a, "--nprobe")) {
            if (!parse_int(v, 1, 1 << 22, &nprobe))
                return cli_usage("search build: --nprobe needs 1..4194304, got '%s'", v);
        } else if (!strcmp(a, "--hnsw-m")) {
            if (!parse_int(v, 2, 256, &hnsw_m))
                return cli_usage("search build: --hnsw-m needs 2..256, got '%s'", v);
        } else if (!strcmp(a, "--ef-search")) {
            if (!parse_int(v, 1, 65536, &ef))
                return cli_usage("search build: --ef-search needs 1..65536, got '%s'", v);
        } else if (!strcmp(a, "--ef-construction")) {
            if (!parse_int(v, 1, 65536, &efc))
                return cli_usage("search build: --ef-construction needs 1..65536, got '%s'", v);
        } else
            out = v;
    }
    if (!model || !data || !out)
        return cli_usage("search build: give --model DIR, --data MANIFEST and -o INDEX");
    tm_index_type itype = TM_INDEX_EXACT;
    if (type && tm_index_type_from_name(type, &itype))
        return cli_usage("search build: --type is exact, exact-int8, ivf or hnsw, got '%s'", type);
    if ((nlist || nprobe) && itype != TM_INDEX_IVF)
        return cli_usage("search build: --nlist and --nprobe are for --type ivf");
    if ((hnsw_m || ef || efc) && itype != TM_INDEX_HNSW)
        return cli_usage(
            "search build: --hnsw-m, --ef-construction and --ef-search are for --type hnsw");
    if (nlist && nprobe > nlist)
        return cli_usage("search build: --nprobe %d is more than --nlist %d", nprobe, nlist);
    if (!tm_index_type_available(itype)) {
        fprintf(stderr,
                "trimodal search build: this trimodal was built without FAISS, which --type "
                "%s needs; install libfaiss-dev (scripts/deps.sh) and rebuild, or use --type "
                "exact or exact-int8\n",
                type);
        return 1;
    }
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
    bp.type = itype;
    bp.nlist = nlist;
    bp.nprobe = nprobe;
    bp.hnsw_m = hnsw_m;
    bp.ef_search = ef;
    bp.ef_construction = efc;
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
            tm_index_build_params ip = tm_index_params(idx);
            printf(",\"type\":\"%s\",\"nlist\":%d,\"nprobe\":%d,\"hnsw_m\":%d,\"ef_search\":%d,"
                   "\"ef_construction\":%d",
                   tm_index_type_name(ip.type), ip.nlist, ip.nprobe, ip.hnsw_m, ip.ef_search,
                   ip.ef_construction);
            printf(",\"items\":%lld,\"skipped\":%lld,\"dim\":%lld,\"rows\":{\"text\":%lld,"
                   "\"image\":%lld,\"audio\":%lld},\"seconds\":%.3f}\n",
                   (long long)tm_index_count(idx), (long long)skipped, (long long)tm_index_dim(idx),
                   (long long)tm_index_rows(idx, TM_MODALITY_TEXT),
                   (long long)tm_index_rows(idx, TM_MODALITY_IMAGE),
                   (long long)tm_index_rows(idx, TM_MODALITY_AUDIO), dt);
        } else {
            printf("indexed %lld items (%s; text %lld, image %lld, audio %lld rows) of %lld values "
                   "in %.1f s, type %s -> %s\n",
                   (long long)tm_index_count(idx), mods,
                   (long long)tm_index_rows(idx, TM_MODALITY_TEXT),
                   (long long)tm_index_rows(idx, TM_MODALITY_IMAGE),
                   (long long)tm_index_rows(idx, TM_MODALITY_AUDIO), (long long)tm_index_dim(idx),
                   dt, tm_index_type_name(tm_index_params(idx).type), out);
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
    tm_index_build_params ip = tm_index_params(idx);
    if (json) {
        printf("{\"index\":");
        cli_json_string(stdout, path);
        printf(",\"type\":\"%s\",\"nlist\":%d,\"nprobe\":%d,\"hnsw_m\":%d,\"ef_search\":%d,"
               "\"ef_construction\":%d",
               tm_index_type_name(ip.type), ip.nlist, ip.nprobe, ip.hnsw_m, ip.ef_search,
               ip.ef_construction);
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
        printf("type %s", tm_index_type_name(ip.type));
        if (ip.type == TM_INDEX_IVF) printf(" (nlist %d, nprobe %d)", ip.nlist, ip.nprobe);
        if (ip.type == TM_INDEX_HNSW)
            printf(" (M %d, ef_construction %d, ef_search %d)", ip.hnsw_m, ip.ef_construction,
                   ip.ef_search);
        printf("\n");
    }
    tm_index_free(idx);
    return 0;
}

/* ---------------------------------------------------------------- query */

int cmd_search(int argc, char **argv, int json)
{
    if (argc > 0 && !strcmp(argv[0], "build")) return cmd_build(argc - 1, argv + 1, json);
    if (argc > 0 && !strcmp(argv[0], "info")) return cmd_info_index(argc - 1, argv + 1, json);
    if (argc > 0 && !strcmp(argv[0], "query")) argc--, argv++;
    const char *index = NULL, *model = NULL, *text = NULL, *image = NULL, *audio = NULL;
    const char *modality = NULL;
    int k = 10, threads = 0, nprobe = 0, ef = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(search_help, stdout);
            return 0;
        }
        if (strcmp(a, "--index") && strcmp(a, "--model") && strcmp(a, "--text") &&
            strcmp(a, "--image") && strcmp(a, "--audio") && strcmp(a, "--modality") &&
            strcmp(a, "-k") && strcmp(a, "--threads") && strcmp(a, "--nprobe") &&
            strcmp(a, "--ef-search"))
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
        } else if (!strcmp(a, "--nprobe")) {
            if (!parse_int(v, 1, 1 << 22, &nprobe))
                return cli_usage("search: --nprobe needs 1..4194304, got '%s'", v);
        } else if (!strcmp(a, "--ef-search")) {
            if (!parse_int(v, 1, 65536, &ef))
                return cli_usage("search: --ef-search needs 1..65536, got '%s'", v);
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
    if (!st && (nprobe || ef)) {
        tm_index_type it = tm_index_params(idx).type;
        if (nprobe && it != TM_INDEX_IVF)
            st = tm_fail(TM_ERR_INVALID, "--nprobe is for ivf indexes; %s is %s", index,
                         tm_index_type_name(it));
        else if (ef && it != TM_INDEX_HNSW)
            st = tm_fail(TM_ERR_INVALID, "--ef-search is for hnsw indexes; %s is %s", index,
                         tm_index_type_name(it));
        else
            st = tm_index_set_search(idx, nprobe, ef);
    }
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
