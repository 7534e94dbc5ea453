/*
 * trimodal vision: the image front-end.
 *
 *  - decoding PNG, JPEG, BMP, GIF (first frame) and binary PGM/PPM from
 *    memory or a file into a tm_image (8-bit, height x width x channels),
 *    under size limits checked before anything large is allocated;
 *  - reading IDX files (MNIST-style images and labels);
 *  - transforms on float images in CHW layout (channels, height, width),
 *    matching torchvision 0.14 on float tensors: resize (nearest,
 *    bilinear, bicubic; antialiased when shrinking), center crop, pad,
 *    flip, rotation, colour adjustments, normalisation, patchify;
 *  - the standard preprocessing pipeline (tm_image_preprocess) and PNG
 *    pictures of float tensors (tm_image_write_png);
 *  - seeded augmentations: random resized crop, horizontal flip, rotation,
 *    colour jitter, random erasing. Each is a pure function of its inputs
 *    and of (seed, index).
 *
 * Float images are plain row-major arrays of c * h * w floats: element
 * (ch, y, x) is at [(ch * h + y) * w + x]. Functions that take `out` and
 * `in` write out[] completely and do not allow out and in to overlap,
 * unless a function says otherwise. Sizes are ints; every function checks
 * c, h, w > 0 and that c * h * w fits in memory (TM_ERR_INVALID, or
 * TM_ERR_NOMEM for a product that overflows).
 *
 * docs/vision.md gives the formulas, the pipeline's order and the
 * tolerances against torchvision.
 *
 * Thread-safety: every function may be called from many threads at once
 * on different outputs; an open tm_idx is read-only and may be shared.
 * Nothing here uses the thread pool: a data loader parallelises over
 * examples.
 */
#ifndef TRIMODAL_VISION_H
#define TRIMODAL_VISION_H

#include <stddef.h>
#include <stdint.h>

#include "trimodal/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- limits */

/* Default largest decoded image: 8192 x 8192 pixels (64 Mi pixels). */
#define TM_IMAGE_DEFAULT_MAX_PIXELS ((size_t)1 << 26)
/* Default largest encoded image (a file or buffer given to the decoder). */
#define TM_IMAGE_DEFAULT_MAX_BYTES ((size_t)64 << 20)

/* Size limits for untrusted images. Beyond them the decoder fails with
 * TM_ERR_LIMIT. The pixel count comes from the file's header and is checked
 * before the pixels are decoded, so a header claiming a huge image never
 * allocates. A limit of 0 means the default. max_bytes above INT_MAX (the
 * largest input the decoder library takes) counts as INT_MAX. */
typedef struct {
    size_t max_pixels; /* width * height of one image (per image for IDX) */
    size_t max_bytes;  /* bytes of one encoded image; not used for IDX files,
                          which are mapped, not read */
} tm_image_limits;

/* {TM_IMAGE_DEFAULT_MAX_PIXELS, TM_IMAGE_DEFAULT_MAX_BYTES}. */
tm_image_limits tm_image_default_limits(void);

/* -------------------------------------------------------------- decoding */

typedef enum {
    TM_IMAGE_FORMAT_UNKNOWN = 0,
    TM_IMAGE_FORMAT_PNG,
    TM_IMAGE_FORMAT_JPEG,
    TM_IMAGE_FORMAT_BMP,
    TM_IMAGE_FORMAT_GIF,
    TM_IMAGE_FORMAT_PNM, /* binary PGM (P5) and PPM (P6) */
    TM_IMAGE_FORMAT_COUNT
} tm_image_format;

/* "png", "jpeg", "bmp", "gif", "pnm", or "unknown". */
const char *tm_image_format_name(tm_image_format f);

/* What happens to an alpha channel. */
typedef enum {
    TM_ALPHA_DROP = 0, /* ignore it: the colour values as stored */
    TM_ALPHA_COMPOSITE /* blend over the background colour:
                          out = (c * a + bg * (255 - a) + 127) / 255 */
} tm_alpha_mode;

