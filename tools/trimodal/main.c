/* The trimodal command: a thin layer over the public C API.
 * Output for people on stdout, progress and errors on stderr; --json gives
 * one JSON object per line. Exit 0 on success, 1 on bad input or failure,
 * 2 on bad usage. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "trimodal/trimodal.h"

static const char *usage_text =
    "usage: trimodal <command> [options]\n"
    "\n"
    "commands:\n"
    "  info              this machine as trimodal sees it: version, SIMD level, threads\n"
    "  tokenizer         train a byte-level BPE vocabulary, encode and decode text\n"
    "                    (train, encode, decode, info)\n"
    "  init              a model folder with fresh weights from a config (--config C -o DIR)\n"
    "  bench             time a model: bench infer|train --config C --batch B --threads T\n"
    "  inspect PATH      a model folder or config (architecture, parameters, memory), or the\n"
    "                    tensors of a .safetensors file: names, dtypes,\n"
    "                    shapes, parameter count, metadata\n"
    "  preprocess        what a model sees of an image, a sound and a text: numbers,\n"
    "                    pictures and the tensors (--image, --audio, --text, --out DIR)\n"
    "  data              datasets: check MANIFEST (validate, statistics), build fashion-tri\n"
    "  train             train a model from a run config (stages, losses, checkpoints)\n"
    "  eval              metrics of a model on a dataset, ablations, HTML report\n"
    "  embed             embeddings of a text, an image and/or a sound (--text, --image, --audio)\n"
    "  classify          a model's class for a text, an image and/or a sound\n"
    "  caption           a caption (or transcript) from a model's caption head\n"
    "  search            build an index of a manifest's embeddings; query it with any modality\n"
    "  serve             an HTTP server for embed, classify, caption and search\n"
  "  quantize          a smaller, faster copy of a model: int8 or bf16 weights\n"
  "  prune             magnitude pruning of a model (unstructured or whole heads)\n"
  "  encrypt, decrypt  files and model folders encrypted at rest (libsodium; key file or env)\n"
    "\n"
    "options for every command:\n"
    "  --json            one JSON object per line instead of a table\n"
    "  -h, --help        this help, or a command's help\n"
    "  --version         the version\n"
    "  --limits L        change memory limits, L = NAME=VALUE[,NAME=VALUE...] (for example\n"
    "                    tokenizer_file_bytes=1m); names and defaults in docs/limits.md\n"
    "\n"
    "environment:\n"
    "  TRIMODAL_THREADS  threads for parallel kernels (default: all online CPUs)\n"
    "  TRIMODAL_ISA      force a lower SIMD level: scalar, avx2 or avx512\n"
    "  TRIMODAL_LIMITS   memory limits, as --limits (which wins over it)\n"
    "\n"
    "Run 'trimodal <command> --help' for a command's options; README.md and docs/ for more.\n";

int cli_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "trimodal: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nRun 'trimodal --help' for usage.\n");
    va_end(ap);
    return 2;
}

void cli_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

int cmd_info(int argc, char **argv, int json)
{
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: trimodal info [--json]\n\nPrints the version, the SIMD level the "
                   "kernels use, BF16 support and the thread count.\n");
            return 0;
        }
        return cli_usage("info: unknown option '%s'", argv[i]);
    }
    const char *isa = tm_isa_name(tm_cpu_isa());
    int threads = tm_get_num_threads();
    int bf16 = tm_cpu_has_avx512bf16();
    if (json)
        printf("{\"version\":\"%s\",\"isa\":\"%s\",\"avx512bf16\":%s,\"threads\":%d}\n",
               tm_version(), isa, bf16 ? "true" : "false", threads);
    else
        printf("trimodal %s\nkernels: %s%s\nthreads: %d\n", tm_version(), isa,
               bf16 ? " (+ AVX512-BF16)" : "", threads);
    return 0;
}

int cmd_inspect(int argc, char **argv, int json)
{
    const char *path = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: trimodal inspect PATH [--json]\n\n"
                   "PATH is a .safetensors file, or a model folder holding model.safetensors.\n"
                   "Lists every tensor (name, dtype, shape, elements), the total parameter\n"
                   "count and size, and the file's metadata.\n");
            return 0;
        }
        if (argv[i][0] == '-') return cli_usage("inspect: unknown option '%s'", argv[i]);
        if (path) return cli_usage("inspect: more than one path ('%s')", argv[i]);
        path = argv[i];
    }
    if (!path) return cli_usage("inspect: %s", "give a .safetensors file or a model folder");
    char buf[4096];
    struct stat sb;
    size_t plen = strlen(path);
    /* a config file, or a model folder with config.json: the architecture */
    if (plen > 5 && !strcmp(path + plen - 5, ".json")) return cmd_inspect_model(path, json);
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        snprintf(buf, sizeof buf, "%s/config.json", path);
        if (stat(buf, &sb) == 0) return cmd_inspect_model(path, json);
        snprintf(buf, sizeof buf, "%s/model.safetensors", path);
        path = buf;
    }
    tm_safetensors *st;
    if (tm_safetensors_open(&st, path) != TM_OK) {
        fprintf(stderr, "trimodal: inspect: %s\n", tm_last_error());
        return 1;
    }
    int n = tm_safetensors_count(st);
    int64_t total = 0;
    size_t bytes = 0;
    if (!json) printf("%-48s %-5s %-24s %12s\n", "tensor", "dtype", "shape", "elements");
    for (int i = 0; i < n; i++) {
        tm_safetensors_entry e;
        if (tm_safetensors_info(st, i, &e) != TM_OK) continue;
        int64_t numel = 1;
        char shape[128];
        size_t k = (size_t)snprintf(shape, sizeof shape, "(");
        for (int d = 0; d < e.ndim; d++) {
            numel *= e.shape[d];
            if (k < sizeof shape)
                k += (size_t)snprintf(shape + k, sizeof shape - k, "%s%lld", d ? ", " : "",
                                      (long long)e.shape[d]);
        }
        if (k < sizeof shape) snprintf(shape + k, sizeof shape - k, ")");
        total += numel;
        bytes += e.nbytes;
        if (json) {
            printf("{\"tensor\":");
            cli_json_string(stdout, e.name);
            printf(",\"dtype\":\"%s\",\"shape\":[", e.dtype_name);
            for (int d = 0; d < e.ndim; d++) printf("%s%lld", d ? "," : "", (long long)e.shape[d]);
            printf("],\"elements\":%lld}\n", (long long)numel);
        } else {
            printf("%-48s %-5s %-24s %12lld\n", e.name, e.dtype_name, shape, (long long)numel);
        }
    }
    int nm = tm_safetensors_metadata_count(st);
    if (json) {
        printf("{\"file\":");
        cli_json_string(stdout, path);
        printf(",\"tensors\":%d,\"elements\":%lld,\"bytes\":%zu,\"metadata\":{", n,
               (long long)total, bytes);
        for (int i = 0; i < nm; i++) {
            const char *key = tm_safetensors_metadata_key(st, i);
            if (i) printf(",");
            cli_json_string(stdout, key);
            printf(":");
            cli_json_string(stdout, tm_safetensors_metadata(st, key));
        }
        printf("}}\n");
    } else {
        printf("\n%d tensors, %lld elements, %.2f MB of data\n", n, (long long)total, bytes / 1e6);
        for (int i = 0; i < nm; i++) {
            const char *key = tm_safetensors_metadata_key(st, i);
            printf("metadata %s = %s\n", key, tm_safetensors_metadata(st, key));
        }
    }
    tm_safetensors_close(st);
    return 0;
}

