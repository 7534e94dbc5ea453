/* trimodal embed, classify and caption: one example given on the command
 * line (any subset of --text, --image, --audio) through a model folder, f32.
 * Output for people on stdout, or one JSON object with --json (the same
 * object the server's /v1/ endpoints answer). Exit 0 ok, 1 failure, 2 usage. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "trimodal/io.h"
#include "trimodal/serve.h"

#define INPUT_MAX_BYTES ((size_t)1 << 30)

static const char *common_help =
    "  --model DIR           the model folder (config.json, model.safetensors, and\n"
    "                        tokenizer.json, preprocess.json, labels.json when present)\n"
    "  --text TEXT           a text (needs the folder's tokenizer.json)\n"
    "  --text-file FILE      the text from a file ('-' for standard input)\n"
    "  --image FILE          an image (PNG, JPEG, BMP, GIF, PGM/PPM)\n"
    "  --audio FILE          a sound (WAV, FLAC, Ogg)\n"
    "  --dtype f32           the precision (f32 only for now)\n"
    "  --threads N           threads for the kernels (default: TRIMODAL_THREADS or all CPUs)\n"
    "  --json                one JSON object (as the server's answer)\n"
    "Give any subset of --text, --image and --audio: the missing modalities are\n"
    "masked, as the model was trained to handle. See docs/serving.md.\n";

typedef struct {
    const char *model, *text, *text_file, *image, *audio;
    int top_k, beam, max_tokens, threads;
    double length_penalty;
    /* classify: a cascade, and its sweep over a manifest */
    const char *cascade, *data, *split, *thresholds;
    int limit;
} infer_opts;

static int fail(const char *cmd)
{
    fprintf(stderr, "trimodal %s: %s\n", cmd, tm_last_error());
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

/* Parses the options of cmd; returns -1 to go on, else an exit status. */
static int parse(const char *cmd, int argc, char **argv, infer_opts *o, const char *help)
{
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(help, stdout);
            fputs(common_help, stdout);
            return 0;
        }
        static const char *const with_value[] = {
            "--model",   "--text",  "--text-file", "--image",      "--audio",         "--dtype",
            "--threads", "--top-k", "--beam",      "--max-tokens", "--length-penalty",
            "--cascade", "--data",  "--split",     "--thresholds", "--limit"};
        int known = 0;
        for (size_t k = 0; k < sizeof with_value / sizeof *with_value; k++)
            known |= !strcmp(a, with_value[k]);
        if (!known) return cli_usage("%s: unknown option '%s'", cmd, a);
        if (i + 1 >= argc) return cli_usage("%s: %s needs a value", cmd, a);
        const char *v = argv[++i];
        if (!strcmp(a, "--model"))
            o->model = v;
        else if (!strcmp(a, "--text"))
            o->text = v;
        else if (!strcmp(a, "--text-file"))
            o->text_file = v;
        else if (!strcmp(a, "--image"))
            o->image = v;
        else if (!strcmp(a, "--audio"))
            o->audio = v;
        else if (!strcmp(a, "--dtype")) {
            if (strcmp(v, "f32"))
                return cli_usage("%s: --dtype %s is not available yet (f32 only)", cmd, v);
        } else if (!strcmp(a, "--threads")) {
            if (!parse_int(v, 1, 256, &o->threads))
                return cli_usage("%s: --threads needs 1..256, got '%s'", cmd, v);
        } else if (!strcmp(a, "--top-k")) {
            if (!parse_int(v, 1, 1000000, &o->top_k))
                return cli_usage("%s: --top-k needs a positive integer, got '%s'", cmd, v);
        } else if (!strcmp(a, "--beam")) {
            if (!parse_int(v, 1, 64, &o->beam))
                return cli_usage("%s: --beam needs 1..64, got '%s'", cmd, v);
        } else if (!strcmp(a, "--cascade") || !strcmp(a, "--data") || !strcmp(a, "--split") ||
                   !strcmp(a, "--thresholds")) {
            if (strcmp(cmd, "classify"))
                return cli_usage("%s: %s is an option of classify only", cmd, a);
            if (!strcmp(a, "--cascade"))
                o->cascade = v;
            else if (!strcmp(a, "--data"))
                o->data = v;
            else if (!strcmp(a, "--split"))
                o->split = v;
            else
                o->thresholds = v;
        } else if (!strcmp(a, "--limit")) {
            if (strcmp(cmd, "classify"))
                return cli_usage("%s: --limit is an option of classify only", cmd);
            if (!parse_int(v, 1, 100000000, &o->limit))
                return cli_usage("%s: --limit needs a positive count, got '%s'", cmd, v);
        } else if (!strcmp(a, "--max-tokens")) {
            if (!parse_int(v, 0, 1000000, &o->max_tokens))
                return cli_usage("%s: --max-tokens needs a count >= 0, got '%s'", cmd, v);
        } else {
            char *end;
            o->length_penalty = strtod(v, &end);
            if (!*v || *end || !(o->length_penalty >= 0) || !isfinite(o->length_penalty))
                return cli_usage("%s: --length-penalty needs a number >= 0, got '%s'", cmd, v);
        }
    }
    if (!o->model) return cli_usage("%s: give --model DIR", cmd);
    if (o->text && o->text_file) return cli_usage("%s: give --text or --text-file, not both", cmd);
    if (o->data) {
        if (o->text || o->text_file || o->image || o->audio)
            return cli_usage("%s: --data evaluates a manifest; give no --text, --image or --audio",
                             cmd);
        if (!o->cascade) return cli_usage("%s: --data needs --cascade FILE (a sweep)", cmd);
        return -1;
    }
    if (o->thresholds || o->split || o->limit)
        return cli_usage("%s: --thresholds, --split and --limit go with --data", cmd);
    if (!o->text && !o->text_file && !o->image && !o->audio)
        return cli_usage("%s: give at least one of --text, --text-file, --image, --audio", cmd);
    return -1;
}

