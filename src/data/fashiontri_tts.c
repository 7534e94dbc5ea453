/* FashionTri's speech: the fixed voice list, the text-to-speech engines run
 * as child processes, and the cache of rendered utterances.
 *
 * Why child processes with argument vectors: the engines are programs
 * (espeak-ng, flite, festival), and no text may pass through a shell. Each
 * child gets /dev/null as input, its error output goes to a pipe (the end
 * of it becomes the error message if it fails), and it is killed after a
 * timeout. Pipes are opened close-on-exec so a child started by another
 * thread at the same moment never inherits them (which would hold the pipe
 * open and hide the end of this child's output).
 *
 * Why festival runs in batches: starting festival costs about half a
 * second, rendering a sentence a few tens of milliseconds, so one festival
 * process renders many sentences of one voice from a Scheme script. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fashiontri_internal.h"

extern char **environ;

/* ------------------------------------------------------------- voices */

/* The voices and the split each may speak in. Speakers: an espeak-ng
 * variant (m1, f3, klatt, ...) is one synthetic speaker whatever the accent
 * it is combined with, so the test split gets variants that train never
 * uses; flite's kal and kal16 and festival's kal_diphone are one recorded
 * speaker (Kal), as flite's slt and festival's cmu_us_slt_arctic_hts are
 * (SLT), so those stay together in train; awb and ked speak only in test. */
#define ESPEAK(base, variant, test)                                                                \
    {                                                                                              \
        FT_ESPEAK, base "+" variant, "espeak-ng:" base "+" variant, "espeak-ng " variant, test,    \
            "espeak-ng"                                                                            \
    }
const ft_voice ft_voices[] = {
    ESPEAK("en-us", "m1", 0),
    ESPEAK("en-gb-scotland", "m1", 0),
    ESPEAK("en-gb", "m2", 0),
    ESPEAK("en-029", "m2", 0),
    ESPEAK("en-gb-x-rp", "m3", 0),
    ESPEAK("en-us-nyc", "m3", 0),
    ESPEAK("en-gb-x-gbclan", "m5", 0),
    ESPEAK("en-us", "m5", 0),
    ESPEAK("en-us", "f1", 0),
    ESPEAK("en-gb-x-rp", "f1", 0),
    ESPEAK("en-gb", "f2", 0),
    ESPEAK("en-gb-x-gbcwmd", "f2", 0),
    ESPEAK("en-us-nyc", "f3", 0),
    ESPEAK("en-gb-scotland", "f3", 0),
    ESPEAK("en-029", "klatt", 0),
    ESPEAK("en-gb-x-gbclan", "klatt", 0),
    {FT_FLITE, "kal", "flite:kal", "kal", 0, "flite"},
    {FT_FLITE, "kal16", "flite:kal16", "kal", 0, "flite"},
    {FT_FLITE, "rms", "flite:rms", "rms", 0, "flite"},
    {FT_FLITE, "slt", "flite:slt", "slt", 0, "flite"},
    {FT_FESTIVAL, "kal_diphone", "festival:kal_diphone", "kal", 0, "festvox-kallpc16k"},
    {FT_FESTIVAL, "cmu_us_slt_arctic_hts", "festival:cmu_us_slt_arctic_hts", "slt", 0,
     "festvox-us-slt-hts"},
    /* test only */
    ESPEAK("en-us", "m4", 1),
    ESPEAK("en-gb", "m4", 1),
    ESPEAK("en-gb-x-rp", "m6", 1),
    ESPEAK("en-029", "m6", 1),
    ESPEAK("en-us", "f4", 1),
    ESPEAK("en-gb-scotland", "f4", 1),
    ESPEAK("en-gb", "f5", 1),
    ESPEAK("en-us-nyc", "f5", 1),
    {FT_FLITE, "awb", "flite:awb", "awb", 1, "flite"},
    {FT_FESTIVAL, "ked_diphone", "festival:ked_diphone", "ked", 1, "festvox-kdlpc16k"},
};
const int ft_n_voices = (int)(sizeof ft_voices / sizeof ft_voices[0]);

const char *ft_engine_name(ft_engine e)
{
    static const char *names[FT_ENGINE_COUNT] = {"espeak-ng", "flite", "festival"};
    return (unsigned)e < FT_ENGINE_COUNT ? names[e] : "?";
}

/* ---------------------------------------------------- child processes */

