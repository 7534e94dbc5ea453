/* Decoding (files and memory) against torchaudio.load, resampling against
 * the ideal band-limited signal, and every kind of bad input: truncated,
 * corrupt, empty, absurd rates and channel counts, unsupported formats,
 * limits, allocation failures. */
#include <sndfile.h>
#include <unistd.h>

#include "audio_test.h"

static tm_safetensors *vec;
static int verbose = 1;

static unsigned char *read_all(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *size = (size_t)n;
    return b;
}

static tm_audio_load_params keep_rate(void)
{
    tm_audio_load_params p = tm_audio_load_default_params();
    p.sample_rate = 0;
    return p;
}

/* Every committed file decodes to what torchaudio.load gives (mean over
 * channels), from the file and from memory alike. */
static void test_files(void)
{
    struct {
        const char *name, *format;
        double atol;
    } files[] = {
        {"pcm16_mono.wav", "wav/pcm16", 0},
        {"pcm8_mono.wav", "wav/pcm8", 0},
        {"pcm24_stereo_44k.wav", "wav/pcm24", 0},
        /* libsndfile scales 32-bit integers and narrows doubles with one
         * rounding more or less than torchaudio: 1 ulp. */
        {"pcm32_mono_8k.wav", "wav/pcm32", 6e-8},
        {"float_stereo_48k.wav", "wav/float", 0},
        {"double_mono.wav", "wav/double", 6e-8},
        {"three_channels.wav", "wav/pcm16", 6e-8},
        {"flac16_mono.flac", "flac/pcm16", 0},
        {"flac24_stereo_48k.flac", "flac/pcm24", 0},
        /* libvorbis behind both, but sox (torchaudio's backend) takes 16-bit
         * samples from it and libsndfile floats: up to half a 16-bit step. */
        {"vorbis_mono_22k.ogg", "ogg/vorbis", 1.0 / 32768},
    };
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char key[128], rel[128];
        snprintf(key, sizeof key, "file_%s", files[i].name);
        snprintf(rel, sizeof rel, "audio/%s", files[i].name);
        int64_t n;
        const float *want = vec_get(vec, key, &n, NULL, NULL);
        cJSON *m = vec_meta(vec, key);
        if (!want || !m) continue;
        tm_audio *a = NULL, *b = NULL;
        CHECK_OK(tm_audio_load_file(&a, test_data_path(rel), keep_rate()));
        if (!a) continue;
        CHECK(a->n_samples == n);
        CHECK(a->sample_rate == (int)meta_num(m, "sample_rate"));
        CHECK(a->source_rate == a->sample_rate);
        CHECK(a->source_channels == (int)meta_num(m, "channels"));
        CHECK(a->source_frames == (int64_t)meta_num(m, "frames"));
        CHECK(!strcmp(a->source_format, files[i].format));
        if (a->n_samples == n) {
            compare(files[i].name, a->samples, want, n, files[i].atol, 0, verbose);
        }
        size_t size;
        unsigned char *bytes = read_all(test_data_path(rel), &size);
        CHECK(bytes != NULL);
        CHECK_OK(tm_audio_load_memory(&b, bytes, size, keep_rate()));
        CHECK(b && b->n_samples == a->n_samples &&
              memcmp(a->samples, b->samples, sizeof(float) * (size_t)n) == 0);
        free(bytes);
        tm_audio_free(a);
        tm_audio_free(b);
        cJSON_Delete(m);
    }
}

/* The tones of scripts/gen_audio_vectors.py's resample_bars at rate sr. */
static void tones(float *x, int64_t n, int sr)
{
    const double f[3] = {440.0, 1250.0, 3000.0};
    for (int64_t i = 0; i < n; i++) {
        double t = (double)i / sr, v = 0;
        for (int k = 0; k < 3; k++) v += 0.4 / (k + 1) * sin(2 * M_PI * f[k] * t);
        x[i] = (float)v;
    }
}

/* SNR against the ideal signal at 16 kHz, away from the edges: at least
 * torchaudio's own (its default resampler on the same tones). */