/* Reads the inputs named in o into in (buffers to free in bufs). */
static tm_status read_inputs(const infer_opts *o, tm_session_input *in, char *bufs[3])
{
    memset(in, 0, sizeof *in);
    tm_status st = TM_OK;
    if (o->text) {
        in->text = o->text;
        in->text_len = strlen(o->text);
    } else if (o->text_file) {
        size_t n = 0;
        if (!strcmp(o->text_file, "-")) {
            size_t cap = 4096;
            char *b = tm_alloc(cap);
            if (!b) return tm_fail(TM_ERR_NOMEM, "out of memory");
            for (size_t r; (r = fread(b + n, 1, cap - n - 1, stdin)) > 0;) {
                n += r;
                if (n + 1 == cap) {
                    if (cap >= INPUT_MAX_BYTES) {
                        tm_free(b);
                        return tm_fail(TM_ERR_LIMIT, "standard input: over %zu bytes", cap);
                    }
                    char *nb = tm_alloc(cap * 2);
                    if (!nb) {
                        tm_free(b);
                        return tm_fail(TM_ERR_NOMEM, "out of memory");
                    }
                    memcpy(nb, b, n);
                    tm_free(b);
                    b = nb;
                    cap *= 2;
                }
            }
            b[n] = 0;
            bufs[0] = b;
        } else if ((st = tm_read_file(o->text_file, INPUT_MAX_BYTES, &bufs[0], &n))) {
            return st;
        }
        /* a trailing newline of a text file is not part of the text */
        while (n && (bufs[0][n - 1] == '\n' || bufs[0][n - 1] == '\r'))
            n--;
        in->text = bufs[0];
        in->text_len = n;
    }
    if (o->image) {
        if ((st = tm_read_file(o->image, INPUT_MAX_BYTES, &bufs[1], &in->image_len))) return st;
        in->image = bufs[1];
    }
    if (o->audio) {
        if ((st = tm_read_file(o->audio, INPUT_MAX_BYTES, &bufs[2], &in->audio_len))) return st;
        in->audio = bufs[2];
    }
    return TM_OK;
}

