/*
 * authz_compile.c - the predicate language's lexer, recursive-descent parser and static type
 * check. The result is a tree of struct node in the predicate's own arena.
 *
 * Every limit is checked here, so that evaluation is bounded by construction: the source
 * size before anything else, the parser's recursion (parentheses, unary operators, nested
 * calls) and the tree's depth against max_depth, and the node count against max_nodes.
 * A type error is reported only when the operand's static type set has no kind at all that
 * the operator accepts; paths have every kind, so they are checked at evaluation.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authz_int.h"

enum tok {
    T_EOF,
    T_INT,
    T_REAL,
    T_STR,
    T_NAME,
    T_LPAREN,
    T_RPAREN,
    T_LBRACK,
    T_RBRACK,
    T_COMMA,
    T_DOT,
    T_EQ,
    T_NE,
    T_LT,
    T_LE,
    T_GT,
    T_GE,
    T_AND,
    T_OR,
    T_NOT,
    T_PLUS,
    T_MINUS,
};

struct parser {
    const char *src;
    size_t pos;     /* next byte to lex */
    uint32_t line;  /* of pos */
    size_t line_at; /* offset of the first byte of pos's line */
    struct ts_pred *p;
    struct ts_pred_error *err;
    bool failed;
    uint32_t nodes;
    uint32_t depth; /* current recursion of parse_expr/parse_unary */
    /* The current token. */
    enum tok tok;
    uint32_t tline, tcol;
    const char *tstart; /* T_NAME: the name's bytes */
    size_t tlen;
    int64_t ival;
    double rval;
    char *sval; /* T_STR: decoded, in the predicate's arena */
    size_t slen;
};

static void fail_at(struct parser *ps, uint32_t line, uint32_t col, const char *fmt, ...)
    TS_PRINTF(4, 5);

static void fail_at(struct parser *ps, uint32_t line, uint32_t col, const char *fmt, ...)
{
    if (ps->failed)
        return; /* the first error wins */
    ps->failed = true;
    if (ps->err) {
        va_list ap;
        ps->err->line = line;
        ps->err->column = col;
        va_start(ap, fmt);
        vsnprintf(ps->err->message, sizeof ps->err->message, fmt, ap);
        va_end(ap);
    }
}

#define FAIL_TOK(ps, ...) fail_at((ps), (ps)->tline, (ps)->tcol, __VA_ARGS__)

/* ---- lexer ---- */

static bool is_name_start(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static bool read_hex4(const char *s, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int h = ts_hex_digit((unsigned char)s[i]);
        if (h < 0)
            return false;
        v = v << 4 | (uint32_t)h;
    }
    *out = v;
    return true;
}

static size_t put_utf8(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* A JSON string (RFC 8259 §7) starting at the opening quote; decoded into the arena. Escaped
 * NUL is refused, so every string of the language is a C string. */
static void lex_string(struct parser *ps)
{
    const char *s = ps->src + ps->pos + 1;
    size_t n = 0;
    while (s[n] != '"') {
        if (s[n] == '\0') {
            FAIL_TOK(ps, "unterminated string");
            return;
        }
        if (s[n] == '\\' && s[n + 1] != '\0')
            n++;
        n++;
    }
    /* Decoding never grows the text: \uXXXX (6 bytes) gives at most 3, a pair (12) gives 4. */
    char *o = ts_arena_alloc(&ps->p->arena, n + 1);
    size_t on = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20) {
            fail_at(ps, ps->tline, ps->tcol + (uint32_t)i + 1, "control character in string");
            return;
        }
        if (c != '\\') {
            o[on++] = (char)c;
            continue;
        }
        uint32_t ecol = ps->tcol + (uint32_t)i + 1; /* the backslash */
        c = (unsigned char)s[++i];
        switch (c) {
        case '"':
        case '\\':
        case '/':
            o[on++] = (char)c;
            break;
        case 'b':
            o[on++] = '\b';
            break;
        case 'f':
            o[on++] = '\f';
            break;
        case 'n':
            o[on++] = '\n';
            break;
        case 'r':
            o[on++] = '\r';
            break;
        case 't':
            o[on++] = '\t';
            break;
        case 'u': {
            uint32_t cp, lo;
            if (i + 4 >= n || !read_hex4(s + i + 1, &cp)) {
                fail_at(ps, ps->tline, ecol, "bad \\u escape");
                return;
            }
            i += 4;
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (i + 6 >= n || s[i + 1] != '\\' || s[i + 2] != 'u' ||
                    !read_hex4(s + i + 3, &lo) || lo < 0xdc00 || lo > 0xdfff) {
                    fail_at(ps, ps->tline, ecol, "unpaired surrogate");
                    return;
                }
                i += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp <= 0xdfff) {
                fail_at(ps, ps->tline, ecol, "unpaired surrogate");
                return;
            }
            if (cp == 0) {
                fail_at(ps, ps->tline, ecol, "\\u0000 is not allowed");
                return;
            }
            on += put_utf8(o + on, cp);
            break;
        }
        default:
            fail_at(ps, ps->tline, ecol, "bad escape '\\%c'", c >= 0x20 && c < 0x7f ? c : '?');
            return;
        }
    }
    o[on] = '\0';
    ps->sval = o;
    ps->slen = on;
    ps->tok = T_STR;
    ps->pos += n + 2;
}

