/* podman_parse.c: lines, frames and events of Podman's streams, without I/O.
 * Everything here must survive any input: the fuzzer feeds it garbage. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "podman_parse.h"

void pp_lines_init(struct pp_lines *s, size_t max)
{
    memset(s, 0, sizeof *s);
    s->max = max ? max : (size_t)1 << 20;
}

void pp_lines_free(struct pp_lines *s)
{
    free(s->buf);
    s->buf = NULL;
    s->len = s->cap = 0;
}

static int emit_line(const char *line, size_t len, pp_line_fn fn, void *ud)
{
    if (len > 0 && line[len - 1] == '\r')
        len--;
    return fn(ud, line, len);
}

static int buf_append(struct pp_lines *s, const char *data, size_t len)
{
    if (s->len + len > s->cap) {
        size_t cap = s->cap ? s->cap : 256;
        while (cap < s->len + len)
            cap *= 2;
        char *p = realloc(s->buf, cap);
        if (!p)
            return PP_ENOMEM;
        s->buf = p;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, data, len);
    s->len += len;
    return 0;
}

int pp_lines_feed(struct pp_lines *s, const char *data, size_t len, pp_line_fn fn, void *ud)
{
    while (len > 0) {
        const char *nl = memchr(data, '\n', len);
        size_t take = nl ? (size_t)(nl - data) : len;
        /* A line that outgrows max goes out in pieces of max bytes, so that
         * one endless line cannot take all the memory. */
        if (s->len + take > s->max) {
            size_t room = s->max - s->len;
            int rc = buf_append(s, data, room);
            if (rc)
                return rc;
            data += room;
            len -= room;
            s->len = 0;
            rc = fn(ud, s->buf, s->max);
            if (rc)
                return rc;
            continue;
        }
        if (!nl)
            return buf_append(s, data, len);
        int rc;
        if (s->len == 0) {
            rc = emit_line(data, take, fn, ud);
        } else {
            rc = buf_append(s, data, take);
            if (rc)
                return rc;
            size_t n = s->len;
            s->len = 0;
            rc = emit_line(s->buf, n, fn, ud);
        }
        if (rc)
            return rc;
        data += take + 1;
        len -= take + 1;
    }
    return 0;
}

int pp_lines_flush(struct pp_lines *s, pp_line_fn fn, void *ud)
{
    if (s->len == 0)
        return 0;
    size_t n = s->len;
    s->len = 0;
    return emit_line(s->buf, n, fn, ud);
}

const char *pp_stream_name(int stream)
{
    switch (stream) {
    case PP_STDIN: return "stdin";
    case PP_STDOUT: return "stdout";
    case PP_STDERR: return "stderr";
    default: return "system";
    }
}

void pp_frames_init(struct pp_frames *f)
{
    memset(f, 0, sizeof *f);
}

int pp_frames_feed(struct pp_frames *f, const char *data, size_t len, pp_frame_fn fn,
                   void *ud)
{
    if (f->stream < 0)
        return PP_EFRAME;
    while (len > 0) {
        if (f->remaining == 0) {
            size_t need = 8 - f->hdr_len, take = len < need ? len : need;
            memcpy(f->hdr + f->hdr_len, data, take);
            f->hdr_len += take;
            data += take;
            len -= take;
            if (f->hdr_len < 8)
                return 0;
            f->hdr_len = 0;
            if (f->hdr[0] > PP_SYSTEM || f->hdr[1] || f->hdr[2] || f->hdr[3]) {
                f->stream = -1;
                return PP_EFRAME;
            }
            f->stream = f->hdr[0];
            f->remaining = (uint32_t)f->hdr[4] << 24 | (uint32_t)f->hdr[5] << 16 |
                           (uint32_t)f->hdr[6] << 8 | (uint32_t)f->hdr[7];
            f->frames++;
            continue;
        }
        size_t take = len < f->remaining ? len : f->remaining;
        f->remaining -= (uint32_t)take;
        int rc = fn(ud, f->stream, data, take);
        if (rc)
            return rc;
        data += take;
        len -= take;
    }
    return 0;
}