static void print_notes(const char *cmd, const char *notes)
{
    for (const char *p = notes; *p;) {
        const char *e = strchr(p, '\n');
        int n = e ? (int)(e - p) : (int)strlen(p);
        fprintf(stderr, "trimodal %s: note: %.*s\n", cmd, n, p);
        p += n + (e != NULL);
    }
}

/* Opens the session and prepares the example; returns -1 to go on. */
static int setup(const char *cmd, const infer_opts *o, tm_session **s, tm_example **ex)
{
    *s = NULL;
    *ex = NULL;
    if (o->threads && tm_set_num_threads(o->threads)) return fail(cmd);
    tm_session_params p = tm_session_default_params();
    p.max_batch = 1;
    if (o->beam) p.caption.beam = o->beam;
    p.caption.max_tokens = o->max_tokens;
    if (o->length_penalty >= 0) p.caption.length_penalty = (float)o->length_penalty;
    if (tm_session_open(s, o->model, &p)) return fail(cmd);
    print_notes(cmd, tm_session_notes(*s));
    tm_session_input in;
    char *bufs[3] = {NULL, NULL, NULL};
    tm_status st = read_inputs(o, &in, bufs);
    if (!st) st = tm_session_prepare(*s, &in, ex);
    for (int i = 0; i < 3; i++)
        tm_free(bufs[i]);
    if (st) {
        int rc = fail(cmd);
        tm_session_free(*s);
        *s = NULL;
        return rc;
    }
    return -1;
}

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0], k, min;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF)
        k = 2, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF)
        k = 3, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4)
        k = 4, min = 0x10000;
    else
        return 0;
    if (n < k) return 0;
    unsigned v = c & (0x7Fu >> k);
    for (unsigned i = 1; i < k; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    return v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF) ? 0 : k;
}

/* A JSON string of n bytes (captions may hold any bytes: NUL, invalid
 * UTF-8, which becomes U+FFFD). */
static void json_string(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    putchar('"');
    for (size_t i = 0; i < n;) {
        size_t k = utf8_len(p + i, n - i);
        if (!k) {
            printf("\\ufffd");
            i++;
        } else if (p[i] == '"' || p[i] == '\\') {
            printf("\\%c", p[i]);
            i++;
        } else if (p[i] < 0x20) {
            printf("\\u%04x", p[i]);
            i++;
        } else {
            fwrite(p + i, 1, k, stdout);
            i += k;
        }
    }
    putchar('"');
}

static const char *mod_label(const char *model_name)
{
    return !strcmp(model_name, "vision") ? "image" : model_name;
}

/* ----------------------------------------------------------------- embed */

static const char *embed_help =
    "usage: trimodal embed --model DIR [--text TEXT] [--image FILE] [--audio FILE] [--json]\n"
    "\n"
    "The L2-normalised embedding of each input given, from the model's contrastive\n"
    "heads: vectors that can be compared across modalities by their dot product.\n"
    "Without --json the first 8 values of each are shown; --json gives them all.\n\n";