#define ERR_TAIL 1024
#define MAX_STDOUT ((size_t)1 << 20)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {0, (long)ms * 1000000L};
    nanosleep(&ts, NULL);
}

/* Keeps the last ERR_TAIL bytes written to it. */
typedef struct {
    char buf[2 * ERR_TAIL + 1];
    size_t len;
} tail_buf;

static void tail_add(tail_buf *t, const char *p, size_t n)
{
    if (n >= ERR_TAIL) {
        memcpy(t->buf, p + n - ERR_TAIL, ERR_TAIL);
        t->len = ERR_TAIL;
        return;
    }
    if (t->len + n > 2 * ERR_TAIL) {
        memmove(t->buf, t->buf + t->len - ERR_TAIL, ERR_TAIL);
        t->len = ERR_TAIL;
    }
    memcpy(t->buf + t->len, p, n);
    t->len += n;
}

static const char *tail_str(tail_buf *t)
{
    size_t start = t->len > ERR_TAIL ? t->len - ERR_TAIL : 0;
    t->buf[t->len] = 0;
    /* one line is enough for a message: newlines become " | " would grow it,
     * so they become spaces */
    for (size_t i = start; i < t->len; i++)
        if (t->buf[i] == '\n' || t->buf[i] == '\r') t->buf[i] = ' ';
    return t->buf + start;
}

static tm_status run(char *const argv[], double timeout_s, char **out, int *exit_code)
{
    if (out) *out = NULL;
    int errp[2] = {-1, -1}, outp[2] = {-1, -1};
    if (pipe2(errp, O_CLOEXEC) != 0 || (out && pipe2(outp, O_CLOEXEC) != 0)) {
        int e = errno;
        if (errp[0] >= 0) close(errp[0]), close(errp[1]);
        return tm_fail(TM_ERR_IO, "%s: cannot make a pipe: %s", argv[0], strerror(e));
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    if (out)
        posix_spawn_file_actions_adddup2(&fa, outp[1], 1);
    else
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, errp[1], 2);
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(errp[1]);
    if (out) close(outp[1]);
    if (rc != 0) {
        close(errp[0]);
        if (out) close(outp[0]);
        if (rc == ENOENT)
            return tm_fail(TM_ERR_UNSUPPORTED, "the program %s is not installed (not in PATH)",
                           argv[0]);
        return tm_fail(TM_ERR_INTERNAL, "cannot start %s: %s", argv[0], strerror(rc));
    }

    tail_buf *err = tm_calloc(1, sizeof *err);
    char *obuf = NULL;
    size_t olen = 0, ocap = 0;
    int too_much = 0, nomem = !err;
    double deadline = now_s() + timeout_s;
    int open_err = 1, open_out = out != NULL, timed_out = 0;
    char chunk[4096];
    while (open_err || open_out) {
        struct pollfd pf[2];
        int np = 0;
        if (open_err) pf[np++] = (struct pollfd){errp[0], POLLIN, 0};
        if (open_out) pf[np++] = (struct pollfd){outp[0], POLLIN, 0};
        double left = deadline - now_s();
        if (left <= 0) {
            timed_out = 1;
            break;
        }
        int r = poll(pf, (nfds_t)np, (int)(left * 1000) + 1);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) break;
        for (int k = 0; k < np; k++) {
            if (!(pf[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            ssize_t got = read(pf[k].fd, chunk, sizeof chunk);
            if (got < 0 && errno == EINTR) continue;
            if (got <= 0) {
                if (pf[k].fd == errp[0])
                    open_err = 0;
                else
                    open_out = 0;
                continue;
            }
            if (pf[k].fd == errp[0]) {
                if (err) tail_add(err, chunk, (size_t)got);
            } else if (olen + (size_t)got + 1 > MAX_STDOUT) {
                too_much = 1;
            } else {
                if (olen + (size_t)got + 1 > ocap) {
                    size_t cap = ocap ? ocap * 2 : 8192;
                    while (cap < olen + (size_t)got + 1)
                        cap *= 2;
                    char *p = tm_alloc(cap);
                    if (!p) {
                        nomem = 1;
                        continue;
                    }
                    if (olen) memcpy(p, obuf, olen);
                    tm_free(obuf);
                    obuf = p;
                    ocap = cap;
                }
                memcpy(obuf + olen, chunk, (size_t)got);
                olen += (size_t)got;
            }
        }
    }
    close(errp[0]);
    if (out) close(outp[0]);
    /* The pipes closed: the child is exiting (or it closed them itself). */
    int status = 0, waited = 0;
    if (timed_out) kill(pid, SIGKILL);
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid) {
            waited = 1;
            break;
        }
        if (w < 0 && errno != EINTR) break;
        if (!timed_out && now_s() > deadline) {
            timed_out = 1;
            kill(pid, SIGKILL);
        }
        sleep_ms(1);
    }
    tm_status s = TM_OK;
    const char *msg = err ? tail_str(err) : "";
    if (nomem) {
        s = tm_fail(TM_ERR_NOMEM, "%s: out of memory reading its output", argv[0]);
    } else if (timed_out) {
        s = tm_fail(TM_ERR_INTERNAL,
                    "%s did not finish within %.0f s and was killed; its last "
                    "words: %s",
                    argv[0], timeout_s, msg);
    } else if (!waited) {
        s = tm_fail(TM_ERR_INTERNAL, "%s: cannot learn how it ended: %s", argv[0], strerror(errno));
    } else if (WIFSIGNALED(status)) {
        s = tm_fail(TM_ERR_INTERNAL, "%s was killed by signal %d; its last words: %s", argv[0],
                    WTERMSIG(status), msg);
    } else if (!WIFEXITED(status) || (WEXITSTATUS(status) != 0 && !exit_code)) {
        s = tm_fail(TM_ERR_INTERNAL, "%s failed (exit status %d): %s", argv[0],
                    WIFEXITED(status) ? WEXITSTATUS(status) : -1, msg);
    } else if (too_much) {
        s = tm_fail(TM_ERR_LIMIT, "%s wrote more than 1 MiB on its standard output", argv[0]);
    }
    if (s == TM_OK && exit_code) *exit_code = WEXITSTATUS(status);
    if (s == TM_OK && out) {
        if (!obuf) obuf = tm_calloc(1, 1);
        if (!obuf) {
            s = tm_fail(TM_ERR_NOMEM, "%s: out of memory", argv[0]);
        } else {
            obuf[olen] = 0;
            *out = obuf;
            obuf = NULL;
        }
    }
    tm_free(obuf);
    tm_free(err);
    return s;
}

