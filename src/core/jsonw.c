#include "core/jsonw.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 0: copy as is; 1: escape; 2: start of a multi-byte sequence (or invalid) */
static unsigned char byte_class(unsigned char c)
{
    if (c < 0x20 || c == '"' || c == '\\' || c == 0x7f)
        return 1;
    return c < 0x80 ? 0 : 2;
}

/* Length of a valid UTF-8 sequence at s (at most n bytes), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf)
        need = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        need = 3;
        if (c == 0xe0)
            lo = 0xa0;
        if (c == 0xed)
            hi = 0x9f; /* no surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 4;
        if (c == 0xf0)
            lo = 0x90;
        if (c == 0xf4)
            hi = 0x8f;
    } else
        return 0;
    if (n < need || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < need; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return need;
}

size_t jw_escape(char *dst, size_t cap, const char *src, size_t len, size_t *consumed)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)src;
    size_t i = 0, o = 0;
    while (i < len) {
        unsigned char c = s[i];
        unsigned char k = byte_class(c);
        if (k == 0) {
            if (o == cap)
                break;
            dst[o++] = (char)c;
            i++;
            continue;
        }
        if (k == 1) {
            char e = c == '"' ? '"' : c == '\\' ? '\\' : c == '\n' ? 'n' : c == '\r' ? 'r' : c == '\t' ? 't' : 0;
            size_t need = e ? 2 : 6;
            if (o + need > cap)
                break;
            dst[o++] = '\\';
            if (e) {
                dst[o++] = e;
            } else {
                memcpy(dst + o, "u00", 3);
                dst[o + 3] = hex[c >> 4];
                dst[o + 4] = hex[c & 15];
                o += 5;
            }
            i++;
            continue;
        }
        size_t n = utf8_len(s + i, len - i);
        if (n) {
            if (o + n > cap)
                break;
            memcpy(dst + o, s + i, n);
            o += n;
            i += n;
        } else {
            if (o + 6 > cap)
                break;
            memcpy(dst + o, "\\ufffd", 6);
            o += 6;
            i++;
        }
    }
    if (consumed)
        *consumed = i;
    return o;
}

/* --- sbuf ------------------------------------------------------------- */

void sbuf_init(struct sbuf *b)
{
    memset(b, 0, sizeof(*b));
}

void sbuf_free(struct sbuf *b)
{
    free(b->data);
    sbuf_init(b);
}

static int grow(struct sbuf *b, size_t extra)
{
    if (b->oom)
        return -1;
    if (b->len + extra + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) {
        b->oom = 1;
        return -1;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

void sbuf_put(struct sbuf *b, const void *p, size_t n)
{
    if (grow(b, n) < 0)
        return;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void sbuf_puts(struct sbuf *b, const char *s)
{
    sbuf_put(b, s, strlen(s));
}

void sbuf_printf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || grow(b, (size_t)n) < 0)
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void sbuf_json_str(struct sbuf *b, const char *s, size_t n)
{
    /* at most 6 output bytes per input byte */
    if (grow(b, n * 6 + 2) < 0)
        return;
    b->data[b->len++] = '"';
    b->len += jw_escape(b->data + b->len, n * 6, s, n, NULL);
    b->data[b->len++] = '"';
    b->data[b->len] = '\0';
}

void sbuf_json_num(struct sbuf *b, double v)
{
    if (!isfinite(v))
        v = 0;
    if (v == (double)(long long)v && fabs(v) < 1e15)
        sbuf_printf(b, "%lld", (long long)v);
    else
        sbuf_printf(b, "%.6g", v);
}
