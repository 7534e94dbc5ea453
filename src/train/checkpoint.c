/*
 * Checkpoint folders. A checkpoint is out/checkpoints/step-NNNNNN/: the
 * model folder (config.json, model.safetensors), optimizer.safetensors and
 * trainer.json (step, stage, data position, seed, config hash, best
 * metric, length of the metrics log).
 *
 * Crash safety: everything is written into a temporary folder
 * (.tmp-step-NNNNNN), each file atomically and fsync'ed, trainer.json last;
 * the folder is fsync'ed and renamed into place, the parent fsync'ed, and
 * only then the pointer file checkpoints/latest is replaced (atomically).
 * A crash at any point leaves the previous checkpoints untouched; a
 * temporary folder left behind is ignored and removed by the next write.
 * Resuming trusts a checkpoint only when trainer.json says it is complete
 * and both safetensors files open (their headers and sizes are checked).
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "trimodal/io.h"
#include "train_internal.h"

#define STATE_MAX_BYTES ((size_t)1 << 20)

uint64_t tm_train_mix(uint64_t seed, uint64_t a, uint64_t b)
{
    uint32_t w[4];
    tm_philox(seed, 0x7472616eull /* "tran" */ ^ (a << 8), b, w);
    return ((uint64_t)w[0] << 32) | w[1];
}

char *tm_train_path(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = tm_alloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

tm_status tm_train_mkdir(const char *dir)
{
    if (mkdir(dir, 0777) == 0 || errno == EEXIST) {
        struct stat sb;
        if (stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode)) return TM_OK;
        return tm_fail(TM_ERR_IO, "%s exists and is not a folder", dir);
    }
    return tm_fail(TM_ERR_IO, "cannot create folder %s: %s", dir, strerror(errno));
}

static tm_status fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return tm_fail(TM_ERR_IO, "cannot open folder %s: %s", dir, strerror(errno));
    int r = fsync(fd);
    int e = errno;
    close(fd);
    if (r != 0 && e != EINVAL)
        return tm_fail(TM_ERR_IO, "cannot sync folder %s: %s", dir, strerror(e));
    return TM_OK;
}

tm_status tm_train_rmdir_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return TM_OK;
        return tm_fail(TM_ERR_IO, "cannot open folder %s: %s", dir, strerror(errno));
    }
    tm_status s = TM_OK;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *p = tm_train_path(dir, e->d_name);
        if (!p) {
            s = tm_fail(TM_ERR_NOMEM, "out of memory");
            break;
        }
        if (unlink(p) != 0 && errno != ENOENT)
            s = tm_fail(TM_ERR_IO, "cannot remove %s: %s", p, strerror(errno));
        tm_free(p);
        if (s) break;
    }
    closedir(d);
    if (!s && rmdir(dir) != 0 && errno != ENOENT)
        s = tm_fail(TM_ERR_IO, "cannot remove folder %s: %s", dir, strerror(errno));
    return s;
}

/* --------------------------------------------------------- trainer.json */

static void add_metric(cJSON *o, const char *k, double v)
{
    if (isfinite(v)) cJSON_AddNumberToObject(o, k, v);
    else cJSON_AddNullToObject(o, k);
}

