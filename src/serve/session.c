/* Inference sessions: a model folder opened once (weights, tokenizer,
 * front-ends, class names), raw inputs turned into the model's inputs, and
 * batched classify / embed / caption on graphs made on first use. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "serve/serve_internal.h"
#include "trimodal/io.h"
#include "trimodal/ops.h"

#define MAX_SIZES 11 /* graph batches 1, 2, 4, ..., 1024 */

struct tm_example {
    unsigned present;
    int32_t *tokens; /* (T) */
    float *image;    /* (C*H*W) */
    float *mel;      /* (n_mels*n_frames) */
};

struct tm_session {
    tm_model *model;
    tm_model_info info;
    tm_session_params p;
    tm_tokenizer *tok;
    tm_preprocess_config pre;
    tm_logmel *logmel;
    tm_audio_load_params audio_load;
    int64_t T, CHW, MF, M, E, C;
    unsigned bit[TM_MODEL_MAX_MODALITIES];
    unsigned modalities;
    char **class_names;
    int32_t n_names;
    char *notes;
    char *name;
    char fingerprint[17];
    pthread_mutex_t lock;                 /* graphs, captioners and the fingerprint */
    tm_model_graph *graphs[2][MAX_SIZES]; /* [0 classify, 1 embed][log2 batch] */
    tm_model_captioner *cap[MAX_SIZES];
};

tm_session_params tm_session_default_params(void)
{
    tm_session_params p;
    memset(&p, 0, sizeof p);
    p.max_batch = 32;
    p.caption = tm_caption_default_params();
    p.max_image_pixels = TM_SESSION_DEFAULT_MAX_PIXELS;
    p.max_audio_seconds = TM_SESSION_DEFAULT_MAX_AUDIO_SECONDS;
    return p;
}

static int file_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static void add_note(tm_session *s, const char *note)
{
    size_t old = s->notes ? strlen(s->notes) : 0, n = strlen(note);
    char *p = realloc(s->notes, old + n + 2);
    if (!p) return;
    memcpy(p + old, note, n);
    p[old + n] = '\n';
    p[old + n + 1] = 0;
    s->notes = p;
}

/* Re-raises the current error with a prefix ("image: ..."). */
static tm_status prefixed(tm_status s, const char *what)
{
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", tm_last_error());
    return tm_fail(s, "%s: %s", what, msg);
}

/* labels.json: ["a", "b", ...] or {"labels": [...]}; dataset.json: {"classes": [...]} */
static tm_status load_names(tm_session *s, const char *path, const char *key, int required_key)
{
    char *text = NULL;
    size_t len = 0;
    tm_status st = tm_read_file(path, (size_t)tm_limit_get(TM_LIMIT_LABELS_JSON_BYTES), &text, &len);
    if (st == TM_ERR_LIMIT)
        return tm_fail(st, "%s (limit %s)", tm_last_error(),
                       tm_limit_hint(TM_LIMIT_LABELS_JSON_BYTES));
    if (st) return st;
    st = tm_json_check_depth(text, len, path);
    cJSON *root = st ? NULL : cJSON_ParseWithLength(text, len);
    tm_free(text);
    if (st) return st;
    if (!root) return tm_fail(TM_ERR_FORMAT, "%s: not valid JSON", path);
    const cJSON *arr = root;
    if (cJSON_IsObject(root)) arr = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!arr && !required_key) {
        cJSON_Delete(root);
        return TM_OK;
    }
    st = TM_OK;
    int n = cJSON_IsArray(arr) ? cJSON_GetArraySize(arr) : -1;
    if (n < 0)
        st = tm_fail(TM_ERR_FORMAT,
                     "%s: expected a JSON array of class names (or an object "
                     "with \"%s\": [...])",
                     path, key);
    else if (n != s->info.num_classes)
        st = tm_fail(TM_ERR_INVALID,
                     "%s: %d class names, but the model's classifier has %lld "
                     "classes; list one name per class, in class order",
                     path, n, (long long)s->info.num_classes);
    if (!st) {
        s->class_names = calloc((size_t)(n ? n : 1), sizeof *s->class_names);
        if (!s->class_names) st = tm_fail(TM_ERR_NOMEM, "out of memory");
        int i = 0;
        for (const cJSON *it = arr ? arr->child : NULL; !st && it; it = it->next, i++) {
            if (!cJSON_IsString(it) || !it->valuestring[0])
                st = tm_fail(TM_ERR_FORMAT, "%s: class %d is not a non-empty string", path, i);
            else if (!(s->class_names[i] = strdup(it->valuestring)))
                st = tm_fail(TM_ERR_NOMEM, "out of memory");
        }
        s->n_names = n;
    }
    cJSON_Delete(root);
    return st;
}