int cmd_embed(int argc, char **argv, int json)
{
    infer_opts o = {0};
    o.length_penalty = -1;
    int rc = parse("embed", argc, argv, &o, embed_help);
    if (rc >= 0) return rc;
    tm_session *s;
    tm_example *ex;
    if ((rc = setup("embed", &o, &s, &ex)) >= 0) return rc;
    tm_model_info info = tm_session_info(s);
    float *emb = malloc((size_t)(info.n_modalities * info.embed_dim + 1) * sizeof *emb);
    if (!emb) {
        tm_fail(TM_ERR_NOMEM, "out of memory");
        rc = fail("embed");
    } else if (tm_session_embed(s, &ex, 1, emb)) {
        rc = fail("embed");
    } else {
        rc = 0;
        if (json) {
            printf("{\"model\":");
            cli_json_string(stdout, tm_session_name(s));
            printf(",\"dim\":%lld,\"embeddings\":{", (long long)info.embed_dim);
        } else {
            printf("model %s: embeddings of %lld values\n", tm_session_name(s),
                   (long long)info.embed_dim);
        }
        int first = 1;
        for (int m = 0; m < info.n_modalities; m++) {
            if (!(tm_example_present(ex) & tm_modality_from_name(info.modality[m]))) continue;
            const float *v = emb + (int64_t)m * info.embed_dim;
            if (json) {
                printf("%s\"%s\":[", first ? "" : ",", mod_label(info.modality[m]));
                for (int64_t i = 0; i < info.embed_dim; i++)
                    printf("%s%.9g", i ? "," : "", v[i]);
                printf("]");
            } else {
                double norm = 0;
                for (int64_t i = 0; i < info.embed_dim; i++)
                    norm += (double)v[i] * v[i];
                printf("%-6s [", mod_label(info.modality[m]));
                for (int64_t i = 0; i < info.embed_dim && i < 8; i++)
                    printf("%s%+.4f", i ? ", " : "", v[i]);
                printf("%s] norm %.4f\n", info.embed_dim > 8 ? ", ..." : "", sqrt(norm));
            }
            first = 0;
        }
        if (json)
            printf("}}\n");
        else {
            /* cosine similarities between the inputs' embeddings */
            for (int a = 0; a < info.n_modalities; a++)
                for (int b = a + 1; b < info.n_modalities; b++) {
                    unsigned pa = tm_modality_from_name(info.modality[a]);
                    unsigned pb = tm_modality_from_name(info.modality[b]);
                    if (!(tm_example_present(ex) & pa) || !(tm_example_present(ex) & pb)) continue;
                    double d = 0;
                    for (int64_t i = 0; i < info.embed_dim; i++)
                        d += (double)emb[a * info.embed_dim + i] * emb[b * info.embed_dim + i];
                    printf("similarity %s-%s: %.4f\n", mod_label(info.modality[a]),
                           mod_label(info.modality[b]), d);
                }
        }
    }
    free(emb);
    tm_example_free(ex);
    tm_session_free(s);
    return rc;
}

/* -------------------------------------------------------------- cascade */

/* CPU seconds of the whole process (every thread): unlike wall time, it
 * hardly moves when other processes load the machine. */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int argmax(const float *p, int64_t C)
{
    int best = 0;
    for (int64_t c = 1; c < C; c++)
        if (p[c] > p[best]) best = (int)c;
    return best;
}

/* classify --cascade FILE --data MANIFEST: accuracy and mean latency (one
 * example at a time, as a server at concurrency 1) of the full model and of
 * the cascade at each threshold (every stage gets the same threshold). */
