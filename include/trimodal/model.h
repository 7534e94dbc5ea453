/*
 * trimodal model: whole models (encoders, fusion, heads, losses) built from
 * a JSON config, their weights, and the graphs that run them.
 *
 *   tm_model *m;
 *   tm_model_load(&m, "models/bench-small");            // or tm_model_new_from_config
 *   tm_model_graph *train;
 *   tm_model_graph_new(&train, m, 32, TM_MODEL_TRAIN);  // loss, gradients
 *   tm_model_inputs in = tm_model_graph_inputs(train);  // fill tokens, image, mel, labels
 *   tm_model_graph_forward(train); tm_model_graph_backward(train);
 *   ... tm_optim_step(opt, tm_model_params(m, NULL), tm_model_grads(m, NULL), lr) over
 *       the first tm_model_trainable_count(m) floats ...
 *   tm_model_save(m, "models/run1");
 *
 * Weights. A model owns ONE flat f32 buffer of parameters (and one of
 * gradients, made with the first training graph), with a table of name ->
 * (offset, shape). Trainable tensors come first; fixed tables (sinusoidal
 * positions) sit at the end, so an optimizer over the first
 * tm_model_trainable_count() floats never touches them. Every graph of the
 * model (any batch size, any mode) uses these buffers directly
 * (tm_graph_share_params): an optimizer step is seen by all of them.
 *
 * The model folder (../docs/models.md): config.json (the architecture) and
 * model.safetensors (f32, PyTorch layouts and names, e.g.
 * "text.layers.0.attn.qkv.weight"). Loading checks every tensor's shape
 * against the config and reports missing and unexpected names.
 *
 * Inputs, for a graph of batch B: token ids (B, T) i32 with the config's
 * pad id (0) for padding, masked as keys; images (B, C, H, W); log-mel
 * (B, n_mels, n_frames); labels (B) i32 (-100 = no label; training only);
 * and a per-example modality-present mask (B, M) in encoder order: a
 * missing modality's tokens are masked as keys in fusion (never attended)
 * and the example drops out of the contrastive pairs that need it. The
 * data of a missing modality is ignored (any finite values).
 *
 * Thread-safety: a tm_model may be shared by graphs used from different
 * threads only while nothing writes its weights; creating graphs of one
 * model (the first training graph allocates its gradient buffer) and
 * loading or initialising weights are not safe concurrently. A
 * tm_model_graph is used by one thread at a time. Kernels use the
 * library's thread pool.
 */
#ifndef TRIMODAL_MODEL_H
#define TRIMODAL_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "trimodal/core.h"
#include "trimodal/graph.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tm_model tm_model;

/* ------------------------------------------------------------ creating */

/* A model from a config file (JSON; see docs/models.md), with zeroed
 * weights except the fixed tables; call tm_model_init_weights for fresh
 * ones. Fails with TM_ERR_INVALID and a message naming the key for unknown
 * keys, wrong types, impossible shapes; TM_ERR_IO when unreadable. */
tm_status tm_model_new_from_config(tm_model **out, const char *config_path);
/* The same from JSON text; origin names it in messages (may be NULL). */
tm_status tm_model_new_from_json(tm_model **out, const char *json, size_t len,
                                 const char *origin);

/* Loads a model folder: config.json, then model.safetensors, checking that
 * every tensor has the shape the config implies; missing tensors (other
 * than fixed tables, which are recomputed) and unexpected ones fail with
 * TM_ERR_FORMAT listing their names. F32, BF16 and F16 files load (the
 * latter two are widened to f32). */
tm_status tm_model_load(tm_model **out, const char *dir);

/* Writes dir/config.json and dir/model.safetensors (creating dir if
 * needed), each atomically. */
tm_status tm_model_save(const tm_model *m, const char *dir);

/* Fresh weights, PyTorch-default-like (docs/models.md): Linear and Conv
 * weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)); LayerNorm 1 and
 * 0; token embeddings N(0, 1); CLS tokens, learned positions and type
 * embeddings N(0, 0.02); logit_scale its configured initial value; fixed
 * tables their formula. A pure function of seed (any thread count). */
tm_status tm_model_init_weights(tm_model *m, uint64_t seed);

void tm_model_free(tm_model *m); /* NULL is harmless */

/* ------------------------------------------------------------ weights */

/* The flat buffers; count (may be NULL) gets the number of floats. The
 * gradient buffer is NULL until a training graph has been made. */