tm_status ft_run(char *const argv[], double timeout_s, char **out)
{
    return run(argv, timeout_s, out, NULL);
}

/* ---------------------------------------------------- package versions */

/* Every package whose version can change what a build writes. */
static const char *packages[] = {
    "dataset-fashion-mnist",
    "espeak-ng",
    "espeak-ng-data",
    "flite",
    "festival",
    "festvox-kallpc16k",
    "festvox-kdlpc16k",
    "festvox-us-slt-hts",
    "libsndfile1",
    "libflac12",
    "libsamplerate0",
    "libfftw3-single3",
    "libstb0",
};
#define N_PACKAGES ((int)(sizeof packages / sizeof packages[0]))

tm_status ft_package_versions(char **json)
{
    *json = NULL;
    char *argv[N_PACKAGES + 4];
    int k = 0;
    argv[k++] = "dpkg-query";
    argv[k++] = "-W";
    argv[k++] = "-f=${Package}\t${Version}\n";
    for (int i = 0; i < N_PACKAGES; i++)
        argv[k++] = (char *)packages[i];
    argv[k] = NULL;
    char *out = NULL;
    int code = 0;
    tm_status s = run(argv, 30, &out, &code);
    if (s != TM_OK && s != TM_ERR_UNSUPPORTED) return s;
    /* {"name": "version", ...} in the list's order; names and versions are
     * Debian's (letters, digits, + - . ~ :), so no escaping is needed, but
     * anything else is dropped to be safe. */
    size_t cap = 64 + (size_t)N_PACKAGES * 160;
    char *j = tm_alloc(cap);
    if (!j) {
        tm_free(out);
        return tm_fail(TM_ERR_NOMEM, "out of memory");
    }
    size_t len = (size_t)snprintf(j, cap, "{");
    for (int i = 0; i < N_PACKAGES; i++) {
        char ver[96] = "unknown";
        size_t pl = strlen(packages[i]);
        for (const char *line = out; line && *line;) {
            const char *eol = strchr(line, '\n');
            size_t ll = eol ? (size_t)(eol - line) : strlen(line);
            if (ll > pl + 1 && !strncmp(line, packages[i], pl) && line[pl] == '\t') {
                size_t vl = 0;
                for (size_t q = pl + 1; q < ll && vl + 1 < sizeof ver; q++) {
                    char c = line[q];
                    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
                        (c >= 'A' && c <= 'Z') || strchr("+-.~:", c))
                        ver[vl++] = c;
                }
                ver[vl] = 0;
                if (!vl) snprintf(ver, sizeof ver, "unknown");
                break;
            }
            line = eol ? eol + 1 : NULL;
        }
        len += (size_t)snprintf(j + len, cap - len, "%s\"%s\": \"%s\"", i ? ", " : "", packages[i],
                                ver);
    }
    snprintf(j + len, cap - len, "}");
    tm_free(out);
    *json = j;
    return TM_OK;
}