/* A JSON number (RFC 8259 §6), without sign: the parser's unary minus applies it. */
static void lex_number(struct parser *ps)
{
    const char *s = ps->src + ps->pos;
    size_t n = 0;
    bool real = false;
    while (is_digit((unsigned char)s[n]))
        n++;
    if (s[n] == '.' && is_digit((unsigned char)s[n + 1])) {
        real = true;
        n++;
        while (is_digit((unsigned char)s[n]))
            n++;
    }
    if (s[n] == 'e' || s[n] == 'E') {
        size_t m = n + 1;
        if (s[m] == '+' || s[m] == '-')
            m++;
        if (is_digit((unsigned char)s[m])) {
            real = true;
            n = m;
            while (is_digit((unsigned char)s[n]))
                n++;
        }
    }
    if (is_name_start((unsigned char)s[n]) || n > 64) {
        FAIL_TOK(ps, "malformed number");
        return;
    }
    char buf[72];
    memcpy(buf, s, n);
    buf[n] = '\0';
    errno = 0;
    if (real) {
        ps->rval = strtod(buf, NULL);
        if (errno || !isfinite(ps->rval)) {
            FAIL_TOK(ps, "number out of range");
            return;
        }
        ps->tok = T_REAL;
    } else {
        if (n > 1 && s[0] == '0') {
            FAIL_TOK(ps, "leading zero in number");
            return;
        }
        long long v = strtoll(buf, NULL, 10);
        if (errno) {
            FAIL_TOK(ps, "integer out of range");
            return;
        }
        ps->ival = v;
        ps->tok = T_INT;
    }
    ps->pos += n;
}

static void next(struct parser *ps)
{
    const char *s = ps->src;
    if (ps->failed) {
        ps->tok = T_EOF;
        return;
    }
    for (;;) {
        char c = s[ps->pos];
        if (c == ' ' || c == '\t' || c == '\r') {
            ps->pos++;
        } else if (c == '\n') {
            ps->pos++;
            ps->line++;
            ps->line_at = ps->pos;
        } else if (c == '/' && s[ps->pos + 1] == '/') {
            while (s[ps->pos] != '\0' && s[ps->pos] != '\n')
                ps->pos++;
        } else {
            break;
        }
    }
    ps->tline = ps->line;
    ps->tcol = (uint32_t)(ps->pos - ps->line_at + 1);
    char c = s[ps->pos], d = c ? s[ps->pos + 1] : '\0';
    size_t len = 1;
    switch (c) {
    case '\0':
        ps->tok = T_EOF;
        return;
    case '"':
        lex_string(ps);
        return;
    case '(':
        ps->tok = T_LPAREN;
        break;
    case ')':
        ps->tok = T_RPAREN;
        break;
    case '[':
        ps->tok = T_LBRACK;
        break;
    case ']':
        ps->tok = T_RBRACK;
        break;
    case ',':
        ps->tok = T_COMMA;
        break;
    case '.':
        ps->tok = T_DOT;
        break;
    case '+':
        ps->tok = T_PLUS;
        break;
    case '-':
        ps->tok = T_MINUS;
        break;
    case '=':
        if (d != '=')
            goto bad;
        ps->tok = T_EQ;
        len = 2;
        break;
    case '!':
        ps->tok = d == '=' ? T_NE : T_NOT;
        len = d == '=' ? 2 : 1;
        break;
    case '<':
        ps->tok = d == '=' ? T_LE : T_LT;
        len = d == '=' ? 2 : 1;
        break;
    case '>':
        ps->tok = d == '=' ? T_GE : T_GT;
        len = d == '=' ? 2 : 1;
        break;
    case '&':
        if (d != '&')
            goto bad;
        ps->tok = T_AND;
        len = 2;
        break;
    case '|':
        if (d != '|')
            goto bad;
        ps->tok = T_OR;
        len = 2;
        break;
    default:
        if (is_digit((unsigned char)c)) {
            lex_number(ps);
            return;
        }
        if (is_name_start((unsigned char)c)) {
            len = 1;
            while (is_name_start((unsigned char)s[ps->pos + len]) ||
                   is_digit((unsigned char)s[ps->pos + len]))
                len++;
            ps->tok = T_NAME;
            ps->tstart = s + ps->pos;
            ps->tlen = len;
            break;
        }
        goto bad;
    }
    ps->pos += len;
    return;
bad:
    if ((unsigned char)c >= 0x20 && (unsigned char)c < 0x7f)
        FAIL_TOK(ps, "unexpected character '%c'", c);
    else
        FAIL_TOK(ps, "unexpected byte 0x%02x", (unsigned char)c);
    ps->tok = T_EOF;
}