int pp_frames_partial(const struct pp_frames *f)
{
    return f->hdr_len > 0 || f->remaining > 0;
}

json_t *pp_event_parse(const char *line, size_t len, char *err, size_t err_len)
{
    json_error_t e;
    json_t *v = json_loadb(line, len, 0, &e);
    if (!v) {
        snprintf(err, err_len, "bad JSON at column %d: %s", e.column, e.text);
        return NULL;
    }
    if (!json_is_object(v)) {
        snprintf(err, err_len, "not a JSON object");
        json_decref(v);
        return NULL;
    }
    return v;
}

const char *const pp_filter_keys[PP_F_N + 1] = {
    "type", "event", "container", "image", "label", NULL,
};

int pp_filter_add(struct pp_filter *f, enum pp_filter_key key, const char *val)
{
    char *copy = strdup(val);
    if (!copy)
        return PP_ENOMEM;
    char **v = realloc(f->vals[key], (f->n[key] + 1) * sizeof *v);
    if (!v) {
        free(copy);
        return PP_ENOMEM;
    }
    v[f->n[key]++] = copy;
    f->vals[key] = v;
    return 0;
}

void pp_filter_free(struct pp_filter *f)
{
    for (int k = 0; k < PP_F_N; k++) {
        for (size_t i = 0; i < f->n[k]; i++)
            free(f->vals[k][i]);
        free(f->vals[k]);
        f->vals[k] = NULL;
        f->n[k] = 0;
    }
}

static const char *str_field(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int same(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

/* The libpod route says "died" where Docker's says "die": accept either. */
static int same_action(const char *want, const char *got)
{
    if (!got)
        return 0;
    if (strcmp(want, got) == 0)
        return 1;
    return (strcmp(want, "die") == 0 && strcmp(got, "died") == 0) ||
           (strcmp(want, "died") == 0 && strcmp(got, "die") == 0);
}

static int match_one(json_t *ev, json_t *attrs, enum pp_filter_key key, const char *want)
{
    switch (key) {
    case PP_F_TYPE: {
        const char *t = str_field(ev, "Type");
        return t && strcasecmp(t, want) == 0;
    }
    case PP_F_EVENT:
        return same_action(want, str_field(ev, "Action")) ||
               same_action(want, str_field(ev, "status"));
    case PP_F_CONTAINER: {
        const char *t = str_field(ev, "Type");
        if (t && strcmp(t, "container") != 0)
            return 0;
        if (same(want, str_field(attrs, "name")))
            return 1;
        json_t *actor = json_object_get(ev, "Actor");
        const char *id = str_field(actor, "ID");
        if (!id)
            id = str_field(ev, "id");
        size_t n = strlen(want);
        return id && n >= 12 && strncmp(id, want, n) == 0;
    }
    case PP_F_IMAGE:
        return same(want, str_field(attrs, "image")) || same(want, str_field(ev, "from"));
    case PP_F_LABEL: {
        const char *eq = strchr(want, '=');
        if (!eq)
            return json_object_get(attrs, want) != NULL;
        char key_buf[256];
        size_t kl = (size_t)(eq - want);
        if (kl >= sizeof key_buf)
            return 0;
        memcpy(key_buf, want, kl);
        key_buf[kl] = 0;
        return same(eq + 1, str_field(attrs, key_buf));
    }
    default:
        return 0;
    }
}

int pp_event_match(json_t *ev, const struct pp_filter *f)
{
    json_t *attrs = json_object_get(json_object_get(ev, "Actor"), "Attributes");
    for (int k = 0; k < PP_F_N; k++) {
        if (f->n[k] == 0)
            continue;
        int any = 0;
        for (size_t i = 0; i < f->n[k] && !any; i++)
            any = match_one(ev, attrs, (enum pp_filter_key)k, f->vals[k][i]);
        if (!any)
            return 0;
    }
    return 1;
}