/* Fits the front-ends to the model's shapes; with a preprocess.json
 * (given = 1) disagreements are errors, without one the defaults adapt. */
static tm_status fit_front_ends(tm_session *s, int given, const char *ppath)
{
    tm_model_info *in = &s->info;
    tm_preprocess_config *c = &s->pre;
    if (in->image_h) {
        if (given) {
            if (c->image.channels != in->image_channels || c->image.height != in->image_h ||
                c->image.width != in->image_w)
                return tm_fail(TM_ERR_INVALID,
                               "%s: image gives %d x %d x %d (channels x height x width) but "
                               "the model's vision encoder takes %lld x %lld x %lld; fix "
                               "image.channels/height/width",
                               ppath, c->image.channels, c->image.height, c->image.width,
                               (long long)in->image_channels, (long long)in->image_h,
                               (long long)in->image_w);
            if (c->image.patch)
                return tm_fail(TM_ERR_INVALID,
                               "%s: image.patch must be 0 for a model folder "
                               "(the model patchifies itself)",
                               ppath);
        } else {
            c->image.channels = (int)in->image_channels;
            c->image.height = (int)in->image_h;
            c->image.width = (int)in->image_w;
            c->image.size = (int)(in->image_h > in->image_w ? in->image_h : in->image_w);
            c->image.patch = 0;
        }
        int nd;
        int64_t shape[3];
        tm_status st = tm_image_preprocess_shape(&nd, shape, c->image);
        if (st) return prefixed(st, ppath);
    }
    if (in->n_mels) {
        if (given && c->audio.n_mels != in->n_mels)
            return tm_fail(TM_ERR_INVALID,
                           "%s: audio.n_mels is %d but the model's audio encoder takes %lld "
                           "mel bins",
                           ppath, c->audio.n_mels, (long long)in->n_mels);
        c->audio.n_mels = (int)in->n_mels;
        c->audio.target_frames = (int)in->n_frames;
        tm_status st = tm_logmel_new(&s->logmel, c->audio);
        if (st) return prefixed(st, ppath);
        s->audio_load = tm_audio_load_default_params();
        s->audio_load.sample_rate = c->audio.sample_rate;
        s->audio_load.resampler = c->audio.resampler;
        s->audio_load.max_seconds = s->p.max_audio_seconds;
    }
    if (in->text_tokens) {
        c->text.max_length = (int32_t)in->text_tokens;
        c->text.pad_to_max_length = 0;
    }
    return TM_OK;
}