static void test_resample(void)
{
    const int rates[4] = {44100, 48000, 22050, 8000};
    for (int r = 0; r < 4; r++) {
        int sr = rates[r];
        int64_t n = sr / 2;
        tm_audio *in = NULL;
        CHECK_OK(tm_audio_new(&in, n, sr));
        tones(in->samples, n, sr);
        char key[64];
        snprintf(key, sizeof key, "resample_snr_%d", sr);
        const char *bar_s = tm_safetensors_metadata(vec, key);
        double bar = bar_s ? atof(bar_s) : 1e9;
        for (int c = 0; c < 3; c++) {
            tm_audio *out = NULL;
            CHECK_OK(tm_audio_resample(&out, in, 16000, (tm_resampler)c));
            if (!out) continue;
            CHECK(out->n_samples == (n * 16000 + sr - 1) / sr);
            CHECK(out->sample_rate == 16000);
            float *ideal = malloc(sizeof(float) * (size_t)out->n_samples);
            tones(ideal, out->n_samples, 16000);
            double se = 0, sn = 0;
            for (int64_t i = 800; i < out->n_samples - 800; i++) {
                double d = (double)out->samples[i] - ideal[i];
                se += (double)ideal[i] * ideal[i];
                sn += d * d;
            }
            double snr = 10 * log10(se / sn);
            if (verbose)
                printf("  resample %5d -> 16000 converter %d: SNR %.1f dB (torchaudio %.1f dB)\n",
                       sr, c, snr, bar);
            /* SRC_SINC_FASTEST keeps 80% of the band: 3 kHz is past it at 8 kHz. */
            CHECK(snr >= (c == TM_RESAMPLE_SINC_FASTEST && sr == 8000 ? 30 : bar));
            free(ideal);
            tm_audio_free(out);
        }
        tm_audio_free(in);
    }
    /* The same rate copies; argument errors. */
    tm_audio *a = NULL, *b = NULL;
    CHECK_OK(tm_audio_new(&a, 10, 16000));
    a->samples[3] = 0.5f;
    CHECK_OK(tm_audio_resample(&b, a, 16000, TM_RESAMPLE_SINC_BEST));
    CHECK(b && b->n_samples == 10 && b->samples[3] == 0.5f && b->samples != a->samples);
    tm_audio_free(b);
    CHECK_STATUS(tm_audio_resample(&b, a, 999, TM_RESAMPLE_SINC_BEST), TM_ERR_UNSUPPORTED);
    CHECK_STATUS(tm_audio_resample(&b, a, 800000, TM_RESAMPLE_SINC_BEST), TM_ERR_UNSUPPORTED);
    CHECK_STATUS(tm_audio_resample(&b, a, 8000, (tm_resampler)42), TM_ERR_INVALID);
    CHECK_STATUS(tm_audio_resample(&b, NULL, 8000, TM_RESAMPLE_SINC_BEST), TM_ERR_INVALID);
    CHECK(b == NULL);
    /* Empty audio resamples to empty audio. */
    a->n_samples = 0;
    CHECK_OK(tm_audio_resample(&b, a, 8000, TM_RESAMPLE_SINC_FASTEST));
    CHECK(b && b->n_samples == 0);
    tm_audio_free(b);
    tm_audio_free(a);
    CHECK_STATUS(tm_audio_new(&a, -1, 16000), TM_ERR_INVALID);
    CHECK_STATUS(tm_audio_new(&a, 1, 0), TM_ERR_UNSUPPORTED);
    CHECK_STATUS(tm_audio_from_samples(&a, NULL, 5, 16000), TM_ERR_INVALID);
    tm_audio_free(NULL);

    /* Decoding with resampling: 44.1 kHz stereo to 16 kHz. */
    tm_audio_load_params p = tm_audio_load_default_params();
    CHECK_OK(tm_audio_load_file(&a, test_data_path("audio/pcm24_stereo_44k.wav"), p));
    CHECK(a && a->sample_rate == 16000 && a->source_rate == 44100 && a->source_channels == 2);
    CHECK(a && a->n_samples == (2205 * 16000 + 44099) / 44100 && a->source_frames == 2205);
    tm_audio_free(a);
}

/* Writes a file with libsndfile (for formats we refuse or odd headers). */
static unsigned char *make_file(int format, int channels, int rate, const float *x, int64_t frames,
                                size_t *size)
{
    char path[128];
    snprintf(path, sizeof path, "/tmp/tm_test_decode_%d.bin", (int)getpid());
    SF_INFO info;
    memset(&info, 0, sizeof info);
    info.format = format;
    info.channels = channels;
    info.samplerate = rate;
    SNDFILE *sf = sf_open(path, SFM_WRITE, &info);
    if (!sf) {
        fprintf(stderr, "make_file: %s\n", sf_strerror(NULL));
        return NULL;
    }
    sf_writef_float(sf, x, frames);
    sf_close(sf);
    unsigned char *b = read_all(path, size);
    unlink(path);
    return b;
}

static void put_le32(unsigned char *p, uint32_t v)
{
    p[0] = v & 255;
    p[1] = (v >> 8) & 255;
    p[2] = (v >> 16) & 255;
    p[3] = v >> 24;
}

