/* trimodal eval: how good a model is on a manifest, for each task and
 * modality (tm_evaluate), as a terminal table, JSON and an HTML report.
 * Exit 0 ok, 1 failure, 2 usage. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "trimodal/data.h"
#include "trimodal/eval.h"
#include "trimodal/model.h"
#include "trimodal/serve.h"
#include "trimodal/text.h"

static const char *eval_help =
    "usage: trimodal eval --model DIR --data MANIFEST [options]\n"
    "\n"
    "Runs the model over the manifest's rows and reports every metric that applies\n"
    "to its heads and the rows' fields:\n"
    "  classification  accuracy, top-5, precision/recall/F1 (macro and weighted),\n"
    "                  confusion matrix, ECE, NLL (needs a classifier and labels);\n"
    "  ablation        the same with each subset of modalities removed at test time\n"
    "                  (text only, image only, ..., all), on rows that have them;\n"
    "  retrieval       Recall@1/5/10, MRR, mAP, median rank between every pair of\n"
    "                  modalities with contrastive heads, both directions,\n"
    "                  instance-level (the paired row) and class-level (same label);\n"
    "  captions        greedy captions scored with BLEU, METEOR and CIDEr-D against\n"
    "                  the rows' \"transcript\" (speech recognition: WER and CER too)\n"
    "                  or else their \"text\" (then hidden from the model);\n"
    "  bias audit      accuracy and F1 per value of a manifest field (--group-by),\n"
    "                  with the gap between the best and the worst group;\n"
    "  examples        for the first N rows: fusion attention over the image and\n"
    "                  along the spectrogram, and modality attribution (occlusion\n"
    "                  and gradient x input).\n"
    "The model folder holds config.json, model.safetensors, tokenizer.json (for\n"
    "text), preprocess.json (else the default front-ends) and the class names\n"
    "(labels.json or dataset.json, as for `trimodal classify`).\n"
    "\n"
    "  --model DIR        the model folder\n"
    "  --data MANIFEST    a JSON Lines manifest (docs/data.md)\n"
    "  --split NAME       only rows of this split (default: every row)\n"
    "  --group-by FIELD   bias audit by this field (repeatable, up to 8)\n"
    "  --examples N       explain the first N rows (0..64, default 0)\n"
    "  --report FILE      write the HTML report (one file, pictures embedded)\n"
    "  --batch N          graph batch size (default 16)\n"
    "  --no-ablation      only the full set of modalities\n"
    "  --no-retrieval     skip retrieval\n"
    "  --quiet            no progress on stderr\n"
    "  --json             print one JSON object with everything on stdout\n"
    "docs/eval.md (\"trimodal eval\") defines every number.\n";

static void on_progress(void *ctx, const char *stage, int64_t done, int64_t total)
{
    int tty = *(int *)ctx;
    if (tty)
        fprintf(stderr, "\r%s: %lld/%lld rows%s", stage, (long long)done, (long long)total,
                done >= total ? "\n" : "");
    else if (done >= total)
        fprintf(stderr, "%s: %lld rows done\n", stage, (long long)total);
}

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int exists(const char *path)
{
    struct stat st;
    return path && stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int parse_num(const char *s, long lo, long hi, long *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

int cmd_eval(int argc, char **argv, int json)
{
    const char *model_dir = NULL, *data = NULL, *report = NULL;
    int quiet = 0;
    tm_evaluate_options o = tm_evaluate_default_options();
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(eval_help, stdout);
            return 0;
        }
        if (!strcmp(a, "--json")) { json = 1; continue; }
        if (!strcmp(a, "--quiet")) { quiet = 1; continue; }
        if (!strcmp(a, "--no-ablation")) { o.ablation = 0; continue; }
        if (!strcmp(a, "--no-retrieval")) { o.retrieval = 0; continue; }
        const char *opts[] = {"--model", "--data", "--split", "--group-by", "--examples",
                              "--report", "--batch"};
        int k = -1;
        for (int j = 0; j < 7; j++)
            if (!strcmp(a, opts[j])) k = j;
        if (k < 0) return cli_usage("eval: unknown option '%s'", a);
        if (i + 1 >= argc) return cli_usage("eval: %s needs a value", a);
        const char *v = argv[++i];
        long n;
        switch (k) {
        case 0: model_dir = v; break;
        case 1: data = v; break;
        case 2: o.split = v; break;
        case 3:
            if (o.n_group_by >= TM_EVALUATE_MAX_GROUPS)
                return cli_usage("eval: at most %d --group-by fields", TM_EVALUATE_MAX_GROUPS);
            o.group_by[o.n_group_by++] = v;
            break;
        case 4:
            if (!parse_num(v, 0, 64, &n)) return cli_usage("eval: --examples takes 0..64, not '%s'", v);
            o.n_examples = (int)n;
            break;
        case 5: report = v; break;
        case 6:
            if (!parse_num(v, 1, 1024, &n)) return cli_usage("eval: --batch takes 1..1024, not '%s'", v);
            o.batch_size = n;
            break;
        }
    }
    if (!model_dir) return cli_usage("eval: --model DIR is required");
    if (!data) return cli_usage("eval: --data MANIFEST is required");

    int rc = 1;
    tm_session *s = NULL;
    tm_tokenizer *tok = NULL;
    tm_manifest *man = NULL;
    tm_evaluation *ev = NULL;
    const char **names = NULL;
    tm_preprocess_config pre = tm_preprocess_default_config();
    char *tok_path = join(model_dir, "tokenizer.json");
    char *pre_path = join(model_dir, "preprocess.json");
    tm_status st = (!tok_path || !pre_path) ? tm_fail(TM_ERR_NOMEM, "out of memory") : TM_OK;
    if (!st) st = tm_session_open(&s, model_dir, NULL); /* model, class names, checks */
    if (!st && exists(tok_path)) st = tm_tokenizer_load(&tok, tok_path);
    if (!st && exists(pre_path)) st = tm_preprocess_config_load(&pre, pre_path);
    else if (!st && !quiet)
        fprintf(stderr, "trimodal: note: %s has no preprocess.json; using the default "
                        "front-ends\n", model_dir);
    tm_model_info info = s ? tm_session_info(s) : (tm_model_info){0};
    if (!st && info.num_classes > 0 && tm_session_class_name(s, 0)) {
        names = calloc((size_t)info.num_classes, sizeof *names);
        if (!names) st = tm_fail(TM_ERR_NOMEM, "out of memory");
        for (int64_t c = 0; !st && c < info.num_classes; c++)
            names[c] = tm_session_class_name(s, (int32_t)c);
        o.class_names = names;
        o.n_class_names = (int)info.num_classes;
    }
    if (!st) st = tm_manifest_load(&man, data, NULL);
    if (!st) {
        int tty = isatty(fileno(stderr));
        if (!quiet) {
            o.progress = on_progress;
            o.progress_ctx = &tty;
        }
        st = tm_evaluate(&ev, tm_session_model(s), tok, &pre, man, &o);
    }
    if (!st && report) st = tm_evaluation_write_report(ev, report);
    if (st) {
        fprintf(stderr, "trimodal: eval: %s\n", tm_last_error());
    } else {
        if (json)
            printf("%s\n", tm_evaluation_json(ev));
        else
            fputs(tm_evaluation_text(ev), stdout);
        if (report && !quiet) fprintf(stderr, "report written to %s\n", report);
        rc = 0;
    }
    tm_evaluation_free(ev);
    tm_manifest_free(man);
    tm_tokenizer_free(tok);
    tm_session_free(s);
    free(names);
    free(tok_path);
    free(pre_path);
    return rc;
}