/* After a '.', a path segment: [A-Za-z0-9_]+, lexed directly (so "a.0" and "a.x1" are keys). */
static bool lex_segment(struct parser *ps, const char **seg, size_t *len)
{
    const char *s = ps->src + ps->pos;
    size_t n = 0;
    while (is_name_start((unsigned char)s[n]) || is_digit((unsigned char)s[n]))
        n++;
    if (n == 0)
        return false;
    *seg = s;
    *len = n;
    ps->pos += n;
    return true;
}

/* ---- tree ---- */

static bool name_is(const struct parser *ps, const char *w)
{
    return ps->tlen == strlen(w) && strncmp(ps->tstart, w, ps->tlen) == 0;
}

static struct node *mk(struct parser *ps, enum node_op op, uint32_t line, uint32_t col,
                       uint16_t nkids)
{
    if (++ps->nodes > ps->p->lim.max_nodes) {
        fail_at(ps, line, col, "more than %u nodes", (unsigned)ps->p->lim.max_nodes);
        return NULL;
    }
    struct node *n = ts_arena_calloc(&ps->p->arena, sizeof *n);
    n->op = (uint8_t)op;
    n->line = line;
    n->column = col;
    n->nkids = nkids;
    n->type = TY_ANY;
    if (nkids)
        n->kids = ts_arena_calloc(&ps->p->arena, nkids * sizeof *n->kids);
    return n;
}

/* The tree's depth is checked as it grows: a node is one deeper than its deepest child. */
static uint32_t depth_of(const struct node *n);

static uint32_t depth_of(const struct node *n)
{
    uint32_t d = 0;
    for (uint16_t i = 0; i < n->nkids; i++) {
        uint32_t k = depth_of(n->kids[i]);
        if (k > d)
            d = k;
    }
    return d + 1;
}

static bool check_depth(struct parser *ps, const struct node *n)
{
    if (!n)
        return false;
    if (depth_of(n) > ps->p->lim.max_depth) {
        fail_at(ps, n->line, n->column, "nesting deeper than %u", (unsigned)ps->p->lim.max_depth);
        return false;
    }
    return true;
}

static const char *type_name(unsigned t)
{
    switch (t) {
    case TY_NULL:
        return "null";
    case TY_BOOL:
        return "bool";
    case TY_INT:
    case TY_REAL:
    case TY_NUM:
        return "number";
    case TY_STR:
        return "string";
    case TY_LIST:
        return "list";
    case TY_OBJ:
        return "object";
    case TY_OBJ | TY_NULL:
        return "object or null";
    default:
        return "value";
    }
}

/* Refuses an operand whose static type set has nothing in common with want. */
static bool need(struct parser *ps, const struct node *n, unsigned want, const char *what)
{
    if (n->type & want)
        return true;
    fail_at(ps, n->line, n->column, "%s, not %s", what, type_name(n->type));
    return false;
}