static char *state_json(const ckpt_state *st)
{
    const tm_train_checkpoint *c = &st->pub;
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    char buf[32];
    cJSON_AddStringToObject(o, "format", TM_CKPT_FORMAT);
    cJSON_AddBoolToObject(o, "complete", 1);
    cJSON_AddNumberToObject(o, "step", (double)c->step);
    cJSON_AddNumberToObject(o, "stage", c->stage);
    cJSON_AddStringToObject(o, "stage_name", st->stage_name);
    cJSON_AddNumberToObject(o, "stage_step", (double)c->stage_step);
    cJSON_AddNumberToObject(o, "epoch", (double)c->epoch);
    cJSON_AddNumberToObject(o, "index", (double)c->index);
    /* 64-bit values as strings: JSON numbers are doubles */
    snprintf(buf, sizeof buf, "%" PRIu64, c->seed);
    cJSON_AddStringToObject(o, "seed", buf);
    snprintf(buf, sizeof buf, "%016" PRIx64, c->config_hash);
    cJSON_AddStringToObject(o, "config_hash", buf);
    add_metric(o, "best_metric", c->best_metric);
    cJSON_AddNumberToObject(o, "best_step", (double)c->best_step);
    add_metric(o, "stage_best", c->stage_best);
    cJSON_AddNumberToObject(o, "bad_evals", (double)c->bad_evals);
    cJSON_AddNumberToObject(o, "metrics_bytes", (double)c->metrics_bytes);
    if (st->has_scaler) {
        /* a float's value is exact in a JSON number (a double) */
        cJSON *ls = cJSON_AddObjectToObject(o, "loss_scaler");
        if (!ls) {
            cJSON_Delete(o);
            return NULL;
        }
        cJSON_AddNumberToObject(ls, "scale", (double)st->scale);
        cJSON_AddNumberToObject(ls, "good_steps", (double)st->good_steps);
        cJSON_AddNumberToObject(ls, "skipped", (double)st->skipped);
        cJSON_AddNumberToObject(ls, "steps", (double)st->scaler_steps);
        cJSON_AddNumberToObject(ls, "stage_skipped", (double)st->stage_skipped);
    }
    char *txt = cJSON_Print(o);
    cJSON_Delete(o);
    return txt;
}

static int get_i64(const cJSON *o, const char *k, int64_t lo, int64_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < lo ||
        v->valuedouble > 9007199254740992.0)
        return 0;
    *out = (int64_t)v->valuedouble;
    return 1;
}

static int get_metric(const cJSON *o, const char *k, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (cJSON_IsNull(v)) {
        *out = NAN;
        return 1;
    }
    if (!cJSON_IsNumber(v)) return 0;
    *out = v->valuedouble;
    return 1;
}

tm_status tm_train_ckpt_read_state(const char *dir, ckpt_state *out)
{
    memset(out, 0, sizeof *out);
    char *path = tm_train_path(dir, TM_CKPT_STATE);
    if (!path) return tm_fail(TM_ERR_NOMEM, "out of memory");
    char *txt = NULL;
    size_t n = 0;
    tm_status s = tm_read_file(path, STATE_MAX_BYTES, &txt, &n);
    if (s) {
        tm_free(path);
        return s;
    }
    cJSON *o = cJSON_ParseWithLength(txt, n);
    tm_free(txt);
    tm_train_checkpoint *c = &out->pub;
    int64_t stage = 0;
    const cJSON *fmt = o ? cJSON_GetObjectItemCaseSensitive(o, "format") : NULL;
    const cJSON *seed = o ? cJSON_GetObjectItemCaseSensitive(o, "seed") : NULL;
    const cJSON *hash = o ? cJSON_GetObjectItemCaseSensitive(o, "config_hash") : NULL;
    const cJSON *name = o ? cJSON_GetObjectItemCaseSensitive(o, "stage_name") : NULL;
    int ok = o && cJSON_IsString(fmt) && !strcmp(fmt->valuestring, TM_CKPT_FORMAT) &&
             cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "complete")) &&
             get_i64(o, "step", 0, &c->step) && get_i64(o, "stage", 0, &stage) &&
             stage <= TM_TRAIN_MAX_STAGES && get_i64(o, "stage_step", 0, &c->stage_step) &&
             get_i64(o, "epoch", 0, &c->epoch) && get_i64(o, "index", 0, &c->index) &&
             get_metric(o, "best_metric", &c->best_metric) &&
             get_i64(o, "best_step", -1, &c->best_step) &&
             get_metric(o, "stage_best", &c->stage_best) &&
             get_i64(o, "bad_evals", 0, &c->bad_evals) &&
             get_i64(o, "metrics_bytes", 0, &c->metrics_bytes) && cJSON_IsString(seed) &&
             cJSON_IsString(hash) && cJSON_IsString(name) &&
             strlen(name->valuestring) < sizeof out->stage_name;
    if (ok) {
        char *end;
        errno = 0;
        c->seed = strtoull(seed->valuestring, &end, 10);
        ok = !errno && *end == 0 && seed->valuestring[0];
        c->config_hash = strtoull(hash->valuestring, &end, 16);
        ok = ok && !errno && *end == 0 && hash->valuestring[0];
        c->stage = (int)stage;
        snprintf(out->stage_name, sizeof out->stage_name, "%s", name->valuestring);
    }
    /* optional: the loss scaler of an f16 run */
    const cJSON *ls = ok ? cJSON_GetObjectItemCaseSensitive(o, "loss_scaler") : NULL;
    if (ls) {
        const cJSON *sc = cJSON_GetObjectItemCaseSensitive(ls, "scale");
        ok = cJSON_IsObject(ls) && cJSON_IsNumber(sc) && sc->valuedouble > 0 &&
             sc->valuedouble < 3.4e38 && get_i64(ls, "good_steps", 0, &out->good_steps) &&
             get_i64(ls, "skipped", 0, &out->skipped) &&
             get_i64(ls, "steps", 0, &out->scaler_steps) &&
             get_i64(ls, "stage_skipped", 0, &out->stage_skipped) &&
             out->stage_skipped <= c->stage_step && out->skipped <= out->scaler_steps;
        if (ok) {
            out->has_scaler = 1;
            out->scale = (float)sc->valuedouble;
        }
    }
    cJSON_Delete(o);
    if (!ok) s = tm_fail(TM_ERR_FORMAT, "%s: not a complete trainer state (damaged or from an "
                         "interrupted write)", path);
    tm_free(path);
    return s;
}

