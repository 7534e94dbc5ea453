/* data: the FashionTri builder (src/data/fashiontri*.c).
 *
 * Units first, each against an independent reference: the terms file and
 * its checker, gzip decoding against the gzip program, the noise colours
 * against their theoretical spectral slopes (a direct DFT), pitch and
 * tempo against the frequency and length of a sine they must produce.
 * Then a small build (264 examples) with the Debian text-to-speech engines:
 * determinism (a second build at another thread count is byte-identical;
 * another seed differs; the plan of an example does not depend on the
 * limits), speaker-disjoint splits, the hint probabilities, every file
 * referenced exists and decodes (images against the IDX bytes read through
 * the gzip program), dataset.json, the up-to-date no-op, a resume and the
 * refusal of another recipe. Without the engines or Fashion-MNIST the build
 * part is skipped with a notice (scripts/deps.sh installs them). */
#define _GNU_SOURCE
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "data/fashiontri_internal.h"
#include "testutil.h"
#include "trimodal/audio.h"
#include "trimodal/datasets.h"
#include "trimodal/io.h"
#include "trimodal/vision.h"

#define FMNIST "/usr/share/datasets/fashion-mnist"

static char tmp_root[256];

static char *read_all(const char *path, size_t *n)
{
    char *d = NULL;
    size_t len = 0;
    if (tm_read_file(path, (size_t)64 << 20, &d, &len) != TM_OK) return NULL;
    if (n) *n = len;
    return d;
}

/* -------------------------------------------------------------- terms */

static void test_terms(void)
{
    ft_terms t;
    CHECK_OK(ft_terms_load(&t, "configs/fashion-tri/terms.json"));
    CHECK(t.n_templates >= 3);
    const char *groups[] = {"footwear/shoe", "top/shirt/upper-body garment", "garment/clothing",
                            "woman's clothing", "outer garment"};
    /* the groups, exactly */
    const unsigned want[] = {1u << 5 | 1u << 7 | 1u << 9, 1u << 0 | 1u << 2 | 1u << 4 | 1u << 6,
                             0x7f, 1u << 0 | 1u << 3, 1u << 2 | 1u << 4};
    for (int k = 0; k < 5; k++) {
        int found = 0;
        for (int g = 0; g < t.n_groups; g++)
            if (!strcmp(t.groups[g].name, groups[k])) {
                found = 1;
                CHECK(t.groups[g].classes == want[k]);
            }
        CHECK(found);
    }
    for (int c = 0; c < FT_CLASSES; c++)
        CHECK(t.n_specific[c] >= 3);
    /* the example terms for the sneaker */
    const char *sneaker[] = {"sneakers", "tennis shoes", "gym shoes", "running shoes"};
    for (int k = 0; k < 4; k++) {
        int found = 0;
        for (int i = 0; i < t.n_specific[7]; i++)
            found |= !strcmp(t.specific[7][i].text, sneaker[k]);
        CHECK(found);
    }
    /* a specific term of one class is never a specific term of another */
    for (int c = 0; c < FT_CLASSES; c++)
        for (int i = 0; i < t.n_specific[c]; i++)
            for (int d = c + 1; d < FT_CLASSES; d++)
                for (int j = 0; j < t.n_specific[d]; j++)
                    CHECK(strcmp(t.specific[c][i].text, t.specific[d][j].text) != 0);
    char s[256];
    ft_term sneakers = {"sneakers", "sneakers", FT_PLURAL};
    ft_term coat = {"coat", "a coat", FT_SINGULAR};
    CHECK_OK(ft_sentence(s, sizeof s, &t, 0, &sneakers));
    CHECK(!strcmp(s, "Sneakers."));
    CHECK_OK(ft_sentence(s, sizeof s, &t, 2, &sneakers));
    CHECK(!strcmp(s, "These are sneakers."));
    CHECK_OK(ft_sentence(s, sizeof s, &t, 2, &coat));
    CHECK(!strcmp(s, "This is a coat."));
    CHECK_STATUS(ft_sentence(s, 8, &t, 2, &coat), TM_ERR_LIMIT);
    ft_terms_free(&t);

    /* the checker: each of these is refused with TM_ERR_INVALID */
    char *good = read_all("configs/fashion-tri/terms.json", NULL);
    CHECK(good != NULL);
    if (!good) return;
    struct {
        const char *from, *to;
    } bad[] = {
        {"\"text\": \"sneakers\"", "\"text\": \"-sneakers\""}, /* reads as an option */
        {"\"np\": \"a coat\"", "\"np\": \"a \\\"coat\\\"\""},  /* a quote */
        {"\"number\": \"singular\"", "\"number\": \"dual\""},
        {"\"classes\": [2, 4]", "\"classes\": [4]"}, /* one class: not ambiguous */
        {"\"classes\": [2, 4]", "\"classes\": [2, 11]"},
        {"{\"class\": 3,", "{\"class\": 4,"},
        {"\"This is {np}.\"", "\"This is {np} {np}.\""},
        {"\"classes\": [5, 7, 8, 9]", "\"classes\": [5, 7, 9]"}, /* the bag in no group */
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        const char *at = strstr(good, bad[k].from);
        CHECK(at != NULL);
        if (!at) continue;
        size_t n = strlen(good), fl = strlen(bad[k].from), tl = strlen(bad[k].to);
        char *m = malloc(n + tl + 1);
        memcpy(m, good, (size_t)(at - good));
        memcpy(m + (at - good), bad[k].to, tl);
        strcpy(m + (at - good) + tl, at + fl);
        tm_status st = ft_terms_parse(&t, m, strlen(m), "terms");
        CHECK(st == TM_ERR_INVALID);
        if (st != TM_ERR_INVALID) fprintf(stderr, "  case %zu: %s\n", k, tm_last_error());
        free(m);
    }
    CHECK_STATUS(ft_terms_parse(&t, "{\"classes\": [", 13, "terms"), TM_ERR_FORMAT);
    tm_free(good);
}