typedef struct {
    tm_image_limits limits;
    int channels;          /* 1 (gray) or 3 (RGB); 0 keeps the file's kind
                              (1 for gray files, 3 for colour ones) */
    tm_alpha_mode alpha;   /* TM_ALPHA_DROP by default */
    uint8_t background[3]; /* RGB for TM_ALPHA_COMPOSITE; white by default */
} tm_image_decode_params;

/* Default limits, channels 3, alpha dropped, white background. */
tm_image_decode_params tm_image_decode_default_params(void);

/* An 8-bit image: data holds height rows of width pixels of channels
 * bytes (HWC, row-major, no padding). channels is 1 or 3 for decoded
 * images. The fields are read-only for users; tm_image_free() frees
 * data and the struct. */
typedef struct tm_image {
    int width, height, channels;
    uint8_t *data;
    tm_image_format format; /* the file's format (UNKNOWN for made ones) */
    int file_channels;      /* as stored: 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA */
} tm_image;

/* A new image of zeros. channels 1..4. Fails with TM_ERR_INVALID for
 * non-positive sizes, TM_ERR_NOMEM. */
tm_status tm_image_new(tm_image **out, int width, int height, int channels);

/* Frees the image. NULL is harmless. */
void tm_image_free(tm_image *img);

/* Decodes an image from memory. The format is recognised from the first
 * bytes (not from a file name). Colour conversions:
 *   gray -> RGB copies the value; RGB -> gray is ITU-R 601 luma in
 *   integers, as PIL's convert("L"): (19595 r + 38470 g + 7471 b + 32768)
 *   >> 16; alpha is dropped or composited (see tm_alpha_mode), then the
 *   colour conversion applies. 16-bit PNG samples keep their top 8 bits;
 *   PNM samples are scaled to 0..255 as round(v * 255 / maxval). GIF
 *   gives the first frame; paletted images their palette colours.
 * Fails, with a message naming the format and the problem, with
 *   TM_ERR_FORMAT for an empty, truncated or corrupt image, a zero width
 *   or height;
 *   TM_ERR_UNSUPPORTED for other formats (TIFF, WebP, ASCII PNM, IDX...),
 *   naming the format when it is recognised, and for variants the decoder
 *   lacks (RLE-compressed BMP, 12-bit JPEG);
 *   TM_ERR_LIMIT for size > limits.max_bytes or width * height >
 *   limits.max_pixels;
 *   TM_ERR_INVALID for bad params; TM_ERR_NOMEM.
 * *out is NULL on failure. */
tm_status tm_image_decode(tm_image **out, const void *data, size_t size,
                          tm_image_decode_params params);

/* The same from a file, which is read whole (after checking its size
 * against limits.max_bytes). Messages name the path; TM_ERR_IO when it
 * cannot be opened or read. */
tm_status tm_image_load(tm_image **out, const char *path, tm_image_decode_params params);

/* Reads only the header: format, width, height and the channels as
 * stored (1..4). Does not check limits. Fails as tm_image_decode() does
 * for unsupported formats and corrupt headers. Any output may be NULL. */
tm_status tm_image_probe(const void *data, size_t size, tm_image_format *format, int *width,
                         int *height, int *channels);

/* A copy of in with 1 or 3 channels (in may have 1 to 4; alpha, when in
 * has 2 or 4 channels, is dropped). Conversions as tm_image_decode(). */
tm_status tm_image_convert(tm_image **out, const tm_image *in, int channels);

/* Writes an 8-bit image with 1 to 4 channels as a PNG file, atomically
 * (see tm_write_file_atomic()). */
tm_status tm_image_save_png(const tm_image *img, const char *path);

/* ------------------------------------------------------------------ IDX */

/* An IDX file (the MNIST format): a 4-byte magic 0x00 0x00 type ndim,
 * ndim big-endian u32 sizes, then the data, row-major. Supported: type
 * 0x08 (unsigned bytes) with ndim 3 (images: count x height x width,
 * magic 0x00000803) or ndim 1 (labels: count, magic 0x00000801). The
 * header is checked against the file's size: the data must be exactly
 * the product of the sizes (overflow-checked), else TM_ERR_FORMAT saying
 * how many bytes the header promises and how many there are. Other types
 * or ndim and gzip-compressed files give TM_ERR_UNSUPPORTED; zero height
 * or width TM_ERR_FORMAT; height * width > limits.max_pixels TM_ERR_LIMIT.
 * A count of 0 is valid. */