/* ---------------------------------------------------------- checking */

/* 1 when word appears in text as a whole whitespace-separated token. */
static int has_token(const char *text, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = strstr(text, word); p; p = strstr(p + 1, word)) {
        int before = p == text || p[-1] == ' ' || p[-1] == '\t' || p[-1] == '\n';
        char a = p[n];
        if (before && (a == 0 || a == ' ' || a == '\t' || a == '\n')) return 1;
    }
    return 0;
}

static int festival_voice_installed(const char *name)
{
    static const char *roots[] = {"/usr/share/festival/voices", "/usr/local/share/festival/voices",
                                  "/usr/lib/festival/voices"};
    for (size_t r = 0; r < sizeof roots / sizeof roots[0]; r++) {
        DIR *d = opendir(roots[r]);
        if (!d) continue;
        struct dirent *e;
        int found = 0;
        while (!found && (e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char p[1024];
            struct stat sb;
            snprintf(p, sizeof p, "%s/%s/%s", roots[r], e->d_name, name);
            if (stat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) found = 1;
        }
        closedir(d);
        if (found) return 1;
    }
    return 0;
}

static void add_missing(char *msg, size_t cap, char *pkgs, size_t pcap, const char *what,
                        const char *pkg)
{
    size_t n = strlen(msg);
    snprintf(msg + n, cap - n, "%s%s", n ? ", " : "", what);
    if (!has_token(pkgs, pkg)) {
        n = strlen(pkgs);
        snprintf(pkgs + n, pcap - n, " %s", pkg);
    }
}

tm_status ft_check_engines(void)
{
    char missing[2048] = "", pkgs[512] = "";
    char *espeak_voices = NULL, *espeak_variants = NULL, *flite_voices = NULL;
    char *a1[] = {"espeak-ng", "--voices=en", NULL};
    char *a2[] = {"espeak-ng", "--voices=variant", NULL};
    char *a3[] = {"flite", "-lv", NULL};
    tm_status s1 = ft_run(a1, 30, &espeak_voices);
    tm_status s2 = s1 == TM_OK ? ft_run(a2, 30, &espeak_variants) : s1;
    tm_status s3 = ft_run(a3, 30, &flite_voices);
    char *a4[] = {"festival", "--version", NULL};
    char *fv = NULL;
    tm_status s4 = ft_run(a4, 30, &fv);
    tm_free(fv);
    if (s1 == TM_ERR_UNSUPPORTED)
        add_missing(missing, sizeof missing, pkgs, sizeof pkgs, "the program espeak-ng",
                    "espeak-ng");
    if (s3 == TM_ERR_UNSUPPORTED)
        add_missing(missing, sizeof missing, pkgs, sizeof pkgs, "the program flite", "flite");
    if (s4 == TM_ERR_UNSUPPORTED)
        add_missing(missing, sizeof missing, pkgs, sizeof pkgs, "the program festival", "festival");
    tm_status other = TM_OK;
    char other_msg[512] = "";
    tm_status ss[3] = {s2, s3, s4};
    for (int i = 0; i < 3; i++)
        if (ss[i] != TM_OK && ss[i] != TM_ERR_UNSUPPORTED && other == TM_OK) {
            other = ss[i];
            snprintf(other_msg, sizeof other_msg, "%s", tm_last_error());
        }
    for (int v = 0; v < ft_n_voices; v++) {
        const ft_voice *vo = &ft_voices[v];
        char what[160];
        if (vo->engine == FT_ESPEAK && s1 == TM_OK && s2 == TM_OK) {
            char base[64], var[64];
            const char *plus = strchr(vo->name, '+');
            snprintf(base, sizeof base, "%.*s", (int)(plus - vo->name), vo->name);
            snprintf(var, sizeof var, "!v/%s", plus + 1);
            if (!has_token(espeak_voices, base)) {
                snprintf(what, sizeof what, "espeak-ng voice %s", base);
                if (!strstr(missing, what))
                    add_missing(missing, sizeof missing, pkgs, sizeof pkgs, what, "espeak-ng-data");
            }
            if (!has_token(espeak_variants, var)) {
                snprintf(what, sizeof what, "espeak-ng variant %s", plus + 1);
                if (!strstr(missing, what))
                    add_missing(missing, sizeof missing, pkgs, sizeof pkgs, what, "espeak-ng-data");
            }
        } else if (vo->engine == FT_FLITE && s3 == TM_OK) {
            if (!has_token(flite_voices, vo->name)) {
                snprintf(what, sizeof what, "flite voice %s", vo->name);
                add_missing(missing, sizeof missing, pkgs, sizeof pkgs, what, "flite");
            }
        } else if (vo->engine == FT_FESTIVAL && s4 == TM_OK) {
            if (!festival_voice_installed(vo->name)) {
                snprintf(what, sizeof what, "festival voice %s", vo->name);
                add_missing(missing, sizeof missing, pkgs, sizeof pkgs, what, vo->package);
            }
        }
    }
    tm_free(espeak_voices);
    tm_free(espeak_variants);
    tm_free(flite_voices);
    if (missing[0])
        return tm_fail(TM_ERR_UNSUPPORTED,
                       "FashionTri needs text-to-speech that is not installed: "
                       "%s; install it with apt-get install -y%s (or "
                       "scripts/deps.sh)",
                       missing, pkgs);
    if (other != TM_OK) return tm_fail(other, "%s", other_msg);
    return TM_OK;
}

/* ---------------------------------------------------------- rendering */

/* Silence trimming: frames of 10 ms; the speech runs from the first to the
 * last frame whose RMS is within 40 dB of the loudest frame's, plus 40 ms
 * either side (the engines pad sentences with up to half a second of
 * silence, and some with a faint click). */
#define TRIM_FRAME 160
#define TRIM_DB 40.0
#define TRIM_MARGIN 640

static tm_status trim_bounds(const float *x, int64_t n, int64_t *begin, int64_t *end)
{
    int64_t nf = (n + TRIM_FRAME - 1) / TRIM_FRAME;
    double best = 0;
    for (int64_t f = 0; f < nf; f++) {
        double e = 0;
        int64_t a = f * TRIM_FRAME, b = a + TRIM_FRAME < n ? a + TRIM_FRAME : n;
        for (int64_t i = a; i < b; i++)
            e += (double)x[i] * x[i];
        e /= (double)TRIM_FRAME;
        if (e > best) best = e;
    }
    if (!(best > 0)) return TM_ERR_INVALID;
    double thr = best * pow(10.0, -TRIM_DB / 10.0);
    int64_t f0 = -1, f1 = -1;
    for (int64_t f = 0; f < nf; f++) {
        double e = 0;
        int64_t a = f * TRIM_FRAME, b = a + TRIM_FRAME < n ? a + TRIM_FRAME : n;
        for (int64_t i = a; i < b; i++)
            e += (double)x[i] * x[i];
        e /= (double)TRIM_FRAME;
        if (e >= thr) {
            if (f0 < 0) f0 = f;
            f1 = f;
        }
    }
    *begin = f0 * TRIM_FRAME - TRIM_MARGIN > 0 ? f0 * TRIM_FRAME - TRIM_MARGIN : 0;
    int64_t e = (f1 + 1) * TRIM_FRAME + TRIM_MARGIN;
    *end = e < n ? e : n;
    return TM_OK;
}

/* Engine output -> the cached 16 kHz clip. */
static tm_status finish_render(ft_utterance *u, const char *raw)
{
    const ft_voice *v = &ft_voices[u->voice];
    tm_audio_load_params lp = tm_audio_load_default_params();
    lp.sample_rate = FT_SAMPLE_RATE;
    lp.resampler = TM_RESAMPLE_SINC_MEDIUM;
    lp.max_seconds = 60;
    tm_audio *a = NULL;
    tm_status s = tm_audio_load_file(&a, raw, lp);
    if (s != TM_OK)
        return tm_fail(s, "%s made no usable audio for \"%s\": %s", v->id, u->text,
                       tm_last_error());
    int64_t b = 0, e = 0;
    if (trim_bounds(a->samples, a->n_samples, &b, &e) != TM_OK || e - b < FT_SAMPLE_RATE / 10) {
        tm_audio_free(a);
        return tm_fail(TM_ERR_INTERNAL, "%s rendered \"%s\" as silence (or under 0.1 s)", v->id,
                       u->text);
    }
    float peak = 0;
    double energy = 0;
    for (int64_t i = b; i < e; i++)
        peak = fmaxf(peak, fabsf(a->samples[i]));
    float g = 0.9f / peak;
    for (int64_t i = b; i < e; i++) {
        a->samples[i] *= g;
        energy += (double)a->samples[i] * a->samples[i];
    }
    /* Every clip made from this one gets noise at most FT_SNR_MAX_DB under
     * the speech; the cached PCM keeps FT_QUANT_MARGIN_DB under that. */
    double rms = sqrt(energy / (double)(e - b));
    int q = ft_pcm_step(rms * pow(10.0, -FT_SNR_MAX_DB / 20.0), FT_QUANT_MARGIN_DB);
    s = ft_write_flac(u->path, a->samples + b, e - b, q, NULL);
    u->seconds = (double)(e - b) / FT_SAMPLE_RATE;
    tm_audio_free(a);
    unlink(raw);
    return s;
}

/* Writes s into a Scheme string literal (quotes and backslashes escaped;
 * the terms checker already refuses both in sentences, paths may hold
 * them). */
static void scheme_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static tm_status render_festival(ft_utterance *u, const int *idx, int n, const char *tmp_dir)
{
    const ft_voice *v = &ft_voices[u[idx[0]].voice];
    char script[4096], raw[4096];
    snprintf(script, sizeof script, "%s/%016llx.scm", tmp_dir, (unsigned long long)u[idx[0]].key);
    FILE *f = fopen(script, "w");
    if (!f) return tm_fail(TM_ERR_IO, "%s: cannot write: %s", script, strerror(errno));
    fprintf(f, "(voice_%s)\n", v->name);
    for (int i = 0; i < n; i++) {
        snprintf(raw, sizeof raw, "%s/%016llx.wav", tmp_dir, (unsigned long long)u[idx[i]].key);
        fputs("(utt.save.wave (SynthText ", f);
        scheme_string(f, u[idx[i]].text);
        fputs(") ", f);
        scheme_string(f, raw);
        fputs(" 'riff)\n", f);
    }
    if (fclose(f) != 0) {
        unlink(script);
        return tm_fail(TM_ERR_IO, "%s: cannot write: %s", script, strerror(errno));
    }
    char *argv[] = {"festival", "-b", script, NULL};
    tm_status s = ft_run(argv, 60.0 + 5.0 * n, NULL);
    unlink(script);
    if (s != TM_OK) return tm_fail(s, "festival voice %s: %s", v->name, tm_last_error());
    for (int i = 0; i < n && s == TM_OK; i++) {
        snprintf(raw, sizeof raw, "%s/%016llx.wav", tmp_dir, (unsigned long long)u[idx[i]].key);
        s = finish_render(&u[idx[i]], raw);
    }
    return s;
}

tm_status ft_render(ft_utterance *u, const int *idx, int n, const char *tmp_dir)
{
    if (n < 1) return TM_OK;
    if (ft_voices[u[idx[0]].voice].engine == FT_FESTIVAL)
        return render_festival(u, idx, n, tmp_dir);
    for (int i = 0; i < n; i++) {
        ft_utterance *t = &u[idx[i]];
        const ft_voice *v = &ft_voices[t->voice];
        char raw[4096];
        snprintf(raw, sizeof raw, "%s/%016llx.wav", tmp_dir, (unsigned long long)t->key);
        tm_status s;
        if (v->engine == FT_ESPEAK) {
            char *argv[] = {"espeak-ng", "-v", (char *)v->name, "-w", raw, "--", t->text, NULL};
            s = ft_run(argv, 60, NULL);
        } else {
            char *argv[] = {"flite", "-voice", (char *)v->name, "-t", t->text, "-o", raw, NULL};
            s = ft_run(argv, 60, NULL);
        }
        if (s != TM_OK) return tm_fail(s, "%s, \"%s\": %s", v->id, t->text, tm_last_error());
        s = finish_render(t, raw);
        if (s != TM_OK) return s;
    }
    return TM_OK;
}
