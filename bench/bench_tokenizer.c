/* Tokenizer throughput: encodes English text (by default the GPL-3 from
 * /usr/share/common-licenses, repeated to --mb megabytes) with a vocabulary
 * trained on one copy of it, on one core, and decodes the ids back.
 * Prints one JSON object per line on stdout:
 *   {"bench":"tokenizer","op":"train"|"encode"|"encode_lines"|"decode", ...}
 * "encode" is one call on the whole text; "encode_lines" one call per line
 * (as a data loader encodes captions). MB are 10^6 bytes of input text;
 * each figure is the best of --reps runs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trimodal/text.h"

static char *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)len + 1);
    if (b && fread(b, 1, (size_t)len, f) != (size_t)len) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *n = (size_t)len;
    return b;
}

int main(int argc, char **argv)
{
    const char *path = "/usr/share/common-licenses/GPL-3";
    double mb = 20;
    int vocab = 8192, reps = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--file") && i + 1 < argc) path = argv[++i];
        else if (!strcmp(argv[i], "--mb") && i + 1 < argc) mb = atof(argv[++i]);
        else if (!strcmp(argv[i], "--vocab") && i + 1 < argc) vocab = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_tokenizer [--file F] [--mb 20] [--vocab 8192] [--reps 3]\n");
            return 2;
        }
    }
    size_t n1;
    char *one = read_file(path, &n1);
    if (!one || n1 == 0) {
        fprintf(stderr, "bench_tokenizer: cannot read %s\n", path);
        return 1;
    }
    size_t total = (size_t)(mb * 1e6);
    char *text = malloc(total + 1);
    for (size_t k = 0; k < total; k += n1) memcpy(text + k, one, k + n1 <= total ? n1 : total - k);
    text[total] = 0;

    tm_tokenizer_train_params tp = tm_tokenizer_train_default_params();
    tp.vocab_size = vocab;
    tm_tokenizer *tok = NULL;
    const char *texts[1] = {one};
    double t0 = tm_time_s();
    if (tm_tokenizer_train_memory(&tok, texts, &n1, 1, &tp) != TM_OK) {
        fprintf(stderr, "bench_tokenizer: train: %s\n", tm_last_error());
        return 1;
    }
    double train_s = tm_time_s() - t0;
    printf("{\"bench\":\"tokenizer\",\"op\":\"train\",\"text_bytes\":%zu,\"vocab\":%d,\"seconds\":%.3f}\n",
           n1, tm_tokenizer_vocab_size(tok), train_s);

    tm_tokenizer_encode_params ep = tm_tokenizer_encode_default_params();
    ep.max_text_bytes = total + 1;
    double best = 1e30;
    tm_text_encoding *e = NULL;
    for (int r = 0; r < reps; r++) {
        tm_text_encoding_free(e);
        e = NULL;
        t0 = tm_time_s();
        if (tm_tokenizer_encode(tok, text, total, &ep, &e) != TM_OK) {
            fprintf(stderr, "bench_tokenizer: encode: %s\n", tm_last_error());
            return 1;
        }
        double dt = tm_time_s() - t0;
        if (dt < best) best = dt;
    }
    printf("{\"bench\":\"tokenizer\",\"op\":\"encode\",\"mb\":%.1f,\"vocab\":%d,\"tokens\":%d,"
           "\"bytes_per_token\":%.2f,\"seconds\":%.3f,\"mb_per_s\":%.1f}\n",
           total / 1e6, tm_tokenizer_vocab_size(tok), e->length, (double)total / e->length, best,
           total / 1e6 / best);

    /* one call per line, as for captions */
    best = 1e30;
    long lines = 0;
    for (int r = 0; r < reps; r++) {
        lines = 0;
        t0 = tm_time_s();
        for (size_t i = 0; i < total;) {
            const char *nl = memchr(text + i, '\n', total - i);
            size_t len = nl ? (size_t)(nl - (text + i)) + 1 : total - i;
            tm_text_encoding *le = NULL;
            if (tm_tokenizer_encode(tok, text + i, len, NULL, &le) != TM_OK) return 1;
            tm_text_encoding_free(le);
            i += len;
            lines++;
        }
        double dt = tm_time_s() - t0;
        if (dt < best) best = dt;
    }
    printf("{\"bench\":\"tokenizer\",\"op\":\"encode_lines\",\"mb\":%.1f,\"lines\":%ld,\"seconds\":%.3f,"
           "\"mb_per_s\":%.1f}\n", total / 1e6, lines, best, total / 1e6 / best);

    best = 1e30;
    for (int r = 0; r < reps; r++) {
        char *out = NULL;
        size_t len = 0;
        t0 = tm_time_s();
        if (tm_tokenizer_decode(tok, e->ids, e->length, 0, &out, &len) != TM_OK) return 1;
        double dt = tm_time_s() - t0;
        if (dt < best) best = dt;
        if (len != total || memcmp(out, text, total)) {
            fprintf(stderr, "bench_tokenizer: decode(encode(text)) != text\n");
            return 1;
        }
        tm_free(out);
    }
    printf("{\"bench\":\"tokenizer\",\"op\":\"decode\",\"mb\":%.1f,\"seconds\":%.3f,\"mb_per_s\":%.1f}\n",
           total / 1e6, best, total / 1e6 / best);
    tm_text_encoding_free(e);
    tm_tokenizer_free(tok);
    free(text);
    free(one);
    return 0;
}