/* --------------------------------------------------------------- gzip */

static uint8_t *popen_read(const char *cmd, size_t max, size_t *n)
{
    FILE *p = popen(cmd, "r");
    if (!p) return NULL;
    uint8_t *b = malloc(max);
    *n = fread(b, 1, max, p);
    pclose(p);
    return b;
}

static void test_gunzip(void)
{
    const char *gz = FMNIST "/t10k-labels-idx1-ubyte.gz";
    size_t n = 0, want_n = 0, out_n = 0;
    char *data = read_all(gz, &n);
    if (!data) {
        printf("SKIP gzip test: %s missing (apt-get install -y dataset-fashion-mnist)\n", gz);
        return;
    }
    uint8_t *want = popen_read("gzip -dc " FMNIST "/t10k-labels-idx1-ubyte.gz", 1 << 20, &want_n);
    uint8_t *out = NULL;
    CHECK_OK(ft_gunzip(&out, &out_n, (const uint8_t *)data, n, 1 << 20, "labels"));
    CHECK(want_n == 10008 && out_n == want_n && out && !memcmp(out, want, want_n));
    tm_free(out);
    /* the limit, a flipped bit, a cut file */
    CHECK_STATUS(ft_gunzip(&out, &out_n, (const uint8_t *)data, n, 1000, "labels"), TM_ERR_LIMIT);
    data[n / 2] ^= 0x10;
    CHECK_STATUS(ft_gunzip(&out, &out_n, (const uint8_t *)data, n, 1 << 20, "labels"),
                 TM_ERR_FORMAT);
    data[n / 2] ^= 0x10;
    CHECK_STATUS(ft_gunzip(&out, &out_n, (const uint8_t *)data, 12, 1 << 20, "labels"),
                 TM_ERR_FORMAT);
    CHECK(out == NULL);
    /* not gzip: copied as it is */
    CHECK_OK(ft_gunzip(&out, &out_n, (const uint8_t *)"\0\0\x08\x01", 4, 16, "raw"));
    CHECK(out_n == 4 && out && out[3] == 1);
    tm_free(out);
    free(want);
    tm_free(data);
}

/* -------------------------------------------------------------- noise */

/* Mean power density over DFT bins [k0, k1) of Hann-windowed segments of
 * 1024 samples, by a direct DFT (independent of the library's FFT). */
static double band_psd(const float *x, int64_t n, int k0, int k1)
{
    const int L = 1024;
    double sum = 0;
    int segs = 0;
    for (int64_t s = 0; s + L <= n; s += L, segs++)
        for (int k = k0; k < k1; k++) {
            double re = 0, im = 0;
            for (int j = 0; j < L; j++) {
                double w = 0.5 - 0.5 * cos(2 * M_PI * j / L);
                double a = 2 * M_PI * (double)k * j / L;
                re += w * x[s + j] * cos(a);
                im -= w * x[s + j] * sin(a);
            }
            sum += re * re + im * im;
        }
    return sum / (segs * (k1 - k0));
}