static void put_le16(unsigned char *p, unsigned v)
{
    p[0] = v & 255;
    p[1] = (v >> 8) & 255;
}

/* A canonical 44-byte-header PCM16 WAV of `frames` frames, data zero. */
static unsigned char *wav16(int channels, uint32_t rate, uint32_t frames, size_t *size)
{
    uint32_t data = frames * 2u * (uint32_t)channels;
    unsigned char *b = calloc(1, 44 + (size_t)data);
    memcpy(b, "RIFF", 4);
    put_le32(b + 4, 36 + data);
    memcpy(b + 8, "WAVEfmt ", 8);
    put_le32(b + 16, 16);
    put_le16(b + 20, 1);
    put_le16(b + 22, (unsigned)channels);
    put_le32(b + 24, rate);
    put_le32(b + 28, rate * 2u * (uint32_t)channels);
    put_le16(b + 32, 2u * (unsigned)channels);
    put_le16(b + 34, 16);
    memcpy(b + 36, "data", 4);
    put_le32(b + 40, data);
    *size = 44 + data;
    return b;
}

#define EXPECT_MEM(bytes, size, params, want, substr)                                    \
    do {                                                                                 \
        tm_audio *a_ = NULL;                                                             \
        CHECK_STATUS(tm_audio_load_memory(&a_, bytes, size, params), want);              \
        CHECK(a_ == NULL);                                                               \
        if (verbose) printf("  line %d: %s\n", __LINE__, tm_last_error());               \
        if (strstr(tm_last_error(), substr) == NULL) {                                   \
            test_failures++;                                                             \
            fprintf(stderr, "%s:%d: message \"%s\" lacks \"%s\"\n", __FILE__, __LINE__,  \
                    tm_last_error(), substr);                                            \
        }                                                                                \
        tm_audio_free(a_);                                                               \
    } while (0)

