/* Decoding audio through libsndfile, from a file or from memory, with the
 * limits and checks that untrusted media needs; mono downmix; resampling to
 * the model's rate.
 *
 * Both sources go through libsndfile's virtual I/O over one small reader
 * (a buffer, or a file descriptor read with pread), so the format sniffing
 * and the WAV truncation check below see the same bytes libsndfile does.
 * Only WAV, RF64, FLAC and Ogg reach libsndfile: the first bytes are
 * checked first, which keeps libsndfile's many other parsers (and their
 * bugs) away from untrusted input. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <sndfile.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audio/audio_internal.h"
#include "trimodal/io.h"

/* ------------------------------------------------------------ the source */

typedef struct {
    const unsigned char *mem; /* the bytes, or NULL for fd */
    int fd;
    int64_t size;
    int64_t pos;
    int io_error; /* errno of a failed pread */
} source;

/* Reads up to len bytes at off; returns the count (short at the end). */
static int64_t src_read_at(source *s, int64_t off, void *buf, int64_t len)
{
    if (off < 0 || off >= s->size || len <= 0) return 0;
    if (len > s->size - off) len = s->size - off;
    if (s->mem) {
        memcpy(buf, s->mem + off, (size_t)len);
        return len;
    }
    int64_t done = 0;
    while (done < len) {
        ssize_t r = pread(s->fd, (char *)buf + done, (size_t)(len - done), (off_t)(off + done));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            s->io_error = errno;
            break;
        }
        if (r == 0) break;
        done += r;
    }
    return done;
}

static sf_count_t vio_filelen(void *user) { return ((source *)user)->size; }

static sf_count_t vio_seek(sf_count_t offset, int whence, void *user)
{
    source *s = user;
    int64_t base = whence == SEEK_SET ? 0 : whence == SEEK_CUR ? s->pos : s->size;
    if ((offset > 0 && base > INT64_MAX - offset)) return -1;
    int64_t p = base + offset;
    if (p < 0) return -1;
    s->pos = p; /* past the end is allowed, as lseek; reads there give 0 */
    return p;
}

static sf_count_t vio_read(void *ptr, sf_count_t count, void *user)
{
    source *s = user;
    int64_t r = src_read_at(s, s->pos, ptr, count);
    s->pos += r;
    return r;
}

static sf_count_t vio_write(const void *ptr, sf_count_t count, void *user)
{
    (void)ptr, (void)count, (void)user;
    return 0;
}

static sf_count_t vio_tell(void *user) { return ((source *)user)->pos; }

/* ------------------------------------------------------------- sniffing */

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const unsigned char *p) { return le32(p) | (uint64_t)le32(p + 4) << 32; }

enum { KIND_NONE, KIND_WAV, KIND_RF64, KIND_FLAC, KIND_OGG };

/* The container, from the first bytes (after an ID3v2 tag for FLAC). */
static int sniff(source *s)
{
    unsigned char h[12];
    int64_t got = src_read_at(s, 0, h, 12);
    if (got >= 12 && !memcmp(h, "RIFF", 4) && !memcmp(h + 8, "WAVE", 4)) return KIND_WAV;
    if (got >= 12 && !memcmp(h, "RF64", 4) && !memcmp(h + 8, "WAVE", 4)) return KIND_RF64;
    if (got >= 4 && !memcmp(h, "OggS", 4)) return KIND_OGG;
    if (got >= 4 && !memcmp(h, "fLaC", 4)) return KIND_FLAC;
    if (got >= 10 && !memcmp(h, "ID3", 3)) {
        /* ID3v2: a 10-byte header whose size is four 7-bit bytes, then an
         * optional 10-byte footer. FLAC files sometimes carry one. */
        int64_t off = 10 + ((int64_t)(h[6] & 0x7f) << 21 | (int64_t)(h[7] & 0x7f) << 14 |
                            (int64_t)(h[8] & 0x7f) << 7 | (int64_t)(h[9] & 0x7f));
        if (h[5] & 0x10) off += 10;
        unsigned char m[4];
        if (src_read_at(s, off, m, 4) == 4 && !memcmp(m, "fLaC", 4)) return KIND_FLAC;
    }
    return KIND_NONE;
}