tm_status tm_session_open(tm_session **out, const char *dir, const tm_session_params *params)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "session_open: NULL out");
    *out = NULL;
    if (!dir) return tm_fail(TM_ERR_INVALID, "session_open: NULL model folder");
    tm_session_params p = params ? *params : tm_session_default_params();
    if (p.max_batch < 1 || p.max_batch > 1024)
        return tm_fail(TM_ERR_INVALID, "session: max_batch %d outside 1..1024", p.max_batch);
    if (!p.max_image_pixels) p.max_image_pixels = TM_SESSION_DEFAULT_MAX_PIXELS;
    if (!(p.max_audio_seconds > 0)) p.max_audio_seconds = TM_SESSION_DEFAULT_MAX_AUDIO_SECONDS;
    tm_session *s = calloc(1, sizeof *s);
    if (!s) return tm_fail(TM_ERR_NOMEM, "session: out of memory");
    s->p = p;
    pthread_mutex_init(&s->lock, NULL);
    tm_status st = tm_model_load(&s->model, dir);
    /* f32 models run on packed f32 weights (bitwise the same results as
     * plain, prepared once and shared by every graph of the session);
     * TRIMODAL_WEIGHTS (docs/quantization.md) still chooses another form */
    if (!st && tm_model_weights(s->model) == TM_WEIGHTS_PLAIN && !getenv("TRIMODAL_WEIGHTS"))
        st = tm_model_set_weights(s->model, TM_WEIGHTS_F32);
    char *path = NULL;
    if (!st) {
        s->info = tm_model_get_info(s->model);
        tm_model_info *in = &s->info;
        s->T = in->text_tokens;
        s->CHW = in->image_channels * in->image_h * in->image_w;
        s->MF = in->n_mels * in->n_frames;
        s->M = in->n_modalities;
        s->E = in->embed_dim;
        s->C = in->num_classes;
        for (int m = 0; m < in->n_modalities; m++) {
            s->bit[m] = tm_modality_from_name(in->modality[m]);
            s->modalities |= s->bit[m];
        }
        if (p.caption.max_tokens < 0 ||
            (in->caption_tokens && p.caption.max_tokens > in->caption_tokens - 1))
            st = tm_fail(TM_ERR_INVALID, "session: caption max_tokens %d outside 0..%lld",
                         p.caption.max_tokens, (long long)(in->caption_tokens - 1));
        else if (p.caption.beam < 1 || p.caption.beam > 64)
            st = tm_fail(TM_ERR_INVALID, "session: caption beam %d outside 1..64", p.caption.beam);
    }
    /* tokenizer */
    if (!st && !(path = join(dir, "tokenizer.json"))) st = tm_fail(TM_ERR_NOMEM, "out of memory");
    if (!st) {
        if (file_exists(path)) {
            st = tm_tokenizer_load_json(&s->tok, path);
            if (!st && s->info.text_tokens && tm_tokenizer_vocab_size(s->tok) > s->info.vocab_size)
                st = tm_fail(TM_ERR_INVALID,
                             "%s has %d ids but the model's text encoder has a vocabulary of "
                             "%lld; use the tokenizer the model was trained with",
                             path, tm_tokenizer_vocab_size(s->tok), (long long)s->info.vocab_size);
            if (!st && s->info.text_tokens &&
                tm_tokenizer_special_id(s->tok, TM_SPECIAL_PAD) >= 0 &&
                tm_tokenizer_special_id(s->tok, TM_SPECIAL_PAD) != s->info.pad_id) {
                char note[256];
                snprintf(note, sizeof note,
                         "tokenizer.json's pad id %d differs from the model's pad_id %d; "
                         "text is padded with the model's",
                         tm_tokenizer_special_id(s->tok, TM_SPECIAL_PAD), s->info.pad_id);
                add_note(s, note);
            }
        } else if (s->info.text_tokens) {
            add_note(s, s->info.caption_tokens
                            ? "no tokenizer.json in the model folder: text input is refused and "
                              "captions are given as token ids"
                            : "no tokenizer.json in the model folder: text input is refused");
        }
    }
    /* preprocess.json */
    free(path);
    path = NULL;
    if (!st && !(path = join(dir, "preprocess.json"))) st = tm_fail(TM_ERR_NOMEM, "out of memory");
    if (!st) {
        int given = file_exists(path);
        s->pre = tm_preprocess_default_config();
        if (given)
            st = tm_preprocess_config_load(&s->pre, path);
        else if (s->info.image_h || s->info.n_mels)
            add_note(s, "no preprocess.json in the model folder: using the default front-ends "
                        "(docs/preprocess.md) with the model's input shapes");
        if (!st) st = fit_front_ends(s, given, path);
    }
    /* class names */
    free(path);
    path = NULL;
    if (!st && s->C > 0) {
        char *lp = join(dir, "labels.json"), *dp = join(dir, "dataset.json");
        if (!lp || !dp)
            st = tm_fail(TM_ERR_NOMEM, "out of memory");
        else if (file_exists(lp))
            st = load_names(s, lp, "labels", 1);
        else if (file_exists(dp))
            st = load_names(s, dp, "classes", 0);
        free(lp);
        free(dp);
    }
    if (!st) {
        const char *nm = s->info.name && s->info.name[0] ? s->info.name : NULL;
        if (!nm) {
            const char *b = strrchr(dir, '/');
            nm = b && b[1] ? b + 1 : dir;
        }
        if (!(s->name = strdup(nm))) st = tm_fail(TM_ERR_NOMEM, "out of memory");
    }
    if (st) {
        tm_session_free(s);
        return st;
    }
    *out = s;
    return TM_OK;
}

