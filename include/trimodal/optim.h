/*
 * trimodal optim: optimizers (SGD, AdamW), gradient clipping and
 * learning-rate schedules, all working on flat buffers.
 *
 * The graph keeps every parameter in one contiguous f32 buffer and every
 * gradient in another (tm_graph_params / tm_graph_grads); an optimizer here
 * updates the whole buffer in one pass and keeps its own state (moments,
 * momentum) in one more contiguous buffer, so a checkpoint is one write.
 *
 * A training step looks like:
 *
 *     tm_graph_backward(g);
 *     tm_clip_grad_norm(grads, n, 1.0f, &norm);
 *     float lr = tm_lr_at(&sched, tm_optim_step_count(opt));
 *     tm_optim_step(opt, params, grads, lr);
 *
 * Semantics follow PyTorch: torch.optim.SGD, torch.optim.AdamW (without
 * amsgrad) and torch.nn.utils.clip_grad_norm_, so hyper-parameters carry
 * over unchanged.
 *
 * Thread-safety: a tm_optim must not be used from two threads at once;
 * different optimizers may. The update loops run on the library's thread
 * pool and give bit-identical results for any thread count. The schedule
 * functions are pure.
 */
#ifndef TRIMODAL_OPTIM_H
#define TRIMODAL_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "trimodal/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------ optimizers */

typedef enum {
    TM_OPTIM_SGD = 0, /* SGD with optional (Nesterov) momentum, coupled L2 decay */
    TM_OPTIM_ADAMW,   /* Adam with decoupled weight decay and bias correction */
    TM_OPTIM_KIND_COUNT
} tm_optim_kind;

/* Hyper-parameters, from tm_optim_default_params(). Fields that the chosen
 * kind does not use are ignored and not checked. New fields are added at
 * the end. */
typedef struct {
    tm_optim_kind kind;
    float lr;           /* >= 0; used when a step passes TM_OPTIM_LR_DEFAULT */
    float weight_decay; /* >= 0; SGD: added to the gradient (L2); AdamW:
                           p *= 1 - lr * weight_decay before the update */
    /* SGD */
    float momentum;  /* >= 0; 0 disables momentum (and its state) */
    float dampening; /* in [0, 1]; the first step is never damped (as torch) */
    int nesterov;    /* needs momentum > 0 and dampening == 0 */
    /* AdamW. The betas are doubles because 1 - beta is what the update
     * uses, and in float 1 - 0.999f is off by 1.3e-5 relative. */
    double beta1; /* in [0, 1) */
    double beta2; /* in [0, 1) */
    float eps;    /* > 0; added to sqrt(v_hat) */
} tm_optim_params;

/* The defaults of PyTorch for that kind: SGD lr 1e-3 (torch has none),
 * momentum 0, dampening 0, no Nesterov, weight decay 0; AdamW lr 1e-3,
 * betas (0.9, 0.999), eps 1e-8, weight decay 1e-2. */
tm_optim_params tm_optim_default_params(tm_optim_kind kind);

/* Checks the hyper-parameters; TM_ERR_INVALID with a message naming the
 * first bad field (negative lr, beta outside [0, 1), NaN, ...). */
tm_status tm_optim_params_check(const tm_optim_params *p);

typedef struct tm_optim tm_optim;

/* A new optimizer for a flat buffer of n_params floats, with zeroed state
 * and a step count of 0. Fails with TM_ERR_INVALID on bad hyper-parameters
 * and TM_ERR_NOMEM when the state cannot be allocated. n_params may be 0. */
tm_status tm_optim_new(tm_optim **out, tm_optim_params params, size_t n_params);
void tm_optim_free(tm_optim *opt); /* NULL is harmless */

/* Pass as the lr of tm_optim_step to use params.lr. */
#define TM_OPTIM_LR_DEFAULT (-1.0f)

/* One update of params (n_params floats, in place) from grads (n_params
 * floats, not modified), then step count + 1.
 *
 * lr is this step's learning rate, so that a schedule can drive it (see
 * tm_lr_at); it replaces params.lr for this step only, exactly as setting
 * param_group["lr"] before optimizer.step() in torch. It must be finite and
 * >= 0, or TM_OPTIM_LR_DEFAULT. AdamW's decoupled decay uses this lr too.
 * Elements whose decay mask is 0 (see tm_optim_set_decay_mask) get no
 * weight decay. params and grads must not overlap. On failure (NULL
 * buffers, bad lr) nothing is changed. */
tm_status tm_optim_step(tm_optim *opt, float *params, const float *grads, float lr);