/* Checks what libsndfile would report vaguely or not at all. A WAV whose
 * data chunk claims more bytes than the file holds was cut short (an interrupted copy or download); libsndfile quietly shortens
 * it, so look for ourselves. A size of 0 or 0xFFFFFFFF is what streaming
 * writers leave when they cannot go back to fix the header: accepted. */
static tm_status check_wav_header(source *s, int kind, const char *name)
{
    unsigned char c[8];
    uint64_t rf64_data = 0;
    int64_t off = 12;
    for (int i = 0; i < 4096; i++) {
        if (src_read_at(s, off, c, 8) != 8) return TM_OK; /* no data chunk: libsndfile decides */
        uint64_t size = le32(c + 4);
        if (!memcmp(c, "fmt ", 4)) {
            /* Name the two fields whose nonsense libsndfile reports vaguely. */
            unsigned char f[8];
            if (src_read_at(s, off + 8, f, 8) == 8) {
                unsigned channels = (unsigned)f[2] | (unsigned)f[3] << 8;
                if (channels == 0)
                    return tm_fail(TM_ERR_FORMAT, "%s: corrupt WAV header: 0 channels", name);
                if (le32(f + 4) == 0)
                    return tm_fail(TM_ERR_FORMAT, "%s: corrupt WAV header: sample rate 0", name);
            }
        }
        if (kind == KIND_RF64 && !memcmp(c, "ds64", 4)) {
            unsigned char d[16];
            if (src_read_at(s, off + 8, d, 16) == 16) rf64_data = le64(d + 8);
        }
        if (!memcmp(c, "data", 4)) {
            if (kind == KIND_RF64 && size == 0xFFFFFFFFu) size = rf64_data;
            if (size == 0 || size == 0xFFFFFFFFu) return TM_OK;
            uint64_t avail = (uint64_t)(s->size - (off + 8));
            if (size > avail)
                return tm_fail(TM_ERR_FORMAT,
                               "%s: truncated WAV: the data chunk declares %llu bytes, the file "
                               "holds %llu",
                               name, (unsigned long long)size, (unsigned long long)avail);
            return TM_OK;
        }
        if (kind == KIND_RF64 && size == 0xFFFFFFFFu) return TM_OK;
        off += 8 + (int64_t)size + (int64_t)(size & 1);
        if (off >= s->size) return TM_OK;
    }
    return TM_OK;
}

/* Ogg: libsndfile 1.2.0 leaks libvorbis's codec setup (about 6 KB) when
 * the Vorbis header packets are cut short or damaged (its failed open never
 * calls vorbis_info_clear), so check them first: the first logical
 * stream's header packets (3 for Vorbis, 2 for Opus) must be complete
 * inside pages with valid checksums. That also names the problem clearly.
 * A stream whose headers pass this but are still malformed (a valid
 * checksum over nonsense, made on purpose) can still reach the leak. */