int main(int argc, char **argv)
{
    int json = 0;
    /* --json and --limits may appear anywhere; strip them */
    int k = 1;
    const char *limits[64];
    int n_limits = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (!strcmp(argv[i], "--limits") || !strncmp(argv[i], "--limits=", 9)) {
            const char *v = argv[i][8] == '=' ? argv[i] + 9 : (i + 1 < argc ? argv[++i] : NULL);
            if (!v) return cli_usage("--limits needs NAME=VALUE[,NAME=VALUE...]");
            if (n_limits == 64) return cli_usage("--limits given more than 64 times");
            limits[n_limits++] = v;
        } else
            argv[k++] = argv[i];
    }
    argc = k;
    /* limits: TRIMODAL_LIMITS first, then --limits over it (docs/limits.md) */
    if (tm_limits_init()) {
        fprintf(stderr, "trimodal: %s\n", tm_last_error());
        return 2;
    }
    for (int i = 0; i < n_limits; i++)
        if (tm_limits_parse(limits[i], "--limits")) {
            fprintf(stderr, "trimodal: %s\n", tm_last_error());
            return 2;
        }
    if (argc < 2) {
        fputs(usage_text, stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
        printf("trimodal %s\n", tm_version());
        return 0;
    }
    if (!strcmp(cmd, "info")) return cmd_info(argc - 2, argv + 2, json);
    if (!strcmp(cmd, "inspect")) return cmd_inspect(argc - 2, argv + 2, json);
    if (!strcmp(cmd, "tokenizer")) return cmd_tokenizer(argc - 2, argv + 2, json);
    if (!strcmp(cmd, "preprocess")) return cmd_preprocess(argc - 2, argv + 2, json);
    if (!strcmp(cmd, "init")) return cmd_init(argc - 2, argv + 2, json);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc - 2, argv + 2, json);
    if (!strcmp(cmd, "data")) return cmd_data(argc - 2, argv + 2, json);
    if (!strcmp(cmd, "train")) return cmd_train(argc - 2, argv + 2, json);
    if (!strcmp(cmd, "eval")) return cmd_eval(argc - 2, argv + 2, json);
    if (!strcmp(cmd, "embed")) return cmd_embed(argc - 2, argv + 2, json);
    if (!strcmp(cmd, "classify")) return cmd_classify(argc - 2, argv + 2, json);
    if (!strcmp(cmd, "caption")) return cmd_caption(argc - 2, argv + 2, json);
    if (!strcmp(cmd, "search")) return cmd_search(argc - 2, argv + 2, json);
    if (!strcmp(cmd, "serve")) return cmd_serve(argc - 2, argv + 2, json);
    if (!strcmp(cmd, "quantize")) return cmd_quantize(argc - 2, argv + 2, json);
    if (!strcmp(cmd, "prune")) return cmd_prune(argc - 2, argv + 2, json);
    if (!strcmp(cmd, "encrypt")) return cmd_encrypt(argc - 2, argv + 2, json);
    if (!strcmp(cmd, "decrypt")) return cmd_decrypt(argc - 2, argv + 2, json);
    return cli_usage("unknown command '%s'", cmd);
}
