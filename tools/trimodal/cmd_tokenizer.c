/* trimodal tokenizer: train, encode, decode, info. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "trimodal/io.h"
#include "trimodal/text.h"

static const char *usage_text =
    "usage: trimodal tokenizer <train|encode|decode|info> [options]\n"
    "\n"
    "  train   learn a byte-level BPE vocabulary from text files, write tokenizer.json\n"
    "  encode  text to token ids (and attention mask)\n"
    "  decode  token ids to text\n"
    "  info    vocabulary size, merges, special tokens of a tokenizer\n"
    "\n"
    "Run 'trimodal tokenizer <subcommand> --help' for its options. docs/tokenizer.md\n"
    "describes the algorithm and the file formats.\n";

static const char *train_help =
    "usage: trimodal tokenizer train [options] -o tokenizer.json FILE...\n"
    "\n"
    "Trains a byte-level BPE vocabulary (GPT-2 pre-tokenisation) on the text files and\n"
    "writes it as a Hugging Face tokenizer.json. Progress goes to stderr.\n"
    "\n"
    "  -o, --output FILE     where to write tokenizer.json (required)\n"
    "  --vocab N             vocabulary size, specials and 256 bytes included (default 8192)\n"
    "  --min-frequency N     never merge a pair seen fewer times (default 2)\n"
    "  --special ROLE=TOKEN  the token of a role (pad, bos, eos, cls, mask, unk); defaults\n"
    "                        <pad> <s> </s> <cls> <mask> <unk>; ROLE= drops the role\n"
    "  --no-specials         no special tokens at all\n"
    "  --json                print the summary as one JSON object\n";

static const char *load_help =
    "  --tokenizer PATH      tokenizer.json, or a folder holding tokenizer.json or\n"
    "                        vocab.json + merges.txt (required)\n"
    "  --merges FILE         with --tokenizer vocab.json: the GPT-2/CLIP merges.txt\n"
    "  --style S             auto, gpt2 or clip, for vocab.json + merges.txt (default auto)\n";

static const char *encode_help_tail =
    "  --text STRING         the text (else --file, else standard input)\n"
    "  --file FILE           read the text from FILE ('-' for standard input); an encrypted\n"
    "                        file (trimodal encrypt) is decrypted in memory with the key of\n"
    "                        TRIMODAL_KEY_FILE or TRIMODAL_KEY; at most 4 GiB\n"
    "  --lines               encode each line separately (without its newline)\n"
    "  --bos, --eos          add the bos / eos token\n"
    "  --max-length N        truncate to N ids (bos and eos kept)\n"
    "  --pad                 pad to --max-length with the pad token\n"
    "  --parse-special       special-token strings in the text become those tokens\n"
    "  --tokens              also print each token as written in the vocabulary\n"
    "  --json                one JSON object per text: ids, attention_mask, counts\n";

static const char *decode_help_tail =
    "  --skip-special        leave special tokens out\n"
    "  --json                one JSON object: the text (invalid UTF-8 shown as U+FFFD)\n"
    "\n"
    "The ids come from the arguments, else from standard input (separated by spaces,\n"
    "commas, brackets or newlines).\n";

typedef struct {
    const char *path, *merges, *style;
} load_opts;

/* Consumes a loading option at argv[*i]; 1 if it was one, -1 on a missing value. */
static int load_opt(load_opts *o, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    const char **dst = !strcmp(a, "--tokenizer") ? &o->path
                       : !strcmp(a, "--merges")  ? &o->merges
                       : !strcmp(a, "--style")   ? &o->style
                                                 : NULL;
    if (!dst) return 0;
    if (*i + 1 >= argc) return -1;
    *dst = argv[++*i];
    return 1;
}

static int load(const load_opts *o, const char *cmd, tm_tokenizer **tok)
{
    tm_bpe_style style = TM_BPE_AUTO;
    if (o->style) {
        if (!strcmp(o->style, "gpt2")) style = TM_BPE_GPT2;
        else if (!strcmp(o->style, "clip")) style = TM_BPE_CLIP;
        else if (strcmp(o->style, "auto")) return cli_usage("tokenizer %s: --style is auto, gpt2 or clip", cmd);
    }
    if (!o->path) return cli_usage("tokenizer %s: --tokenizer PATH is required", cmd);
    tm_status s = o->merges ? tm_tokenizer_load_vocab_merges(tok, o->path, o->merges, style)
                            : tm_tokenizer_load(tok, o->path);
    if (s != TM_OK) {
        fprintf(stderr, "trimodal: tokenizer %s: %s\n", cmd, tm_last_error());
        return 1;
    }
    return 0;
}