static void test_bad_input(void)
{
    tm_audio_load_params p = keep_rate();
    size_t size;
    unsigned char *b;

    EXPECT_MEM("", 0, p, TM_ERR_INVALID, "zero-length");
    EXPECT_MEM("hello, this is text and not audio at all", 40, p, TM_ERR_UNSUPPORTED,
               "not a recognised audio file");
    EXPECT_MEM("ID3\x04\0\0\0\0\0\x10" "0123456789abcdef\xff\xfb\x90\x44", 30, p,
               TM_ERR_UNSUPPORTED, "not a recognised");
    EXPECT_MEM("RIFF", 4, p, TM_ERR_UNSUPPORTED, "not a recognised");
    EXPECT_MEM("RIFF\x24\0\0\0WAVE", 12, p, TM_ERR_FORMAT, "corrupt");

    /* Zero-length audio in a valid file. */
    b = wav16(1, 16000, 0, &size);
    EXPECT_MEM(b, size, p, TM_ERR_INVALID, "no samples");
    free(b);

    /* Sample rates: 0 is corrupt; absurd ones unsupported. */
    b = wav16(1, 0, 100, &size);
    EXPECT_MEM(b, size, p, TM_ERR_FORMAT, "sample rate 0");
    free(b);
    b = wav16(1, 1000000, 100, &size);
    EXPECT_MEM(b, size, p, TM_ERR_UNSUPPORTED, "sample rate 1000000");
    free(b);
    b = wav16(1, 500, 100, &size);
    EXPECT_MEM(b, size, p, TM_ERR_UNSUPPORTED, "sample rate 500");
    free(b);

    /* Channels: 0 is corrupt, 100 over the default limit of 64, 2000 more
     * than libsndfile allows. */
    b = wav16(1, 16000, 100, &size);
    put_le16(b + 22, 0);
    EXPECT_MEM(b, size, p, TM_ERR_FORMAT, "0 channels");
    free(b);
    b = wav16(100, 16000, 10, &size);
    EXPECT_MEM(b, size, p, TM_ERR_LIMIT, "100 channels");
    tm_audio_load_params many = p;
    many.max_channels = 128;
    tm_audio *a = NULL;
    CHECK_OK(tm_audio_load_memory(&a, b, size, many));
    CHECK(a && a->n_samples == 10 && a->source_channels == 100);
    tm_audio_free(a);
    free(b);
    b = wav16(2000, 16000, 2, &size);
    EXPECT_MEM(b, size, p, TM_ERR_FORMAT, "<memory>");
    free(b);

    /* Truncated WAV: the data chunk claims more than is there. */
    b = read_all(test_data_path("audio/pcm16_mono.wav"), &size);
    EXPECT_MEM(b, size / 2, p, TM_ERR_FORMAT, "truncated");
    EXPECT_MEM(b, 30, p, TM_ERR_FORMAT, "<memory>");
    /* Limits: 1600 samples at 16 kHz = 0.1 s. */
    tm_audio_load_params lim = p;
    lim.max_seconds = 0.05;
    EXPECT_MEM(b, size, lim, TM_ERR_LIMIT, "max_seconds");
    lim = p;
    lim.max_samples = 1000;
    EXPECT_MEM(b, size, lim, TM_ERR_LIMIT, "max_samples");
    lim.max_samples = 1600;
    CHECK_OK(tm_audio_load_memory(&a, b, size, lim));
    tm_audio_free(a);
    /* A data size of 0xFFFFFFFF (a streaming writer's) reads what is there. */
    put_le32(b + 40, 0xFFFFFFFFu);
    a = NULL;
    tm_status st = tm_audio_load_memory(&a, b, size, p);
    CHECK(st == TM_OK || st == TM_ERR_FORMAT);
    if (st == TM_OK) CHECK(a->n_samples == 1600);
    tm_audio_free(a);
    free(b);

    /* Truncated FLAC: fewer frames than STREAMINFO declares. */
    b = read_all(test_data_path("audio/flac16_mono.flac"), &size);
    EXPECT_MEM(b, size * 2 / 3, p, TM_ERR_FORMAT, "<memory>");
    EXPECT_MEM(b, 20, p, TM_ERR_FORMAT, "<memory>");
    /* A flipped byte in the audio frames: the decoder's CRC catches it. */
    b[size - 40] ^= 0x5a;
    a = NULL;
    st = tm_audio_load_memory(&a, b, size, p);
    CHECK(st == TM_ERR_FORMAT || st == TM_OK);
    tm_audio_free(a);
    free(b);

    /* Ogg: the header packets must be complete, in pages with valid
     * checksums, before libsndfile sees the stream (it leaks otherwise). */
    b = read_all(test_data_path("audio/vorbis_mono_22k.ogg"), &size);
    EXPECT_MEM(b, 100, p, TM_ERR_FORMAT, "truncated");
    EXPECT_MEM(b, 30, p, TM_ERR_FORMAT, "truncated");
    b[40] ^= 1;
    EXPECT_MEM(b, size, p, TM_ERR_FORMAT, "bad checksum");
    b[40] ^= 1;
    b[29] ^= 0x40; /* "\x01vorbis" -> "\x01vorbi3": not Vorbis */
    EXPECT_MEM(b, size, p, TM_ERR_UNSUPPORTED, "neither Vorbis nor Opus");
    b[29] ^= 0x40;
    /* Cut after the headers: libsndfile finds the length from the last
     * page, so a cut either fails or gives a shorter signal, never more. */
    for (size_t cut = 10; cut < size; cut += size / 7) {
        a = NULL;
        st = tm_audio_load_memory(&a, b, cut, p);
        CHECK(st == TM_OK || st == TM_ERR_FORMAT || st == TM_ERR_INVALID);
        if (st == TM_OK) CHECK(a->n_samples < 4410);
        tm_audio_free(a);
    }
    free(b);

    /* Formats libsndfile reads but trimodal refuses. */
    float x[64] = {0.25f, -0.5f};
    b = make_file(SF_FORMAT_AIFF | SF_FORMAT_PCM_16, 1, 16000, x, 64, &size);
    EXPECT_MEM(b, size, p, TM_ERR_UNSUPPORTED, "not a recognised");
    free(b);
    b = make_file(SF_FORMAT_WAV | SF_FORMAT_IMA_ADPCM, 1, 16000, x, 64, &size);
    EXPECT_MEM(b, size, p, TM_ERR_UNSUPPORTED, "unsupported audio encoding");
    free(b);
    /* Opus, written by libsndfile itself (nothing else here writes it). */
    float tone[4800];
    for (int i = 0; i < 4800; i++) tone[i] = 0.5f * (float)sin(2 * M_PI * 440 * i / 48000.0);
    b = make_file(SF_FORMAT_OGG | SF_FORMAT_OPUS, 1, 48000, tone, 4800, &size);
    if (b) {
        CHECK_OK(tm_audio_load_memory(&a, b, size, p));
        CHECK(a && !strcmp(a->source_format, "ogg/opus") && a->sample_rate == 48000);
        if (a) {
            double e = 0;
            for (int64_t i = 0; i < a->n_samples; i++) e += (double)a->samples[i] * a->samples[i];
            double level = sqrt(e / (double)a->n_samples);
            CHECK(a->n_samples > 4000 && a->n_samples <= 4800 + 960);
            CHECK(level > 0.25 && level < 0.45); /* 0.354 for the tone */
        }
        tm_audio_free(a);
        free(b);
    }
    /* u-law is supported. */
    b = make_file(SF_FORMAT_WAV | SF_FORMAT_ULAW, 1, 16000, x, 64, &size);
    CHECK_OK(tm_audio_load_memory(&a, b, size, p));
    CHECK(a && !strcmp(a->source_format, "wav/ulaw") && fabsf(a->samples[0] - 0.25f) < 0.01f);
    tm_audio_free(a);
    free(b);
    /* NaN in a float WAV. */
    x[5] = NAN;
    b = make_file(SF_FORMAT_WAV | SF_FORMAT_FLOAT, 1, 16000, x, 64, &size);
    EXPECT_MEM(b, size, p, TM_ERR_FORMAT, "sample 5 is not a finite number");
    free(b);

    /* Files: missing, a directory; bad arguments and params. */
    CHECK_STATUS(tm_audio_load_file(&a, "/nonexistent/x.wav", p), TM_ERR_IO);
    CHECK(strstr(tm_last_error(), "/nonexistent/x.wav") != NULL);
    CHECK_STATUS(tm_audio_load_file(&a, "/tmp", p), TM_ERR_IO);
    CHECK_STATUS(tm_audio_load_file(&a, NULL, p), TM_ERR_INVALID);
    CHECK_STATUS(tm_audio_load_file(NULL, "x", p), TM_ERR_INVALID);
    CHECK_STATUS(tm_audio_load_memory(&a, NULL, 10, p), TM_ERR_INVALID);
    tm_audio_load_params bad = p;
    bad.sample_rate = 5;
    CHECK_STATUS(tm_audio_load_memory(&a, "x", 1, bad), TM_ERR_INVALID);
    bad = p;
    bad.max_channels = 0;
    CHECK_STATUS(tm_audio_load_memory(&a, "x", 1, bad), TM_ERR_INVALID);
    bad = p;
    bad.max_seconds = 0;
    CHECK_STATUS(tm_audio_load_memory(&a, "x", 1, bad), TM_ERR_INVALID);
    bad = p;
    bad.resampler = (tm_resampler)9;
    CHECK_STATUS(tm_audio_load_memory(&a, "x", 1, bad), TM_ERR_INVALID);
}