static tm_status check_ogg_headers(source *s, const char *name)
{
    uint32_t table[256];
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t r = i << 24;
        for (int k = 0; k < 8; k++) r = r & 0x80000000u ? (r << 1) ^ 0x04C11DB7u : r << 1;
        table[i] = r;
    }
    unsigned char buf[4096];
    int64_t off = 0;
    uint32_t serial = 0;
    int needed = 0, done = 0, first = 1;
    int64_t in_packet = 0; /* bytes of the packet being assembled */
    for (int page = 0; page < 1024 && done < (needed ? needed : 1); page++) {
        unsigned char h[27 + 255];
        if (src_read_at(s, off, h, 27) != 27 || memcmp(h, "OggS", 4) != 0)
            return tm_fail(TM_ERR_FORMAT,
                           "%s: truncated or corrupt Ogg: no page at byte %lld before the "
                           "stream's headers are complete",
                           name, (long long)off);
        int nseg = h[26];
        if (src_read_at(s, off + 27, h + 27, nseg) != nseg)
            return tm_fail(TM_ERR_FORMAT, "%s: truncated Ogg page at byte %lld", name,
                           (long long)off);
        int64_t body = 0;
        for (int i = 0; i < nseg; i++) body += h[27 + i];
        int64_t hlen = 27 + nseg;
        if (off + hlen + body > s->size)
            return tm_fail(TM_ERR_FORMAT,
                           "%s: truncated Ogg: the page at byte %lld ends past the end of the "
                           "file, before the stream's headers are complete",
                           name, (long long)off);
        uint32_t want = le32(h + 22), crc = 0;
        h[22] = h[23] = h[24] = h[25] = 0;
        for (int64_t i = 0; i < hlen; i++) crc = (crc << 8) ^ table[(crc >> 24) ^ h[i]];
        for (int64_t done_b = 0; done_b < body;) {
            int64_t len = body - done_b < (int64_t)sizeof buf ? body - done_b : (int64_t)sizeof buf;
            if (src_read_at(s, off + hlen + done_b, buf, len) != len)
                return tm_fail(TM_ERR_IO, "%s: read failed", name);
            if (first && done_b == 0) {
                /* The first packet names the codec. */
                if (len >= 7 && buf[0] == 1 && !memcmp(buf + 1, "vorbis", 6)) needed = 3;
                else if (len >= 8 && !memcmp(buf, "OpusHead", 8)) needed = 2;
                else
                    return tm_fail(TM_ERR_UNSUPPORTED,
                                   "%s: an Ogg stream that is neither Vorbis nor Opus", name);
                serial = le32(h + 14);
            }
            for (int64_t i = 0; i < len; i++) crc = (crc << 8) ^ table[(crc >> 24) ^ buf[i]];
            done_b += len;
        }
        if (crc != want)
            return tm_fail(TM_ERR_FORMAT, "%s: corrupt Ogg: bad checksum in the page at byte %lld",
                           name, (long long)off);
        if (first && body == 0)
            return tm_fail(TM_ERR_FORMAT, "%s: corrupt Ogg: empty first page", name);
        if (!first && le32(h + 14) != serial) { /* another logical stream */
            off += hlen + body;
            continue;
        }
        first = 0;
        for (int i = 0; i < nseg && done < needed; i++) {
            in_packet += h[27 + i];
            if (h[27 + i] < 255) { /* a packet ends here */
                if (in_packet == 0)
                    return tm_fail(TM_ERR_FORMAT, "%s: corrupt Ogg: empty header packet", name);
                done++;
                in_packet = 0;
            }
        }
        off += hlen + body;
    }
    if (done < needed)
        return tm_fail(TM_ERR_FORMAT, "%s: corrupt Ogg: the stream's headers never end", name);
    return TM_OK;
}

/* ------------------------------------------------------------ decoding */

/* libsndfile reports a failed open through a process-wide error code; the
 * lock keeps one thread's message from being read by another. */
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *format_name(int format)
{
    int major = format & SF_FORMAT_TYPEMASK, sub = format & SF_FORMAT_SUBMASK;
    if (major == SF_FORMAT_FLAC) {
        switch (sub) {
        case SF_FORMAT_PCM_S8: return "flac/pcm8";
        case SF_FORMAT_PCM_16: return "flac/pcm16";
        case SF_FORMAT_PCM_24: return "flac/pcm24";
        default: return NULL;
        }
    }
    if (major == SF_FORMAT_OGG) {
        switch (sub) {
        case SF_FORMAT_VORBIS: return "ogg/vorbis";
        case SF_FORMAT_OPUS: return "ogg/opus";
        default: return NULL;
        }
    }
    if (major == SF_FORMAT_WAV || major == SF_FORMAT_WAVEX || major == SF_FORMAT_RF64) {
        switch (sub) {
        case SF_FORMAT_PCM_U8: return "wav/pcm8";
        case SF_FORMAT_PCM_16: return "wav/pcm16";
        case SF_FORMAT_PCM_24: return "wav/pcm24";
        case SF_FORMAT_PCM_32: return "wav/pcm32";
        case SF_FORMAT_FLOAT: return "wav/float";
        case SF_FORMAT_DOUBLE: return "wav/double";
        case SF_FORMAT_ULAW: return "wav/ulaw";
        case SF_FORMAT_ALAW: return "wav/alaw";
        default: return NULL;
        }
    }
    return NULL;
}