static int is_help(const char *a) { return !strcmp(a, "-h") || !strcmp(a, "--help"); }

static int parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

/* JSON string of n bytes: valid UTF-8 as is, invalid bytes as U+FFFD. */
static void json_bytes(FILE *f, const char *s, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80) {
            if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
            else if (c < 0x20 || c == 0x7F) fprintf(f, "\\u%04x", c);
            else fputc(c, f);
            i++;
            continue;
        }
        int len = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        int ok = len && i + (size_t)len <= n;
        for (int k = 1; ok && k < len; k++) ok = ((unsigned char)s[i + k] & 0xC0) == 0x80;
        if (ok && len == 3) {
            unsigned char d = (unsigned char)s[i + 1];
            ok = !(c == 0xE0 && d < 0xA0) && !(c == 0xED && d > 0x9F);
        }
        if (ok && len == 4) {
            unsigned char d = (unsigned char)s[i + 1];
            ok = !(c == 0xF0 && d < 0x90) && !(c == 0xF4 && d > 0x8F);
        }
        if (ok) {
            fwrite(s + i, 1, (size_t)len, f);
            i += (size_t)len;
        } else {
            fputs("\\ufffd", f);
            i++;
        }
    }
    fputc('"', f);
}

/* ------------------------------------------------------------ train */

typedef struct {
    double last;
} progress_state;

static void on_progress(void *ctx, const char *stage, int64_t done, int64_t total)
{
    progress_state *p = ctx;
    double now = tm_time_s();
    if (now - p->last < 0.5 && done < total) return;
    p->last = now;
    if (!strcmp(stage, "count"))
        fprintf(stderr, "trimodal: tokenizer train: counted %.2f of %.2f MB\n", done / 1e6, total / 1e6);
    else
        fprintf(stderr, "trimodal: tokenizer train: %lld of at most %lld merges\n", (long long)done,
                (long long)total);
}