typedef struct tm_idx tm_idx;

/* Opens an IDX file, mapping it read-only (nothing is copied). The file
 * must not be truncated while open. Messages name the path. */
tm_status tm_idx_open(tm_idx **out, const char *path, tm_image_limits limits);

/* The same over memory that the caller keeps alive and unchanged until
 * tm_idx_close(). Messages name "<memory>". */
tm_status tm_idx_open_memory(tm_idx **out, const void *data, size_t size, tm_image_limits limits);

/* Unmaps and frees. NULL is harmless. */
void tm_idx_close(tm_idx *idx);

/* The number of items (images or labels). */
int64_t tm_idx_count(const tm_idx *idx);
/* 3 for an image file, 1 for a label file. */
int tm_idx_ndim(const tm_idx *idx);
/* Image height and width; 0 for a label file. */
int tm_idx_height(const tm_idx *idx);
int tm_idx_width(const tm_idx *idx);
/* The raw data after the header: count * height * width bytes (images)
 * or count bytes (labels). Valid while idx is open. */
const uint8_t *tm_idx_data(const tm_idx *idx);

/* Image i (0 <= i < count) as a new 1-channel tm_image. TM_ERR_INVALID
 * for an index out of range or a label file. */
tm_status tm_idx_image(tm_image **out, const tm_idx *idx, int64_t i);

/* Label i (0..255). TM_ERR_INVALID for an index out of range or an image
 * file. */
tm_status tm_idx_label(int *label, const tm_idx *idx, int64_t i);

/* ------------------------------------------------------------ transforms */

/* u8 HWC -> float CHW in [0, 1]: out[(c*h + y)*w + x] = v / 255, as
 * torchvision's to_tensor. out holds channels * height * width floats. */
tm_status tm_image_to_float(float *out, const tm_image *img);

typedef enum {
    TM_FILTER_BILINEAR = 0,
    TM_FILTER_BICUBIC,
    TM_FILTER_NEAREST, /* torch's "nearest": src = floor(dst * in / out) */
    TM_FILTER_COUNT
} tm_resize_filter;

/* Resizes (c, h, w) to (c, out_h, out_w), as torchvision's resize on a
 * float tensor (torch.nn.functional.interpolate, align_corners=False):
 *  - antialias = 1 (bilinear, bicubic): separable filtering whose support
 *    widens by the scale when shrinking (PIL's method); bicubic uses
 *    a = -0.5; weights are normalised at the borders;
 *  - antialias = 0: bilinear samples at (i + 0.5) * in / out - 0.5
 *    (clamped at 0); bicubic uses a = -0.75 with clamped borders
 *    (torch's upsample_bicubic2d); nearest ignores antialias.
 * Bicubic results may leave [0, 1]; nothing is clamped. */
tm_status tm_image_resize(float *out, const float *in, int c, int h, int w, int out_h, int out_w,
                          tm_resize_filter filter, int antialias);

/* The size torchvision's resize(img, size) gives when size is one int: the
 * shorter side becomes size and the longer one int(size * long / short).
 * TM_ERR_INVALID for size <= 0 or a result that overflows an int. */
tm_status tm_image_resize_shorter_size(int *out_h, int *out_w, int h, int w, int size);

/* A rectangle of an image: rows top..top+height-1, columns
 * left..left+width-1 (torchvision's (i, j, h, w)). */
typedef struct {
    int top, left, height, width;
} tm_image_box;

/* The centred out_h x out_w window, as torchvision's center_crop: the
 * window's top is round((h - out_h) / 2) with round-half-to-even (Python's
 * round), and when the window is larger than the image, the image is first
 * padded with zeros (left/top get the smaller half). */
tm_status tm_image_center_crop(float *out, const float *in, int c, int h, int w, int out_h,
                               int out_w);

