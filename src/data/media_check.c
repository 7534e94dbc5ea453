/* Media checks of a manifest: every image and audio file exists (and with
 * decode, decodes), in parallel over rows on threads of this file's own, so
 * a check never competes with the library's kernel pool. Each row's result
 * depends only on its files, so the report is the same for any thread
 * count. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "trimodal/data.h"

struct tm_media_report {
    int64_t n;
    tm_media_info *rows;
    int64_t failures;
};

typedef struct {
    const tm_manifest *m;
    tm_media_check_params p;
    tm_media_report *r;
    atomic_llong next;
} job;

tm_media_check_params tm_media_check_default_params(void)
{
    tm_media_check_params p;
    memset(&p, 0, sizeof p);
    p.image = tm_image_decode_default_params();
    p.image.channels = 0;
    p.audio = tm_audio_load_default_params();
    p.audio.sample_rate = 0;
    return p;
}

static char *message(const tm_manifest *m, const tm_manifest_row *row, const char *what,
                     const char *file, const char *why)
{
    size_t n = strlen(tm_manifest_path(m)) + strlen(what) + strlen(file) + strlen(why) + 48;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s:%lld: %s \"%s\": %s", tm_manifest_path(m), (long long)row->line, what,
                 file, why);
    return s;
}

static tm_status exists(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0) return tm_fail(TM_ERR_IO, "no such file (%s)", path);
    if (!S_ISREG(sb.st_mode)) return tm_fail(TM_ERR_IO, "not a regular file (%s)", path);
    if (sb.st_size == 0) return tm_fail(TM_ERR_FORMAT, "empty file (%s)", path);
    return TM_OK;
}

static void check_row(job *j, int64_t i)
{
    const tm_manifest_row *row = tm_manifest_row_at(j->m, i);
    tm_media_info *o = &j->r->rows[i];
    char *err = NULL;
    char buf[256];
    if (row->image) {
        o->has_image = 1;
        tm_status s = exists(row->image_path);
        if (!s && j->p.decode) {
            tm_image *img = NULL;
            s = tm_image_load(&img, row->image_path, j->p.image);
            if (!s) {
                o->width = img->width;
                o->height = img->height;
                o->channels = img->file_channels;
                o->image_format = tm_image_format_name(img->format);
                tm_image_free(img);
                if (row->has_region && (row->region[2] > o->width || row->region[3] > o->height)) {
                    snprintf(buf, sizeof buf,
                             "\"region\" [%g, %g, %g, %g] reaches outside the %d x %d image",
                             row->region[0], row->region[1], row->region[2], row->region[3],
                             o->width, o->height);
                    s = tm_fail(TM_ERR_INVALID, "%s", buf);
                }
            }
        }
        o->image_status = s;
        if (s && !err) err = message(j->m, row, "image", row->image, tm_last_error());
    }
    if (row->audio) {
        o->has_audio = 1;
        tm_status s = exists(row->audio_path);
        if (!s && j->p.decode) {
            tm_audio *a = NULL;
            s = tm_audio_load_file(&a, row->audio_path, j->p.audio);
            if (!s) {
                o->sample_rate = a->source_rate;
                o->audio_channels = a->source_channels;
                o->seconds = (double)a->source_frames / a->source_rate;
                o->audio_format = a->source_format;
                tm_audio_free(a);
                if (row->n_words && row->words[row->n_words - 1].end > o->seconds + 0.05) {
                    snprintf(buf, sizeof buf, "\"words\" end at %.3f s but the audio lasts %.3f s",
                             row->words[row->n_words - 1].end, o->seconds);
                    s = tm_fail(TM_ERR_INVALID, "%s", buf);
                }
            }
        }
        o->audio_status = s;
        if (s && !err) err = message(j->m, row, "audio", row->audio, tm_last_error());
    }
    o->error = err;
}

static void *run(void *arg)
{
    job *j = arg;
    for (;;) {
        int64_t i = atomic_fetch_add(&j->next, 1);
        if (i >= j->r->n) break;
        check_row(j, i);
    }
    return NULL;
}

tm_status tm_manifest_check_media(tm_media_report **out, const tm_manifest *m,
                                  const tm_media_check_params *params)
{
    *out = NULL;
    if (!m) return tm_fail(TM_ERR_INVALID, "check_media: NULL manifest");
    tm_media_check_params p = params ? *params : tm_media_check_default_params();
    if (p.threads < 0 || p.threads > 256)
        return tm_fail(TM_ERR_INVALID, "check_media: threads must be 0..256");
    tm_media_report *r = calloc(1, sizeof *r);
    if (!r) return tm_fail(TM_ERR_NOMEM, "check_media: out of memory");
    r->n = tm_manifest_count(m);
    r->rows = calloc((size_t)(r->n ? r->n : 1), sizeof *r->rows);
    if (!r->rows) {
        free(r);
        return tm_fail(TM_ERR_NOMEM, "check_media: out of memory");
    }
    job j;
    j.m = m;
    j.p = p;
    j.r = r;
    atomic_init(&j.next, 0);
    int nt = p.threads ? p.threads : tm_get_num_threads();
    if (nt > r->n) nt = r->n > 0 ? (int)r->n : 1;
    pthread_t th[256];
    int started = 0;
    for (int i = 1; i < nt; i++)
        if (!pthread_create(&th[started], NULL, run, &j)) started++;
    run(&j);
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    for (int64_t i = 0; i < r->n; i++)
        if (r->rows[i].error || r->rows[i].image_status || r->rows[i].audio_status) r->failures++;
    *out = r;
    return TM_OK;
}

const tm_media_info *tm_media_report_row(const tm_media_report *r, int64_t i)
{
    return r && i >= 0 && i < r->n ? &r->rows[i] : NULL;
}

int64_t tm_media_report_failures(const tm_media_report *r)
{
    return r ? r->failures : 0;
}

void tm_media_report_free(tm_media_report *r)
{
    if (!r) return;
    for (int64_t i = 0; i < r->n; i++)
        free((void *)r->rows[i].error);
    free(r->rows);
    free(r);
}