static int tok_cmd_train(int argc, char **argv, int json)
{
    tm_tokenizer_train_params p = tm_tokenizer_train_default_params();
    const char *out = NULL;
    const char **files = calloc((size_t)argc + 1, sizeof *files);
    int nfiles = 0, rc = 0;
    for (int i = 0; i < argc && !rc; i++) {
        const char *a = argv[i];
        long v;
        if (is_help(a)) {
            printf("%s", train_help);
            free(files);
            return 0;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            if (i + 1 >= argc) rc = cli_usage("tokenizer train: %s needs a file", a);
            else out = argv[++i];
        } else if (!strcmp(a, "--vocab")) {
            if (i + 1 >= argc || parse_int(argv[++i], 1, TM_TOKENIZER_MAX_VOCAB, &v))
                rc = cli_usage("tokenizer train: --vocab needs a size in 1..%d", TM_TOKENIZER_MAX_VOCAB);
            else p.vocab_size = (int32_t)v;
        } else if (!strcmp(a, "--min-frequency")) {
            if (i + 1 >= argc || parse_int(argv[++i], 0, 1L << 30, &v))
                rc = cli_usage("tokenizer train: --min-frequency needs a count");
            else p.min_frequency = v;
        } else if (!strcmp(a, "--no-specials")) {
            for (int r = 0; r < TM_SPECIAL_COUNT; r++) p.special_tokens[r] = NULL;
        } else if (!strcmp(a, "--special")) {
            const char *spec = i + 1 < argc ? argv[++i] : "";
            const char *eq = strchr(spec, '=');
            int role = -1;
            for (int r = 0; eq && r < TM_SPECIAL_COUNT; r++) {
                const char *name = tm_special_role_name((tm_special_role)r);
                if (strlen(name) == (size_t)(eq - spec) && !strncmp(spec, name, strlen(name))) role = r;
            }
            if (role < 0) rc = cli_usage("tokenizer train: --special needs ROLE=TOKEN (pad, bos, eos, cls, mask, unk)");
            else p.special_tokens[role] = eq[1] ? eq + 1 : NULL;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (a[0] == '-' && a[1]) {
            rc = cli_usage("tokenizer train: unknown option '%s'", a);
        } else {
            files[nfiles++] = a;
        }
    }
    if (!rc && !out) rc = cli_usage("tokenizer train: -o tokenizer.json is required");
    if (!rc && !nfiles) rc = cli_usage("tokenizer train: give one or more text files");
    if (rc) {
        free(files);
        return rc;
    }
    progress_state ps = {0};
    p.progress = on_progress;
    p.progress_ctx = &ps;
    tm_tokenizer *tok = NULL;
    double t0 = tm_time_s();
    if (tm_tokenizer_train_files(&tok, files, nfiles, &p) != TM_OK ||
        tm_tokenizer_save(tok, out) != TM_OK) {
        fprintf(stderr, "trimodal: tokenizer train: %s\n", tm_last_error());
        tm_tokenizer_free(tok);
        free(files);
        return 1;
    }
    double dt = tm_time_s() - t0;
    if (json) {
        printf("{\"output\":");
        cli_json_string(stdout, out);
        printf(",\"vocab\":%d,\"merges\":%d,\"files\":%d,\"seconds\":%.3f}\n", tm_tokenizer_vocab_size(tok),
               tm_tokenizer_merge_count(tok), nfiles, dt);
    } else {
        printf("wrote %s: %d tokens (%d merges) from %d file%s in %.2f s\n", out,
               tm_tokenizer_vocab_size(tok), tm_tokenizer_merge_count(tok), nfiles, nfiles == 1 ? "" : "s", dt);
        if (tm_tokenizer_vocab_size(tok) < p.vocab_size)
            printf("(fewer than the %d asked: no pair left seen %lld times or more)\n", p.vocab_size,
                   (long long)p.min_frequency);
    }
    tm_tokenizer_free(tok);
    free(files);
    return 0;
}

/* ------------------------------------------------------------ encode */

static char *read_stream(FILE *f, size_t *n)
{
    size_t cap = 1 << 16, len = 0;
    char *b = malloc(cap);
    while (b) {
        if (len == cap) {
            char *nb = realloc(b, cap * 2);
            if (!nb) {
                free(b);
                return NULL;
            }
            b = nb;
            cap *= 2;
        }
        size_t got = fread(b + len, 1, cap - len, f);
        len += got;
        if (!got) break;
    }
    *n = len;
    return b;
}

static void print_encoding(const tm_tokenizer *tok, const tm_text_encoding *e, int json, int tokens)
{
    if (json) {
        printf("{\"ids\":[");
        for (int i = 0; i < e->length; i++) printf("%s%d", i ? "," : "", e->ids[i]);
        printf("],\"attention_mask\":[");
        for (int i = 0; i < e->length; i++) printf("%s%d", i ? "," : "", e->attention_mask[i]);
        printf("],\"length\":%d,\"n_tokens\":%d,\"n_truncated\":%d", e->length, e->n_tokens, e->n_truncated);
        if (tokens) {
            printf(",\"tokens\":[");
            for (int i = 0; i < e->length; i++) {
                if (i) printf(",");
                const char *t = tm_tokenizer_token(tok, e->ids[i]);
                cli_json_string(stdout, t ? t : "");
            }
            printf("]");
        }
        printf("}\n");
        return;
    }
    for (int i = 0; i < e->length; i++) printf("%s%d", i ? " " : "", e->ids[i]);
    printf("\n");
    if (e->n_tokens != e->length) {
        printf("mask:");
        for (int i = 0; i < e->length; i++) printf(" %d", e->attention_mask[i]);
        printf("\n");
    }
    if (tokens) {
        printf("tokens:");
        for (int i = 0; i < e->length; i++) {
            const char *t = tm_tokenizer_token(tok, e->ids[i]);
            printf(" %s", t ? t : "?");
        }
        printf("\n");
    }
}

static int cmd_encode(int argc, char **argv, int json)
{
    load_opts lo = {0};
    tm_tokenizer_encode_params p = tm_tokenizer_encode_default_params();
    const char *text = NULL, *file = NULL;
    int lines = 0, tokens = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        long v;
        int k = load_opt(&lo, argc, argv, &i);
        if (k < 0) return cli_usage("tokenizer encode: %s needs a value", a);
        if (k) continue;
        if (is_help(a)) {
            printf("usage: trimodal tokenizer encode --tokenizer PATH [options]\n\n%s%s", load_help,
                   encode_help_tail);
            return 0;
        } else if (!strcmp(a, "--text") || !strcmp(a, "--file")) {
            if (i + 1 >= argc) return cli_usage("tokenizer encode: %s needs a value", a);
            if (text || file) return cli_usage("tokenizer encode: give one of --text and --file");
            *(a[2] == 't' ? &text : &file) = argv[++i];
        } else if (!strcmp(a, "--max-length")) {
            if (i + 1 >= argc || parse_int(argv[++i], 1, 1L << 30, &v))
                return cli_usage("tokenizer encode: --max-length needs a positive number");
            p.max_length = (int32_t)v;
        } else if (!strcmp(a, "--lines")) lines = 1;
        else if (!strcmp(a, "--bos")) p.add_bos = 1;
        else if (!strcmp(a, "--eos")) p.add_eos = 1;
        else if (!strcmp(a, "--pad")) p.pad_to_max_length = 1;
        else if (!strcmp(a, "--parse-special")) p.parse_special = 1;
        else if (!strcmp(a, "--tokens")) tokens = 1;
        else if (!strcmp(a, "--json")) json = 1;
        else return cli_usage("tokenizer encode: unknown option '%s'", a);
    }
    if (p.pad_to_max_length && !p.max_length) return cli_usage("tokenizer encode: --pad needs --max-length");
    tm_tokenizer *tok = NULL;
    int rc = load(&lo, "encode", &tok);
    if (rc) return rc;
    char *buf = NULL, *file_buf = NULL; /* file_buf: tm_read_file's, tm_free() it */
    size_t n = 0;
    if (text) {
        n = strlen(text);
    } else if (file && strcmp(file, "-")) {
        /* through tm_read_file, so that encrypted files are decrypted */
        if (tm_read_file(file, (size_t)4 << 30, &file_buf, &n) != TM_OK) {
            fprintf(stderr, "trimodal: tokenizer encode: %s\n", tm_last_error());
            tm_tokenizer_free(tok);
            return 1;
        }
        text = file_buf;
    } else {
        buf = read_stream(stdin, &n);
        if (!buf) {
            fprintf(stderr, "trimodal: tokenizer encode: out of memory reading the text\n");
            tm_tokenizer_free(tok);
            return 1;
        }
        text = buf;
    }
    size_t start = 0;
    do {
        size_t len = n - start;
        if (lines) {
            const char *nl = memchr(text + start, '\n', n - start);
            if (nl) len = (size_t)(nl - (text + start));
        }
        if (lines && start == n) break;
        tm_text_encoding *e = NULL;
        if (tm_tokenizer_encode(tok, text + start, len, &p, &e) != TM_OK) {
            fprintf(stderr, "trimodal: tokenizer encode: %s\n", tm_last_error());
            rc = 1;
            break;
        }
        print_encoding(tok, e, json, tokens);
        tm_text_encoding_free(e);
        start += len + (lines ? 1 : 0);
    } while (lines && start < n);
    free(buf);
    tm_free(file_buf);
    tm_tokenizer_free(tok);
    return rc;
}