static struct node *parse_expr(struct parser *ps);

static bool expect(struct parser *ps, enum tok t, const char *what)
{
    if (ps->tok != t) {
        FAIL_TOK(ps, "expected %s", what);
        return false;
    }
    next(ps);
    return true;
}

struct fn_def {
    const char *name;
    int fn;
    uint16_t arity;
    uint8_t type; /* result */
};

static const struct fn_def fns[] = {
    {"startsWith", FN_STARTS_WITH, 2, TY_BOOL},
    {"endsWith", FN_ENDS_WITH, 2, TY_BOOL},
    {"contains", FN_CONTAINS, 2, TY_BOOL},
    {"lower", FN_LOWER, 1, TY_STR},
    {"size", FN_SIZE, 1, TY_INT},
    {"has", FN_HAS, 1, TY_BOOL},
    {"get", FN_GET, 2, TY_OBJ | TY_NULL},
    {"exists", FN_EXISTS, 2, TY_BOOL},
    {"lookup", FN_LOOKUP, 3, TY_OBJ | TY_NULL},
};

static const char *const roots[] = {
    [ROOT_IDENTITY] = "identity", [ROOT_CLAIMS] = "claims", [ROOT_RESOURCE] = "resource",
    [ROOT_OLD] = "old",           [ROOT_NEW] = "new",       [ROOT_REQUEST] = "request",
    [ROOT_NOW] = "now",
};

static bool check_call(struct parser *ps, struct node *n)
{
    struct node **k = n->kids;
    switch (n->v.fn) {
    case FN_STARTS_WITH:
    case FN_ENDS_WITH:
        return need(ps, k[0], TY_STR, "needs a string") && need(ps, k[1], TY_STR, "needs a string");
    case FN_CONTAINS:
        if (!need(ps, k[0], TY_STR | TY_LIST, "contains() needs a string or a list"))
            return false;
        if (!(k[0]->type & TY_LIST))
            return need(ps, k[1], TY_STR, "contains() on a string needs a string");
        return true;
    case FN_LOWER:
        return need(ps, k[0], TY_STR, "lower() needs a string");
    case FN_SIZE:
        return need(ps, k[0], TY_STR | TY_LIST | TY_OBJ, "size() needs a string, list or object");
    case FN_HAS:
        if (k[0]->op != OP_MEMBER && k[0]->op != OP_INDEX) {
            fail_at(ps, k[0]->line, k[0]->column, "has() needs a path such as a.b");
            return false;
        }
        return true;
    default: /* get, exists, lookup */
        for (uint16_t i = 0; i < n->nkids; i++)
            if (!need(ps, k[i], TY_STR, "fetch arguments must be strings"))
                return false;
        return true;
    }
}

static struct node *parse_call(struct parser *ps, uint32_t line, uint32_t col, const char *name,
                               size_t name_len)
{
    const struct fn_def *f = NULL;
    for (size_t i = 0; i < TS_ARRAY_LEN(fns); i++)
        if (strlen(fns[i].name) == name_len && strncmp(fns[i].name, name, name_len) == 0)
            f = &fns[i];
    if (!f) {
        fail_at(ps, line, col, "unknown function '%.*s'", (int)(name_len > 40 ? 40 : name_len),
                name);
        return NULL;
    }
    next(ps); /* '(' */
    struct node *args[3];
    uint16_t n = 0;
    if (ps->tok != T_RPAREN) {
        for (;;) {
            struct node *a = parse_expr(ps);
            if (!a)
                return NULL;
            if (n == 3) {
                fail_at(ps, line, col, "%s() takes %u argument%s", f->name, f->arity,
                        f->arity == 1 ? "" : "s");
                return NULL;
            }
            args[n++] = a;
            if (ps->tok != T_COMMA)
                break;
            next(ps);
        }
    }
    if (!expect(ps, T_RPAREN, "')' after the arguments"))
        return NULL;
    if (n != f->arity) {
        fail_at(ps, line, col, "%s() takes %u argument%s", f->name, f->arity,
                f->arity == 1 ? "" : "s");
        return NULL;
    }
    struct node *c = mk(ps, OP_CALL, line, col, n);
    if (!c)
        return NULL;
    c->v.fn = f->fn;
    c->type = f->type;
    if (n)
        memcpy(c->kids, args, n * sizeof *args);
    if (!check_call(ps, c) || !check_depth(ps, c))
        return NULL;
    return c;
}