/* Every allocation failure on the way gives an error, and no leak (ASan). */
static void test_alloc_failures(void)
{
    size_t size;
    unsigned char *b = read_all(test_data_path("audio/pcm24_stereo_44k.wav"), &size);
    tm_audio_load_params p = tm_audio_load_default_params();
    int failures = 0, n;
    for (n = 1; n < 64; n++) {
        tm_audio *a = NULL;
        tm_alloc_fail_after(n);
        tm_status st = tm_audio_load_memory(&a, b, size, p);
        tm_alloc_fail_after(0);
        if (st == TM_OK) {
            tm_audio_free(a);
            break;
        }
        failures++;
        CHECK(st == TM_ERR_NOMEM && a == NULL);
    }
    CHECK(failures >= 3 && n < 64);
    free(b);
}

/* The decoders are used from loader threads: many at once. */
#include <pthread.h>
static void *load_thread(void *arg)
{
    const char *path = arg;
    for (int i = 0; i < 10; i++) {
        tm_audio *a = NULL;
        tm_status st = tm_audio_load_file(&a, path, tm_audio_load_default_params());
        if (st != TM_OK) return (void *)1;
        tm_audio_free(a);
        st = tm_audio_load_memory(&a, "not audio", 9, tm_audio_load_default_params());
        if (st != TM_ERR_UNSUPPORTED || !strstr(tm_last_error(), "not a recognised"))
            return (void *)1;
    }
    return NULL;
}

static void test_threads(void)
{
    pthread_t t[4];
    static char paths[2][512];
    snprintf(paths[0], sizeof paths[0], "%s", test_data_path("audio/flac24_stereo_48k.flac"));
    snprintf(paths[1], sizeof paths[1], "%s", test_data_path("audio/vorbis_mono_22k.ogg"));
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, load_thread, paths[i & 1]);
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        CHECK(r == NULL);
    }
}

int main(void)
{
    verbose = getenv("TM_QUIET") == NULL;
    CHECK_OK(tm_safetensors_open(&vec, test_data_path("audio/decode.safetensors")));
    if (!vec) return test_finish("audio_decode");
    test_files();
    test_resample();
    test_bad_input();
    test_alloc_failures();
    test_threads();
    tm_safetensors_close(vec);
    return test_finish("audio_decode");
}
