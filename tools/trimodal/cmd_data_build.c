/* trimodal data build fashion-tri: the FashionTri dataset builder
 * (include/trimodal/datasets.h, docs/datasets.md). */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "trimodal/core.h"
#include "trimodal/datasets.h"

static const char *build_help =
    "usage: trimodal data build fashion-tri --out DIR [options]\n"
    "\n"
    "Builds FashionTri: every Fashion-MNIST image (train 60000, test 10000) paired with\n"
    "a written hint and a spoken hint about the same garment. Hint words come from\n"
    "WordNet (configs/fashion-tri/terms.json); spoken hints are rendered by espeak-ng,\n"
    "flite and festival voices, with random pitch, tempo and coloured noise. The test\n"
    "split is spoken by voices that train and val never use; val is 1/12 of train.\n"
    "\n"
    "DIR receives manifest.jsonl (one example a line), dataset.json (classes, recipe,\n"
    "package versions, counts), images/ (PNG), audio/ (16 kHz FLAC) and .tts-cache/\n"
    "(each distinct utterance rendered once). The build is deterministic for a seed,\n"
    "whatever --jobs says; running it again on a finished DIR is a quick no-op, and an\n"
    "interrupted build resumes. A DIR holding another recipe is refused.\n"
    "\n"
    "options:\n"
    "  --out DIR            the dataset folder (required)\n"
    "  --seed S             seed of every random choice (default 1)\n"
    "  --limit-train N      only the first N training images (default: all)\n"
    "  --limit-test N       only the first N test images (default: all)\n"
    "  --jobs J             threads (default: TRIMODAL_THREADS, else all CPUs)\n"
    "  --cache DIR          rendered utterances (default: OUT/.tts-cache)\n"
    "  --fashion-mnist DIR  the four IDX files, .gz or not\n"
    "                       (default: /usr/share/datasets/fashion-mnist)\n"
    "  --terms FILE         the hint vocabulary (default: configs/fashion-tri/terms.json\n"
    "                       under the working directory or the source tree)\n"
    "  --check              only check that the packages it needs are installed\n"
    "  --quiet              no progress lines\n"
    "  --json               the summary as one JSON object\n"
    "\n"
    "needs the Debian packages dataset-fashion-mnist espeak-ng flite festival\n"
    "festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts (scripts/deps.sh installs them).\n"
    "A full build takes about 1000 CPU-seconds (9 minutes on 2 idle cores) and 1.3 GB;\n"
    "docs/datasets.md has the recipe and the figures.\n"
    "\n"
    "trimodal data build fashion-mnist --out DIR writes the plain Fashion-MNIST images\n"
    "(no hints, no degradation) as a dataset; see its --help.\n";

static int failed(void)
{
    fprintf(stderr, "trimodal: data build fashion-tri: %s\n", tm_last_error());
    return 1;
}

static int parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    if (*s == '-') return 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end) return 0;
    *out = v;
    return 1;
}

/* configs/fashion-tri/terms.json under the working directory, else under
 * the source tree the program was built in (build/bin/trimodal -> ../..). */
static const char *default_terms(char *buf, size_t size)
{
    const char *rel = "configs/fashion-tri/terms.json";
    struct stat sb;
    if (stat(rel, &sb) == 0) return rel;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        for (int up = 0; up < 3; up++) {
            char *slash = strrchr(exe, '/');
            if (!slash) break;
            *slash = 0;
            snprintf(buf, size, "%s/%s", exe, rel);
            if (stat(buf, &sb) == 0) return buf;
        }
    }
    return rel;
}

typedef struct {
    int tty;
    int printed;
} progress_state;