tm_audio_load_params tm_audio_load_default_params(void)
{
    tm_audio_load_params p;
    memset(&p, 0, sizeof p);
    p.sample_rate = 16000;
    p.resampler = TM_RESAMPLE_DEFAULT;
    p.max_seconds = 3600.0;
    p.max_samples = (int64_t)1 << 28;
    p.max_channels = 64;
    return p;
}

static tm_status check_load_params(const tm_audio_load_params *p)
{
    if (p->sample_rate != 0 &&
        (p->sample_rate < TM_AUDIO_MIN_RATE || p->sample_rate > TM_AUDIO_MAX_RATE))
        return tm_fail(TM_ERR_INVALID, "audio load: sample_rate %d outside [%d, %d] (or 0)",
                       p->sample_rate, TM_AUDIO_MIN_RATE, TM_AUDIO_MAX_RATE);
    if ((unsigned)p->resampler >= TM_RESAMPLE_COUNT)
        return tm_fail(TM_ERR_INVALID, "audio load: unknown resampler %d", (int)p->resampler);
    if (!(p->max_seconds > 0))
        return tm_fail(TM_ERR_INVALID, "audio load: max_seconds must be > 0");
    if (p->max_samples < 1)
        return tm_fail(TM_ERR_INVALID, "audio load: max_samples must be >= 1");
    if (p->max_channels < 1 || p->max_channels > TM_AUDIO_MAX_CHANNELS)
        return tm_fail(TM_ERR_INVALID, "audio load: max_channels %d outside [1, %d]",
                       p->max_channels, TM_AUDIO_MAX_CHANNELS);
    return TM_OK;
}