static tm_status check_file(const char *dir, const char *name, int safetensors)
{
    char *p = tm_train_path(dir, name);
    if (!p) return tm_fail(TM_ERR_NOMEM, "out of memory");
    tm_status s = TM_OK;
    struct stat sb;
    if (stat(p, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        s = tm_fail(TM_ERR_FORMAT, "%s is missing", p);
    } else if (safetensors) {
        tm_safetensors *st = NULL;
        s = tm_safetensors_open(&st, p);
        tm_safetensors_close(st);
    }
    tm_free(p);
    return s;
}

tm_status tm_train_checkpoint_read(const char *dir, tm_train_checkpoint *out)
{
    if (!dir || !out) return tm_fail(TM_ERR_INVALID, "train_checkpoint_read: NULL argument");
    ckpt_state st;
    /* every file against checksums.json; the weights check their own
     * embedded checksum when check_file() opens them */
    tm_status s = tm_dir_checksums_verify(dir, TM_VERIFY_SKIP_SAFETENSORS, NULL);
    if (!s) s = tm_train_ckpt_read_state(dir, &st);
    if (!s) s = check_file(dir, "config.json", 0);
    if (!s) s = check_file(dir, "model.safetensors", 1);
    if (!s) s = check_file(dir, TM_CKPT_OPTIM, 1);
    if (s) return s;
    *out = st.pub;
    return TM_OK;
}

/* ------------------------------------------------------------- listing */

/* step-NNNNNN -> N; -1 for other names. */
static int64_t step_of(const char *name)
{
    if (strncmp(name, "step-", 5)) return -1;
    const char *q = name + 5;
    if (!*q) return -1;
    int64_t v = 0;
    for (; *q; q++) {
        if (*q < '0' || *q > '9' || v > INT64_MAX / 10 - 10) return -1;
        v = v * 10 + (*q - '0');
    }
    return v;
}

typedef struct {
    int64_t step;
    char name[64];
} ckpt_entry;

static int cmp_entry_desc(const void *a, const void *b)
{
    int64_t x = ((const ckpt_entry *)a)->step, y = ((const ckpt_entry *)b)->step;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* The step-* folders of dir, newest first (tm_free *out). */
static tm_status list_ckpts(const char *dir, ckpt_entry **out, int *n)
{
    *out = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? TM_OK : tm_fail(TM_ERR_IO, "cannot open %s: %s", dir,
                                                      strerror(errno));
    ckpt_entry *v = NULL;
    int cap = 0;
    struct dirent *e;
    tm_status s = TM_OK;
    while ((e = readdir(d))) {
        int64_t st = step_of(e->d_name);
        if (st < 0 || strlen(e->d_name) >= sizeof v->name) continue;
        if (*n == cap) {
            int nc = cap ? cap * 2 : 16;
            ckpt_entry *nv = tm_alloc((size_t)nc * sizeof *nv);
            if (!nv) {
                s = tm_fail(TM_ERR_NOMEM, "out of memory");
                break;
            }
            if (v) memcpy(nv, v, (size_t)*n * sizeof *nv);
            tm_free(v);
            v = nv;
            cap = nc;
        }
        v[*n].step = st;
        snprintf(v[*n].name, sizeof v[*n].name, "%s", e->d_name);
        (*n)++;
    }
    closedir(d);
    if (s) {
        tm_free(v);
        *n = 0;
        return s;
    }
    if (*n) qsort(v, (size_t)*n, sizeof *v, cmp_entry_desc);
    *out = v;
    return TM_OK;
}

tm_status tm_train_checkpoint_latest(const char *out_dir, char **path_out,
                                     void (*warn)(void *user, const char *message), void *user)
{
    if (!out_dir || !path_out) return tm_fail(TM_ERR_INVALID, "train_checkpoint_latest: NULL");
    *path_out = NULL;
    char *ckdir = tm_train_path(out_dir, "checkpoints");
    if (!ckdir) return tm_fail(TM_ERR_NOMEM, "out of memory");
    ckpt_entry *v = NULL;
    int n = 0;
    /* Newest valid folder first. checkpoints/latest normally names it; it
     * may lag behind only after a crash between the folder's rename and the
     * pointer's update, and then the newer complete folder is the right
     * one, so the scan does not need the pointer. */
    tm_status s = list_ckpts(ckdir, &v, &n);
    for (int i = 0; !s && i < n; i++) {
        char *p = tm_train_path(ckdir, v[i].name);
        if (!p) {
            s = tm_fail(TM_ERR_NOMEM, "out of memory");
            break;
        }
        tm_train_checkpoint c;
        tm_status rs = tm_train_checkpoint_read(p, &c);
        if (rs == TM_OK) {
            *path_out = p;
            break;
        }
        /* an encrypted checkpoint that cannot be read (no key, wrong key)
         * is not damaged: stop rather than start over (docs/security.md) */
        char *sp = tm_train_path(p, TM_CKPT_STATE);
        int enc = sp && tm_file_is_encrypted(sp);
        tm_free(sp);
        if (enc) {
            s = tm_fail(rs, "cannot resume from %s: %s", p, tm_last_error());
            tm_free(p);
            break;
        }
        if (warn) {
            char msg[1024];
            snprintf(msg, sizeof msg, "skipping damaged checkpoint %s: %s", p, tm_last_error());
            warn(user, msg);
        }
        tm_free(p);
    }
    tm_free(v);
    tm_free(ckdir);
    if (!s) tm_clear_error();
    return s;
}

/* ------------------------------------------------------------- writing */

#define EXTRA_MAX_BYTES ((size_t)256 << 20)

static tm_status copy_file(const char *src, const char *dir, const char *name)
{
    char *text = NULL, *dst = NULL;
    size_t n = 0;
    tm_status s = tm_read_file(src, EXTRA_MAX_BYTES, &text, &n);
    if (!s) {
        dst = tm_train_path(dir, name);
        s = dst ? tm_write_file_atomic(dst, text, n) : tm_fail(TM_ERR_NOMEM, "out of memory");
    }
    tm_free(text);
    tm_free(dst);
    return s;
}

tm_status tm_train_save_model(const tm_model *m, const char *dir, const model_extras *x)
{
    tm_status s = tm_model_save(m, dir);
    if (!s && x && x->tokenizer) s = copy_file(x->tokenizer, dir, "tokenizer.json");
    if (!s && x && x->preprocess) s = copy_file(x->preprocess, dir, "preprocess.json");
    if (!s && x && x->dataset) s = copy_file(x->dataset, dir, "dataset.json");
    return s;
}

static tm_status write_pointer(const char *ckdir, const char *which, const char *name)
{
    char *p = tm_train_path(ckdir, which);
    if (!p) return tm_fail(TM_ERR_NOMEM, "out of memory");
    char buf[80];
    int len = snprintf(buf, sizeof buf, "%s\n", name);
    tm_status s = tm_write_file_atomic(p, buf, (size_t)len);
    tm_free(p);
    return s;
}

/* Keeps the newest `keep` step folders and removes the others, and any
 * temporary folder left by a crash. */
static tm_status prune(const char *ckdir, int64_t keep, const char *protect)
{
    ckpt_entry *v = NULL;
    int n = 0;
    tm_status s = list_ckpts(ckdir, &v, &n);
    for (int i = (int)(keep < n ? keep : n); !s && i < n; i++) {
        if (protect && !strcmp(v[i].name, protect)) continue;
        char *p = tm_train_path(ckdir, v[i].name);
        s = p ? tm_train_rmdir_files(p) : tm_fail(TM_ERR_NOMEM, "out of memory");
        tm_free(p);
    }
    tm_free(v);
    return s;
}

/* Removes temporary folders (.tmp-*, .old-*) of earlier writes. */
static void clean_temps(const char *ckdir)
{
    DIR *d = opendir(ckdir);
    if (!d) return;
    struct dirent *e;
    char names[16][128];
    int n = 0;
    while ((e = readdir(d)) && n < 16)
        if ((!strncmp(e->d_name, ".tmp-", 5) || !strncmp(e->d_name, ".old-", 5)) &&
            strlen(e->d_name) < sizeof names[0])
            snprintf(names[n++], sizeof names[0], "%s", e->d_name);
    closedir(d);
    for (int i = 0; i < n; i++) {
        char *p = tm_train_path(ckdir, names[i]);
        if (p) tm_train_rmdir_files(p);
        tm_free(p);
    }
    tm_clear_error();
}

tm_status tm_train_ckpt_write(const char *out_dir, const tm_model *m, const tm_optim *opt,
                              const ckpt_state *st, int64_t keep, const model_extras *x,
                              const tm_train_hooks *hooks, char *name_out)
{
    char name[32], tmpname[48], oldname[48];
    snprintf(name, sizeof name, "step-%06" PRId64, st->pub.step);
    snprintf(tmpname, sizeof tmpname, ".tmp-%s", name);
    snprintf(oldname, sizeof oldname, ".old-%s", name);
    char *ckdir = tm_train_path(out_dir, "checkpoints");
    char *tmp = ckdir ? tm_train_path(ckdir, tmpname) : NULL;
    char *fin = ckdir ? tm_train_path(ckdir, name) : NULL;
    char *old = ckdir ? tm_train_path(ckdir, oldname) : NULL;
    char *optp = tmp ? tm_train_path(tmp, TM_CKPT_OPTIM) : NULL;
    char *statep = tmp ? tm_train_path(tmp, TM_CKPT_STATE) : NULL;
    char *json = state_json(st);
    tm_status s = TM_OK;
    if (!ckdir || !tmp || !fin || !old || !optp || !statep || !json) {
        s = tm_fail(TM_ERR_NOMEM, "checkpoint: out of memory");
        goto done;
    }
    if ((s = tm_train_mkdir(ckdir))) goto done;
    clean_temps(ckdir);
    if ((s = tm_train_mkdir(tmp))) goto done;
    void (*hook)(void *, const char *, const char *) = hooks ? hooks->on_checkpoint_file : NULL;
    void *user = hooks ? hooks->user : NULL;
    if ((s = tm_train_save_model(m, tmp, x))) goto done;
    if (hook) hook(user, tmp, "model.safetensors");
    if ((s = tm_optim_save(opt, optp))) goto done;
    if (hook) hook(user, tmp, TM_CKPT_OPTIM);
    if ((s = tm_write_file_atomic(statep, json, strlen(json)))) goto done;
    if (hook) hook(user, tmp, TM_CKPT_STATE);
    /* the folder's checksums, written last (docs/security.md) */
    if ((s = tm_dir_checksums_write(tmp))) goto done;
    if ((s = fsync_dir(tmp))) goto done;
    /* A folder of this name exists only when a resumed run rewrites a step
     * it had passed before; move it aside first (rename cannot replace a
     * non-empty folder). */
    struct stat sb;
    int had_old = stat(fin, &sb) == 0;
    if (had_old && rename(fin, old) != 0) {
        s = tm_fail(TM_ERR_IO, "cannot move %s aside: %s", fin, strerror(errno));
        goto done;
    }
    if (rename(tmp, fin) != 0) {
        s = tm_fail(TM_ERR_IO, "cannot rename %s to %s: %s", tmp, fin, strerror(errno));
        goto done;
    }
    if ((s = fsync_dir(ckdir))) goto done;
    if (had_old) tm_train_rmdir_files(old);
    if ((s = write_pointer(ckdir, "latest", name))) goto done;
    if ((s = prune(ckdir, keep, NULL))) goto done;
    if (name_out) snprintf(name_out, 32, "%s", name);
done:
    if (s && tmp) {
        /* keep the message of the failure, not of the clean-up */
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", tm_last_error());
        tm_train_rmdir_files(tmp);
        tm_fail(s, "checkpoint %s: %s", name, msg);
    }
    if (json) cJSON_free(json);
    tm_free(ckdir);
    tm_free(tmp);
    tm_free(fin);
    tm_free(old);
    tm_free(optp);
    tm_free(statep);
    return s;
}

tm_status tm_train_save_best(const char *out_dir, const tm_model *m, const model_extras *x,
                             int64_t step, const char *metric, double value)
{
    char *tmp = tm_train_path(out_dir, ".best-tmp");
    char *fin = tm_train_path(out_dir, "best");
    char *old = tm_train_path(out_dir, ".best-old");
    char *info = tmp ? tm_train_path(tmp, "best.json") : NULL;
    tm_status s = TM_OK;
    if (!tmp || !fin || !old || !info) {
        s = tm_fail(TM_ERR_NOMEM, "out of memory");
        goto done;
    }
    tm_train_rmdir_files(tmp);
    tm_train_rmdir_files(old);
    if ((s = tm_train_mkdir(tmp)) || (s = tm_train_save_model(m, tmp, x))) goto done;
    char buf[256];
    int len = snprintf(buf, sizeof buf, "{\"step\": %" PRId64 ", \"metric\": \"%s\", \"value\": %.9g}\n",
                       step, metric, value);
    if ((s = tm_write_file_atomic(info, buf, (size_t)len)) || (s = tm_dir_checksums_write(tmp)) ||
        (s = fsync_dir(tmp)))
        goto done;
    struct stat sb;
    if (stat(fin, &sb) == 0 && rename(fin, old) != 0) {
        s = tm_fail(TM_ERR_IO, "cannot move %s aside: %s", fin, strerror(errno));
        goto done;
    }
    if (rename(tmp, fin) != 0) {
        s = tm_fail(TM_ERR_IO, "cannot rename %s to %s: %s", tmp, fin, strerror(errno));
        goto done;
    }
    s = fsync_dir(out_dir);
    tm_train_rmdir_files(old);
done:
    if (s && tmp) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", tm_last_error());
        tm_train_rmdir_files(tmp);
        tm_fail(s, "saving the best model: %s", msg);
    }
    tm_free(tmp);
    tm_free(fin);
    tm_free(old);
    tm_free(info);
    return s;
}