static int cascade_sweep(const infer_opts *o, int json)
{
    const char *cmd = "classify";
    double thr[32];
    int n_thr = 0;
    const char *spec = o->thresholds ? o->thresholds : "0.5,0.7,0.8,0.9,0.95,0.99";
    for (const char *q = spec; *q && n_thr < 32;) {
        char *end;
        double v = strtod(q, &end);
        if (end == q || !(v >= 0 && v <= 1) || (*end && *end != ','))
            return cli_usage("classify: --thresholds needs numbers in [0, 1] separated by "
                             "commas, got '%s'",
                             spec);
        thr[n_thr++] = v;
        q = *end ? end + 1 : end;
    }
    if (o->threads && tm_set_num_threads(o->threads)) return fail(cmd);
    tm_session_params sp = tm_session_default_params();
    sp.max_batch = 1;
    tm_session *s = NULL;
    tm_cascade *c = NULL;
    tm_manifest *m = NULL;
    tm_example **ex = NULL;
    int32_t *labels = NULL;
    float *probs = NULL;
    int n = 0, rc = 1;
    const char *split = o->split ? o->split : "test";
    int limit = o->limit ? o->limit : 1000;
    if (tm_session_open(&s, o->model, &sp) || tm_cascade_load(&c, s, o->cascade) ||
        tm_manifest_load(&m, o->data, NULL)) {
        rc = fail(cmd);
        goto done;
    }
    int64_t C = tm_session_info(s).num_classes, rows = tm_manifest_count(m);
    ex = calloc((size_t)limit, sizeof *ex);
    labels = malloc((size_t)limit * sizeof *labels);
    probs = malloc((size_t)C * sizeof *probs);
    if (!ex || !labels || !probs) {
        tm_fail(TM_ERR_NOMEM, "out of memory");
        rc = fail(cmd);
        goto done;
    }
    unsigned mods = tm_session_modalities(s);
    for (int64_t i = 0; i < rows && n < limit; i++) {
        const tm_manifest_row *r = tm_manifest_row_at(m, i);
        if (r->label == TM_LABEL_NONE || !r->split || strcmp(r->split, split)) continue;
        infer_opts one = {0};
        one.text = (mods & TM_MODALITY_TEXT) ? r->text : NULL;
        one.image = (mods & TM_MODALITY_IMAGE) ? r->image_path : NULL;
        one.audio = (mods & TM_MODALITY_AUDIO) ? r->audio_path : NULL;
        if (!one.text && !one.image && !one.audio) continue;
        tm_session_input in;
        char *bufs[3] = {NULL, NULL, NULL};
        tm_status st = read_inputs(&one, &in, bufs);
        if (!st) st = tm_session_prepare(s, &in, &ex[n]);
        for (int k = 0; k < 3; k++)
            tm_free(bufs[k]);
        if (st) {
            fprintf(stderr, "trimodal classify: %s line %lld: %s\n", o->data, (long long)r->line,
                    tm_last_error());
            goto done;
        }
        labels[n++] = r->label;
    }
    if (!n) {
        fprintf(stderr, "trimodal classify: %s has no labelled rows in split '%s'\n", o->data,
                split);
        goto done;
    }
    /* warm up: graphs are made on first use */
    int stages = tm_cascade_stage_count(c);
    if (tm_session_classify(s, &ex[0], 1, probs)) goto fail_run;
    for (int k = 0; k < stages; k++)
        tm_cascade_set_threshold(c, k, 0.0);
    int used = 0;
    if (tm_cascade_classify(c, &ex[0], 1, probs, &used)) goto fail_run;
    if (!json) {
        printf("cascade %s on %s (split %s, %d examples, one at a time)\n", o->cascade, o->data,
               split, n);
        printf("%-10s %9s %9s %9s  answered by stage (", "threshold", "accuracy", "mean ms",
               "cpu ms");
        for (int k = 0; k <= stages; k++)
            printf("%s%s", k ? ", " : "", tm_cascade_stage_name(c, k));
        printf(")\n");
    }
    /* the full model first (threshold "full"), then each threshold */
    for (int t = -1; t < n_thr; t++) {
        int correct = 0;
        int count[9] = {0};
        double t0 = tm_time_s(), c0 = cpu_now();
        for (int k = 0; t >= 0 && k < stages; k++)
            tm_cascade_set_threshold(c, k, thr[t]);
        for (int i = 0; i < n; i++) {
            int st_used = stages;
            if (t < 0 ? tm_session_classify(s, &ex[i], 1, probs)
                      : tm_cascade_classify(c, &ex[i], 1, probs, &st_used))
                goto fail_run;
            correct += argmax(probs, C) == labels[i];
            count[st_used]++;
        }
        double ms = (tm_time_s() - t0) * 1000.0 / n, acc = (double)correct / n;
        double cpu_ms = (cpu_now() - c0) * 1000.0 / n;
        if (json) {
            printf("{\"cascade\":");
            cli_json_string(stdout, o->cascade);
            if (t < 0)
                printf(",\"threshold\":null");
            else
                printf(",\"threshold\":%g", thr[t]);
            printf(",\"examples\":%d,\"accuracy\":%.6f,\"mean_ms\":%.4f,\"cpu_ms\":%.4f,"
                   "\"answered\":{",
                   n, acc, ms, cpu_ms);
            for (int k = 0; k <= stages; k++) {
                printf("%s", k ? "," : "");
                cli_json_string(stdout, tm_cascade_stage_name(c, k));
                printf(":%.6f", (double)count[k] / n);
            }
            printf("}}\n");
        } else {
            char tb[16];
            snprintf(tb, sizeof tb, "%g", t < 0 ? 0.0 : thr[t]);
            printf("%-10s %8.2f%% %9.3f %9.3f  ", t < 0 ? "full only" : tb, 100.0 * acc, ms,
                   cpu_ms);
            for (int k = 0; k <= stages; k++)
                printf("%s%.1f%%", k ? " / " : "", 100.0 * count[k] / n);
            printf("\n");
        }
        fflush(stdout);
    }
    rc = 0;
    goto done;
fail_run:
    rc = fail(cmd);
done:
    for (int i = 0; ex && i < n; i++)
        tm_example_free(ex[i]);
    free(ex);
    free(labels);
    free(probs);
    tm_manifest_free(m);
    tm_cascade_free(c);
    tm_session_free(s);
    return rc;
}