float *tm_model_params(tm_model *m, size_t *count);
float *tm_model_grads(tm_model *m, size_t *count);
/* Floats at the start of the buffer that are trained (the rest are fixed
 * tables); the parameter count of the model. */
size_t tm_model_trainable_count(const tm_model *m);

typedef struct {
    const char *name; /* valid while the model lives */
    int ndim;
    int64_t shape[TM_MAX_DIMS];
    size_t offset; /* in floats, into tm_model_params() */
    size_t numel;
    int frozen;    /* a fixed table: not trained */
} tm_model_tensor;

int tm_model_tensor_count(const tm_model *m);
tm_status tm_model_tensor_at(const tm_model *m, int i, tm_model_tensor *out);
/* Index of the tensor called name, or -1. */
int tm_model_find_tensor(const tm_model *m, const char *name);

/* ------------------------------------------------ quantized inference
 *
 * (docs/quantization.md) A model folder may hold quantized weights: its
 * model.safetensors then carries the metadata "quantization": "int8" (each
 * large weight stored I8 with an F32 "<name>.qscale" of one scale per
 * row, axis 0: value = q * scale) or "bf16" (weights stored BF16).
 * tm_model_load reads both transparently into the f32 parameter buffer
 * (int8 dequantized, bf16 widened), so everything that loads model
 * folders accepts them.
 *
 * The weight format of inference graphs: every TM_MODEL_CLASSIFY or
 * TM_MODEL_EMBED graph (and the captioner's) made while it is set calls
 * tm_graph_prepare_weights with it (graphs with a GEMM precision other
 * than f32 stay plain). tm_model_load sets it to TM_WEIGHTS_I8 or
 * TM_WEIGHTS_BF16 for a folder quantized that way (int8 weights re-quantize
 * to exactly the stored values), else to TM_WEIGHTS_PLAIN; the environment
 * variable TRIMODAL_WEIGHTS (plain, f32, bf16, int8) overrides that at
 * load. Models made from a config start with TM_WEIGHTS_PLAIN. Only
 * graphs made afterwards are affected. */
tm_status tm_model_set_weights(tm_model *m, tm_weights fmt);
tm_weights tm_model_weights(const tm_model *m); /* TM_WEIGHTS_PLAIN for NULL */
/* How the folder it was loaded from was stored: "int8", "bf16", or NULL
 * for f32 (or a model not loaded from a folder). */
const char *tm_model_quantization(const tm_model *m);

typedef struct {
    int64_t tensors_quantized; /* stored I8 or BF16 */
    int64_t tensors_kept;      /* left F32: 1-D (biases, norms) and small ones */
    uint64_t bytes_before;     /* model.safetensors, in and out */
    uint64_t bytes_after;
    double max_abs_error;      /* largest |w - dequantized w| over the weights */
} tm_quantize_report;

/* Writes a quantized copy of the model folder src to dst (created if
 * needed): model.safetensors with the weights as "int8" (fmt TM_WEIGHTS_I8)
 * or "bf16" (TM_WEIGHTS_BF16), every other regular file of src (config,
 * tokenizer, preprocess...) copied; each file written atomically. Weights
 * quantized: every tensor of 2 or more dimensions and at least 1024
 * elements (linear, conv and embedding weights); the rest stays F32.
 * src must load (tm_model_load); a src that is already quantized is
 * re-quantized from its dequantized values. dst must not be src.
 * TM_ERR_INVALID for a bad fmt or dst == src, TM_ERR_IO, TM_ERR_FORMAT
 * from loading src. report may be NULL. */
tm_status tm_model_quantize(const char *src, const char *dst, tm_weights fmt,
                            tm_quantize_report *report);

/* ------------------------------------------------------------ the config */

#define TM_MODEL_MAX_MODALITIES 4

/* What a caller needs to feed the model. */
typedef struct {
    const char *name;  /* the config's "name" */
    int n_modalities;  /* encoders, in config order (the present mask's columns) */
    const char *modality[TM_MODEL_MAX_MODALITIES]; /* "text", "vision", "audio" */
    int64_t text_tokens, vocab_size;               /* 0 without a text encoder */
    int32_t pad_id;
    int64_t image_channels, image_h, image_w;      /* 0 without a vision encoder */
    int64_t n_mels, n_frames;                      /* 0 without an audio encoder */
    int64_t num_classes;                           /* 0 without a classifier */
    int64_t embed_dim;                             /* 0 without contrastive heads */
    int64_t dim;
    const char *fusion; /* "early", "late", "cross", "bottleneck" */
    /* caption decoder (caption_tokens 0 without one) */
    int64_t caption_tokens, caption_vocab;
    int32_t caption_bos, caption_eos, caption_pad;
    const char *caption_context; /* "fusion", "text", "vision", "audio" */
    int32_t mask_id;             /* masked-token head's mask id; -1 without one */
} tm_model_info;

