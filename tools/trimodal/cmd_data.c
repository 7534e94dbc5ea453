/* trimodal data: check a dataset manifest (validation, media, statistics);
 * `data build` is forwarded to cmd_data_build. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "trimodal/trimodal.h"

static const char *help =
    "usage: trimodal data check MANIFEST [--media] [--threads N] [--max-problems N] [--json]\n"
    "       trimodal data build ...   (see trimodal data build --help)\n"
    "\n"
    "check validates a dataset manifest (JSON Lines, one example a line; docs/data.md) and\n"
    "the dataset.json beside it, checks that every image and audio file exists, and prints\n"
    "statistics: rows per split (against dataset.json's counts), per class, per modality\n"
    "(present, missing), and extra fields.\n"
    "\n"
    "  --media           also decode every image and audio file (in parallel) and report\n"
    "                    image sizes and audio durations (min / mean / max); regions\n"
    "                    outside their image and word timings past the end of their audio\n"
    "                    are problems too\n"
    "  --threads N       threads for the media checks (default: TRIMODAL_THREADS or CPUs)\n"
    "  --max-problems N  problems listed (default 20; all are counted)\n"
    "  --json            one JSON object with everything, instead of tables\n"
    "\n"
    "Exit status: 0 when the manifest is valid and every media file is fine, 1 when there\n"
    "are problems (the first ones are listed with FILE:LINE) or the manifest cannot be\n"
    "read, 2 on bad usage.\n";

typedef struct {
    int64_t present, missing, files_bad;
} mod_count;

typedef struct {
    double min, max, sum;
    int64_t n;
} range;

static void range_add(range *r, double v)
{
    if (!r->n || v < r->min) r->min = v;
    if (!r->n || v > r->max) r->max = v;
    r->sum += v;
    r->n++;
}

/* A distinct image size and how many images have it. */
typedef struct {
    int w, h;
    int64_t n;
} size_count;

static int cmp_size(const void *a, const void *b)
{
    const size_count *x = a, *y = b;
    if (x->n != y->n) return x->n < y->n ? 1 : -1;
    if (x->w != y->w) return x->w - y->w;
    return x->h - y->h;
}