static struct node *parse_primary(struct parser *ps)
{
    uint32_t line = ps->tline, col = ps->tcol;
    struct node *n = NULL;
    switch (ps->tok) {
    case T_INT:
        if ((n = mk(ps, OP_INT, line, col, 0))) {
            n->v.i = ps->ival;
            n->type = TY_INT;
        }
        next(ps);
        return n;
    case T_REAL:
        if ((n = mk(ps, OP_REAL, line, col, 0))) {
            n->v.r = ps->rval;
            n->type = TY_REAL;
        }
        next(ps);
        return n;
    case T_STR:
        if ((n = mk(ps, OP_STR, line, col, 0))) {
            n->str = ps->sval;
            n->str_len = ps->slen;
            n->type = TY_STR;
        }
        next(ps);
        return n;
    case T_LPAREN:
        next(ps);
        n = parse_expr(ps);
        if (!n || !expect(ps, T_RPAREN, "')'"))
            return NULL;
        return n;
    case T_LBRACK: {
        /* A list literal: elements are parsed into a bounded scratch array first. */
        struct node *el[64];
        uint16_t k = 0;
        next(ps);
        while (ps->tok != T_RBRACK) {
            if (k == TS_ARRAY_LEN(el)) {
                fail_at(ps, line, col, "more than %zu list elements", TS_ARRAY_LEN(el));
                return NULL;
            }
            if (!(el[k++] = parse_expr(ps)))
                return NULL;
            if (ps->tok != T_COMMA)
                break;
            next(ps);
        }
        if (!expect(ps, T_RBRACK, "']' or ','"))
            return NULL;
        if (!(n = mk(ps, OP_LIST, line, col, k)))
            return NULL;
        if (k)
            memcpy(n->kids, el, k * sizeof *el);
        n->type = TY_LIST;
        return check_depth(ps, n) ? n : NULL;
    }
    case T_NAME: {
        const char *name = ps->tstart;
        size_t len = ps->tlen;
        if (name_is(ps, "true") || name_is(ps, "false")) {
            if ((n = mk(ps, OP_BOOL, line, col, 0))) {
                n->v.b = name_is(ps, "true");
                n->type = TY_BOOL;
            }
            next(ps);
            return n;
        }
        if (name_is(ps, "null")) {
            if ((n = mk(ps, OP_NULL, line, col, 0)))
                n->type = TY_NULL;
            next(ps);
            return n;
        }
        next(ps);
        if (ps->tok == T_LPAREN)
            return parse_call(ps, line, col, name, len);
        for (size_t i = 0; i < TS_ARRAY_LEN(roots); i++) {
            if (strlen(roots[i]) == len && strncmp(roots[i], name, len) == 0) {
                if ((n = mk(ps, OP_ROOT, line, col, 0))) {
                    n->v.root = (int)i;
                    n->type = i == ROOT_NOW ? TY_INT : TY_OBJ | TY_NULL;
                }
                return n;
            }
        }
        fail_at(ps, line, col, "unknown name '%.*s'", (int)(len > 40 ? 40 : len), name);
        return NULL;
    }
    case T_EOF:
        if (!ps->failed)
            FAIL_TOK(ps, "unexpected end of predicate");
        return NULL;
    default:
        FAIL_TOK(ps, "expected a value");
        return NULL;
    }
}