tm_model_info tm_model_get_info(const tm_model *m);

/* The canonical config (every key, defaults filled in) as JSON text;
 * tm_free() it. NULL on allocation failure. */
char *tm_model_config_json(const tm_model *m);

/* ------------------------------------------------------------- graphs */

typedef enum {
    TM_MODEL_TRAIN = 0, /* root: the loss; logits and embeddings kept */
    TM_MODEL_CLASSIFY,  /* root: class logits (B, num_classes) */
    TM_MODEL_EMBED,     /* root: L2-normalised embeddings (B, M, embed_dim) */
    TM_MODEL_MODE_COUNT
} tm_model_mode;

typedef struct tm_model_graph tm_model_graph;

/* Builds and compiles a graph of the model for `batch` examples. The
 * graph uses the model's weight buffer (and gradient buffer, for
 * TM_MODEL_TRAIN); the model must outlive it. Every modality starts
 * present. */
tm_status tm_model_graph_new(tm_model_graph **out, tm_model *m, int64_t batch,
                             tm_model_mode mode);

typedef struct {
    /* Keep the attention probabilities of every attention layer (encoders,
     * fusion, caption decoder) for tm_model_graph_attention. Costs
     * B * heads * Tq * Tk floats a layer; meant for interpretation. */
    int attention_maps;
    /* TM_MODEL_TRAIN: label smoothing of the classification cross-entropy
     * (PyTorch's label_smoothing, in [0, 1)). */
    float label_smoothing;
    /* TM_MODEL_TRAIN: no dropout and no drop-path (a training graph for
     * validation losses that are not noisy). */
    int deterministic;
    /* TM_MODEL_TRAIN: gradient checkpointing per transformer block (each
     * block's activations are recomputed in backward): same gradients,
     * much less activation memory, about a third more compute. */
    int checkpoint_blocks;
    /* Mixed precision: the tm_dtype in which matmuls, linears and convs
     * multiply (tm_graph_set_precision): TM_F32 (0, the default), TM_BF16
     * or TM_F16; parameters (master weights), gradients and every other op
     * stay f32. f16 training needs a tm_loss_scaler (trimodal/optim.h). */
    int precision;
    /* TM_MODEL_TRAIN, data parallelism over `world` ranks (0 or 1: none):
     * each rank's graph holds its `batch` rows of the global batch, rank
     * `rank` holding rows rank * batch ... The contrastive loss is then
     * the InfoNCE loss of the whole global batch: the embeddings and the
     * present masks of all ranks are gathered with gather(gather_ctx, ...)
     * (e.g. tm_dist_allgather) so every rank computes the same loss with
     * every other rank's examples as negatives, and each rank's backward
     * takes the gradient of its own rows. The ranks' gradients then add up
     * to the global loss's gradient (a trainer that averages them weighs
     * this loss by world). */
    int world, rank;
    tm_allgather_fn gather;
    void *gather_ctx;
    /* Bit i set: encoder i is not built. Its modality counts as missing in
     * every example (the present mask's column is cleared before each
     * pass), its outputs are zeros and its inputs absent (NULL in
     * tm_model_graph_inputs), so the graph computes what the full graph
     * computes for examples without that modality, for none of the
     * encoder's cost: e.g. a training stage that feeds one modality. */
    unsigned skip_encoders;
    /* TM_MODEL_TRAIN: bit k set leaves out loss k of ("classification",
     * "contrastive", "caption", "masked"); only the last three can be left
     * out. The graph then computes nothing for it (no contrastive heads, no
     * caption decoder, no masked-token head), reports it absent (NaN), and
     * accepts only the weight 0 for it: e.g. a training stage without that
     * objective. */
    unsigned skip_losses;
} tm_model_graph_opts;

tm_model_graph_opts tm_model_graph_default_opts(void); /* all 0 */