/* The optimizer state as one contiguous buffer, for checkpoints: SGD with
 * momentum holds the momentum buffer (n_params floats); SGD without
 * momentum holds nothing (*count = 0, returns NULL); AdamW holds the first
 * moments then the second moments (2 * n_params floats). The pointer stays
 * valid for the optimizer's life; write into it to restore a checkpoint.
 * count may be NULL. */
float *tm_optim_state(tm_optim *opt, size_t *count);

/* Number of steps taken (AdamW's bias correction uses it; SGD treats step
 * 0 as the one that initialises the momentum buffer). */
int64_t tm_optim_step_count(const tm_optim *opt);
/* Restores the step count from a checkpoint; fails on a negative value. */
tm_status tm_optim_set_step_count(tm_optim *opt, int64_t step);

/* Zeroes the state and the step count (a fresh optimizer, same settings). */
void tm_optim_reset(tm_optim *opt);

/* The settings and the size the optimizer was made with. */
tm_optim_params tm_optim_get_params(const tm_optim *opt);
size_t tm_optim_num_params(const tm_optim *opt);

/* Per-element weight-decay mask: mask[i] != 0 decays element i, 0 exempts
 * it (biases, norms and embeddings usually are). The n_params bytes are
 * copied. NULL removes the mask (everything decays, the default). */
tm_status tm_optim_set_decay_mask(tm_optim *opt, const uint8_t *mask);
/* Sets decay on or off for elements [begin, end) (for example one
 * parameter's range in the flat buffer, from tm_node_data offsets); the
 * mask starts as "all decay" when none was set. Fails on a bad range. */
tm_status tm_optim_set_decay_range(tm_optim *opt, size_t begin, size_t end, int decay);

/* Per-element update mask: mask[i] != 0 trains element i; 0 freezes it: a
 * step changes neither the element nor its optimizer state (no weight
 * decay, no moment or momentum update), exactly as a tensor with
 * requires_grad False in torch. The n_params bytes are copied. NULL
 * removes the mask (everything is updated, the default). The trainer
 * freezes tensors by name prefix with it. */
tm_status tm_optim_set_update_mask(tm_optim *opt, const uint8_t *mask);
/* Sets update on or off for elements [begin, end); the mask starts as
 * "all updated" when none was set. Fails on a bad range. */
tm_status tm_optim_set_update_range(tm_optim *opt, size_t begin, size_t end, int update);
/* Number of elements a step updates (n_params without a mask). */
size_t tm_optim_update_count(const tm_optim *opt);

/* --------------------------------------------------- optimizer files */

/* Writes the optimizer to path (safetensors, atomically): its state as
 * tensors ("exp_avg" and "exp_avg_sq" for AdamW, "momentum_buffer" for SGD
 * with momentum, each (n_params) f32), and in the metadata the kind, the
 * step count, n_params and the hyper-parameters. Masks are settings, not
 * state: they are not saved. */
tm_status tm_optim_save(const tm_optim *opt, const char *path);

/* Restores the state and step count saved by tm_optim_save into opt,
 * which must have the same kind, momentum use and n_params (else
 * TM_ERR_INVALID naming the difference); hyper-parameters are taken from
 * opt, not the file (a resumed run may change them). TM_ERR_FORMAT for a
 * damaged file. On failure opt is unchanged. */
tm_status tm_optim_load(tm_optim *opt, const char *path);

/* ------------------------------------------------------------- clipping */

/* Global L2 norm of n gradients, as torch.nn.utils.clip_grad_norm_ with
 * norm_type 2 on all of them at once: when the norm exceeds max_norm every
 * gradient is multiplied by max_norm / (norm + 1e-6); otherwise (a
 * coefficient >= 1) nothing changes. max_norm must be > 0 (INFINITY only
 * measures). The norm is accumulated in double over fixed chunks, then the
 * chunk sums are added in order, so it is identical for any thread count.
 * *total_norm_out (may be NULL) gets the norm before clipping. When the
 * norm is not finite (inf or NaN gradients) the gradients are left alone,
 * the norm is still reported and the status is TM_OK: the caller decides
 * whether to skip the step (as loss scaling does). */
tm_status tm_clip_grad_norm(float *grads, size_t n, float max_norm, float *total_norm_out);

/* The same global L2 norm without touching the gradients, in double. */
tm_status tm_grad_norm(const float *grads, size_t n, double *norm_out);

/* ------------------------------------------------------- LR schedules */

typedef enum {
    TM_LR_CONSTANT = 0, /* base_lr */
    TM_LR_COSINE,       /* cosine from base_lr to min_lr over the decay steps */
    TM_LR_STEP,         /* base_lr * gamma^(k / step_size) */
    TM_LR_KIND_COUNT
} tm_lr_kind;