/* -------------------------------------------------------------- classify */

static const char *classify_help =
    "usage: trimodal classify --model DIR [--text TEXT] [--image FILE] [--audio FILE]\n"
    "                         [--top-k K] [--json]\n"
    "\n"
    "The model's class probabilities for one example, the K most likely first\n"
    "(default 5). Class names come from the model folder's labels.json (a JSON\n"
    "array of names in class order) or the \"classes\" of its dataset.json.\n"
    "  --top-k K             how many classes to list\n"
    "  --cascade FILE        answer through a cascade (docs/serving.md, \"Cascades\"):\n"
    "                        cheap unimodal stages first, the full model when none\n"
    "                        is confident enough; the answer names the stage\n"
    "\n"
    "A cascade sweep (no --text/--image/--audio): accuracy and mean latency of the\n"
    "full model and of the cascade at several thresholds, one example at a time:\n"
    "  trimodal classify --model DIR --cascade FILE --data MANIFEST [--split test]\n"
    "                    [--thresholds 0.5,0.7,0.8,0.9,0.95,0.99] [--limit 1000]\n"
    "  --data MANIFEST       a dataset manifest (labelled rows of --split are used)\n"
    "  --split NAME          the split to evaluate (default test)\n"
    "  --thresholds LIST     thresholds in [0, 1], each applied to every stage\n"
    "  --limit N             the first N rows of the split (default 1000)\n\n";