/* Copies box (which must lie inside the image) to out (c, box.height,
 * box.width). */
tm_status tm_image_crop(float *out, const float *in, int c, int h, int w, tm_image_box box);

/* Crop then resize, as torchvision's resized_crop. */
tm_status tm_image_resized_crop(float *out, const float *in, int c, int h, int w, tm_image_box box,
                                int out_h, int out_w, tm_resize_filter filter, int antialias);

typedef enum {
    TM_IMAGE_PAD_CONSTANT = 0, /* the fill value */
    TM_IMAGE_PAD_EDGE,         /* repeat the edge pixel */
    TM_IMAGE_PAD_REFLECT,      /* mirror without repeating the edge: d c b | a b c d */
    TM_IMAGE_PAD_SYMMETRIC,    /* mirror repeating the edge: c b a | a b c d */
    TM_IMAGE_PAD_COUNT
} tm_image_pad_mode;

/* Pads to (c, h + top + bottom, w + left + right), as torchvision's pad.
 * Pads must be >= 0. Reflect and symmetric continue the mirror pattern
 * periodically when a pad is wider than the image (torchvision refuses
 * those; where it accepts, results are identical). */
tm_status tm_image_pad(float *out, const float *in, int c, int h, int w, int left, int top,
                       int right, int bottom, tm_image_pad_mode mode, float fill);

/* out = (in - mean[ch]) / std[ch]; out may equal in. Fails for std[ch]
 * == 0. */
tm_status tm_image_normalize(float *out, const float *in, int c, int h, int w, const float *mean,
                             const float *std);

/* (c, h, w) -> (num_patches, c * p * p) with num_patches = (h / p) * (w / p):
 * row n = py * (w / p) + px is the patch at rows py*p.., columns px*p..
 * (row-major over patches), and its element (ch * p + ky) * p + kx is
 * in[ch, py*p + ky, px*p + kx] -- the order in which a Conv2d(c, d, k=p,
 * s=p) patch embedding sees them (its weight reshaped to (d, c*p*p)), and
 * torch's unfold(kernel=p, stride=p) transposed. h and w must be multiples
 * of p. */
tm_status tm_image_patchify(float *out, const float *in, int c, int h, int w, int patch);

/* Mirrors left-right. */
tm_status tm_image_hflip(float *out, const float *in, int c, int h, int w);

/* Rotates by angle degrees counter-clockwise about the image's centre,
 * keeping the size, with bilinear sampling, as torchvision's rotate(img,
 * angle, BILINEAR, fill=fill) on a float tensor (expand=False): the pixel
 * at (x, y) samples the input at (cos t * u - sin t * v + w/2 - 0.5,
 * sin t * u + cos t * v + h/2 - 0.5) with u = x - w/2 + 0.5, v = y - h/2
 * + 0.5, taps outside the image counting as 0. fill NULL: that sample
 * (torchvision's fill=None). Otherwise, as torchvision, with m the sum of
 * the bilinear weights of the taps inside the image: sample * m + (1 - m)
 * * fill[ch] (so pixels near the border blend towards fill even when
 * fill is 0). Multiples of 90 degrees use exact sines and cosines, so 0 is
 * the identity. out must not be in. */
tm_status tm_image_rotate(float *out, const float *in, int c, int h, int w, float angle,
                          const float *fill);

/* Colour adjustments, as torchvision's adjust_* on float tensors in [0, 1].
 * c must be 1 or 3. With gray = 0.2989 r + 0.587 g + 0.114 b (the value
 * itself when c == 1):
 *   brightness: clamp(f * x, 0, 1);                               f >= 0
 *   contrast:   clamp(f * x + (1 - f) * mean(gray), 0, 1);        f >= 0
 *   saturation: clamp(f * x + (1 - f) * gray, 0, 1); c==1: a copy; f >= 0
 *   hue:        RGB -> HSV, h = (h + f) mod 1, HSV -> RGB; c == 1: a copy;
 *               -0.5 <= f <= 0.5.
 * out may equal in. */
tm_status tm_image_adjust_brightness(float *out, const float *in, int c, int h, int w,
                                     float factor);