/* postfix := primary ( '.' segment | '[' string ']' | '[' integer ']' )* */
static struct node *parse_postfix(struct parser *ps)
{
    struct node *n = parse_primary(ps);
    while (n && (ps->tok == T_DOT || ps->tok == T_LBRACK)) {
        uint32_t line = ps->tline, col = ps->tcol;
        struct node *m;
        if (!need(ps, n, TY_OBJ | TY_LIST | TY_NULL, "only objects and lists have members"))
            return NULL;
        if (ps->tok == T_DOT) {
            const char *seg;
            size_t len;
            if (!lex_segment(ps, &seg, &len)) {
                fail_at(ps, line, col + 1, "expected a name after '.'");
                return NULL;
            }
            if (!(m = mk(ps, OP_MEMBER, line, col, 1)))
                return NULL;
            m->str = ts_arena_strndup(&ps->p->arena, seg, len);
            m->str_len = len;
            next(ps);
        } else {
            next(ps);
            if (ps->tok == T_STR) {
                if (!(m = mk(ps, OP_MEMBER, line, col, 1)))
                    return NULL;
                m->str = ps->sval;
                m->str_len = ps->slen;
            } else if (ps->tok == T_INT) {
                if (!(m = mk(ps, OP_INDEX, line, col, 1)))
                    return NULL;
                m->v.i = ps->ival;
            } else {
                FAIL_TOK(ps, "expected a string or an integer inside '[ ]'");
                return NULL;
            }
            next(ps);
            if (!expect(ps, T_RBRACK, "']'"))
                return NULL;
        }
        m->kids[0] = n;
        n = m;
        if (!check_depth(ps, n))
            return NULL;
    }
    return n;
}

/* unary := ('!' | '-') unary | postfix. Negative literals fold into one node. The parser's
 * recursion is bounded like the tree: each unary operator, and each parse_expr (parentheses,
 * arguments, list elements), counts one level. */
static struct node *parse_unary(struct parser *ps)
{
    struct node *n;
    if (ps->tok == T_NOT || ps->tok == T_MINUS) {
        enum tok t = ps->tok;
        uint32_t line = ps->tline, col = ps->tcol;
        if (++ps->depth > ps->p->lim.max_depth) {
            FAIL_TOK(ps, "nesting deeper than %u", (unsigned)ps->p->lim.max_depth);
            return NULL;
        }
        next(ps);
        struct node *k = parse_unary(ps);
        ps->depth--;
        if (!k)
            return NULL;
        if (t == T_MINUS && k->op == OP_INT && k->v.i != INT64_MIN) {
            k->v.i = -k->v.i;
            k->line = line;
            k->column = col;
            n = k;
        } else if (t == T_MINUS && k->op == OP_REAL) {
            k->v.r = -k->v.r;
            k->line = line;
            k->column = col;
            n = k;
        } else {
            if (!(n = mk(ps, t == T_NOT ? OP_NOT : OP_NEG, line, col, 1)))
                return NULL;
            n->kids[0] = k;
            if (t == T_NOT) {
                if (!need(ps, k, TY_BOOL, "'!' needs a bool"))
                    return NULL;
                n->type = TY_BOOL;
            } else {
                if (!need(ps, k, TY_NUM, "'-' needs a number"))
                    return NULL;
                n->type = k->type & TY_NUM;
            }
            if (!check_depth(ps, n))
                return NULL;
        }
    } else {
        n = parse_postfix(ps);
    }
    return n;
}