static void test_noise(void)
{
    const int64_t n = 16 * 1024;
    float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n);
    /* PSD from 250-500 Hz over 2-4 kHz: 3 octaves apart, so 0, 9 and 18 dB
     * for white, pink (-3 dB per octave) and brown (-6 dB per octave) */
    const double want[FT_NOISE_COUNT] = {0.0, 9.03, 18.06};
    for (int k = 0; k < FT_NOISE_COUNT; k++) {
        CHECK_OK(ft_make_noise(x, n, (ft_noise)k, 7, 100 + k));
        double e = 0;
        for (int64_t i = 0; i < n; i++)
            e += (double)x[i] * x[i];
        CHECK_NEAR(e / n, 1.0, 1e-3, 0); /* unit power */
        double lo = band_psd(x, n, 16, 32), hi = band_psd(x, n, 128, 256);
        double db = 10 * log10(lo / hi);
        CHECK_NEAR(db, want[k], 1.5, 0);
        if (fabs(db - want[k]) > 1.5)
            fprintf(stderr, "  %s noise: %.2f dB\n", ft_noise_name(k), db);
        CHECK_OK(ft_make_noise(y, n, (ft_noise)k, 7, 100 + k));
        CHECK(!memcmp(x, y, sizeof(float) * n)); /* a pure function of (seed, stream) */
    }
    CHECK_OK(ft_make_noise(y, n, FT_NOISE_PINK, 7, 999));
    CHECK(memcmp(x, y, sizeof(float) * n) != 0);
    CHECK_STATUS(ft_make_noise(x, 0, FT_NOISE_WHITE, 1, 1), TM_ERR_INVALID);
    free(x);
    free(y);
}

/* ------------------------------------------------------- pitch, tempo */

/* Frequency of the strongest component of x between 100 and 400 Hz: a
 * direct DFT on a 1 Hz grid, then 0.05 Hz steps around the best. */
static double dft_power(const float *x, int64_t n, double f)
{
    double re = 0, im = 0;
    for (int64_t i = 0; i < n; i++) {
        double a = 2 * M_PI * f * (double)i / FT_SAMPLE_RATE;
        re += x[i] * cos(a);
        im += x[i] * sin(a);
    }
    return re * re + im * im;
}

static double peak_hz(const float *x, int64_t n)
{
    double best = 0, best_f = 0;
    for (double f = 100; f <= 400; f += 1.0) {
        double p = dft_power(x, n, f);
        if (p > best) best = p, best_f = f;
    }
    double center = best_f;
    for (double f = center - 1; f <= center + 1; f += 0.05) {
        double p = dft_power(x, n, f);
        if (p > best) best = p, best_f = f;
    }
    return best_f;
}