static int check(int argc, char **argv, int json)
{
    const char *path = NULL;
    int media = 0, threads = 0, max_problems = 20;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(help, stdout);
            return 0;
        } else if (!strcmp(a, "--media")) {
            media = 1;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--threads") || !strcmp(a, "--max-problems")) {
            if (i + 1 >= argc) return cli_usage("data check: %s needs a number", a);
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < (a[2] == 't' ? 1 : 0) || v > 1000000)
                return cli_usage("data check: bad value '%s' for %s", argv[i], a);
            if (a[2] == 't')
                threads = (int)v;
            else
                max_problems = (int)v;
        } else if (a[0] == '-') {
            return cli_usage("data check: unknown option '%s'", a);
        } else if (path) {
            return cli_usage("data check: more than one manifest ('%s')", a);
        } else {
            path = a;
        }
    }
    if (!path) return cli_usage("data check: give a manifest (a .jsonl file)");

    tm_manifest_params mp = tm_manifest_default_params();
    mp.keep_going = 1;
    mp.max_problems = max_problems;
    tm_manifest *m;
    if (tm_manifest_load(&m, path, &mp)) {
        fprintf(stderr, "trimodal: data check: %s\n", tm_last_error());
        return 1;
    }
    tm_media_check_params cp = tm_media_check_default_params();
    cp.decode = media;
    cp.threads = threads;
    tm_media_report *rep = NULL;
    double t0 = tm_time_s();
    if (tm_manifest_check_media(&rep, m, &cp)) {
        fprintf(stderr, "trimodal: data check: %s\n", tm_last_error());
        tm_manifest_free(m);
        return 1;
    }
    double media_s = tm_time_s() - t0;

    int64_t n = tm_manifest_count(m);
    int32_t nc = tm_manifest_num_classes(m);
    int ns = tm_manifest_split_count(m);
    /* per class: total, per split; one more column for rows without a split */
    int64_t *cls = calloc((size_t)(nc + 1) * (size_t)(ns + 2), sizeof *cls);
    mod_count mods[3];
    memset(mods, 0, sizeof mods);
    range secs = {0, 0, 0, 0}, widths = {0, 0, 0, 0}, heights = {0, 0, 0, 0};
    size_count *sizes = calloc(64, sizeof *sizes);
    int n_sizes = 0;
    int64_t sizes_other = 0, no_split = 0, unlabelled = 0, with_words = 0, with_region = 0,
            with_transcript = 0;
    if (!cls || !sizes) {
        fprintf(stderr, "trimodal: data check: out of memory\n");
        return 1;
    }
    for (int64_t i = 0; i < n; i++) {
        const tm_manifest_row *r = tm_manifest_row_at(m, i);
        const tm_media_info *mi = tm_media_report_row(rep, i);
        int si = ns;
        if (r->split) {
            for (si = 0; si < ns; si++)
                if (!strcmp(tm_manifest_split_name(m, si), r->split)) break;
        } else {
            no_split++;
        }
        int ci = r->label == TM_LABEL_NONE ? nc : r->label;
        if (r->label == TM_LABEL_NONE) unlabelled++;
        cls[(size_t)ci * (size_t)(ns + 2)]++;
        cls[(size_t)ci * (size_t)(ns + 2) + 1 + (size_t)si]++;
        const unsigned bits[3] = {TM_MODALITY_TEXT, TM_MODALITY_IMAGE, TM_MODALITY_AUDIO};
        for (int k = 0; k < 3; k++) {
            if (r->present & bits[k])
                mods[k].present++;
            else
                mods[k].missing++;
        }
        if (mi->has_image && mi->image_status) mods[1].files_bad++;
        if (mi->has_audio && mi->audio_status) mods[2].files_bad++;
        if (media && mi->has_image && !mi->image_status) {
            range_add(&widths, mi->width);
            range_add(&heights, mi->height);
            int k;
            for (k = 0; k < n_sizes; k++)
                if (sizes[k].w == mi->width && sizes[k].h == mi->height) break;
            if (k < n_sizes)
                sizes[k].n++;
            else if (n_sizes < 64)
                sizes[n_sizes++] = (size_count){mi->width, mi->height, 1};
            else
                sizes_other++;
        }
        if (media && mi->has_audio && !mi->audio_status) range_add(&secs, mi->seconds);
        if (r->n_words) with_words++;
        if (r->has_region) with_region++;
        if (r->transcript) with_transcript++;
    }
    qsort(sizes, (size_t)n_sizes, sizeof *sizes, cmp_size);
    int64_t n_problems = tm_manifest_problem_count(m);
    int64_t n_media = tm_media_report_failures(rep);
    int valid = n_problems == 0 && n_media == 0;
    const char *mod_names[3] = {"text", "image", "audio"};
    const char *ds = tm_manifest_dataset_path(m);

    if (json) {
        printf("{\"manifest\":");
        cli_json_string(stdout, path);
        printf(",\"valid\":%s,\"rows\":%lld,\"problems\":%lld,\"media_failures\":%lld",
               valid ? "true" : "false", (long long)n, (long long)n_problems, (long long)n_media);
        printf(",\"dataset\":");
        if (ds) {
            printf("{\"path\":");
            cli_json_string(stdout, ds);
            printf(",\"name\":");
            cli_json_string(stdout, tm_manifest_dataset_name(m));
            printf("}");
        } else {
            printf("null");
        }
        printf(",\"splits\":[");
        for (int s = 0; s < ns; s++) {
            const char *nm = tm_manifest_split_name(m, s);
            printf("%s{\"name\":", s ? "," : "");
            cli_json_string(stdout, nm);
            printf(",\"rows\":%lld,\"expected\":", (long long)tm_manifest_split_size(m, nm));
            int64_t e = tm_manifest_split_expected(m, nm);
            if (e >= 0)
                printf("%lld", (long long)e);
            else
                printf("null");
            printf(",\"known\":%s}", tm_manifest_split_known(m, nm) ? "true" : "false");
        }
        printf("],\"no_split\":%lld,\"classes\":[", (long long)no_split);
        for (int32_t c = 0; c < nc; c++) {
            printf("%s{\"index\":%d,\"name\":", c ? "," : "", c);
            const char *cn = tm_manifest_class_name(m, c);
            if (cn)
                cli_json_string(stdout, cn);
            else
                printf("null");
            printf(",\"rows\":%lld,\"per_split\":{", (long long)cls[(size_t)c * (size_t)(ns + 2)]);
            for (int s = 0; s < ns; s++) {
                if (s) printf(",");
                cli_json_string(stdout, tm_manifest_split_name(m, s));
                printf(":%lld", (long long)cls[(size_t)c * (size_t)(ns + 2) + 1 + (size_t)s]);
            }
            printf("}}");
        }
        printf("],\"unlabelled\":%lld,\"modalities\":{", (long long)unlabelled);
        for (int k = 0; k < 3; k++)
            printf("%s\"%s\":{\"present\":%lld,\"missing\":%lld,\"bad_files\":%lld}", k ? "," : "",
                   mod_names[k], (long long)mods[k].present, (long long)mods[k].missing,
                   (long long)mods[k].files_bad);
        printf("},\"alignment\":{\"transcript\":%lld,\"words\":%lld,\"region\":%lld}",
               (long long)with_transcript, (long long)with_words, (long long)with_region);
        printf(",\"fields\":[");
        for (int f = 0; f < tm_manifest_field_count(m); f++) {
            if (f) printf(",");
            cli_json_string(stdout, tm_manifest_field_name(m, f));
        }
        printf("]");
        if (media) {
            if (secs.n)
                printf(",\"audio_seconds\":{\"min\":%.4f,\"mean\":%.4f,\"max\":%.4f,\"n\":%lld}",
                       secs.min, secs.sum / secs.n, secs.max, (long long)secs.n);
            if (widths.n) {
                printf(",\"image_sizes\":{\"width\":{\"min\":%g,\"max\":%g},\"height\":{\"min\":%g,"
                       "\"max\":%g},\"common\":[",
                       widths.min, widths.max, heights.min, heights.max);
                for (int k = 0; k < n_sizes && k < 10; k++)
                    printf("%s{\"width\":%d,\"height\":%d,\"n\":%lld}", k ? "," : "", sizes[k].w,
                           sizes[k].h, (long long)sizes[k].n);
                printf("]}");
            }
            printf(",\"media_seconds\":%.3f", media_s);
        }
        printf(",\"problem_list\":[");
        int listed = 0;
        for (int64_t i = 0; i < n_problems && listed < max_problems; i++, listed++) {
            if (listed) printf(",");
            cli_json_string(stdout, tm_manifest_problem(m, i, NULL));
        }
        for (int64_t i = 0; i < n && listed < max_problems; i++) {
            const tm_media_info *mi = tm_media_report_row(rep, i);
            if (!mi->error) continue;
            if (listed) printf(",");
            cli_json_string(stdout, mi->error);
            listed++;
        }
        printf("]}\n");
    } else {
        if (valid)
            printf("manifest  %s: %lld rows, valid\n", path, (long long)n);
        else
            printf("manifest  %s: %lld good rows, INVALID (%lld problems in the manifest, %lld "
                   "rows with media problems)\n",
                   path, (long long)n, (long long)n_problems, (long long)n_media);
        if (ds)
            printf("dataset   %s (%s)\n", tm_manifest_dataset_name(m), ds);
        else
            printf("dataset   no dataset.json beside the manifest\n");
        printf("\n%-16s %10s %10s\n", "split", "rows", "expected");
        for (int s = 0; s < ns; s++) {
            const char *nm = tm_manifest_split_name(m, s);
            int64_t e = tm_manifest_split_expected(m, nm), got = tm_manifest_split_size(m, nm);
            char exp[24] = "-";
            if (e >= 0) snprintf(exp, sizeof exp, "%lld", (long long)e);
            printf("%-16s %10lld %10s  %s%s\n", nm, (long long)got, exp,
                   tm_manifest_split_known(m, nm) ? "" : "(unknown split name)",
                   e >= 0 && e != got ? "(count differs from dataset.json)" : "");
        }
        if (no_split) printf("%-16s %10lld\n", "(no split)", (long long)no_split);

        printf("\n%-6s %-20s %8s", "class", "name", "rows");
        for (int s = 0; s < ns && s < 6; s++)
            printf(" %8.8s", tm_manifest_split_name(m, s));
        printf("\n");
        for (int32_t c = 0; c <= nc; c++) {
            int64_t tot = cls[(size_t)c * (size_t)(ns + 2)];
            if (c == nc && !tot) break;
            const char *cn = c < nc ? tm_manifest_class_name(m, c) : "(no label)";
            char idx[16] = "-";
            if (c < nc) snprintf(idx, sizeof idx, "%d", c);
            printf("%-6s %-20.20s %8lld", idx, cn ? cn : "", (long long)tot);
            for (int s = 0; s < ns && s < 6; s++)
                printf(" %8lld", (long long)cls[(size_t)c * (size_t)(ns + 2) + 1 + (size_t)s]);
            printf("\n");
        }

        printf("\n%-10s %10s %10s %10s\n", "modality", "present", "missing", "bad files");
        for (int k = 0; k < 3; k++)
            printf("%-10s %10lld %10lld %10lld\n", mod_names[k], (long long)mods[k].present,
                   (long long)mods[k].missing, (long long)mods[k].files_bad);
        printf("\nalignment  transcript %lld, words %lld, region %lld rows\n",
               (long long)with_transcript, (long long)with_words, (long long)with_region);
        if (tm_manifest_field_count(m)) {
            printf("fields    ");
            for (int f = 0; f < tm_manifest_field_count(m); f++)
                printf(" %s", tm_manifest_field_name(m, f));
            printf("\n");
        }
        if (media) {
            if (secs.n)
                printf("audio      %lld files, %.3f s min, %.3f s mean, %.3f s max\n",
                       (long long)secs.n, secs.min, secs.sum / secs.n, secs.max);
            if (widths.n) {
                printf("images     %lld files, width %g..%g, height %g..%g; most common:",
                       (long long)widths.n, widths.min, widths.max, heights.min, heights.max);
                for (int k = 0; k < n_sizes && k < 5; k++)
                    printf(" %dx%d (%lld)", sizes[k].w, sizes[k].h, (long long)sizes[k].n);
                printf("\n");
            }
            printf("media      decoded in %.2f s\n", media_s);
        } else {
            printf("media      files exist; run with --media to decode them and see sizes and "
                   "durations\n");
        }
        if (!valid) {
            printf("\nproblems: %lld in the manifest, %lld rows with media problems; the first:\n",
                   (long long)n_problems, (long long)n_media);
            int listed = 0;
            for (int64_t i = 0; i < n_problems && listed < max_problems; i++, listed++)
                printf("  %s\n", tm_manifest_problem(m, i, NULL));
            for (int64_t i = 0; i < n && listed < max_problems; i++) {
                const tm_media_info *mi = tm_media_report_row(rep, i);
                if (mi->error) {
                    printf("  %s\n", mi->error);
                    listed++;
                }
            }
        }
    }
    free(cls);
    free(sizes);
    tm_media_report_free(rep);
    tm_manifest_free(m);
    return valid ? 0 : 1;
}

int cmd_data(int argc, char **argv, int json)
{
    if (argc < 1) return cli_usage("data: give a subcommand: check or build");
    if (!strcmp(argv[0], "-h") || !strcmp(argv[0], "--help")) {
        fputs(help, stdout);
        return 0;
    }
    if (!strcmp(argv[0], "check")) return check(argc - 1, argv + 1, json);
    if (!strcmp(argv[0], "build")) return cmd_data_build(argc - 1, argv + 1, json);
    return cli_usage("data: unknown subcommand '%s' (check or build)", argv[0]);
}