/* tm_model_graph_new with options (NULL = the defaults). */
tm_status tm_model_graph_new_opts(tm_model_graph **out, tm_model *m, int64_t batch,
                                  tm_model_mode mode, const tm_model_graph_opts *opts);

/* After a forward pass of a graph made with attention_maps: the softmax
 * probabilities (B, heads, Tq, Tk) of one layer, row-major, or NULL (with
 * tm_last_error set) when there is no such layer. stack names it:
 * "text", "vision", "audio" (encoder blocks), "fusion" (early fusion's
 * joint blocks; its last block computes the fusion CLS query only, Tq = 1),
 * "fusion.text", "fusion.vision", "fusion.audio" (a stream of cross or
 * bottleneck fusion), "pool.<modality>" (attention pooling, layer 0),
 * "caption" (the decoder's self-attention) and "caption.cross" (its
 * cross-attention to the context). Keys follow the token order of that
 * layer's input: e.g. early fusion's keys are [CLS, text tokens, vision
 * tokens, audio tokens]; a vision encoder's are [CLS, patches row by row].
 * Masked keys (padding, missing modalities) have probability exactly 0. */
const float *tm_model_graph_attention(tm_model_graph *mg, const char *stack, int layer,
                                      int64_t shape[4]);

/* Sets a loss weight for the next forward passes of a TM_MODEL_TRAIN graph
 * (the config's "loss" section gives the initial values): "classification",
 * "contrastive", "caption" or "masked". A weight of 0 removes that loss
 * from the total and its gradient. TM_ERR_INVALID for an unknown name, a
 * loss the model does not have, or a weight that is negative or not
 * finite. */
tm_status tm_model_graph_set_loss_weight(tm_model_graph *mg, const char *loss, float weight);
void tm_model_graph_free(tm_model_graph *mg); /* NULL is harmless */

/* Where to write the inputs (row-major, valid while the graph lives);
 * a pointer is NULL when the model or mode has no such input. */
typedef struct {
    int32_t *tokens;  /* (B, text_tokens) */
    float *image;     /* (B, image_channels, image_h, image_w) */
    float *mel;       /* (B, n_mels, n_frames) */
    int32_t *labels;  /* (B), TM_MODEL_TRAIN with a classifier; -100 = none */
    uint8_t *present; /* (B, n_modalities): nonzero = present */
    /* TM_MODEL_TRAIN with a caption head: (B, caption_tokens) target
     * captions [bos, tokens..., eos, pad...]; an all-pad row has no caption.
     * The decoder reads positions 0..T-2 and predicts 1..T-1 (pads are not
     * scored); examples whose caption context is missing are not scored. */
    int32_t *caption;
    /* TM_MODEL_TRAIN with a masked-token head: (B, text_tokens) the
     * original id at masked positions of `tokens`, -100 elsewhere
     * (ignored for examples whose text is absent). */
    int32_t *mlm_labels;
} tm_model_inputs;

tm_model_inputs tm_model_graph_inputs(tm_model_graph *mg);

/* Derives the masks from the inputs and runs the forward pass. Fails with
 * TM_ERR_INVALID naming the position for a token id outside the vocabulary
 * or a label outside the classes. */
tm_status tm_model_graph_forward(tm_model_graph *mg);
/* Gradients of the loss into tm_model_grads() (overwritten, not added). */
tm_status tm_model_graph_backward(tm_model_graph *mg);

/* Outputs, valid after forward until the next one; NULL when the mode has
 * none. */
const float *tm_model_graph_logits(tm_model_graph *mg);             /* (B, num_classes) */
const float *tm_model_graph_embeddings(tm_model_graph *mg, int m);  /* (B, embed_dim) */
/* TM_MODEL_TRAIN: the total loss and its parts (NaN when absent):
 * classification cross-entropy, and the mean of the symmetric InfoNCE
 * losses over the modality pairs that have at least one example with both
 * modalities present. */
typedef struct {
    float total, classification, contrastive, caption, masked;
} tm_model_loss;
tm_model_loss tm_model_graph_loss(tm_model_graph *mg);

/* TM_MODEL_TRAIN with a caption head: the decoder's next-token logits
 * (B, caption_tokens - 1, caption_vocab); with a masked-token head: its
 * logits (B, text_tokens, vocab_size). NULL otherwise. */
const float *tm_model_graph_caption_logits(tm_model_graph *mg);
const float *tm_model_graph_mlm_logits(tm_model_graph *mg);

