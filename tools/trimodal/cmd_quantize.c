/* trimodal quantize: an int8 or bf16 copy of a model folder
 * (tm_model_quantize; docs/quantization.md). */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "trimodal/model.h"

static const char *help =
    "usage: trimodal quantize MODEL_DIR --to int8|bf16 -o DIR [--json]\n"
    "\n"
    "Writes a quantized copy of the model folder MODEL_DIR into DIR (created if\n"
    "needed; each file written atomically): model.safetensors with its large weights\n"
    "(2 or more dimensions, at least 1024 values: linear, conv and embedding\n"
    "weights) stored as\n"
    "  int8  per-channel symmetric int8 (one f32 scale per row, <name>.qscale):\n"
    "        about 4x smaller; inference graphs of the folder run their linears on\n"
    "        int8 kernels (AVX512-VNNI, AVX-VNNI or AVX2, else plain C)\n"
    "  bf16  bfloat16: 2x smaller; linears run on bf16 weights with f32 sums\n"
    "and biases, norms and small tensors kept f32. Every other file of MODEL_DIR\n"
    "(config.json, tokenizer.json, preprocess.json, ...) is copied. The folder\n"
    "loads wherever a model folder does (eval, embed, classify, caption, serve).\n"
    "Prints the sizes before and after; --json prints one line: {\"quantize\",\n"
    "\"output\",\"to\",\"bytes_before\",\"bytes_after\",\"ratio\",\"tensors_quantized\",\n"
    "\"tensors_kept\",\"max_abs_error\"}.\n"
    "Exit status: 0 done, 1 failure (unreadable or invalid model), 2 bad usage.\n";

int cmd_quantize(int argc, char **argv, int json)
{
    const char *src = NULL, *dst = NULL, *to = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(help, stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--to") || !strcmp(a, "-o") || !strcmp(a, "--output")) {
            if (i + 1 >= argc) return cli_usage("quantize: %s needs a value", a);
            if (!strcmp(a, "--to")) to = argv[++i];
            else dst = argv[++i];
        } else if (a[0] == '-' && a[1]) {
            return cli_usage("quantize: unknown option '%s'", a);
        } else if (!src) {
            src = a;
        } else {
            return cli_usage("quantize: one model folder only ('%s' is extra)", a);
        }
    }
    if (!src) return cli_usage("quantize: give the model folder: trimodal quantize MODEL_DIR "
                               "--to int8 -o DIR");
    if (!to) return cli_usage("quantize: give --to int8 or --to bf16");
    if (!dst) return cli_usage("quantize: give the output folder with -o DIR");
    tm_weights fmt;
    if (!strcmp(to, "int8") || !strcmp(to, "i8")) fmt = TM_WEIGHTS_I8;
    else if (!strcmp(to, "bf16")) fmt = TM_WEIGHTS_BF16;
    else return cli_usage("quantize: unknown --to '%s' (use int8 or bf16)", to);
    tm_quantize_report r;
    if (tm_model_quantize(src, dst, fmt, &r)) {
        fprintf(stderr, "trimodal quantize: %s\n", tm_last_error());
        return 1;
    }
    double ratio = r.bytes_after ? (double)r.bytes_before / (double)r.bytes_after : 0.0;
    if (json) {
        printf("{\"quantize\":");
        cli_json_string(stdout, src);
        printf(",\"output\":");
        cli_json_string(stdout, dst);
        printf(",\"to\":\"%s\",\"bytes_before\":%llu,\"bytes_after\":%llu,\"ratio\":%.3f,"
               "\"tensors_quantized\":%lld,\"tensors_kept\":%lld,\"max_abs_error\":%.6g}\n",
               fmt == TM_WEIGHTS_I8 ? "int8" : "bf16", (unsigned long long)r.bytes_before,
               (unsigned long long)r.bytes_after, ratio, (long long)r.tensors_quantized,
               (long long)r.tensors_kept, r.max_abs_error);
    } else {
        printf("quantized %s -> %s (%s): model.safetensors %.2f MB -> %.2f MB (%.2fx smaller); "
               "%lld tensors quantized, %lld kept f32; largest weight error %.3g\n",
               src, dst, fmt == TM_WEIGHTS_I8 ? "int8" : "bf16", (double)r.bytes_before / 1e6,
               (double)r.bytes_after / 1e6, ratio, (long long)r.tensors_quantized,
               (long long)r.tensors_kept, r.max_abs_error);
    }
    return 0;
}