/* ------------------------------------------------------------ decode */

static int cmd_decode(int argc, char **argv, int json)
{
    load_opts lo = {0};
    int skip = 0, rc = 0;
    size_t nids = 0, cap = 64;
    int32_t *ids = malloc(cap * sizeof *ids);
    char *buf = NULL;
    for (int i = 0; i < argc && !rc; i++) {
        const char *a = argv[i];
        long v;
        int k = load_opt(&lo, argc, argv, &i);
        if (k < 0) rc = cli_usage("tokenizer decode: %s needs a value", a);
        else if (k) continue;
        else if (is_help(a)) {
            printf("usage: trimodal tokenizer decode --tokenizer PATH [options] [ID...]\n\n%s%s", load_help,
                   decode_help_tail);
            free(ids);
            return 0;
        } else if (!strcmp(a, "--skip-special")) skip = 1;
        else if (!strcmp(a, "--json")) json = 1;
        else if (parse_int(a, 0, INT32_MAX, &v) == 0) {
            if (nids == cap) ids = realloc(ids, (cap *= 2) * sizeof *ids);
            ids[nids++] = (int32_t)v;
        } else rc = cli_usage("tokenizer decode: '%s' is neither an option nor an id", a);
    }
    if (rc) {
        free(ids);
        return rc;
    }
    if (!nids) { /* ids from standard input */
        size_t n;
        buf = read_stream(stdin, &n);
        for (size_t i = 0; buf && i < n;) {
            while (i < n && strchr(" \t\r\n,[]", buf[i])) i++;
            if (i >= n) break;
            char *end;
            errno = 0;
            long v = strtol(buf + i, &end, 10);
            if (end == buf + i || errno || v < 0 || v > INT32_MAX || (end < buf + n && !strchr(" \t\r\n,[]", *end))) {
                fprintf(stderr, "trimodal: tokenizer decode: standard input holds something other than ids near byte %zu\n", i);
                free(buf);
                free(ids);
                return 1;
            }
            if (nids == cap) ids = realloc(ids, (cap *= 2) * sizeof *ids);
            ids[nids++] = (int32_t)v;
            i = (size_t)(end - buf);
        }
        free(buf);
    }
    tm_tokenizer *tok = NULL;
    if ((rc = load(&lo, "decode", &tok))) {
        free(ids);
        return rc;
    }
    char *out = NULL;
    size_t len = 0;
    if (tm_tokenizer_decode(tok, ids, (int64_t)nids, skip, &out, &len) != TM_OK) {
        fprintf(stderr, "trimodal: tokenizer decode: %s\n", tm_last_error());
        rc = 1;
    } else if (json) {
        printf("{\"text\":");
        json_bytes(stdout, out, len);
        printf(",\"bytes\":%zu,\"ids\":%zu}\n", len, nids);
    } else {
        fwrite(out, 1, len, stdout);
        printf("\n");
    }
    tm_free(out);
    free(ids);
    tm_tokenizer_free(tok);
    return rc;
}