tm_status tm_image_adjust_contrast(float *out, const float *in, int c, int h, int w, float factor);
tm_status tm_image_adjust_saturation(float *out, const float *in, int c, int h, int w,
                                     float factor);
tm_status tm_image_adjust_hue(float *out, const float *in, int c, int h, int w, float factor);

/* --------------------------------------------------------- preprocessing */

typedef enum {
    TM_RESIZE_SHORTER = 0, /* shorter side to `size`, then center crop to
                              height x width (torchvision's Resize(size) +
                              CenterCrop) */
    TM_RESIZE_EXACT        /* resize straight to height x width (aspect
                              ratio not kept), no crop */
} tm_resize_mode;

/* What a model sees of an image; a model's preprocess.json holds these. */
typedef struct {
    tm_resize_mode mode;
    int size;          /* TM_RESIZE_SHORTER: the shorter side after
                          resizing; 0 skips resizing (crop only) */
    int height, width; /* the output's spatial size */
    tm_resize_filter filter;
    int antialias;
    int channels;          /* 1 or 3 */
    float mean[3], std[3]; /* per channel (only the first `channels`) */
    int patch;             /* 0: output (C, H, W); p > 0: patchified
                              (H/p * W/p, C*p*p), see tm_image_patchify() */
} tm_image_params;

/* bench-small's vision input: TM_RESIZE_SHORTER, size 32, 32 x 32,
 * bilinear, antialias 1, channels 1, mean 0.5, std 0.5, patch 0. */
tm_image_params tm_image_default_params(void);

/* The output's shape: *ndim = 3 and (C, H, W), or *ndim = 2 and
 * (num_patches, C*p*p); shape[2] = 0 then. TM_ERR_INVALID for bad params
 * (non-positive sizes, channels not 1 or 3, std == 0, H or W not a multiple
 * of the patch, unknown enums). */
tm_status tm_image_preprocess_shape(int *ndim, int64_t shape[3], tm_image_params params);

/* Runs the pipeline on img into out (out_len floats, at least the product
 * of the shape above): convert to params.channels (u8, as
 * tm_image_convert()); to float in [0, 1]; resize (TM_RESIZE_SHORTER:
 * shorter side to size, then center crop; TM_RESIZE_EXACT: to height x
 * width); normalise by mean/std; patchify when patch > 0. Resizing is done
 * in float after the conversion to [0, 1], as torchvision on tensors
 * (PIL-image pipelines resize in 8 bits and differ by up to about 1/255).
 * TM_ERR_INVALID for bad params or a short buffer; TM_ERR_NOMEM. */
tm_status tm_image_preprocess(float *out, size_t out_len, const tm_image *img,
                              tm_image_params params);

typedef enum {
    TM_PNG_SCALE_UNIT = 0, /* 0 -> 0, 1 -> 255, clamped outside [0, 1] */
    TM_PNG_SCALE_MINMAX    /* min -> 0, max -> 255 over all channels; a
                              constant image gives 0 */
} tm_png_scaling;

/* Writes a float image (c == 1: grayscale, c == 3: RGB) as a PNG file,
 * atomically, each pixel repeated into an upscale x upscale block (nearest
 * neighbour; 1 keeps the size) so that a 32 x 32 input is visible.
 * Values map to round(255 * t) after scaling; NaN gives 0. Fails with
 * TM_ERR_INVALID for other c or upscale < 1, TM_ERR_LIMIT when the output
 * would exceed 2^28 pixels, TM_ERR_IO, TM_ERR_NOMEM. */
tm_status tm_image_write_png(const char *path, const float *in, int c, int h, int w,
                             tm_png_scaling scaling, int upscale);

/* ---------------------------------------------------------- augmentations */

/* Settings of the random augmentations, torchvision's defaults where it has
 * them. Every draw is a pure function of (seed, index, augmentation): pass
 * the example's index (and fold the epoch into seed or index) to get the
 * same result whatever the thread or order that runs it. Each augmentation
 * uses its own part of the counter-based generator's counter space, so
 * calling one does not change another's draws, and calling the same one with
 * the same (seed, index) on two modalities or two views draws the same
 * values (what joint augmentations need to align). */