void tm_session_free(tm_session *s)
{
    if (!s) return;
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < MAX_SIZES; i++)
            tm_model_graph_free(s->graphs[k][i]);
    for (int i = 0; i < MAX_SIZES; i++)
        tm_model_captioner_free(s->cap[i]);
    for (int32_t i = 0; i < s->n_names; i++)
        free(s->class_names[i]);
    free(s->class_names);
    tm_logmel_free(s->logmel);
    tm_tokenizer_free(s->tok);
    tm_model_free(s->model);
    free(s->notes);
    free(s->name);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

const char *tm_session_notes(const tm_session *s)
{
    return s && s->notes ? s->notes : "";
}
tm_model_info tm_session_info(const tm_session *s)
{
    return s->info;
}
tm_model *tm_session_model(tm_session *s)
{
    return s->model;
}
tm_session_params tm_session_get_params(const tm_session *s)
{
    return s->p;
}
const char *tm_session_name(const tm_session *s)
{
    return s->name;
}
int tm_session_can_classify(const tm_session *s)
{
    return s->C > 0;
}
int tm_session_can_embed(const tm_session *s)
{
    return s->E > 0;
}
int tm_session_can_caption(const tm_session *s)
{
    return s->info.caption_tokens > 0;
}
int tm_session_has_tokenizer(const tm_session *s)
{
    return s->tok != NULL;
}
unsigned tm_session_modalities(const tm_session *s)
{
    return s->modalities;
}

int tm_session_column(const tm_session *s, unsigned modality)
{
    for (int m = 0; m < s->M; m++)
        if (s->bit[m] == modality) return m;
    return -1;
}

const char *tm_session_class_name(const tm_session *s, int32_t i)
{
    if (!s || !s->class_names || i < 0 || i >= s->n_names) return NULL;
    return s->class_names[i];
}

/* ------------------------------------------------------------ examples */

void tm_example_free(tm_example *e)
{
    if (!e) return;
    free(e->tokens);
    free(e->image);
    free(e->mel);
    free(e);
}

unsigned tm_example_present(const tm_example *e)
{
    return e ? e->present : 0;
}
const int32_t *tm_example_tokens(const tm_example *e)
{
    return e ? e->tokens : NULL;
}
const float *tm_example_image(const tm_example *e)
{
    return e ? e->image : NULL;
}
const float *tm_example_mel(const tm_example *e)
{
    return e ? e->mel : NULL;
}

static tm_status prep_text(const tm_session *s, const tm_session_input *in, tm_example *e)
{
    if (!(s->modalities & TM_MODALITY_TEXT))
        return tm_fail(TM_ERR_INVALID, "text: the model '%s' has no text encoder", s->name);
    if (!s->tok)
        return tm_fail(TM_ERR_UNSUPPORTED,
                       "text: the model folder has no tokenizer.json, so text cannot be "
                       "tokenised; add the tokenizer the model was trained with");
    int32_t n = 0;
    tm_status st = tm_tokenizer_encode_into(s->tok, in->text, in->text_len, &s->pre.text, e->tokens,
                                            NULL, (int32_t)s->T, &n);
    if (st) return prefixed(st, "text");
    if (n == 0) return tm_fail(TM_ERR_INVALID, "text: the text is empty (it gives no tokens)");
    for (int32_t i = 0; i < n; i++)
        if (e->tokens[i] < 0 || e->tokens[i] >= s->info.vocab_size)
            return tm_fail(TM_ERR_INVALID, "text: token id %d outside the model's vocabulary",
                           e->tokens[i]);
    for (int64_t i = n; i < s->T; i++)
        e->tokens[i] = s->info.pad_id;
    return TM_OK;
}