static void test_clip(void)
{
    char src[300], dst[300];
    snprintf(src, sizeof src, "%s/sine.flac", tmp_root);
    snprintf(dst, sizeof dst, "%s/clip.flac", tmp_root);
    const int64_t n = FT_SAMPLE_RATE; /* 1 s of 220 Hz */
    float *x = malloc(sizeof(float) * n);
    for (int64_t i = 0; i < n; i++)
        x[i] = 0.5f * (float)sin(2 * M_PI * 220.0 * i / FT_SAMPLE_RATE);
    CHECK_OK(ft_write_flac(src, x, n, 1, NULL));
    CHECK_STATUS(ft_write_flac(src, x, n, 3, NULL), TM_ERR_INVALID);
    struct {
        float cents, tempo;
    } cases[] = {{300, 1.25f}, {-300, 0.8f}, {0, 1.0f}};
    for (int c = 0; c < 3; c++) {
        ft_clip_params p = {cases[c].cents, cases[c].tempo, FT_NOISE_WHITE, 60.0f, 1, 1};
        double secs = 0;
        int64_t bytes = 0;
        int step = 0;
        CHECK_OK(ft_make_clip(src, dst, p, &secs, &bytes, &step));
        tm_audio *a = NULL;
        CHECK_OK(tm_audio_load_file(&a, dst, tm_audio_load_default_params()));
        if (!a) continue;
        CHECK(step == 1);
        CHECK_NEAR((double)a->n_samples, n / cases[c].tempo, 2, 0); /* the tempo */
        CHECK_NEAR(secs, (double)a->n_samples / FT_SAMPLE_RATE, 1e-9, 0);
        /* the pitch, away from the edges */
        double f = peak_hz(a->samples + 1000, a->n_samples - 2000);
        CHECK_NEAR(f, 220.0 * pow(2.0, cases[c].cents / 1200.0), 1.0, 0);
        /* the level: -26 dBFS RMS (the noise is 60 dB under it) */
        double e = 0;
        for (int64_t i = 0; i < a->n_samples; i++)
            e += (double)a->samples[i] * a->samples[i];
        CHECK_NEAR(10 * log10(e / a->n_samples), FT_SPEECH_DBFS, 0.1, 0);
        tm_audio_free(a);
    }
    /* noise at 0 dB SNR doubles the power (+3 dB), and the PCM step follows
     * the noise: 30 dB under noise at -26 dBFS is 128 units of 2^-15 */
    ft_clip_params p = {0, 1, FT_NOISE_PINK, 0.0f, 3, 4};
    int step = 0;
    CHECK_OK(ft_make_clip(src, dst, p, NULL, NULL, &step));
    CHECK(step == 128 && step == ft_clip_step(0.0));
    tm_audio *a = NULL;
    tm_audio_load_params lp = tm_audio_load_default_params();
    CHECK_OK(tm_audio_load_file(&a, dst, lp));
    if (a) {
        double e = 0;
        int multiples = 1;
        for (int64_t i = 0; i < a->n_samples; i++) {
            e += (double)a->samples[i] * a->samples[i];
            double v = a->samples[i] * 32768.0;
            multiples &= fabs(v / 128 - round(v / 128)) < 1e-6;
        }
        CHECK_NEAR(10 * log10(e / a->n_samples), FT_SPEECH_DBFS + 3.01, 0.1, 0);
        CHECK(multiples);
        tm_audio_free(a);
    }
    CHECK(ft_pcm_step(1.0, 30.0) == 2048 && ft_pcm_step(1e-9, 30) == 1);
    CHECK(ft_clip_step(20.0) == 16 && ft_clip_step(-5.0) == 256);
    free(x);
}

/* -------------------------------------------------------------- build */

static cJSON **load_manifest(const char *dir, int *n)
{
    char p[512];
    snprintf(p, sizeof p, "%s/manifest.jsonl", dir);
    char *d = read_all(p, NULL);
    *n = 0;
    if (!d) return NULL;
    int cap = 1;
    for (char *c = d; *c; c++)
        cap += *c == '\n';
    cJSON **rows = calloc((size_t)cap, sizeof *rows);
    for (char *line = strtok(d, "\n"); line; line = strtok(NULL, "\n"))
        rows[(*n)++] = cJSON_Parse(line);
    tm_free(d);
    return rows;
}

static void free_manifest(cJSON **rows, int n)
{
    for (int i = 0; i < n; i++)
        cJSON_Delete(rows[i]);
    free(rows);
}

