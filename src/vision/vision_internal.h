/* Helpers shared by the files of the vision layer; include/ never exposes
 * them. */
#ifndef TM_VISION_INTERNAL_H
#define TM_VISION_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "trimodal/vision.h"

/* Checks c, h, w > 0 and that c * h * w floats fit in memory; *numel gets
 * c * h * w. fn names the caller in the message. */
tm_status tmv_check_chw(const char *fn, int c, int h, int w, size_t *numel);

/* Same for a float buffer pointer pair: in and out non-NULL. */
tm_status tmv_check_io(const char *fn, const float *out, const float *in, int c, int h, int w,
                       size_t *numel);

/* ITU-R 601 luma in integers, as PIL's convert("L"). */
static inline uint8_t tmv_luma_u8(unsigned r, unsigned g, unsigned b)
{
    return (uint8_t)((r * 19595u + g * 38470u + b * 7471u + 0x8000u) >> 16);
}

/* torchvision's rgb_to_grayscale on floats. */
static inline float tmv_luma_f32(float r, float g, float b)
{
    return 0.2989f * r + 0.587f * g + 0.114f * b;
}

/* Encodes 8-bit pixels (comp 1..4, rows of w * comp bytes) as PNG and
 * writes the file atomically. */
tm_status tmv_write_png_u8(const char *path, const uint8_t *pixels, int w, int h, int comp);

/* Resizes rows of floats; the implementation behind tm_image_resize()
 * without the argument checks (sizes already validated). */
tm_status tmv_resize(float *out, const float *in, int c, int h, int w, int out_h, int out_w,
                     tm_resize_filter filter, int antialias);

#endif