static tm_status prep_image(const tm_session *s, const tm_session_input *in, tm_example *e)
{
    if (!(s->modalities & TM_MODALITY_IMAGE))
        return tm_fail(TM_ERR_INVALID, "image: the model '%s' has no vision encoder", s->name);
    tm_image_decode_params dp = tm_image_decode_default_params();
    dp.channels = (int)s->info.image_channels;
    dp.limits.max_pixels = s->p.max_image_pixels;
    tm_image *img = NULL;
    tm_status st = tm_image_decode(&img, in->image, in->image_len, dp);
    if (!st) st = tm_image_preprocess(e->image, (size_t)s->CHW, img, s->pre.image);
    tm_image_free(img);
    return st ? prefixed(st, "image") : TM_OK;
}

static tm_status prep_audio(const tm_session *s, const tm_session_input *in, tm_example *e)
{
    if (!(s->modalities & TM_MODALITY_AUDIO))
        return tm_fail(TM_ERR_INVALID, "audio: the model '%s' has no audio encoder", s->name);
    tm_audio *a = NULL;
    tm_status st = tm_audio_load_memory(&a, in->audio, in->audio_len, s->audio_load);
    if (!st) st = tm_logmel_compute(s->logmel, a->samples, a->n_samples, e->mel);
    tm_audio_free(a);
    return st ? prefixed(st, "audio") : TM_OK;
}

tm_status tm_session_prepare(const tm_session *s, const tm_session_input *in, tm_example **out)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "prepare: NULL out");
    *out = NULL;
    if (!s || !in) return tm_fail(TM_ERR_INVALID, "prepare: NULL session or input");
    int has_text = in->text != NULL, has_image = in->image != NULL, has_audio = in->audio != NULL;
    if (!has_text && !has_image && !has_audio)
        return tm_fail(TM_ERR_INVALID, "no input: give a text, an image and/or a sound");
    if (has_image && !in->image_len) return tm_fail(TM_ERR_INVALID, "image: the file is empty");
    if (has_audio && !in->audio_len) return tm_fail(TM_ERR_INVALID, "audio: the file is empty");
    tm_example *e = calloc(1, sizeof *e);
    if (!e) return tm_fail(TM_ERR_NOMEM, "out of memory");
    tm_status st = TM_OK;
    if ((s->T && !(e->tokens = calloc((size_t)s->T, sizeof *e->tokens))) ||
        (s->CHW && !(e->image = calloc((size_t)s->CHW, sizeof *e->image))) ||
        (s->MF && !(e->mel = calloc((size_t)s->MF, sizeof *e->mel))))
        st = tm_fail(TM_ERR_NOMEM, "out of memory");
    if (s->T && e->tokens)
        for (int64_t i = 0; i < s->T; i++)
            e->tokens[i] = s->info.pad_id;
    if (!st && has_text) st = prep_text(s, in, e);
    if (!st && has_image) st = prep_image(s, in, e);
    if (!st && has_audio) st = prep_audio(s, in, e);
    if (st) {
        tm_example_free(e);
        return st;
    }
    e->present = (has_text ? TM_MODALITY_TEXT : 0) | (has_image ? TM_MODALITY_IMAGE : 0) |
                 (has_audio ? TM_MODALITY_AUDIO : 0);
    *out = e;
    return TM_OK;
}

/* ------------------------------------------------------------- running */

static int log2i(int v)
{
    int k = 0;
    while ((1 << (k + 1)) <= v)
        k++;
    return k;
}

static void fill_inputs(const tm_session *s, tm_model_inputs in, tm_example *const *ex, int n)
{
    for (int b = 0; b < n; b++) {
        const tm_example *e = ex[b];
        if (in.tokens) memcpy(in.tokens + b * s->T, e->tokens, (size_t)s->T * sizeof(int32_t));
        if (in.image) memcpy(in.image + b * s->CHW, e->image, (size_t)s->CHW * sizeof(float));
        if (in.mel) memcpy(in.mel + b * s->MF, e->mel, (size_t)s->MF * sizeof(float));
        if (in.present)
            for (int64_t m = 0; m < s->M; m++)
                in.present[b * s->M + m] = (e->present & s->bit[m]) != 0;
    }
}

