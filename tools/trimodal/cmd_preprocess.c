/* trimodal preprocess: shows what a model sees of an image, a sound and a
 * text, as numbers, as pictures and as the tensors themselves. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "trimodal/trimodal.h"

static const char *help =
    "usage: trimodal preprocess [--image FILE] [--audio FILE] [--text TEXT] --out DIR\n"
    "                           [--config preprocess.json | --model DIR]\n"
    "                           [--tokenizer tokenizer.json] [--json]\n"
    "\n"
    "Runs the model's front-ends on the given inputs (any subset) and shows what the model\n"
    "sees: shapes and statistics on stdout, pictures in DIR (image.png: the image tensor;\n"
    "logmel.png: the log-mel spectrogram, low frequencies at the bottom), and the tensors in\n"
    "DIR/inputs.safetensors (text.ids and text.attention_mask i32, image.pixels and\n"
    "audio.logmel f32).\n"
    "\n"
    "  --config FILE     front-end settings (docs/preprocess.md); default: bench-small's\n"
    "  --model DIR       a model folder: its preprocess.json and tokenizer.json\n"
    "  --tokenizer FILE  tokenizer.json (HF BPE) for --text; or vocab.json with --merges\n"
    "  --merges FILE     merges.txt, with a vocab.json given to --tokenizer\n"
    "  --scale N         picture upscaling (default: 8 for images, 4 for log-mels)\n";

typedef struct {
    double min, max, mean, std;
} stats;

static stats stats_of(const float *x, int64_t n)
{
    stats s = {INFINITY, -INFINITY, 0, 0};
    double sum = 0, sq = 0;
    for (int64_t i = 0; i < n; i++) {
        if (x[i] < s.min) s.min = x[i];
        if (x[i] > s.max) s.max = x[i];
        sum += x[i];
        sq += (double)x[i] * x[i];
    }
    if (n) {
        s.mean = sum / n;
        s.std = sqrt(fmax(sq / n - s.mean * s.mean, 0));
    }
    return s;
}

static void print_tensor(int json, const char *name, const char *dtype, int ndim,
                         const int64_t *shape, const stats *st, const char *extra)
{
    if (json) {
        printf("{\"tensor\":\"%s\",\"dtype\":\"%s\",\"shape\":[", name, dtype);
        for (int i = 0; i < ndim; i++) printf("%s%lld", i ? "," : "", (long long)shape[i]);
        printf("]");
        if (st)
            printf(",\"min\":%.6g,\"max\":%.6g,\"mean\":%.6g,\"std\":%.6g", st->min, st->max,
                   st->mean, st->std);
        if (extra) printf(",%s", extra);
        printf("}\n");
        return;
    }
    char sh[96];
    size_t k = (size_t)snprintf(sh, sizeof sh, "(");
    for (int i = 0; i < ndim && k < sizeof sh; i++)
        k += (size_t)snprintf(sh + k, sizeof sh - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < sizeof sh) snprintf(sh + k, sizeof sh - k, ")");
    printf("%-20s %-4s %-16s", name, dtype, sh);
    if (st)
        printf(" min %9.4f  max %9.4f  mean %9.4f  std %9.4f", st->min, st->max, st->mean, st->std);
    printf("\n");
}

static int fail(const char *what)
{
    fprintf(stderr, "trimodal: preprocess: %s: %s\n", what, tm_last_error());
    return 1;
}

int cmd_preprocess(int argc, char **argv, int json)
{
    const char *image = NULL, *audio = NULL, *text = NULL, *out = NULL, *config = NULL;
    const char *model = NULL, *tokpath = NULL, *merges = NULL;
    int scale = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(help, stdout);
            return 0;
        }
        if (!strcmp(a, "--image")) dst = &image;
        else if (!strcmp(a, "--audio")) dst = &audio;
        else if (!strcmp(a, "--text")) dst = &text;
        else if (!strcmp(a, "--out") || !strcmp(a, "-o")) dst = &out;
        else if (!strcmp(a, "--config")) dst = &config;
        else if (!strcmp(a, "--model")) dst = &model;
        else if (!strcmp(a, "--tokenizer")) dst = &tokpath;
        else if (!strcmp(a, "--merges")) dst = &merges;
        else if (!strcmp(a, "--scale")) {
            if (i + 1 >= argc || (scale = atoi(argv[++i])) < 1 || scale > 64)
                return cli_usage("preprocess: --scale needs a number from 1 to 64");
            continue;
        } else {
            return cli_usage("preprocess: unknown option '%s'", a);
        }
        if (i + 1 >= argc) return cli_usage("preprocess: %s needs a value", a);
        *dst = argv[++i];
    }
    if (!out) return cli_usage("preprocess: give --out DIR");
    if (!image && !audio && !text)
        return cli_usage("preprocess: give at least one of --image, --audio, --text");
    if (config && model) return cli_usage("preprocess: give --config or --model, not both");

    char path[4096];
    tm_preprocess_config cfg = tm_preprocess_default_config();
    if (model) {
        snprintf(path, sizeof path, "%s/preprocess.json", model);
        config = path;
    }
    if (config && tm_preprocess_config_load(&cfg, config) != TM_OK) return fail("config");
    char tokbuf[4096];
    if (model && !tokpath) {
        snprintf(tokbuf, sizeof tokbuf, "%s/tokenizer.json", model);
        tokpath = tokbuf;
    }
    if (text && !tokpath)
        return cli_usage("preprocess: --text needs a tokenizer (--tokenizer FILE or --model DIR)");
    if (mkdir(out, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "trimodal: preprocess: cannot create %s: %s\n", out, strerror(errno));
        return 1;
    }

    int rc = 1;
    tm_tokenizer *tok = NULL;
    tm_text_encoding *enc = NULL;
    tm_image *img = NULL;
    tm_audio *snd = NULL;
    float *pixels = NULL;
    tm_tensor *mel = NULL, *t_ids = NULL, *t_mask = NULL, *t_pix = NULL;
    tm_named_tensor named[4];
    int nn = 0;

    if (text) {
        tm_status s = merges ? tm_tokenizer_load_vocab_merges(&tok, tokpath, merges, TM_BPE_AUTO)
                             : tm_tokenizer_load(&tok, tokpath);
        if (s) {
            fail("tokenizer");
            goto done;
        }
        if (tm_tokenizer_encode(tok, text, strlen(text), &cfg.text, &enc) != TM_OK) {
            fail("text");
            goto done;
        }
        int64_t shape[1] = {enc->length};
        if (tm_tensor_wrap(&t_ids, enc->ids, TM_I32, 1, shape) ||
            tm_tensor_wrap(&t_mask, enc->attention_mask, TM_I32, 1, shape)) {
            fail("text");
            goto done;
        }
        named[nn++] = (tm_named_tensor){"text.ids", t_ids};
        named[nn++] = (tm_named_tensor){"text.attention_mask", t_mask};
        char extra[160];
        snprintf(extra, sizeof extra, "\"tokens\":%d,\"truncated\":%d", enc->n_tokens,
                 enc->n_truncated);
        print_tensor(json, "text.ids", "i32", 1, shape, NULL, json ? extra : NULL);
        if (!json) {
            printf("  %d tokens (%d cut by max_length):", enc->n_tokens, enc->n_truncated);
            for (int i = 0; i < enc->length && i < 64; i++) {
                if (!enc->attention_mask[i]) continue;
                const char *t = tm_tokenizer_token(tok, enc->ids[i]);
                printf(" %d:%s", enc->ids[i], t ? t : "?");
            }
            printf("\n");
        }
    }
    if (image) {
        if (tm_image_load(&img, image, tm_image_decode_default_params()) != TM_OK) {
            fail("image");
            goto done;
        }
        int ndim;
        int64_t shape[3];
        if (tm_image_preprocess_shape(&ndim, shape, cfg.image) != TM_OK) {
            fail("image settings");
            goto done;
        }
        int64_t n = shape[0] * shape[1] * (ndim == 3 ? shape[2] : 1);
        pixels = malloc((size_t)n * sizeof *pixels);
        if (!pixels || tm_image_preprocess(pixels, (size_t)n, img, cfg.image) != TM_OK) {
            fail("image");
            goto done;
        }
        if (tm_tensor_wrap(&t_pix, pixels, TM_F32, ndim, shape) != TM_OK) {
            fail("image");
            goto done;
        }
        named[nn++] = (tm_named_tensor){"image.pixels", t_pix};
        stats st = stats_of(pixels, n);
        print_tensor(json, "image.pixels", "f32", ndim, shape, &st, NULL);
        if (!json)
            printf("  from %s: %dx%d, %d channel(s)\n", image, img->width, img->height,
                   img->file_channels);
        /* the picture of the tensor before patchifying */
        if (cfg.image.patch == 0) {
            snprintf(path, sizeof path, "%s/image.png", out);
            if (tm_image_write_png(path, pixels, (int)shape[0], (int)shape[1], (int)shape[2],
                                   TM_PNG_SCALE_MINMAX, scale ? scale : 8) != TM_OK) {
                fail("image.png");
                goto done;
            }
        } else {
            tm_image_params unpatched = cfg.image;
            unpatched.patch = 0;
            int64_t s3[3];
            tm_image_preprocess_shape(&ndim, s3, unpatched);
            float *flat = malloc((size_t)(s3[0] * s3[1] * s3[2]) * sizeof *flat);
            tm_status s = flat ? tm_image_preprocess(flat, (size_t)(s3[0] * s3[1] * s3[2]), img,
                                                     unpatched)
                               : TM_ERR_NOMEM;
            snprintf(path, sizeof path, "%s/image.png", out);
            if (!s)
                s = tm_image_write_png(path, flat, (int)s3[0], (int)s3[1], (int)s3[2],
                                       TM_PNG_SCALE_MINMAX, scale ? scale : 8);
            free(flat);
            if (s) {
                fail("image.png");
                goto done;
            }
        }
        if (!json) printf("  picture: %s\n", path);
    }
    if (audio) {
        tm_audio_load_params lp = tm_audio_load_default_params();
        lp.sample_rate = 0; /* tm_audio_preprocess resamples with the config's resampler */
        if (tm_audio_load_file(&snd, audio, lp) != TM_OK) {
            fail("audio");
            goto done;
        }
        if (tm_audio_preprocess(&mel, snd, cfg.audio) != TM_OK) {
            fail("audio");
            goto done;
        }
        named[nn++] = (tm_named_tensor){"audio.logmel", mel};
        stats st = stats_of(mel->data, tm_tensor_numel(mel));
        print_tensor(json, "audio.logmel", "f32", 2, mel->shape, &st, NULL);
        if (!json)
            printf("  from %s: %.3f s at %d Hz, %d channel(s)\n", audio,
                   (double)snd->source_frames / snd->source_rate, snd->source_rate,
                   snd->source_channels);
        snprintf(path, sizeof path, "%s/logmel.png", out);
        if (tm_logmel_write_png(path, mel->data, (int)mel->shape[0], mel->shape[1],
                                scale ? scale : 4) != TM_OK) {
            fail("logmel.png");
            goto done;
        }
        if (!json) printf("  picture: %s\n", path);
    }
    snprintf(path, sizeof path, "%s/inputs.safetensors", out);
    if (tm_safetensors_write(path, named, nn, NULL, NULL, 0) != TM_OK) {
        fail("inputs.safetensors");
        goto done;
    }
    if (json) printf("{\"written\":\"%s\"}\n", path);
    else printf("tensors: %s\n", path);
    rc = 0;
done:
    tm_tensor_free(t_ids);
    tm_tensor_free(t_mask);
    tm_tensor_free(t_pix);
    tm_tensor_free(mel);
    free(pixels);
    tm_text_encoding_free(enc);
    tm_tokenizer_free(tok);
    tm_image_free(img);
    tm_audio_free(snd);
    return rc;
}