int cmd_classify(int argc, char **argv, int json)
{
    infer_opts o = {0};
    o.length_penalty = -1;
    o.top_k = 5;
    int rc = parse("classify", argc, argv, &o, classify_help);
    if (rc >= 0) return rc;
    if (o.data) return cascade_sweep(&o, json);
    tm_session *s;
    tm_example *ex;
    if ((rc = setup("classify", &o, &s, &ex)) >= 0) return rc;
    tm_cascade *cascade = NULL;
    int stage = -1;
    if (o.cascade && tm_cascade_load(&cascade, s, o.cascade)) {
        rc = fail("classify");
        tm_example_free(ex);
        tm_session_free(s);
        return rc;
    }
    int64_t C = tm_session_info(s).num_classes;
    float *probs = malloc((size_t)(C > 0 ? C : 1) * sizeof *probs);
    int *order = malloc((size_t)(C > 0 ? C : 1) * sizeof *order);
    if (!probs || !order) {
        tm_fail(TM_ERR_NOMEM, "out of memory");
        rc = fail("classify");
    } else if (cascade ? tm_cascade_classify(cascade, &ex, 1, probs, &stage)
                       : tm_session_classify(s, &ex, 1, probs)) {
        rc = fail("classify");
    } else {
        rc = 0;
        for (int64_t i = 0; i < C; i++)
            order[i] = (int)i;
        for (int64_t a = 0; a < C; a++) /* stable: ties keep class order */
            for (int64_t b = a + 1; b < C; b++)
                if (probs[order[b]] > probs[order[a]]) {
                    int t = order[a];
                    order[a] = order[b];
                    order[b] = t;
                }
        int k = o.top_k < C ? o.top_k : (int)C;
        if (json) {
            printf("{\"model\":");
            cli_json_string(stdout, tm_session_name(s));
            const char *lb = tm_session_class_name(s, order[0]);
            printf(",\"class\":%d,\"label\":", order[0]);
            if (lb)
                cli_json_string(stdout, lb);
            else
                printf("null");
            printf(",\"probs\":[");
            for (int64_t i = 0; i < C; i++)
                printf("%s%.9g", i ? "," : "", probs[i]);
            printf("],\"top\":[");
            for (int a = 0; a < k; a++) {
                const char *nm = tm_session_class_name(s, order[a]);
                printf("%s{\"class\":%d,\"label\":", a ? "," : "", order[a]);
                if (nm)
                    cli_json_string(stdout, nm);
                else
                    printf("null");
                printf(",\"prob\":%.9g}", probs[order[a]]);
            }
            printf("]");
            if (cascade) {
                printf(",\"stage\":");
                cli_json_string(stdout, tm_cascade_stage_name(cascade, stage));
            }
            printf("}\n");
        } else {
            printf("model %s: %lld classes", tm_session_name(s), (long long)C);
            if (cascade) printf(" (answered by the cascade's %s stage)",
                                tm_cascade_stage_name(cascade, stage));
            printf("\n");
            for (int a = 0; a < k; a++) {
                const char *nm = tm_session_class_name(s, order[a]);
                char buf[32];
                snprintf(buf, sizeof buf, "class %d", order[a]);
                printf("%3d. %-24s %.4f\n", a + 1, nm ? nm : buf, probs[order[a]]);
            }
        }
    }
    free(probs);
    free(order);
    tm_cascade_free(cascade);
    tm_example_free(ex);
    tm_session_free(s);
    return rc;
}

/* --------------------------------------------------------------- caption */

static const char *caption_help =
    "usage: trimodal caption --model DIR [--text TEXT] [--image FILE] [--audio FILE]\n"
    "                        [--beam N] [--max-tokens N] [--length-penalty X] [--json]\n"
    "\n"
    "A caption from the model's caption decoder (a transcript, for a speech model\n"
    "whose caption context is the audio), decoded with the folder's tokenizer.json.\n"
    "  --beam N              1: greedy (default); N > 1: beam search with N beams\n"
    "  --max-tokens N        generate at most N tokens (default: the decoder's limit)\n"
    "  --length-penalty X    a hypothesis scores log p / length^X (default 1)\n\n";

int cmd_caption(int argc, char **argv, int json)
{
    infer_opts o = {0};
    o.length_penalty = -1;
    int rc = parse("caption", argc, argv, &o, caption_help);
    if (rc >= 0) return rc;
    tm_session *s;
    tm_example *ex;
    if ((rc = setup("caption", &o, &s, &ex)) >= 0) return rc;
    tm_caption_result r;
    if (tm_session_caption(s, &ex, 1, &r)) {
        rc = fail("caption");
    } else {
        rc = 0;
        if (json) {
            printf("{\"model\":");
            cli_json_string(stdout, tm_session_name(s));
            printf(",\"caption\":");
            if (r.text)
                json_string(r.text, r.text_len);
            else
                printf("null");
            printf(",\"ids\":[");
            for (int32_t i = 0; i < r.n_ids; i++)
                printf("%s%d", i ? "," : "", r.ids[i]);
            printf("],\"score\":");
            if (isfinite(r.score))
                printf("%.9g}\n", r.score);
            else
                printf("null}\n");
        } else if (r.text) {
            fwrite(r.text, 1, r.text_len, stdout);
            printf("\n");
        } else {
            printf("(no tokenizer.json: ids)");
            for (int32_t i = 0; i < r.n_ids; i++)
                printf(" %d", r.ids[i]);
            printf("\n");
        }
        tm_caption_result_clear(&r);
    }
    tm_example_free(ex);
    tm_session_free(s);
    return rc;
}