static struct node *binary(struct parser *ps, enum node_op op, struct node *a, struct node *b,
                           uint32_t line, uint32_t col)
{
    struct node *n = mk(ps, op, line, col, 2);
    if (!n)
        return NULL;
    n->kids[0] = a;
    n->kids[1] = b;
    unsigned ta = a->type, tb = b->type;
    switch (op) {
    case OP_AND:
    case OP_OR: {
        const char *w = op == OP_AND ? "'&&' needs bools" : "'||' needs bools";
        if (!need(ps, a, TY_BOOL, w) || !need(ps, b, TY_BOOL, w))
            return NULL;
        n->type = TY_BOOL;
        break;
    }
    case OP_EQ:
    case OP_NE: {
        /* null compares with anything; otherwise the kinds must meet (ints meet reals). */
        unsigned ka = ta & ~(unsigned)TY_NULL, kb = tb & ~(unsigned)TY_NULL;
        if (ka & TY_NUM)
            ka |= TY_NUM;
        if (kb & TY_NUM)
            kb |= TY_NUM;
        if (ka && kb && !(ka & kb)) {
            fail_at(ps, line, col, "cannot compare %s with %s", type_name(ta), type_name(tb));
            return NULL;
        }
        if (!(ta & ~(unsigned)(TY_LIST | TY_OBJ)) || !(tb & ~(unsigned)(TY_LIST | TY_OBJ))) {
            fail_at(ps, line, col, "lists and objects cannot be compared");
            return NULL;
        }
        n->type = TY_BOOL;
        break;
    }
    case OP_LT:
    case OP_LE:
    case OP_GT:
    case OP_GE: {
        const char *w = "ordering needs numbers or strings";
        if (!need(ps, a, TY_NUM | TY_STR, w) || !need(ps, b, TY_NUM | TY_STR, w))
            return NULL;
        unsigned ka = ta & (TY_NUM | TY_STR), kb = tb & (TY_NUM | TY_STR);
        if (ka & TY_NUM)
            ka |= TY_NUM;
        if (kb & TY_NUM)
            kb |= TY_NUM;
        if (!(ka & kb)) {
            fail_at(ps, line, col, "cannot order %s against %s", type_name(ta), type_name(tb));
            return NULL;
        }
        n->type = TY_BOOL;
        break;
    }
    case OP_IN:
        if (!need(ps, b, TY_LIST | TY_OBJ, "'in' needs a list or an object (contains() for text)"))
            return NULL;
        if (!(tb & TY_LIST) && !need(ps, a, TY_STR, "'in' an object needs a string key"))
            return NULL;
        n->type = TY_BOOL;
        break;
    case OP_ADD:
        if (!need(ps, a, TY_NUM | TY_STR, "'+' needs numbers or strings") ||
            !need(ps, b, TY_NUM | TY_STR, "'+' needs numbers or strings"))
            return NULL;
        if (((ta & (TY_NUM | TY_STR)) == TY_STR && !(tb & TY_STR)) ||
            ((tb & (TY_NUM | TY_STR)) == TY_STR && !(ta & TY_STR))) {
            fail_at(ps, line, col, "cannot add %s and %s", type_name(ta), type_name(tb));
            return NULL;
        }
        n->type = (uint8_t)((ta | tb) & (TY_NUM | TY_STR));
        if ((ta & TY_STR) == 0 && (tb & TY_STR) == 0)
            n->type = (ta == TY_INT && tb == TY_INT) ? TY_INT : TY_NUM;
        break;
    case OP_SUB:
        if (!need(ps, a, TY_NUM, "'-' needs numbers") || !need(ps, b, TY_NUM, "'-' needs numbers"))
            return NULL;
        n->type = (ta == TY_INT && tb == TY_INT) ? TY_INT : TY_NUM;
        break;
    default:
        break;
    }
    return check_depth(ps, n) ? n : NULL;
}

/* additive := unary (('+' | '-') unary)* */
static struct node *parse_additive(struct parser *ps)
{
    struct node *a = parse_unary(ps);
    while (a && (ps->tok == T_PLUS || ps->tok == T_MINUS)) {
        enum node_op op = ps->tok == T_PLUS ? OP_ADD : OP_SUB;
        uint32_t line = ps->tline, col = ps->tcol;
        next(ps);
        struct node *b = parse_unary(ps);
        a = b ? binary(ps, op, a, b, line, col) : NULL;
    }
    return a;
}

/* comparison := additive (('==' | '!=' | '<' | '<=' | '>' | '>=' | 'in') additive)?
 * Non-associative: "a == b == c" is a syntax error. */
static struct node *parse_comparison(struct parser *ps)
{
    struct node *a = parse_additive(ps);
    if (!a)
        return NULL;
    enum node_op op;
    switch (ps->tok) {
    case T_EQ:
        op = OP_EQ;
        break;
    case T_NE:
        op = OP_NE;
        break;
    case T_LT:
        op = OP_LT;
        break;
    case T_LE:
        op = OP_LE;
        break;
    case T_GT:
        op = OP_GT;
        break;
    case T_GE:
        op = OP_GE;
        break;
    case T_NAME:
        if (name_is(ps, "in")) {
            op = OP_IN;
            break;
        }
        return a;
    default:
        return a;
    }
    uint32_t line = ps->tline, col = ps->tcol;
    next(ps);
    struct node *b = parse_additive(ps);
    if (!b)
        return NULL;
    a = binary(ps, op, a, b, line, col);
    if (a && (ps->tok == T_EQ || ps->tok == T_NE || ps->tok == T_LT || ps->tok == T_LE ||
              ps->tok == T_GT || ps->tok == T_GE || (ps->tok == T_NAME && name_is(ps, "in")))) {
        FAIL_TOK(ps, "comparisons do not chain; use parentheses and '&&'");
        return NULL;
    }
    return a;
}