static tm_status check_examples(const tm_session *s, tm_example *const *ex, int n, const void *out)
{
    if (n < 1 || !ex || !out) return tm_fail(TM_ERR_INVALID, "session: no examples or no output");
    for (int i = 0; i < n; i++)
        if (!ex[i]) return tm_fail(TM_ERR_INVALID, "session: example %d is NULL", i);
    (void)s;
    return TM_OK;
}

/* One chunk of exactly `size` (a power of two) examples on graph kind. */
static tm_status run_chunk(tm_session *s, int kind, tm_example *const *ex, int size, float *out)
{
    int k = log2i(size);
    tm_model_graph **g = &s->graphs[kind][k];
    tm_status st = TM_OK;
    if (!*g) st = tm_model_graph_new(g, s->model, size, kind ? TM_MODEL_EMBED : TM_MODEL_CLASSIFY);
    if (st) return st;
    fill_inputs(s, tm_model_graph_inputs(*g), ex, size);
    if ((st = tm_model_graph_forward(*g))) return st;
    if (kind == 0) {
        const float *lg = tm_model_graph_logits(*g);
        for (int b = 0; b < size; b++) {
            const float *x = lg + (int64_t)b * s->C;
            float *y = out + (int64_t)b * s->C;
            double mx = -INFINITY, sum = 0;
            for (int64_t c = 0; c < s->C; c++)
                mx = x[c] > mx ? x[c] : mx;
            for (int64_t c = 0; c < s->C; c++)
                sum += exp((double)x[c] - mx);
            for (int64_t c = 0; c < s->C; c++)
                y[c] = (float)(exp((double)x[c] - mx) / sum);
        }
    } else {
        for (int64_t m = 0; m < s->M; m++) {
            const float *em = tm_model_graph_embeddings(*g, (int)m);
            for (int b = 0; b < size; b++) {
                float *y = out + ((int64_t)b * s->M + m) * s->E;
                if (em && (ex[b]->present & s->bit[m]))
                    memcpy(y, em + (int64_t)b * s->E, (size_t)s->E * sizeof(float));
                else
                    memset(y, 0, (size_t)s->E * sizeof(float));
            }
        }
    }
    return TM_OK;
}

/* Runs n examples as chunks of powers of two (the binary decomposition of
 * n, capped by max_batch), so that no graph row is padding. */
static tm_status run_batched(tm_session *s, int kind, tm_example *const *ex, int n, float *out,
                             int64_t row_floats)
{
    int top = 1 << log2i(s->p.max_batch);
    tm_status st = TM_OK;
    pthread_mutex_lock(&s->lock);
    for (int done = 0; !st && done < n;) {
        int size = top;
        while (size > n - done)
            size >>= 1;
        st = run_chunk(s, kind, ex + done, size, out + (int64_t)done * row_floats);
        done += size;
    }
    pthread_mutex_unlock(&s->lock);
    return st;
}

tm_status tm_session_classify(tm_session *s, tm_example *const *ex, int n, float *probs)
{
    if (!s) return tm_fail(TM_ERR_INVALID, "classify: NULL session");
    if (!s->C)
        return tm_fail(TM_ERR_INVALID,
                       "classify: the model '%s' has no classifier (config "
                       "\"classifier\")",
                       s->name);
    tm_status st = check_examples(s, ex, n, probs);
    return st ? st : run_batched(s, 0, ex, n, probs, s->C);
}

tm_status tm_session_embed(tm_session *s, tm_example *const *ex, int n, float *emb)
{
    if (!s) return tm_fail(TM_ERR_INVALID, "embed: NULL session");
    if (!s->E)
        return tm_fail(TM_ERR_INVALID,
                       "embed: the model '%s' has no contrastive heads (config "
                       "\"contrastive\"), so it gives no embeddings",
                       s->name);
    tm_status st = check_examples(s, ex, n, emb);
    return st ? st : run_batched(s, 1, ex, n, emb, s->M * s->E);
}