static const char *str(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

/* The same bytes in both folders? */
static int same_file(const char *a, const char *b, const char *rel)
{
    char pa[512], pb[512];
    snprintf(pa, sizeof pa, "%s/%s", a, rel);
    snprintf(pb, sizeof pb, "%s/%s", b, rel);
    size_t na = 0, nb = 0;
    char *da = read_all(pa, &na), *db = read_all(pb, &nb);
    int same = da && db && na == nb && !memcmp(da, db, na);
    tm_free(da);
    tm_free(db);
    return same;
}

static int term_fits(const ft_terms *t, int label, const char *kind, const char *term)
{
    if (!strcmp(kind, "specific")) {
        for (int i = 0; i < t->n_specific[label]; i++)
            if (!strcmp(t->specific[label][i].text, term)) return 1;
        return 0;
    }
    for (int g = 0; g < t->n_groups; g++) {
        if (!((t->groups[g].classes >> label) & 1)) continue;
        for (int i = 0; i < t->groups[g].n_terms; i++)
            if (!strcmp(t->groups[g].terms[i].text, term)) return 1;
    }
    return 0;
}

#define LIMIT_TRAIN 200
#define LIMIT_TEST 64

static void check_dataset(const char *dir, cJSON **rows, int n)
{
    ft_terms t;
    CHECK_OK(ft_terms_load(&t, "configs/fashion-tri/terms.json"));
    size_t img_n = 0;
    uint8_t *idx = popen_read("gzip -dc " FMNIST "/train-images-idx3-ubyte.gz",
                              16 + 784 * LIMIT_TRAIN, &img_n);
    CHECK(img_n == 16 + 784 * LIMIT_TRAIN);
    int missing_text = 0, missing_audio = 0, spec_text = 0, spec_audio = 0, degraded = 0;
    int splits[3] = {0}, class_train[10] = {0}, class_val[10] = {0}, noises[3] = {0};
    const char *test_voices[64], *train_voices[64];
    int n_test_v = 0, n_train_v = 0;
    for (int i = 0; i < n; i++) {
        const cJSON *r = rows[i];
        const char *id = str(r, "id"), *split = str(r, "split"), *image = str(r, "image");
        int label = (int)num(r, "label");
        CHECK(id && split && image && label >= 0 && label < 10);
        if (!id || !split || !image || label < 0 || label > 9) continue;
        int sp = !strcmp(split, "train") ? 0 : !strcmp(split, "val") ? 1 : 2;
        splits[sp]++;
        if (sp == 0) class_train[label]++;
        if (sp == 1) class_val[label]++;
        CHECK(!strcmp(str(r, "class"), t.class_names[label]));
        CHECK((sp == 2) == (strncmp(id, "test-", 5) == 0));
        /* the image decodes, and matches the IDX bytes where undegraded */
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, image);
        tm_image_decode_params dp = tm_image_decode_default_params();
        dp.channels = 1;
        tm_image *im = NULL;
        CHECK_OK(tm_image_load(&im, p, dp));
        const char *deg = str(r, "image_degradation");
        CHECK(deg != NULL);
        if (im && deg) {
            CHECK(im->width == 28 && im->height == 28 && im->channels == 1);
            int src = atoi(id + 6);
            if (sp != 2 && src < LIMIT_TRAIN && img_n == 16 + 784 * LIMIT_TRAIN) {
                const uint8_t *orig = idx + 16 + 784 * src;
                if (!strcmp(deg, "none")) CHECK(!memcmp(im->data, orig, 784));
                if (!strcmp(deg, "erase")) {
                    const cJSON *box = cJSON_GetObjectItemCaseSensitive(r, "image_erase_box_xywh");
                    int bx = cJSON_GetArrayItem(box, 0)->valueint,
                        by = cJSON_GetArrayItem(box, 1)->valueint;
                    int bw = cJSON_GetArrayItem(box, 2)->valueint,
                        bh = cJSON_GetArrayItem(box, 3)->valueint;
                    CHECK(bw * bh >= 0.25 * 784 && bw * bh <= 0.56 * 784);
                    int inside_zero = 1, outside_same = 1;
                    for (int y = 0; y < 28; y++)
                        for (int x = 0; x < 28; x++) {
                            int in = x >= bx && x < bx + bw && y >= by && y < by + bh;
                            if (in)
                                inside_zero &= im->data[y * 28 + x] == 0;
                            else
                                outside_same &= im->data[y * 28 + x] == orig[y * 28 + x];
                        }
                    CHECK(inside_zero && outside_same);
                }
                if (!strcmp(deg, "noise")) {
                    double sd = num(r, "image_noise_std");
                    CHECK(sd >= 0.1 && sd <= 0.3);
                    CHECK(memcmp(im->data, orig, 784) != 0);
                }
            }
            degraded += strcmp(deg, "none") != 0;
        }
        tm_image_free(im);
        /* written hint */
        const char *text = str(r, "text");
        if (!text) {
            missing_text++;
            CHECK(!str(r, "text_term_kind"));
        } else {
            const char *kind = str(r, "text_term_kind"), *term = str(r, "text_term");
            CHECK(kind && term && strcasestr(text, term) && term_fits(&t, label, kind, term));
            if (kind) spec_text += !strcmp(kind, "specific");
        }
        /* spoken hint */
        const char *audio = str(r, "audio");
        if (!audio) {
            missing_audio++;
            CHECK(!str(r, "voice") && !str(r, "transcript"));
            continue;
        }
        const char *kind = str(r, "audio_term_kind"), *term = str(r, "audio_term");
        const char *tr = str(r, "transcript"), *voice = str(r, "voice"), *noise = str(r, "noise");
        CHECK(kind && term && tr && voice && noise && strcasestr(tr, term) &&
              term_fits(&t, label, kind, term));
        if (!kind || !voice || !noise) continue;
        spec_audio += !strcmp(kind, "specific");
        double cents = num(r, "pitch_cents"), tempo = num(r, "tempo"), snr = num(r, "snr_db");
        CHECK(fabs(cents) <= 300 && tempo >= 0.8 && tempo <= 1.25 && snr >= -5 && snr <= 20);
        noises[!strcmp(noise, "white") ? 0 : !strcmp(noise, "pink") ? 1 : 2]++;
        const char **list = sp == 2 ? test_voices : train_voices;
        int *nl = sp == 2 ? &n_test_v : &n_train_v, seen = 0;
        for (int k = 0; k < *nl; k++)
            seen |= !strcmp(list[k], voice);
        if (!seen && *nl < 64) list[(*nl)++] = voice;
        /* the clip decodes at 16 kHz and lasts what the manifest says */
        snprintf(p, sizeof p, "%s/%s", dir, audio);
        tm_audio *a = NULL;
        CHECK_OK(tm_audio_load_file(&a, p, tm_audio_load_default_params()));
        if (a) {
            CHECK(a->source_rate == 16000 && a->source_channels == 1);
            CHECK_NEAR(a->n_samples / 16000.0, num(r, "audio_seconds"), 0.0006, 0);
            CHECK(a->n_samples > 0.3 * 16000 && a->n_samples < 6 * 16000);
        }
        tm_audio_free(a);
    }
    CHECK(splits[0] + splits[1] == LIMIT_TRAIN && splits[2] == LIMIT_TEST);
    for (int c = 0; c < 10; c++) /* val: round(n_c / 12) per class */
        CHECK(class_val[c] == (int)lround((class_train[c] + class_val[c]) / 12.0));
    /* speaker-disjoint: no test voice speaks in train or val */
    CHECK(n_test_v >= 4 && n_train_v >= 8);
    for (int i = 0; i < n_test_v; i++)
        for (int j = 0; j < n_train_v; j++)
            CHECK(strcmp(test_voices[i], train_voices[j]) != 0);
    /* the probabilities (264 examples: about 3 standard deviations) */
    int present_text = n - missing_text, present_audio = n - missing_audio;
    CHECK_NEAR(missing_text / (double)n, 0.2, 0.08, 0);
    CHECK_NEAR(missing_audio / (double)n, 0.2, 0.08, 0);
    CHECK_NEAR(spec_text / (double)present_text, 0.4, 0.1, 0);
    CHECK_NEAR(spec_audio / (double)present_audio, 0.4, 0.1, 0);
    CHECK_NEAR(degraded / (double)n, 0.3, 0.09, 0);
    for (int k = 0; k < 3; k++)
        CHECK(noises[k] > present_audio / 5);
    printf("build: %d examples, text missing %.3f, audio missing %.3f, text specific %.3f, "
           "audio specific %.3f, degraded %.3f, %d train voices, %d test voices\n",
           n, missing_text / (double)n, missing_audio / (double)n, spec_text / (double)present_text,
           spec_audio / (double)present_audio, degraded / (double)n, n_train_v, n_test_v);

    /* dataset.json */
    char p[512];
    snprintf(p, sizeof p, "%s/dataset.json", dir);
    char *d = read_all(p, NULL);
    cJSON *ds = d ? cJSON_Parse(d) : NULL;
    tm_free(d);
    CHECK(ds != NULL);
    if (ds) {
        CHECK(!strcmp(str(ds, "name"), "fashion-tri"));
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(ds, "classes")) == 10);
        const cJSON *spl = cJSON_GetObjectItem(ds, "splits");
        CHECK(num(spl, "train") == splits[0] && num(spl, "val") == splits[1] &&
              num(spl, "test") == splits[2]);
        const cJSON *rec = cJSON_GetObjectItem(ds, "recipe");
        CHECK(num(rec, "seed") == 1 && num(rec, "limit_train") == LIMIT_TRAIN);
        CHECK(num(cJSON_GetObjectItem(rec, "text"), "p_missing") == 0.2);
        CHECK(num(cJSON_GetObjectItem(rec, "audio"), "p_specific") == 0.4);
        const cJSON *vo = cJSON_GetObjectItem(rec, "voices");
        const cJSON *tv = cJSON_GetObjectItem(vo, "test"),
                    *rv = cJSON_GetObjectItem(vo, "train_and_val");
        CHECK(cJSON_GetArraySize(tv) >= 4 && cJSON_GetArraySize(rv) >= 8);
        /* the recipe's speakers are disjoint too, and every voice used is listed */
        const cJSON *a, *b;
        cJSON_ArrayForEach(a, tv) cJSON_ArrayForEach(b, rv)
            CHECK(strcmp(str(a, "speaker"), str(b, "speaker")) != 0);
        for (int i = 0; i < n_test_v; i++) {
            int listed = 0;
            cJSON_ArrayForEach(a, tv) listed |= !strcmp(str(a, "voice"), test_voices[i]);
            CHECK(listed);
        }
        const cJSON *pk = cJSON_GetObjectItem(ds, "packages");
        CHECK(str(pk, "espeak-ng") && str(pk, "flite") && str(pk, "festival") &&
              str(pk, "dataset-fashion-mnist"));
        if (system("dpkg-query -W espeak-ng >/dev/null 2>&1") == 0)
            CHECK(strcmp(str(pk, "espeak-ng"), "unknown") != 0);
        const cJSON *all = cJSON_GetObjectItem(cJSON_GetObjectItem(ds, "counts"), "all");
        CHECK(num(all, "examples") == n && num(all, "text") == present_text &&
              num(all, "audio") == present_audio);
        CHECK(!strncmp(str(ds, "created_by"), "trimodal ", 9));
        CHECK(str(ds, "recipe_hash") && strlen(str(ds, "recipe_hash")) == 16);
        cJSON_Delete(ds);
    }
    free(idx);
    ft_terms_free(&t);
}