/* Reads every frame, averaging the channels, into a growing buffer. */
static tm_status read_mono(SNDFILE *sf, const SF_INFO *info, const tm_audio_load_params *p,
                           const char *name, float **out, int64_t *n_out)
{
    int ch = info->channels;
    int64_t declared = info->frames; /* may be SF_COUNT_MAX or less when unknown */
    int64_t max_frames = p->max_samples / ch;
    double max_by_time = p->max_seconds * info->samplerate;
    if (max_by_time < (double)max_frames) max_frames = (int64_t)max_by_time;
    int64_t chunk = 65536 / ch;
    if (chunk < 1) chunk = 1;
    float *tmp = tm_alloc(sizeof(float) * (size_t)(chunk * ch));
    int64_t cap = declared > 0 && declared < ((int64_t)1 << 20) ? declared : ((int64_t)1 << 20);
    if (cap > max_frames + 1) cap = max_frames + 1;
    float *buf = tm_alloc(sizeof(float) * (size_t)cap);
    if (!tmp || !buf) {
        tm_free(tmp);
        tm_free(buf);
        return tm_fail(TM_ERR_NOMEM, "%s: out of memory decoding audio", name);
    }
    int64_t n = 0;
    tm_status st = TM_OK;
    for (;;) {
        sf_count_t got = sf_readf_float(sf, tmp, (sf_count_t)chunk);
        if (got <= 0) break;
        if (n + got > max_frames) {
            st = tm_fail(TM_ERR_LIMIT,
                         "%s: audio longer than the limit (%lld samples per channel: max_seconds "
                         "%g, max_samples %lld over %d channels)",
                         name, (long long)max_frames, p->max_seconds, (long long)p->max_samples,
                         ch);
            break;
        }
        if (n + got > cap) {
            int64_t ncap = cap * 2;
            if (ncap < n + got) ncap = n + got;
            if (ncap > max_frames) ncap = max_frames;
            float *nb = tm_alloc(sizeof(float) * (size_t)ncap);
            if (!nb) {
                st = tm_fail(TM_ERR_NOMEM, "%s: out of memory decoding audio", name);
                break;
            }
            memcpy(nb, buf, sizeof(float) * (size_t)n);
            tm_free(buf);
            buf = nb;
            cap = ncap;
        }
        for (int64_t i = 0; i < got; i++) {
            const float *f = tmp + i * ch;
            float v;
            if (ch == 1) {
                v = f[0];
            } else {
                float s = 0;
                for (int c = 0; c < ch; c++) s += f[c];
                v = ch == 2 ? s * 0.5f : s / (float)ch;
            }
            if (!isfinite(v)) {
                st = tm_fail(TM_ERR_FORMAT, "%s: sample %lld is not a finite number", name,
                             (long long)(n + i));
                break;
            }
            buf[n + i] = v;
        }
        if (st != TM_OK) break;
        n += got;
    }
    tm_free(tmp);
    if (st == TM_OK && sf_error(sf) != SF_ERR_NO_ERROR)
        st = tm_fail(TM_ERR_FORMAT, "%s: corrupt audio: %s", name, sf_strerror(sf));
    if (st == TM_OK && declared > 0 && declared != SF_COUNT_MAX && n < declared)
        st = tm_fail(TM_ERR_FORMAT,
                     "%s: truncated or corrupt audio: %lld of the %lld frames it declares could "
                     "be decoded",
                     name, (long long)n, (long long)declared);
    if (st == TM_OK && n == 0)
        st = tm_fail(TM_ERR_INVALID, "%s: the audio has no samples (zero length)", name);
    if (st != TM_OK) {
        tm_free(buf);
        return st;
    }
    *out = buf;
    *n_out = n;
    return TM_OK;
}