/* A schedule: plain data, passed and copied freely. Every kind may start
 * with a linear warm-up of warmup_steps steps (0 = none); `step` below is
 * 0-based (the optimizer's step count before the update), and k = step -
 * warmup_steps counts steps after the warm-up.
 *
 *   warm-up (step < warmup_steps):
 *       base_lr * (f + (1 - f) * step / warmup_steps), f = warmup_start_factor
 *       (torch LinearLR with start_factor f, total_iters warmup_steps)
 *   constant: base_lr
 *   cosine:   min_lr + (base_lr - min_lr) * (1 + cos(pi * k / D)) / 2 for
 *             k < D = total_steps - warmup_steps, then min_lr
 *             (torch CosineAnnealingLR with T_max D, eta_min min_lr)
 *   step:     base_lr * gamma^floor(k / step_size)  (torch StepLR)
 */
typedef struct {
    tm_lr_kind kind;
    float base_lr;             /* >= 0, finite */
    int64_t warmup_steps;      /* >= 0 */
    float warmup_start_factor; /* in [0, 1]; 0 starts the warm-up at lr 0 */
    /* cosine */
    float min_lr;        /* in [0, base_lr] */
    int64_t total_steps; /* >= warmup_steps: where the decay reaches min_lr */
    /* step */
    int64_t step_size; /* >= 1 */
    float gamma;       /* in (0, 1] */
} tm_lr_schedule;

/* Defaults: base_lr 1e-3, no warm-up (start factor 0), cosine over 1000
 * steps to min_lr 0, step decay by 0.1 every 1000 steps. */
tm_lr_schedule tm_lr_schedule_default_params(tm_lr_kind kind);

/* TM_ERR_INVALID with a message naming the first bad field. */
tm_status tm_lr_schedule_check(const tm_lr_schedule *s);

/* The learning rate at a 0-based step (negative steps count as 0). NaN for
 * an invalid schedule (check it first with tm_lr_schedule_check; a NaN lr
 * makes tm_optim_step fail, so it cannot slip through silently). Computed
 * in double, rounded once to float. */
float tm_lr_at(const tm_lr_schedule *s, int64_t step);

/* ------------------------------------------------- dynamic loss scaling */

/* Dynamic loss scaling for f16 mixed precision (the scheme of PyTorch's
 * GradScaler). Each step:
 *
 *   tm_graph_set_loss_scale(g, tm_loss_scaler_scale(&ls));
 *   tm_graph_forward(g); tm_graph_backward(g);        grads = scale * dL/dp
 *   int finite;
 *   tm_loss_scaler_unscale(&ls, grads, n, &finite);   grads /= scale
 *   if (tm_loss_scaler_update(&ls, finite))            skip on inf/NaN
 *       tm_optim_step(opt, params, grads, lr);
 *
 * A step whose gradients hold an inf or NaN is skipped and the scale
 * multiplied by backoff_factor; after growth_interval finite steps in a row
 * the scale is multiplied by growth_factor. The state is a plain struct: a
 * trainer checkpoints scale and good_steps with the rest of its state. */
typedef struct {
    float init_scale;        /* 65536 (2^16); finite, > 0 */
    float growth_factor;     /* 2; > 1 */
    float backoff_factor;    /* 0.5; in (0, 1) */
    int64_t growth_interval; /* 2000; >= 1 */
    float min_scale;         /* 2^-24; the scale never backs off below it */
    float max_scale;         /* 2^24; nor grows above it */
} tm_loss_scaler_params;

typedef struct {
    tm_loss_scaler_params p;
    float scale;        /* the current scale */
    int64_t good_steps; /* finite steps since the scale last changed */
    int64_t skipped;    /* steps skipped so far */
    int64_t steps;      /* tm_loss_scaler_update calls so far */
} tm_loss_scaler;

tm_loss_scaler_params tm_loss_scaler_default_params(void);

/* TM_ERR_INVALID naming the first bad field (then *s is left untouched). */
tm_status tm_loss_scaler_init(tm_loss_scaler *s, tm_loss_scaler_params p);

float tm_loss_scaler_scale(const tm_loss_scaler *s); /* 1 for NULL */

/* grads[i] *= 1 / scale for the n gradients (exact when the scale is a
 * power of two, as it always is from the defaults), and *finite_out = 1 if
 * every result is finite, else 0. TM_ERR_INVALID for NULL arguments. */
tm_status tm_loss_scaler_unscale(const tm_loss_scaler *s, float *grads, size_t n,
                                 int *finite_out);

/* Advances the state machine after a step's gradients were checked:
 * returns 1 if the optimizer step should be applied (finite), 0 if it must
 * be skipped (the scale was backed off). NULL returns 0. */
int tm_loss_scaler_update(tm_loss_scaler *s, int finite);

#ifdef __cplusplus
}
#endif
#endif