typedef struct {
    /* random resized crop */
    float crop_scale[2];          /* area fraction, uniform: {0.08, 1} */
    float crop_ratio[2];          /* aspect w / h, log-uniform: {3/4, 4/3} */
    tm_resize_filter crop_filter; /* bilinear */
    int crop_antialias;           /* 1 */
    /* horizontal flip */
    float flip_p; /* probability: 0.5 */
    /* rotation */
    float rotate_degrees; /* angle uniform in [-d, d]: 10 */
    float rotate_fill;    /* every channel: 0 */
    /* colour jitter, as torchvision's ColorJitter(b, c, s, h): factors
     * uniform in [max(0, 1 - v), 1 + v] (hue: [-v, v], v <= 0.5), applied in
     * a random order; 0 disables one */
    float brightness, contrast, saturation, hue; /* 0.4, 0.4, 0.4, 0 */
    /* random erasing, as torchvision's RandomErasing */
    float erase_p;        /* 0.5 */
    float erase_scale[2]; /* area fraction: {0.02, 0.33} */
    float erase_ratio[2]; /* aspect h / w, log-uniform: {0.3, 3.3} */
    int erase_noise;      /* 0: fill with erase_value; 1: standard normal */
    float erase_value;    /* 0 */
} tm_image_aug_params;

tm_image_aug_params tm_image_aug_default_params(void);

/* In every augmentation below, out may be NULL to only draw the random
 * parameters (returned through the second argument, which may be NULL).
 * TM_ERR_INVALID for bad sizes or settings. */

/* torchvision's RandomResizedCrop: up to 10 tries of an area fraction and
 * aspect ratio whose rounded box fits, at a uniform position; else the
 * centred box of the clamped aspect ratio. Then tm_image_resized_crop() to
 * (c, out_h, out_w). */
tm_status tm_image_random_resized_crop(float *out, tm_image_box *box, const float *in, int c, int h,
                                       int w, int out_h, int out_w, tm_image_aug_params params,
                                       uint64_t seed, uint64_t index);

/* Mirrors with probability flip_p (*flipped = 1 when it did), else copies. */
tm_status tm_image_random_hflip(float *out, int *flipped, const float *in, int c, int h, int w,
                                tm_image_aug_params params, uint64_t seed, uint64_t index);

/* tm_image_rotate() by an angle uniform in [-rotate_degrees,
 * rotate_degrees], fill rotate_fill. */
tm_status tm_image_random_rotate(float *out, float *angle, const float *in, int c, int h, int w,
                                 tm_image_aug_params params, uint64_t seed, uint64_t index);

/* The factors drawn by the colour jitter: order[k] is the k-th adjustment
 * applied (0 brightness, 1 contrast, 2 saturation, 3 hue); a disabled one
 * has factor 1 (hue: 0) and is skipped. */
typedef struct {
    float brightness, contrast, saturation, hue;
    int order[4];
} tm_color_jitter;

/* Colour jitter (c must be 1 or 3; saturation and hue do nothing to gray
 * images). out may equal in. */
tm_status tm_image_color_jitter(float *out, tm_color_jitter *drawn, const float *in, int c, int h,
                                int w, tm_image_aug_params params, uint64_t seed, uint64_t index);

/* torchvision's RandomErasing: with probability erase_p, up to 10 tries of
 * an area fraction and aspect ratio whose box is strictly smaller than the
 * image, at a uniform position, filled with erase_value or normal noise.
 * *box is the erased region, {0, 0, 0, 0} when nothing was erased. out may
 * equal in. */
tm_status tm_image_random_erase(float *out, tm_image_box *box, const float *in, int c, int h, int w,
                                tm_image_aug_params params, uint64_t seed, uint64_t index);

/* Fills box (clipped to the image) of every channel with value[ch] (value
 * NULL: 0), in place: what random erasing and joint masking use. */
tm_status tm_image_fill_box(float *img, int c, int h, int w, tm_image_box box, const float *value);

#ifdef __cplusplus
}
#endif
#endif