void tm_caption_result_clear(tm_caption_result *r)
{
    if (!r) return;
    tm_free(r->text);
    free(r->ids);
    memset(r, 0, sizeof *r);
}

static tm_status caption_chunk(tm_session *s, tm_example *const *ex, int size,
                               tm_caption_result *out)
{
    int k = log2i(size);
    tm_status st = TM_OK;
    if (!s->cap[k] && (st = tm_model_captioner_new(&s->cap[k], s->model, size, s->p.caption)))
        return st;
    fill_inputs(s, tm_model_captioner_inputs(s->cap[k]), ex, size);
    int mt = s->p.caption.max_tokens ? s->p.caption.max_tokens : (int)s->info.caption_tokens - 1;
    int32_t *ids = malloc((size_t)size * (size_t)mt * sizeof *ids);
    int32_t *lens = malloc((size_t)size * sizeof *lens);
    float *scores = malloc((size_t)size * sizeof *scores);
    if (!ids || !lens || !scores) st = tm_fail(TM_ERR_NOMEM, "caption: out of memory");
    if (!st) st = tm_model_captioner_run(s->cap[k], ids, lens, scores);
    for (int b = 0; !st && b < size; b++) {
        tm_caption_result *r = &out[b];
        r->n_ids = lens[b];
        r->score = scores[b];
        r->ids = malloc((size_t)(lens[b] ? lens[b] : 1) * sizeof *r->ids);
        if (!r->ids) {
            st = tm_fail(TM_ERR_NOMEM, "caption: out of memory");
            break;
        }
        memcpy(r->ids, ids + (int64_t)b * mt, (size_t)lens[b] * sizeof *r->ids);
        if (s->tok) st = tm_tokenizer_decode(s->tok, r->ids, r->n_ids, 1, &r->text, &r->text_len);
    }
    free(ids);
    free(lens);
    free(scores);
    return st;
}

tm_status tm_session_caption(tm_session *s, tm_example *const *ex, int n, tm_caption_result *out)
{
    if (!s) return tm_fail(TM_ERR_INVALID, "caption: NULL session");
    if (!s->info.caption_tokens)
        return tm_fail(TM_ERR_INVALID,
                       "caption: the model '%s' has no caption decoder (config "
                       "\"caption\")",
                       s->name);
    tm_status st = check_examples(s, ex, n, out);
    if (st) return st;
    memset(out, 0, (size_t)n * sizeof *out);
    int top = 1 << log2i(s->p.max_batch);
    pthread_mutex_lock(&s->lock);
    for (int done = 0; !st && done < n;) {
        int size = top;
        while (size > n - done)
            size >>= 1;
        st = caption_chunk(s, ex + done, size, out + done);
        done += size;
    }
    pthread_mutex_unlock(&s->lock);
    if (st)
        for (int i = 0; i < n; i++)
            tm_caption_result_clear(&out[i]);
    return st;
}

/* ---------------------------------------------------------- fingerprint */

const char *tm_session_fingerprint(tm_session *s)
{
    pthread_mutex_lock(&s->lock);
    if (!s->fingerprint[0]) {
        /* FNV-1a over 64-bit words: the canonical config, then every weight */
        uint64_t h = 0xcbf29ce484222325ull;
        const uint64_t prime = 0x100000001b3ull;
        char *cfg = tm_model_config_json(s->model);
        for (const char *c = cfg; c && *c; c++)
            h = (h ^ (unsigned char)*c) * prime;
        tm_free(cfg);
        size_t n = 0;
        const float *w = tm_model_params(s->model, &n);
        size_t i = 0;
        for (; i + 2 <= n; i += 2) {
            uint64_t v;
            memcpy(&v, w + i, 8);
            h = (h ^ v) * prime;
        }
        if (i < n) {
            uint32_t v;
            memcpy(&v, w + i, 4);
            h = (h ^ v) * prime;
        }
        snprintf(s->fingerprint, sizeof s->fingerprint, "%016llx", (unsigned long long)h);
    }
    pthread_mutex_unlock(&s->lock);
    return s->fingerprint;
}