int64_t tm_model_graph_batch(const tm_model_graph *mg);
tm_model_mode tm_model_graph_mode(const tm_model_graph *mg);
/* The underlying graph (for its arena size; do not recompile it). */
tm_graph *tm_model_graph_graph(tm_model_graph *mg);

/* ----------------------------------------------------------- captions */

/* Decoding with the caption head: greedy (beam = 1) or beam search.
 * A hypothesis's score is its summed token log-probability divided by
 * length^length_penalty (length counts the generated tokens, EOS
 * included); 0 compares raw sums, 1 the mean. Beam search keeps `beam`
 * hypotheses; one that emits EOS is finished; the search stops when `beam`
 * hypotheses are finished or max_tokens is reached (unfinished ones then
 * compete with the finished ones). */
typedef struct {
    int beam;             /* >= 1 */
    int max_tokens;       /* generated tokens at most; 0 = caption_tokens - 1 */
    float length_penalty; /* >= 0 */
} tm_caption_params;

tm_caption_params tm_caption_default_params(void); /* beam 1, max 0, penalty 1 */

typedef struct tm_model_captioner tm_model_captioner;

/* A captioner for `batch` examples (graphs for the context and the
 * decoder at batch * beam). TM_ERR_INVALID when the model has no caption
 * head or the parameters are out of range. */
tm_status tm_model_captioner_new(tm_model_captioner **out, tm_model *m, int64_t batch,
                                 tm_caption_params p);
void tm_model_captioner_free(tm_model_captioner *c); /* NULL is harmless */
/* Where to write the inputs (tokens, image, mel, present; as for graphs). */
tm_model_inputs tm_model_captioner_inputs(tm_model_captioner *c);
/* Decodes: out (B, max_tokens) generated ids after BOS, EOS excluded,
 * padded with the caption pad id; lengths (B) their counts; scores (B) the
 * normalised scores (may be NULL). An example whose caption context is
 * missing gets length 0 and score -INFINITY. */
tm_status tm_model_captioner_run(tm_model_captioner *c, int32_t *out, int32_t *lengths,
                                 float *scores);
/* Log-probability of given captions (B, caption_tokens) under the model,
 * summed over their scored tokens (as the training loss counts them):
 * for tests and rescoring. */
tm_status tm_model_captioner_score(tm_model_captioner *c, const int32_t *captions, float *out);

/* ------------------------------------------------------------ pruning */

typedef enum {
    TM_PRUNE_UNSTRUCTURED = 0, /* the smallest |w| of each linear weight */
    TM_PRUNE_HEADS = 1         /* whole attention heads of smallest norm */
} tm_prune_mode;

typedef struct {
    double sparsity;    /* in [0, 1): the fraction of each linear weight's
                           entries (or of each attention's heads) to zero */
    tm_prune_mode mode; /* TM_PRUNE_UNSTRUCTURED */
} tm_prune_params;

tm_prune_params tm_prune_default_params(void); /* sparsity 0.5, unstructured */

typedef struct {
    int64_t tensors;       /* linear weights (2-D "*.weight") seen */
    int64_t weights_total; /* their entries */
    int64_t weights_zero;  /* of which 0 after pruning */
    int64_t attentions;    /* TM_PRUNE_HEADS: attention layers pruned */
    int64_t heads_total, heads_pruned;
} tm_prune_report;

/* Magnitude pruning of m's weights in place (src/model/prune.c; the rules
 * are in docs/serving.md). Unstructured: in every linear weight (2-D,
 * named "*.weight"; embeddings, convolutions and norms untouched) the
 * floor(sparsity * numel) entries of smallest |w| become 0 (ties: the
 * earlier position first). TM_PRUNE_HEADS: in every attention
 * ("*attn.qkv.weight" (3D, D) and "*attn.out.weight" (D, D)) the
 * round(sparsity * heads) heads, at most heads - 1, with the smallest L2
 * norm of their q, k, v rows, biases and output columns are zeroed, so
 * they contribute nothing. report (may be NULL) counts what was done.
 * TM_ERR_INVALID for a sparsity outside [0, 1) or heads mode on a model
 * without attention. Not safe while graphs of m run. */
tm_status tm_model_prune(tm_model *m, const tm_prune_params *params, tm_prune_report *report);

#ifdef __cplusplus
}
#endif
#endif
