/* trimodal prune: magnitude pruning of a model folder into a new folder
 * (tm_model_prune; docs/serving.md, "Pruning"). The weights keep their
 * shapes (zeros, not smaller matrices), so the pruned folder loads, serves
 * and quantizes like the original; tokenizer.json, preprocess.json,
 * labels.json and dataset.json are copied beside it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "trimodal/io.h"
#include "trimodal/model.h"

static const char *help =
    "usage: trimodal prune MODEL_DIR --sparsity S [--structured heads] -o DIR [--json]\n"
    "\n"
    "Magnitude pruning: zero the smallest weights of a model and write the result\n"
    "as a new model folder (same shapes, same files; the original is untouched).\n"
    "\n"
    "  MODEL_DIR             the model folder (config.json, model.safetensors)\n"
    "  --sparsity S          the fraction to remove, in [0, 1): 0.5 zeroes half of\n"
    "                        each linear weight (or half of each attention's heads)\n"
    "  --structured heads    remove whole attention heads (the ones with the smallest\n"
    "                        L2 norm of their q, k, v rows and output columns, at\n"
    "                        most all but one per layer) instead of single weights\n"
    "  -o, --out DIR         the new model folder (created; files written atomically)\n"
    "  --json                one JSON object with the counts\n"
    "\n"
    "Unstructured pruning touches every linear weight (2-D \"*.weight\": attention,\n"
    "MLP, projections, heads); embeddings, convolutions and norms are kept. Measure\n"
    "the effect with `trimodal eval --model DIR ...`. See docs/serving.md.\n";

static const char *const extra_files[] = {"tokenizer.json", "preprocess.json", "labels.json",
                                          "dataset.json"};

/* Copies dir/name to out/name when it exists. */
static tm_status copy_file(const char *dir, const char *out, const char *name)
{
    char src[4096], dst[4096];
    snprintf(src, sizeof src, "%s/%s", dir, name);
    snprintf(dst, sizeof dst, "%s/%s", out, name);
    FILE *f = fopen(src, "rb");
    if (!f) return TM_OK;
    fclose(f);
    char *data = NULL;
    size_t len = 0;
    tm_status st = tm_read_file(src, (size_t)1 << 30, &data, &len);
    if (!st) st = tm_write_file_atomic(dst, data, len);
    tm_free(data);
    return st;
}

int cmd_prune(int argc, char **argv, int json)
{
    const char *dir = NULL, *out = NULL, *structured = NULL;
    double sparsity = -1;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(help, stdout);
            return 0;
        }
        if (!strcmp(a, "--json")) {
            json = 1;
            continue;
        }
        if (a[0] != '-') {
            if (dir) return cli_usage("prune: one model folder only (got '%s' and '%s')", dir, a);
            dir = a;
            continue;
        }
        if (i + 1 >= argc) return cli_usage("prune: %s needs a value", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--sparsity")) {
            char *end;
            sparsity = strtod(v, &end);
            if (!*v || *end || !(sparsity >= 0 && sparsity < 1))
                return cli_usage("prune: --sparsity needs a fraction in [0, 1), got '%s'", v);
        } else if (!strcmp(a, "--structured")) {
            if (strcmp(v, "heads"))
                return cli_usage("prune: --structured takes 'heads' (got '%s')", v);
            structured = v;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--out")) {
            out = v;
        } else {
            return cli_usage("prune: unknown option '%s'", a);
        }
    }
    if (!dir) return cli_usage("prune: give the model folder");
    if (sparsity < 0) return cli_usage("prune: give --sparsity S");
    if (!out) return cli_usage("prune: give -o DIR for the pruned model");
    if (!strcmp(out, dir)) return cli_usage("prune: -o must differ from the model folder");

    tm_model *m = NULL;
    tm_status st = tm_model_load(&m, dir);
    tm_prune_params p = tm_prune_default_params();
    p.sparsity = sparsity;
    p.mode = structured ? TM_PRUNE_HEADS : TM_PRUNE_UNSTRUCTURED;
    tm_prune_report r;
    memset(&r, 0, sizeof r);
    if (!st) st = tm_model_prune(m, &p, &r);
    if (!st) st = tm_model_save(m, out);
    for (size_t k = 0; !st && k < sizeof extra_files / sizeof *extra_files; k++)
        st = copy_file(dir, out, extra_files[k]);
    tm_model_free(m);
    if (st) {
        fprintf(stderr, "trimodal prune: %s\n", tm_last_error());
        return 1;
    }
    double frac = r.weights_total ? (double)r.weights_zero / (double)r.weights_total : 0;
    if (json) {
        printf("{\"prune\":\"%s\",\"sparsity\":%g,\"linear_tensors\":%lld,"
               "\"linear_weights\":%lld,\"zero_weights\":%lld,\"zero_fraction\":%.6f",
               structured ? "heads" : "unstructured", sparsity, (long long)r.tensors,
               (long long)r.weights_total, (long long)r.weights_zero, frac);
        if (structured)
            printf(",\"attentions\":%lld,\"heads\":%lld,\"heads_pruned\":%lld",
                   (long long)r.attentions, (long long)r.heads_total, (long long)r.heads_pruned);
        printf(",\"out\":");
        cli_json_string(stdout, out);
        printf("}\n");
    } else {
        if (structured)
            printf("pruned %lld of %lld attention heads in %lld layers\n",
                   (long long)r.heads_pruned, (long long)r.heads_total, (long long)r.attentions);
        printf("%lld of %lld linear weights (%lld tensors) are zero (%.1f%%); wrote %s\n",
               (long long)r.weights_zero, (long long)r.weights_total, (long long)r.tensors,
               100.0 * frac, out);
    }
    return 0;
}