static tm_status load(tm_audio **out, source *s, const char *name, tm_audio_load_params p)
{
    tm_status st = check_load_params(&p);
    if (st != TM_OK) return st;
    if (s->size == 0)
        return tm_fail(TM_ERR_INVALID, "%s: empty file (zero-length audio)", name);
    int kind = sniff(s);
    if (s->io_error) return tm_fail(TM_ERR_IO, "%s: read failed: %s", name, strerror(s->io_error));
    if (kind == KIND_NONE)
        return tm_fail(TM_ERR_UNSUPPORTED,
                       "%s: not a recognised audio file (trimodal reads WAV, RF64, FLAC and Ogg "
                       "Vorbis/Opus)",
                       name);
    if (kind == KIND_WAV || kind == KIND_RF64) {
        st = check_wav_header(s, kind, name);
        if (st != TM_OK) return st;
    }
    if (kind == KIND_OGG) {
        st = check_ogg_headers(s, name);
        if (st != TM_OK) return st;
    }

    SF_VIRTUAL_IO vio = {vio_filelen, vio_seek, vio_read, vio_write, vio_tell};
    SF_INFO info;
    memset(&info, 0, sizeof info);
    s->pos = 0;
    pthread_mutex_lock(&open_lock);
    SNDFILE *sf = sf_open_virtual(&vio, SFM_READ, &info, s);
    char why[256] = "";
    if (!sf) snprintf(why, sizeof why, "%s", sf_strerror(NULL));
    pthread_mutex_unlock(&open_lock);
    if (!sf) {
        if (s->io_error)
            return tm_fail(TM_ERR_IO, "%s: read failed: %s", name, strerror(s->io_error));
        return tm_fail(TM_ERR_FORMAT, "%s: corrupt or unreadable audio: %s", name, why);
    }
    const char *fmt = format_name(info.format);
    if (!fmt) {
        sf_close(sf);
        return tm_fail(TM_ERR_UNSUPPORTED, "%s: unsupported audio encoding (libsndfile format "
                                           "0x%06x)",
                       name, (unsigned)info.format);
    }
    if (info.samplerate <= 0 || info.channels <= 0) {
        sf_close(sf);
        return tm_fail(TM_ERR_FORMAT, "%s: corrupt header: sample rate %d, %d channels", name,
                       info.samplerate, info.channels);
    }
    int64_t min_rate = tm_limit_get(TM_LIMIT_AUDIO_MIN_RATE);
    int64_t max_rate = tm_limit_get(TM_LIMIT_AUDIO_MAX_RATE);
    if (info.samplerate < min_rate || info.samplerate > max_rate) {
        sf_close(sf);
        tm_limit which = info.samplerate < min_rate ? TM_LIMIT_AUDIO_MIN_RATE : TM_LIMIT_AUDIO_MAX_RATE;
        return tm_fail(TM_ERR_UNSUPPORTED, "%s: sample rate %d Hz outside [%lld, %lld] (limit %s)",
                       name, info.samplerate, (long long)min_rate, (long long)max_rate,
                       tm_limit_hint(which));
    }
    if (info.channels > p.max_channels) {
        sf_close(sf);
        return tm_fail(TM_ERR_LIMIT, "%s: %d channels, more than the limit of %d", name,
                       info.channels, p.max_channels);
    }
    if (info.frames > 0 && info.frames != SF_COUNT_MAX) {
        if ((double)info.frames > p.max_seconds * info.samplerate) {
            sf_close(sf);
            return tm_fail(TM_ERR_LIMIT, "%s: %.1f s of audio, more than max_seconds %g", name,
                           (double)info.frames / info.samplerate, p.max_seconds);
        }
        if (info.frames > p.max_samples / info.channels) {
            sf_close(sf);
            return tm_fail(TM_ERR_LIMIT, "%s: %lld frames x %d channels, more than max_samples %lld",
                           name, (long long)info.frames, info.channels, (long long)p.max_samples);
        }
    }
    float *mono = NULL;
    int64_t n = 0;
    st = read_mono(sf, &info, &p, name, &mono, &n);
    sf_close(sf);
    if (st == TM_OK && s->io_error)
        st = tm_fail(TM_ERR_IO, "%s: read failed: %s", name, strerror(s->io_error));
    if (st != TM_OK) {
        tm_free(mono);
        return st;
    }

    tm_audio *a = tm_calloc(1, sizeof *a);
    if (!a) {
        tm_free(mono);
        return tm_fail(TM_ERR_NOMEM, "%s: out of memory", name);
    }
    a->samples = mono;
    a->n_samples = n;
    a->sample_rate = info.samplerate;
    a->source_rate = info.samplerate;
    a->source_channels = info.channels;
    a->source_frames = n;
    a->source_format = fmt;
    if (p.sample_rate != 0 && p.sample_rate != info.samplerate) {
        tm_audio *r = NULL;
        st = tm_audio_resample(&r, a, p.sample_rate, p.resampler);
        if (st != TM_OK) {
            tm_audio_free(a);
            return st;
        }
        r->source_rate = a->source_rate;
        r->source_channels = a->source_channels;
        r->source_frames = a->source_frames;
        r->source_format = a->source_format;
        tm_audio_free(a);
        a = r;
    }
    *out = a;
    return TM_OK;
}

tm_status tm_audio_load_memory(tm_audio **out, const void *data, size_t size,
                               tm_audio_load_params params)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "tm_audio_load_memory: out is NULL");
    *out = NULL;
    if (!data && size) return tm_fail(TM_ERR_INVALID, "tm_audio_load_memory: data is NULL");
    if (size > (size_t)INT64_MAX) return tm_fail(TM_ERR_LIMIT, "<memory>: buffer too large");
    source s = {data ? data : (const unsigned char *)"", -1, (int64_t)size, 0, 0};
    return load(out, &s, "<memory>", params);
}