/* ------------------------------------------------------------ info */

static int cmd_tok_info(int argc, char **argv, int json)
{
    load_opts lo = {0};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int k = load_opt(&lo, argc, argv, &i);
        if (k < 0) return cli_usage("tokenizer info: %s needs a value", a);
        if (k) continue;
        if (is_help(a)) {
            printf("usage: trimodal tokenizer info --tokenizer PATH [--json]\n\n%s", load_help);
            return 0;
        }
        if (!strcmp(a, "--json")) json = 1;
        else return cli_usage("tokenizer info: unknown option '%s'", a);
    }
    tm_tokenizer *tok = NULL;
    int rc = load(&lo, "info", &tok);
    if (rc) return rc;
    const char *style = tm_tokenizer_style(tok) == TM_BPE_CLIP ? "clip" : "gpt2";
    if (json) {
        printf("{\"vocab\":%d,\"merges\":%d,\"style\":\"%s\",\"special_tokens\":{", tm_tokenizer_vocab_size(tok),
               tm_tokenizer_merge_count(tok), style);
        for (int r = 0; r < TM_SPECIAL_COUNT; r++) {
            int32_t id = tm_tokenizer_special_id(tok, (tm_special_role)r);
            printf("%s\"%s\":", r ? "," : "", tm_special_role_name((tm_special_role)r));
            if (id < 0) {
                printf("null");
            } else {
                printf("{\"id\":%d,\"token\":", id);
                cli_json_string(stdout, tm_tokenizer_token(tok, id));
                printf("}");
            }
        }
        printf("}}\n");
    } else {
        printf("vocabulary: %d tokens, %d merges, %s style\n", tm_tokenizer_vocab_size(tok),
               tm_tokenizer_merge_count(tok), style);
        for (int r = 0; r < TM_SPECIAL_COUNT; r++) {
            int32_t id = tm_tokenizer_special_id(tok, (tm_special_role)r);
            if (id >= 0) printf("%-5s %6d  %s\n", tm_special_role_name((tm_special_role)r), id, tm_tokenizer_token(tok, id));
            else printf("%-5s      -\n", tm_special_role_name((tm_special_role)r));
        }
    }
    tm_tokenizer_free(tok);
    return 0;
}

int cmd_tokenizer(int argc, char **argv, int json)
{
    if (argc < 1) return cli_usage("tokenizer: give a subcommand: train, encode, decode or info");
    const char *sub = argv[0];
    if (is_help(sub)) {
        printf("%s", usage_text);
        return 0;
    }
    if (!strcmp(sub, "train")) return tok_cmd_train(argc - 1, argv + 1, json);
    if (!strcmp(sub, "encode")) return cmd_encode(argc - 1, argv + 1, json);
    if (!strcmp(sub, "decode")) return cmd_decode(argc - 1, argv + 1, json);
    if (!strcmp(sub, "info")) return cmd_tok_info(argc - 1, argv + 1, json);
    return cli_usage("tokenizer: unknown subcommand '%s' (train, encode, decode, info)", sub);
}