/* and := comparison ('&&' comparison)* */
static struct node *parse_and(struct parser *ps)
{
    struct node *a = parse_comparison(ps);
    while (a && ps->tok == T_AND) {
        uint32_t line = ps->tline, col = ps->tcol;
        next(ps);
        struct node *b = parse_comparison(ps);
        a = b ? binary(ps, OP_AND, a, b, line, col) : NULL;
    }
    return a;
}

/* expr := and ('||' and)* */
static struct node *parse_expr(struct parser *ps)
{
    if (++ps->depth > ps->p->lim.max_depth) {
        FAIL_TOK(ps, "nesting deeper than %u", (unsigned)ps->p->lim.max_depth);
        return NULL;
    }
    struct node *a = parse_and(ps);
    while (a && ps->tok == T_OR) {
        uint32_t line = ps->tline, col = ps->tcol;
        next(ps);
        struct node *b = parse_and(ps);
        a = b ? binary(ps, OP_OR, a, b, line, col) : NULL;
    }
    ps->depth--;
    return a;
}

static uint32_t clamp(uint32_t v, uint32_t def, uint32_t hard)
{
    return v == 0 ? def : v > hard ? hard : v;
}

/* The roots (and fetches) a tree reads; the tree is at most max_depth deep. */
static unsigned uses_of(const struct node *n)
{
    unsigned u = 0;
    if (n->op == OP_ROOT)
        u |= 1u << n->v.root;
    if (n->op == OP_CALL && (n->v.fn == FN_GET || n->v.fn == FN_EXISTS || n->v.fn == FN_LOOKUP))
        u |= TS_PRED_USES_FETCH;
    for (uint16_t i = 0; i < n->nkids; i++)
        u |= uses_of(n->kids[i]);
    return u;
}

enum ts_rc ts_pred_compile(const char *text, const struct ts_pred_limits *lim, struct ts_pred **out,
                           struct ts_pred_error *err)
{
    struct ts_pred_limits l = lim ? *lim : (struct ts_pred_limits){0};
    l.max_depth = clamp(l.max_depth, TS_PRED_DEFAULT_DEPTH, TS_PRED_HARD_DEPTH);
    l.max_source = clamp(l.max_source, TS_PRED_DEFAULT_SOURCE, TS_PRED_HARD_SOURCE);
    l.max_nodes = clamp(l.max_nodes, TS_PRED_DEFAULT_NODES, TS_PRED_HARD_NODES);
    l.max_fetches = clamp(l.max_fetches, TS_PRED_DEFAULT_FETCHES, TS_PRED_HARD_FETCHES);
    if (err)
        *err = (struct ts_pred_error){0};

    struct parser ps = {.src = text ? text : "", .line = 1, .err = err};
    size_t len = strnlen(ps.src, (size_t)l.max_source + 1);
    if (len > l.max_source) {
        fail_at(&ps, 1, 1, "predicate longer than %u bytes", (unsigned)l.max_source);
        return TS_E_PARSE;
    }
    struct ts_pred *p = ts_xcalloc(1, sizeof *p);
    ts_arena_init(&p->arena, 4096);
    p->lim = l;
    ps.p = p;
    next(&ps);
    struct node *root = parse_expr(&ps);
    if (root && ps.tok != T_EOF)
        FAIL_TOK(&ps, "unexpected text after the predicate");
    if (root && !ps.failed && !(root->type & TY_BOOL))
        fail_at(&ps, root->line, root->column, "a predicate must be a bool, not %s",
                type_name(root->type));
    if (ps.failed || !root) {
        if (!ps.failed)
            fail_at(&ps, ps.tline, ps.tcol, "syntax error");
        ts_pred_free(p);
        return TS_E_PARSE;
    }
    p->root = root;
    p->uses = uses_of(root);
    *out = p;
    return TS_OK;
}

void ts_pred_free(struct ts_pred *p)
{
    if (!p)
        return;
    ts_arena_free(&p->arena);
    free(p);
}

const struct ts_pred_limits *ts_pred_limits_of(const struct ts_pred *p)
{
    return &p->lim;
}

unsigned ts_pred_uses(const struct ts_pred *p)
{
    return p->uses;
}