tm_status tm_audio_load_file(tm_audio **out, const char *path, tm_audio_load_params params)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "tm_audio_load_file: out is NULL");
    *out = NULL;
    if (!path) return tm_fail(TM_ERR_INVALID, "tm_audio_load_file: path is NULL");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return tm_fail(TM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat stbuf;
    if (fstat(fd, &stbuf) != 0) {
        int e = errno;
        close(fd);
        return tm_fail(TM_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(stbuf.st_mode)) {
        close(fd);
        return tm_fail(TM_ERR_IO, "%s: not a regular file", path);
    }
    if (tm_file_is_encrypted(path)) {
        /* encrypted at rest (docs/security.md): decrypted in memory; the
         * plain content is smaller than the file */
        close(fd);
        char *plain = NULL;
        size_t plen = 0;
        tm_status st = tm_read_file(path, (size_t)stbuf.st_size, &plain, &plen);
        if (st) return st;
        source s = {(const unsigned char *)plain, -1, (int64_t)plen, 0, 0};
        st = load(out, &s, path, params);
        tm_free(plain);
        return st;
    }
    source s = {NULL, fd, (int64_t)stbuf.st_size, 0, 0};
    tm_status st = load(out, &s, path, params);
    close(fd);
    return st;
}

/* ---------------------------------------------------------- tm_audio */

void tm_audio_free(tm_audio *a)
{
    if (!a) return;
    tm_free(a->samples);
    tm_free(a);
}

static tm_status check_rate(int rate, const char *what)
{
    if (rate < TM_AUDIO_MIN_RATE || rate > TM_AUDIO_MAX_RATE)
        return tm_fail(TM_ERR_UNSUPPORTED, "%s: sample rate %d Hz outside [%d, %d]", what, rate,
                       TM_AUDIO_MIN_RATE, TM_AUDIO_MAX_RATE);
    return TM_OK;
}

tm_status tm_audio_new(tm_audio **out, int64_t n, int sample_rate)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "tm_audio_new: out is NULL");
    *out = NULL;
    if (n < 0) return tm_fail(TM_ERR_INVALID, "tm_audio_new: negative length %lld", (long long)n);
    tm_status st = check_rate(sample_rate, "tm_audio_new");
    if (st != TM_OK) return st;
    size_t bytes;
    if (!tm_mul_size((size_t)n, sizeof(float), &bytes))
        return tm_fail(TM_ERR_NOMEM, "tm_audio_new: %lld samples overflow", (long long)n);
    tm_audio *a = tm_calloc(1, sizeof *a);
    float *x = tm_alloc(bytes ? bytes : sizeof(float));
    if (!a || !x) {
        tm_free(a);
        tm_free(x);
        return tm_fail(TM_ERR_NOMEM, "tm_audio_new: out of memory for %lld samples", (long long)n);
    }
    memset(x, 0, bytes);
    a->samples = x;
    a->n_samples = n;
    a->sample_rate = sample_rate;
    a->source_rate = sample_rate;
    a->source_channels = 1;
    a->source_frames = n;
    a->source_format = "raw";
    *out = a;
    return TM_OK;
}

tm_status tm_audio_from_samples(tm_audio **out, const float *samples, int64_t n, int sample_rate)
{
    if (out) *out = NULL;
    if (n > 0 && !samples) return tm_fail(TM_ERR_INVALID, "tm_audio_from_samples: samples is NULL");
    tm_status st = tm_audio_new(out, n, sample_rate);
    if (st != TM_OK) return st;
    if (n > 0) memcpy((*out)->samples, samples, sizeof(float) * (size_t)n);
    return TM_OK;
}