static void fmt_time(char *out, size_t size, double s)
{
    if (s < 0 || s > 1e7)
        snprintf(out, size, "?");
    else if (s >= 3600)
        snprintf(out, size, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
    else if (s >= 60)
        snprintf(out, size, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else
        snprintf(out, size, "%ds", (int)s);
}

static void on_progress(void *ctx, const tm_fashiontri_progress *p)
{
    progress_state *ps = ctx;
    double rate = p->elapsed_s > 0 ? (double)p->done / p->elapsed_s : 0;
    char eta[32], el[32];
    fmt_time(eta, sizeof eta, rate > 0 ? (double)(p->total - p->done) / rate : -1);
    fmt_time(el, sizeof el, p->elapsed_s);
    const char *what = strcmp(p->stage, "render") ? "examples" : "utterances rendered";
    fprintf(stderr, "%sfashion-tri: %s %lld/%lld %s (%.1f/s, %s elapsed, ETA %s)%s",
            ps->tty ? "\r\033[K" : "", p->stage, (long long)p->done, (long long)p->total, what,
            rate, el, eta, ps->tty && p->done < p->total ? "" : "\n");
    fflush(stderr);
    ps->printed = 1;
}

static const char *fmnist_help =
    "usage: trimodal data build fashion-mnist --out DIR [--split test|train|all]\n"
    "                                         [--limit N] [--fashion-mnist DIR] [--json]\n"
    "\n"
    "Writes Fashion-MNIST as it is (no hints, no degradation) as a dataset folder:\n"
    "manifest.jsonl (image and label a line), dataset.json and images/SPLIT/ (PNG).\n"
    "Use it to measure a FashionTri model on the plain images, e.g.\n"
    "  trimodal eval --model M --data DIR/manifest.jsonl --split test\n"
    "Default split: test (10000 images, 3 MB). Running it again is a quick no-op.\n";

static int fmnist_failed(void)
{
    fprintf(stderr, "trimodal: data build fashion-mnist: %s\n", tm_last_error());
    return 1;
}

static void fmnist_progress(void *ctx, const char *split, int64_t done, int64_t total)
{
    (void)ctx;
    fprintf(stderr, "fashion-mnist: %s %lld/%lld images\n", split, (long long)done,
            (long long)total);
}

static int build_fashion_mnist(int argc, char **argv, int json)
{
    tm_fashionmnist_params p = tm_fashionmnist_default_params();
    int quiet = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(fmnist_help, stdout);
            return 0;
        }
        if (!strcmp(a, "--quiet")) {
            quiet = 1;
            continue;
        }
        if (a[0] != '-' || i + 1 >= argc)
            return cli_usage("data build fashion-mnist: %s '%s'",
                             a[0] == '-' ? "missing value for" : "unexpected argument", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--out"))
            p.out_dir = v;
        else if (!strcmp(a, "--fashion-mnist"))
            p.source_dir = v;
        else if (!strcmp(a, "--limit")) {
            if (!parse_i64(v, 1, 60000, &p.limit))
                return cli_usage("data build fashion-mnist: --limit wants 1..60000, not '%s'", v);
        } else if (!strcmp(a, "--split")) {
            if (!strcmp(v, "test")) p.train = 0, p.test = 1;
            else if (!strcmp(v, "train")) p.train = 1, p.test = 0;
            else if (!strcmp(v, "all")) p.train = 1, p.test = 1;
            else return cli_usage("data build fashion-mnist: --split wants test, train or all, "
                                  "not '%s'", v);
        } else
            return cli_usage("data build fashion-mnist: unknown option '%s'", a);
    }
    if (!p.out_dir) return cli_usage("data build fashion-mnist: --out DIR is required");
    if (!quiet) p.progress = fmnist_progress;
    tm_fashionmnist_summary s;
    if (tm_fashionmnist_build(&p, &s) != TM_OK) return fmnist_failed();
    if (json) {
        printf("{\"dataset\":\"fashion-mnist\",\"out\":");
        cli_json_string(stdout, p.out_dir);
        printf(",\"up_to_date\":%s,\"train\":%lld,\"test\":%lld}\n",
               s.up_to_date ? "true" : "false", (long long)s.n_train, (long long)s.n_test);
    } else if (s.up_to_date) {
        printf("fashion-mnist: %s is up to date\n", p.out_dir);
    } else {
        printf("fashion-mnist: wrote %s (%lld train, %lld test images)\n", p.out_dir,
               (long long)s.n_train, (long long)s.n_test);
    }
    return 0;
}

int cmd_data_build(int argc, char **argv, int json)
{
    if (argc < 1)
        return cli_usage(
            "data build: name a dataset (fashion-tri, fashion-mnist); see 'trimodal data build "
            "--help'");
    if (!strcmp(argv[0], "-h") || !strcmp(argv[0], "--help")) {
        fputs(build_help, stdout);
        return 0;
    }
    if (!strcmp(argv[0], "fashion-mnist")) return build_fashion_mnist(argc, argv, json);
    if (strcmp(argv[0], "fashion-tri"))
        return cli_usage("data build: unknown dataset '%s' (known: fashion-tri, fashion-mnist)",
                         argv[0]);
    tm_fashiontri_params p = tm_fashiontri_default_params();
    int64_t jobs = 0;
    int check = 0, quiet = 0;
    char terms_buf[PATH_MAX + 64];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(build_help, stdout);
            return 0;
        }
        if (!strcmp(a, "--check")) {
            check = 1;
            continue;
        }
        if (!strcmp(a, "--quiet")) {
            quiet = 1;
            continue;
        }
        if (a[0] != '-' || i + 1 >= argc)
            return cli_usage("data build fashion-tri: %s '%s'",
                             a[0] == '-' ? "missing value for" : "unexpected argument", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--out"))
            p.out_dir = v;
        else if (!strcmp(a, "--cache"))
            p.cache_dir = v;
        else if (!strcmp(a, "--fashion-mnist"))
            p.source_dir = v;
        else if (!strcmp(a, "--terms"))
            p.terms_path = v;
        else if (!strcmp(a, "--seed")) {
            if (!parse_u64(v, &p.seed))
                return cli_usage(
                    "data build fashion-tri: --seed wants a whole number >= 0, not '%s'", v);
        } else if (!strcmp(a, "--limit-train")) {
            if (!parse_i64(v, 1, 60000, &p.limit_train))
                return cli_usage("data build fashion-tri: --limit-train wants 1..60000, not '%s'",
                                 v);
        } else if (!strcmp(a, "--limit-test")) {
            if (!parse_i64(v, 1, 10000, &p.limit_test))
                return cli_usage("data build fashion-tri: --limit-test wants 1..10000, not '%s'",
                                 v);
        } else if (!strcmp(a, "--jobs")) {
            if (!parse_i64(v, 1, 256, &jobs))
                return cli_usage("data build fashion-tri: --jobs wants 1..256, not '%s'", v);
        } else {
            return cli_usage("data build fashion-tri: unknown option '%s'", a);
        }
    }
    if (check) {
        if (tm_fashiontri_check(&p) != TM_OK) return failed();
        if (json)
            printf("{\"check\":\"ok\"}\n");
        else
            printf("fashion-tri: everything it needs is installed\n");
        return 0;
    }
    if (!p.out_dir) return cli_usage("data build fashion-tri: --out DIR is required");
    if (!p.terms_path) p.terms_path = default_terms(terms_buf, sizeof terms_buf);
    if (jobs && tm_set_num_threads((int)jobs) != TM_OK) return failed();
    progress_state ps = {isatty(2), 0};
    if (!quiet) {
        p.progress = on_progress;
        p.progress_ctx = &ps;
        p.progress_interval_s = ps.tty ? 0.5 : 5.0;
    }
    tm_fashiontri_summary s;
    if (tm_fashiontri_build(&p, &s) != TM_OK) return failed();
    if (json) {
        printf("{\"dataset\":\"fashion-tri\",\"out\":");
        cli_json_string(stdout, p.out_dir);
        printf(",\"up_to_date\":%s,\"resumed\":%s,\"train\":%lld,\"val\":%lld,\"test\":%lld,"
               "\"texts\":%lld,\"clips\":%lld,\"utterances\":%lld,\"rendered\":%lld,"
               "\"audio_seconds\":%.1f,\"media_bytes\":%lld,\"seconds\":%.1f,"
               "\"threads\":%d,\"recipe_hash\":\"%016llx\"}\n",
               s.up_to_date ? "true" : "false", s.resumed ? "true" : "false", (long long)s.n_train,
               (long long)s.n_val, (long long)s.n_test, (long long)s.texts, (long long)s.clips,
               (long long)s.utterances, (long long)s.rendered, s.audio_seconds,
               (long long)s.media_bytes, s.seconds, tm_get_num_threads(),
               (unsigned long long)s.recipe_hash);
    } else if (s.up_to_date) {
        printf("fashion-tri: %s is up to date (recipe %016llx; %lld train, %lld val, %lld test)\n",
               p.out_dir, (unsigned long long)s.recipe_hash, (long long)s.n_train,
               (long long)s.n_val, (long long)s.n_test);
    } else {
        printf("fashion-tri: built %s in %.1f s%s on %d threads\n", p.out_dir, s.seconds,
               s.resumed ? " (resumed)" : "", tm_get_num_threads());
        printf("  examples      %lld train, %lld val, %lld test\n", (long long)s.n_train,
               (long long)s.n_val, (long long)s.n_test);
        printf("  written hints %lld\n", (long long)s.texts);
        printf("  spoken hints  %lld clips, %.2f h of audio, from %lld distinct utterances "
               "(%lld rendered now, the rest from the cache)\n",
               (long long)s.clips, s.audio_seconds / 3600, (long long)s.utterances,
               (long long)s.rendered);
        printf("  media         %.1f MB (images and clips)\n", s.media_bytes / 1e6);
        printf("  recipe        %016llx (manifest.jsonl, dataset.json)\n",
               (unsigned long long)s.recipe_hash);
    }
    return 0;
}