static void test_build(void)
{
    tm_fashiontri_params p = tm_fashiontri_default_params();
    tm_status chk = tm_fashiontri_check(&p);
    if (chk != TM_OK) {
        printf("SKIP the FashionTri build test: %s\n", tm_last_error());
        return;
    }
    char a[300], b[300], c[300], d[300], cache[300];
    snprintf(a, sizeof a, "%s/a", tmp_root);
    snprintf(b, sizeof b, "%s/b", tmp_root);
    snprintf(c, sizeof c, "%s/c", tmp_root);
    snprintf(d, sizeof d, "%s/d", tmp_root);
    snprintf(cache, sizeof cache, "%s/a/.tts-cache", tmp_root);
    int threads = tm_get_num_threads();

    p.out_dir = a;
    p.limit_train = LIMIT_TRAIN;
    p.limit_test = LIMIT_TEST;
    tm_fashiontri_summary s;
    double t0 = tm_time_s();
    CHECK_OK(tm_fashiontri_build(&p, &s));
    printf("build a: %.1f s, %lld utterances rendered, %.1f s of audio, %lld bytes of media\n",
           tm_time_s() - t0, (long long)s.rendered, s.audio_seconds, (long long)s.media_bytes);
    CHECK(!s.up_to_date && s.n_train + s.n_val == LIMIT_TRAIN && s.n_test == LIMIT_TEST);
    CHECK(s.rendered == s.utterances && s.utterances <= s.clips && s.clips > 0);
    int n = 0;
    cJSON **rows = load_manifest(a, &n);
    CHECK(n == LIMIT_TRAIN + LIMIT_TEST);
    if (rows) check_dataset(a, rows, n);

    /* the same again: a quick no-op */
    t0 = tm_time_s();
    tm_fashiontri_summary s2;
    CHECK_OK(tm_fashiontri_build(&p, &s2));
    CHECK(s2.up_to_date && s2.recipe_hash == s.recipe_hash);
    CHECK(tm_time_s() - t0 < 5.0);

    /* the same recipe at another thread count, from the cache: byte-identical */
    tm_set_num_threads(threads == 1 ? 2 : 1);
    p.out_dir = b;
    p.cache_dir = cache;
    CHECK_OK(tm_fashiontri_build(&p, &s2));
    tm_set_num_threads(threads);
    CHECK(s2.rendered == 0 && s2.recipe_hash == s.recipe_hash && s2.media_bytes == s.media_bytes);
    CHECK(same_file(a, b, "manifest.jsonl"));
    int compared = 0, differ = 0;
    for (int i = 0; i < n; i++) {
        const char *im = str(rows[i], "image"), *au = str(rows[i], "audio");
        if (im) compared++, differ += !same_file(a, b, im);
        if (au) compared++, differ += !same_file(a, b, au);
    }
    CHECK(compared > n && differ == 0);

    /* a resume: media lost, dataset.json kept */
    const char *lost_audio = NULL;
    for (int i = n - 1; i >= 0 && !lost_audio; i--)
        lost_audio = str(rows[i], "audio");
    char p1[512], p2[512];
    snprintf(p1, sizeof p1, "%s/%s", b, str(rows[3], "image"));
    snprintf(p2, sizeof p2, "%s/%s", b, lost_audio ? lost_audio : "none");
    CHECK(unlink(p1) == 0 && unlink(p2) == 0);
    CHECK_OK(tm_fashiontri_build(&p, &s2));
    CHECK(!s2.up_to_date && s2.resumed && s2.rendered == 0);
    CHECK(same_file(a, b, str(rows[3], "image")) && lost_audio && same_file(a, b, lost_audio));
    CHECK(same_file(a, b, "manifest.jsonl"));

    /* another recipe into a finished folder: refused, nothing touched */
    p.seed = 2;
    CHECK_STATUS(tm_fashiontri_build(&p, &s2), TM_ERR_INVALID);
    CHECK(same_file(a, b, "manifest.jsonl"));

    /* another seed differs; fewer examples keep each example's draws */
    p.out_dir = c;
    p.limit_train = 40;
    p.limit_test = 20;
    CHECK_OK(tm_fashiontri_build(&p, &s2));
    p.out_dir = d;
    p.seed = 1;
    CHECK_OK(tm_fashiontri_build(&p, &s2));
    CHECK(s2.rendered == 0); /* a subset of a's utterances */
    int nc = 0, nd = 0, changed = 0, kept = 0;
    cJSON **rc = load_manifest(c, &nc), **rd = load_manifest(d, &nd);
    CHECK(nc == 60 && nd == 60);
    for (int i = 0; rc && rd && i < nc && i < nd; i++) {
        /* row i of c and d is train image i (i < 40) or test image i - 40 */
        int j = i < 40 ? i : LIMIT_TRAIN + (i - 40);
        cJSON *x = cJSON_Duplicate(rd[i], 1), *y = cJSON_Duplicate(rows[j], 1);
        cJSON_DeleteItemFromObject(x, "split"); /* val is carved from what is built */
        cJSON_DeleteItemFromObject(y, "split");
        char *sx = cJSON_PrintUnformatted(x), *sy = cJSON_PrintUnformatted(y);
        char *sc = cJSON_PrintUnformatted(rc[i]), *sd = cJSON_PrintUnformatted(rd[i]);
        kept += !strcmp(sx, sy);
        changed += strcmp(sc, sd) != 0;
        free(sx), free(sy), free(sc), free(sd);
        cJSON_Delete(x);
        cJSON_Delete(y);
    }
    CHECK(kept == 60);
    CHECK(changed >= 55);
    free_manifest(rc, nc);
    free_manifest(rd, nd);
    free_manifest(rows, n);

    /* bad params */
    p.limit_train = 60001;
    CHECK_STATUS(tm_fashiontri_build(&p, NULL), TM_ERR_INVALID);
    p.limit_train = 10;
    p.out_dir = NULL;
    CHECK_STATUS(tm_fashiontri_build(&p, NULL), TM_ERR_INVALID);
    p.out_dir = "/";
    CHECK_STATUS(tm_fashiontri_build(&p, NULL), TM_ERR_INVALID); /* not empty, not ours */
    p.out_dir = d;
    p.terms_path = "tests/no-such-terms.json";
    CHECK_STATUS(tm_fashiontri_build(&p, NULL), TM_ERR_IO);
}

int main(void)
{
    const char *src = getenv("TM_SOURCE_DIR");
    if (src && chdir(src) != 0) return 1;
    snprintf(tmp_root, sizeof tmp_root, "/tmp/tm-fashiontri-XXXXXX");
    if (!mkdtemp(tmp_root)) return 1;
    test_terms();
    test_gunzip();
    test_noise();
    test_clip();
    test_build();
    if (test_failures == 0)
        test_rm_tree(tmp_root);
    else
        fprintf(stderr, "files kept in %s\n", tmp_root);
    return test_finish("data_fashiontri");
}
